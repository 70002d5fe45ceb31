"""Transfer learning (runtime/transfer.py), ``netspec import-weights`` / ``features`` and
model ensembles / Polyak averaging (runtime/ensemble.py).

One small digits net (1x8x8) is compiled once per module (eval only, batch 16) and reused.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import netspec
from runtime.checkpoint import load_checkpoint, save_checkpoint
from runtime.ensemble import ema_weights, evaluate_ensemble, polyak_average, polyak_vs_raw
from runtime.transfer import (TransferError, extract_features, freeze_until, init_from_checkpoint,
                              truncated_spec)

SMALL = """netspec: 1
name: small
input: [1, 8, 8]
layers:
  - conv: {name: conv1, out: 6, kernel: 3, pad: 1}
  - batchnorm: {name: bn1}
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


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    import compiler
    d = tmp_path_factory.mktemp("small")
    path = d / "small.yaml"
    path.write_text(SMALL)
    spec = netspec.load(path)
    net = compiler.compile(spec, batch_size=16, train=False, seed=1)
    rng = np.random.default_rng(0)
    net.buffers["bn1.running_mean"][...] = rng.normal(0, 0.3, 6)
    net.buffers["bn1.running_var"][...] = rng.uniform(0.5, 2, 6)
    ck = d / "ck.npz"
    arrays = {**{f"params/{k}": v.copy() for k, v in net.params.items()},
              **{f"buffers/{k}": v.copy() for k, v in net.buffers.items()}}
    save_checkpoint(ck, arrays, {"epoch": 1})
    x = rng.standard_normal((20, 1, 8, 8)).astype(np.float32)
    return SimpleNamespace(path=path, spec=spec, net=net, ck=ck, arrays=arrays, x=x, dir=d)


def _fake(shapes: dict):
    return SimpleNamespace(params={k: np.zeros(s, np.float32) for k, s in shapes.items()}, buffers={})


# ----------------------------------------------------------------------------- init from checkpoint

def test_init_from_checkpoint_skip_and_report():
    src = {"params/conv1.weight": np.ones((4, 1, 3, 3)), "params/conv1.bias": np.full(4, 2.0),
           "params/fc.weight": np.ones((10, 8)), "params/fc.bias": np.ones(10),
           "params/old_head.weight": np.ones((3, 3))}
    net = _fake({"conv1.weight": (4, 1, 3, 3), "conv1.bias": (4,), "fc.weight": (5, 8),
                 "fc.bias": (5,), "new.weight": (2, 2)})
    rep = init_from_checkpoint(net, src, skip=["fc"])
    assert sorted(rep.loaded) == ["conv1.bias", "conv1.weight"]
    assert rep.skipped == ["fc.weight", "fc.bias"]
    assert rep.missing == ["new.weight"] and rep.unexpected == ["old_head.weight"]
    assert net.params["conv1.bias"].tolist() == [2.0] * 4 and not net.params["fc.weight"].any()
    assert "left fresh" in rep.format()


def test_init_from_checkpoint_shape_mismatch_names_both_shapes():
    src = {"fc.weight": np.ones((10, 8)), "fc.bias": np.ones(10), "conv.weight": np.ones((2, 2))}
    net = _fake({"fc.weight": (5, 8), "fc.bias": (5,), "conv.weight": (2, 2)})
    with pytest.raises(TransferError) as e:
        init_from_checkpoint(net, src)
    msg = str(e.value)
    assert "fc.weight is (10, 8) in the checkpoint but (5, 8) in the net" in msg
    assert "fc.bias is (10,)" in msg and "init.skip" in msg and "'fc'" in msg
    assert not net.params["conv.weight"].any()            # nothing copied on error
    rep = init_from_checkpoint(net, src, mismatch="skip")
    assert [m[0] for m in rep.mismatched] == ["fc.weight", "fc.bias"] and rep.loaded == ["conv.weight"]


def test_freeze_until_and_truncate(small):
    s = freeze_until(small.spec, "pool1")
    rep = netspec.check(s)
    assert [L.freeze for L in rep.layers][:5] == [True, True, True, True, False]
    assert rep.trainable_params == 8 * 6 * 9 + 8 + 10 * 128 + 10
    t = truncated_spec(small.spec, "pool1")
    assert netspec.check(t).output_shape == (6, 4, 4)
    with pytest.raises(TransferError, match="did you mean"):
        truncated_spec(small.spec, "pool")


GLOBAL_BN = """netspec: 1
name: gbn
input: [2, 6, 6]
layers:
  - conv: {name: conv1, out: 4, kernel: 3, pad: 1, freeze: true}
  - batchnorm: {name: bn1, use_global_stats: true, freeze: true}
  - relu: {}
  - conv: {name: conv2, out: 4, kernel: 3, pad: 1}
  - batchnorm: {name: bn2}
  - global_avgpool: {}
  - flatten: {}
  - linear: {name: fc, out: 3}
"""


def test_use_global_stats_trains_like_torch_with_that_layer_in_eval_mode():
    """bn1 (use_global_stats) keeps its running statistics through training steps and
    normalises with them; bn2 updates as usual.  Same loss, gradients and statistics as the
    PyTorch twin (where bn1 behaves like ``bn1.eval()``), when torch is installed."""
    import compiler
    spec = netspec.load(GLOBAL_BN)
    assert netspec.check(spec).layers[1].attrs["use_global_stats"] is True
    net = compiler.compile(spec, batch_size=8, seed=3, optimizer={"sgd": {"lr": 0.1}})
    rng = np.random.default_rng(1)
    net.buffers["bn1.running_mean"][...] = rng.normal(0, 0.5, 4)
    net.buffers["bn1.running_var"][...] = rng.uniform(0.5, 2, 4)
    x = rng.standard_normal((8, 2, 6, 6)).astype(np.float32)
    t = rng.integers(0, 3, 8)
    before = {k: v.copy() for k, v in net.buffers.items()}
    start = {k: v.copy() for k, v in net.params.items()}
    loss, grads = net.loss_and_grads(x, t)
    for _ in range(3):
        net.step(x, t)
    np.testing.assert_array_equal(net.buffers["bn1.running_mean"], before["bn1.running_mean"])
    np.testing.assert_array_equal(net.buffers["bn1.running_var"], before["bn1.running_var"])
    assert not np.allclose(net.buffers["bn2.running_mean"], before["bn2.running_mean"])
    torch = pytest.importorskip("torch")
    from runtime.torch_twin import build_torch_module
    m = build_torch_module(netspec.check(spec)).double().train()
    sd = {**{k: torch.tensor(v, dtype=torch.float64) for k, v in start.items()},
          **{k: torch.tensor(v, dtype=torch.float64) for k, v in before.items()}}
    m.load_state_dict(sd, strict=False)
    out = m(torch.tensor(x, dtype=torch.float64))
    tl = torch.nn.functional.cross_entropy(out, torch.tensor(t))
    tl.backward()
    assert abs(float(tl.detach()) - loss) < 1e-5 * max(1.0, abs(loss))
    compared = []
    for k, p in m.named_parameters():
        if p.grad is not None and k in grads:
            np.testing.assert_allclose(grads[k], p.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
            compared.append(k)
    assert {"conv2.weight", "bn2.weight", "fc.weight"} <= set(compared)
    np.testing.assert_allclose(m.state_dict()["bn1.running_mean"].numpy(), before["bn1.running_mean"])


def test_features_are_the_layer_output(small):
    """fc applied to the relu2 features by hand gives the full net's logits."""
    feats = extract_features(small.spec, small.arrays, "relu2", small.x, batch_size=16)
    assert feats.shape == (20, 8, 4, 4) and (feats >= 0).all()
    W, b = small.net.params["fc.weight"], small.net.params["fc.bias"]
    logits = feats.reshape(20, -1) @ W.T + b
    np.testing.assert_allclose(logits, small.net.forward(small.x), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- commands

from clihelp import run_command as _cli  # noqa: E402


def test_features_command(small, tmp_path, capsys):
    out = tmp_path / "f.npz"
    assert _cli("features", [str(small.path), "--checkpoint", str(small.ck), "--layer", "pool1",
                             "--out", str(out), "--split", "test"]) == 0
    z = np.load(out)
    assert z["test_features"].shape[1:] == (6, 4, 4)
    assert len(z["test_features"]) == len(z["test_labels"]) > 300 and str(z["layer"]) == "pool1"
    assert _cli("features", [str(small.path), "--checkpoint", str(small.ck), "--layer", "pool",
                             "--out", str(out)]) == 1
    assert "no layer named 'pool'" in capsys.readouterr().err


def test_import_weights_reports_every_problem(small, tmp_path, capsys):
    w = {k.split("/", 1)[1]: v for k, v in small.arrays.items()}
    w["fc.weight"] = np.zeros((7, 128), np.float32)          # mis-shaped
    del w["conv2.bias"]                                      # missing
    w["head.weight"] = np.zeros((3, 3), np.float32)          # unexpected
    w["bn1.num_batches_tracked"] = np.array(5)               # ignored
    src = tmp_path / "w.npz"
    np.savez(src, **w)
    out = tmp_path / "ck.npz"
    assert _cli("import_weights", [str(small.path), str(src), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "mis-shaped tensor fc.weight: (7, 128) in the file, (10, 128) in the net" in err
    assert "missing tensor conv2.bias (8,)" in err and "unexpected tensor head.weight (3, 3)" in err
    assert "num_batches_tracked" not in err and not out.exists()
    # skipping the new head and filling the missing bias fresh works
    assert _cli("import_weights", [str(small.path), str(src), "-o", str(out), "--skip", "fc", "head",
                                   "--allow-missing"]) == 0
    arrays, meta = load_checkpoint(out)
    assert sorted(meta["fresh"]) == ["conv2.bias", "fc.bias", "fc.weight"]
    np.testing.assert_array_equal(arrays["params/conv1.weight"], w["conv1.weight"])
    assert arrays["params/fc.weight"].shape == (10, 128) and arrays["params/fc.weight"].std() > 0


def test_import_torch_state_dict(small, tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="reading a state_dict needs torch")
    from runtime.torch_twin import build_torch_module
    twin = build_torch_module(netspec.check(small.spec))
    src = tmp_path / "twin.pt"
    torch.save(twin.state_dict(), str(src))
    out = tmp_path / "ck.npz"
    assert _cli("import_weights", [str(small.path), str(src), "-o", str(out)]) == 0
    arrays, _ = load_checkpoint(out)
    for k, v in twin.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            kind = "buffers" if "running" in k else "params"
            np.testing.assert_array_equal(arrays[f"{kind}/{k}"], v.numpy())
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a zip")
    assert _cli("import_weights", [str(small.path), str(bad), "-o", str(out)]) == 1
    assert "neither an .npz nor a torch state_dict file" in capsys.readouterr().err


# ----------------------------------------------------------------------------- ensembles

def test_ensemble_and_polyak(small, tmp_path):
    net, x = small.net, small.x
    y = net.forward(x).argmax(1)                      # labels the first member gets right
    other = {k: (v * -1.0 if k.startswith("params/fc") else v) for k, v in small.arrays.items()}
    own = {k: v.copy() for k, v in net.params.items()}
    r = evaluate_ensemble(net, [small.ck, small.ck], x, y)
    assert r["members"] == [1.0, 1.0] and r["ensemble"] == 1.0
    r2 = evaluate_ensemble(net, [small.ck, other], x, y)
    assert r2["members"][0] == 1.0 and r2["members"][1] < 0.5
    assert all(np.array_equal(own[k], net.params[k]) for k in own)    # weights restored
    # Polyak: an EMA arena equal to the weights gives the same predictions
    arena = np.concatenate([small.arrays[f"params/{k}"].reshape(-1) for k in net.params])
    ck2 = tmp_path / "ema.npz"
    save_checkpoint(ck2, {**small.arrays, "ema/arena": arena}, {})
    r3 = polyak_vs_raw(net, ck2, x, y)
    assert r3 == {"raw": 1.0, "ema": 1.0, "agreement": 1.0}
    ew = ema_weights(netspec.check(small.spec), {**small.arrays, "ema/arena": arena})
    assert all(np.array_equal(ew[k], v) for k, v in small.arrays.items())
    avg = polyak_average([small.arrays, other], decay=0.75)
    np.testing.assert_allclose(avg["params/fc.bias"], 0.5 * small.arrays["params/fc.bias"], rtol=1e-6)
    np.testing.assert_array_equal(avg["params/conv1.weight"], small.arrays["params/conv1.weight"])
