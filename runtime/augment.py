"""Per-batch data augmentation, vectorised numpy, driven by a caller-owned np.random.Generator.

``cfg`` is the ``train.augment`` list of one-key mappings, applied in the listed order:

* ``{random_crop: {pad: p}}`` — zero-pad each side by p, crop back to (H, W) at a random
  offset per image (``fill`` sets the pad value, default 0).  With ``size: [h, w]`` the crop
  is (h, w) (AlexNet's 224 windows of 256 images, ``pad: 0``); evaluation then sees the
  centre (h, w) window (``Augmenter.eval_crop`` / ``center_crop``).
* ``{random_scale_crop: {scale: [lo, hi], ratio: [3/4, 4/3], interpolation: bilinear}}`` —
  crop a region of area fraction U(lo, hi) and aspect ratio log-uniform in ``ratio``
  (Inception/RandomResizedCrop style; ``ratio: [1, 1]`` keeps the aspect) at a random place
  and resize it back to (H, W) (``bilinear`` or ``nearest``; half-pixel centres).
* ``{flip: horizontal}`` (or ``vertical``) — mirror each image with probability ``p`` = 0.5
  (write ``{flip: {direction: horizontal, p: 0.5}}`` to change it).
* ``{color_jitter: {brightness: b, contrast: c, saturation: s}}`` — per image, factors drawn
  from U(1-b, 1+b) etc.: brightness multiplies, contrast blends with the image's mean grey,
  saturation blends with the pixel's grey (a no-op on 1-channel images). Fixed order.
* ``{pca_color: {std: sigma}}`` — AlexNet's "fancy PCA": eigen-decompose the C x C covariance
  of all training pixels once; per image add ``P @ (alpha * lambda)`` with alpha ~ N(0, sigma)
  (Krizhevsky et al. 2012, §4.1) to every pixel.

Colour operations clip to the [min, max] range of the training images (``clip: false`` to
turn off) so that jittered pixels stay plausible. The augmenter works in whatever value space
it is given — raw images (``prep.apply(aug(x_raw_batch, rng))``) or preprocessed ones
(``aug(prep.apply(x)[idx], rng)``) — as long as ``train_x`` is in that same space. (Padding
with 0 is black in raw space, the mean colour after standardisation.)
Every call returns a new array; the input batch (and so the data set) is never modified.
Random draws per op are a fixed sequence of generator calls, so the same Generator state
gives the same batch (exact resume).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["Augmenter", "random_crop", "center_crop", "eval_crop", "random_scale_crop", "flip",
           "color_jitter", "pca_color", "fit_pca"]

_GREY = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma, as torchvision


def random_crop(x: np.ndarray, rng: np.random.Generator, pad: int, fill: float = 0.0,
                size=None) -> np.ndarray:
    """Pad (N,C,H,W) by ``pad`` on every side with ``fill``; crop ``size`` (default (H, W))
    at random offsets."""
    n, _, h, w = x.shape
    ch, cw = (h, w) if size is None else (int(size[0]), int(size[1]))
    if pad <= 0 and (ch, cw) == (h, w):
        return x.copy()
    if ch > h + 2 * pad or cw > w + 2 * pad:
        raise ValueError(f"random_crop: a {ch}x{cw} crop does not fit {h}x{w} images padded by {pad}")
    xp = x
    if pad > 0:
        xp = np.full((n, x.shape[1], h + 2 * pad, w + 2 * pad), fill, np.float32)  # np.pad is 2x slower
        xp[:, :, pad:pad + h, pad:pad + w] = x
    oy = rng.integers(0, h + 2 * pad - ch + 1, n)
    ox = rng.integers(0, w + 2 * pad - cw + 1, n)
    # a strided view of every (ch, cw) window; picking one per image copies whole rows at once
    win = np.lib.stride_tricks.sliding_window_view(xp, (ch, cw), axis=(2, 3))
    return win[np.arange(n), :, oy, ox]                                       # (N,C,ch,cw)


def center_crop(x: np.ndarray, size) -> np.ndarray:
    """The centre (h, w) window of images (N, C, H, W) (torchvision's CenterCrop offsets,
    round((H - h) / 2)); images already (h, w) come back as they are."""
    h, w = int(size[0]), int(size[1])
    H, W = x.shape[-2:]
    if (H, W) == (h, w):
        return x
    if h > H or w > W:
        raise ValueError(f"a centre {h}x{w} crop does not fit {H}x{W} images")
    top, left = int(round((H - h) / 2.0)), int(round((W - w) / 2.0))
    return np.ascontiguousarray(x[..., top:top + h, left:left + w])


def _interp_matrix(start: np.ndarray, length: np.ndarray, size: int, mode: str) -> np.ndarray:
    """(N, size, size) float32 matrices R with out_line = R @ in_line resampling the source
    interval [start, start + length) of each image to ``size`` pixels (half-pixel centres,
    edge-clamped): bilinear -> two weights per row, nearest -> one."""
    n = start.shape[0]
    src = start[:, None] + (np.arange(size) + 0.5) * (length / size)[:, None] - 0.5   # (N, size)
    r = np.zeros((n, size, size), np.float32)
    ni, oi = np.arange(n)[:, None], np.arange(size)[None, :]
    if mode == "nearest":
        r[ni, oi, np.clip(np.floor(src + 0.5), 0, size - 1).astype(np.intp)] = 1.0
        return r
    if mode != "bilinear":
        raise ValueError(f"random_scale_crop: interpolation must be bilinear or nearest, "
                         f"got {mode!r}")
    src = np.clip(src, 0, size - 1)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, size - 1)
    wt = (src - lo).astype(np.float32)
    r[ni, oi, lo] = 1 - wt
    r[ni, oi, hi] += wt          # (n, i) pairs are unique, so += is safe; hi == lo => wt == 0
    return r


def random_scale_crop(x: np.ndarray, rng: np.random.Generator, scale=(0.08, 1.0),
                      ratio=(3 / 4, 4 / 3), interpolation: str = "bilinear") -> np.ndarray:
    """Crop a random region (area fraction U(scale), aspect log-U(ratio), clipped to the image)
    per image and resize it back to (H, W). x (N,C,H,W) -> (N,C,H,W) float32."""
    n, _, h, w = x.shape
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"random_scale_crop: scale must satisfy 0 < lo <= hi <= 1, got {scale}")
    area = rng.uniform(lo, hi, n)
    r = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), n))
    ch = np.clip(h * np.sqrt(area / r), 1.0, h)      # crop height, width in pixels (real)
    cw = np.clip(w * np.sqrt(area * r), 1.0, w)
    y0 = rng.uniform(0, 1, n) * (h - ch)             # top-left corner
    x0 = rng.uniform(0, 1, n) * (w - cw)
    ry = _interp_matrix(y0, ch, h, interpolation)                 # (N, H, H)
    rx = _interp_matrix(x0, cw, w, interpolation)                 # (N, W, W)
    # out[n, c] = ry[n] @ x[n, c] @ rx[n].T  (batched small GEMMs; exact for nearest)
    return np.matmul(np.matmul(ry[:, None], x.astype(np.float32, copy=False)),
                     rx.transpose(0, 2, 1)[:, None])


def flip(x: np.ndarray, rng: np.random.Generator, direction: str = "horizontal",
         p: float = 0.5) -> np.ndarray:
    """Mirror each image of (N,C,H,W) with probability p (horizontal: W axis)."""
    axis = {"horizontal": 3, "vertical": 2}.get(direction)
    if axis is None:
        raise ValueError(f"flip: direction must be horizontal or vertical, got {direction!r}")
    m = rng.random(x.shape[0]) < p
    return np.where(m[:, None, None, None], np.flip(x, axis=axis), x)


def _grey(x: np.ndarray) -> np.ndarray:
    """Grey level (N,1,H,W) of RGB (N,3,H,W); the channel mean for other channel counts."""
    if x.shape[1] == 3:
        return (_GREY[0] * x[:, 0] + _GREY[1] * x[:, 1] + _GREY[2] * x[:, 2])[:, None]
    return x.mean(axis=1, keepdims=True)


def color_jitter(x: np.ndarray, rng: np.random.Generator, brightness: float = 0.0,
                 contrast: float = 0.0, saturation: float = 0.0,
                 clip: tuple[float, float] | None = None) -> np.ndarray:
    """Brightness, contrast, saturation jitter with per-image factors (see module doc)."""
    n, c = x.shape[:2]
    out = x.astype(np.float32, copy=True)
    shape = (n, 1, 1, 1)
    # draw all three factor vectors always, so the generator advances the same whatever is on
    b = rng.uniform(1 - brightness, 1 + brightness, n).astype(np.float32).reshape(shape)
    k = rng.uniform(1 - contrast, 1 + contrast, n).astype(np.float32).reshape(shape)
    s = rng.uniform(1 - saturation, 1 + saturation, n).astype(np.float32).reshape(shape)
    if brightness:
        out *= b
    if contrast:
        cm = out.mean(axis=(2, 3))                                    # (N, C) channel means
        m = (cm @ _GREY if c == 3 else cm.mean(axis=1)).reshape(shape)  # mean grey level
        out -= m
        out *= k
        out += m
    if saturation and c > 1:
        g = _grey(out)
        out -= g
        out *= s
        out += g
    if clip is not None:
        np.clip(out, clip[0], clip[1], out=out)
    return out


def fit_pca(train_x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of the C x C covariance of all pixels of train_x (N,C,H,W).

    Returns (eigvals (C,) descending, eigvecs (C, C) with eigenvectors in columns). Float64
    accumulation in chunks of images (exact, no full copy).
    """
    n, c = train_x.shape[:2]
    s1 = np.zeros(c)
    s2 = np.zeros((c, c))
    count = 0
    for i in range(0, n, chunk):
        p = train_x[i:i + chunk].astype(np.float64).transpose(1, 0, 2, 3).reshape(c, -1)
        s1 += p.sum(axis=1)
        s2 += p @ p.T
        count += p.shape[1]
    mean = s1 / count
    cov = s2 / count - np.outer(mean, mean)
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(vals)[::-1]
    return np.maximum(vals[order], 0.0), vecs[:, order]


def pca_color(x: np.ndarray, rng: np.random.Generator, eigvals: np.ndarray, eigvecs: np.ndarray,
              std: float = 0.1, clip: tuple[float, float] | None = None) -> np.ndarray:
    """Add eigvecs @ (alpha * eigvals), alpha ~ N(0, std) (N, C), to every pixel of each image."""
    n, c = x.shape[:2]
    alpha = rng.normal(0.0, std, (n, c))
    offset = (alpha * eigvals[None, :]) @ eigvecs.T                     # (N, C)
    out = x + offset.astype(np.float32)[:, :, None, None]
    if clip is not None:
        np.clip(out, clip[0], clip[1], out=out)
    return out.astype(np.float32, copy=False)


def eval_crop(cfg: Iterable[Any] | None):
    """The (h, w) of a ``random_crop: {size}`` in a ``train.augment`` list, else None."""
    for item in cfg or []:
        if isinstance(item, Mapping) and isinstance(item.get("random_crop"), Mapping):
            size = item["random_crop"].get("size")
            if size is not None:
                return int(size[0]), int(size[1])
    return None


_OPS = {"random_crop": {"pad", "fill", "size"},
        "random_scale_crop": {"scale", "ratio", "interpolation"},
        "flip": {"direction", "p"},
        "color_jitter": {"brightness", "contrast", "saturation", "clip"},
        "pca_color": {"std", "clip"}}


class Augmenter:
    """Applies the ``train.augment`` list to a batch: ``aug(xb, rng) -> new xb``.

    ``train_x`` (N,C,H,W), the training split in the space the batches will be in, is used
    once: for the PCA of ``pca_color`` and for the clipping range of colour operations.
    """

    def __init__(self, cfg: Iterable[Any] | None, train_x: np.ndarray | None = None):
        self.cfg = list(cfg or [])
        self.ops: list[tuple[str, dict[str, Any]]] = []
        for i, item in enumerate(self.cfg):
            if not isinstance(item, Mapping) or len(item) != 1:
                raise ValueError(f"augment[{i}]: expected a one-key mapping, got {item!r}")
            (name, arg), = item.items()
            if name not in _OPS:
                raise ValueError(f"augment[{i}]: unknown augmentation {name!r}; expected one of "
                                 f"{', '.join(_OPS)}")
            if name == "flip" and isinstance(arg, str):
                arg = {"direction": arg}
            if not isinstance(arg, (Mapping, type(None))):
                raise ValueError(f"augment[{i}].{name}: expected a mapping, got {arg!r}")
            extra = set(arg or {}) - _OPS[name]
            if extra:
                raise ValueError(f"augment[{i}].{name}: unknown key(s) {sorted(extra)}; "
                                 f"allowed: {sorted(_OPS[name])}")
            self.ops.append((name, dict(arg or {})))
        if self.ops and train_x is not None and train_x.ndim != 4:
            raise ValueError(f"train.augment transforms images (N, C, H, W); this data holds "
                             f"samples of shape {train_x.shape[1:]}: remove train.augment")
        need_range = any(n in ("color_jitter", "pca_color") and a.get("clip", True)
                         for n, a in self.ops)
        if (need_range or any(n == "pca_color" for n, _ in self.ops)) and train_x is None:
            raise ValueError("color_jitter / pca_color need train_x (clip range, PCA)")
        self.clip_range = (float(train_x.min()), float(train_x.max())) if need_range else None
        self.eigvals = self.eigvecs = None
        if any(n == "pca_color" for n, _ in self.ops):
            self.eigvals, self.eigvecs = fit_pca(train_x)

    def __call__(self, xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment a batch (N,C,H,W) -> new float32 (N,C,H,W); ``xb`` is left untouched."""
        if not self.ops:
            return np.array(xb, dtype=np.float32, copy=True)
        out = xb            # every op returns a new array and leaves its input alone
        for name, a in self.ops:
            a = dict(a)
            clip = self.clip_range if a.pop("clip", True) else None
            if name == "random_crop":
                out = random_crop(out, rng, int(a.get("pad", 4)), float(a.get("fill", 0.0)), a.get("size"))
            elif name == "random_scale_crop":
                out = random_scale_crop(out, rng, a.get("scale", (0.08, 1.0)),
                                        a.get("ratio", (3 / 4, 4 / 3)),
                                        a.get("interpolation", "bilinear"))
            elif name == "flip":
                out = flip(out, rng, a.get("direction", "horizontal"), float(a.get("p", 0.5)))
            elif name == "color_jitter":
                out = color_jitter(out, rng, float(a.get("brightness", 0.0)),
                                   float(a.get("contrast", 0.0)),
                                   float(a.get("saturation", 0.0)), clip)
            else:
                out = pca_color(out, rng, self.eigvals, self.eigvecs, float(a.get("std", 0.1)),
                                clip)
        return out.astype(np.float32, copy=False)

    @property
    def eval_crop(self):
        """(h, w) when a random_crop picks smaller windows: evaluation (val/test, eval,
        predict, features) then uses the centre window of that size; else None."""
        return eval_crop(self.cfg)

    def __bool__(self) -> bool:
        return bool(self.ops)

    def __repr__(self) -> str:
        return f"Augmenter({self.cfg!r})"
