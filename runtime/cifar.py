"""CIFAR-10's python batches (``data_batch_1..5``, ``test_batch``, ``batches.meta``), read
with a restricted unpickler: only numpy's array reconstruction and plain containers may be
built, so a crafted file cannot run code (runtime/data.py ``load_dataset`` calls
``load_cifar10`` for ``source: cifar10``)."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .data import DataError, Dataset, _check_labels


def _safe_dtype(*args: Any) -> np.dtype:
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError("object dtypes are not allowed")
    return dt


def _np_attr(modules: tuple[str, ...], name: str) -> Any:
    import importlib
    for m in modules:
        try:
            return getattr(importlib.import_module(m), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy has no {name}")


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` limited to str -> bytes: Python 3 writes bytes this way in protocol
    <= 2 pickles (``_codecs.encode('...', 'latin1')``)."""
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "ascii"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for str -> bytes")
    return obj.encode(encoding, errors)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only build plain containers and numpy arrays.

    The CIFAR batches are dicts of bytes, lists of ints and one uint8 ndarray; rebuilding the
    ndarray needs exactly ``_reconstruct`` (or ``_frombuffer`` for protocol 5), ``ndarray`` and
    ``dtype`` (plus ``_codecs.encode`` for bytes in Python 3 protocol-2 pickles, limited to
    str -> bytes). Any other global (``os.system``, ``builtins.eval``, ...) is refused, so a
    malicious file cannot run code. Object dtypes are refused as well.
    """
    _CORE = ("numpy._core.multiarray", "numpy.core.multiarray")
    _NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")

    def find_class(self, module: str, name: str) -> Any:
        if module in self._CORE and name == "_reconstruct":
            return _np_attr(self._CORE, "_reconstruct")
        if module in self._NUMERIC and name == "_frombuffer":
            return _np_attr(self._NUMERIC, "_frombuffer")
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return _safe_dtype
        if module == "_codecs" and name == "encode":
            return _codecs_encode
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def safe_unpickle(path: str | Path) -> Any:
    """Unpickle ``path`` with RestrictedUnpickler (py2 str objects arrive as bytes)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: unsafe or invalid pickle: {e}") from e
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise DataError(f"{path}: corrupt pickle ({type(e).__name__}: {e})") from e


def _str_keys(obj: Any, path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict, got {type(obj).__name__}")
    return {(k.decode("latin-1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> x float32 (n, 3, 32, 32), y int64 (n,)."""
    d = _str_keys(safe_unpickle(path), path)
    if "data" not in d or "labels" not in d:
        raise DataError(f"{path}: not a CIFAR-10 batch (keys {sorted(d)}; need data, labels)")
    data, labels = d["data"], d["labels"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be an (n, 3072) array, got "
                        f"{getattr(data, 'shape', type(data).__name__)}")
    if not isinstance(labels, (list, np.ndarray)) or not all(
            isinstance(v, (int, np.integer)) for v in labels):
        raise DataError(f"{path}: 'labels' must be a list of ints")
    y = _check_labels(np.asarray(labels, dtype=np.int64), str(path), 10)
    if y.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {y.shape[0]} labels for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32).astype(np.float32), y


def load_cifar10(path: Path) -> Dataset:
    """CIFAR-10 python batches: a directory with ``data_batch_*`` (+ ``test_batch``,
    ``batches.meta``) or holding the archive's ``cifar-10-batches-py/`` folder, or a single
    batch file. x float32 (N, 3, 32, 32) in 0..255."""
    path = Path(path)
    names = [str(i) for i in range(10)]
    if path.is_file():
        x, y = _cifar_batch(path)
        return Dataset(x, y, names, f"cifar10 batch {path}")
    if not path.is_dir():
        raise DataError(f"{path}: no such CIFAR-10 file or directory")
    if not any(path.glob("data_batch_*")) and (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"          # the extracted archive's own folder
    train = sorted(path.glob("data_batch_*"), key=lambda p: (len(p.name), p.name))
    if not train:
        raise DataError(f"{path}: no data_batch_* files")
    parts = [_cifar_batch(p) for p in train]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    xt = yt = None
    if (path / "test_batch").is_file():
        xt, yt = _cifar_batch(path / "test_batch")
    meta = path / "batches.meta"
    if meta.is_file():
        m = _str_keys(safe_unpickle(meta), meta)
        ln = m.get("label_names")
        if isinstance(ln, list) and len(ln) == 10:
            names = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in ln]
    return Dataset(x, y, names, f"cifar10 batches at {path}", xt, yt)
