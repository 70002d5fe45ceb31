"""runtime.data: every source format from tiny files written here, splits, kfold, batches."""
from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from runtime.data import (DataError, batches, kfold, load_dataset, num_batches, split_dataset,
                          split_indices)


# ----------------------------------------------------------------------------- digits

def test_digits_builtin():
    ds = load_dataset({"source": "digits"})
    assert ds.x.shape == (1797, 1, 8, 8) and ds.x.dtype == np.float32
    assert ds.y.shape == (1797,) and ds.y.dtype == np.int64
    assert ds.x.min() == 0 and ds.x.max() == 16
    assert np.bincount(ds.y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert ds.class_names == [str(i) for i in range(10)]
    assert "CC BY 4.0" in ds.source
    assert load_dataset(None).x.shape == ds.x.shape  # digits is the default


def test_unknown_source_and_missing_path():
    with pytest.raises(DataError, match="unknown data source"):
        load_dataset({"source": "imagenet"})
    with pytest.raises(DataError, match="needs a 'path'"):
        load_dataset({"source": "npz"})


# ----------------------------------------------------------------------------- MNIST IDX

def _idx(arr: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + \
        arr.astype(">u1" if code == 0x08 else ">i4").tobytes()


def _write_mnist(d, n_train=12, n_test=5, gz=False, h=6, w=5):
    rng = np.random.default_rng(1)
    d.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        data[prefix] = (x, y)
        for kind, arr, dims in (("images", x, 3), ("labels", y, 1)):
            blob = _idx(arr)
            name = f"{prefix}-{kind}-idx{dims}-ubyte" + (".gz" if gz else "")
            (d / name).write_bytes(gzip.compress(blob) if gz else blob)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_dir(tmp_path, gz):
    data = _write_mnist(tmp_path / "m", gz=gz)
    ds = load_dataset({"source": "mnist", "path": "m"}, base_dir=tmp_path)
    assert ds.x.shape == (12, 1, 6, 5) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x[:, 0], data["train"][0])
    np.testing.assert_array_equal(ds.y, data["train"][1])
    np.testing.assert_array_equal(ds.x_test[:, 0], data["t10k"][0])
    np.testing.assert_array_equal(ds.y_test, data["t10k"][1])


def test_mnist_explicit_files_without_test(tmp_path):
    _write_mnist(tmp_path)
    ds = load_dataset({"source": "mnist", "path": {
        "train_images": str(tmp_path / "train-images-idx3-ubyte"),
        "train_labels": str(tmp_path / "train-labels-idx1-ubyte")}})
    assert len(ds) == 12 and ds.x_test is None


def test_mnist_bad_files(tmp_path):
    d = tmp_path / "m"
    _write_mnist(d)
    img = d / "train-images-idx3-ubyte"
    good = img.read_bytes()
    img.write_bytes(b"\x00\x00\x08\x03" + good[4:-7])          # truncated payload
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        load_dataset({"source": "mnist", "path": str(d)})
    img.write_bytes(b"\x08\x03\x00\x00" + good[4:])              # bad magic
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*magic"):
        load_dataset({"source": "mnist", "path": str(d)})
    img.write_bytes(_idx(np.zeros((12, 30), np.uint8)))          # wrong number of dims
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*3 dimension"):
        load_dataset({"source": "mnist", "path": str(d)})
    img.write_bytes(good)
    (d / "train-labels-idx1-ubyte").write_bytes(_idx(np.zeros(11, np.uint8)))  # length
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*11 labels"):
        load_dataset({"source": "mnist", "path": str(d)})
    (d / "train-labels-idx1-ubyte").write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*gzip"):
        load_dataset({"source": "mnist", "path": str(d)})
    with pytest.raises(DataError, match="directory"):
        load_dataset({"source": "mnist", "path": str(tmp_path / "nope")})


# ----------------------------------------------------------------------------- CIFAR-10

def _cifar_batch(n, seed, protocol=2):
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"training batch", b"labels": rng.integers(0, 10, n).tolist(),
         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         b"filenames": [b"f%d.png" % i for i in range(n)]}
    return d, pickle.dumps(d, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_dir(tmp_path, protocol):
    b1, blob1 = _cifar_batch(4, 1, protocol)
    b2, blob2 = _cifar_batch(3, 2, protocol)
    bt, blobt = _cifar_batch(2, 3, protocol)
    (tmp_path / "data_batch_1").write_bytes(blob1)
    (tmp_path / "data_batch_2").write_bytes(blob2)
    (tmp_path / "test_batch").write_bytes(blobt)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    ds = load_dataset({"source": "cifar10", "path": str(tmp_path)})
    assert ds.x.shape == (7, 3, 32, 32) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x[:4].reshape(4, -1), b1[b"data"])
    np.testing.assert_array_equal(ds.y, b1[b"labels"] + b2[b"labels"])
    assert ds.x_test.shape == (2, 3, 32, 32) and ds.class_names[9] == "truck"
    # channel-major layout: the first 1024 values are the red plane
    np.testing.assert_array_equal(ds.x[0, 0].ravel(), b1[b"data"][0, :1024])


def test_cifar10_archive_folder(tmp_path):
    """A directory holding the extracted archive's ``cifar-10-batches-py/`` (what --data
    detects as CIFAR-10) loads from that folder."""
    b1, blob1 = _cifar_batch(4, 1)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(blob1)
    ds = load_dataset({"source": "cifar10", "path": str(tmp_path)})
    np.testing.assert_array_equal(ds.y, b1[b"labels"])


def _s(b: bytes) -> bytes:
    return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b


def _py2_cifar_pickle(data: np.ndarray, labels) -> bytes:
    """A batch exactly as Python 2 + old numpy wrote the real CIFAR files (protocol 2, str
    payloads as BINSTRING, numpy.core.multiarray._reconstruct), built opcode by opcode."""
    n, m = data.shape
    arr = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _s(b"b")
           + b"\x87R(K\x01J" + struct.pack("<i", n) + b"J" + struct.pack("<i", m) + b"\x86"
           + b"cnumpy\ndtype\n" + _s(b"u1") + b"K\x00K\x01\x87R(K\x03" + _s(b"|")
           + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + _s(data.tobytes()) + b"tb")
    lab = b"](" + b"".join(b"K" + bytes([int(v)]) for v in labels) + b"e"
    return (b"\x80\x02}(" + _s(b"data") + arr + _s(b"labels") + lab + _s(b"batch_label")
            + _s(b"training batch 1 of 5") + b"u.")


def test_cifar10_python2_format(tmp_path):
    d = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    (tmp_path / "data_batch_1").write_bytes(_py2_cifar_pickle(d, [4, 0, 9]))
    ds = load_dataset({"source": "cifar10", "path": str(tmp_path)})
    np.testing.assert_array_equal(ds.x.reshape(3, -1), d)
    assert ds.y.tolist() == [4, 0, 9] and ds.x_test is None


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_refuses_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [1]}, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1.*refusing to load global (posix|os)\.system"):
        load_dataset({"source": "cifar10", "path": str(p)})
    with pytest.raises(DataError, match="refusing"):
        load_dataset({"source": "cifar10", "path": str(tmp_path)})
    assert not marker.exists()
    # sanity: the file really is a working exploit for a plain pickle.load
    pickle.loads(p.read_bytes())
    assert marker.exists()


def test_cifar10_refuses_builtins_and_object_arrays(tmp_path):
    p = tmp_path / "b"
    p.write_bytes(pickle.dumps({b"data": eval, b"labels": []}, protocol=2))
    with pytest.raises(DataError, match=r"(builtins|__builtin__)\.eval"):
        load_dataset({"source": "cifar10", "path": str(p)})
    p.write_bytes(pickle.dumps({b"data": np.array([1, "a"], dtype=object), b"labels": [0, 1]}))
    with pytest.raises(DataError, match="b: unsafe.*object dtypes"):
        load_dataset({"source": "cifar10", "path": str(p)})


def test_cifar10_bad_structure(tmp_path):
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match="data_batch_1.*3072"):
        load_dataset({"source": "cifar10", "path": str(tmp_path)})
    p.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}))
    with pytest.raises(DataError, match="1 labels for 2 images"):
        load_dataset({"source": "cifar10", "path": str(tmp_path)})
    p.write_bytes(pickle.dumps([1, 2, 3])[:-3])
    with pytest.raises(DataError, match="data_batch_1"):
        load_dataset({"source": "cifar10", "path": str(tmp_path)})


# ----------------------------------------------------------------------------- npz

def test_npz_good_and_bad(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((10, 5, 6)).astype(np.float64)
    y = np.arange(10) % 3
    np.savez(tmp_path / "good.npz", x=x, y=y, class_names=np.array(["a", "b", "c"]),
             x_test=x[:2], y_test=y[:2])
    ds = load_dataset({"source": "npz", "path": "good.npz"}, base_dir=tmp_path)
    assert ds.x.shape == (10, 1, 5, 6) and ds.x.dtype == np.float32
    assert ds.class_names == ["a", "b", "c"] and ds.x_test.shape == (2, 1, 5, 6)

    np.savez(tmp_path / "len.npz", x=x, y=y[:9])
    with pytest.raises(DataError, match="len.npz.*10 rows but y has 9"):
        load_dataset({"source": "npz", "path": str(tmp_path / "len.npz")})
    np.savez(tmp_path / "nokey.npz", images=x, y=y)
    with pytest.raises(DataError, match="nokey.npz.*missing array 'x'"):
        load_dataset({"source": "npz", "path": str(tmp_path / "nokey.npz")})
    np.savez(tmp_path / "obj.npz", x=np.array([{}] * 10, dtype=object), y=y)
    with pytest.raises(DataError, match="obj.npz"):
        load_dataset({"source": "npz", "path": str(tmp_path / "obj.npz")})
    np.savez(tmp_path / "lab.npz", x=x, y=y + 0.5)
    with pytest.raises(DataError, match="lab.npz.*integers"):
        load_dataset({"source": "npz", "path": str(tmp_path / "lab.npz")})
    with pytest.raises(DataError, match="missing.npz.*no such file"):
        load_dataset({"source": "npz", "path": str(tmp_path / "missing.npz")})


# ----------------------------------------------------------------------------- image folder

@pytest.mark.parametrize("pil", [True, False])
def test_image_folder(tmp_path, monkeypatch, pil):
    import runtime.data as D
    monkeypatch.setattr(D, "_have_pil", lambda: pil)    # the matplotlib.image path too
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rng = np.random.default_rng(0)
    imgs = {}
    for cname in ("cat", "dog"):
        (tmp_path / cname).mkdir()
        for i in range(3):
            a = (rng.integers(0, 256, (7, 9, 3)) / 255.0).astype(np.float64)
            plt.imsave(tmp_path / cname / f"{i}.png", a)
            imgs[(cname, i)] = a
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    ds = load_dataset({"source": "folder", "path": str(tmp_path)})
    assert ds.class_names == ["cat", "dog"]
    assert ds.x.shape == (6, 3, 7, 9) and ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(ds.x[4].transpose(1, 2, 0), imgs[("dog", 1)] * 255, atol=0.51)

    plt.imsave(tmp_path / "dog" / "odd.png", np.zeros((8, 9, 3)))
    with pytest.raises(DataError, match=r"odd\.png.*differs"):
        load_dataset({"source": "folder", "path": str(tmp_path)})
    (tmp_path / "dog" / "odd.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"odd\.png.*cannot decode"):
        load_dataset({"source": "folder", "path": str(tmp_path)})


def test_image_modes_pillow(tmp_path):
    """16-bit grey is scaled by 1/257 (Pillow's convert("L") clips it to 255); grey + alpha
    is one channel; RGBA drops alpha."""
    Image = pytest.importorskip("PIL.Image")
    from runtime.data import read_image
    a16 = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000)
    Image.fromarray(a16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(read_image(tmp_path / "g16.png")[0], a16 / 257.0, rtol=1e-6)
    g = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(np.stack([g, g], -1), "LA").save(tmp_path / "la.png")
    x = read_image(tmp_path / "la.png")
    assert x.shape == (1, 4, 5) and np.array_equal(x[0], g)
    rgba = np.stack([g, g + 1, g + 2, g], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    x = read_image(tmp_path / "rgba.png")
    assert x.shape == (3, 4, 5) and np.array_equal(x[2], g + 2)


# ----------------------------------------------------------------------------- splits etc.

def test_split_deterministic_and_stratified():
    ds = load_dataset({"source": "digits"})
    a = split_dataset(ds, 0.1, 0.2, seed=3)
    b = split_dataset(ds, 0.1, 0.2, seed=3)
    c = split_dataset(ds, 0.1, 0.2, seed=4)
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(a.indices[k], b.indices[k])
    assert not np.array_equal(a.indices["test"], c.indices["test"])
    allidx = np.concatenate([a.indices[k] for k in ("train", "val", "test")])
    assert np.array_equal(np.sort(allidx), np.arange(len(ds)))       # a partition
    # stratified: round(n * f) rows in all, each class floor(n_c * f) or one more
    counts = np.bincount(ds.y)
    for part, f in ((a.test[1], 0.2), (a.val[1], 0.1)):
        got = np.bincount(part, minlength=10)
        assert got.sum() == round(len(ds) * f) and np.all(np.abs(got - counts * f) < 1)
    np.testing.assert_array_equal(a.train[0], ds.x[a.indices["train"]])


def test_split_sizes_on_tiny_data_are_what_was_asked():
    """20 images of 10 classes: val 0.2 is 4 images, 0.3 is 6 (rounding per class gave 0
    and 10); classes with the largest remainders go first, never past a class's rows."""
    from runtime.batching import split_indices
    y = np.repeat(np.arange(10), 2)
    for v, t in ((0.2, 0.0), (0.3, 0.0), (0.3, 0.3), (0.45, 0.5)):
        tr, va, te = split_indices(y, v, t, 0)
        assert (len(va), len(te)) == (round(20 * v), round(20 * t)), (v, t)
        assert len(np.intersect1d(va, te)) == 0 and len(tr) + len(va) + len(te) == 20
    y = np.array([0] * 9 + [1])                      # unbalanced: the big class gives
    tr, va, te = split_indices(y, 0.2, 0.0, 0)
    assert len(va) == 2 and np.bincount(y[va], minlength=2).tolist() == [2, 0]


def test_split_uses_own_test_set(tmp_path):
    _write_mnist(tmp_path, n_train=20, n_test=5)
    ds = load_dataset({"source": "mnist", "path": str(tmp_path)})
    s = split_dataset(ds, 0.25, 0.5, seed=0, stratify=False)
    assert len(s.test[1]) == 5 and len(s.val[1]) == 5 and len(s.train[1]) == 15
    with pytest.raises(ValueError):
        split_indices(ds.y, 0.6, 0.5, 0)


def test_kfold_coverage():
    folds = kfold(23, 5, seed=1)
    vals = np.concatenate([v for _, v in folds])
    assert np.array_equal(np.sort(vals), np.arange(23))
    for tr, va in folds:
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 23
        assert len(va) in (4, 5)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, kfold(23, 5, seed=1)))


def test_batches_permutation_and_resume():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10)
    rng = np.random.default_rng(7)
    state = rng.bit_generator.state
    got = list(batches(x, y, 3, rng))
    assert len(got) == num_batches(10, 3) == 3
    seen = np.concatenate([b[1] for b in got])
    assert len(set(seen.tolist())) == 9
    for xb, yb in got:
        np.testing.assert_array_equal(xb.ravel(), yb)
    # exact resume: restore the epoch-start state, skip the batches already done
    rng2 = np.random.default_rng(0)
    rng2.bit_generator.state = state
    rest = list(batches(x, y, 3, rng2, start_batch=1))
    np.testing.assert_array_equal(rest[0][1], got[1][1])
    assert rng2.bit_generator.state == rng.bit_generator.state
    assert len(list(batches(x, y, 3, None, shuffle=False, drop_last=False))) == 4
    got[0][0][:] = -1                              # batches are copies
    assert x.min() == 0
