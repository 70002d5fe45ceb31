"""Numerical gradient check of a user's spec: the compiled backward against central differences.

The seeds: "check gradients numerically by finite differences".  The procedure and the
thresholds follow the standard CS231n recipe the lectures come from:

* compile the net in **float64** with a small batch (a few samples are enough and keep
  kinks rare); the loss is the spec's data loss (weight decay lives in the optimizer, so
  the regularisation term cannot dominate the check); dropout-like randomness is made
  deterministic by re-seeding ``net.rng`` before every evaluation;
* per parameter tensor, ``coords`` random coordinates; for each, f(w+h) and f(w-h) give the
  centred difference (f+ - f-)/2h (error O(h^2)), h = 1e-5;
* **kinks** (ReLU, max pooling, hinge): when the two one-sided differences (f+ - f0)/h and
  (f0 - f-)/h disagree by more than ``kink_tol`` relative (beyond float64 noise), a
  non-differentiable point lies within +-h.  In wide nets many ReLUs cross zero within +-h
  on BOTH sides, so the one-sided differences agree while both are off (measured: ResNet-20
  stem/layer1 weights 1e-3..5e-2 wrong at h=1e-5, exact at 1e-6); hence the centred
  difference at h must also agree with the one at h/10 (``agree_tol``, relative).  A
  coordinate failing either test is retried one decade lower (h/10 vs h/100; a kink is
  crossed with probability ~h) and skipped (counted as a kink) if it fails again;
* relative error |a - n| / max(|a|, |n|), with both below ``floor`` counted as 0 (a dead
  unit: both gradients are zero up to rounding);
* thresholds: > 1e-2 the gradient is probably wrong; 1e-2 .. 1e-4 uncomfortable;
  1e-4 .. 1e-7 fine for objectives with kinks; < 1e-7 excellent.  Verdict: "pass" when the
  worst error over all checked coordinates is <= 1e-4 (errors grow with depth; the seeds'
  deep nets with kinks sit in 1e-7..1e-5), "warn" up to 1e-2, else "fail".
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

THRESHOLDS = ((1e-7, "excellent"), (1e-4, "ok"), (1e-2, "uncomfortable"),
              (float("inf"), "WRONG"))
PASS, WARN = 1e-4, 1e-2


def grade(err: float) -> str:
    for t, word in THRESHOLDS:
        if err <= t:
            return word
    return "WRONG"


@dataclass
class ParamCheck:
    name: str
    shape: tuple
    checked: int = 0
    kinks: int = 0
    max_rel_error: float = 0.0
    mean_rel_error: float = 0.0
    worst: tuple = ()            # (flat index, analytic, numeric)

    @property
    def grade(self) -> str:
        return grade(self.max_rel_error) if self.checked else "no coordinate"


@dataclass
class GradcheckResult:
    name: str
    loss: float
    batch_size: int
    h: float
    params: list[ParamCheck] = field(default_factory=list)

    @property
    def max_rel_error(self) -> float:
        return max((p.max_rel_error for p in self.params if p.checked), default=0.0)

    @property
    def verdict(self) -> str:
        if not any(p.checked for p in self.params):
            return "fail"
        e = self.max_rel_error
        return "pass" if e <= PASS else "warn" if e <= WARN else "fail"

    def table(self) -> str:
        w = max([len(p.name) for p in self.params] + [9])
        lines = [f"gradient check of {self.name}: float64, batch {self.batch_size}, h={self.h:g}, "
                 f"loss {self.loss:.6g}",
                 f"{'parameter':<{w}}  {'shape':<16} {'checked':>7} {'kinks':>5} "
                 f"{'max rel err':>11} {'mean rel err':>12}  grade"]
        for p in self.params:
            lines.append(f"{p.name:<{w}}  {str(p.shape):<16} {p.checked:>7} {p.kinks:>5} "
                         f"{p.max_rel_error:>11.2e} {p.mean_rel_error:>12.2e}  {p.grade}")
        lines.append(f"worst relative error {self.max_rel_error:.2e} -> {self.verdict.upper()} "
                     f"(pass <= {PASS:g}, warn <= {WARN:g}; >1e-2 probably a wrong gradient)")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"name": self.name, "loss": self.loss, "batch_size": self.batch_size, "h": self.h,
                "max_rel_error": self.max_rel_error, "verdict": self.verdict,
                "params": [{"name": p.name, "shape": list(p.shape), "checked": p.checked,
                            "kinks": p.kinks, "max_rel_error": p.max_rel_error,
                            "mean_rel_error": p.mean_rel_error, "grade": p.grade}
                           for p in self.params]}


def random_batch(net, rng: np.random.Generator):
    """Inputs ~ N(0, 1) and targets fitting the net's loss (class indices for
    softmax_cross_entropy / hinge, {0,1} floats for bce_with_logits, N(0,1) for mse)."""
    N = net.batch_size
    x = rng.standard_normal((N, *net.input_shape))
    (loss, _), = net.loss_cfg.items()
    if loss in ("softmax_cross_entropy", "hinge"):
        k = int(np.prod(net.output_shape))
        t = rng.integers(0, k, N).astype(np.int64)
    elif loss == "bce_with_logits":
        t = (rng.random((N, *net.output_shape)) < 0.5).astype(np.float64)
    else:
        t = rng.standard_normal((N, *net.output_shape))
    return x, t


def rel_error(a: float, n: float, floor: float = 1e-10) -> float:
    m = max(abs(a), abs(n))
    return 0.0 if m < floor else abs(a - n) / m


def _numeric(f, flat, i: int, f0: float, h: float, kink_tol: float, agree_tol: float):
    """The centred difference at coordinate i, or None when kinks spoil every step tried
    (h vs h/10, then h/10 vs h/100)."""
    def central(step):
        old = flat[i]
        flat[i] = old + step
        fp = f()
        flat[i] = old - step
        fm = f()
        flat[i] = old
        return (fp - fm) / (2 * step), (fp - f0) / step, (f0 - fm) / step

    eps = np.finfo(np.float64).eps * max(abs(f0), 1.0)
    step, prev = h, central(h)
    for _ in range(2):
        cur = central(step / 10)
        c, dp, dm = prev
        one_sided_ok = abs(dp - dm) <= kink_tol * max(abs(dp), abs(dm)) + 1e3 * eps / step
        agree = abs(c - cur[0]) <= agree_tol * max(abs(c), abs(cur[0])) + 1e3 * eps / (step / 10)
        if one_sided_ok and agree:
            return c
        step, prev = step / 10, cur
    return None


def gradcheck(spec=None, *, net=None, batch_size: int = 2, coords: int = 6, h: float = 1e-5,
              seed: int = 0, kink_tol: float = 1e-2, agree_tol: float = 1e-6, floor: float = 1e-10,
              x=None, target=None, params=None, progress=None) -> GradcheckResult:
    """Check ``spec`` (compiled here in float64) or an already compiled float64 ``net``.
    ``params``: names to check (default all trainable ones).  ``progress(name)`` is called
    before each tensor.  Returns a GradcheckResult (``.table()``, ``.verdict``)."""
    if net is None:
        import compiler
        net = compiler.compile(spec, batch_size=batch_size, train=True, dtype=np.float64)
    if net.dtype != np.float64:
        raise ValueError("the gradient check needs a net compiled with dtype=float64")
    rng = np.random.default_rng(seed)
    if x is None or target is None:
        x, target = random_batch(net, rng)

    def f() -> float:
        net.rng = np.random.default_rng(seed + 1)     # same dropout masks every time
        return float(net.compute_grads(x, target))

    loss0 = f()
    analytic = {k: v.copy() for k, v in net.grads.items()}
    names = params or [k for k, pi in net.param_info.items() if not pi.frozen]
    if not names:
        raise ValueError(f"nothing to check: {net.report.name} has no trainable parameters "
                         f"(none, or every one frozen)")
    res = GradcheckResult(net.report.name, loss0, net.batch_size, h)
    for name in names:
        if progress:
            progress(name)
        p = net.params[name]
        flat = p.reshape(-1)
        pc = ParamCheck(name, tuple(p.shape))
        errs = []
        idx = rng.choice(flat.size, size=min(coords, flat.size), replace=False)
        for i in idx:
            num = _numeric(f, flat, int(i), loss0, h, kink_tol, agree_tol)
            if num is None:
                pc.kinks += 1
                continue
            a = float(analytic[name].reshape(-1)[i])
            e = rel_error(a, num, floor)
            errs.append(e)
            if e >= pc.max_rel_error:
                pc.max_rel_error, pc.worst = e, (int(i), a, float(num))
        pc.checked = len(errs)
        pc.mean_rel_error = float(np.mean(errs)) if errs else 0.0
        res.params.append(pc)
    f()   # leave net.grads as the analytic gradient at the unperturbed point
    return res
