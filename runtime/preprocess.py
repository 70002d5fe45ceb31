"""Preprocessing fitted on the training split only and applied to every split.

``cfg`` is the ``train.preprocess`` list of one-key mappings, applied in order:

* ``{standardize: per_channel}`` — (x - mean_c) / std_c, statistics over (N, H, W) per channel
* ``{standardize: global}``      — (x - mean) / std, one scalar pair over everything
* ``{mean_subtract: per_pixel}`` — x - mean image (C, H, W)   (the "mean image" of the lectures)
* ``{mean_subtract: per_channel}`` — x - mean_c                (one value per R, G, B)
* ``{rescale: {scale: s, shift: b}}`` — x * s + b             (nothing fitted)
* ``{zca_whiten: {eps: 0.1}}`` — (x - mean) W, W = U diag(1/sqrt(S + eps)) Uᵀ from the
  covariance's eigendecomposition: the lectures' whitening, rotated back so that samples
  keep their image shape (ZCA); D = C*H*W <= ``ZCA_MAX`` (W is D x D)

Step i is fitted on the training data as transformed by steps 0..i-1, so a list behaves like
a pipeline. Statistics are accumulated in float64 in chunks (no float64 copy of the data set)
and stored as float32. Standard deviations below ``EPS`` are clamped (constant pixels, e.g.
the digits' always-zero border, would otherwise divide by zero).

State (for checkpoints): ``Preprocessor.state()`` -> ``{"<i>.mean": arr, "<i>.std": arr}``;
rebuild with ``Preprocessor.from_state(cfg, state)``.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["Preprocessor", "EPS"]

EPS = 1e-6
_KINDS = {"standardize": ("per_channel", "global"), "mean_subtract": ("per_pixel", "per_channel"),
          "rescale": None, "zca_whiten": None}
ZCA_MAX = 4096  # values per sample: the D x D covariance and whitening matrix stay small
_CHUNK = 4096  # rows per chunk when accumulating statistics


def _parse(cfg: Iterable[Any] | None) -> list[tuple[str, Any]]:
    """Validate the config list -> [(kind, arg)]; rescale's arg is (scale, shift)."""
    steps: list[tuple[str, Any]] = []
    for i, item in enumerate(cfg or []):
        if isinstance(item, str):
            item = {item: {}}
        if not isinstance(item, Mapping) or len(item) != 1:
            raise ValueError(f"preprocess[{i}]: expected a one-key mapping, got {item!r}")
        (kind, arg), = item.items()
        if kind not in _KINDS:
            raise ValueError(f"preprocess[{i}]: unknown step {kind!r}; expected one of "
                             f"{', '.join(_KINDS)}")
        if kind == "rescale":
            arg = dict(arg or {})
            extra = set(arg) - {"scale", "shift"}
            if extra:
                raise ValueError(f"preprocess[{i}].rescale: unknown key(s) {sorted(extra)}")
            steps.append((kind, (float(arg.get("scale", 1.0)), float(arg.get("shift", 0.0)))))
            continue
        if kind == "zca_whiten":
            arg = dict(arg or {})
            if set(arg) - {"eps"}:
                raise ValueError(f"preprocess[{i}].zca_whiten: unknown key(s) {sorted(set(arg) - {'eps'})}")
            eps = float(arg.get("eps", 0.1))
            if not eps >= 0:
                raise ValueError(f"preprocess[{i}].zca_whiten: eps must be >= 0, got {eps}")
            steps.append((kind, eps))
            continue
        if arg is None or arg == {}:
            arg = _KINDS[kind][0]
        if arg not in _KINDS[kind]:
            raise ValueError(f"preprocess[{i}].{kind}: expected one of {_KINDS[kind]}, got {arg!r}")
        steps.append((kind, arg))
    return steps


def _moments(x: np.ndarray, axes: tuple[int, ...], mean: np.ndarray | None = None) -> np.ndarray:
    """Mean (or, given ``mean``, the variance about it) over ``axes`` in float64, by chunks
    of rows so that no float64 copy of the whole data set is made. Result keeps dims."""
    n = x.shape[0]
    count = n * int(np.prod([x.shape[a] for a in axes if a != 0]))
    acc = None
    for s in range(0, n, _CHUNK):
        c = x[s:s + _CHUNK].astype(np.float64)
        if mean is not None:
            c = (c - mean) ** 2
        part = c.sum(axis=axes, keepdims=True)
        acc = part if acc is None else acc + part
    return acc / count


def _fit_zca(x: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """Mean (D,) and ZCA matrix W (D, D) of samples x (N, ...), D = prod(x.shape[1:]):
    covariance in float64 by chunks, W = U diag(1/sqrt(S + eps)) Uᵀ."""
    n, d = x.shape[0], int(np.prod(x.shape[1:]))
    if d > ZCA_MAX:
        raise ValueError(f"zca_whiten needs a {d} x {d} whitening matrix for samples of shape "
                         f"{x.shape[1:]} ({d} values; the limit is {ZCA_MAX}): use standardize, or "
                         f"whiten smaller inputs")
    flat = x.reshape(n, d)
    mean = _moments(flat, (0,))[0]
    cov = np.zeros((d, d))
    for s in range(0, n, _CHUNK):
        c = flat[s:s + _CHUNK].astype(np.float64) - mean
        cov += c.T @ c
    cov /= max(n, 1)
    S, U = np.linalg.eigh(cov)
    w = (U / np.sqrt(np.maximum(S, 0.0) + eps)) @ U.T
    return {"mean": mean.astype(np.float32), "w": w.astype(np.float32)}


class Preprocessor:
    """Fit-once, apply-many preprocessing pipeline (see the module doc)."""

    def __init__(self, cfg: Iterable[Any] | None):
        self.cfg = list(cfg or [])
        self.steps = _parse(self.cfg)
        self.params: list[dict[str, np.ndarray]] = [{} for _ in self.steps]
        self.fitted = not any(k != "rescale" for k, _ in self.steps)

    def fit(self, x: np.ndarray) -> "Preprocessor":
        """Fit every step on the training images x (N, C, H, W) -- or feature vectors (N, F),
        where per_channel and per_pixel are per feature --; returns self."""
        if x.ndim not in (2, 4) or x.shape[0] == 0:
            raise ValueError(f"fit expects a non-empty (N, C, H, W) or (N, F) array, got {x.shape}")
        cur = x
        for i, (kind, arg) in enumerate(self.steps):
            if kind == "zca_whiten":
                self.params[i] = _fit_zca(cur, arg)
            elif kind != "rescale":
                axes = ({"per_channel": (0, 2, 3), "global": (0, 1, 2, 3), "per_pixel": (0,)} if x.ndim == 4
                        else {"per_channel": (0,), "global": (0, 1), "per_pixel": (0,)})[arg]
                mean = _moments(cur, axes)
                p = {"mean": mean[0].astype(np.float32)}          # (C,1,1), (1,1,1) or (C,H,W)
                if kind == "standardize":
                    std = np.sqrt(_moments(cur, axes, mean))[0]
                    p["std"] = np.maximum(std, EPS).astype(np.float32)
                self.params[i] = p
            if i + 1 < len(self.steps):
                cur = self._apply_step(i, cur)
        self.fitted = True
        return self

    def _apply_step(self, i: int, x: np.ndarray) -> np.ndarray:
        kind, arg = self.steps[i]
        if kind == "rescale":
            scale, shift = arg
            return x * np.float32(scale) + np.float32(shift)
        p = self.params[i]
        if kind == "zca_whiten":
            n = x.shape[0]
            return ((x.reshape(n, -1) - p["mean"]) @ p["w"]).reshape(x.shape)
        if arg == "per_pixel" and p["mean"].shape != x.shape[-p["mean"].ndim:]:
            raise ValueError(f"per-pixel mean of shape {p['mean'].shape} does not fit samples "
                             f"of shape {x.shape[1:]}")
        out = x - p["mean"]
        if kind == "standardize":
            out = out / p["std"]
        return out

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transform x (N, C, H, W) (or one image (C, H, W)); returns a new float32 array."""
        if not self.fitted:
            raise RuntimeError("Preprocessor.apply before fit (or from_state)")
        out = np.array(x, dtype=np.float32, copy=True)
        for i in range(len(self.steps)):
            out = self._apply_step(i, out).astype(np.float32, copy=False)
        return out

    __call__ = apply

    def fit_apply(self, x: np.ndarray) -> np.ndarray:
        """fit(x) then apply(x)."""
        return self.fit(x).apply(x)

    def state(self) -> dict[str, np.ndarray]:
        """Fitted statistics as ``{"<step>.mean": float32 array, "<step>.std": ...}``."""
        return {f"{i}.{k}": v.copy() for i, p in enumerate(self.params) for k, v in p.items()}

    @classmethod
    def from_state(cls, cfg: Iterable[Any] | None, state: Mapping[str, np.ndarray]) -> "Preprocessor":
        """Rebuild a fitted Preprocessor from ``cfg`` and ``state()`` output; checks that the
        state has exactly the arrays the config needs."""
        pre = cls(cfg)
        want = set()
        for i, (kind, _) in enumerate(pre.steps):
            keys = ({"mean", "std"} if kind == "standardize" else {"mean", "w"} if kind == "zca_whiten"
                    else {"mean"} if kind != "rescale" else set())
            want |= {f"{i}.{k}" for k in keys}
            pre.params[i] = {k: np.asarray(state[f"{i}.{k}"], np.float32)
                             for k in keys if f"{i}.{k}" in state}
        if set(state) != want:
            raise ValueError(f"preprocess state does not match its config: missing "
                             f"{sorted(want - set(state))}, unexpected {sorted(set(state) - want)}")
        pre.fitted = True
        return pre

    def __repr__(self) -> str:
        return f"Preprocessor({self.cfg!r}, fitted={self.fitted})"
