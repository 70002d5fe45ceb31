"""Learning-rate schedules: ``make_schedule(cfg, base_lr, epochs, steps_per_epoch, warmup_epochs)``.

Time ``t`` is in epochs as a float: step s of epoch e is ``t = e + s / steps_per_epoch``.
``Schedule.lr(t)`` is the learning rate to use for that step; ``lr_at_step(global_step)`` is the
same with t = step / steps_per_epoch. With ``per_step=False`` t is floored to whole epochs
(PyTorch's per-epoch schedulers); at whole epochs both agree. Formulas (lr0 = base_lr):

=============  =====================================================================
constant       lr0
step           lr0 * gamma ** floor(t / step_size)
multistep      lr0 * gamma ** (number of milestones <= t)
exponential    lr0 * gamma ** t                       (= lr0 * e^{-kt}, k = -ln gamma)
inverse_time   lr0 / (1 + decay * t)                  ("1/t decay")
cosine         min_lr + (lr0 - min_lr) * (1 + cos(pi * t / epochs)) / 2
sgdr           cosine restarted: cycle i lasts t0 * t_mult**i epochs (Loshchilov & Hutter 2016);
               ``cycle_ends()`` lists the epochs at which cycles end (snapshot ensembles)
plateau        lr0 * factor ** (number of reductions); ``observe(metric)`` once per epoch
               reduces when the metric has not improved for more than ``patience`` epochs
=============  =====================================================================

Warmup (``warmup_epochs`` W > 0, or ``warmup_epochs`` inside the schedule's mapping) multiplies
any schedule by ``min(1, (t + 1/steps_per_epoch) / W)``: a linear ramp from lr0/(W*steps) at
the first step to the full schedule at t = W. The schedule clock is not shifted (milestones are
absolute epochs, as in Goyal et al. 2017), so the result is continuous at t = W.

Stateful schedules (plateau) expose ``state() -> dict`` (JSON-able) and ``load_state(dict)``;
the others return ``{}``, and every schedule accepts its own ``state()`` back.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ["Schedule", "make_schedule", "SCHEDULES"]

SCHEDULES = {
    "constant": {},
    "step": {"step_size": 10, "gamma": 0.1},
    "multistep": {"milestones": [30, 60], "gamma": 0.1},
    "exponential": {"gamma": 0.95},
    "inverse_time": {"decay": 0.1},
    "cosine": {"min_lr": 0.0},
    "sgdr": {"t0": 10, "t_mult": 2, "min_lr": 0.0},
    "plateau": {"factor": 0.1, "patience": 5, "metric": "val_loss", "mode": None,
                "threshold": 1e-4, "cooldown": 0, "min_lr": 0.0},
}


def _cos(lr0: float, lo: float, frac: float) -> float:
    """Half-cosine from lr0 (frac=0) to lo (frac=1)."""
    return lo + (lr0 - lo) * (1.0 + math.cos(math.pi * min(max(frac, 0.0), 1.0))) / 2.0


class Schedule:
    """A learning-rate schedule; build it with ``make_schedule`` (see the module doc)."""

    def __init__(self, name: str, params: dict[str, Any], base_lr: float, epochs: int,
                 steps_per_epoch: int, warmup_epochs: float = 0.0, per_step: bool = True):
        self.name, self.p = name, params
        self.base_lr, self.epochs = float(base_lr), int(epochs)
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.warmup_epochs, self.per_step = float(warmup_epochs), per_step
        # plateau state
        self.scale, self.best, self.num_bad, self.cooldown_left = 1.0, None, 0, 0
        self.num_reductions = 0

    # ------------------------------------------------------------------ evaluation
    def base(self, t: float) -> float:
        """The schedule without warmup at epoch-time t."""
        p, lr0 = self.p, self.base_lr
        if self.name == "constant":
            return lr0
        if self.name == "step":
            return lr0 * p["gamma"] ** math.floor(t / p["step_size"] + 1e-9)
        if self.name == "multistep":
            return lr0 * p["gamma"] ** sum(1 for m in p["milestones"] if t + 1e-9 >= m)
        if self.name == "exponential":
            return lr0 * p["gamma"] ** t
        if self.name == "inverse_time":
            return lr0 / (1.0 + p["decay"] * t)
        if self.name == "cosine":
            return _cos(lr0, p["min_lr"], t / max(self.epochs, 1))
        if self.name == "sgdr":
            start, length = self.cycle_at(t)
            return _cos(lr0, p["min_lr"], (t - start) / length)
        if self.name == "plateau":
            # a floor above lr0 never raises the rate (torch's ReduceLROnPlateau only lowers it)
            return max(lr0 * self.scale, min(p["min_lr"], lr0)) if self.scale < 1 else lr0
        raise AssertionError(self.name)

    def warmup_factor(self, t: float) -> float:
        """Linear warmup multiplier in (0, 1]; 1 when there is no warmup or t >= W."""
        if self.warmup_epochs <= 0:
            return 1.0
        return min(1.0, (t + 1.0 / self.steps_per_epoch) / self.warmup_epochs)

    def lr(self, t: float) -> float:
        """Learning rate at epoch-time t (float epochs; see the module doc)."""
        if not self.per_step:
            t = math.floor(t + 1e-9)
        return self.base(t) * self.warmup_factor(t)

    __call__ = lr

    def lr_at_step(self, global_step: int) -> float:
        """lr(global_step / steps_per_epoch)."""
        return self.lr(global_step / self.steps_per_epoch)

    # ------------------------------------------------------------------ SGDR cycles
    def cycle_at(self, t: float) -> tuple[float, float]:
        """(start epoch, length) of the SGDR cycle containing t."""
        t0, mult = float(self.p["t0"]), float(self.p["t_mult"])
        start, length = 0.0, t0
        while t + 1e-9 >= start + length:
            start += length
            length *= mult
        return start, length

    def cycle_ends(self, epochs: int | None = None) -> list[int]:
        """Epochs (1-based counts of completed epochs, <= epochs) at which SGDR cycles end,
        i.e. where the lr is at its minimum and a snapshot-ensemble member is taken. For
        other schedules: ``[epochs]``."""
        epochs = self.epochs if epochs is None else epochs
        if self.name != "sgdr":
            return [epochs]
        ends, start, length = [], 0.0, float(self.p["t0"])
        while start + length <= epochs + 1e-9:
            start += length
            ends.append(int(round(start)))
            length *= float(self.p["t_mult"])
        return ends

    def is_cycle_end(self, epochs_done: int) -> bool:
        """True when ``epochs_done`` completed epochs end an SGDR cycle."""
        return epochs_done in self.cycle_ends(max(epochs_done, self.epochs))

    # ------------------------------------------------------------------ plateau
    @property
    def metric(self) -> str | None:
        """The metric ``observe`` expects (plateau only), e.g. ``val_loss``."""
        return self.p.get("metric") if self.name == "plateau" else None

    def observe(self, value: float) -> bool:
        """Feed the epoch's metric (plateau; a no-op for others). Returns True if the lr was
        just reduced. NaN counts as no improvement."""
        if self.name != "plateau":
            return False
        p = self.p
        minimize = p["mode"] == "min"
        value = float(value)
        if self.best is None:
            improved = not math.isnan(value)
        elif minimize:
            improved = value < self.best * (1 - p["threshold"]) if self.best > 0 else \
                value < self.best - abs(self.best) * p["threshold"]
        else:
            improved = value > self.best * (1 + p["threshold"]) if self.best > 0 else \
                value > self.best + abs(self.best) * p["threshold"]
        if improved:
            self.best, self.num_bad = value, 0
        else:
            self.num_bad += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.num_bad = 0
        if self.num_bad > p["patience"]:
            self.scale *= p["factor"]
            self.num_reductions += 1
            self.cooldown_left, self.num_bad = int(p["cooldown"]), 0
            return True
        return False

    def state(self) -> dict[str, Any]:
        """JSON-able state for checkpoints (empty for stateless schedules)."""
        if self.name != "plateau":
            return {}
        return {"scale": self.scale, "best": self.best, "num_bad": self.num_bad,
                "cooldown_left": self.cooldown_left, "num_reductions": self.num_reductions}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore ``state()`` output."""
        if self.name != "plateau":
            if state:
                raise ValueError(f"{self.name} schedule has no state, got {dict(state)}")
            return
        self.scale = float(state["scale"])
        self.best = None if state["best"] is None else float(state["best"])
        self.num_bad = int(state["num_bad"])
        self.cooldown_left = int(state["cooldown_left"])
        self.num_reductions = int(state.get("num_reductions", 0))

    def __repr__(self) -> str:
        return (f"Schedule({self.name}, {self.p}, base_lr={self.base_lr}, epochs={self.epochs}, "
                f"warmup_epochs={self.warmup_epochs})")


def make_schedule(cfg: Mapping[str, Any] | str | None, base_lr: float, epochs: int,
                  steps_per_epoch: int, warmup_epochs: float = 0, *,
                  per_step: bool = True) -> Schedule:
    """Build a Schedule from a one-key mapping such as ``{"cosine": {"min_lr": 0.0}}`` (a bare
    name or None/{} means constant). ``warmup_epochs`` inside the mapping overrides the
    argument. Unknown names or keys raise ValueError."""
    if cfg is None or cfg == {}:
        cfg = {"constant": {}}
    if isinstance(cfg, str):
        cfg = {cfg: {}}
    if not isinstance(cfg, Mapping) or len(cfg) != 1:
        raise ValueError(f"schedule: expected a one-key mapping, got {cfg!r}")
    (name, params), = cfg.items()
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    params = dict(params or {})
    warmup_epochs = float(params.pop("warmup_epochs", warmup_epochs) or 0)
    extra = set(params) - set(SCHEDULES[name])
    if extra:
        raise ValueError(f"schedule {name}: unknown key(s) {sorted(extra)}; "
                         f"allowed: {sorted(SCHEDULES[name]) + ['warmup_epochs']}")
    p = {**SCHEDULES[name], **params}
    if name == "step" and p["step_size"] <= 0:
        raise ValueError("schedule step: step_size must be > 0")
    if name == "multistep":
        p["milestones"] = sorted(float(m) for m in p["milestones"])
    if name == "sgdr" and (p["t0"] <= 0 or p["t_mult"] < 1):
        raise ValueError("schedule sgdr: need t0 > 0 and t_mult >= 1")
    if name == "plateau":
        if p["mode"] is None:
            p["mode"] = "max" if "acc" in str(p["metric"]) else "min"
        if p["mode"] not in ("min", "max"):
            raise ValueError(f"schedule plateau: mode must be min or max, got {p['mode']!r}")
        if not 0 < p["factor"] < 1:
            raise ValueError("schedule plateau: factor must be in (0, 1)")
    if base_lr <= 0:
        raise ValueError(f"base learning rate must be > 0, got {base_lr}")
    return Schedule(name, p, base_lr, epochs, steps_per_epoch, warmup_epochs, per_step)
