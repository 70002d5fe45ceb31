"""The training loop (runtime/train.py) with a numpy FakeNet implementing the CompiledNet
members it uses (docs/compiled-net.md), plus an end-to-end run once compiler.compile exists."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from compiler.optim import make_optimizer
from runtime.checkpoint import load_checkpoint
from runtime.train import TrainingDiverged, train

ROOT = Path(__file__).resolve().parent.parent
PI = namedtuple("ParamInfo", "layer decay lr_mult frozen shape")


class FakeNet:
    """Softmax regression on flattened images with input dropout (p=0.1, from net.rng), so
    the loop's RNG handling is exercised. Params/grads are views into flat arenas and the
    update is the real compiled optimizer (compiler/optim.py)."""

    def __init__(self, train_cfg, input_shape=(1, 8, 8), classes=10, batch_size=32, seed=0):
        d = int(np.prod(input_shape))
        self.batch_size, self.input_shape, self.output_shape = batch_size, input_shape, (classes,)
        self.param_info = {"fc.weight": PI("fc", True, 1.0, False, (classes, d)),
                           "fc.bias": PI("fc", False, 1.0, False, (classes,))}
        n = classes * d + classes
        self.param_arena = np.zeros(n, np.float32)
        self.grad_arena = np.zeros(n, np.float32)
        self.params = {"fc.weight": self.param_arena[:classes * d].reshape(classes, d),
                       "fc.bias": self.param_arena[classes * d:]}
        self.grads = {"fc.weight": self.grad_arena[:classes * d].reshape(classes, d),
                      "fc.bias": self.grad_arena[classes * d:]}
        self.params["fc.weight"][...] = np.random.default_rng(seed).normal(0, 0.01, (classes, d))
        self.buffers = {}
        self.optimizer = make_optimizer(train_cfg, self.param_info, np.float32)
        self.opt_state = {k: np.zeros(s, np.float32) for k, s in self.optimizer.state_specs().items()}
        self.lr, self.step_count = 0.01, 0
        self.rng = np.random.default_rng(123)
        self.loss_cfg = {"softmax_cross_entropy": {}}

    def _logits(self, x, train):
        x = x.reshape(x.shape[0], -1).astype(np.float32)
        if train:
            x = x * (self.rng.random(x.shape, dtype=np.float32) >= 0.1) / np.float32(0.9)
        return x, x @ self.params["fc.weight"].T + self.params["fc.bias"]

    def forward(self, x, train=False):
        return self._logits(x, train)[1]

    def loss_fn(self, out, y):
        z = out - out.max(axis=1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-lp[np.arange(len(y)), y].mean())

    def compute_grads(self, x, y):
        assert x.shape[0] == self.batch_size and x.dtype == np.float32
        xf, out = self._logits(x, True)
        self._train_out = out
        p = np.exp(out - out.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        loss = float(-np.log(p[np.arange(len(y)), y]).mean())
        p[np.arange(len(y)), y] -= 1
        p /= len(y)
        self.grads["fc.weight"][...] = p.T @ xf
        self.grads["fc.bias"][...] = p.sum(axis=0)
        return loss

    def train_output(self):
        return self._train_out

    def apply_update(self):
        self.optimizer.update(self.param_arena, self.grad_arena, self.opt_state, self.lr,
                              self.step_count + 1)
        self.step_count += 1

    def step(self, x, y):
        loss = self.compute_grads(x, y)
        self.apply_update()
        return loss

    def state_dict(self):
        d = {f"params/{k}": v.copy() for k, v in self.params.items()}
        d.update({f"opt/{k}": v.copy() for k, v in self.opt_state.items()})
        d["step_count"] = self.step_count
        return d

    def load_state_dict(self, d):
        for k, v in self.params.items():
            v[...] = d[f"params/{k}"]
        for k, v in self.opt_state.items():
            v[...] = d[f"opt/{k}"]
        self.step_count = int(d["step_count"])

    def load_params(self, d, strict=False):
        for k, v in self.params.items():
            v[...] = d[k]


def make_spec(**train):
    cfg = {"data": {"source": "digits", "val_split": 0.1, "test_split": 0.2, "seed": 0},
           "preprocess": [{"standardize": "per_channel"}], "augment": [],
           "optimizer": {"sgd": {"lr": 0.1, "momentum": 0.9, "nesterov": True}},
           "regularization": {"weight_decay": 1e-4}, "schedule": {"constant": {}},
           "warmup_epochs": 0, "batch_size": 32, "epochs": 2, "seed": 0,
           "early_stopping": None, "ema": None, "snapshot_ensemble": False}
    cfg.update(train)
    return SimpleNamespace(name="fake", train=cfg, file="<spec>")


def factory(spec, batch_size):
    return FakeNet(spec.train, batch_size=batch_size)


def arena_of(out):
    arrays, _ = load_checkpoint(Path(out) / "checkpoint.npz")
    return np.concatenate([arrays["params/fc.weight"].ravel(), arrays["params/fc.bias"]])


def test_trains_and_writes_run_files(tmp_path):
    s = train(make_spec(ema={"decay": 0.9}), tmp_path, epochs=3, net_factory=factory, progress=False)
    for f in ("metrics.csv", "curves.png", "checkpoint.npz", "summary.json"):
        assert (tmp_path / f).is_file(), f
    disk = json.loads((tmp_path / "summary.json").read_text())
    for k in ("epochs", "train_loss", "val_accuracy", "test_accuracy", "images_per_second",
              "seconds", "compile_seconds", "ema_test_accuracy"):
        assert k in disk, k
    assert s["epochs"] == 3 and s["test_accuracy"] > 0.85 and s["val_accuracy"] > 0.85
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(lines) == 4 and "val_accuracy" in lines[0] and "ema_val_accuracy" in lines[0]
    _, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["epoch"] == 3 and meta["batch"] == 0


@pytest.mark.parametrize("aug", [[], [{"random_crop": {"pad": 1}}, {"flip": "horizontal"}]])
def test_resume_equals_uninterrupted(tmp_path, aug):
    spec = make_spec(augment=aug, ema={"decay": 0.9})
    a = train(spec, tmp_path / "a", epochs=2, net_factory=factory, progress=False)
    train(spec, tmp_path / "b", epochs=1, net_factory=factory, progress=False)
    b = train(spec, tmp_path / "b", epochs=2, resume=True, net_factory=factory, progress=False)
    np.testing.assert_array_equal(arena_of(tmp_path / "a"), arena_of(tmp_path / "b"))
    assert a["test_accuracy"] == b["test_accuracy"] and a["train_loss"] == b["train_loss"]
    assert a["ema_test_accuracy"] == b["ema_test_accuracy"]
    # the resumed run's metrics.csv: same header (column order) and rows but the timings
    ma, mb = ((tmp_path / r / "metrics.csv").read_text().splitlines() for r in "ab")
    assert ma[0] == mb[0] and ma[0].startswith("epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy") and len(mb) == 3
    t = [ma[0].split(",").index(c) for c in ("images_per_second", "seconds")]
    strip = lambda line: [v for i, v in enumerate(line.split(",")) if i not in t]   # noqa: E731
    assert [strip(x) for x in ma[1:]] == [strip(x) for x in mb[1:]]


def test_ctrl_c_mid_epoch_then_resume_is_exact(tmp_path):
    spec = make_spec(schedule={"cosine": {}}, augment=[{"random_crop": {"pad": 1}}])
    train(spec, tmp_path / "a", epochs=3, net_factory=factory, progress=False)

    def boom(run):
        if run.epoch == 1 and run.batch == 7:
            raise KeyboardInterrupt
    s = train(spec, tmp_path / "b", epochs=3, net_factory=factory, progress=False,
              hooks={"after_step": boom})
    assert s["status"] == "interrupted" and s["epoch"] == 1 and s["step"] == 7
    _, meta = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert (meta["epoch"], meta["batch"]) == (1, 7)
    b = train(spec, tmp_path / "b", epochs=3, resume=True, net_factory=factory, progress=False)
    assert b["status"] == "completed"
    np.testing.assert_array_equal(arena_of(tmp_path / "a"), arena_of(tmp_path / "b"))


def test_nan_guard_names_epoch_and_step_and_keeps_checkpoint(tmp_path):
    def inject(run):
        if run.epoch == 1 and run.batch == 3:
            run.net.param_arena[5] = np.nan
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 3.*last good checkpoint"):
        train(make_spec(), tmp_path, epochs=3, net_factory=factory, progress=False,
              hooks={"after_step": inject})
    arrays, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["epoch"] == 1 and np.isfinite(arrays["params/fc.weight"]).all()


def test_nan_loss_from_huge_lr(tmp_path):
    spec = make_spec(optimizer={"sgd": {"lr": 1e30}}, preprocess=[])
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step \d+"):
        train(spec, tmp_path, epochs=1, net_factory=factory, progress=False)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    train(make_spec(), tmp_path, epochs=1, net_factory=factory, progress=False)
    before = (tmp_path / "checkpoint.npz").read_bytes()

    def crash(*a, **k):
        raise OSError("disk full (simulated)")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(ValueError, match="could not write the checkpoint .*simulated.*previous checkpoint is kept"):
        train(make_spec(), tmp_path, epochs=2, resume=True, net_factory=factory, progress=False)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert not list(tmp_path.glob(".checkpoint.npz.*.tmp"))


def test_early_stopping_restores_best(tmp_path):
    calls = []

    def sabotage(run):           # after epoch 2 the weights get worse every step
        if run.epoch >= 2:
            run.net.params["fc.weight"][...] += np.float32(0.2) * run.net.rng.normal(
                size=run.net.params["fc.weight"].shape).astype(np.float32)
        calls.append(run.epoch)
    spec = make_spec(early_stopping={"metric": "val_accuracy", "patience": 1, "restore_best": True})
    s = train(spec, tmp_path, epochs=20, net_factory=factory, progress=False,
              hooks={"after_step": sabotage})
    assert s["epochs"] < 20 and s["best_epoch"] <= 3
    assert s["val_accuracy"] == pytest.approx(s["best_val_accuracy"])
    assert (tmp_path / "best.npz").is_file()


def test_snapshot_ensemble_with_sgdr(tmp_path):
    spec = make_spec(schedule={"sgdr": {"t0": 1, "t_mult": 2}}, snapshot_ensemble=True)
    s = train(spec, tmp_path, epochs=3, net_factory=factory, progress=False)
    assert s["snapshots"] == ["snapshot_0.npz", "snapshot_1.npz"]
    assert 0.8 < s["ensemble_test_accuracy"] <= 1.0


def test_kfold(tmp_path):
    s = train(make_spec(), tmp_path, epochs=1, folds=3, net_factory=factory, progress=False)
    assert s["folds"] == 3 and len(s["fold_val_accuracy"]) == 3
    assert s["val_accuracy"] == pytest.approx(np.mean(s["fold_val_accuracy"]))
    assert all((tmp_path / f"fold{i}" / "checkpoint.npz").is_file() for i in range(3))


def test_lbfgs_full_batch(tmp_path):
    spec = make_spec(optimizer={"lbfgs": {"max_iter": 15}}, batch_size=64)
    # the fake net's dropout makes the objective noisy: turn it off for L-BFGS
    def det(spec, B):
        n = FakeNet(spec.train, batch_size=B)
        n._logits = lambda x, train: (x.reshape(x.shape[0], -1),
                                      x.reshape(x.shape[0], -1) @ n.params["fc.weight"].T + n.params["fc.bias"])
        return n
    s = train(spec, tmp_path, epochs=2, net_factory=det, progress=False)
    assert s["optimizer"] == "lbfgs" and s["test_accuracy"] > 0.85


def test_lbfgs_rosenbrock():
    from runtime.lbfgs import LBFGS

    def f(x):
        a, b = x
        return (1 - a) ** 2 + 100 * (b - a * a) ** 2, np.array([-2 * (1 - a) - 400 * a * (b - a * a),
                                                                 200 * (b - a * a)])
    x, fx, _ = LBFGS(history=10).minimize(f, np.array([-1.2, 1.0]), max_iter=100)
    np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-5)


def test_sigint_subprocess_saves_and_exits(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]
        from test_train_loop import make_spec, factory
        from runtime.train import train
        def slow(run):
            if run.epoch == 0 and run.batch == 2:
                print("READY", flush=True)
            time.sleep(0.02)
        s = train(make_spec(), {str(tmp_path)!r}, epochs=50, net_factory=factory,
                  progress=False, hooks={{"after_step": slow}})
        print("STATUS", s["status"], flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.readline().strip() == "READY"
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert "STATUS interrupted" in out and "Traceback" not in err and "--resume" in err
    _, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["epoch"] * 100 + meta["batch"] > 2


# ---------------------------------------------------------------------------- end to end
def _compiler_ready():
    try:
        import compiler
        return hasattr(compiler, "compile")
    except Exception:
        return False


@pytest.mark.skipif(not _compiler_ready(), reason="compiler.compile not available yet")
def test_end_to_end_real_compiler(tmp_path, capsys):
    import netspec
    spec_path = ROOT / "specs" / "digits.yaml"
    if not spec_path.is_file():
        pytest.skip("specs/digits.yaml not written yet")
    spec = netspec.load(spec_path)
    # 1 epoch + resume 1 == 2 epochs needs a schedule that does not depend on the epoch count
    spec.train = {**spec.train, "schedule": {"constant": {}}, "warmup_epochs": 0}
    t = time.perf_counter()
    s = train(spec, tmp_path, epochs=2, batch_size=64, progress=False)
    assert s["status"] == "completed" and s["test_accuracy"] > 0.5, s
    print(f"e2e digits 2 epochs: {time.perf_counter() - t:.1f}s, compile {s['compile_seconds']:.1f}s, "
          f"{s['images_per_second']:.0f} img/s, test acc {s['test_accuracy']:.3f}")
    train(spec, tmp_path / "b", epochs=1, batch_size=64, progress=False)
    train(spec, tmp_path / "b", epochs=2, batch_size=64, progress=False, resume=True)
    a, _ = load_checkpoint(tmp_path / "checkpoint.npz")
    b, _ = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert any(k.startswith("buffers/") for k in a)
    for k in a:
        if k.startswith(("params/", "buffers/", "opt/")):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    # the eval / predict commands on the run's checkpoint
    ck = str(tmp_path / "checkpoint.npz")
    capsys.readouterr()
    assert cli("eval", [str(spec_path), "--checkpoint", ck, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["accuracy"] == pytest.approx(s["test_accuracy"]) and len(r["confusion_matrix"]) == 10
    assert cli("eval", [str(spec_path), "--checkpoint", ck, "--ensemble", ck]) == 0
    assert "per-class accuracy" in capsys.readouterr().out
    from runtime.data import load_dataset
    ds = load_dataset({"source": "digits"})
    np.savez(tmp_path / "few.npz", x=ds.x[:3])
    assert cli("predict", [str(spec_path), "--checkpoint", ck, str(tmp_path / "few.npz"), "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert len(preds) == 3 and all(0 < p["predictions"][0]["probability"] <= 1 for p in preds)
    # --scale: the same images stored as 0..255 and scaled back give the same answer
    np.savez(tmp_path / "few255.npz", x=ds.x[:3] * (255 / 16))
    assert cli("predict", [str(spec_path), "--checkpoint", ck, str(tmp_path / "few255.npz"), "--json",
                           "--scale", str(16 / 255)]) == 0
    p255 = json.loads(capsys.readouterr().out)
    assert [p["predictions"][0]["index"] for p in p255] == [p["predictions"][0]["index"] for p in preds]


# ---------------------------------------------------------------------------- commands
def cli(name, argv):
    """Parse and run one of netspec/commands/{train,eval,predict}.py directly."""
    import argparse
    import importlib
    mod = importlib.import_module(f"netspec.commands.{name}")
    p = argparse.ArgumentParser()
    mod.add_parser(p.add_subparsers(dest="cmd"))
    return mod.run(p.parse_args([name, *argv]))


def test_commands_report_bad_files_without_traceback(tmp_path, capsys):
    spec = ROOT / "specs" / "digits.yaml"
    if not spec.is_file():
        pytest.skip("specs/digits.yaml not written yet")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    assert cli("eval", [str(spec), "--checkpoint", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.npz" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert cli("predict", [str(spec), "--checkpoint", str(tmp_path / "missing.npz"), str(bad)]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    assert cli("train", [str(spec), "--out", str(tmp_path / "r"), "--data", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "bad.npz" in err and "Traceback" not in err
    assert cli("train", [str(tmp_path / "nope.yaml")]) == 1


def test_data_of_the_wrong_shape_is_refused_before_compiling(tmp_path):
    """Samples (after preprocessing and augmentation) that do not fit the spec's input are
    refused with both shapes and the data source named, before any net is built."""
    spec = make_spec()
    spec.input_shape = (3, 32, 32)
    built = []
    with pytest.raises(ValueError) as e:
        train(spec, tmp_path, net_factory=lambda s, b: built.append(b) or factory(s, b), progress=False)
    msg = str(e.value)
    assert "(1, 8, 8)" in msg and "[3, 32, 32]" in msg and "digits" in msg and "--data" in msg
    assert not built
    spec.input_shape = (1, 8, 8)
    train(spec, tmp_path, net_factory=factory, progress=False, epochs=1)


@pytest.mark.skipif(not _compiler_ready(), reason="compiler.compile not available yet")
def test_lbfgs_respects_freeze_and_decay_and_refuses_what_it_ignores(tmp_path):
    """L-BFGS with weight_decay: a frozen layer does not move (the penalty covers the decayed,
    trainable tensors only); a per-step setting it cannot honour (l1, a schedule, ...) is
    refused, not ignored."""
    import netspec
    text = """netspec: 1
name: lb
input: [1, 8, 8]
layers:
  - conv: {name: c1, out: 4, kernel: 3, freeze: true}
  - relu: {}
  - flatten: {}
  - linear: {name: fc, out: 10}
train:
  optimizer: {lbfgs: {max_iter: 5}}
  regularization: {weight_decay: 0.1}
  batch_size: 256
"""
    import compiler
    init = compiler.compile(netspec.load(text), batch_size=256, seed=0)
    s = train(netspec.load(text), tmp_path / "a", epochs=1, progress=False)
    arrays, _ = load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    for k in ("c1.weight", "c1.bias"):
        np.testing.assert_array_equal(arrays[f"params/{k}"], init.params[k])
    assert s["status"] == "completed" and s["test_accuracy"] > 0.5
    for extra, what in (("  regularization: {weight_decay: 0.1, l1: 0.001}\n", "regularization.l1"),
                        ("  schedule: {step: {step_size: 1}}\n", "schedule"),
                        ("  augment: [{flip: horizontal}]\n", "train.augment"),
                        ("  regularization: {weight_decay: 0.1}\n", "the random layers drop")):
        bad = text.replace("  regularization: {weight_decay: 0.1}\n", extra)
        if what == "the random layers drop":
            bad = bad.replace("  - flatten: {}\n", "  - flatten: {}\n  - dropout: {name: drop, p: 0.5}\n")
        with pytest.raises(ValueError, match=f"supports weight_decay .* only; remove .*{what}"):
            train(netspec.load(bad), tmp_path / "b", epochs=1, progress=False)


def test_metrics_lr_is_the_epochs_starting_lr(tmp_path):
    """metrics.csv's lr column: the rate each epoch started with (with sgdr restarting every
    epoch, 0.1 each time; it once logged the last step's, near min_lr, for every epoch)."""
    train(make_spec(schedule={"sgdr": {"t0": 1, "t_mult": 1}}), tmp_path, epochs=3,
          net_factory=factory, progress=False)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    i = lines[0].split(",").index("lr")
    assert [float(r.split(",")[i]) for r in lines[1:]] == pytest.approx([0.1, 0.1, 0.1])


def test_nesterov_alias_from_the_api():
    """{"nesterov": {...}} gets the schema's momentum 0.9 through compiler.compile too."""
    from compiler.optim import resolve_config
    c = resolve_config({"optimizer": {"nesterov": {"lr": 0.1}}})
    assert c.rule == "nesterov" and c.hyper["momentum"] == 0.9


def test_early_stopping_patience_counts_like_keras(tmp_path, monkeypatch):
    """patience p: stop after p epochs in a row without a new best (Keras / Lightning)."""
    import runtime.train as T
    from runtime.data import load_dataset, split_dataset
    n_val = len(split_dataset(load_dataset({"source": "digits"}), 0.1, 0.2, 0).val[1])
    accs = iter([0.5, 0.6, 0.55, 0.58, 0.9, 0.9, 0.9])     # val accuracy per epoch
    real = T.evaluate

    def scripted(net, x, y):
        r = real(net, x, y)
        return dict(r, accuracy=next(accs)) if len(y) == n_val else r
    monkeypatch.setattr(T, "evaluate", scripted)
    spec = make_spec(early_stopping={"metric": "val_accuracy", "patience": 2, "restore_best": False})
    s = train(spec, tmp_path, epochs=7, net_factory=factory, progress=False)
    assert s["best_epoch"] == 2 and s["epochs"] == 4, s
