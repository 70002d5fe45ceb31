"""runtime.torch_twin: the PyTorch twin built generically from a checked Report.

For LeNet-5, ResNet-20 and a small U-Net: the twin's parameter count equals
``report.total_params``, its output shape the report's, and its state_dict keys the
netspec parameter + buffer names. LeNet-5 and ResNet-20 (option A) also match
hand-written PyTorch references numerically after a weight transfer by name; a
kitchen-sink spec runs every supported layer type (the twin checks every layer's output
shape against the checker's). Skipped when torch is absent.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

try:
    from netspec import check, load
except ImportError:  # the package __init__ may not re-export them (yet)
    try:
        from netspec.check import check
        from netspec.loader import load
    except ImportError as e:  # pragma: no cover
        pytest.skip(f"netspec loader/checker not available: {e}", allow_module_level=True)

from runtime.torch_twin import SUPPORTED_TYPES, build_torch_module  # noqa: E402

pytestmark = pytest.mark.torch

SPECS = Path(__file__).resolve().parent.parent / "specs"

# The zoo U-Net's structure (unpadded 3x3 conv pairs, 2x2 max pools, 2x2 stride-2
# up-convolutions, center_crop + concat skips, 1x1 conv + sigmoid) at depth 2 with
# 8/16/32 channels. 92 -> 88 | 44 -> 40 | 20 -> 16 | up 32, crop 40 -> 32, -> 28 |
# up 56, crop 88 -> 56, -> 52.
SMALL_UNET = """
netspec: 1
name: unet_small
input: [1, 92, 92]
blocks:
  double_conv:
    args: {channels: int}
    layers:
      - conv: {name: conv1, out: $channels, kernel: 3}
      - relu: {name: relu1}
      - conv: {name: conv2, out: $channels, kernel: 3}
      - relu: {name: relu2}
layers:
  - double_conv: {name: enc1, channels: 8}
  - maxpool: {name: pool1, kernel: 2, stride: 2}
  - double_conv: {name: enc2, channels: 16}
  - maxpool: {name: pool2, kernel: 2, stride: 2}
  - double_conv: {name: center, channels: 32}
  - conv_transpose: {name: upconv2, out: 16, kernel: 2, stride: 2}
  - center_crop: {name: crop2, from: [enc2, upconv2]}
  - concat: {name: cat2, from: [crop2, upconv2]}
  - double_conv: {name: dec2, channels: 16}
  - conv_transpose: {name: upconv1, out: 8, kernel: 2, stride: 2}
  - center_crop: {name: crop1, from: [enc1, upconv1]}
  - concat: {name: cat1, from: [crop1, upconv1]}
  - double_conv: {name: dec1, channels: 8}
  - conv: {name: final, out: 1, kernel: 1}
  - sigmoid: {name: sigmoid}
"""

# Every layer type with a PyTorch twin, in non-default configurations.
KITCHEN_SINK = """
netspec: 1
name: kitchen_sink
input: [3, 20, 20]
layers:
  - conv: {name: c1, out: 8, kernel: 3, pad: same, weight_norm: true}
  - batchnorm: {name: bn1, momentum: 0.2}
  - prelu: {name: act1, num_parameters: 8}
  - conv: {name: c2, out: 8, kernel: [3, 2], stride: 2, pad: [1, 0, 1, 0], groups: 2, dilation: [1, 2]}
  - leaky_relu: {name: act2, slope: 0.2}
  - groupnorm: {name: gn, groups: 4}
  - maxpool: {name: mp, kernel: 3, stride: 2, pad: 1, ceil_mode: true}
  - conv_transpose: {name: up, out: 8, kernel: 3, stride: 2, pad: 1, output_padding: 1}
  - instancenorm: {name: inorm, affine: true}
  - elu: {name: act3, alpha: 0.5}
  - avgpool: {name: ap, kernel: 3, stride: 1, pad: 1, count_include_pad: false}
  - lrn: {name: lrn, size: 3, k: 2.0}
  - upsample: {name: us, scale: 2, mode: bilinear}
  - center_crop: {name: crop, size: [8, 8]}
  - conv: {name: c3, out: 16, kernel: 3, pad: 1}
  - conv: {name: c4, out: 16, kernel: 1, bias: false}
  - stochastic_depth: {name: sd, p: 0.2}
  - add: {name: res, from: [sd, c3]}
  - add: {name: proj, from: [res, crop]}
  - concat: {name: cat, from: [proj, c3]}
  - channel_shuffle: {name: shuf, groups: 4}
  - channel_slice: {name: half0, chunks: 2, index: 0}
  - channel_slice: {name: half1, start: 16, from: shuf}
  - concat: {name: cat2, from: [half1, half0]}
  - identity: {name: idt}
  - layernorm: {name: ln}
  - tanh: {name: act4}
  - global_avgpool: {name: sqz}
  - multiply: {name: gated, from: [act4, sqz]}
  - relu6: {name: act7}
  - hardswish: {name: act8}
  - silu: {name: act9}
  - gelu: {name: act10}
  - softplus: {name: act11}
  - hardsigmoid: {name: act12}
  - dropout: {name: drop, p: 0.1}
  - locally_connected: {name: lc, out: 4, kernel: 3, stride: 2}
  - maxout: {name: mo, k: 2}
  - adaptive_avgpool: {name: aap, size: 3}
  - fractional_maxpool: {name: fmp, kernel: 2, output_size: 2}
  - global_maxpool: {name: gmp}
  - sigmoid: {name: act5}
  - reshape: {name: rs, shape: [2, 1, 1]}
  - global_avgpool: {name: gap}
  - flatten: {name: fl}
  - linear: {name: fc1, out: 12, weight_norm: true}
  - relu: {name: act6}
  - dropconnect: {name: dc, out: 6, p: 0.3}
  - softmax: {name: sm}
"""


def _report(name_or_text: str):
    src = str(SPECS / f"{name_or_text}.yaml") if "\n" not in name_or_text else name_or_text
    return check(load(src))


def _state_names(rep) -> list[str]:
    return [full for l in rep.layers for full, _ in l.param_specs]


def _nparams(m) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("which", ["lenet5", "resnet20", "digits", "autoencoder", SMALL_UNET],
                         ids=["lenet5", "resnet20", "digits", "autoencoder", "unet_small"])
def test_twin_matches_report(which):
    rep = _report(which)
    net = build_torch_module(rep)
    assert _nparams(net) == rep.total_params
    assert list(net.state_dict().keys()) == _state_names(rep)
    net.eval()
    with torch.no_grad():
        y = net(torch.randn(2, *rep.input_shape))
    assert tuple(y.shape) == (2, *rep.output_shape)


def test_small_unet_numbers():
    rep = _report(SMALL_UNET)
    assert rep.output_shape == (1, 52, 52)
    assert rep.layer("crop1").output_shape == (8, 56, 56)
    # 80+584 | 1168+2320 | 4640+9248 | 2064 | 4624+2320 | 520 | 1160+584 | 9
    assert rep.total_params == 29_321


class _LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class _Block(nn.Module):
    def __init__(self, cin, ch, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.pad = ch - cin

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.pad:  # option A, as in the common CIFAR code
            x = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(y + x)


class _ResNet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for i, ch in enumerate((16, 32, 64), 1):
            blocks = []
            for b in range(3):
                blocks.append(_Block(cin, ch, 2 if (b == 0 and i > 1) else 1))
                cin = ch
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("name,ref_cls,shape", [("lenet5", _LeNet, (1, 28, 28)),
                                                ("resnet20", _ResNet20, (3, 32, 32))])
def test_twin_equals_handwritten_torch(name, ref_cls, shape):
    text = (SPECS / f"{name}.yaml").read_text()
    # the handwritten ResNet-20 uses the paper's option-A shortcuts
    rep = _report(text.replace("project: conv_bn", "project: pad"))
    net, ref = build_torch_module(rep), ref_cls()
    # torch -> twin by name (torch's num_batches_tracked counters are tolerated)
    net.load_state_dict(ref.state_dict())
    x = torch.randn(4, *shape)
    for mode in ("train", "eval"):  # train: batch statistics and running-stat updates
        net.train(mode == "train")
        ref.train(mode == "train")
        with torch.no_grad():
            torch.testing.assert_close(net(x), ref(x), rtol=1e-5, atol=1e-5)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, ref.state_dict()[k])
    # twin -> torch by name
    net2 = build_torch_module(rep)
    ref2 = ref_cls()
    ref2.load_state_dict({**ref2.state_dict(), **net2.state_dict()})
    net2.eval()
    ref2.eval()
    with torch.no_grad():
        torch.testing.assert_close(net2(x), ref2(x), rtol=1e-5, atol=1e-5)


def test_numpy_round_trip():
    rep = _report("resnet20")
    a, b = build_torch_module(rep), build_torch_module(rep)
    arrays = a.arrays()
    assert all(v.dtype.name == "float32" for v in arrays.values())
    b.load_arrays(arrays)
    a.eval()
    b.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_kitchen_sink_runs_every_type():
    rep = _report(KITCHEN_SINK)
    types = {l.type for l in rep.layers}
    missing = set(SUPPORTED_TYPES) - types
    assert missing <= {"shortcut_pad"}, missing      # option A is covered by resnet20
    net = build_torch_module(rep)
    assert _nparams(net) == rep.total_params
    assert list(net.state_dict().keys()) == _state_names(rep)
    x = torch.randn(3, *rep.input_shape)
    for train in (True, False):
        net.train(train)
        y = net(x)                                   # checks every layer's shape
        assert tuple(y.shape) == (3, *rep.output_shape)
        torch.testing.assert_close(y.sum(1), torch.ones(3))
    y[:, 0].sum().backward()                         # every parameter is on the path
    assert all(p.grad is not None for p in net.parameters())


def test_weight_norm_is_torchs():
    rep = _report(KITCHEN_SINK)
    net = build_torch_module(rep)
    sd = net.state_dict()
    assert sd["c1.weight_g"].shape == (8, 1, 1, 1) and sd["c1.weight_v"].shape == (8, 3, 3, 3)
    ref = nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 8, 3, padding=1))
    with torch.no_grad():
        ref.parametrizations.weight.original0.copy_(sd["c1.weight_g"])
        ref.parametrizations.weight.original1.copy_(sd["c1.weight_v"])
        ref.bias.copy_(sd["c1.bias"])
    sub = build_torch_module(SimpleNamespace(
        input_shape=rep.input_shape, outputs=["c1"], layers=[rep.layer("c1")]))
    sub.load_state_dict({k: v for k, v in sd.items() if k.startswith("c1.")})
    x = torch.randn(2, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(sub(x), ref(x), rtol=1e-5, atol=1e-5)


def test_frozen_layers_do_not_train():
    rep = _report("""
netspec: 1
name: frozen
input: [1, 8, 8]
layers:
  - conv: {name: c, out: 4, kernel: 3, freeze: true}
  - flatten: {}
  - linear: {name: fc, out: 2}
""")
    net = build_torch_module(rep)
    grads = {n: p.requires_grad for n, p in net.named_parameters()}
    assert grads == {"c.weight": False, "c.bias": False, "fc.weight": True, "fc.bias": True}


def test_unknown_type_raises():
    layer = SimpleNamespace(name="odd", type="capsule", inputs=["input"],
                            input_shapes=[(1, 4, 4)], output_shape=(1, 4, 4), attrs={},
                            param_specs=[])
    with pytest.raises(NotImplementedError, match="capsule"):
        build_torch_module(SimpleNamespace(input_shape=(1, 4, 4), layers=[layer]))


ZOO = sorted(p.stem for p in SPECS.glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_net_runs_in_torch(name):
    """The whole zoo through the twin at batch 1: PyTorch agrees with the checker's shape
    rule of every layer (ceil_mode pools, crops, projections ...) and parameter count."""
    rep = _report(name)
    net = build_torch_module(rep).eval()
    assert _nparams(net) == rep.total_params
    with torch.no_grad():
        y = net(torch.randn(1, *rep.input_shape))
    assert tuple(y.shape) == (1, *rep.output_shape)


# torchvision's module layouts for the zoo comparisons: tests/torchvision_refs.py
from torchvision_refs import _TVGoogLeNet, _TVResNet, _TVShuffleNetV2, _hook_macs  # noqa: E402


def test_shufflenet_params_and_macs_equal_torchs():
    """specs/shufflenet_v2_x1_0.yaml: torchvision's parameter count (2,278,604), the same
    state_dict keys in the same order, and the MACs counted by forward hooks on the
    hand-written torchvision model."""
    rep = _report("shufflenet_v2_x1_0")
    ref = _TVShuffleNetV2()
    assert _nparams(ref) == rep.total_params == 2_278_604
    ref_keys = [k for k in ref.state_dict() if not k.endswith("num_batches_tracked")]
    assert _state_names(rep) == ref_keys
    assert _hook_macs(ref, torch.randn(1, 3, 224, 224)) == rep.total_macs == 144_907_992


@pytest.mark.slow
@pytest.mark.parametrize("name", ["googlenet", "resnet50", "shufflenet_v2_x1_0"])
def test_zoo_equals_torchvision_layout(name):
    ref = {"googlenet": _TVGoogLeNet, "resnet50": lambda: _TVResNet([3, 4, 6, 3]),
           "shufflenet_v2_x1_0": _TVShuffleNetV2}[name]()
    with torch.no_grad():  # non-trivial batch-norm statistics for eval mode
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    net = build_torch_module(_report(name))
    net.load_state_dict(ref.state_dict())           # strict: every key matches
    net.eval()
    ref.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=1e-4, atol=1e-5)
