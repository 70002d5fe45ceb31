"""Block arguments beyond numbers: list-valued ``ints`` / ``floats`` arguments and a layer
type chosen by a ``str`` argument (``- $act: {}``), with ``identity`` as the "no layer"
choice (netspec/blocks.py, netspec/loader.py, netspec/scope.py)."""
from __future__ import annotations

import pytest

from netspec import SpecError


def test_list_block_arguments():
    """Block arguments of type ints / floats take a list (Inception's 1x7 / 7x1 kernels as one
    block) or one number; elements are type-checked with their location; arithmetic on a
    list argument is refused."""
    import netspec
    text = """netspec: 1
name: la
input: [8, 17, 17]
blocks:
  bc:
    args: {out: int, kernel: ints, pad: {type: ints, default: 0}}
    layers:
      - conv: {name: conv, out: $out, kernel: $kernel, pad: $pad, bias: false}
layers:
  - bc: {name: a, out: 8, kernel: [1, 7], pad: [0, 0, 3, 3]}
  - bc: {name: c, out: 8, kernel: 3, pad: 1}
"""
    rep = netspec.check(netspec.load(text))
    assert rep.layer("a.conv").attrs["kernel"] == (1, 7) and rep.layer("a.conv").params == 8 * 8 * 7
    assert rep.layer("c.conv").attrs["kernel"] == (3, 3) and rep.output_shape == (8, 17, 17)
    with pytest.raises(SpecError, match="argument 'kernel' of block 'bc' must be .*integer") as e:
        netspec.load(text.replace("kernel: [1, 7]", "kernel: [1, 7.5]"))
    assert e.value.line == 10
    with pytest.raises(SpecError, match="invalid argument expression"):
        netspec.load(text.replace("out: $out,", "out: $kernel * 2,"))


def test_layer_type_from_a_str_argument():
    """`- $act: {}` in a block takes its layer type from a str argument (MobileNetV3's ReLU /
    hardswish variants as one block); an undeclared or non-str `$type` is an error at the
    definition, an unknown type at the use with the usual hint."""
    import netspec
    text = """netspec: 1
name: ta
input: [3, 8, 8]
blocks:
  cba:
    args: {out: int, act: {type: str, default: relu}}
    layers:
      - conv: {name: conv, out: $out, kernel: 3, pad: 1}
      - $act: {name: act}
layers:
  - cba: {name: a, out: 8}
  - cba: {name: b, out: 8, act: hardswish}
"""
    rep = netspec.check(netspec.load(text))
    assert [rep.layer(n).type for n in ("a.act", "b.act")] == ["relu", "hardswish"]
    with pytest.raises(SpecError, match="did you mean 'hardswish'"):
        netspec.load(text.replace("act: hardswish}", "act: hardswitch}"))
    with pytest.raises(SpecError, match=r"layer type '\$acts' in block 'cba' is not one of its str arguments"):
        netspec.load(text.replace("- $act:", "- $acts:"))
    with pytest.raises(SpecError, match="is not one of its str arguments"):
        netspec.load(text.replace("act: {type: str, default: relu}", "act: {type: int, default: 1}"))


def test_type_argument_identity_ignores_the_other_choices_attributes():
    """`- $gate: {c: $c}` with gate: identity drops the attributes meant for the block it
    stands in for; arithmetic on a list argument says so; `$type` outside a block is named."""
    import netspec
    text = """netspec: 1
name: g
input: [8, 4, 4]
blocks:
  se:
    args: {c: int}
    layers:
      - global_avgpool: {name: pool}
      - conv: {name: fc, out: $c, kernel: 1}
      - sigmoid: {}
      - multiply: {name: scale, from: [input, -1]}
  unit:
    args: {gate: {type: str, default: identity}, k: {type: ints, default: [3, 3]}}
    layers:
      - conv: {name: conv, out: 8, kernel: $k, pad: 1}
      - $gate: {name: gate, c: 8}
layers:
  - unit: {name: a}
  - unit: {name: b, gate: se}
"""
    rep = netspec.check(netspec.load(text))
    assert rep.layer("a.gate").type == "identity" and rep.layer("b.gate.fc").params == 8 * 8 + 8
    with pytest.raises(SpecError, match=r"\$k is a list \[3, 3\], not a number"):
        netspec.load(text.replace("pad: 1}", "pad: $k // 2}"))
    with pytest.raises(SpecError, match=r"layer type '\$gate' outside a block"):
        netspec.load(text.replace("  - unit: {name: a}\n", "  - $gate: {}\n"))
