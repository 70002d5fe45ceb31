"""runtime/viz.py, ``netspec draw`` and ``netspec viz``: every picture is written, opened
with matplotlib.image.imread and checked for its size and for non-blank content."""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import netspec
from runtime import viz
from runtime.checkpoint import save_checkpoint

mimg = pytest.importorskip("matplotlib.image", reason="pictures need matplotlib")

SPECS = Path(__file__).resolve().parent.parent / "specs"
SMALL = """netspec: 1
name: small
input: [1, 8, 8]
layers:
  - conv: {name: conv1, out: 6, kernel: 3, pad: 1}
  - relu: {}
  - maxpool: {kernel: 2, name: pool1}
  - conv: {name: conv2, out: 8, kernel: 3, pad: 1}
  - relu: {name: relu2}
  - flatten: {}
  - linear: {name: fc, out: 10}
train:
  data: {source: digits}
  batch_size: 16
"""


def _png(path, min_h=100, min_w=100):
    """Open a PNG; assert its size and that it is not one flat colour."""
    im = mimg.imread(str(path))
    assert im.ndim == 3 and im.shape[0] >= min_h and im.shape[1] >= min_w, im.shape
    rgb = im[..., :3]
    assert rgb.std() > 0.02, "blank picture"
    assert (rgb < 0.5).mean() > 0.002, "no dark ink at all"
    return im


from clihelp import run_command as _cli  # noqa: E402


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A spec on the digits data and a checkpoint of (briefly trained) weights."""
    import compiler
    d = tmp_path_factory.mktemp("viz")
    path = d / "small.yaml"
    path.write_text(SMALL)
    spec = netspec.load(path)
    net = compiler.compile(spec, batch_size=16, train=True, seed=0)
    from runtime.data import load_digits
    ds = load_digits()
    x = (ds.x[:512].astype(np.float32) - 8.0) / 8.0          # the digits' pixels are 0..16
    y = ds.y[:512].astype(np.int64)
    net.lr = 0.05
    for _ in range(3):
        for s in range(0, 512, 16):
            net.step(x[s:s + 16], y[s:s + 16])
    ck = d / "ck.npz"
    save_checkpoint(ck, {f"params/{k}": v.copy() for k, v in net.params.items()}, {"epoch": 3})
    return SimpleNamespace(path=path, spec=spec, ck=ck)


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_draw_net_matplotlib_fallback(name, tmp_path):
    report = netspec.check(netspec.load(SPECS / f"{name}.yaml"))
    p = viz.draw_net(report, tmp_path / "net.png", engine="matplotlib")
    im = _png(p, min_h=300, min_w=200)
    assert im.shape[0] > im.shape[1]                         # layers run top to bottom
    svg = viz.draw_net(report, tmp_path / "net.svg", engine="matplotlib").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg


def test_draw_branches_are_side_by_side():
    report = netspec.check(netspec.load(SPECS / "googlenet.yaml"))
    nodes, edges = viz._graph(report)
    pos, width, height = viz._layout(nodes, edges)
    assert width >= 4                                       # an inception module's 4 branches
    assert len(set(pos.values())) == len(pos)               # no two boxes on one spot
    unet = netspec.check(netspec.load(SPECS / "unet.yaml"))
    nodes, edges = viz._graph(unet)
    assert ("enc4.relu2", "crop4", "512x64x64") in edges   # shapes ride on the edges
    assert 'label="512x64x64"' in viz.to_dot(unet)


def test_draw_command(small, tmp_path, capsys):
    out = tmp_path / "net.png"
    assert _cli("draw", [str(small.path), "-o", str(out), "--engine", "matplotlib"]) == 0
    _png(out, 200, 150)
    assert _cli("draw", [str(small.path), "-o", str(tmp_path / "net.pdf")]) == 1
    assert "must be .svg or .png" in capsys.readouterr().err


@pytest.mark.parametrize("what,size", [("filters", (100, 400)), ("activations", (150, 400)),
                                       ("occlusion", (200, 400)), ("confusion", (300, 300))])
def test_viz_command(small, what, size, tmp_path):
    out = tmp_path / f"{what}.png"
    extra = ["--patch", "3", "--stride", "1", "--index", "2"] if what == "occlusion" else []
    assert _cli("viz", [str(small.path), "--checkpoint", str(small.ck), "--what", what,
                        "-o", str(out), *extra]) == 0
    _png(out, *size)


def test_viz_errors(small, tmp_path, capsys):
    assert _cli("viz", [str(small.path), "--checkpoint", str(small.ck), "--what", "filters",
                        "--layer", "fc", "-o", str(tmp_path / "f.png")]) == 1
    assert "'fc' is a linear layer" in capsys.readouterr().err
    assert _cli("viz", [str(small.path), "--checkpoint", str(small.ck), "--what", "occlusion",
                        "--index", "100000", "-o", str(tmp_path / "o.png")]) == 1
    assert "outside the test split" in capsys.readouterr().err


def test_occlusion_finds_the_evidence():
    """A 'net' whose class-1 logit is the sum of a 2x2 corner: occluding it hurts, the rest not."""
    def predict(b):
        s = b[:, 0, :2, :2].sum(axis=(1, 2))
        return np.stack([np.zeros_like(s), s], axis=1)
    x = np.ones((1, 8, 8))
    heat, base = viz.occlusion_map(predict, x, 1, patch=2, stride=2)
    assert heat.shape == (8, 8) and base > 0.98
    assert heat[:2, :2].min() > 0.4 and np.abs(heat[4:, 4:]).max() < 1e-12


def test_direct_plots(tmp_path):
    rng = np.random.default_rng(0)
    _png(viz.plot_filters(rng.standard_normal((16, 3, 5, 5)), tmp_path / "f.png"))
    _png(viz.plot_confusion(rng.integers(0, 30, (10, 10)), tmp_path / "cm.png"))
    _png(viz.plot_activations({"a": rng.standard_normal((4, 6, 6)), "v": rng.standard_normal(10)},
                              tmp_path / "a.png"), 100, 100)
