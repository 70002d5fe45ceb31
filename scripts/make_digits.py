"""Rebuild runtime/data/digits.npz from scikit-learn's bundled copy of the UCI digits.

The runtime never imports scikit-learn: this script is run once, by hand, and reads
``sklearn/datasets/data/digits.csv.gz`` straight out of a scikit-learn wheel (a zip file)
without installing it:

    pip download scikit-learn --no-deps -d /tmp/skl
    python scripts/make_digits.py /tmp/skl/scikit_learn-*.whl

Output: runtime/data/digits.npz with
    x: uint8 (1797, 1, 8, 8)  pixel counts 0..16 (number of set pixels in a 4x4 block)
    y: uint8 (1797,)          labels 0..9
"""
from __future__ import annotations

import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "sklearn/datasets/data/digits.csv.gz"
OUT = Path(__file__).resolve().parent.parent / "runtime" / "data" / "digits.npz"


def read_digits_from_wheel(wheel: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (x uint8 (N,1,8,8), y uint8 (N,)) parsed from the wheel's digits.csv.gz."""
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(MEMBER)
    text = gzip.decompress(raw).decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 65:
        raise ValueError(f"{MEMBER}: expected 65 columns, got shape {table.shape}")
    feats, labels = table[:, :64], table[:, 64]
    if feats.min() < 0 or feats.max() > 16 or np.any(feats != np.round(feats)):
        raise ValueError(f"{MEMBER}: features outside the integer range 0..16")
    x = feats.astype(np.uint8).reshape(-1, 1, 8, 8)
    y = labels.astype(np.uint8)
    return x, y


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    x, y = read_digits_from_wheel(argv[1])
    assert x.shape == (1797, 1, 8, 8), x.shape
    assert sorted(set(y.tolist())) == list(range(10))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, x=x, y=y)
    print(f"wrote {OUT}: x {x.shape} {x.dtype}, y {y.shape}, counts {np.bincount(y).tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
