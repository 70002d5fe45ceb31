"""Training metrics: ``metrics.csv`` (one row per epoch), ``curves.png``, ``summary.json``,
and classification helpers (accuracy, confusion matrix, per-class accuracy).

``metrics.csv`` columns (``COLUMNS``): epoch, train_loss, train_accuracy, val_loss,
val_accuracy, lr, seconds, images_per_second — then any ``extra`` columns given to
``MetricsLog``. Missing values are written as empty cells and read back as NaN.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .checkpoint import temp_beside

__all__ = ["COLUMNS", "MetricsLog", "read_metrics", "plot_curves", "write_summary",
           "accuracy", "top_k_accuracy", "confusion_matrix", "per_class_accuracy"]

COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
           "seconds", "images_per_second")


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return repr(float(v)) if math.isfinite(v) else str(float(v))
    return str(v)


class MetricsLog:
    """Appends rows to ``out_dir/metrics.csv``.

    ``resume=False`` starts a new file (header only); ``resume=True`` keeps the rows of an
    existing file with the same header and drops rows whose epoch is > ``resume_epoch`` (rows
    written after the checkpoint being resumed from), so a resumed run has no duplicates.
    Each row is flushed to disk when written.
    """

    def __init__(self, out_dir: str | Path, extra: Iterable[str] = (), resume: bool = False,
                 resume_epoch: int | None = None, filename: str = "metrics.csv"):
        self.path = Path(out_dir) / filename
        self.columns = list(COLUMNS) + [c for c in extra if c not in COLUMNS]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows: list[list[str]] = []
        if resume and self.path.is_file():
            with open(self.path, newline="") as f:
                r = list(csv.reader(f))
            if r and r[0] == self.columns:
                rows = [row for row in r[1:]
                        if row and (resume_epoch is None or float(row[0]) <= resume_epoch)]
        self._rewrite(rows)

    def _rewrite(self, rows: list[list[str]]) -> None:
        fd, tmp = temp_beside(self.path)
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.columns)
            w.writerows(rows)
        os.replace(tmp, self.path)

    def log(self, epoch: int, **values: Any) -> dict[str, Any]:
        """Append one row; unknown keys raise ValueError. Returns the row as a dict."""
        unknown = set(values) - set(self.columns)
        if unknown:
            raise ValueError(f"metrics: unknown column(s) {sorted(unknown)}; "
                             f"declare them with MetricsLog(..., extra=[...])")
        row = {"epoch": epoch, **values}
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c)) for c in self.columns])
            f.flush()
        return row


def read_metrics(csv_path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a metrics CSV as float64 arrays (empty cells -> NaN)."""
    with open(csv_path, newline="") as f:
        r = list(csv.reader(f))
    if not r:
        return {}
    header, rows = r[0], [row for row in r[1:] if row]
    out = {}
    for j, c in enumerate(header):
        out[c] = np.array([float(row[j]) if j < len(row) and row[j] != "" else np.nan
                           for row in rows], dtype=np.float64)
    return out


def plot_curves(csv_path: str | Path, png_path: str | Path, title: str | None = None) -> Path:
    """Plot loss, accuracy and lr against epoch from ``csv_path`` into ``png_path`` (written
    atomically). Uses the Agg canvas directly, so no global pyplot state or display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = read_metrics(csv_path)
    ep = m.get("epoch", np.zeros(0))
    fig = Figure(figsize=(12, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        for split, style in (("train", "-"), ("val", "--")):
            v = m.get(f"{split}_{key}")
            if v is not None and np.any(np.isfinite(v)):
                ax.plot(ep, v, style, marker="o", markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    lr = m.get("lr")
    if lr is not None and np.any(np.isfinite(lr)):
        axes[2].plot(ep, lr, color="tab:green", marker="o", markersize=3)
        if np.all(lr[np.isfinite(lr)] > 0) and np.nanmax(lr) / np.nanmin(lr) > 20:
            axes[2].set_yscale("log")
    axes[2].set_xlabel("epoch")
    axes[2].set_title("learning rate")
    axes[2].grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(png_path)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.replace(tmp, png_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return png_path


def _clean(o: Any) -> Any:
    """Make a value strict-JSON: numpy -> python, non-finite floats -> None."""
    if isinstance(o, Mapping):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, set)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, Path):
        return str(o)
    return o


def write_summary(path: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary`` as strict JSON (NaN/inf -> null), atomically (temp + fsync + replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(summary), indent=2, sort_keys=True, allow_nan=False) + "\n"
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ----------------------------------------------------------------------------- classification

def _preds(logits_or_pred: np.ndarray) -> np.ndarray:
    a = np.asarray(logits_or_pred)
    return a.argmax(axis=1) if a.ndim == 2 else a.astype(np.int64)


def accuracy(logits_or_pred: np.ndarray, y: np.ndarray) -> float:
    """Fraction correct; accepts logits (N, K) or predicted labels (N,). NaN for N = 0."""
    p = _preds(logits_or_pred)
    return float(np.mean(p == np.asarray(y))) if p.size else float("nan")


def top_k_accuracy(logits: np.ndarray, y: np.ndarray, k: int = 5) -> float:
    """Fraction of rows whose label is among the k largest logits (N, K)."""
    logits = np.asarray(logits)
    if logits.shape[0] == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == np.asarray(y)[:, None], axis=1)))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(k, k) int64 counts: rows = true class, columns = predicted class."""
    t = np.asarray(y_true, np.int64).ravel()
    p = _preds(y_pred).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels, y_pred {p.size}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= k):
        raise ValueError(f"labels must be in [0, {k})")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """(k,) recall per true class from a confusion matrix; NaN for classes with no samples."""
    cm = np.asarray(cm, np.float64)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)
