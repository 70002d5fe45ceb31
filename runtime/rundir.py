"""Guards of a run directory, so that a run never loses or mixes up data:

* ``prepare_out(out)``: the directory exists and is writable, ``checkpoint.npz`` is not a
  directory -- found before the data is loaded and the net compiled, not after an epoch;
* ``RunLock(out)``: one training per directory (an ``fcntl`` lock on ``out/.lock``, released
  by the OS if the process dies): a second run into the same ``--out`` is refused instead
  of deleting the first one's temporary checkpoint and replacing its files;
* ``Interrupt``: SIGINT and SIGTERM (``timeout``, ``docker stop``, SLURM) set a flag that
  the loop checks at step boundaries -- it saves a checkpoint and stops; a second signal
  interrupts at once;
* ``check_resume(meta, ...)``: ``--resume`` continues the run it finds only with the same
  batch size, and says which ``train:`` settings differ from the checkpoint's.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path


RUN_FILES = ("checkpoint.npz", "best.npz", "summary.json", "metrics.csv", "curves.png")


def existing_run(out: Path) -> list[Path]:
    """The checkpoints of a run already in ``out`` (its own, or its folds')."""
    if not out.is_dir():
        return []
    return [p for p in [out / "checkpoint.npz", *sorted(out.glob("fold*/checkpoint.npz"))] if p.is_file()]


def clear_run(out: Path) -> None:
    """Remove a previous run's files from ``out`` (``--overwrite``; call it holding the
    RunLock): a stale best.npz or snapshot would otherwise sit beside the new run's."""
    for d in [out, *sorted(p for p in out.glob("fold*") if p.is_dir())]:
        for p in [*(d / f for f in RUN_FILES), *d.glob("snapshot_*.npz")]:
            if p.is_file():
                p.unlink()


def prepare_out(out: Path) -> None:
    """Create ``out`` and check that a run can write there (ValueError otherwise)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".probe", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ValueError(f"cannot write to the run directory {out}: {e.strerror or e}") from None
    ck = out / "checkpoint.npz"
    if ck.exists() and not ck.is_file():
        raise ValueError(f"{ck} is not a file; remove it or choose another --out")


def remove_if_empty(out: Path) -> None:
    """Remove a run directory that holds nothing but its lock file."""
    try:
        if set(os.listdir(out)) <= {".lock"}:
            (out / ".lock").unlink(missing_ok=True)
            out.rmdir()
    except OSError:
        pass


class RunLock:
    """An exclusive lock on ``out/.lock`` for the life of a run (no-op where fcntl is missing)."""

    def __init__(self, out: Path):
        self.path, self.fd = out / ".lock", None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:                 # not POSIX: no lock
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            other = os.read(self.fd, 64).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            raise ValueError(f"{self.path.parent} is in use by another training (pid {other}); "
                             f"wait for it or choose another --out") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)               # closing releases the lock
            self.fd = None


class Interrupt:
    """SIGINT / SIGTERM -> ``flag`` (checked at step boundaries); a second one raises
    KeyboardInterrupt at once.  ``name`` is the first signal's name."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.flag, self.name, self.old = False, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(sig, frame):
                if self.flag:
                    raise KeyboardInterrupt
                self.flag, self.name = True, signal.Signals(sig).name
            for s in self.SIGNALS:
                self.old[s] = signal.signal(getattr(signal, s), handler)
        return self

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(getattr(signal, s), h)
        self.old = {}


def check_resume(meta: dict, batch_size: int, cfg: dict) -> None:
    """Refuse a resume with another batch size (the epoch's step count and its position
    would not match); note the ``train:`` settings that differ from the checkpoint's."""
    b = meta.get("batch_size")
    if b is not None and int(b) != int(batch_size):
        raise ValueError(f"the checkpoint was trained with batch size {b}; --resume continues with "
                         f"the same one (got {batch_size}): drop --batch-size or pass {b}")
    old = meta.get("train_cfg")
    if not isinstance(old, dict):
        return

    def norm(v):
        return json.loads(json.dumps(v, sort_keys=True, default=str))
    keys = sorted(k for k in set(old) | set(cfg) if k not in ("epochs", "batch_size")
                  and norm(old.get(k)) != norm(cfg.get(k)))
    if keys:
        print(f"note: resuming with train settings that differ from the checkpoint's "
              f"({', '.join(keys)}): the run continues with the new ones", file=sys.stderr)
