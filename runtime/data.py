"""Data sources, deterministic splits and mini-batches (pure numpy; nothing is downloaded).

Entry points
------------
``load_dataset(cfg, base_dir=None) -> Dataset``
    ``cfg`` is the ``train.data`` mapping of a spec: ``{source, path, ...}``. ``source`` is one of
    ``digits`` (built in), ``mnist`` (IDX files), ``cifar10`` (python pickle batches, read with a
    restricted unpickler), ``npz`` (keys ``x``, ``y``) or ``folder`` (one sub-folder per class).
    Relative paths are resolved against ``base_dir`` (normally the spec file's directory).
``split_dataset(ds, val_split, test_split, seed, stratify=True) -> Splits``
``kfold(n, k, seed) -> list[(train_idx, val_idx)]``
``batches(x, y, batch_size, rng, shuffle=True, drop_last=True, start_batch=0)``

Pixel values are returned as float32 in the file's own range (digits 0..16, MNIST / CIFAR /
image folders 0..255): scaling belongs to ``preprocess`` (e.g. ``rescale: {scale: 1/255}``).
Every problem with a file raises ``DataError`` naming that file.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .batching import batches, kfold, num_batches, split_indices  # noqa: F401  (re-exported)

__all__ = ["DataError", "Dataset", "Splits", "load_dataset", "split_dataset", "split_indices",
           "kfold", "batches", "num_batches", "SOURCES"]

SOURCES = ("digits", "mnist", "cifar10", "npz", "folder")
_DIGITS_FILE = Path(__file__).resolve().parent / "data" / "digits.npz"


class DataError(Exception):
    """A data file is missing, malformed or unsafe; the message names the file."""


@dataclass
class Dataset:
    """Images and labels of one source.

    x: float32 (N, C, H, W); y: int64 (N,) with values in [0, len(class_names)).
    x_test / y_test: the source's own test set (MNIST t10k, CIFAR test_batch, npz
    ``x_test``/``y_test``) or None; when present ``split_dataset`` uses it instead of carving
    a test split out of ``x``.
    """
    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    source: str
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(int(d) for d in self.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class Splits:
    """train / val / test as (x, y) pairs; val and test may have 0 rows.

    ``indices`` holds the rows of ``Dataset.x`` each split came from (``test`` is None when the
    source's own test set was used).
    """
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    class_names: list[str]
    indices: dict[str, np.ndarray | None] = field(default_factory=dict)


# ----------------------------------------------------------------------------- entry point

def load_dataset(cfg: Mapping[str, Any] | None, base_dir: str | Path | None = None) -> Dataset:
    """Load the source named by ``cfg["source"]`` (default ``digits``). See the module doc."""
    cfg = dict(cfg or {})
    source = cfg.get("source", "digits")
    if source not in SOURCES:
        raise DataError(f"unknown data source {source!r}; expected one of {', '.join(SOURCES)}")
    if source == "digits":
        return load_digits()
    path = cfg.get("path")
    if path is None:
        raise DataError(f"data source {source!r} needs a 'path'")
    if source == "mnist":
        return load_mnist(_resolve(path, base_dir))
    if source == "cifar10":
        from .cifar import load_cifar10       # its own module (restricted unpickler); imports this one
        return load_cifar10(_resolve(path, base_dir))
    return {"npz": load_npz, "folder": load_folder}[source](_resolve(path, base_dir))


def spec_dir(spec) -> Path | None:
    """The folder of the spec's file, against which its relative paths resolve (None for a
    spec given as text)."""
    f = getattr(spec, "file", None)
    return Path(f).parent if f and not str(f).startswith("<") else None


def _resolve(path: Any, base_dir: str | Path | None) -> Any:
    """Resolve a path (or every value of a mapping of paths) against base_dir."""
    if isinstance(path, Mapping):
        return {k: None if v is None else _resolve(v, base_dir) for k, v in path.items()}
    p = Path(str(path)).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p


def _check_labels(y: np.ndarray, what: str, n_classes: int | None = None,
                  dense: bool = False) -> np.ndarray:
    """Validate integer labels >= 0 (and < n_classes) and return them as int64.  ``dense``:
    also per-position labels (N, H, W) -- segmentation masks, softmax_cross_entropy's
    ``spatial`` form."""
    y = np.asarray(y)
    if y.ndim != 1 and not (dense and y.ndim >= 1):
        raise DataError(f"{what}: labels must be 1-D, got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"{what}: labels must be integers")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{what}: labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"{what}: negative label {int(y.min())}")
    if n_classes is not None and y.size and y.max() >= n_classes:
        raise DataError(f"{what}: label {int(y.max())} >= number of classes {n_classes}")
    return y


# ----------------------------------------------------------------------------- digits

def load_digits() -> Dataset:
    """The bundled UCI 8x8 digits: x float32 (1797, 1, 8, 8) in 0..16, y int64 (1797,)."""
    try:
        with np.load(_DIGITS_FILE, allow_pickle=False) as z:
            x, y = z["x"], z["y"]
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{_DIGITS_FILE}: cannot read the bundled digits ({e})") from e
    return Dataset(x.astype(np.float32), _check_labels(y, str(_DIGITS_FILE)),
                   [str(i) for i in range(10)],
                   "UCI ML hand-written digits 8x8 (Alpaydin & Kaynak; CC BY 4.0), bundled")


# ----------------------------------------------------------------------------- MNIST (IDX)

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_maybe_gz(path: Path) -> bytes:
    """File bytes, gunzipped when the file starts with the gzip magic (whatever its name)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, ValueError) as e:
            raise DataError(f"{path}: corrupt gzip stream ({e})") from e
    return raw


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into an array of its stored dtype.

    Checks the magic number (two zero bytes, a known type code, the number of dims), that
    ``ndim`` matches when given, and that the payload length equals the product of the dims.
    """
    path = Path(path)
    raw = _read_maybe_gz(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    nd = raw[3]
    if ndim is not None and nd != ndim:
        raise DataError(f"{path}: expected an IDX file with {ndim} dimension(s), found {nd}")
    if len(raw) < 4 + 4 * nd:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", nd, 4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - 4 - 4 * nd
    if have != need:
        raise DataError(f"{path}: IDX payload is {have} bytes, dims {dims} need {need}"
                        + (" (truncated file?)" if have < need else ""))
    return np.frombuffer(raw, dtype, offset=4 + 4 * nd).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, prefix: str, kind: str) -> Path | None:
    """The file in ``directory`` named like ``train-images-idx3-ubyte[.gz]`` (also ``.idx3``)."""
    hits = sorted(p for p in directory.iterdir()
                  if p.is_file() and p.name.startswith(f"{prefix}-{kind}")
                  and ("idx1" in p.name or "idx3" in p.name))
    plain = [p for p in hits if not p.name.endswith(".gz")]
    return (plain or hits or [None])[0]


def load_mnist(path: Path | Mapping[str, Any]) -> Dataset:
    """MNIST-format IDX files (MNIST, Fashion-MNIST, ...).

    ``path``: a directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte`` and
    optionally ``t10k-*`` (each optionally ``.gz``), or a mapping with ``train_images``,
    ``train_labels`` and optionally ``test_images``, ``test_labels``. x float32 (N, 1, H, W).
    """
    if isinstance(path, Mapping):
        files = {k: (Path(v) if v is not None else None) for k, v in path.items()}
        unknown = set(files) - {"train_images", "train_labels", "test_images", "test_labels"}
        if unknown:
            raise DataError(f"mnist path mapping: unknown key(s) {sorted(unknown)}")
    else:
        d = Path(path)
        if not d.is_dir():
            raise DataError(f"{d}: mnist 'path' must be a directory of IDX files")
        files = {f"{s}_{k}": _find_idx(d, p, k) for s, p in (("train", "train"), ("test", "t10k"))
                 for k in ("images", "labels")}
    for key in ("train_images", "train_labels"):
        if files.get(key) is None:
            raise DataError(f"{path}: no {key.replace('_', ' ')} IDX file found")

    def pair(img: Path, lab: Path) -> tuple[np.ndarray, np.ndarray]:
        x = read_idx(img, 3)
        y = read_idx(lab, 1)
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{lab}: {y.shape[0]} labels but {img} has {x.shape[0]} images")
        return x.astype(np.float32)[:, None], _check_labels(y, str(lab))

    x, y = pair(files["train_images"], files["train_labels"])
    xt = yt = None
    if files.get("test_images") is not None and files.get("test_labels") is not None:
        xt, yt = pair(files["test_images"], files["test_labels"])
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(f"{files['test_images']}: image size {xt.shape[2:]} differs from "
                            f"the training images' {x.shape[2:]}")
    k = int(max(y.max(initial=-1), -1 if yt is None else yt.max(initial=-1))) + 1
    return Dataset(x, y, [str(i) for i in range(max(k, 10))], f"mnist IDX files at {path}", xt, yt)


# ----------------------------------------------------------------------------- npz

def _as_nchw(x: np.ndarray, what: str) -> np.ndarray:
    """Images (N, C, H, W) (grey (N, H, W) gains the channel axis), or feature vectors (N, F)
    for a spec with ``input: [F]`` (e.g. ``netspec features`` output)."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim not in (2, 4):
        raise DataError(f"{what}: images must be (N, H, W) or (N, C, H, W) (or feature vectors "
                        f"(N, F)), got {x.shape}")
    if x.dtype.kind not in "iufb":
        raise DataError(f"{what}: images must be numeric, got dtype {x.dtype}")
    return x.astype(np.float32)


def _features_layout(arrays: dict, path) -> dict:
    """A ``netspec features`` file (train/val/test_features + _labels) as x/y: train and val
    rows become x (the run carves its own validation split), test stays the test set -- so a
    linear classifier trains on the extracted features (``input: [F]``)."""
    parts = [s for s in ("train", "val") if f"{s}_features" in arrays and f"{s}_labels" in arrays]
    if not parts:
        raise DataError(f"{path}: a features file needs train_features and train_labels")
    out = {"x": np.concatenate([arrays[f"{s}_features"] for s in parts]),
           "y": np.concatenate([arrays[f"{s}_labels"] for s in parts])}
    if len(arrays.get("test_labels", ())):
        out["x_test"], out["y_test"] = arrays["test_features"], arrays["test_labels"]
    if "class_names" in arrays:
        out["class_names"] = arrays["class_names"]
    return out


def load_npz(path: Path) -> Dataset:
    """``.npz`` with ``x`` (N, C, H, W) or (N, H, W) -- or (N, F) feature vectors --, ``y``
    (N,) integer labels (or (N, H, W) per-pixel labels for segmentation: softmax_cross_entropy
    ``spatial``); optional ``x_test``/``y_test`` and ``class_names`` (a string array); or a
    ``netspec features`` file. Never unpickles."""
    path = Path(path)
    from .checkpoint import ZIP_MAGIC, file_head
    try:
        head = file_head(path)
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from e
    if not head.startswith(ZIP_MAGIC):
        raise DataError(f"{path}: not an .npz file (write one with numpy.savez(path, x=..., y=...))")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npz without pickled objects ({e})") from e
    if "x" not in arrays and "train_features" in arrays:
        arrays = _features_layout(arrays, path)
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r} (has {sorted(arrays)})")
    x = _as_nchw(arrays["x"], f"{path}[x]")
    y = _check_labels(arrays["y"], f"{path}[y]", dense=True)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{path}: x has {x.shape[0]} rows but y has {y.shape[0]}")
    xt = yt = None
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: x_test and y_test must come together")
    if "x_test" in arrays:
        xt = _as_nchw(arrays["x_test"], f"{path}[x_test]")
        yt = _check_labels(arrays["y_test"], f"{path}[y_test]", dense=True)
        if xt.shape[0] != yt.shape[0] or xt.shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: x_test {xt.shape} / y_test {yt.shape} do not match x {x.shape}")
    k = int(max(y.max(initial=-1), -1 if yt is None else yt.max(initial=-1))) + 1
    names = [str(i) for i in range(k)]
    if "class_names" in arrays:
        cn = arrays["class_names"]
        if cn.dtype.kind not in "US" or cn.ndim != 1 or len(cn) < k:
            raise DataError(f"{path}: class_names must be a 1-D string array of >= {k} names")
        names = [str(v) for v in cn.astype(str)]
    return Dataset(x, y, names, f"npz file {path}", xt, yt)


# ----------------------------------------------------------------------------- image folder

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _have_pil() -> bool:
    import importlib.util
    return importlib.util.find_spec("PIL") is not None


def read_image(path: Path) -> np.ndarray:
    """One image -> float32 (C, H, W) in 0..255; C = 1 (grey, also grey + alpha) or 3 (RGB;
    alpha dropped).  16-bit images are scaled by 1/257 (65535 -> 255); float images (Pillow
    mode F) are taken as they are.

    Uses Pillow when installed, else matplotlib.image.imread (PNG only without Pillow).
    """
    try:
        if _have_pil():
            from PIL import Image
            with Image.open(path) as im:
                mode = im.mode
                if mode in ("L", "RGB"):
                    a = np.asarray(im)
                elif mode.startswith("I;16") or mode == "I":     # 16-bit (or int) grey
                    a = np.asarray(im).astype(np.float64)
                    if mode != "I" or a.max() > 255:
                        a = a / 257.0
                elif mode == "F":
                    a = np.asarray(im, np.float32)
                elif mode in ("1", "LA", "La"):                  # grey: convert keeps 0..255
                    a = np.asarray(im.convert("L"))
                else:                                            # palette, RGBA, CMYK, ...
                    a = np.asarray(im.convert("RGB"))
        else:
            import matplotlib.image as mpimg
            a = mpimg.imread(path)
            if a.dtype.kind == "f":
                a = a * 255.0  # matplotlib returns PNGs as floats in 0..1
            elif a.dtype == np.uint16:
                a = a / 257.0
    except Exception as e:  # decoders raise many types; all mean "cannot decode this file"
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    a = np.asarray(a, np.float32)
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return np.ascontiguousarray(a[:, :, :3].transpose(2, 0, 1))
    if a.ndim == 3 and a.shape[2] in (1, 2):
        return np.ascontiguousarray(a[:, :, :1].transpose(2, 0, 1))
    raise DataError(f"{path}: unsupported image layout {a.shape}")


def load_folder(path: Path) -> Dataset:
    """``path/<class>/<image>``: class names are the sorted sub-folder names. All images must
    have the same (C, H, W) — nothing is resized; the first odd file is named in the error."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: image folder not found")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{path}: no class sub-folders")
    xs, ys, ref, ref_file = [], [], None, None
    for label, cname in enumerate(classes):
        files = sorted(p for p in (path / cname).iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"{path / cname}: class folder holds no images")
        for f in files:
            img = read_image(f)
            if ref is None:
                ref, ref_file = img.shape, f
            elif img.shape != ref:
                raise DataError(f"{f}: image shape (C, H, W) {img.shape} differs from {ref} of "
                                f"{ref_file}; images are not resized, make them equal")
            xs.append(img)
            ys.append(label)
    return Dataset(np.stack(xs), np.asarray(ys, np.int64), classes, f"image folder {path}")


# ----------------------------------------------------------------------------- splits, batches

def split_dataset(ds: Dataset, val_split: float = 0.1, test_split: float = 0.2, seed: int = 0,
                  stratify: bool = True) -> Splits:
    """Split ``ds`` into train / val / test. If the source has its own test set it is used as
    the test split and ``test_split`` is ignored; val is then carved from ``ds.x``."""
    own_test = ds.x_test is not None
    stratify = stratify and np.ndim(ds.y) == 1       # per-pixel masks: a plain random split
    tr, va, te = split_indices(ds.y, val_split, 0.0 if own_test else test_split, seed, stratify)
    test = (ds.x_test, ds.y_test) if own_test else (ds.x[te], ds.y[te])
    return Splits((ds.x[tr], ds.y[tr]), (ds.x[va], ds.y[va]), test,  # type: ignore[arg-type]
                  list(ds.class_names), {"train": tr, "val": va, "test": None if own_test else te})
