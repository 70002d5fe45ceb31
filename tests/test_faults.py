"""Fault tests of ``netspec train`` as a user runs it (a subprocess of the real CLI):

* SIGINT mid-run saves a checkpoint, exits 130 without a traceback, and ``--resume``
  continues from it (the epoch count goes on, it does not restart);
* SIGKILL at random moments (also inside checkpoint writes) always leaves a loadable,
  checksum-verified checkpoint, and ``--resume`` continues after it;
* a learning rate that makes the run diverge stops it with exit 1 and a message naming the
  epoch and step, leaving the last good checkpoint intact (finite, from the last epoch);
* a damaged checkpoint is refused on ``--resume`` with a message naming the file.

The unit-level versions (exact resume, hooks injecting NaN, SIGKILL of a bare writer) are in
tests/test_train_loop.py and tests/test_checkpoint.py.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runtime.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DIGITS = (ROOT / "specs" / "digits.yaml").read_text()


def fault_spec(tmp: Path, name="faults", schedule="{constant: {}}", lr="0.05") -> Path:
    """specs/digits.yaml with a schedule that does not depend on the epoch count (so that
    interrupted + resumed == uninterrupted) and no warm-up."""
    text = DIGITS.replace("schedule: {cosine: {min_lr: 0.0}}", f"schedule: {schedule}")
    text = text.replace("warmup_epochs: 1", "warmup_epochs: 0").replace("name: digits", f"name: {name}")
    text = text.replace("lr: 0.05,", f"lr: {lr},")
    assert f"schedule: {schedule}" in text and f"lr: {lr}," in text
    p = tmp / f"{name}.yaml"
    p.write_text(text)
    return p


def start(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "netspec", *map(str, argv)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(*argv, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netspec", *map(str, argv)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
                          capture_output=True, timeout=timeout)


def wait_for(path: Path, proc: subprocess.Popen, timeout=240) -> None:
    t = time.time()
    while not path.is_file():
        if proc.poll() is not None:
            raise AssertionError(f"train exited early ({proc.returncode}): {proc.stderr.read()}")
        if time.time() - t > timeout:
            proc.kill()
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigint_saves_exits_130_and_resume_continues(tmp_path):
    spec, out = fault_spec(tmp_path), tmp_path / "run"
    p = start("train", spec, "--out", out, "--epochs", "500", "--no-progress")
    try:
        wait_for(out / "checkpoint.npz", p)      # epoch 1 done: the loop is running
        time.sleep(0.3)                          # somewhere inside a later epoch
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr and "--resume" in stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "interrupted"
    arrays, meta = load_checkpoint(out / "checkpoint.npz")       # checksum verified
    done = meta["epoch"]                                          # whole epochs done
    assert done >= 1 and all(np.isfinite(v).all() for k, v in arrays.items()
                             if k.startswith("params/"))

    r = run("train", spec, "--out", out, "--epochs", done + 1, "--resume", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "starting from scratch" not in r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "completed" and s["epochs"] == done + 1
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + done + 1              # header + every epoch once: it continued
    _, meta2 = load_checkpoint(out / "checkpoint.npz")
    assert meta2["epoch"] == done + 1


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_loadable_checkpoint(tmp_path):
    """Kill -9 the training process at random moments (epochs are ~0.1-1 s, each ending
    with a checkpoint write); after every kill the checkpoint verifies and --resume goes on
    from it, never backwards."""
    spec, out = fault_spec(tmp_path), tmp_path / "run"
    rnd = random.Random(7)
    last_epoch = 0
    for i in range(3):
        argv = ["train", spec, "--out", out, "--epochs", "500", "--no-progress"]
        p = start(*argv, *(["--resume"] if i else []))
        try:
            if i == 0:
                wait_for(out / "checkpoint.npz", p)
            else:   # wait until this process has written a checkpoint of its own
                t = time.time()
                while load_checkpoint(out / "checkpoint.npz")[1]["epoch"] <= last_epoch:
                    assert p.poll() is None, p.stderr.read()
                    assert time.time() - t < 240
                    time.sleep(0.05)
            time.sleep(rnd.uniform(0.0, 1.0))
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == -signal.SIGKILL
        arrays, meta = load_checkpoint(out / "checkpoint.npz")   # old or new, never torn
        assert meta["epoch"] > last_epoch
        assert all(np.isfinite(v).all() for k, v in arrays.items() if k.startswith("params/"))
        last_epoch = meta["epoch"]
    r = run("train", spec, "--out", out, "--epochs", last_epoch + 1, "--resume", "--no-progress")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert json.loads((out / "summary.json").read_text())["epochs"] == last_epoch + 1
    assert not list(out.glob(".checkpoint.npz.*.tmp"))     # stale temp files cleaned up


@pytest.mark.slow
def test_divergence_stops_cleanly_and_keeps_last_good_checkpoint(tmp_path):
    """Epoch 1 trains normally (lr 0.05); the multistep schedule then multiplies lr by
    1e12: the run must stop in epoch 2 with exit 1, naming the epoch and step, and leave
    epoch 1's checkpoint untouched."""
    spec = fault_spec(tmp_path, "diverge", schedule="{multistep: {milestones: [1], gamma: 1.0e12}}")
    out = tmp_path / "run"
    r = run("train", spec, "--out", out, "--epochs", "5", "--no-progress")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert "diverged" in err and "epoch 2, step" in err, err
    assert "last good checkpoint" in err and str(out / "checkpoint.npz") in err
    arrays, meta = load_checkpoint(out / "checkpoint.npz")
    assert meta["epoch"] == 1
    assert all(np.isfinite(v).all() for k, v in arrays.items()
               if k.startswith(("params/", "buffers/", "opt/")))


@pytest.mark.slow
def test_divergence_at_first_steps_says_no_checkpoint(tmp_path):
    spec = fault_spec(tmp_path, "blowup", lr="1.0e+30")
    r = run("train", spec, "--out", tmp_path / "run", "--epochs", "2", "--no-progress")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "diverged" in r.stderr and "epoch 1, step" in r.stderr
    assert "no checkpoint was written yet" in r.stderr
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign"])
def test_resume_from_a_damaged_checkpoint_is_refused(tmp_path, damage):
    spec, out = fault_spec(tmp_path), tmp_path / "run"
    r = run("train", spec, "--out", out, "--epochs", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    ck = out / "checkpoint.npz"
    raw = bytearray(ck.read_bytes())
    if damage == "truncate":
        ck.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "flip":
        raw[len(raw) // 3] ^= 0x40
        ck.write_bytes(bytes(raw))
    else:
        np.savez(ck, x=np.zeros(3))
    before = ck.read_bytes()
    r = run("train", spec, "--out", out, "--epochs", "2", "--resume", "--no-progress")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "checkpoint.npz" in r.stderr
    assert any(w in r.stderr for w in ("truncated or corrupt", "checksum mismatch",
                                       "not a netspec checkpoint")), r.stderr
    assert ck.read_bytes() == before        # the evidence is not overwritten
