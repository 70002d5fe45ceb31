"""End to end: train a tiny run, start a second run from its checkpoint with the features
frozen, and check that training moved only what it may move.

Run 1: a small conv-bn-relu net on 320 digits, 1 epoch -> checkpoint.npz.
Run 2: the same net with ``init: {checkpoint: <run 1>, skip: [fc]}`` and ``freeze: true`` on
conv1/bn1/conv2/bn2, 1 epoch.  Then every frozen parameter is bit-identical to run 1's, and
fc (fresh, skipped by init) was both not copied from run 1 and changed by training.
(BatchNorm running statistics are buffers, not parameters: they still adapt in run 2.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import netspec
from runtime.checkpoint import load_checkpoint
from runtime.data import load_digits
from runtime.train import train

FROZEN = ("conv1", "bn1", "conv2", "bn2")

SPEC = """\
netspec: 1
name: {name}
input: [1, 8, 8]
layers:
  - conv: {{name: conv1, out: 8, kernel: 3, pad: 1, bias: false{freeze}}}
  - batchnorm: {{name: bn1{freeze}}}
  - relu: {{}}
  - conv: {{name: conv2, out: 8, kernel: 3, pad: 1{freeze}}}
  - batchnorm: {{name: bn2{freeze}}}
  - relu: {{}}
  - global_avgpool: {{name: avgpool}}
  - flatten: {{name: flatten}}
  - linear: {{name: fc, out: {classes}}}
{init}train:
  data: {{source: npz, path: {data}, val_split: 0.1, test_split: 0.1, seed: 0}}
  preprocess: [{{standardize: per_channel}}]
  optimizer: {{sgd: {{lr: 0.1, momentum: 0.9}}}}
  batch_size: 32
  epochs: 1
  seed: 0
"""


def _spec(path: Path, data: Path, *, classes: int, init: Path | None = None) -> Path:
    path.write_text(SPEC.format(
        name=path.stem, data=data, classes=classes, freeze=", freeze: true" if init else "",
        init=f"init: {{checkpoint: {init}, skip: [fc]}}\n" if init else ""))
    return path


def _params(path: Path) -> dict[str, np.ndarray]:
    return {k[7:]: v for k, v in load_checkpoint(path)[0].items() if k.startswith("params/")}


def test_frozen_features_stay_bit_identical(tmp_path):
    ds = load_digits()
    src, dst = np.flatnonzero(ds.y < 5)[:320], np.flatnonzero(ds.y >= 5)[:320]
    np.savez(tmp_path / "a.npz", x=ds.x[src], y=ds.y[src])
    np.savez(tmp_path / "b.npz", x=ds.x[dst], y=ds.y[dst] - 5)

    s1 = train(netspec.load(_spec(tmp_path / "base.yaml", tmp_path / "a.npz", classes=5)),
               tmp_path / "run1", progress=False)
    assert s1["status"] == "completed"
    base = _params(tmp_path / "run1" / "checkpoint.npz")

    fresh = {}

    def factory(spec, batch_size):          # the net before init/training: fc's fresh values
        import compiler
        net = compiler.compile(spec, batch_size=batch_size, train=True)
        fresh.update({k: v.copy() for k, v in net.params.items()})
        return net

    spec2 = netspec.load(_spec(tmp_path / "tuned.yaml", tmp_path / "b.npz", classes=5,
                               init=tmp_path / "run1" / "checkpoint.npz"))
    assert spec2.init["skip"] == ["fc"]
    s2 = train(spec2, tmp_path / "run2", progress=False, net_factory=factory)
    assert s2["status"] == "completed"
    tuned = _params(tmp_path / "run2" / "checkpoint.npz")

    frozen = [k for k in tuned if k.split(".")[0] in FROZEN]
    assert sorted(frozen) == sorted(k for k in base if k.split(".")[0] in FROZEN)
    assert len(frozen) == 7          # conv1.weight, conv2.{weight,bias}, bn1/bn2.{weight,bias}
    for k in frozen:
        assert tuned[k].dtype == base[k].dtype
        assert np.array_equal(tuned[k], base[k]), f"frozen {k} changed"
        assert not np.array_equal(fresh[k], base[k])     # i.e. it really came from run 1
    for k in ("fc.weight", "fc.bias"):
        assert not np.array_equal(tuned[k], fresh[k]), f"{k} did not train"
        assert np.abs(tuned[k] - fresh[k]).max() > 1e-4
    assert not np.array_equal(tuned["fc.bias"], base["fc.bias"])


def test_linear_classifier_on_extracted_features(tmp_path, capsys):
    """The lectures' "CNN as a fixed feature extractor": `netspec features` writes a file
    that `netspec train` reads back for a spec with `input: [F]` (train + val rows as x, the
    test rows as the test set); per-feature standardisation; augment on vectors is refused."""
    import argparse
    import importlib

    def cli(name, argv):
        mod = importlib.import_module(f"netspec.commands.{name}")
        p = argparse.ArgumentParser()
        mod.add_parser(p.add_subparsers(dest="cmd"))
        return mod.run(p.parse_args([name, *argv]))
    ds = load_digits()
    np.savez(tmp_path / "a.npz", x=ds.x[:400], y=ds.y[:400])
    base = _spec(tmp_path / "base.yaml", tmp_path / "a.npz", classes=10)
    train(netspec.load(base), tmp_path / "run1", progress=False)
    feats = tmp_path / "f.npz"
    assert cli("features", [str(base), "--checkpoint", str(tmp_path / "run1" / "checkpoint.npz"),
                            "--layer", "flatten", "--out", str(feats)]) == 0
    with np.load(feats) as z:
        n_test = len(z["test_labels"])
        f_test = z["test_features"]
    lin = tmp_path / "lin.yaml"
    lin.write_text(f"netspec: 1\nname: lin\ninput: [8]\nlayers:\n  - linear: {{name: fc, out: 10}}\n"
                   f"train:\n  data: {{source: npz, path: {feats}}}\n  optimizer: {{sgd: {{lr: 0.1}}}}\n"
                   f"  batch_size: 16\n  epochs: 3\n")
    s = train(netspec.load(lin), tmp_path / "lin", progress=False)
    assert s["status"] == "completed" and s["test_accuracy"] > 0.3, s      # chance: 0.1
    from runtime.data import load_dataset
    d = load_dataset({"source": "npz", "path": str(feats)})
    assert d.x.shape[1:] == (8,) and len(d.y_test) == n_test and np.array_equal(d.x_test, f_test)
    from runtime.preprocess import Preprocessor
    p = Preprocessor([{"standardize": "per_channel"}]).fit(d.x)
    z = p.apply(d.x)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    assert np.all((np.abs(z.std(0) - 1) < 1e-3) | (d.x.std(0) < 1e-6))     # per feature
    with pytest.raises(ValueError, match="transforms images"):
        train(netspec.load(str(lin.read_text()) + "  augment: [{flip: horizontal}]\n"), tmp_path / "lin2",
              progress=False)


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
