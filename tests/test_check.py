"""netspec.check: totals against torchvision's published figures, shortcut projection
insertion and naming, report JSON, located errors, freeze, memory estimates."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from netspec.check import check, rf_json
from netspec.errors import Loc, SpecError
from netspec.layers import RF
from netspec.spec import INPUT, LayerSpec, Spec


# ------------------------------------------------------------------ spec builder (no loader)

class Net:
    """Builds a Spec the way the loader would: names, `from:` (name, -k, list), locations.
    ``add(type, name=None, frm=None, **attrs)`` returns the layer's name."""

    def __init__(self, input=(3, 224, 224), name="t"):
        self.input, self.name, self.layers, self.lines = tuple(input), name, [], ["netspec: 1"]
        self.counts: dict[str, int] = {}

    def __call__(self, typ, name=None, frm=None, **attrs):
        if name is None:
            self.counts[typ] = self.counts.get(typ, 0) + 1
            name = f"{typ}{self.counts[typ]}"
        frms = frm if isinstance(frm, list) else [frm]
        ins = []
        for f in frms:
            if f is None:
                f = -1
            if isinstance(f, int):
                f = self.layers[len(self.layers) + f].name if len(self.layers) + f >= 0 else INPUT
            ins.append(f)
        self.lines.append(f"  - {typ}: {{name: {name}, {', '.join(f'{k}: {v}' for k, v in attrs.items())}}}")
        loc = Loc("t.yaml", len(self.lines), 5)
        alocs = {k: Loc("t.yaml", len(self.lines), 20 + i) for i, k in enumerate(attrs)}
        self.layers.append(LayerSpec(name, typ, attrs, ins, loc=loc, attr_locs=alocs))
        return name

    def spec(self, outputs=()):
        return Spec(self.name, 1, self.input, self.layers, list(outputs), {}, file="t.yaml",
                    source_lines=self.lines)


def resnet(blocks, bottleneck):
    n = Net()
    n("conv", "conv1", out=64, kernel=7, stride=2, pad=3, bias=False)
    n("batchnorm", "bn1"); n("relu", "relu"); n("maxpool", "maxpool", kernel=3, stride=2, pad=1)
    for li, (nb, ch) in enumerate(zip(blocks, (64, 128, 256, 512)), 1):
        for b in range(nb):
            p = f"layer{li}.{b}"
            inp = n.layers[-1].name
            s = 2 if (b == 0 and li > 1) else 1
            if bottleneck:
                n("conv", f"{p}.conv1", out=ch, kernel=1, bias=False); n("batchnorm", f"{p}.bn1")
                n("relu", f"{p}.relu1")
                n("conv", f"{p}.conv2", out=ch, kernel=3, stride=s, pad=1, bias=False)
                n("batchnorm", f"{p}.bn2"); n("relu", f"{p}.relu2")
                n("conv", f"{p}.conv3", out=ch * 4, kernel=1, bias=False); n("batchnorm", f"{p}.bn3")
            else:
                n("conv", f"{p}.conv1", out=ch, kernel=3, stride=s, pad=1, bias=False)
                n("batchnorm", f"{p}.bn1"); n("relu", f"{p}.relu1")
                n("conv", f"{p}.conv2", out=ch, kernel=3, pad=1, bias=False); n("batchnorm", f"{p}.bn2")
            n("add", f"{p}.add", frm=[-1, inp]); n("relu", f"{p}.relu")
    n("global_avgpool", "avgpool"); n("flatten", "flatten"); n("linear", "fc", out=1000)
    return n.spec()


def alexnet():
    n = Net()
    for i, (o, k, s, p) in enumerate([(64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1),
                                      (256, 3, 1, 1), (256, 3, 1, 1)]):
        n("conv", out=o, kernel=k, stride=s, pad=p); n("relu")
        if i in (0, 1, 4):
            n("maxpool", kernel=3, stride=2)
    n("flatten"); n("dropout", p=0.5); n("linear", out=4096); n("relu"); n("dropout")
    n("linear", out=4096); n("relu"); n("linear", out=1000)
    return n.spec()


def vgg16():
    n = Net()
    for o in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"]:
        if o == "M":
            n("maxpool", kernel=2, stride=2)
        else:
            n("conv", out=o, kernel=3, pad=1); n("relu")
    n("flatten"); n("linear", out=4096); n("relu"); n("dropout")
    n("linear", out=4096); n("relu"); n("dropout"); n("linear", out=1000)
    return n.spec()


def googlenet():
    n = Net()

    def basic(name, frm=None, **kw):
        n("conv", f"{name}.conv", frm=frm, bias=False, **kw)
        n("batchnorm", f"{name}.bn", eps=0.001)
        return n("relu", f"{name}.relu")

    def inception(p, c1, r3, c3, r5, c5, pp):
        x = n.layers[-1].name
        b1 = basic(f"{p}.branch1", x, out=c1, kernel=1)
        basic(f"{p}.branch2.0", x, out=r3, kernel=1); b2 = basic(f"{p}.branch2.1", out=c3,
                                                                 kernel=3, pad=1)
        # torchvision's googlenet uses 3x3 (not 5x5) in branch3 (a known quirk)
        basic(f"{p}.branch3.0", x, out=r5, kernel=1); b3 = basic(f"{p}.branch3.1", out=c5,
                                                                 kernel=3, pad=1)
        n("maxpool", f"{p}.branch4.0", frm=x, kernel=3, stride=1, pad=1, ceil_mode=True)
        b4 = basic(f"{p}.branch4.1", out=pp, kernel=1)
        n("concat", f"{p}.cat", frm=[b1, b2, b3, b4])

    basic("conv1", out=64, kernel=7, stride=2, pad=3)
    n("maxpool", "maxpool1", kernel=3, stride=2, ceil_mode=True)
    basic("conv2", out=64, kernel=1); basic("conv3", out=192, kernel=3, pad=1)
    n("maxpool", "maxpool2", kernel=3, stride=2, ceil_mode=True)
    inception("inception3a", 64, 96, 128, 16, 32, 32)
    inception("inception3b", 128, 128, 192, 32, 96, 64)
    n("maxpool", "maxpool3", kernel=3, stride=2, ceil_mode=True)
    for nm, cfg in [("4a", (192, 96, 208, 16, 48, 64)), ("4b", (160, 112, 224, 24, 64, 64)),
                    ("4c", (128, 128, 256, 24, 64, 64)), ("4d", (112, 144, 288, 32, 64, 64)),
                    ("4e", (256, 160, 320, 32, 128, 128))]:
        inception("inception" + nm, *cfg)
    n("maxpool", "maxpool4", kernel=2, stride=2, ceil_mode=True)
    inception("inception5a", 256, 160, 320, 32, 128, 128)
    inception("inception5b", 384, 192, 384, 48, 128, 128)
    n("global_avgpool", "avgpool"); n("flatten"); n("dropout", p=0.2); n("linear", "fc", out=1000)
    return n.spec()


# ------------------------------------------------------------------ published figures

@pytest.mark.parametrize("build,params,gmacs", [
    (lambda: resnet((2, 2, 2, 2), False), 11_689_512, 1.814),
    (lambda: resnet((3, 4, 6, 3), True), 25_557_032, 4.089),
    (alexnet, 61_100_840, 0.714),
    (vgg16, 138_357_544, 15.470),
    (googlenet, 6_624_904, 1.498),
])
def test_torchvision_figures(build, params, gmacs):
    r = check(build())
    assert r.total_params == params
    assert round(r.total_macs / 1e9, 3) == pytest.approx(gmacs, abs=0.0015)
    assert r.output_shape == (1000,)


def test_resnet18_projection_names_and_shapes():
    r = check(resnet((2, 2, 2, 2), False))
    names = [l.name for l in r.layers]
    # torchvision state_dict order: conv1, bn1, conv2, bn2, downsample.0, downsample.1
    i = names.index("layer2.0.bn2")
    assert names[i + 1:i + 4] == ["layer2.0.downsample.0", "layer2.0.downsample.1", "layer2.0.add"]
    ds = r.layer("layer2.0.downsample.0")
    assert ds.inserted and ds.attrs["stride"] == (2, 2) and ds.attrs["kernel"] == (1, 1)
    assert not ds.attrs["bias"] and ds.output_shape == (128, 28, 28)
    assert [n for n, _ in ds.param_specs] == ["layer2.0.downsample.0.weight"]
    bn = r.layer("layer2.0.downsample.1")
    assert [n for n, _ in bn.param_specs] == [f"layer2.0.downsample.1.{s}" for s in
                                             ("weight", "bias", "running_mean", "running_var")]
    assert r.layer("layer2.0.add").inputs == ["layer2.0.bn2", "layer2.0.downsample.1"]
    assert "layer1.0.downsample.0" not in names  # shapes already match in layer1
    assert sum(l.inserted for l in r.layers) == 6
    # report.spec carries the insertion and is a fixed point of check
    r2 = check(r.spec)
    assert [l.name for l in r2.layers] == names and not any(l.inserted for l in r2.layers)
    assert r2.total_params == r.total_params and r2.total_macs == r.total_macs


def test_resnet50_stride1_projection_on_channels():
    r = check(resnet((3, 4, 6, 3), True))
    ds = r.layer("layer1.0.downsample.0")
    assert ds.attrs["stride"] == (1, 1) and ds.output_shape == (256, 56, 56)


def _tiny_residual(project, c_out=8, stride=2, name="blk.add"):
    n = Net((4, 9, 9))
    x = n("relu", "stem")
    n("conv", "blk.conv", out=c_out, kernel=3, stride=stride, pad=1)
    n("add", name, frm=[-1, x], project=project)
    return n.spec()


def test_projection_modes():
    r = check(_tiny_residual("pad"))
    sc = r.layer("blk.shortcut")
    assert sc.type == "shortcut_pad" and sc.output_shape == (8, 5, 5) and sc.params == 0
    r = check(_tiny_residual("conv"))
    assert [n for n, _ in r.layer("blk.downsample.0").param_specs] == \
        ["blk.downsample.0.weight", "blk.downsample.0.bias"]
    assert "blk.downsample.1" not in [l.name for l in r.layers]
    r = check(_tiny_residual("conv_nobias"))     # pre-activation ResNet / WRN shortcut
    assert [n for n, _ in r.layer("blk.downsample.0").param_specs] == ["blk.downsample.0.weight"]
    assert "blk.downsample.1" not in [l.name for l in r.layers] and r.layer("blk.downsample.0").params == 4 * 8
    r = check(_tiny_residual("auto", name="add1"))  # top level: scope is the add's name
    assert r.layer("add1.downsample.1").type == "batchnorm"


def test_projection_errors_are_located():
    with pytest.raises(SpecError) as e:
        check(_tiny_residual("none"))
    err = e.value
    assert "add layer 'blk.add'" in err.message and "(8, 5, 5), (4, 9, 9)" in err.message
    assert err.line == 4 and err.file == "t.yaml" and "project" in err.hint
    with pytest.raises(SpecError, match="pad cannot reduce channels"):
        check(_tiny_residual("pad", c_out=2))
    n = Net((4, 9, 9))
    x = n("relu")
    n("conv", out=4, kernel=1, stride=1)
    n("upsample", scale=2)
    n("add", frm=[-1, x])
    with pytest.raises(SpecError, match="no stride s maps spatial 9x9 to 18x18"):
        check(n.spec())


def test_report_json_matches_design():
    r = check(_tiny_residual("auto"))
    j = r.to_json()
    assert list(j) == ["name", "input_shape", "output_shape", "total_params", "trainable_params",
                       "non_trainable_params", "total_macs", "param_bytes", "activation_bytes",
                       "layers"]
    for l in j["layers"]:
        assert list(l) == ["name", "type", "inputs", "output_shape", "params", "macs",
                           "receptive_field"]
        assert list(l["receptive_field"]) == ["size", "jump", "start"]
    json.dumps(j)
    assert j["input_shape"] == [4, 9, 9] and j["output_shape"] == [8, 5, 5]
    conv = j["layers"][1]
    assert conv["receptive_field"] == {"size": 3, "jump": 2, "start": 0.5}
    assert conv["macs"] == 8 * 25 * 4 * 9 and conv["params"] == 8 * 4 * 9 + 8
    assert rf_json(RF((3, 5), (1, 1), (0.5, -0.5))) == {"size": [3, 5], "jump": 1,
                                                       "start": [0.5, -0.5]}


def test_memory_and_freeze():
    n = Net((1, 8, 8))
    n("conv", out=2, kernel=3, freeze=True)          # 2*9+2 = 20 params, out 2x6x6
    n("batchnorm", lr_mult=0.5)                       # 4 params + 4 buffer values
    n("flatten"); n("linear", out=3)                  # 72*3+3 = 219
    r = check(n.spec())
    assert r.total_params == 243 and r.trainable_params == 223 and r.non_trainable_params == 20
    assert r.param_bytes == 4 * (243 + 4)
    assert r.activation_bytes == 2 * 4 * (72 + 72 + 72 + 3)
    assert r.layers[0].freeze and r.layers[1].lr_mult == 0.5
    assert "freeze" not in r.layers[0].attrs
    t = r.format_table()
    assert "Total params: 243" in t and "Trainable params: 223" in t and "(frozen)" in t
    assert "(2, 6, 6)" in t and "Estimated total size" in t


def test_input_shape_override_and_outputs():
    n = Net((1, 28, 28))
    a = n("conv", out=4, kernel=5)
    n("global_avgpool"); n("flatten"); n("linear", out=10)
    r = check(n.spec(outputs=["linear1", a]), input_shape=(1, 32, 32))
    assert r.input_shape == (1, 32, 32) and r.output_shape == (10,)
    assert r.layer(a).output_shape == (4, 28, 28)
    assert r.outputs == ["linear1", "conv1"] and r.warnings == []


def test_spec_level_errors():
    n = Net((1, 8, 8))
    n("relu")
    with pytest.raises(SpecError, match="input shape must be"):
        check(n.spec(), input_shape=(1, 0, 8))
    with pytest.raises(SpecError, match="output 'nope' is not a layer"):
        check(n.spec(outputs=["nope"]))
    with pytest.raises(SpecError, match="no layers"):
        check(Spec("e", 1, (1, 2, 2), [], [], {}))
    bad = Net((1, 8, 8)); bad("relu", "r"); bad("relu", "r")
    with pytest.raises(SpecError, match="duplicate layer name 'r'"):
        check(bad.spec())
    bad = Net((1, 8, 8)); bad("relu", frm="ghost")
    with pytest.raises(SpecError, match="reads 'ghost'"):
        check(bad.spec())
    bad = Net((1, 8, 8)); bad("convv", out=3)
    with pytest.raises(SpecError, match="unknown layer type 'convv'") as e:
        check(bad.spec())
    assert "did you mean 'conv'" in e.value.hint
    bad = Net((1, 8, 8)); bad("conv", out=3, kernal=3)
    with pytest.raises(SpecError, match="unknown attribute 'kernal'") as e:
        check(bad.spec())
    assert "kernel" in e.value.hint and e.value.col == 20 + 1


def test_error_message_format_with_source_line():
    n = Net((3, 3, 3))
    n("conv", "c1", out=6, kernel=5)
    with pytest.raises(SpecError) as e:
        check(n.spec())
    s = str(e.value)
    assert s.startswith("t.yaml:2:21: conv layer 'c1' (input (3, 3, 3)): kernel 5 > padded input "
                        "3+0+0 along H")
    assert "3 + 0 + 0 < 5" in s and "- conv: {name: c1" in s and "hint:" in s


def test_warnings():
    n = Net((4, 8, 8))
    x = n("relu")
    n("conv", out=4, kernel=3, pad=1); n("stochastic_depth", p=0.2)
    n("add", frm=[-1, x])
    n("dropout", frm=x)
    n("stochastic_depth", "sd_bad", frm=-2)
    r = check(n.spec(outputs=["sd_bad"]))
    assert any("'dropout1' (dropout) is not used" in w for w in r.warnings)
    assert any("sd_bad" in w for w in r.warnings)
    assert not any("stochastic_depth1" in w for w in r.warnings)


def test_check_import_is_light():
    code = ("import sys, netspec.check; "
            "bad = [m for m in ('numba', 'compiler', 'torch', 'numpy') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=".")
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ through the loader

BLOCK_SPEC = """netspec: 1
name: t
input: [3, 16, 16]
blocks:
  basic:
    args: {c: int, s: {type: int, default: 1}}
    layers:
      - conv: {name: conv1, out: $c, kernel: 3, stride: $s, pad: 1, bias: false}
      - batchnorm: {name: bn1}
      - relu: {}
      - conv: {name: conv2, out: $c, kernel: 3, pad: 1, bias: false}
      - batchnorm: {name: bn2}
      - add: {from: [-1, input]}
      - relu: {}
layers:
  - conv: {name: conv1, out: 8, kernel: 3, pad: 1, bias: false}
  - basic: {name: layer1, c: 8, repeat: 2}
  - basic: {name: layer2, c: 16, repeat: 2, first: {s: 2}}
  - global_avgpool: {}
  - flatten: {}
  - linear: {name: fc, out: 10}
"""


def test_loader_block_spec_projection():
    load = pytest.importorskip("netspec.loader").load
    r = check(load(BLOCK_SPEC))
    ds = r.layer("layer2.0.downsample.0")
    assert ds.inserted and ds.attrs["stride"] == (2, 2) and ds.output_shape == (16, 8, 8)
    assert ds.loc.line == 13  # located at the block's add
    assert r.output_shape == (10,) and r.layer("layer2.0.add1").inputs[1] == "layer2.0.downsample.1"
    assert check(r.spec).total_params == r.total_params


def test_loader_error_points_at_block_argument():
    load = pytest.importorskip("netspec.loader").load
    text = BLOCK_SPEC.replace("- global_avgpool: {}", "- conv: {out: 4, kernel: 9}")
    with pytest.raises(SpecError) as e:
        check(load(text))
    err = e.value
    assert (err.line, err.col) == (19, 28) and "kernel 9 > padded input 8+0+0" in err.message
    assert err.source_line.strip() == "- conv: {out: 4, kernel: 9}"
    text = BLOCK_SPEC.replace("first: {s: 2}", "first: {s: 3}").replace("[3, 16, 16]", "[3, 2, 2]")
    r = check(load(text))  # 2x2 -> 1x1: strides 2 and 3 both fit; the main branch's 3 wins
    assert r.layer("layer2.0.downsample.0").attrs["stride"] == (3, 3)
    text = BLOCK_SPEC.replace("- add: {from: [-1, input]}", "- add: {from: [-1, input], project: none}")
    with pytest.raises(SpecError, match="add inputs have different shapes") as e:
        check(load(text))
    assert e.value.line == 13 and "expanded from the block used at" in e.value.hint


ZOO = {"resnet18": (11_689_512, 1.814), "resnet50": (25_557_032, 4.089),
       "alexnet": (61_100_840, 0.714), "vgg16": (138_357_544, 15.470),
       "googlenet": (6_624_904, 1.498)}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_specs_match_published_figures(name):
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "specs", f"{name}.yaml")
    if not os.path.exists(path):
        pytest.skip(f"{name}.yaml not written yet")
    load = pytest.importorskip("netspec.loader").load
    r = check(load(path))
    params, gmacs = ZOO[name]
    assert r.total_params == params and round(r.total_macs / 1e9, 3) == gmacs


def test_receptive_field_through_a_gate_keeps_the_feature_grid():
    """multiply (squeeze-and-excitation): the output is on input 0's grid (its jump and
    start); the global-pool gate only widens the size to the whole image."""
    from netspec import load
    rep = check(load("""netspec: 1
name: se
input: [8, 32, 32]
layers:
  - conv: {name: x, out: 8, kernel: 3, pad: 1}
  - global_avgpool: {}
  - sigmoid: {}
  - multiply: {name: gated, from: [x, -1]}
  - conv: {name: after, out: 8, kernel: 3, stride: 2, pad: 1}
"""))
    g, a = rep.layer("gated").receptive_field, rep.layer("after").receptive_field
    assert g.jump == (1, 1) and g.start == rep.layer("x").receptive_field.start
    assert g.size[0] >= 32 and a.jump == (2, 2) and a.size == (g.size[0] + 2, g.size[1] + 2)


def test_loss_weights_need_the_first_outputs_size():
    """Every weighted head is compared with the first output's targets: a head of another
    size is a located error at check time."""
    import netspec
    text = ("netspec: 1\nname: t\ninput: [1, 6, 6]\nlayers:\n  - conv: {name: a, out: 2, kernel: 3}\n"
            "  - flatten: {name: f}\n  - linear: {name: aux, out: 3}\n  - linear: {name: main, out: 5, from: f}\n"
            "outputs: [main, aux]\ntrain:\n  loss_weights: {aux: 0.3}\n")
    with pytest.raises(SpecError, match=r"weights output 'aux' of shape \(3,\).*shaped \(5,\)") as e:
        netspec.check(netspec.load(text))
    assert (e.value.line, e.value.col) == (11, 18)          # the `aux` key, not `input:`
    netspec.check(netspec.load(text.replace("out: 3", "out: 5")))


def test_warning_for_a_squashing_layer_before_a_loss_that_squashes():
    """softmax before softmax_cross_entropy, sigmoid before bce_with_logits: a warning
    naming the layer (the net still checks); sigmoid before mse is fine."""
    from netspec import load
    base = ("netspec: 1\nname: s\ninput: [4]\nlayers:\n  - linear: {name: fc, out: 3}\n"
            "  - %s: {name: last}\n%s")
    w = check(load(base % ("softmax", ""))).warnings
    assert len(w) == 1 and "'last' (softmax) feeds the softmax_cross_entropy loss" in w[0] and ":6:" in w[0]
    w = check(load(base % ("sigmoid", "train:\n  loss: {bce_with_logits: {}}\n"))).warnings
    assert len(w) == 1 and "(sigmoid) feeds the bce_with_logits loss" in w[0]
    assert check(load(base % ("sigmoid", "train:\n  loss: {mse: {}}\n"))).warnings == []
    assert check(load(base % ("relu", ""))).warnings == []


def test_warning_for_a_layer_that_only_gives_a_reference_size():
    """A layer read only as the size reference of center_crop / upsample is not computed by
    the compiled net (torch's module would run it: a BatchNorm's running statistics differ):
    check says so; a reference that is also used for its values gets no warning."""
    from netspec import load
    text = ("netspec: 1\nname: r\ninput: [2, 4, 4]\nlayers:\n- batchnorm: {name: bn}\n"
            "- center_crop: {name: crop, from: [input, bn]}\n- conv: {name: c, out: 2, kernel: 1}\n")
    w = check(load(text)).warnings
    assert len(w) == 1 and "'bn' (batchnorm) only gives its size" in w[0]
    assert check(load(text.replace("from: [input, bn]", "from: [bn, input]"))).warnings == []
