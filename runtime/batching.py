"""Row bookkeeping for training: seeded train/val/test index splits, k-fold splits and
shuffled mini-batches (pure numpy, no file formats; ``runtime.data`` re-exports these)."""
from __future__ import annotations

from typing import Iterator

import numpy as np


def split_indices(y: np.ndarray, val_split: float, test_split: float, seed: int,
                  stratify: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic (train, val, test) row indices, each sorted ascending.

    With ``stratify`` the round(n * fraction) val (test) rows are shared out over the classes
    in proportion to their sizes, largest remainder first (ties: class order), so class
    proportions are kept and the split's size is what was asked even for tiny data sets (20
    images of 10 classes, val 0.2: 4 rows; rounding per class gave 0).  Depends only on (y,
    fractions, seed).
    """
    if not (0 <= val_split < 1 and 0 <= test_split < 1 and val_split + test_split < 1):
        raise ValueError(f"val_split={val_split}, test_split={test_split}: need fractions "
                         f"in [0, 1) with a sum below 1")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
    sizes = np.array([len(g) for g in groups], np.int64)
    n_te_c = _apportion(sizes, test_split)
    n_va_c = _apportion(sizes, val_split, cap=sizes - n_te_c)
    tr, va, te = [], [], []
    for g, n_te, n_va in zip(groups, n_te_c, n_va_c):
        g = rng.permutation(g)
        te.append(g[:n_te])
        va.append(g[n_te:n_te + n_va])
        tr.append(g[n_te + n_va:])
    out = tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in (tr, va, te))
    if len(out[0]) == 0:
        raise ValueError("the training split is empty")
    return out  # type: ignore[return-value]


def _apportion(sizes: np.ndarray, frac: float, cap: np.ndarray | None = None) -> np.ndarray:
    """Per-group counts summing to round(sum(sizes) * frac): each group's floor of size * frac
    plus one for the largest remainders, never above ``cap`` (default: the group's size)."""
    cap = sizes if cap is None else cap
    want = sizes * frac
    n = np.minimum(np.floor(want + 1e-9).astype(np.int64), cap)
    total = min(int(round(float(sizes.sum()) * frac)), int(cap.sum()))
    order = sorted(range(len(sizes)), key=lambda i: (-(want[i] - n[i]), i))
    while n.sum() < total:
        progressed = False
        for i in order:
            if n.sum() >= total:
                break
            if n[i] < cap[i]:
                n[i] += 1
                progressed = True
        if not progressed:
            break
    return n


def kfold(n: int, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train_idx, val_idx) pairs: a seeded permutation of range(n) cut into k folds of
    sizes differing by at most one; each row is in exactly one val fold. Indices sorted."""
    if not 2 <= k <= n:
        raise ValueError(f"kfold needs 2 <= k <= n, got k={k}, n={n}")
    folds = np.array_split(np.random.default_rng(seed).permutation(n), k)
    return [(np.sort(np.concatenate(folds[:i] + folds[i + 1:])), np.sort(folds[i]))
            for i in range(k)]


def num_batches(n: int, batch_size: int, drop_last: bool = True) -> int:
    """Number of batches ``batches`` yields for n rows."""
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator | None,
            shuffle: bool = True, drop_last: bool = True,
            start_batch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (x[idx], y[idx]) mini-batches (copies: callers may modify them) of one epoch.

    The epoch order is ``rng.permutation(n)``, drawn eagerly by this call, so the
    caller's Generator advances by exactly one permutation per epoch. Exact resume: give the
    order its own Generator (augmentation and dropout use others), save its state at the start
    of the epoch, restore it, and pass the number of batches already done as ``start_batch``. ``drop_last`` drops a final incomplete batch (a
    compiled net has a fixed batch size), so n < batch_size yields nothing.
    """
    n = int(x.shape[0])
    if y.shape[0] != n:
        raise ValueError(f"x has {n} rows but y has {y.shape[0]}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle:
        if rng is None:
            raise ValueError("shuffle=True needs a np.random.Generator")
        order = rng.permutation(n)
    else:
        order = np.arange(n)
    return _iter_batches(x, y, order, batch_size, start_batch, num_batches(n, batch_size, drop_last))


def _iter_batches(x: np.ndarray, y: np.ndarray, order: np.ndarray, bs: int, start: int,
                  stop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for b in range(start, stop):
        idx = order[b * bs:(b + 1) * bs]
        yield x[idx], y[idx]
