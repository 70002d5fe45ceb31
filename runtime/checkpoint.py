"""Checkpoints that never unpickle: one ``.npz`` of plain arrays + JSON metadata + SHA-256.

File layout (a zip written by ``np.savez``, read with ``np.load(allow_pickle=False)``):

* the caller's arrays under their names, by convention ``params/<name>``, ``buffers/<name>``,
  ``opt/<slot>/<name>``, ``prep/<i>.mean`` ... (object dtypes are refused);
* ``__meta__``: uint8 (L,), the UTF-8 JSON of the metadata: the caller's keys (spec name,
  epoch, step, config, RNG states, ...) plus ``format``, ``version``, ``architecture`` (the
  list of [name, shape] of every ``params/*`` and ``buffers/*`` array, in saving order) and
  ``fingerprint`` (SHA-256 of that list sorted by name);
* ``__sha256__``: uint8 (32,), the digest of every array (name, dtype, shape, bytes; sorted by
  name) and of the metadata bytes — verified on load.

Writing is atomic: a temp file in the same directory is written, flushed and fsync'ed, then
``os.replace``d over the target and the directory fsync'ed, so a crash (even SIGKILL) at any
point leaves either the old or the new checkpoint, never a mix. A killed writer may leave a
``.<name>.*.tmp`` file behind; loaders ignore it and the next save removes stale ones.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "architecture_of",
           "fingerprint", "rng_state", "rng_from_state", "FORMAT", "VERSION"]

FORMAT, VERSION = "netspec-checkpoint", 1
_META, _SUM = "__meta__", "__sha256__"


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


_FILE_MODE = 0o666 & ~_umask()     # what open() would give: mkstemp's temp files are 0600


def temp_beside(path: Path) -> tuple[int, str]:
    """(fd, name) of a new temp file next to ``path`` for an atomic replace, with the mode a
    plain ``open`` would give (the user's umask), not mkstemp's private 0600."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _FILE_MODE)
    return fd, tmp
_ARCH_PREFIXES = ("params/", "buffers/")


class CheckpointError(Exception):
    """A checkpoint cannot be used: missing, truncated, corrupt, tampered, foreign or for
    another architecture. The message names the file."""


# ----------------------------------------------------------------------------- helpers

def architecture_of(arrays: Mapping[str, Any]) -> list[list]:
    """[[name, [dims...]], ...] for the ``params/*`` and ``buffers/*`` entries of ``arrays``
    (values: arrays or shapes), in the mapping's order."""
    return [[k, [int(d) for d in (v.shape if hasattr(v, "shape") else v)]]
            for k, v in arrays.items() if k.startswith(_ARCH_PREFIXES)]


def fingerprint(arch: Mapping[str, Any] | Iterable[Any]) -> str:
    """SHA-256 hex of an architecture: a list of (name, shape) pairs or a mapping name ->
    array/shape. Order-independent (sorted by name). A mapping is filtered like
    ``architecture_of`` when any key has the ``params/`` or ``buffers/`` prefix."""
    if isinstance(arch, Mapping):
        pairs = architecture_of(arch) if any(k.startswith(_ARCH_PREFIXES) for k in arch) else \
            [[k, [int(d) for d in (v.shape if hasattr(v, "shape") else v)]]
             for k, v in arch.items()]
    else:
        pairs = [[str(n), [int(d) for d in s]] for n, s in arch]
    blob = json.dumps(sorted(pairs), separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def rng_state(rng: np.random.Generator) -> dict:
    """JSON-able state of a Generator (``bit_generator.state``; big ints are fine in JSON)."""
    return rng.bit_generator.state


def rng_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    """A new Generator whose bit generator (named in ``state``) is set to ``state``."""
    name = state.get("bit_generator")
    allowed = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
    if name not in allowed:
        raise CheckpointError(f"unknown bit generator {name!r} in RNG state")
    bg = getattr(np.random, name)()
    bg.state = dict(state)
    return np.random.Generator(bg)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"checkpoint metadata: {type(o).__name__} is not JSON-serialisable")


def _digest(arrays: Mapping[str, np.ndarray], meta_bytes: bytes) -> bytes:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
        h.update(a.data if a.size else b"")
    h.update(b"\0meta\0")
    h.update(meta_bytes)
    return h.digest()


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return  # e.g. platforms without directory fds
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temps(path: Path) -> None:
    for p in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            p.unlink()
        except OSError:
            pass


# ----------------------------------------------------------------------------- save / load

def save_checkpoint(path: str | Path, arrays: Mapping[str, np.ndarray],
                    meta: Mapping[str, Any]) -> dict:
    """Atomically write ``arrays`` (name -> ndarray) and ``meta`` (JSON-able) to ``path``.

    Returns the full metadata written (with format, architecture, fingerprint). Names must not
    start with ``__``; object arrays and non-JSON metadata raise CheckpointError before the
    target is touched. Stale temp files of earlier killed writers are removed.
    """
    path = Path(path)
    arrs: dict[str, np.ndarray] = {}
    for k, v in arrays.items():
        if not isinstance(k, str) or not k or k.startswith("__"):
            raise CheckpointError(f"{path}: invalid array name {k!r}")
        a = np.asarray(v)
        if a.dtype.hasobject or a.dtype.kind == "V":
            raise CheckpointError(f"{path}: array {k!r} has unsupported dtype {a.dtype}")
        arrs[k] = a
    full = dict(meta)
    arch = architecture_of(arrs)
    full.update(format=FORMAT, version=VERSION, architecture=arch, fingerprint=fingerprint(arch))
    try:
        meta_bytes = json.dumps(full, sort_keys=True, default=_jsonable).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: metadata is not JSON-serialisable: {e}") from e
    payload = dict(arrs)
    payload[_META] = np.frombuffer(meta_bytes, np.uint8)
    payload[_SUM] = np.frombuffer(_digest(arrs, meta_bytes), np.uint8)

    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return full


ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")   # np.savez files (a zip; the second: empty)


def file_head(path, n: int = 6) -> bytes:
    """The first n bytes of a file (OSError as open raises it): a format check before
    np.load, which tries anything that is not a zip as a pickle and advises allow_pickle=."""
    with open(path, "rb") as f:
        return f.read(n)


def load_checkpoint(path: str | Path, expect_fingerprint: Any = None
                    ) -> tuple[dict[str, np.ndarray], dict]:
    """Read and verify a checkpoint -> (arrays, meta).

    ``expect_fingerprint``: None (no check), a fingerprint hex string, or the expected
    architecture (a mapping name -> array/shape such as the arrays you would save, or a list
    of (name, shape)); with an architecture the error names the first mismatching tensor.
    Raises CheckpointError for a missing, truncated, corrupt, tampered or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        head = file_head(path)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    if not head.startswith(ZIP_MAGIC):
        raise CheckpointError(f"{path}: not a netspec checkpoint (not an .npz file)")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: not a netspec checkpoint (a bare .npy array)")
        with z:
            data = {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint "
                              f"({type(e).__name__}: {e})") from e
    if _META not in data or _SUM not in data:
        raise CheckpointError(f"{path}: not a netspec checkpoint (no {_META}/{_SUM} entries)")
    meta_bytes = data.pop(_META).tobytes()
    stored = data.pop(_SUM).tobytes()
    if _digest(data, meta_bytes) != stored:
        raise CheckpointError(f"{path}: checksum mismatch: the file was modified or damaged")
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable metadata ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a netspec checkpoint (format "
                              f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta['version']} is newer "
                              f"than this netspec supports ({VERSION})")
    if expect_fingerprint is not None:
        _check_architecture(path, meta, expect_fingerprint)
    return data, meta


def _check_architecture(path: Path, meta: dict, expect: Any) -> None:
    if isinstance(expect, str):
        if expect != meta.get("fingerprint"):
            raise CheckpointError(f"{path}: architecture fingerprint {meta.get('fingerprint')} "
                                  f"does not match the expected {expect}")
        return
    if isinstance(expect, Mapping):
        want = architecture_of(expect) if any(k.startswith(_ARCH_PREFIXES) for k in expect) \
            else [[k, [int(d) for d in (v.shape if hasattr(v, "shape") else v)]]
                  for k, v in expect.items()]
    else:
        want = [[str(n), [int(d) for d in s]] for n, s in expect]
    if fingerprint(want) == meta.get("fingerprint"):
        return
    have = {n: s for n, s in meta.get("architecture", [])}
    want_d = {n: s for n, s in want}
    for n, s in want:
        if n not in have:
            raise CheckpointError(f"{path}: wrong architecture: tensor {n} {tuple(s)} is "
                                  f"missing from the checkpoint")
        if list(have[n]) != list(s):
            raise CheckpointError(f"{path}: wrong architecture: tensor {n} has shape "
                                  f"{tuple(have[n])} in the checkpoint but {tuple(s)} expected")
    extra = [n for n in have if n not in want_d]
    raise CheckpointError(f"{path}: wrong architecture: the checkpoint has unexpected tensor "
                          f"{extra[0] if extra else '?'} {tuple(have.get(extra[0], ())) if extra else ''}")
