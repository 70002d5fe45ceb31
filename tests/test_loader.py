"""netspec.load: the spec language (docs/spec-language.md) against a tiny fake catalogue,
plus a few specs against the real one. Errors are checked for location and hint."""
from __future__ import annotations

import pytest

import netspec.layers  # noqa: F401  (register the real catalogue before swapping it out)
from netspec import SpecError, load
from netspec.layers.base import REGISTRY, REQUIRED, Attr, LayerDef


class FConv(LayerDef):
    type, aliases = "conv", ("conv2d",)
    attrs = {"out": Attr("int", REQUIRED, "output channels", min=1),
             "kernel": Attr("int2", REQUIRED, "kernel size", min=1),
             "stride": Attr("int2", 1, min=1), "pad": Attr("pad", 0),
             "bias": Attr("bool", True)}


class FRelu(LayerDef):
    type = "relu"


class FBn(LayerDef):
    type = "batchnorm"
    attrs = {"eps": Attr("float", 1e-5, min=0.0)}


class FPool(LayerDef):
    type = "maxpool"
    attrs = {"kernel": Attr("int2", REQUIRED, min=1), "stride": Attr("int2", None, min=1)}


class FAdd(LayerDef):
    type, arity = "add", None
    attrs = {"project": Attr("str", "auto", choices=("auto", "conv_bn", "conv", "pad", "none"))}


class FLinear(LayerDef):
    type, aliases = "linear", ("fc",)
    attrs = {"out": Attr("int", REQUIRED, min=1)}


class FReshape(LayerDef):
    type = "reshape"
    attrs = {"shape": Attr("ints", REQUIRED), "scale": Attr("float_or_ints", None)}


FAKES = [FConv, FRelu, FBn, FPool, FAdd, FLinear, FReshape]


@pytest.fixture
def fake():
    saved = dict(REGISTRY)
    REGISTRY.clear()
    for cls in FAKES:
        for k in (cls.type, *cls.aliases):
            REGISTRY[k] = cls()
    yield REGISTRY
    REGISTRY.clear()
    REGISTRY.update(saved)


HEAD = "netspec: 1\nname: t\ninput: [3, 8, 8]\n"


def spec(body: str, head: str = HEAD):
    return load(head + body, file="t.yaml")


def err(body: str, head: str = HEAD) -> SpecError:
    with pytest.raises(SpecError) as e:
        spec(body, head)
    return e.value


def names(s):
    return [l.name for l in s.layers]


def test_minimal_names_inputs_defaults(fake):
    s = spec("layers:\n  - conv: {out: 4, kernel: 3}\n  - relu:\n  - conv2d: {name: c, out: 2, "
             "kernel: [1, 3]}\n  - relu: {}\n")
    assert names(s) == ["conv1", "relu1", "c", "relu2"]
    assert [l.inputs for l in s.layers] == [["input"], ["conv1"], ["relu1"], ["c"]]
    assert s.layers[0].attrs == {"out": 4, "kernel": 3, "stride": 1, "pad": 0, "bias": True,
                                 "freeze": False, "lr_mult": 1.0}
    assert s.layers[2].type == "conv" and s.layers[2].attrs["kernel"] == (1, 3)
    assert s.outputs == ["relu2"] and s.input_shape == (3, 8, 8) and s.version == 1
    assert s.layers[2].loc.line == 7 and s.layers[2].loc.col == 5
    assert s.layers[2].attr_locs["kernel"].line == 7
    assert s.train["optimizer"] == {"sgd": {"lr": 0.01, "momentum": 0.0, "nesterov": False}}


def test_missing_version():
    e = err("layers: [{relu: {}}]\n", head="name: t\ninput: [3]\n")
    assert (e.line, e.col) == (1, 1) and "add `netspec: 1` as the first line" in e.hint


@pytest.mark.parametrize("v,msg", [("2", "unsupported spec language version 2"),
                                   ("'1'", "must be the integer 1"),
                                   ("1.0", "must be the integer 1")])
def test_bad_version(v, msg):
    e = err("", head=f"netspec: {v}\nname: t\ninput: [3]\nlayers: [{{relu: {{}}}}]\n")
    assert msg in e.message and (e.line, e.col) == (1, 10)


def test_unknown_top_key_and_missing_layers(fake):
    e = err("layer:\n  - relu:\n")
    assert "unknown top-level key 'layer'" in e.message and "'layers'" in e.hint
    assert (e.line, e.col) == (4, 1)
    e = err("", head="netspec: 1\nname: t\ninput: [3, 8, 8]\n")
    assert "missing required top-level key 'layers'" in e.message


def test_unknown_attr_did_you_mean(fake):
    e = err("layers:\n  - conv: {out: 4, kernal: 3}\n")
    assert "unknown attribute 'kernal' for conv layer" in e.message
    assert e.hint == "did you mean 'kernel'?" and (e.file, e.line, e.col) == ("t.yaml", 5, 20)
    text = str(e)
    assert text.startswith("t.yaml:5:20: ") and "kernal: 3}" in text and "^" in text


@pytest.mark.parametrize("val,expect,hint", [
    ("'3'", "must be an integer or a [height, width] pair of integers, got a string '3'",
     "without quotes"),
    ("[3, 3, 3]", "got a list of 3", "give 2"),
    ("0", "must be >= 1, got 0", None),
    ("2.0", "must be an integer, got 2.0", "write 2"),
    ("123456789012345678901234567890", "too large", None),
    ("{h: 3}", "got a mapping", "[3, 3]"),
])
def test_attr_type_errors(fake, val, expect, hint):
    e = err(f"layers:\n  - conv: {{out: 4, kernel: {val}}}\n")
    assert expect in e.message and "conv layer 'conv1'" in e.message
    assert (e.line, e.col) == (5, 28)
    if hint:
        assert hint in e.hint


def test_other_attr_types(fake):
    s = spec("layers:\n  - conv: {out: 4, kernel: 3, pad: same, bias: false}\n"
             "  - conv: {out: 4, kernel: 3, pad: [1, 1, 0, 0]}\n"
             "  - reshape: {shape: [-1, 4], scale: 2}\n  - maxpool: {kernel: 2, stride: null}\n")
    a = [l.attrs for l in s.layers]
    assert a[0]["pad"] == "same" and a[0]["bias"] is False and a[1]["pad"] == (1, 1, 0, 0)
    assert a[2]["shape"] == (-1, 4) and a[2]["scale"] == 2.0 and a[3]["stride"] is None
    assert "did you mean 'same'" in err("layers:\n  - conv: {out: 4, kernel: 3, pad: sme}\n").hint
    e = err("layers:\n  - add: {project: conv-bn}\n")
    assert "did you mean 'conv_bn'" in e.hint and "one of 'auto'" in e.message
    e = err("layers:\n  - conv: {out: 4, kernel: 3, bias: 'no'}\n")
    assert "true or false" in e.message and e.col == 37
    e = err("layers:\n  - conv: {out: 4, kernel: 3, stride: null}\n")
    assert "got null" in e.message


def test_required_and_unknown_type(fake):
    e = err("layers:\n  - conv: {kernel: 3}\n")
    assert "missing required attribute 'out'" in e.message and "output channels" in e.hint
    assert (e.line, e.col) == (5, 5)
    e = err("blocks:\n  convblock: {layers: [{relu: {}}]}\nlayers:\n  - convv: {}\n")
    assert "unknown layer type 'convv'" in e.message and "'conv'" in e.hint
    e = err("blocks:\n  convblock: {layers: [{relu: {}}]}\nlayers:\n  - convblok: {}\n")
    assert "'convblock'" in e.hint


@pytest.mark.parametrize("layer,want", [
    ("max_unpool: {kernel: 2}", "no max-unpooling"), ("PixelShuffle: {r: 2}", "no pixel shuffle"),
    ("separable_conv: {out: 4}", "groups: depthwise"),
    ("conv: {out: 3, kernel: 3, depthwise: true}", "groups: depthwise"),
    ("lstm: {}", "no recurrent"), ("chunk: {chunks: 2}", "channel_slice"),
    ("transpose: {}", "no general tensor transpose"), ("ChannelShuffle: {groups: 2}", "channel_shuffle")])
def test_other_frameworks_names_get_the_netspec_equivalent(fake, layer, want):
    """A layer type or attribute from another framework gets the equivalent, not a near-miss
    spelling (difflib offered 'max_pool' for 'max_unpool')."""
    e = err(f"layers:\n  - {layer}\n")
    assert want in e.hint and "did you mean" not in e.hint and (e.line, e.col)[0] == 5


def test_entry_shape_errors(fake):
    e = err("layers:\n  - conv:\n    out: 4\n")
    assert "found 'out' after 'conv'" in e.message and "indent the attributes" in e.hint
    e = err("layers:\n  - relu\n")
    assert "`- relu: {}`" in e.hint
    e = err("layers:\n  - conv: 3\n")
    assert "attributes of 'conv' must be a mapping" in e.message
    e = err("layers: []\n")
    assert "is empty" in e.message


def test_sequential_naming(fake):
    s = spec("layers:\n  - sequential:\n      name: features\n      layers:\n"
             "        - conv: {out: 4, kernel: 3}\n        - relu:\n"
             "        - maxpool: {name: pool, kernel: 2}\n"
             "        - sequential: {layers: [{relu: {}}, {relu: {}}]}\n"
             "  - sequential: {layers: [{linear: {out: 2}}]}\n  - relu: {from: features}\n")
    assert names(s) == ["features.0", "features.1", "features.pool", "features.3.0",
                        "features.3.1", "sequential2.0", "relu1"]
    assert s.layers[-1].inputs == ["features.3.1"]
    assert s.layers[-2].inputs == ["features.3.1"]


BLOCK = """blocks:
  basic:
    args: {channels: int, stride: {type: int, default: 1}}
    layers:
      - conv: {name: conv1, out: $channels, kernel: 3, stride: $stride, pad: 1}
      - relu: {}
      - conv: {name: conv2, out: $channels, kernel: 3}
      - add: {from: [-1, input]}
"""


def test_block_expansion(fake):
    s = spec(BLOCK + "layers:\n  - conv: {name: stem, out: 4, kernel: 3}\n"
             "  - basic: {name: layer1, channels: 8, repeat: 2, first: {stride: 2}}\n"
             "  - basic: {channels: 16}\n  - relu: {from: layer1.0}\n")
    n = names(s)
    assert n[:5] == ["stem", "layer1.0.conv1", "layer1.0.relu1", "layer1.0.conv2",
                     "layer1.0.add1"]
    assert n[5] == "layer1.1.conv1" and n[9] == "basic2.conv1" and n[-1] == "relu1"
    L = {l.name: l for l in s.layers}
    assert L["layer1.0.conv1"].attrs["stride"] == 2 and L["layer1.1.conv1"].attrs["stride"] == 1
    assert L["basic2.conv1"].attrs["out"] == 16
    assert L["layer1.0.add1"].inputs == ["layer1.0.conv2", "stem"]
    assert L["layer1.1.add1"].inputs == ["layer1.1.conv2", "layer1.0.add1"]
    assert L["basic2.conv1"].inputs == ["layer1.1.add1"]
    assert L["relu1"].inputs == ["layer1.0.add1"]
    assert L["layer1.1.conv1"].trace and L["layer1.1.conv1"].trace[0].line == 14
    # the substituted value keeps the call site's location
    assert L["basic2.conv1"].attr_locs["out"].line == 15


def test_block_arg_errors(fake):
    e = err(BLOCK + "layers:\n  - basic: {channels: eight}\n")
    assert "argument 'channels' of block 'basic' must be an integer" in e.message
    assert (e.line, e.col) == (13, 23)
    e = err(BLOCK + "layers:\n  - basic: {channel: 8}\n")
    assert "unknown attribute 'channel'" in e.message and "'channels'" in e.hint
    e = err(BLOCK + "layers:\n  - basic: {stride: 2}\n")
    assert "needs argument 'channels'" in e.message
    e = err(BLOCK + "layers:\n  - basic: {channels: 8, first: {strid: 2}}\n")
    assert "unknown argument 'strid'" in e.message and "'stride'" in e.hint
    e = err(BLOCK + "layers:\n  - basic: {channels: 0}\n")   # fails inside the block body
    assert "must be >= 1" in e.message and (e.line, e.col) == (13, 23)
    assert "in block used at t.yaml:13:5" in e.hint
    e = err(BLOCK.replace("$stride", "$strid") + "layers:\n  - basic: {channels: 8}\n")
    assert "no argument 'strid'" in e.message and e.line == 8
    e = err("layers:\n  - conv: {out: $c, kernel: 3}\n")
    assert "outside a block" in e.message
    e = err(BLOCK.replace("$stride", "'$stride*'") + "layers:\n  - basic: {channels: 8}\n")
    assert "invalid argument expression '$stride*'" in e.message
    e = err("blocks:\n  b: {args: {x: integer}, layers: [{relu: {}}]}\nlayers: [{b: {}}]\n")
    assert "unknown type 'integer'" in e.message and "'int'" in e.hint
    e = err("blocks:\n  conv: {layers: [{relu: {}}]}\nlayers: [{relu: {}}]\n")
    assert "already a layer type" in e.message
    # unused blocks are checked too (types and $arg references)
    e = err("blocks:\n  b: {layers: [{sequential: {layers: [{rellu: {}}]}}]}\n"
            "layers: [{relu: {}}]\n")
    assert "unknown layer type 'rellu' in block 'b'" in e.message and "'relu'" in e.hint
    e = err("blocks:\n  b: {args: {width: int}, layers: [{linear: {out: $widht}}]}\n"
            "layers: [{relu: {}}]\n")
    assert "no argument 'widht'" in e.message and "'width'" in e.hint and e.line == 5


def test_nested_and_recursive_blocks(fake):
    s = spec("blocks:\n  inner: {layers: [{relu: {name: act}}]}\n"
             "  outer: {layers: [{inner: {name: a}}, {inner: {repeat: 2}}]}\n"
             "layers:\n  - outer: {name: o}\n")
    assert names(s) == ["o.a.act", "o.inner2.0.act", "o.inner2.1.act"]
    e = err("blocks:\n  a: {layers: [{b: {}}]}\n  b: {layers: [{a: {}}]}\nlayers: [{a: {}}]\n")
    assert "uses itself (a -> b -> a)" in e.message


def test_from_resolution(fake):
    s = spec("blocks:\n  br:\n    layers:\n      - conv: {name: c, out: 2, kernel: 1}\n"
             "      - relu: {name: r, from: input}\n      - add: {from: [c, r, stem, -3]}\n"
             "layers:\n  - conv: {name: stem, out: 2, kernel: 1}\n  - relu: {name: c}\n"
             "  - br: {name: b, from: stem}\n  - add: {from: [c, b, b.c, -2, -4, input]}\n")
    L = {l.name: l for l in s.layers}
    assert L["b.r"].inputs == ["stem"]
    assert L["b.add1"].inputs == ["b.c", "b.r", "stem", "stem"]
    assert L["add1"].inputs == ["c", "b.add1", "b.c", "c", "input", "input"]


@pytest.mark.parametrize("frm,msg,hint", [
    ("0", "relative indices are negative", "-1 is the previous"),
    ("-5", "reaches before the start of the net (only 2 earlier entries)", None),
    ("relu9", "unknown layer 'relu9'", "'relu1'"),
    ("later", "unknown layer 'later'", "only name earlier layers"),
    ("conv9", "unknown layer 'conv9'", "(-1: previous); the earlier names here: relu1, relu2"),
    ("[]", "empty list", None),
    ("true", "layer names or negative indices, got a boolean", None),
])
def test_from_errors(fake, frm, msg, hint):
    e = err(f"layers:\n  - relu:\n  - relu:\n  - add: {{from: {frm}}}\n"
            "  - relu: {name: later}\n")
    assert msg in e.message and e.line == 7
    if hint:
        assert hint in e.hint


def test_arity_duplicates_and_names(fake):
    e = err("layers:\n  - relu:\n  - relu: {from: [-1, -2]}\n")
    assert "takes 1 input, but `from` gives 2" in e.message
    e = err("layers:\n  - relu: {name: a}\n  - relu: {name: a}\n")
    assert "duplicate layer name 'a'" in e.message and "t.yaml:5:5" in e.hint
    assert (e.line, e.col) == (6, 18)
    e = err("layers:\n  - relu:\n  - relu: {name: relu1}\n")
    assert "duplicate layer name 'relu1'" in e.message
    # a second block instance / sequential with a taken name: reported at that instance
    e = err("blocks:\n  b: {layers: [{relu: {name: r}}]}\nlayers:\n  - b: {name: b1}\n"
            "  - b: {name: b1}\n")
    assert e.message == "duplicate name 'b1'" and (e.line, e.col) == (8, 15)
    assert "t.yaml:7:5" in e.hint and "block instance" in e.hint
    e = err("layers:\n  - sequential: {name: s, layers: [{relu: {}}]}\n"
            "  - sequential: {name: s, layers: [{relu: {}}]}\n")
    assert e.message == "duplicate name 's'" and e.line == 6 and "sequential" in e.hint
    for bad in ("conv-1", "a..b", "1a", "a.01", "x y", "'a.'", "input"):
        e = err(f"layers:\n  - relu: {{name: {bad}}}\n")
        assert "name" in e.message, bad
    assert names(spec("layers:\n  - relu: {name: features.0}\n  - relu: {name: _x.y_2}\n")) \
        == ["features.0", "_x.y_2"]


def test_outputs_freeze_init(fake):
    s = spec(BLOCK + "layers:\n  - basic: {name: l1, channels: 4, freeze: true, lr_mult: 0.5}\n"
             "  - conv: {out: 2, kernel: 1, lr_mult: 2}\noutputs: [l1, conv1]\n"
             "init: {checkpoint: a.npz, skip: [conv1, l1]}\n")
    assert s.outputs == ["l1.add1", "conv1"]
    assert all(l.attrs["freeze"] and l.attrs["lr_mult"] == 0.5 for l in s.layers[:-1])
    assert s.layers[-1].attrs["freeze"] is False and s.layers[-1].attrs["lr_mult"] == 2.0
    assert s.init == {"checkpoint": "a.npz", "skip": ["conv1", "l1"]}
    e = err("layers:\n  - relu:\noutputs: [relu2]\n")
    assert "unknown layer 'relu2'" in e.message and "'relu1'" in e.hint
    e = err("layers:\n  - relu:\ninit: {skip: [relu1]}\n")
    assert "needs `checkpoint" in e.message


def test_input_and_name(fake):
    assert "must be a list [C, H, W]" in err("layers: [{relu: }]\n",
                                             "netspec: 1\nname: t\ninput: [3, 8]\n").message
    assert ">= 1" in err("layers: [{relu: }]\n", "netspec: 1\nname: t\ninput: [0, 8, 8]\n").message
    assert "invalid spec name" in err("layers: [{relu: }]\n",
                                      "netspec: 1\nname: 'a b'\ninput: [3]\n").message
    assert spec("layers: [{relu: }]\n", "netspec: 1\nname: res-net_1\ninput: [7]\n").name \
        == "res-net_1"


def test_load_paths(fake, tmp_path):
    p = tmp_path / "n.yaml"
    p.write_text(HEAD + "layers: [{relu: }]\n")
    assert load(p).file == str(p) and load(str(p)).layers[0].name == "relu1"
    with pytest.raises(FileNotFoundError):
        load(str(tmp_path / "missing.yaml"))
    p.write_text(HEAD + "layers: [{relu: {nme: x}}]\n")
    with pytest.raises(SpecError) as e:
        load(p)
    assert e.value.file == str(p) and e.value.line == 4


def test_train_section(fake):
    s = spec("layers: [{relu: }]\ntrain:\n  optimizer: {sgd: {lr: 0.1, momentum: 0.9, "
             "nesterov: true, weight_decay: 5.0e-4}}\n  augment: [{flip: horizontal}, "
             "{random_crop: {pad: 2}}]\n  loss: mse\n  schedule: {step: {gamma: 0.5}}\n"
             "  early_stopping: {}\n")
    t = s.train
    assert t["optimizer"] == {"sgd": {"lr": 0.1, "momentum": 0.9, "nesterov": True}}
    assert t["regularization"]["weight_decay"] == 5e-4
    assert t["augment"] == [{"flip": {"direction": "horizontal", "p": 0.5}},
                            {"random_crop": {"pad": 2, "fill": 0.0, "size": None}}]
    assert t["loss"] == {"mse": {}} and t["schedule"] == {"step": {"step_size": 10,
                                                                   "gamma": 0.5}}
    assert t["early_stopping"] == {"metric": "val_accuracy", "patience": 10,
                                   "restore_best": True}
    assert t["ema"] is None and t["epochs"] == 30 and t["batch_size"] == 64
    assert t["preprocess"] == [{"standardize": "per_channel"}]


@pytest.mark.parametrize("body,msg,hint", [
    ("optimizer: {sdg: {}}", "unknown option 'sdg' for `train.optimizer`", "'sgd'"),
    ("optimizer: {sgd: {lr: fast}}", "`train.optimizer.sgd.lr` must be a number", None),
    ("optimizer: {adam: {beta: [0.9, 0.99]}}", "unknown key 'beta'", "'betas'"),
    ("optimizer: {adam: {betas: [0.9]}}", "must have 2 values", None),
    ("optimizer: {sgd: {batch_size: 3}}", "unknown key 'batch_size'", "belongs under `train`"),
    ("optimizer: {sgd: {}, adam: {}}", "one-key mapping", "options: sgd"),
    ("epocs: 3", "unknown key 'epocs' in `train`", "'epochs'"),
    ("batch_size: 0", "must be >= 1", None),
    ("data: {source: mnist}", "needs a `path`", None),
    ("data: {val_split: 0.5, test_split: 0.5}", "below 1", None),
    ("optimizer: {sgd: {nesterov: true}}", "needs momentum > 0", None),
    ("snapshot_ensemble: true", "needs the sgdr schedule", None),
    ("schedule: {plateau: {factor: 1.0}}", "plateau factor must be in (0, 1)", "factor: 0.1"),
    ("data: {val_split: 0}\n  early_stopping: {}", "needs a validation split", None),
    ("preprocess: [{standardize: per_chanel}]", "must be one of", "'per_channel'"),
    ("augment: {flip: horizontal}", "must be a list", None),
])
def test_train_errors(fake, body, msg, hint):
    e = err(f"layers: [{{relu: }}]\ntrain:\n  {body}\n")
    assert msg in e.message and e.line >= 6
    if hint:
        assert hint in e.hint


def test_real_catalogue_resnet_names():
    s = load(HEAD.replace("[3, 8, 8]", "[3, 32, 32]") + BLOCK.replace("add:", "add:") +
             "layers:\n  - conv: {name: conv1, out: 8, kernel: 3, pad: 1, bias: false}\n"
             "  - batchnorm: {name: bn1}\n  - basic: {name: layer1, channels: 8, repeat: 2}\n"
             "  - basic: {name: layer2, channels: 16, repeat: 2, first: {stride: 2}}\n"
             "  - avgpool: {kernel: 16}\n  - flatten:\n  - fc: {name: fc, out: 10}\n")
    assert "layer2.1.conv2" in names(s) and s.layers[-1].type == "linear"
    assert s.layers[-1].name == "fc" and s.outputs == ["fc"]


ARITH = """blocks:
  dl:
    args: {growth: int, k: {type: int, default: 3}, mode: {type: str, default: nearest}}
    layers:
      - relu: {name: r}
      - conv: {name: c1, out: $growth * 4, kernel: $k, pad: $k // 2}
      - conv: {name: c2, out: ($growth + 8) // 2, kernel: 1, pad: -(-$k // 4) - 1}
layers:
  - dl: {name: d, growth: 12}
"""


def test_repeat_name_template_gives_torchvision_densenet_names():
    """`name: denselayer{i}` with repeat: instances denselayer1..N (1-based, no separator);
    the group name without {i} stands for the last instance."""
    body = ("blocks:\n  dl:\n    layers:\n      - relu: {name: r}\n"
            "layers:\n  - dl: {name: \"denselayer{i}\", repeat: 3}\n  - relu: {from: denselayer}\n")
    s = spec(body)
    assert names(s)[:3] == ["denselayer1.r", "denselayer2.r", "denselayer3.r"]
    assert s.layers[3].inputs == ["denselayer3.r"]
    e = err(body.replace(", repeat: 3", ""))
    assert "`{i}` in a name numbers the repetitions" in e.message and e.line == 9
    for bad in ("{i}", "a{i}{i}", "a.{i}"):
        e = err(body.replace("denselayer{i}", bad))
        assert "invalid name template" in e.message or "invalid layer name" in e.message, bad


def test_outputs_cannot_name_the_net_input(fake):
    e = err("layers:\n  - relu: {name: r}\noutputs: [r, input]\n")
    assert e.message == "the net input cannot be an output" and (e.line, e.col) == (6, 14)


def test_block_argument_arithmetic():
    s = spec(ARITH)
    c1, c2 = s.layers[1], s.layers[2]
    assert (c1.attrs["out"], c1.attrs["kernel"], c1.attrs["pad"]) == (48, 3, 1)
    assert (c2.attrs["out"], c2.attrs["pad"]) == (10, 0)
    for bad, msg in (("$growth *", "expected a number"), ("$growth ** 2", "expected a number"),
                     ("$growth // 0", "division by zero"), ("$mode * 2", "'nearest', not a number"),
                     ("__import__('os') $growth", "unexpected"), ("$growth 4", "unexpected '4'")):
        e = err(ARITH.replace("$growth * 4", bad))
        assert "invalid argument expression" in e.message and msg in e.message, (bad, e.message)
        assert (e.line, e.col) == (9, 31) and "$growth * 4" in e.hint
    e = err(ARITH.replace("$growth * 4", "$grwth * 4"))        # checked at the block definition
    assert "has no argument 'grwth'" in e.message and "growth" in e.hint
    e = err("layers:\n  - conv: {out: $c * 2, kernel: 1}\n")
    assert "outside a block" in e.message


def test_layer_limit_is_exact(monkeypatch):
    """MAX_LAYERS layers load; one more is refused at the entry that would add it."""
    import netspec.loader as L
    monkeypatch.setattr(L, "MAX_LAYERS", 4)
    body = "netspec: 1\nname: n\ninput: [1, 4, 4]\nlayers:\n" + "  - relu: {}\n" * 4
    assert len(load(body).layers) == 4
    with pytest.raises(SpecError) as e:
        load(body + "  - relu: {}\n")
    assert "more than 4 layers" in e.value.message and e.value.line == 9


def test_loss_weights(fake):
    """``train.loss_weights`` keys resolve like ``outputs`` entries and must name an output
    after the first; weights are non-negative numbers."""
    body = ("layers:\n  - conv: {name: a, out: 4, kernel: 3}\n  - linear: {name: aux, out: 5}\n"
            "  - linear: {name: main, out: 5, from: a}\n")
    s = spec(body + "outputs: [main, aux]\ntrain:\n  loss_weights: {aux: 0.3}\n")
    assert s.train["loss_weights"] == {"aux": 0.3}
    assert spec(body + "outputs: [main, aux]\n").train["loss_weights"] == {}
    e = err(body + "outputs: [main, aux]\ntrain:\n  loss_weights: {a: 0.3}\n")
    assert "not one of the spec's `outputs`" in e.message and "list the extra head" in e.hint
    e = err(body + "outputs: [main, aux]\ntrain:\n  loss_weights: {main: 0.5}\n")
    assert "names the first output 'main'" in e.message
    e = err(body + "outputs: [main, aux]\ntrain:\n  loss_weights: {aux: -1}\n")
    assert "loss_weights.aux" in e.message
    e = err(body + "outputs: [main, aux]\ntrain:\n  loss_weights: [aux]\n")
    assert "must be a mapping {output: weight}" in e.message
