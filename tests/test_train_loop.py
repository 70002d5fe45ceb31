"""The training loop (runtime/train.py) with a numpy FakeNet implementing the CompiledNet
members it uses (docs/compiled-net.md), plus an end-to-end run once compiler.compile exists."""
from __future__ import annotations

import json
import math
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


def test_one_logit_bce_classifier_metrics_eval_and_predict(tmp_path, capsys):
    """A binary classifier with one logit and bce_with_logits: labels (N,) are its (N, 1)
    targets; validation/test loss is bce on those (never broadcast to (N, N)), accuracy is
    (z > 0) == label (an argmax over one column was always class 0), train accuracy is
    logged from the steps' own outputs, and eval/predict report the two classes."""
    import netspec
    rng = np.random.default_rng(0)
    x = rng.random((240, 1, 4, 4)).astype(np.float32)
    y = (x.mean((1, 2, 3)) > 0.5).astype(np.int64)
    np.savez(tmp_path / "bin.npz", x=x, y=y)
    text = (f"netspec: 1\nname: bin\ninput: [1, 4, 4]\nlayers:\n  - flatten: {{}}\n"
            f"  - linear: {{name: fc, out: 1}}\ntrain:\n  data: {{source: npz, path: {tmp_path / 'bin.npz'}}}\n"
            f"  loss: {{bce_with_logits: {{}}}}\n  optimizer: {{adam: {{lr: 0.05}}}}\n  epochs: 30\n"
            f"  batch_size: 32\n")
    (tmp_path / "bin.yaml").write_text(text)
    s = train(netspec.load(tmp_path / "bin.yaml"), tmp_path / "run", progress=False)
    import compiler
    from runtime.train_utils import class_probs, evaluate
    net = compiler.compile(netspec.load(tmp_path / "bin.yaml"), batch_size=32, train=False)
    arrays, _ = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    net.load_params({k[7:]: v for k, v in arrays.items() if k.startswith("params/")})
    z = np.clip(rng.standard_normal((5, 1)) * 3, -20, 20)
    t = np.array([0, 1, 1, 0, 1])
    want = float(np.mean(np.maximum(z[:, 0], 0) - z[:, 0] * t + np.log1p(np.exp(-np.abs(z[:, 0])))))
    assert net.loss_fn(z, t) == pytest.approx(want, rel=1e-12)
    p = class_probs(net, z)
    assert p.shape == (5, 2) and np.allclose(p[:, 1], 1 / (1 + np.exp(-z[:, 0]))) and np.allclose(p.sum(1), 1)
    ev = evaluate(net, x[:64], y[:64])        # raw pixels: preprocessing aside, the rule is what counts
    logits = net.forward(x[:64])[:, 0]
    assert ev["accuracy"] == pytest.approx(np.mean((logits > 0) == y[:64]))
    assert s["test_accuracy"] > 0.85 and s["train_accuracy"] > 0.85, s
    m = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert m[0].split(",")[:4] == ["epoch", "lr", "train_loss", "train_accuracy"]
    capsys.readouterr()
    ck = str(tmp_path / "run" / "checkpoint.npz")
    assert cli("eval", [str(tmp_path / "bin.yaml"), "--checkpoint", ck, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["accuracy"] == pytest.approx(s["test_accuracy"]) and len(r["confusion_matrix"]) == 2
    np.savez(tmp_path / "few.npz", x=x[:3])
    assert cli("predict", [str(tmp_path / "bin.yaml"), "--checkpoint", ck, str(tmp_path / "few.npz"), "--json",
                           "--top", "5"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert all(len(q["predictions"]) == 2 and q["predictions"][0]["probability"] >= 0.5 for q in preds)


def test_train_accuracy_is_logged_from_the_steps_outputs(tmp_path):
    """train_accuracy in metrics.csv is the running accuracy of the epoch's training steps
    (their train-mode outputs), so early stopping and plateau can watch it."""
    s = train(make_spec(schedule={"plateau": {"metric": "train_accuracy", "patience": 0, "factor": 0.5}},
                        early_stopping={"metric": "train_accuracy", "patience": 3}),
              tmp_path, epochs=2, net_factory=factory, progress=False)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    acc = [float(r.split(",")[head.index("train_accuracy")]) for r in rows[1:]]
    assert all(0.5 < a <= 1 for a in acc) and s["train_accuracy"] == pytest.approx(acc[-1], rel=1e-6)
    lrs = [float(r.split(",")[head.index("lr")]) for r in rows[1:]]
    assert lrs[0] == pytest.approx(0.1) and acc[1] > acc[0] and lrs[1] == pytest.approx(0.1)   # improved: no cut
    assert s["best_epoch"] == 2 and s["best_train_accuracy"] == pytest.approx(acc[1], rel=1e-6)


def test_ema_warmup_follows_tensorflows_num_updates():
    """EMA decay min(decay, (1+t)/(10+t)) at step t: the average forgets the initial weights
    (a constant 0.999 keeps 0.999**t of them); warmup: false is the plain recursion."""
    from runtime.train_utils import EMA
    w0 = np.zeros(3)
    e, plain = EMA(w0, 0.999), EMA(w0, 0.999, warmup=False)
    ref = np.zeros(3)
    for t in range(1, 201):
        w = np.full(3, 1.0)
        e.update(w, t)
        plain.update(w, t)
        d = min(0.999, (1 + t) / (10 + t))
        ref = d * ref + (1 - d) * w
    np.testing.assert_allclose(e.avg, ref, rtol=1e-12)
    assert e.avg[0] > 0.9 and plain.avg[0] == pytest.approx(1 - 0.999 ** 200)


AE = """netspec: 1
name: ae
input: [1, 8, 8]
layers:
  - conv: {name: enc, out: 8, kernel: 3, stride: 2, pad: 1}
  - relu: {}
  - conv_transpose: {name: dec, out: 1, kernel: 3, stride: 2, pad: 1, output_padding: 1}
train:
  target: input
  loss: {mse: {}}
  preprocess: [{rescale: {scale: 0.0625, shift: 0.0}}]
  optimizer: {adam: {lr: 0.01}}
  batch_size: 64
"""


def test_reconstruction_target_trains_an_autoencoder(tmp_path):
    """train.target: input: the loss compares the output with the (preprocessed) input; the
    losses are mse of reconstruction, there is no accuracy (null in summary.json, the CLI line
    shows losses), and settings that need labels or another output shape are refused."""
    import netspec
    s = train(netspec.load(AE), tmp_path, epochs=3, progress=False)
    disk = json.loads((tmp_path / "summary.json").read_text())
    assert disk["test_accuracy"] is None and disk["train_accuracy"] is None
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    vl = [float(r.split(",")[head.index("val_loss")]) for r in rows[1:]]
    assert vl[-1] < vl[0] and s["test_loss"] < 0.1          # pixels in [0, 1]: mse of a fit
    # the test loss is the mse against the test images themselves
    import compiler
    from runtime.train_utils import evaluate
    net = compiler.compile(netspec.load(AE), batch_size=64, train=False)
    a, _ = load_checkpoint(tmp_path / "checkpoint.npz")
    net.load_params({k[7:]: v for k, v in a.items() if k.startswith("params/")})
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    ev = evaluate(net, x, x)
    assert math.isnan(ev["accuracy"]) and ev["loss"] == pytest.approx(float(np.mean((net.forward(x) - x) ** 2)),
                                                                     rel=1e-5)
    for bad, msg in ((AE.replace("loss: {mse: {}}", "loss: {softmax_cross_entropy: {}}"), "needs the mse or"),
                     (AE.replace("output_padding: 1}", "output_padding: 0}"), "output shaped like the input"),
                     (AE + "  early_stopping: {patience: 2}\n", "no accuracy to watch")):
        with pytest.raises(ValueError, match=msg):
            train(netspec.load(bad), tmp_path / "bad", epochs=1, progress=False)


SEG = """netspec: 1
name: seg
input: [1, 8, 8]
layers:
  - conv: {name: c1, out: 8, kernel: 3, pad: 1}
  - relu: {}
  - conv: {name: head, out: 3, kernel: 1}
train:
  data: {source: npz, path: PATH}
  loss: {softmax_cross_entropy: {spatial: true}}
  optimizer: {adam: {lr: 0.03}}
  batch_size: 16
"""


def test_per_pixel_classification_trains_a_segmentation_net(tmp_path):
    """softmax_cross_entropy spatial: masks (N, H, W) in the npz, a random (unstratified)
    split, the loss over every pixel (PyTorch's K-dimensional cross-entropy), pixel accuracy
    in the metrics; augment (it would not move the masks) and a flat output are refused;
    eval-style class probabilities say why they do not apply."""
    import compiler
    import netspec
    rng = np.random.default_rng(0)
    x = rng.random((160, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0] > 1 / 3).astype(np.int64) + (x[:, 0] > 2 / 3)          # 3 classes by intensity
    np.savez(tmp_path / "seg.npz", x=x, y=y)
    text = SEG.replace("PATH", str(tmp_path / "seg.npz"))
    s = train(netspec.load(text), tmp_path / "run", epochs=15, progress=False)
    assert s["test_accuracy"] > 0.9 and s["train_accuracy"] > 0.85, s
    net = compiler.compile(netspec.load(text), batch_size=16, train=True, seed=0)
    z = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    t = rng.integers(0, 3, (16, 8, 8))
    zz = z.astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, 3)
    lse = np.log(np.exp(zz).sum(1))
    want = float(np.mean(lse - zz[np.arange(len(zz)), t.reshape(-1)]))
    assert net.loss_fn(z, t) == pytest.approx(want, rel=1e-9)
    loss, _ = net.loss_and_grads(z[:, :1], t)          # the compiled step's loss on a batch
    assert np.isfinite(loss)
    from runtime.train_utils import class_probs
    with pytest.raises(ValueError, match="classifies every"):
        class_probs(net, z)
    with pytest.raises(ValueError, match="does not move|not the per-pixel targets"):
        train(netspec.load(text + "  augment: [{flip: horizontal}]\n"), tmp_path / "a", epochs=1,
              progress=False)
    flat = text.replace("  - conv: {name: head, out: 3, kernel: 1}",
                        "  - flatten: {}\n  - linear: {name: head, out: 3}")
    with pytest.raises(compiler.CompileError, match="spatial: true scores every position"):
        compiler.compile(netspec.load(flat), batch_size=16, train=True)


def test_training_on_random_crops_evaluates_the_centre_crop(tmp_path, capsys):
    """augment random_crop {size}: the net's input is the crop; validation/test (and eval /
    predict on the checkpoint) see the centre window of the full images, so eval reproduces
    the run's test accuracy and predict takes full-size images."""
    import netspec
    text = ("netspec: 1\nname: crop\ninput: [1, 6, 6]\nlayers:\n  - conv: {name: c1, out: 8, kernel: 3, pad: 1}\n"
            "  - relu: {}\n  - global_avgpool: {}\n  - flatten: {}\n  - linear: {name: fc, out: 10}\n"
            "train:\n  augment: [{random_crop: {pad: 0, size: [6, 6]}}, {flip: horizontal}]\n"
            "  optimizer: {adam: {lr: 0.01}}\n")
    spec = tmp_path / "crop.yaml"
    spec.write_text(text)
    s = train(netspec.load(spec), tmp_path / "run", epochs=2, progress=False)
    ck = str(tmp_path / "run" / "checkpoint.npz")
    capsys.readouterr()
    assert cli("eval", [str(spec), "--checkpoint", ck, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(s["test_accuracy"])
    from runtime.data import load_dataset
    np.savez(tmp_path / "few.npz", x=load_dataset({"source": "digits"}).x[:2])        # 8x8 images
    assert cli("predict", [str(spec), "--checkpoint", ck, str(tmp_path / "few.npz")]) == 0


def test_targets_are_checked_against_the_loss_before_compiling(tmp_path, capsys):
    """Binary masks with bce_with_logits train (pixel accuracy); labels outside the net's
    classes, multi-class labels for bce, masks without spatial, a 1-class spatial output, a
    bce autoencoder on inputs outside [0, 1] and an accuracy-watching plateau on a
    reconstruction are refused with the fix; segmentation with snapshots completes; eval and
    predict refuse an autoencoder."""
    import netspec
    rng = np.random.default_rng(0)
    x = rng.random((96, 1, 6, 6)).astype(np.float32)
    mask = (x[:, 0] > 0.5).astype(np.int64)
    np.savez(tmp_path / "m.npz", x=x, y=mask)
    np.savez(tmp_path / "l.npz", x=x, y=np.arange(96) % 7)
    head = ("netspec: 1\nname: t\ninput: [1, 6, 6]\nlayers:\n  - conv: {name: c, out: 4, kernel: 3, pad: 1}\n"
            "  - relu: {}\n")

    def spec(last, loss, data, extra=""):
        return netspec.load(head + last + f"train:\n  data: {{source: npz, path: {tmp_path / data}}}\n"
                            f"  loss: {loss}\n  optimizer: {{adam: {{lr: 0.05}}}}\n  batch_size: 16\n" + extra)
    s = train(spec("  - conv: {name: o, out: 1, kernel: 1}\n", "{bce_with_logits: {}}", "m.npz"),
              tmp_path / "bin", epochs=6, progress=False)
    assert s["test_accuracy"] > 0.9 and s["train_accuracy"] > 0.8, s           # per pixel
    flat = "  - flatten: {}\n  - linear: {name: o, out: 5}\n"
    for sp, msg in (
            (spec(flat, "{softmax_cross_entropy: {}}", "l.npz"), "label 6, but the net's output .5,. scores 5 classes"),
            (spec(flat.replace("out: 5", "out: 1"), "{bce_with_logits: {}}", "l.npz"),
             "bce_with_logits needs 0/1 targets"),
            (spec(flat, "{mse: {}}", "l.npz"), r"mse compares every output value .* \(5,\) per image"),
            (spec("  - conv: {name: o, out: 2, kernel: 1}\n", "{softmax_cross_entropy: {}}", "m.npz"),
             "per-pixel classes need .*spatial: true"),
            (spec("  - conv: {name: o, out: 1, kernel: 1}\n", "{softmax_cross_entropy: {spatial: true}}", "m.npz"),
             ">= 2 class channels"),
            (spec("  - conv: {name: o, out: 1, kernel: 1}\n", "{bce_with_logits: {}}", "m.npz", "  target: input\n"),
             r"targets in \[0, 1\], but the preprocessed inputs span"),
            (spec("  - conv: {name: o, out: 1, kernel: 1}\n", "{mse: {}}", "m.npz",
                  "  target: input\n  schedule: {plateau: {metric: val_accuracy}}\n"), "no accuracy to watch")):
        with pytest.raises(ValueError, match=msg):
            train(sp, tmp_path / "bad", epochs=1, progress=False)
    seg = spec("  - conv: {name: o, out: 2, kernel: 1}\n", "{softmax_cross_entropy: {spatial: true}}", "m.npz",
               "  schedule: {sgdr: {t0: 1, t_mult: 1}}\n  snapshot_ensemble: true\n")
    s = train(seg, tmp_path / "seg", epochs=2, progress=False)
    assert s["status"] == "completed" and len(s["snapshots"]) == 2 and "ensemble_test_accuracy" not in s
    ae = tmp_path / "ae.yaml"
    ae.write_text(head + "  - conv: {name: o, out: 1, kernel: 1}\ntrain:\n  target: input\n  loss: {mse: {}}\n")
    for cmd in ("eval", "predict"):
        capsys.readouterr()
        argv = [str(ae), "--checkpoint", str(tmp_path / "seg" / "checkpoint.npz")] + (
            [str(tmp_path / "m.npz")] if cmd == "predict" else [])
        assert cli(cmd, argv) == 1
        assert "reconstruct its input" in capsys.readouterr().err
