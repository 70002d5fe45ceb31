"""The contract of a compiled op (one class per op, registered in ``OPS``).

An op is what one IR node computes.  Every op carries, side by side (micrograd/llm.c style):

* a numpy **reference** forward and backward (``ref_forward`` / ``ref_backward``), written
  for clarity, dtype-generic (tests run them in float64 against central differences);
* the **CPU kernels** (``forward`` / ``backward``): thin Python launchers that call
  ``@njit(cache=True)`` kernels rendered from jinja2 templates in ``compiler/ops/templates``
  (``kernel_cache.load_kernels(template, **static_config)``) and/or BLAS through numpy with
  preallocated ``out=`` arrays.  Launchers never allocate arrays of batch size: every
  output, saved tensor and scratch buffer is passed in, preallocated by the compiler
  (memory planning). They must work for float32 and float64 arrays alike.

Conventions
-----------
* All shapes include the batch dimension N (the net is compiled for a fixed batch size).
  Images are NCHW, C-contiguous; vectors are (N, F).
* ``xs`` is the list of the node's inputs in order (data first, then parameters, e.g.
  conv2d: [x, weight, bias]); an optional input that is absent is ``None``.
* ``attrs`` is a plain dict of canonical static attributes (ints, floats, bools, tuples,
  identifier strings) -- exactly what the IR node holds.
* ``saved`` is a dict name -> preallocated array for what backward needs beyond the
  inputs and the output (argmax indices, masks, normalised input, inverse std ...),
  described by ``saved_specs``.  Filled by ``forward`` only when ``train`` is true.
* ``ws`` is a dict name -> preallocated float scratch array described by ``workspace``.
* ``backward`` receives ``dxs``: one entry per input, an array to OVERWRITE with that
  input's gradient, or ``None`` when that gradient is not needed (e.g. the net input).
* Randomness (dropout, DropConnect, stochastic depth, fractional max-pool) comes only from
  ``rng`` (a ``numpy.random.Generator``) passed to ``forward`` so runs are reproducible and
  resumable: fill a saved buffer with ``rng.random(out=..., dtype=...)`` then use it.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

Shape = tuple[int, ...]


class Op:
    name: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ("x",)    # names of inputs, in order; "?" suffix = optional
    differentiable: ClassVar[bool] = True
    random: ClassVar[bool] = False                  # forward takes an rng in train mode

    # --- shapes ---------------------------------------------------------------------
    def out_shape(self, in_shapes: list[Shape | None], attrs: dict) -> Shape:
        raise NotImplementedError

    def saved_specs(self, in_shapes: list[Shape | None], attrs: dict) -> dict[str, tuple[Shape, str]]:
        """name -> (shape, dtype) where dtype is "float" (the net's float type), "int32",
        "int64", "uint8" or "bool"."""
        return {}

    def workspace(self, in_shapes: list[Shape | None], attrs: dict) -> dict[str, Shape]:
        """name -> shape of float scratch arrays forward/backward need (im2col columns ...)."""
        return {}

    # --- numpy reference ----------------------------------------------------------
    def ref_forward(self, xs: list, attrs: dict, train: bool = False,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict]:
        """Returns (y, saved). Must equal ``forward`` given the same rng state."""
        raise NotImplementedError

    def ref_backward(self, xs: list, y: np.ndarray, saved: dict, dy: np.ndarray,
                     attrs: dict) -> list[np.ndarray | None]:
        """Gradient w.r.t. every input (None for absent optional inputs)."""
        raise NotImplementedError

    # --- CPU kernels ----------------------------------------------------------------
    def forward(self, xs: list, y: np.ndarray, saved: dict, ws: dict, attrs: dict,
                train: bool, rng: np.random.Generator | None = None) -> None:
        raise NotImplementedError

    def backward(self, xs: list, y: np.ndarray, saved: dict, dy: np.ndarray,
                 dxs: list, ws: dict, attrs: dict) -> None:
        raise NotImplementedError


_STAND_INS: dict = {}


def stand_in(dtype) -> np.ndarray:
    """A shared 1-element array of ``dtype`` that kernels receive in place of an absent
    optional input/output (no bias, a gradient that is not needed): numba kernels take
    arrays, not None, and this keeps one compiled signature for both cases."""
    dt = np.dtype(dtype)
    a = _STAND_INS.get(dt)
    if a is None:
        a = _STAND_INS[dt] = np.zeros(1, dtype=dt)
    return a


OPS: dict[str, Op] = {}


def register_op(cls: type[Op]) -> type[Op]:
    if cls.name in OPS:
        raise RuntimeError(f"op {cls.name!r} registered twice")
    OPS[cls.name] = cls()
    return cls
