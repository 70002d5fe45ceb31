"""runtime.metrics: CSV log, curves.png, summary.json, classification helpers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from runtime.metrics import (COLUMNS, MetricsLog, accuracy, confusion_matrix, per_class_accuracy,
                             plot_curves, read_metrics, top_k_accuracy, write_summary)


def _fill(log, epochs):
    for e in range(1, epochs + 1):
        log.log(e, train_loss=2.0 / e, train_accuracy=1 - 0.5 / e, val_loss=2.2 / e,
                val_accuracy=1 - 0.6 / e, lr=0.1 * 0.5 ** e, seconds=1.5, images_per_second=1e3)


def test_metrics_csv_and_resume(tmp_path):
    log = MetricsLog(tmp_path)
    _fill(log, 5)
    m = read_metrics(tmp_path / "metrics.csv")
    assert list(m) == list(COLUMNS)
    np.testing.assert_allclose(m["train_loss"], [2.0 / e for e in range(1, 6)])
    np.testing.assert_allclose(m["lr"], [0.1 * 0.5 ** e for e in range(1, 6)])
    log.log(6, train_loss=0.1)                                   # missing values -> NaN
    m = read_metrics(tmp_path / "metrics.csv")
    assert m["epoch"][-1] == 6 and math.isnan(m["val_loss"][-1])
    with pytest.raises(ValueError, match="unknown column"):
        log.log(7, top5=0.9)
    # resume from the checkpoint of epoch 3: rows 4..6 are dropped, then re-logged
    log2 = MetricsLog(tmp_path, resume=True, resume_epoch=3)
    log2.log(4, train_loss=0.3)
    m = read_metrics(tmp_path / "metrics.csv")
    assert m["epoch"].tolist() == [1, 2, 3, 4] and m["train_loss"][-1] == 0.3
    # a fresh (non-resume) log truncates; extra columns are appended after the fixed ones
    log3 = MetricsLog(tmp_path, extra=["top5"])
    log3.log(1, top5=0.5)
    m = read_metrics(tmp_path / "metrics.csv")
    assert list(m)[-1] == "top5" and m["top5"].tolist() == [0.5]


def test_plot_curves_png(tmp_path):
    log = MetricsLog(tmp_path)
    _fill(log, 8)
    png = plot_curves(tmp_path / "metrics.csv", tmp_path / "curves.png", title="lenet5")
    assert png.is_file() and png.stat().st_size > 10_000
    import matplotlib.image as mpimg
    img = mpimg.imread(png)
    assert img.shape[0] == 360 and img.shape[1] == 1200
    rgb = img[..., :3]
    assert rgb.std() > 0.05                                     # not blank
    assert (rgb.reshape(-1, 3).std(axis=1) > 0.1).mean() > 0.002   # coloured curve pixels
    # one epoch and all-NaN val columns still plot
    one = MetricsLog(tmp_path / "one")
    one.log(1, train_loss=1.0, lr=0.1)
    assert plot_curves(one.path, tmp_path / "one" / "c.png").stat().st_size > 5_000
    assert not list(tmp_path.glob(".*.tmp"))


def test_write_summary_strict_json(tmp_path):
    s = {"epochs": 3, "train_loss": np.float32(0.25), "val_accuracy": float("nan"),
         "test_accuracy": np.float64(0.9), "images_per_second": 1234.5, "seconds": 2.0,
         "per_class": np.array([0.5, 1.0]), "inf": float("inf")}
    p = write_summary(tmp_path / "out" / "summary.json", s)
    text = p.read_text()
    d = json.loads(text)
    assert "NaN" not in text and d["val_accuracy"] is None and d["inf"] is None
    assert d["train_loss"] == 0.25 and d["per_class"] == [0.5, 1.0] and d["epochs"] == 3
    assert not list(p.parent.glob(".*.tmp"))


def test_confusion_and_accuracy():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0, 2])
    cm = confusion_matrix(y, pred, 4)
    assert cm.dtype == np.int64 and cm.shape == (4, 4)
    assert cm[0].tolist() == [1, 1, 0, 0] and cm[2].tolist() == [1, 0, 2, 0]
    assert cm.sum() == 7 and np.trace(cm) == 5
    pca = per_class_accuracy(cm)
    np.testing.assert_allclose(pca[:3], [0.5, 1.0, 2 / 3])
    assert math.isnan(pca[3])
    assert accuracy(pred, y) == pytest.approx(5 / 7)
    logits = np.eye(4)[pred] + 0.1
    assert accuracy(logits, y) == pytest.approx(5 / 7)
    np.testing.assert_array_equal(confusion_matrix(y, logits, 4), cm)
    lg = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05]])
    assert top_k_accuracy(lg, np.array([2, 2]), k=2) == 0.5
    assert top_k_accuracy(lg, np.array([2, 2]), k=3) == 1.0
    with pytest.raises(ValueError):
        confusion_matrix(y, pred, 2)
