"""runtime/search.py and ``netspec search``: random search, coarse to fine, resumable.

A fake ``train_fn`` (a smooth score peaked at lr = 1e-2, weight_decay = 1e-4) keeps these
tests instant; one command test runs two real one-epoch trainings on the digits data.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import math

import numpy as np
import pytest

import netspec
from runtime.search import (SearchError, apply_overrides, narrow, parse_param, random_search,
                            read_results, sample)

SPEC = """netspec: 1
name: tiny
input: [1, 8, 8]
layers:
  - conv: {name: conv1, out: 4, kernel: 3, pad: 1}
  - relu: {}
  - maxpool: {kernel: 2}
  - flatten: {}
  - linear: {name: fc, out: 10}
train:
  data: {source: digits}
  optimizer: {sgd: {lr: 0.1, momentum: 0.9}}
  batch_size: 32
  epochs: 5
"""


class FakeTrain:
    def __init__(self, stop_after=None, diverge_above=None):
        self.calls, self.stop_after, self.diverge_above = [], stop_after, diverge_above

    def __call__(self, spec, out_dir, epochs):
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise KeyboardInterrupt
        (name, opt), = spec.train["optimizer"].items()
        lr, wd = opt["lr"], spec.train["regularization"]["weight_decay"]
        self.calls.append((lr, wd, epochs))
        if self.diverge_above and lr > self.diverge_above:
            from runtime.train import TrainingDiverged
            raise TrainingDiverged("loss is nan at epoch 1, step 3")
        score = 1.0 - 0.1 * (math.log10(lr) + 2) ** 2 - 0.02 * (math.log10(wd) + 4) ** 2
        return {"val_accuracy": score, "train_loss": 1.0 / epochs, "seconds": 0.1}


@pytest.fixture
def spec_path(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(SPEC)
    return p


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_search_writes_sorted_csv_and_best_spec(spec_path, tmp_path):
    fake = FakeTrain()
    out = tmp_path / "s"
    rows = random_search(spec_path, out, stages=[(8, 1), (4, 2)], train_fn=fake, seed=3)
    assert len(fake.calls) == 12 and [c[2] for c in fake.calls] == [1] * 8 + [2] * 4
    csv_rows = _rows(out / "results.csv")
    scores = [float(r["score"]) for r in csv_rows]
    assert scores == sorted(scores, reverse=True) and len(csv_rows) == 12
    assert list(csv_rows[0])[:6] == ["trial", "stage", "epochs", "score", "lr", "weight_decay"]
    # fine stage: inside the span of the coarse stage's top 3 (+10% of the log width)
    coarse = sorted((r for r in rows if r["stage"] == 0), key=lambda r: -r["score"])[:3]
    lo = min(r["lr"] for r in coarse) / 10 ** (0.1 * 3)
    hi = max(r["lr"] for r in coarse) * 10 ** (0.1 * 3)
    assert all(lo <= r["lr"] <= hi for r in rows if r["stage"] == 1)
    # learning rates were sampled on a log scale over [1e-4, 1e-1]
    assert all(1e-4 <= lr <= 1e-1 for lr, _, _ in fake.calls)
    best = netspec.load(out / "best.yaml")
    assert best.train["optimizer"]["sgd"]["lr"] == pytest.approx(float(csv_rows[0]["lr"]))
    assert best.train["optimizer"]["sgd"]["momentum"] == 0.9      # the rest is the original
    assert best.train["regularization"]["weight_decay"] == pytest.approx(float(csv_rows[0]["weight_decay"]))
    assert best.train["epochs"] == 5 and [l.name for l in best.layers][0] == "conv1"


def test_search_is_resumable(spec_path, tmp_path):
    full = tmp_path / "full"
    random_search(spec_path, full, stages=[(6, 1), (3, 2)], train_fn=FakeTrain(), seed=1)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        random_search(spec_path, part, stages=[(6, 1), (3, 2)], train_fn=FakeTrain(stop_after=4), seed=1)
    assert len(_rows(part / "results.csv")) == 4 and not (part / "best.yaml").exists()
    rest = FakeTrain()
    random_search(spec_path, part, stages=[(6, 1), (3, 2)], train_fn=rest, seed=1)
    assert len(rest.calls) == 5                         # only the trials not in the CSV
    assert _rows(part / "results.csv") == _rows(full / "results.csv")
    assert (part / "best.yaml").read_text() == (full / "best.yaml").read_text()
    again = FakeTrain()
    random_search(spec_path, part, stages=[(6, 1), (3, 2)], train_fn=again, seed=1)
    assert again.calls == []


def test_diverged_trials_score_nan_and_sort_last(spec_path, tmp_path):
    out = tmp_path / "d"
    rows = random_search(spec_path, out, stages=[(8, 1)], train_fn=FakeTrain(diverge_above=0.01), seed=0)
    bad = [r for r in rows if r["status"] == "diverged"]
    assert bad and all(math.isnan(r["score"]) for r in bad)
    assert all(r["status"] == "diverged" for r in rows[len(rows) - len(bad):])
    assert read_results(out / "results.csv")[bad[0]["trial"]]["status"] == "diverged"
    assert netspec.load(out / "best.yaml").train["optimizer"]["sgd"]["lr"] <= 0.01


def test_space_helpers():
    assert parse_param("lr=log:1e-4,1e-1") == ("lr", {"log": [1e-4, 1e-1]})
    assert parse_param("batch_size=choice:32,64") == ("batch_size", {"choice": [32, 64]})
    for bad in ("lr", "lr=log:1", "lr=log:-1,1", "lr=gauss:1,2"):
        with pytest.raises(SearchError):
            parse_param(bad)
    rng = np.random.default_rng(0)
    lrs = [sample({"lr": {"log": [1e-4, 1e-1]}}, rng)["lr"] for _ in range(400)]
    assert abs(np.mean(np.array(lrs) < 1e-2) - 2 / 3) < 0.08     # log-uniform: 2/3 below 1e-2
    s = narrow({"m": {"uniform": [0.0, 1.0]}, "b": {"choice": [16, 32, 64]}},
               [{"m": 0.5, "b": 32}, {"m": 0.6, "b": 64}])
    assert s["m"]["uniform"] == pytest.approx([0.4, 0.7]) and s["b"] == {"choice": [32, 64]}
    raw = {"train": {"optimizer": {"sgd": {"lr": 0.1, "weight_decay": 1e-3}}}}
    new = apply_overrides(raw, {"lr": 0.5, "weight_decay": 2e-4, "schedule.cosine.min_lr": 0.0})
    assert new["train"]["optimizer"]["sgd"] == {"lr": 0.5, "weight_decay": 2e-4}
    assert new["train"]["schedule"] == {"cosine": {"min_lr": 0.0}} and raw["train"]["optimizer"]["sgd"]["lr"] == 0.1


from clihelp import run_command as _cli  # noqa: E402


def test_search_command_real_training(spec_path, tmp_path, capsys):
    out = tmp_path / "cmd"
    assert _cli("search", [str(spec_path), "--stages", "2x1", "--out", str(out),
                           "--param", "lr=log:1e-2,1e-1"]) == 0
    rows = _rows(out / "results.csv")
    assert len(rows) == 2 and all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
    assert (out / "trials" / "s0t000" / "summary.json").is_file()
    assert "best s0t00" in capsys.readouterr().out
    assert _cli("search", [str(spec_path), "--out", str(out), "--param", "lr=log:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("netspec search: bad --param 'lr=log:1'") and "Traceback" not in err


def test_an_interrupted_trial_is_not_recorded_and_the_setup_is_fixed(spec_path, tmp_path):
    """A trial whose training came back "interrupted" (Ctrl-C / SIGTERM saved its checkpoint)
    stops the search (SearchInterrupted, a KeyboardInterrupt: exit 130) without a results
    row, so a rerun trains it again (resuming its checkpoint); a rerun with another seed,
    space or stages is refused instead of reusing trials sampled for the first."""
    from runtime.search import SearchError, SearchInterrupted
    out = tmp_path / "s"

    class Interrupted(FakeTrain):
        def __call__(self, spec, out_dir, epochs):
            if len(self.calls) == 2:
                self.calls.append(None)
                return {"status": "interrupted"}
            return super().__call__(spec, out_dir, epochs)
    with pytest.raises(SearchInterrupted, match="trial s0t002 interrupted"):
        random_search(spec_path, out, stages=[(4, 1)], train_fn=Interrupted(), seed=1)
    assert [r["trial"] for r in _rows(out / "results.csv")] == ["s0t000", "s0t001"]
    rest = FakeTrain()
    random_search(spec_path, out, stages=[(4, 1)], train_fn=rest, seed=1)
    assert len(rest.calls) == 2                      # s0t002 (again) and s0t003
    with pytest.raises(SearchError, match="started with another seed .seed: 1"):
        random_search(spec_path, out, stages=[(4, 1)], train_fn=FakeTrain(), seed=2)
    with pytest.raises(SearchError, match="another stages"):
        random_search(spec_path, out, stages=[(5, 1)], train_fn=FakeTrain(), seed=1)
