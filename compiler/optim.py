"""Optimizer updates compiled into the training step (one numba kernel over the arenas).

``make_optimizer(train_cfg, param_info, dtype) -> Optimizer``.  The compiler allocates,
for every name in ``opt.state_specs()`` (e.g. ``{"momentum": n}``), one flat state arena
of that many elements with the SAME offsets as ``net.param_arena`` (so ``momentum/conv1.weight``
is a view at the parameter's offset), and calls::

    opt.update(param_arena, grad_arena, state, lr, step)

after the backward pass.  ``step`` is the 1-based index of this update (``net.step_count + 1``
before the increment); Adam's bias correction uses it.  The launcher calls at most two cached
``@njit`` kernels rendered from ``ops/templates/optim.py.j2``: ``sumsq`` (only with gradient
clipping) and ``update``, both looping over a chunk table built once here -- no Python loop
over parameters.

Update rules (g = gradient after clipping, + L2 + L1 terms on decayed tensors):

* ``sgd``       w -= lr*g
* ``momentum``  b = mu*b + g;            w -= lr*b                     (torch.optim.SGD, seeds)
* ``nesterov``  b = mu*b + g;            w -= lr*(g + mu*b)            (torch nesterov=True).
  This is the lecture's "rearranged" form ``v' = rho*v - lr*g; x += -rho*v + (1+rho)*v'``
  with v = -lr*b: identical for a constant lr (tested); storing b (gradient units) keeps it
  correct when a schedule changes lr.
* ``adagrad``   G += g^2;                w -= lr*g/(sqrt(G)+eps)
* ``rmsprop``   S = a*S + (1-a)*g^2;     w -= lr*g/(sqrt(S)+eps); with momentum mu:
  b = mu*b + g/(sqrt(S)+eps); w -= lr*b                               (torch.optim.RMSprop)
* ``adam``      m, v moments; w -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)  (bias-corrected,
  torch.optim.Adam's arithmetic)

Regularisation (``train.regularization``): ``weight_decay`` lambda adds lambda*w to g (coupled
L2, i.e. the gradient of lambda/2*||w||^2, PyTorch's convention) or, with ``decoupled: true``,
multiplies w by (1 - lr*lambda) before the step (AdamW / SGDW); ``l1`` adds l1*sign(w) (elastic
net = both); these apply only to tensors with ``ParamInfo.decay`` (weights) unless
``decay_all``.  ``max_norm`` c rescales each unit's incoming weights to norm <= c after the
step (torch.renorm semantics): the rows after a tensor's ``ParamInfo.unit_dims`` leading dims
(conv and linear: one row per output channel / unit; locally_connected: per (oh, ow, out)).
conv_transpose stores (in, out, kh, kw), whose rows are an input channel's outgoing weights:
those are what it constrains, as Keras's MaxNorm default does on Conv2DTranspose.  ``clip_grad_norm`` scales all trainable gradients by
min(1, c/(||g||+1e-6)) (torch.nn.utils.clip_grad_norm_).  Frozen tensors are not in the chunk
table (untouched; their state stays zero); ``lr_mult`` multiplies lr per layer.

``ref_update`` is the per-tensor numpy reference of every rule, used by the tests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RULES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "rmsprop_momentum", "adam")
# slots per rule: names of the state arenas, in the kernel's (s0, s1) order
SLOTS = {"sgd": (), "momentum": ("momentum",), "nesterov": ("momentum",), "adagrad": ("sum_sq",),
         "rmsprop": ("square_avg",), "rmsprop_momentum": ("square_avg", "momentum"),
         "adam": ("exp_avg", "exp_avg_sq")}
DEFAULTS = {
    "sgd": {"lr": 0.01, "momentum": 0.0, "nesterov": False},
    "adam": {"lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-8},
    "adagrad": {"lr": 0.01, "eps": 1e-10},
    "rmsprop": {"lr": 0.01, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0},
    "lbfgs": {"lr": 1.0, "history": 10, "max_iter": 20},
}
ALIASES = {"adamw": ("adam", {"decoupled": True}), "sgdw": ("sgd", {"decoupled": True}),
           "nesterov": ("sgd", {"nesterov": True}), "momentum": ("sgd", {})}
PARALLEL_MIN = 1 << 20        # arenas with more elements than this get the prange kernel
CHUNK = 1 << 16               # target chunk length (elements) of the parallel table


@dataclass
class OptConfig:
    """The resolved optimizer configuration (plain data; goes into checkpoints' meta)."""

    name: str                      # sgd | adam | adagrad | rmsprop | lbfgs
    rule: str                      # one of RULES ("sgd" for lbfgs: its compiled step is plain SGD)
    lr: float
    hyper: dict[str, Any] = field(default_factory=dict)
    weight_decay: float = 0.0
    decoupled: bool = False
    l1: float = 0.0
    max_norm: float | None = None
    clip_grad_norm: float | None = None
    decay_all: bool = False


def _one_key(d: Any, what: str) -> tuple[str, dict]:
    if isinstance(d, str):
        return d, {}
    if not isinstance(d, dict) or len(d) != 1:
        raise ValueError(f"{what} must be a one-key mapping like {{sgd: {{lr: 0.1}}}}, got {d!r}")
    (k, v), = d.items()
    return str(k), dict(v or {})


def resolve_config(train_cfg: dict | None) -> OptConfig:
    """``train_cfg``: the spec's ``train:`` dict (or just ``{"optimizer": ...}``)."""
    train_cfg = dict(train_cfg or {})
    name, args = _one_key(train_cfg.get("optimizer", {"sgd": {}}), "train.optimizer")
    name = name.lower()
    if name in ALIASES:
        base, extra = ALIASES[name]
        if name in ("momentum", "nesterov"):   # the schema's default; the API gets it too
            args.setdefault("momentum", 0.9)
        name, args = base, {**extra, **args}
    if name not in DEFAULTS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(sorted([*DEFAULTS, *ALIASES]))}")
    reg = dict(train_cfg.get("regularization") or {})
    # optimizer-level weight_decay / decoupled (torch style) are accepted too
    for k in ("weight_decay", "decoupled", "l1", "max_norm", "clip_grad_norm", "decay_all"):
        if k in args:
            reg[k] = args.pop(k)
    hp = {**DEFAULTS[name], **args}
    unknown = set(hp) - set(DEFAULTS[name])
    if unknown:
        raise ValueError(f"unknown {name} option(s): {', '.join(sorted(unknown))}")
    if name == "sgd":
        mu = float(hp["momentum"])
        rule = "sgd" if mu == 0 else ("nesterov" if hp["nesterov"] else "momentum")
        if hp["nesterov"] and mu <= 0:
            raise ValueError("nesterov momentum requires momentum > 0")
    elif name == "rmsprop":
        rule = "rmsprop_momentum" if float(hp["momentum"]) > 0 else "rmsprop"
    elif name == "lbfgs":
        rule = "sgd"
    else:
        rule = name
    mn, cg = reg.get("max_norm"), reg.get("clip_grad_norm")
    return OptConfig(name=name, rule=rule, lr=float(hp["lr"]), hyper=hp,
                     weight_decay=float(reg.get("weight_decay") or 0.0),
                     decoupled=bool(reg.get("decoupled", False)), l1=float(reg.get("l1") or 0.0),
                     max_norm=None if mn is None else float(mn),
                     clip_grad_norm=None if cg is None else float(cg),
                     decay_all=bool(reg.get("decay_all", False)))


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


class Optimizer:
    """Launcher of the compiled update.  Attributes: ``cfg`` (OptConfig), ``segments``
    (list of (name, start, end, lr_mult, decay, row)), ``size`` (arena elements)."""

    def __init__(self, cfg: OptConfig, param_info: dict, dtype=np.float32,
                 offsets: dict[str, int] | None = None):
        self.cfg = cfg
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"optimizer dtype must be float32 or float64, got {self.dtype}")
        self.segments = []
        off = 0
        for name, info in param_info.items():
            n = _size(tuple(info.shape))
            start = getattr(info, "offset", None)
            if offsets is not None and name in offsets:
                start = offsets[name]
            start = off if start is None else int(start)
            off = start + n
            if info.frozen or n == 0:
                continue
            decay = bool(info.decay) or cfg.decay_all
            ud = int(getattr(info, "unit_dims", 1))
            row = _size(tuple(info.shape)[ud:]) if (cfg.max_norm is not None and len(info.shape) > ud) else 0
            self.segments.append((name, start, start + n, float(info.lr_mult), decay, row))
        self.size = off
        self._build_table()
        self._h = np.zeros(12, dtype=self.dtype)
        self._kernels = None

    # ---- static structure ---------------------------------------------------------
    def _build_table(self) -> None:
        parallel = self.size > PARALLEL_MIN
        rows = []
        for _, a, b, lm, dec, row in self.segments:
            if not parallel:
                rows.append((a, b, lm, dec, row))
                continue
            step = CHUNK if row == 0 else max(1, CHUNK // row) * row   # never split a row
            for s in range(a, b, step):
                rows.append((s, min(b, s + step), lm, dec, row))
        self.parallel = parallel
        self._cstart = np.array([r[0] for r in rows], dtype=np.int64)
        self._cend = np.array([r[1] for r in rows], dtype=np.int64)
        self._clr = np.array([r[2] for r in rows], dtype=self.dtype)
        self._cdecay = np.array([1 if r[3] else 0 for r in rows], dtype=np.uint8)
        self._crow = np.array([r[4] for r in rows], dtype=np.int64)

    def state_specs(self) -> dict[str, int]:
        """Slot name -> number of elements (== the parameter arena's size)."""
        return {s: self.size for s in SLOTS[self.cfg.rule]}

    def kernel_config(self) -> dict:
        c = self.cfg
        return dict(rule=c.rule, l2=c.weight_decay > 0 and not c.decoupled, l1=c.l1 > 0,
                    decoupled=c.decoupled and c.weight_decay > 0, maxnorm=c.max_norm is not None,
                    ftype=self.dtype.name, parallel=self.parallel)

    def kernels(self):
        if self._kernels is None:
            from .codegen.kernel_cache import load_kernels
            self._kernels = load_kernels("optim", **self.kernel_config())
        return self._kernels

    # ---- per step -----------------------------------------------------------------
    def grad_norm(self, grad_arena: np.ndarray) -> float:
        """Global L2 norm of the trainable gradients."""
        return math.sqrt(self.kernels().sumsq(grad_arena, self._cstart, self._cend))

    def hyper(self, lr: float, step: int, gscale: float = 1.0) -> np.ndarray:
        """The kernel's h array for this step (see the template's header)."""
        c, hp, h = self.cfg, self.cfg.hyper, self._h
        h[:] = 0
        h[0], h[1], h[2] = lr, c.weight_decay, c.l1
        h[3] = c.max_norm or 0.0
        h[4] = gscale
        h[7] = hp.get("eps", 0.0)
        if c.rule in ("momentum", "nesterov"):
            h[5] = hp["momentum"]
        elif c.rule in ("rmsprop", "rmsprop_momentum"):
            h[5], h[6], h[10] = hp["alpha"], hp["momentum"], 1.0 - hp["alpha"]
        elif c.rule == "adam":
            b1, b2 = (float(b) for b in hp["betas"])
            h[5], h[6], h[10], h[11] = b1, b2, 1.0 - b1, 1.0 - b2
            h[8] = 1.0 / (1.0 - b1 ** step)
            h[9] = math.sqrt(1.0 - b2 ** step)
        return h

    def update(self, param_arena: np.ndarray, grad_arena: np.ndarray,
               state: dict[str, np.ndarray], lr: float, step: int) -> None:
        """One update in place.  Arenas are 1-D, dtype ``self.dtype``; ``state`` holds the
        arenas named by ``state_specs()``; ``step`` >= 1 counts updates (this one included)."""
        if step < 1:
            raise ValueError(f"optimizer step must be >= 1 (1-based), got {step}")
        k = self.kernels()
        gscale = 1.0
        if self.cfg.clip_grad_norm is not None:
            norm = math.sqrt(k.sumsq(grad_arena, self._cstart, self._cend))
            gscale = min(1.0, self.cfg.clip_grad_norm / (norm + 1e-6))
        slots = SLOTS[self.cfg.rule]
        s0 = state[slots[0]] if len(slots) > 0 else param_arena[:0]
        s1 = state[slots[1]] if len(slots) > 1 else param_arena[:0]
        k.update(param_arena, grad_arena, s0, s1, self._cstart, self._cend, self._clr,
                 self._cdecay, self._crow, self.hyper(lr, step, gscale))

    # ---- numpy reference of the same step, per tensor ------------------------------
    def ref_update(self, params: dict, grads: dict, state: dict, lr: float, step: int,
                   param_info: dict | None = None) -> None:
        """Reference of ``update`` on dicts of separate arrays (float64 works): params/grads
        name -> array; state slot -> name -> array (created as zeros when missing)."""
        c = self.cfg
        gscale = 1.0
        if c.clip_grad_norm is not None:
            norm = math.sqrt(sum(float(np.sum(np.asarray(grads[n], np.float64) ** 2))
                                 for n, *_ in self.segments))
            gscale = min(1.0, c.clip_grad_norm / (norm + 1e-6))
        for name, _, _, lm, decay, row in self.segments:
            st = {s: state.setdefault(s, {}).setdefault(name, np.zeros_like(params[name]))
                  for s in SLOTS[c.rule]}
            params[name][...] = ref_update(c, params[name], grads[name] * gscale, st, lr * lm,
                                           step, decay, row)


def ref_update(cfg: OptConfig, w: np.ndarray, g: np.ndarray, st: dict, lr: float, step: int,
               decay: bool = True, maxnorm: int = 0) -> np.ndarray:
    """Numpy reference of one rule on one tensor, written like the lecture slides.
    ``st`` maps slot name -> array, updated in place; returns the new weights.  ``maxnorm``:
    the length of a unit's incoming row (0: no max-norm; True: the weight's shape[1:])."""
    hp, w = cfg.hyper, w.copy()
    g = g.copy()
    if decay and cfg.weight_decay and not cfg.decoupled:
        g = g + cfg.weight_decay * w                  # gradient of lambda/2 * ||w||^2
    if decay and cfg.l1:
        g = g + cfg.l1 * np.sign(w)                   # gradient of l1 * |w|
    if decay and cfg.weight_decay and cfg.decoupled:
        w = w * (1 - lr * cfg.weight_decay)           # AdamW / SGDW
    r = cfg.rule
    if r == "sgd":
        w = w - lr * g
    elif r == "momentum":                             # vx = rho*vx + dx; x -= lr*vx
        st["momentum"][...] = hp["momentum"] * st["momentum"] + g
        w = w - lr * st["momentum"]
    elif r == "nesterov":                             # torch form, b = -v/lr of the slides
        st["momentum"][...] = hp["momentum"] * st["momentum"] + g
        w = w - lr * (g + hp["momentum"] * st["momentum"])
    elif r == "adagrad":
        st["sum_sq"][...] = st["sum_sq"] + g * g
        w = w - lr * g / (np.sqrt(st["sum_sq"]) + hp["eps"])
    elif r in ("rmsprop", "rmsprop_momentum"):
        a = hp["alpha"]
        st["square_avg"][...] = a * st["square_avg"] + (1 - a) * g * g
        d = g / (np.sqrt(st["square_avg"]) + hp["eps"])
        if r == "rmsprop_momentum":
            st["momentum"][...] = hp["momentum"] * st["momentum"] + d
            d = st["momentum"]
        w = w - lr * d
    elif r == "adam":
        b1, b2 = hp["betas"]
        st["exp_avg"][...] = b1 * st["exp_avg"] + (1 - b1) * g
        st["exp_avg_sq"][...] = b2 * st["exp_avg_sq"] + (1 - b2) * g * g
        m_hat = st["exp_avg"] / (1 - b1 ** step)
        v_hat = st["exp_avg_sq"] / (1 - b2 ** step)
        w = w - lr * m_hat / (np.sqrt(v_hat) + hp["eps"])
    else:
        raise ValueError(r)
    if maxnorm and cfg.max_norm is not None:
        rows = w.reshape(w.shape[0], -1) if maxnorm is True else w.reshape(-1, int(maxnorm))
        n = np.sqrt((rows.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
        rows[...] = np.where(n > cfg.max_norm, rows * (cfg.max_norm / (n + 1e-7)), rows)
    return w


def nesterov_slides(x: np.ndarray, v: np.ndarray, dx: np.ndarray, lr: float, rho: float):
    """The lecture's rearranged Nesterov step, literally: returns (x, v) new."""
    old_v = v
    v = rho * v - lr * dx
    x = x + (-rho * old_v + (1 + rho) * v)
    return x, v


def make_optimizer(train_cfg: dict | None, param_info: dict, dtype=np.float32,
                   offsets: dict[str, int] | None = None) -> Optimizer:
    """``train_cfg``: the ``train:`` dict; ``param_info``: name -> ParamInfo (layer, decay,
    lr_mult, frozen, shape[, offset]) in arena order; ``offsets`` (optional) name -> start
    in the arena (default: contiguous in ``param_info`` order)."""
    return Optimizer(resolve_config(train_cfg), param_info, dtype, offsets)
