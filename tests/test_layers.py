"""The layer catalogue: shape rules, params, MACs per type; PyTorch parity of shapes and
state_dict names; the window formula against brute-force enumeration (hypothesis); every
layer's error paths through check() with a located message."""
from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings, strategies as st

from netspec.check import check
from netspec.errors import Loc, SpecError
from netspec.layers import REGISTRY, complete_attrs, conv_out, get, types
from netspec.spec import INPUT, LayerSpec, Spec


def run(typ, *in_shapes, **attrs):
    """Apply one layer type directly: -> (output shape, {param name: shape}, macs)."""
    ld = get(typ)
    ins = [tuple(s) for s in in_shapes]
    a = ld.normalize(complete_attrs(ld, attrs), ins)
    out = ld.output_shape(a, ins)
    ps = {p.name: p.shape for p in ld.params(a, ins)}
    return out, ps, ld.macs(a, ins, out)


# (type, attrs, input shapes, output shape, {param: shape}, macs)
CASES = [
    ("conv", dict(out=8, kernel=3), [(3, 10, 12)], (8, 8, 10), {"weight": (8, 3, 3, 3), "bias": (8,)}, 8 * 8 * 10 * 27),
    ("conv", dict(out=8, kernel=[3, 5], stride=2, pad="same", groups=2, bias=False), [(4, 9, 10)], (8, 5, 5), {"weight": (8, 2, 3, 5)}, 8 * 25 * 2 * 15),
    ("conv", dict(out=4, kernel=3, dilation=2, pad=[1, 2, 0, 3], weight_norm=True), [(2, 8, 8)], (4, 7, 7), {"bias": (4,), "weight_g": (4, 1, 1, 1), "weight_v": (4, 2, 3, 3)}, 4 * 49 * 18),
    ("conv_transpose", dict(out=6, kernel=3, stride=2, pad=1, output_padding=1, groups=2), [(4, 5, 5)], (6, 10, 10), {"weight": (4, 3, 3, 3), "bias": (6,)}, 4 * 25 * 3 * 9),
    ("locally_connected", dict(out=5, kernel=3, stride=1), [(2, 6, 7)], (5, 4, 5), {"weight": (4, 5, 5, 2, 3, 3), "bias": (5, 4, 5)}, 5 * 20 * 2 * 9),
    ("maxpool", dict(kernel=3, stride=2, pad=1, ceil_mode=True), [(3, 6, 6)], (3, 4, 4), {}, 0),
    ("maxpool", dict(kernel=2), [(3, 7, 7)], (3, 3, 3), {}, 0),
    ("avgpool", dict(kernel=[2, 3], stride=[2, 1], count_include_pad=False), [(3, 7, 7)], (3, 3, 5), {}, 0),
    ("global_avgpool", {}, [(7, 5, 3)], (7, 1, 1), {}, 0),
    ("global_maxpool", {}, [(7, 5, 3)], (7, 1, 1), {}, 0),
    ("fractional_maxpool", dict(output_ratio=0.5), [(3, 7, 9)], (3, 3, 4), {}, 0),
    ("fractional_maxpool", dict(kernel=3, output_size=[4, 5]), [(3, 7, 9)], (3, 4, 5), {}, 0),
    ("maxout", dict(k=3), [(12, 4, 4)], (4, 4, 4), {}, 0),
    ("maxout", {}, [(10,)], (5,), {}, 0),
    ("linear", dict(out=10), [(4, 2, 2)], (10,), {"weight": (10, 16), "bias": (10,)}, 160),
    ("linear", dict(out=3, bias=False, weight_norm=True), [(5,)], (3,), {"weight_g": (3, 1), "weight_v": (3, 5)}, 15),
    ("dropconnect", dict(out=7, p=0.3), [(5,)], (7,), {"weight": (7, 5), "bias": (7,)}, 35),
    ("flatten", {}, [(4, 2, 3)], (24,), {}, 0),
    ("reshape", dict(shape=[2, -1, 3]), [(4, 2, 3)], (2, 4, 3), {}, 0),
    ("batchnorm", {}, [(6, 3, 3)], (6, 3, 3), {"weight": (6,), "bias": (6,), "running_mean": (6,), "running_var": (6,)}, 0),
    ("batchnorm", dict(affine=False), [(6,)], (6,), {"running_mean": (6,), "running_var": (6,)}, 0),
    ("layernorm", {}, [(6, 3, 3)], (6, 3, 3), {"weight": (6, 3, 3), "bias": (6, 3, 3)}, 0),
    ("instancenorm", {}, [(6, 3, 3)], (6, 3, 3), {}, 0),
    ("instancenorm", dict(affine=True), [(6, 3, 3)], (6, 3, 3), {"weight": (6,), "bias": (6,)}, 0),
    ("groupnorm", dict(groups=3), [(6, 3, 3)], (6, 3, 3), {"weight": (6,), "bias": (6,)}, 0),
    ("lrn", dict(size=5, k=2), [(6, 3, 3)], (6, 3, 3), {}, 0),
    ("relu", {}, [(6, 3, 3)], (6, 3, 3), {}, 0),
    ("sigmoid", {}, [(6,)], (6,), {}, 0),
    ("tanh", {}, [(6,)], (6,), {}, 0),
    ("leaky_relu", dict(slope=0.1), [(6,)], (6,), {}, 0),
    ("prelu", {}, [(6, 3, 3)], (6, 3, 3), {"weight": (1,)}, 0),
    ("prelu", dict(num_parameters=6), [(6, 3, 3)], (6, 3, 3), {"weight": (6,)}, 0),
    ("elu", {}, [(6,)], (6,), {}, 0),
    ("relu6", {}, [(6, 2, 2)], (6, 2, 2), {}, 0),
    ("hardsigmoid", {}, [(6,)], (6,), {}, 0),
    ("hardswish", {}, [(6, 2, 2)], (6, 2, 2), {}, 0),
    ("silu", {}, [(6,)], (6,), {}, 0),
    ("gelu", {}, [(6,)], (6,), {}, 0),
    ("softplus", {}, [(6,)], (6,), {}, 0),
    ("multiply", {}, [(4, 3, 3), (4, 1, 1)], (4, 3, 3), {}, 0),
    ("multiply", {}, [(4, 3, 3), (1, 3, 3)], (4, 3, 3), {}, 0),
    ("softmax", {}, [(10,)], (10,), {}, 0),
    ("dropout", dict(p=0.2), [(10,)], (10,), {}, 0),
    ("stochastic_depth", dict(p=0.2), [(4, 2, 2)], (4, 2, 2), {}, 0),
    ("add", {}, [(4, 2, 2), (4, 2, 2), (4, 2, 2)], (4, 2, 2), {}, 0),
    ("concat", {}, [(4, 2, 2), (3, 2, 2)], (7, 2, 2), {}, 0),
    ("upsample", dict(scale=2), [(4, 3, 5)], (4, 6, 10), {}, 0),
    ("adaptive_avgpool", dict(size=[3, 2]), [(4, 7, 5)], (4, 3, 2), {}, 0),
    ("adaptive_avgpool", dict(size=7), [(4, 7, 7)], (4, 7, 7), {}, 0),
    ("upsample", dict(mode="bilinear", size=[7, 8], align_corners=True), [(4, 3, 5)], (4, 7, 8), {}, 0),
    ("center_crop", {}, [(4, 9, 8), (2, 5, 6)], (4, 5, 6), {}, 0),
    ("center_crop", dict(size=3), [(4, 9, 8)], (4, 3, 3), {}, 0),
    ("shortcut_pad", dict(stride=2, out=8), [(4, 7, 8)], (8, 4, 4), {}, 0),
    ("channel_shuffle", dict(groups=2), [(116, 28, 28)], (116, 28, 28), {}, 0),
    ("identity", {}, [(4, 3, 5)], (4, 3, 5), {}, 0),
    ("channel_slice", dict(chunks=2, index=1), [(116, 28, 28)], (58, 28, 28), {}, 0),
    ("channel_slice", dict(start=-3), [(8,)], (3,), {}, 0),
    ("channel_slice", dict(chunks=3, index=2), [(8, 2, 2)], (2, 2, 2), {}, 0),   # torch.chunk: 3, 3, 2
]


@pytest.mark.parametrize("typ,attrs,ins,out,params,macs", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_layer_table(typ, attrs, ins, out, params, macs):
    assert run(typ, *ins, **attrs) == (out, params, macs)


def test_every_type_is_covered_and_documented():
    assert set(types()) == {c[0] for c in CASES}
    for name, ld in REGISTRY.items():
        assert ld.doc and ld.family, name
        for k, at in ld.attrs.items():
            assert at.doc, f"{name}.{k}"
            assert at.type in ("int", "float", "bool", "str", "int2", "pad", "ints",
                               "float_or_ints", "any")


def test_param_flags():
    ld = get("conv")
    a = ld.normalize(complete_attrs(ld, {"out": 4, "kernel": 3}), [(2, 5, 5)])
    w, b = ld.params(a, [(2, 5, 5)])
    assert (w.decay, w.init, w.fan_in) == (True, "kaiming_uniform", 18)
    assert (b.decay, b.init) == (False, "uniform_fan_in")
    ld = get("batchnorm")
    ps = ld.params(ld.normalize(complete_attrs(ld, {}), [(3, 2, 2)]), [(3, 2, 2)])
    assert [(p.kind, p.init, p.decay) for p in ps] == [
        ("param", "ones", False), ("param", "zeros", False),
        ("buffer", "zeros", False), ("buffer", "ones", False)]
    ld = get("prelu")
    (p,) = ld.params(ld.normalize(complete_attrs(ld, {}), [(3,)]), [(3,)])
    assert p.init == "const:0.25" and not p.decay


# ------------------------------------------------------------------ PyTorch parity

def _torch_cases():
    import torch.nn as nn
    from torch.nn.utils import weight_norm
    return [
        ("conv", dict(out=8, kernel=[3, 5], stride=2, pad=[1, 2], dilation=[1, 2], groups=2),
         (4, 11, 13), lambda: nn.Conv2d(4, 8, (3, 5), 2, (1, 2), (1, 2), 2)),
        ("conv", dict(out=4, kernel=3, pad="same", dilation=2, weight_norm=True), (2, 9, 8),
         lambda: weight_norm(nn.Conv2d(2, 4, 3, padding="same", dilation=2))),
        ("conv_transpose", dict(out=6, kernel=4, stride=3, pad=1, output_padding=2, groups=2,
                                dilation=1), (4, 5, 6),
         lambda: nn.ConvTranspose2d(4, 6, 4, 3, 1, 2, groups=2)),
        ("maxpool", dict(kernel=3, stride=2, pad=1, dilation=2, ceil_mode=True), (3, 10, 11),
         lambda: nn.MaxPool2d(3, 2, 1, 2, ceil_mode=True)),
        ("avgpool", dict(kernel=3, stride=2, pad=1, ceil_mode=True), (3, 10, 11),
         lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True)),
        ("fractional_maxpool", dict(output_ratio=[0.5, 0.7]), (3, 9, 11),
         lambda: nn.FractionalMaxPool2d(2, output_ratio=(0.5, 0.7))),
        ("linear", dict(out=5, weight_norm=True), (12,), lambda: weight_norm(nn.Linear(12, 5))),
        ("batchnorm", {}, (6, 3, 3), lambda: nn.BatchNorm2d(6)),
        ("layernorm", {}, (6, 3, 3), lambda: nn.LayerNorm((6, 3, 3))),
        ("instancenorm", dict(affine=True), (6, 3, 3), lambda: nn.InstanceNorm2d(6, affine=True)),
        ("groupnorm", dict(groups=2), (6, 3, 3), lambda: nn.GroupNorm(2, 6)),
        ("lrn", dict(size=5), (6, 3, 3), lambda: nn.LocalResponseNorm(5)),
        ("prelu", dict(num_parameters=6), (6, 3, 3), lambda: nn.PReLU(6)),
        ("upsample", dict(scale=1.5, mode="bilinear"), (2, 7, 5),
         lambda: nn.Upsample(scale_factor=1.5, mode="bilinear")),
        ("global_avgpool", {}, (6, 3, 4), lambda: nn.AdaptiveAvgPool2d(1)),
    ]


def test_torch_parity():
    torch = pytest.importorskip("torch")
    warnings.simplefilter("ignore")
    for typ, attrs, shape, mk in _torch_cases():
        m = mk()
        y = m(torch.zeros((2,) + shape))
        out, params, _ = run(typ, shape, **attrs)
        assert tuple(y.shape[1:]) == out, (typ, attrs)
        sd = {k: tuple(v.shape) for k, v in m.state_dict().items() if k != "num_batches_tracked"}
        assert list(sd.items()) == list(params.items()), (typ, attrs)


# ------------------------------------------------------------------ window formula

def brute_out(n, k, s, p0, p1, d, ceil):
    """Count window positions by enumeration: full windows in the padded input, plus (ceil
    mode) one partial window if the full ones leave a tail -- or none fits but the window
    overhangs by less than a stride -- and it starts inside the input or the left padding
    (PyTorch's rule)."""
    keff, total, count, i = d * (k - 1) + 1, n + p0 + p1, 0, 0
    while i * s + keff <= total:
        count, i = count + 1, i + 1
    tail = (count - 1) * s + keff < total if count else keff < total + s
    if ceil and tail and count * s < n + p0:
        count += 1
    return count


win = st.tuples(st.integers(1, 30), st.integers(1, 6), st.integers(1, 4), st.integers(0, 3),
                st.integers(0, 3), st.integers(1, 3), st.booleans())


@settings(max_examples=400, deadline=None)
@given(win)
def test_conv_out_matches_enumeration(w):
    n, k, s, p0, p1, d, ceil = w
    if ceil:  # ceil mode is only used by pools, whose padding is at most kernel // 2
        p0, p1 = min(p0, k // 2), min(p1, k // 2)
    if d * (k - 1) + 1 > n + p0 + p1 and not ceil:   # an error (window_out), not a size
        return
    # <= 0 means "no window" (window_out turns it into an error)
    assert max(conv_out(n, k, s, p0, p1, d, ceil), 0) == brute_out(n, k, s, p0, p1, d, ceil)


@settings(max_examples=120, deadline=None)
@given(win)
def test_pool_shape_matches_torch_or_errors(w):
    torch = pytest.importorskip("torch")
    n, k, s, p, _, d, ceil = w
    p = min(p, k // 2)
    attrs = dict(kernel=[k, 2], stride=[s, 1], pad=[p, 0], dilation=[d, 1], ceil_mode=ceil)
    try:
        y = torch.nn.functional.max_pool2d(torch.zeros(1, 1, n, 3), [k, 2], [s, 1], [p, 0],
                                           [d, 1], ceil_mode=ceil)
    except RuntimeError:
        with pytest.raises(Exception):
            run("maxpool", (1, n, 3), **attrs)
        return
    if torch.isinf(y).any():     # a window wholly in the -inf padding: refused by the checker
        with pytest.raises(Exception, match="none is inside the input"):
            run("maxpool", (1, n, 3), **attrs)
        return
    assert run("maxpool", (1, n, 3), **attrs)[0] == tuple(y.shape[1:])


@settings(max_examples=120, deadline=None)
@given(win, st.integers(1, 3))
def test_conv_shape_matches_torch_or_errors(w, groups):
    torch = pytest.importorskip("torch")
    n, k, s, p0, p1, d, _ = w
    attrs = dict(out=groups, kernel=k, stride=s, pad=[p0, p1, p1, p0], dilation=d, groups=groups)
    x = torch.nn.functional.pad(torch.zeros(1, groups, n, n), (p1, p0, p0, p1))
    try:
        y = torch.nn.functional.conv2d(x, torch.zeros(groups, 1, k, k), None, s, 0, d, groups)
    except RuntimeError:
        with pytest.raises(Exception):
            run("conv", (groups, n, n), **attrs)
        return
    assert run("conv", (groups, n, n), **attrs)[0] == tuple(y.shape[1:])


@given(st.integers(1, 40), st.integers(1, 7), st.integers(1, 4), st.integers(1, 3))
def test_same_padding(n, k, s, d):
    out, _, _ = run("conv", (1, n, n), out=1, kernel=k, stride=s, dilation=d, pad="same")
    assert out[1:] == (-(-n // s),) * 2


# ------------------------------------------------------------------ error paths (located)

def one_layer(typ, in_shape, attrs):
    """A one-layer Spec whose layer sits on line 3 (attr k at column 12 + k's index)."""
    lines = ["netspec: 1", "layers:", f"  - {typ}: {attrs}"]
    alocs = {k: Loc("e.yaml", 3, 12 + i) for i, k in enumerate(attrs)}
    layer = LayerSpec("bad", typ, dict(attrs), [INPUT], loc=Loc("e.yaml", 3, 5), attr_locs=alocs)
    return Spec("e", 1, tuple(in_shape), [layer], [], {}, file="e.yaml", source_lines=lines)


ERRORS = [
    ("conv", (3, 3, 3), dict(out=4, kernel=5), r"kernel 5 > padded input 3\+0\+0", "kernel"),
    ("conv", (3, 8, 8), dict(out=4, kernel=3, dilation=4), r"dilated kernel 4\*\(3-1\)\+1 = 9", "kernel"),
    ("conv", (3, 8, 8), dict(out=4, kernel=3, groups=2), r"groups 2 does not divide input channels 3", "groups"),
    ("conv", (4, 8, 8), dict(out=3, kernel=3, groups=2), r"does not divide output channels 3", "groups"),
    ("conv", (3, 8, 8), dict(out=0, kernel=3), r"out must be >= 1", "out"),
    ("conv", (3, 8, 8), dict(out=2, kernel=[3, 0]), r"kernel must be >= 1", "kernel"),
    ("conv", (3, 8, 8), dict(out=2, kernel=3, pad="full"), r"pad must be", "pad"),
    ("conv", (3, 8, 8), dict(out=2, kernel=3, pad=[1, 2, 3]), r"pad must be", "pad"),
    ("conv", (3, 8, 8), dict(out=2, kernel=3, pad=-1), r"pad must be >= 0", "pad"),
    ("conv", (12,), dict(out=2, kernel=3), r"needs a \(C, H, W\) input, got \(12,\)", None),
    ("conv", (3, 8, 8), dict(out=2), r"needs attribute 'kernel'", None),
    ("conv_transpose", (3, 4, 4), dict(out=2, kernel=3, stride=2, output_padding=2), r"output_padding 2 must be smaller", "output_padding"),
    ("conv_transpose", (3, 1, 1), dict(out=2, kernel=1, pad=1), r"output H would be -1", "pad"),
    ("conv_transpose", (3, 4, 4), dict(out=2, kernel=3, pad="same"), r"'same'/'valid' are ambiguous", "pad"),
    ("locally_connected", (3, 2, 2), dict(out=2, kernel=3), r"kernel 3 > padded input 2\+0\+0", "kernel"),
    ("maxpool", (3, 8, 8), dict(kernel=3, pad=2), r"at most half the kernel", "pad"),
    ("maxpool", (3, 1, 8), dict(kernel=2), r"kernel 2 > padded input 1\+0\+0 along H", "kernel"),
    ("maxpool", (1, 1, 1), dict(kernel=2, stride=3, pad=1, dilation=2, ceil_mode=True),
     r"window 0 along H reads positions \[-1, 1\].*none is inside the input", "pad"),
    ("avgpool", (3, 8, 1), dict(kernel=2), r"kernel 2 > padded input 1\+0\+0 along W", "kernel"),
    ("global_avgpool", (8,), {}, r"needs a \(C, H, W\) input", None),
    ("instancenorm", (4, 1, 1), {}, r"each 1x1 plane, which is a single value", None),
    ("groupnorm", (4, 1, 1), dict(groups=4), r"each group, which is a single value", None),
    ("layernorm", (1,), {}, r"the whole input, which is a single value", None),
    ("fractional_maxpool", (3, 8, 8), dict(output_size=7, kernel=3), r"output 7 \+ kernel 3 - 1 > input 8", "output_size"),
    ("fractional_maxpool", (3, 8, 8), {}, r"exactly one of output_size and output_ratio", "output_size"),
    ("fractional_maxpool", (3, 8, 8), dict(output_ratio=1.5), r"output_ratio must be < 1", "output_ratio"),
    ("fractional_maxpool", (3, 1, 8), dict(output_ratio=0.5), r"output H would be 0", "output_ratio"),
    ("maxout", (5, 2, 2), dict(k=2), r"maxout k=2 does not divide 5 channels", "k"),
    ("linear", (8,), dict(out=-3), r"out must be >= 1", "out"),
    ("dropconnect", (8,), dict(out=3, p=1.0), r"p must be < 1", "p"),
    ("reshape", (4, 2, 3), dict(shape=[5, -1]), r"cannot infer -1 .* 24 elements are not a multiple of 5", "shape"),
    ("reshape", (4, 2, 3), dict(shape=[5, 5]), r"holds 25 elements, the input 24", "shape"),
    ("reshape", (4, 2, 3), dict(shape=[-1, -1]), r"more than one -1", "shape"),
    ("reshape", (4, 2, 3), dict(shape=[0, 24]), r"non-positive size", "shape"),
    ("batchnorm", (3, 4, 4), dict(momentum=2.0), r"momentum must be <= 1", "momentum"),
    ("batchnorm", (3, 4, 4), dict(eps=-1e-3), r"eps must be >= 0", "eps"),
    ("instancenorm", (8,), {}, r"needs a \(C, H, W\) input", None),
    ("groupnorm", (6, 2, 2), dict(groups=4), r"groups 4 does not divide 6 channels", "groups"),
    ("lrn", (6,), dict(size=3), r"needs a \(C, H, W\) input", None),
    ("lrn", (6, 2, 2), dict(size=0), r"size must be >= 1", "size"),
    ("leaky_relu", (6,), dict(slope="x"), r"slope must be a number", "slope"),
    ("prelu", (6, 2, 2), dict(num_parameters=4), r"must be 1 or the channel count 6", "num_parameters"),
    ("elu", (6,), dict(alpha=-1), r"alpha must be >= 0", "alpha"),
    ("dropout", (6,), dict(p=-0.1), r"p must be >= 0", "p"),
    ("stochastic_depth", (6,), dict(p=1), r"p must be < 1", "p"),
    ("relu", (6,), dict(inplace=True), r"unknown attribute 'inplace'", "inplace"),
    ("add", (6,), {}, r"add needs at least 2 inputs", None),
    ("add", (6,), dict(project="both"), r"project must be one of", "project"),
    ("concat", (6, 2, 2), dict(axis=1), r"unknown attribute 'axis'", "axis"),
    ("upsample", (3, 4, 4), {}, r"exactly one of scale and size", "scale"),
    ("upsample", (3, 4, 4), dict(scale=0), r"scale must be > 0", "scale"),
    ("upsample", (3, 4, 4), dict(scale=0.1), r"output H would be 0", "scale"),
    ("upsample", (3, 4, 4), dict(scale=2, align_corners=True), r"align_corners only applies", "align_corners"),
    ("upsample", (3, 4, 4), dict(scale=2, mode="cubic"), r"mode must be one of nearest, bilinear", "mode"),
    ("center_crop", (3, 4, 4), {}, r"needs `size`", "size"),
    ("center_crop", (3, 4, 4), dict(size=5), r"crop size 5 > input 4 along H", "size"),
    ("shortcut_pad", (8, 4, 4), dict(out=4), r"shortcut_pad out 4 < input channels 8", "out"),
    ("channel_shuffle", (6, 2, 2), dict(groups=4), r"6 channels do not split into 4 groups", "groups"),
    ("channel_shuffle", (6, 2, 2), dict(groups=0), r"groups must be >= 1", "groups"),
    ("channel_slice", (6, 2, 2), dict(start=4, stop=2), r"selects no channels: start 4 >= stop 2", "start"),
    ("channel_slice", (6, 2, 2), dict(stop=9), r"stop 9 is outside the 6 input channels", "stop"),
    ("channel_slice", (6, 2, 2), dict(chunks=4, index=3), r"chunk 3 of 4 is empty for 6 channels", "index"),
    ("channel_slice", (6, 2, 2), dict(index=1, chunks=2, start=0), r"either start/stop or chunks/index", "chunks"),
    ("channel_slice", (6, 2, 2), dict(chunks=2), r"needs both chunks and index", "index"),
]


@pytest.mark.parametrize("typ,shape,attrs,pattern,attr", ERRORS,
                         ids=[f"{e[0]}-{i}" for i, e in enumerate(ERRORS)])
def test_error_paths_are_located(typ, shape, attrs, pattern, attr):
    with pytest.raises(SpecError, match=pattern) as e:
        check(one_layer(typ, shape, attrs))
    err = e.value
    shp = str(tuple(shape))
    assert err.file == "e.yaml" and err.line == 3
    assert err.col == (12 + list(attrs).index(attr) if attr in attrs else 5)
    assert err.source_line is not None and typ in err.source_line
    if "unknown attribute" not in err.message and "needs attribute" not in err.message:
        assert err.message.startswith(f"{typ} layer 'bad' (input {shp}): ")


def test_multi_input_errors():
    def net(kind, shapes, attrs=None):
        layers, ins = [], []
        for i, s in enumerate(shapes):
            layers.append(LayerSpec(f"r{i}", "reshape", {"shape": list(s)}, [INPUT]))
            ins.append(f"r{i}")
        layers.append(LayerSpec("m", kind, attrs or {}, ins, loc=Loc("m.yaml", 7, 3)))
        return Spec("m", 1, (24,), layers, [], {})
    with pytest.raises(SpecError, match=r"concat inputs differ in spatial size: \(6, 2, 2\), "
                                        r"\(6, 4, 1\)") as e:
        check(net("concat", [(6, 2, 2), (6, 4, 1)]))
    assert e.value.line == 7 and "concat layer 'm' (inputs (6, 2, 2), (6, 4, 1))" in e.value.message
    with pytest.raises(SpecError, match=r"add inputs have different shapes"):
        check(net("add", [(6, 2, 2), (24, 1, 1)], {"project": "none"}))
    with pytest.raises(SpecError, match=r"only image \(C, H, W\) shortcuts"):
        check(net("add", [(6, 2, 2), (24,)]))
    with pytest.raises(SpecError, match=r"multiply: the second input \(6, 2, 2\) does not "
                                        r"broadcast to the first \(6, 4, 1\)") as e:
        check(net("multiply", [(6, 4, 1), (6, 2, 2)]))
    assert "(1, H, W)" in e.value.hint
    with pytest.raises(SpecError, match=r"takes 2 input\(s\), got 3"):
        check(net("multiply", [(6, 2, 2)] * 3))
    with pytest.raises(SpecError, match=r"center_crop takes 1 or 2 inputs, got 3"):
        check(net("center_crop", [(6, 2, 2)] * 3))
    with pytest.raises(SpecError, match=r"takes 1 input\(s\), got 2"):
        check(net("relu", [(6, 2, 2)] * 2))


def test_depthwise_groups_need_no_channel_count():
    """conv groups: depthwise is one group per input channel (out defaults to the input
    channels; a multiple gives a channel multiplier), so a MobileNet / Xception block needs no
    input-channel argument; the same block body fits any width."""
    import netspec
    text = """netspec: 1
name: dw
input: [3, 16, 16]
blocks:
  sep:
    args: {out: int}
    layers:
      - conv: {name: dw, kernel: 3, pad: 1, groups: depthwise, bias: false}
      - conv: {name: pw, out: $out, kernel: 1, bias: false}
layers:
  - conv: {name: stem, out: 12, kernel: 3, pad: 1}
  - sep: {name: a, out: 24}
  - sep: {name: b, out: 40}
  - conv: {name: m, out: 80, kernel: 3, groups: depthwise}
"""
    rep = netspec.check(netspec.load(text))
    assert rep.layer("a.dw").attrs["groups"] == 12 and rep.layer("a.dw").params == 12 * 9
    assert rep.layer("b.dw").attrs["groups"] == 24 and rep.layer("b.dw").output_shape == (24, 16, 16)
    assert rep.layer("m").params == 80 * 9 + 80 and rep.layer("m").attrs["groups"] == 40
    with pytest.raises(netspec.SpecError, match="conv needs `out`"):
        netspec.check(netspec.load(text.replace("groups: depthwise}", "groups: 2}", 1)
                                   .replace("  - conv: {name: m, out: 80, kernel: 3, groups: 2}",
                                            "  - conv: {name: m, kernel: 3}")))
