"""Fuzzing netspec.load: random text and bytes, random mutations of valid specs, random
YAML trees over the language's vocabulary, and hostile inputs. The loader may accept or
reject, but it only ever raises SpecError, always located (line >= 1), in bounded time."""
from __future__ import annotations

import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netspec import Spec, SpecError, load

FUZZ = settings(max_examples=150, deadline=3000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

SEEDS = [
    """netspec: 1
name: lenet
input: [1, 28, 28]
layers:
  - conv: {name: conv1, out: 6, kernel: 5, pad: 2}
  - relu:
  - maxpool: {kernel: 2}
  - sequential:
      name: head
      layers:
        - flatten:
        - linear: {out: 10, lr_mult: 0.5}
outputs: [head]
train:
  optimizer: {adam: {lr: 0.001}}
  augment: [{flip: horizontal}]
  schedule: {step: {step_size: 3}}
""",
    """netspec: 1
name: res
input: [3, 16, 16]
blocks:
  basic:
    args: {channels: int, stride: {type: int, default: 1}}
    layers:
      - conv: {name: conv1, out: $channels, kernel: 3, stride: $stride, pad: 1, bias: false}
      - batchnorm: {name: bn1}
      - relu: {}
      - add: {from: [-1, input]}
layers:
  - conv: {out: 8, kernel: 3, pad: 1}
  - basic: {name: layer1, channels: 8, repeat: 2, first: {stride: 2}, freeze: true}
  - relu: {from: layer1.0}
init: {checkpoint: a.npz, skip: [layer1]}
""",
]
VOCAB = ["netspec", "name", "input", "layers", "blocks", "args", "from", "repeat", "first",
         "outputs", "train", "init", "conv", "relu", "add", "concat", "linear", "sequential",
         "basic", "out", "kernel", "stride", "pad", "same", "$channels", "$x", "input", "-1",
         "-9", "0", "1", "3", "2.5", "1e-3", "null", "true", "yes", "[]", "{}", "[1, 2]",
         "&a", "*a", "!!str", "!!python/object:os.system", "'", '"', ":", "- ", "\t", "#",
         "layer1.0", "99999999999999999999999", "<<", "---", "?", "%YAML 1.1"]


def attempt(src) -> None:
    t = time.perf_counter()
    try:
        s = load(src, file="fuzz.yaml")
        assert isinstance(s, Spec) and s.layers
    except SpecError as e:
        assert e.line >= 1 and e.col >= 0 and e.file == "fuzz.yaml", (e.line, e.col, e.file)
        assert str(e).startswith(f"fuzz.yaml:{e.line}:{e.col}: ")
    assert time.perf_counter() - t < 10   # bounded (generous: CI machines are shared and slow)


@FUZZ
@given(st.text(max_size=400))
def test_random_text(text):
    attempt(text + "\n")


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(data):
    attempt(data)


@st.composite
def mutated(draw):
    src = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "token", "dupline", "swap", "indent"]))
        lines = src.split("\n")
        if op == "delete" and src:
            i = draw(st.integers(0, len(src) - 1))
            src = src[:i] + src[i + draw(st.integers(1, 6)):]
        elif op == "insert":
            i = draw(st.integers(0, len(src)))
            src = src[:i] + draw(st.sampled_from(VOCAB + [" ", "\n", ",", "{", "]"])) + src[i:]
        elif op == "token":
            words = [w for w in src.replace("{", " ").replace("}", " ").split() if w]
            w = draw(st.sampled_from(words))
            src = src.replace(w, draw(st.sampled_from(VOCAB)), 1)
        elif op == "dupline":
            i = draw(st.integers(0, len(lines) - 1))
            src = "\n".join(lines[:i + 1] + [lines[i]] + lines[i + 1:])
        elif op == "swap":
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            src = "\n".join(lines)
        else:
            i = draw(st.integers(0, len(lines) - 1))
            lines[i] = " " * draw(st.integers(0, 3)) + lines[i].lstrip(" ")
            src = "\n".join(lines)
    return src


def test_seeds_are_valid():
    for s in SEEDS:
        assert load(s).layers


@FUZZ
@given(mutated())
def test_mutated_specs(src):
    attempt(src)


_scalars = st.one_of(st.sampled_from(VOCAB), st.integers(-2 ** 70, 2 ** 70), st.floats(),
                     st.booleans(), st.none())
_trees = st.recursive(_scalars, lambda c: st.one_of(
    st.lists(c, max_size=4), st.dictionaries(st.sampled_from(VOCAB), c, max_size=4)),
    max_leaves=25)


@FUZZ
@given(st.dictionaries(st.sampled_from(VOCAB), _trees, max_size=6), st.booleans())
def test_random_trees(tree, with_header):
    if with_header:
        tree = {"netspec": 1, "name": "t", "input": [3, 8, 8], **tree}
    attempt(yaml.safe_dump(tree, default_flow_style=None))


@pytest.mark.parametrize("src", [
    "netspec: 1\nlayers: " + "[" * 20000 + "]" * 20000 + "\n",
    "netspec: 1\nlayers:\n" + "".join(" " * (2 * i) + "- \n" for i in range(1, 400)),
    "a: &a [*a]\n",
    "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x]"] +
              [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)]),
    "netspec: 1\nname: !!python/object/apply:os.system ['echo pwned']\n",
    "netspec: 1\nname: !!python/object/new:type [x, [], {}]\n",
    b"netspec: 1\nname: \xc3\x28\n",
    b"\xff\xfe n\x00e\x00t\x00",
    "netspec: 1\nname: t\ninput: [3, 8, 8]\nblocks:\n  b: {layers: [{b: {}}]}\nlayers: [{b: {}}]\n",
    "netspec: 1\nname: t\ninput: [3, 8, 8]\nblocks:\n  b: {layers: [{relu: }, {relu: }]}\n"
    "  c: {layers: [{b: {repeat: 10000}}]}\nlayers:\n  - c: {repeat: 10000}\n",
])
def test_hostile(src):
    attempt(src)
