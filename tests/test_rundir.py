"""Run-directory guards (runtime/rundir.py) and the resume/save checks around them: one
training per directory, an existing run is never replaced silently, --out problems are
found before any work, SIGTERM saves like Ctrl-C, --resume refuses another batch size or
another net, a failed checkpoint write keeps the previous one."""
from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from runtime.checkpoint import load_checkpoint
from runtime.rundir import Interrupt, RunLock, existing_run
from runtime.train import train
from test_train_loop import cli, factory, make_spec


def test_an_existing_run_needs_resume_or_overwrite(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text((Path(__file__).resolve().parent.parent / "specs" / "digits.yaml").read_text())
    out = tmp_path / "run"
    assert cli("train", [str(spec), "--out", str(out), "--epochs", "1", "--no-progress"]) == 0
    (out / "best.npz").write_bytes(b"stale")
    before = (out / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert cli("train", [str(spec), "--out", str(out), "--epochs", "1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (out / "checkpoint.npz").read_bytes() == before          # untouched
    assert cli("train", [str(spec), "--out", str(out), "--epochs", "1", "--no-progress", "--overwrite"]) == 0
    assert not (out / "best.npz").exists() and existing_run(out) == [out / "checkpoint.npz"]


def test_one_training_per_directory(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):
        with pytest.raises(ValueError, match=r"is in use by another training \(pid \d+\)"):
            train(make_spec(), out, epochs=1, net_factory=factory, progress=False)
    s = train(make_spec(), out, epochs=1, net_factory=factory, progress=False)     # released
    assert s["status"] == "completed"


def test_out_problems_are_found_before_any_work(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        train(make_spec(), f, epochs=1, net_factory=factory, progress=False)
    (tmp_path / "d" / "checkpoint.npz").mkdir(parents=True)
    with pytest.raises(ValueError, match="checkpoint.npz is not a file"):
        train(make_spec(), tmp_path / "d", epochs=1, net_factory=factory, progress=False)


def test_sigterm_sets_the_flag_like_sigint():
    with Interrupt() as intr:
        os.kill(os.getpid(), signal.SIGTERM)
        assert intr.flag and intr.name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)                   # a second one: at once
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_sigterm_mid_run_saves_and_resume_finishes(tmp_path):
    def hook(t):
        if t.epoch == 1 and t.batch == 3:
            os.kill(os.getpid(), signal.SIGTERM)
    s = train(make_spec(), tmp_path, epochs=2, net_factory=factory, progress=False, hooks={"after_step": hook})
    assert s["status"] == "interrupted"
    _, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert (meta["epoch"], meta["batch"]) == (1, 3)
    assert train(make_spec(), tmp_path, epochs=2, net_factory=factory, progress=False,
                 resume=True)["status"] == "completed"


def test_resume_refuses_another_batch_size_or_another_net(tmp_path, capsys):
    train(make_spec(), tmp_path, epochs=1, net_factory=factory, progress=False)
    with pytest.raises(ValueError, match="trained with batch size 32; --resume continues with the same"):
        train(make_spec(), tmp_path, epochs=2, batch_size=16, net_factory=factory, progress=False, resume=True)
    from test_train_loop import FakeNet

    def wider(spec, batch_size):
        return FakeNet(spec.train, batch_size=batch_size, classes=11)
    with pytest.raises(ValueError, match=r"checkpoint is for another net: fc.bias \(10,\) vs \(11,\)"):
        train(make_spec(), tmp_path, epochs=2, net_factory=wider, progress=False, resume=True)
    capsys.readouterr()
    train(make_spec(optimizer={"sgd": {"lr": 0.05}}), tmp_path, epochs=2, net_factory=factory,
          progress=False, resume=True)
    assert "differ from the checkpoint's (optimizer)" in capsys.readouterr().err


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    train(make_spec(), tmp_path, epochs=1, net_factory=factory, progress=False)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    rows = (tmp_path / "metrics.csv").read_text()
    import runtime.train as T

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(T, "save_checkpoint", full)
    with pytest.raises(ValueError, match="could not write the checkpoint .*No space left on device; "
                                         "the previous checkpoint is kept"):
        train(make_spec(), tmp_path, epochs=2, net_factory=factory, progress=False, resume=True)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert (tmp_path / "metrics.csv").read_text() == rows          # never ahead of the checkpoint


@pytest.mark.parametrize("text,want", [("10GB", 10 << 30), ("512MiB", 512 << 20), ("2g", 2 << 30),
                                       ("1000000", 1000000), ("64kb", 64 << 10), ("3b", 3)])
def test_memory_limit_units(monkeypatch, text, want):
    from compiler.memory import memory_limit
    monkeypatch.setenv("NETSPEC_MEMORY_LIMIT", text)
    assert memory_limit() == want


def test_spec_reads_are_bounded_for_devices():
    import netspec
    from netspec import SpecError
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    with pytest.raises(SpecError, match="spec file too large .not a regular file"):
        netspec.load(Path("/dev/zero"))


def test_command_line_data_paths_are_relative_to_the_cwd(tmp_path, monkeypatch):
    from runtime.train_utils import data_config
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 1, 2, 2)), y=np.zeros(4))
    assert data_config({"source": "digits"}, "d.npz")["path"] == str(tmp_path / "d.npz")


@pytest.mark.parametrize("line,msg", [("  seed: -1", "`train.seed` must be >= 0"),
                                      ("  epochs: 0", "`train.epochs` must be >= 1"),
                                      ("  optimizer: {sgd: {lr: .inf}}", "must be a finite number")])
def test_train_values_that_only_failed_at_run_time_are_spec_errors(line, msg):
    import netspec
    from netspec import SpecError
    text = f"netspec: 1\nname: t\ninput: [4]\nlayers:\n  - linear: {{out: 2}}\ntrain:\n{line}\n"
    with pytest.raises(SpecError, match=msg) as e:
        netspec.load(text)
    assert e.value.line == 7


def test_unwritable_kernel_cache_is_named_and_a_failed_run_leaves_no_directory(tmp_path, monkeypatch):
    """NETSPEC_CACHE_DIR pointing at a file: one message naming the cache and the variable;
    the run directory the failed run created is removed again."""
    from compiler.codegen import kernel_cache
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("NETSPEC_CACHE_DIR", str(tmp_path / "f"))
    with pytest.raises(OSError, match="cannot write generated code to the kernel cache .*NETSPEC_CACHE_DIR"):
        kernel_cache.write_module("x = 1\n", "probe")

    def boom(spec, batch_size):
        raise OSError("cannot write generated code to the kernel cache")
    with pytest.raises(OSError):
        train(make_spec(), tmp_path / "new", epochs=1, net_factory=boom, progress=False)
    assert not (tmp_path / "new").exists()


def test_resume_restores_the_step_count(tmp_path):
    """A compiled net's step_count (Adam's bias correction, the EMA warmup) survives
    --resume: 1 epoch + resume to 2 equals 2 epochs, bit for bit (it restarted at 0)."""
    import netspec
    text = ("netspec: 1\nname: r\ninput: [1, 8, 8]\nlayers:\n  - flatten: {}\n  - linear: {name: fc, out: 10}\n"
            "train:\n  optimizer: {adam: {lr: 0.01}}\n  ema: {decay: 0.99}\n  batch_size: 64\n")
    train(netspec.load(text), tmp_path / "a", epochs=2, progress=False)
    train(netspec.load(text), tmp_path / "b", epochs=1, progress=False)
    train(netspec.load(text), tmp_path / "b", epochs=2, progress=False, resume=True)
    a, ma = load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    b, mb = load_checkpoint(tmp_path / "b" / "checkpoint.npz")
    assert int(a["step_count"][0]) == int(b["step_count"][0]) == 2 * (1258 // 64)   # 1258 train images
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
