"""runtime.checkpoint: roundtrip, tamper, truncation, architecture, atomicity (incl. SIGKILL)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from runtime import checkpoint as ck
from runtime.checkpoint import (CheckpointError, architecture_of, fingerprint, load_checkpoint,
                                rng_from_state, rng_state, save_checkpoint)

ROOT = Path(__file__).resolve().parent.parent


def _arrays(seed=0, width=4):
    r = np.random.default_rng(seed)
    return {"params/conv1.weight": r.normal(size=(width, 1, 3, 3)).astype(np.float32),
            "params/fc.bias": r.normal(size=(10,)).astype(np.float32),
            "buffers/bn1.running_mean": np.zeros(width, np.float32),
            "opt/momentum/conv1.weight": r.normal(size=(width, 1, 3, 3)).astype(np.float32),
            "prep/0.mean": np.float32([[[0.5]]]),
            "step_count": np.int64(7)}


def test_roundtrip_with_rng_state(tmp_path):
    rng = np.random.default_rng(123)
    rng.random(5)
    meta = {"spec": "lenet5", "epoch": 3, "step": 42, "config": {"lr": 0.1, "nested": [1, 2]},
            "rng": rng_state(rng)}
    a = _arrays()
    p = tmp_path / "c" / "checkpoint.npz"
    written = save_checkpoint(p, a, meta)
    arrays, m = load_checkpoint(p, expect_fingerprint=written["fingerprint"])
    assert set(arrays) == set(a)
    for k in a:
        np.testing.assert_array_equal(arrays[k], a[k])
        assert arrays[k].dtype == np.asarray(a[k]).dtype
    assert m["spec"] == "lenet5" and m["epoch"] == 3 and m["config"]["nested"] == [1, 2]
    assert m["architecture"][0] == ["params/conv1.weight", [4, 1, 3, 3]]
    assert len(m["architecture"]) == 3
    r2 = rng_from_state(m["rng"])
    np.testing.assert_array_equal(r2.random(4), rng.random(4))   # exact RNG resume
    assert not list(p.parent.glob(".*.tmp"))


def test_fingerprint_forms(tmp_path):
    a = _arrays()
    p = tmp_path / "c.npz"
    save_checkpoint(p, a, {})
    fp = fingerprint(architecture_of(a))
    assert fp == fingerprint({k: v.shape for k, v in a.items()})     # prefixed mapping
    load_checkpoint(p, expect_fingerprint=a)                          # arrays mapping
    load_checkpoint(p, expect_fingerprint=[(k, v.shape) for k, v in a.items()
                                           if k.startswith(("params/", "buffers/"))])
    reordered = dict(reversed(list(a.items())))
    load_checkpoint(p, expect_fingerprint=reordered)                  # order-independent


def test_wrong_architecture(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, _arrays(width=4), {})
    with pytest.raises(CheckpointError,
                       match=r"params/conv1\.weight has shape \(4, 1, 3, 3\) in the checkpoint "
                             r"but \(8, 1, 3, 3\) expected"):
        load_checkpoint(p, expect_fingerprint=_arrays(width=8))
    other = _arrays()
    other["params/fc2.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(CheckpointError, match=r"fc2\.weight \(2, 2\) is missing"):
        load_checkpoint(p, expect_fingerprint=other)
    fewer = {k: v for k, v in _arrays().items() if k != "params/fc.bias"}
    with pytest.raises(CheckpointError, match=r"unexpected tensor params/fc\.bias"):
        load_checkpoint(p, expect_fingerprint=fewer)
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(p, expect_fingerprint="0" * 64)


def _rewrite_zip(src: Path, dst: Path, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, edit(info.filename, zin.read(info.filename)))


def test_checksum_tamper(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, _arrays(), {"epoch": 1})
    bad = tmp_path / "bad.npz"
    # flip one byte of a parameter's data (valid zip, valid npy, wrong content)
    _rewrite_zip(p, bad, lambda n, b: b[:-1] + bytes([b[-1] ^ 1])
                 if n == "params/fc.bias.npy" else b)
    with pytest.raises(CheckpointError, match="bad.npz: checksum mismatch"):
        load_checkpoint(bad)
    # change the metadata (epoch 1 -> 9)
    def meta_edit(n, b):
        return b.replace(b'"epoch": 1', b'"epoch": 9') if n == "__meta__.npy" else b
    _rewrite_zip(p, bad, meta_edit)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(bad)


def test_truncated_corrupt_foreign(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, _arrays(), {})
    raw = p.read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 5):
        t = tmp_path / f"t{cut}.npz"
        t.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match=f"t{cut}.npz: truncated or corrupt"):
            load_checkpoint(t)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"hello world, not a zip" * 10)
    with pytest.raises(CheckpointError, match="junk.npz"):
        load_checkpoint(junk)
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.zeros(3))
    with pytest.raises(CheckpointError, match="plain.npz: not a netspec checkpoint"):
        load_checkpoint(plain)
    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(CheckpointError, match="not a netspec checkpoint"):
        load_checkpoint(npy)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __meta__=np.zeros(1, np.uint8), __sha256__=np.zeros(32, np.uint8),
             o=np.array([{}], dtype=object))
    with pytest.raises(CheckpointError, match="pickled.npz"):
        load_checkpoint(pickled)


def test_bad_inputs_do_not_touch_target(tmp_path):
    p = tmp_path / "c.npz"
    save_checkpoint(p, _arrays(), {"epoch": 1})
    with pytest.raises(CheckpointError, match="unsupported dtype"):
        save_checkpoint(p, {"x": np.array([None])}, {})
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(p, _arrays(), {"f": object()})
    with pytest.raises(CheckpointError, match="invalid array name"):
        save_checkpoint(p, {"__meta__": np.zeros(1)}, {})
    assert load_checkpoint(p)[1]["epoch"] == 1


def test_failure_mid_write_keeps_previous(tmp_path, monkeypatch):
    p = tmp_path / "c.npz"
    save_checkpoint(p, _arrays(0), {"epoch": 1})

    def broken_savez(f, **kw):
        f.write(b"PK\x03\x04 partial data")
        raise OSError("disk full")
    monkeypatch.setattr(ck.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(p, _arrays(1), {"epoch": 2})
    monkeypatch.undo()
    arrays, meta = load_checkpoint(p)
    assert meta["epoch"] == 1
    np.testing.assert_array_equal(arrays["params/fc.bias"], _arrays(0)["params/fc.bias"])
    assert not list(tmp_path.glob(".*.tmp"))                    # temp file cleaned up

    def broken_replace(a, b):
        raise OSError("replace failed")
    monkeypatch.setattr(ck.os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_checkpoint(p, _arrays(1), {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(p)[1]["epoch"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


_WRITER = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
from runtime.checkpoint import save_checkpoint
big = np.random.default_rng(0).random(6_000_000).astype(np.float32)   # 24 MB
i = 0
while True:
    i += 1
    save_checkpoint(sys.argv[1], {"params/w": big + i}, {"epoch": i})
    print(i, flush=True)
"""


def test_sigkill_during_write_leaves_loadable_file(tmp_path):
    p = tmp_path / "big.npz"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    kills = mid_write = 0
    # at least 5 kills, and more (up to 30) until one lands inside a write: whether a kill
    # does depends on this machine's write speed (a fixed 5 once landed none: CI flake)
    delays = (0.05, 0.13, 0.23, 0.31, 0.41, 0.02, 0.09, 0.17, 0.27, 0.37)
    while kills < 5 or (mid_write == 0 and kills < 30):
        delay = delays[kills % len(delays)]
        proc = subprocess.Popen([sys.executable, str(script), str(p), str(ROOT)],
                                stdout=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline()            # at least one complete checkpoint
            assert first.strip(), "writer produced no checkpoint"
            time.sleep(delay)                         # now somewhere inside a later write
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=30)
        kills += 1
        assert proc.returncode == -signal.SIGKILL
        mid_write += bool(list(tmp_path.glob(".big.npz.*.tmp")))   # killed inside a write
        arrays, meta = load_checkpoint(p)             # old or new, never a mix
        assert arrays["params/w"].shape == (6_000_000,)
        assert arrays["params/w"][0] == np.float32(
            np.random.default_rng(0).random(1).astype(np.float32)[0] + meta["epoch"])
    assert mid_write >= 1                  # writes take most of the loop
    # the next save removes the killed writers' stale temp files
    save_checkpoint(p, {"params/w": np.zeros(2, np.float32)}, {"epoch": 0})
    assert not list(tmp_path.glob(".big.npz.*.tmp"))


def test_pipeline_exact_resume_through_checkpoint(tmp_path):
    """digits -> split -> preprocess -> batches -> augment, checkpointed mid-epoch. Protocol:
    one Generator for the epoch order (its state saved at the start of the epoch) and one for
    augmentation (its state saved at the checkpoint) -> bit-identical batches after resume."""
    from runtime.augment import Augmenter
    from runtime.data import batches, load_dataset, split_dataset
    from runtime.preprocess import Preprocessor

    s = split_dataset(load_dataset({"source": "digits"}), 0.1, 0.2, seed=0)
    pcfg = [{"standardize": "per_channel"}]
    acfg = [{"random_crop": {"pad": 1}}, {"flip": "horizontal"},
            {"color_jitter": {"brightness": 0.2}}]
    prep = Preprocessor(pcfg).fit(s.train[0])
    xtr = prep.apply(s.train[0])
    aug = Augmenter(acfg, xtr)
    order, arng = np.random.default_rng(1), np.random.default_rng(2)

    for _ in batches(xtr, s.train[1], 64, order):        # epoch 0 (order only)
        pass
    epoch_start = rng_state(order)
    full, saved = [], None
    for b, (xb, _) in enumerate(batches(xtr, s.train[1], 64, order)):
        if b == 5:                                       # checkpoint before batch 5
            save_checkpoint(tmp_path / "c.npz", {f"prep/{k}": v for k, v in prep.state().items()},
                            {"epoch": 1, "batch": 5, "order_rng": epoch_start,
                             "aug_rng": rng_state(arng)})
        full.append(aug(xb, arng))

    arrays, meta = load_checkpoint(tmp_path / "c.npz")
    prep2 = Preprocessor.from_state(pcfg, {k[5:]: v for k, v in arrays.items()})
    xtr2 = prep2.apply(s.train[0])
    np.testing.assert_array_equal(xtr2, xtr)
    order2, arng2 = rng_from_state(meta["order_rng"]), rng_from_state(meta["aug_rng"])
    resumed = [aug(xb, arng2) for xb, _ in batches(xtr2, s.train[1], 64, order2,
                                                   start_batch=meta["batch"])]
    assert len(resumed) == len(full) - 5
    for a, b in zip(resumed, full[5:]):
        np.testing.assert_array_equal(a, b)
    assert rng_state(order2) == rng_state(order)


def test_atomic_writes_get_the_umask_mode_not_0600(tmp_path):
    """Checkpoints, summaries and plots are written through a temp file and a rename; they
    get the mode a plain open() would give (mkstemp's temp files are private, 0600)."""
    from runtime.metrics import write_summary
    save_checkpoint(tmp_path / "c.npz", {"a": np.zeros(2)}, {})
    write_summary(tmp_path / "s.json", {"a": 1})
    with open(tmp_path / "plain", "w"):
        pass
    want = (tmp_path / "plain").stat().st_mode & 0o777
    for f in ("c.npz", "s.json"):
        assert (tmp_path / f).stat().st_mode & 0o777 == want, f
