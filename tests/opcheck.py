"""Table-driven op checker shared by the op test files.

``check_op(op_name, in_shapes, attrs, ...)`` checks one op (``compiler.ops.base.OPS``) in
three ways and raises ``AssertionError`` on the first failure:

1. **gradient check** (float64): central finite differences of the scalar
   ``L = sum(ref_forward(xs) * g)`` (``g`` a fixed random upstream gradient) at a few random
   coordinates of every differentiable input, against ``ref_backward``.  Error measure (the
   seeds'): ``max|a - b| / max(|a|, |b|)`` over the sampled coordinates; must be < ``grad_tol``
   (1e-6 by default).
2. **CPU forward kernel** (``dtype``, float32 by default) against ``ref_forward``:
   ``max|k - r| / max|r| <= rtol``.
3. **CPU backward kernel** against ``ref_backward``, for the inputs named in ``needs``
   (the other ``dxs`` entries are ``None``, as the compiler passes them).

Conventions and details
-----------------------
* ``in_shapes``: one shape per op input, ``None`` for an absent optional input.  Inputs are
  standard-normal random numbers (``seed``), except ``int_inputs`` ({index: high}: int64 labels
  in ``[0, high)``, never differentiated) and ``inputs`` ({index: array}: explicit values, for
  ops that need e.g. positive inputs).
* ``train``: the mode of both the reference and the kernel forward.  The backward checks run
  after a forward in that same mode, so ops whose backward needs ``saved`` buffers (argmax,
  masks, ...) must be checked with ``train=True``.
* Random ops get a fresh ``np.random.default_rng(seed + 1)`` for every forward call (so the
  finite differences see the same noise).  A random op draws in the array dtype
  (``rng.random(out=float_buffer)``), so kernel results are compared against the reference run
  on the *same-dtype* inputs (float32 vs float32) for random ops in train mode; everything else
  is compared against the float64 reference run on the float32 values cast up.
* Output, saved, workspace and gradient buffers handed to the kernels are filled with NaN (or
  garbage ints) first: kernels must overwrite, never rely on zeroed memory.  In train mode,
  integer saved buffers named ``argmax``/``idx``/``index`` must equal the reference's exactly.
* References may return their saved dict in eval mode too (the gradient check uses it).
* Numba compiles per dtype/layout signature, not per shape: vary shapes freely, keep one
  ``dtype`` (float32) in test tables so each kernel compiles once.
* ``needs``: tuple of input indices whose gradients the kernel backward is asked for; default:
  every present, non-int input that ``ref_backward`` returns a gradient for.
* Inputs are copied before every call, so ops that update an input in place (running stats)
  do not disturb the check.

Returns a dict of the measured errors (``grad``, ``fwd``, ``bwd``) for reporting.
"""
from __future__ import annotations

import importlib
import pkgutil

import numpy as np

__all__ = ["check_op", "get_op", "rel_err"]

_DT = {"int32": np.int32, "int64": np.int64, "uint8": np.uint8, "bool": np.bool_}


def get_op(name: str):
    """The registered op ``name``; imports every ``compiler.ops`` module until it is found."""
    from compiler.ops.base import OPS
    if name in OPS:
        return OPS[name]
    import compiler.ops as pkg
    errors = []
    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name == "base":
            continue
        try:
            importlib.import_module(f"compiler.ops.{m.name}")
        except Exception as e:  # another module may be half-written; report only if needed
            errors.append(f"compiler.ops.{m.name}: {type(e).__name__}: {e}")
        if name in OPS:
            return OPS[name]
    raise KeyError(f"op {name!r} not registered; import errors: {errors}")


def rel_err(a, b) -> float:
    """max|a - b| / max(|a|, |b|) (0 when both are all zero)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    den = max(np.max(np.abs(a)), np.max(np.abs(b)))
    num = np.max(np.abs(a - b))
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return float(num / den)


def _copy(xs):
    return [None if x is None else np.array(x, copy=True) for x in xs]


def _alloc(shape, dtype):
    a = np.empty(shape, dtype=dtype)
    if np.issubdtype(a.dtype, np.floating):
        a.fill(np.nan)
    elif a.dtype != np.bool_:
        a.fill(np.iinfo(a.dtype).max if a.dtype.kind == "u" else -7)
    return a


def _rng(op, seed):
    return np.random.default_rng(seed + 1) if op.random else None


def check_op(op_name, in_shapes, attrs, *, train=False, needs=None, seed=0, int_inputs=None,
             inputs=None, dtype=np.float32, rtol=1e-4, grad_tol=1e-6, n_coords=8, eps=1e-6,
             gradcheck=True, kernels=True):
    """Check op ``op_name`` (see the module docstring).  Returns {"grad", "fwd", "bwd"}."""
    op = get_op(op_name)
    attrs = dict(attrs)
    int_inputs = dict(int_inputs or {})
    inputs = dict(inputs or {})
    rs = np.random.default_rng(seed)
    xs64 = []
    for i, s in enumerate(in_shapes):
        if s is None:
            xs64.append(None)
        elif i in inputs:
            xs64.append(np.array(inputs[i]))
        elif i in int_inputs:
            xs64.append(rs.integers(0, int_inputs[i], size=s).astype(np.int64))
        else:
            xs64.append(rs.standard_normal(s))
    # the float values the kernels see; the float64 reference runs on exactly these values
    xsk = [x if x is None or x.dtype.kind != "f" else x.astype(dtype) for x in xs64]
    xs64 = [x if x is None or x.dtype.kind != "f" else x.astype(np.float64) for x in xsk]
    shapes = [None if x is None else tuple(x.shape) for x in xs64]
    out_shape = tuple(op.out_shape(shapes, attrs))
    y64, saved64 = op.ref_forward(_copy(xs64), attrs, train=train, rng=_rng(op, seed))
    assert tuple(y64.shape) == out_shape, f"{op_name}: ref y {y64.shape} != out_shape {out_shape}"
    g = rs.standard_normal(out_shape)
    res = {"grad": 0.0, "fwd": 0.0, "bwd": 0.0}
    diff = [i for i, x in enumerate(xs64) if x is not None and x.dtype.kind == "f"]

    if op.differentiable:
        grads = op.ref_backward(_copy(xs64), y64, saved64, g, attrs)
        assert len(grads) == len(xs64), f"{op_name}: ref_backward returned {len(grads)} grads"
        diff = [i for i in diff if grads[i] is not None]
        for i in diff:
            assert grads[i].shape == xs64[i].shape, f"{op_name}: grad {i} shape {grads[i].shape}"

    # 1. finite differences, float64
    if op.differentiable and gradcheck:
        for i in diff:
            x = xs64[i]
            coords = rs.choice(x.size, size=min(n_coords, x.size), replace=False)
            num = np.empty(len(coords))
            for j, c in enumerate(coords):
                vals = []
                for sgn in (1.0, -1.0):
                    xp = _copy(xs64)
                    xp[i].reshape(-1)[c] += sgn * eps
                    yp, _ = op.ref_forward(xp, attrs, train=train, rng=_rng(op, seed))
                    vals.append(np.sum(yp * g))
                num[j] = (vals[0] - vals[1]) / (2 * eps)
            ana = grads[i].reshape(-1)[coords]
            e = rel_err(ana, num)
            res["grad"] = max(res["grad"], e)
            assert e < grad_tol, (f"{op_name}: gradient check of input {i} failed: rel err {e:.3g}\n"
                                  f"analytic {ana}\nnumeric  {num}")
    if not kernels:
        return res

    # 2. forward kernel
    same_dtype = op.random and train
    xr = _copy(xsk) if same_dtype else _copy(xs64)
    yr, savedr = op.ref_forward(xr, attrs, train=train, rng=_rng(op, seed))
    sspecs = op.saved_specs(shapes, attrs)
    saved = {k: _alloc(s, dtype if d == "float" else _DT[d]) for k, (s, d) in sspecs.items()}
    ws = {k: _alloc(s, dtype) for k, s in op.workspace(shapes, attrs).items()}
    y = _alloc(out_shape, dtype)
    xk = _copy(xsk)
    op.forward(xk, y, saved, ws, attrs, train, rng=_rng(op, seed))
    e = rel_err(y, yr)
    res["fwd"] = e
    assert np.all(np.isfinite(y)) or not np.all(np.isfinite(yr)), f"{op_name}: kernel output has NaN"
    assert e <= rtol, f"{op_name}: forward kernel rel err {e:.3g} > {rtol}"
    for k in ("argmax", "idx", "index"):   # integer saved buffers must match exactly
        if train and k in saved and k in savedr:
            assert np.array_equal(saved[k], savedr[k]), f"{op_name}: saved {k!r} differs"
    if not op.differentiable:
        return res

    # 3. backward kernel
    if needs is None:
        needs = tuple(diff)
    gk = g.astype(dtype)
    g64 = gk.astype(np.float64)
    if same_dtype:
        rgrads = op.ref_backward(_copy(xsk), yr, savedr, gk, attrs)
    else:
        rgrads = op.ref_backward(_copy(xs64), yr, savedr, g64, attrs)
    dxs = [None] * len(xsk)
    for i in needs:
        dxs[i] = _alloc(xsk[i].shape, dtype)
    op.backward(_copy(xsk), y, saved, gk.copy(), dxs, ws, attrs)
    for i in needs:
        e = rel_err(dxs[i], rgrads[i])
        res["bwd"] = max(res["bwd"], e)
        assert e <= rtol, f"{op_name}: backward kernel, input {i}: rel err {e:.3g} > {rtol}"
    return res
