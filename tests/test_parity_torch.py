"""PyTorch parity: same weights, same input -> forward outputs and every gradient within
1e-4 relative of PyTorch (float32).  The torch twin is built generically from the
checked spec (runtime/torch_twin.py), so this works for nets outside the zoo too."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch parity tests need the optional torch extra "
                                            "(pip install torch==2.13.0 on this machine)")

import compiler  # noqa: E402
import netspec  # noqa: E402
from runtime.torch_twin import build_torch_module  # noqa: E402

from test_compiler import SMALL_UNET  # noqa: E402

pytestmark = pytest.mark.torch


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def parity(spec, batch, loss_cfg, target_fn, seed=0):
    net = compiler.compile(spec, batch_size=batch, loss=loss_cfg, seed=seed)
    tm = build_torch_module(net.report).double()
    # our initial weights -> torch (both ways share PyTorch names and layouts)
    sd = {**{k: torch.tensor(v, dtype=torch.float64) for k, v in net.params.items()},
          **{k: torch.tensor(v, dtype=torch.float64) for k, v in net.buffers.items()}}
    missing, unexpected = tm.load_state_dict(sd, strict=False)
    assert not [m for m in missing if not m.endswith("num_batches_tracked")] and not unexpected
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *net.input_shape)).astype(np.float32)
    t = target_fn(rng, batch, net.output_shape)

    # eval-mode forward
    tm.eval()
    with torch.no_grad():
        ref = tm(torch.tensor(x, dtype=torch.float64)).numpy()
    assert rel_err(net.forward(x), ref) < 1e-4

    # train-mode loss and gradients
    tm.train()
    xt = torch.tensor(x, dtype=torch.float64)
    out = tm(xt)
    (name, attrs), = loss_cfg.items()
    if name == "softmax_cross_entropy":
        lt = torch.nn.functional.cross_entropy(out.reshape(batch, -1), torch.tensor(t),
                                               label_smoothing=attrs.get("label_smoothing", 0.0))
    elif name == "mse":
        lt = torch.nn.functional.mse_loss(out, torch.tensor(t, dtype=torch.float64))
    else:
        raise NotImplementedError(name)
    lt.backward()
    loss, grads = net.loss_and_grads(x, t)
    assert abs(loss - lt.item()) / max(abs(lt.item()), 1e-12) < 1e-4
    tgrads = {k: p.grad.numpy() for k, p in tm.named_parameters()}
    assert set(tgrads) == set(grads)
    bad = {k: rel_err(grads[k], tgrads[k]) for k in grads if rel_err(grads[k], tgrads[k]) >= 1e-4}
    assert not bad, bad
    # BatchNorm running statistics updated the same way (unbiased variance, momentum)
    tbuf = dict(tm.named_buffers())
    for k, v in net.buffers.items():
        assert rel_err(v, tbuf[k].numpy()) < 1e-4, k


def labels(rng, n, shape):
    return rng.integers(0, int(np.prod(shape)), size=n)


def test_lenet5_parity():
    parity(netspec.load("specs/lenet5.yaml"), 8, {"softmax_cross_entropy": {"label_smoothing": 0.1}}, labels)


def test_resnet20_parity():
    parity(netspec.load("specs/resnet20.yaml"), 4, {"softmax_cross_entropy": {}}, labels)


def test_unet_parity():
    parity(netspec.load(SMALL_UNET), 2, {"mse": {}}, lambda rng, n, s: rng.random((n, *s)))
