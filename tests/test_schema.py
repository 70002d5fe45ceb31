"""netspec.schema.json_schema: generated from the catalogue and the train schema; checked
with a tiny draft-07 validator (no jsonschema dependency) on valid and invalid specs, and
against the loader (what the loader accepts, the schema accepts)."""
from __future__ import annotations

import json
import re

import pytest
import yaml

import netspec
from netspec.layers.base import REGISTRY
from netspec.schema import json_schema

KNOWN = {"$schema", "title", "description", "default", "type", "enum", "const", "properties",
         "required", "additionalProperties", "items", "minItems", "maxItems", "oneOf", "anyOf",
         "not", "propertyNames", "pattern", "minimum", "maximum", "minProperties",
         "maxProperties", "$ref", "definitions"}
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(v, t):
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, TYPES[t])


def valid(s, v, root) -> bool:
    """Minimal JSON Schema draft-07 validation of the keywords json_schema uses."""
    if s is True or s == {}:
        return True
    if "$ref" in s:
        s = root["definitions"][s["$ref"].split("/")[-1]]
    if "type" in s:
        ts = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_is(v, t) for t in ts):
            return False
    if "enum" in s and not any(v == e and type(v) is type(e) for e in s["enum"]):
        return False
    if "const" in s and not (v == s["const"] and type(v) is type(s["const"])):
        return False
    if "anyOf" in s and not any(valid(x, v, root) for x in s["anyOf"]):
        return False
    if "oneOf" in s and sum(valid(x, v, root) for x in s["oneOf"]) != 1:
        return False
    if "not" in s and valid(s["not"], v, root):
        return False
    if isinstance(v, str) and "pattern" in s and not re.search(s["pattern"], v):
        return False
    if _is(v, "number"):
        if "minimum" in s and v < s["minimum"] or "maximum" in s and v > s["maximum"]:
            return False
    if isinstance(v, list):
        if len(v) < s.get("minItems", 0) or len(v) > s.get("maxItems", 1 << 60):
            return False
        if "items" in s and not all(valid(s["items"], x, root) for x in v):
            return False
    if isinstance(v, dict):
        if len(v) < s.get("minProperties", 0) or len(v) > s.get("maxProperties", 1 << 60):
            return False
        if any(k not in v for k in s.get("required", [])):
            return False
        props = s.get("properties", {})
        for k, x in v.items():
            if "propertyNames" in s and not valid(s["propertyNames"], k, root):
                return False
            if k in props:
                if not valid(props[k], x, root):
                    return False
            elif s.get("additionalProperties", True) is False:
                return False
            elif isinstance(s.get("additionalProperties"), dict) and \
                    not valid(s["additionalProperties"], x, root):
                return False
    return True


@pytest.fixture(scope="module")
def schema():
    return json_schema()


def ok(schema, text):
    return valid(schema, yaml.safe_load(text), schema)


def keywords(s, out):
    if isinstance(s, dict):
        for k, v in s.items():
            out.add(k)
            if k in ("properties", "definitions"):
                for x in v.values():
                    keywords(x, out)
            elif k not in ("enum", "const", "default", "required"):
                keywords(v, out)
    elif isinstance(s, list):
        for x in s:
            keywords(x, out)
    return out


def test_generated_from_catalogue(schema):
    json.dumps(schema)   # JSON-serialisable
    assert keywords(schema, set()) <= KNOWN
    items = schema["definitions"]["layer"]["oneOf"]
    keys = {k for it in items for k in it.get("required", [])}
    assert set(REGISTRY) <= keys and "sequential" in keys
    conv = next(it for it in items if it.get("required") == ["conv"])
    body = conv["properties"]["conv"]["anyOf"][0]
    for name, a in REGISTRY["conv"].attrs.items():
        assert name in body["properties"]
        if a.doc:
            assert body["properties"][name]["description"] == a.doc
    assert body["required"] == [k for k, a in REGISTRY["conv"].attrs.items() if a.required]
    opt = schema["properties"]["train"]["anyOf"][0]["properties"]["optimizer"]
    assert "sgd" in json.dumps(opt) and "lbfgs" in json.dumps(opt)


GOOD = """netspec: 1
name: resnet-mini
input: [3, 32, 32]
blocks:
  basic:
    args: {channels: int, stride: {type: int, default: 1}}
    layers:
      - conv: {name: conv1, out: $channels, kernel: 3, stride: $stride, pad: 1, bias: false}
      - batchnorm: {name: bn1}
      - relu: {}
      - conv: {name: conv2, out: $channels, kernel: 3, pad: 1, bias: false}
      - batchnorm: {name: bn2}
      - add: {from: [-1, input]}
      - relu:
layers:
  - conv: {name: conv1, out: 16, kernel: 3, pad: 1, bias: false}
  - batchnorm: {name: bn1}
  - relu: {}
  - basic: {name: layer1, channels: 16, repeat: 2}
  - basic: {name: layer2, channels: 32, repeat: 2, first: {stride: 2}}
  - sequential:
      name: head
      layers:
        - avgpool: {kernel: 16}
        - flatten:
        - linear: {name: fc, out: 10}
outputs: [head.fc]
train:
  data: {source: digits, val_split: 0.1}
  preprocess: [{standardize: per_channel}]
  augment: [{random_crop: {pad: 2}}, {flip: horizontal}]
  loss: {softmax_cross_entropy: {label_smoothing: 0.1}}
  optimizer: {sgd: {lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 5.0e-4}}
  schedule: {cosine: {warmup_epochs: 1}}
  early_stopping: {patience: 3}
  batch_size: 64
  epochs: 3
"""


def test_good_spec_valid_in_both(schema):
    assert ok(schema, GOOD)
    netspec.load(GOOD)


@pytest.mark.parametrize("old,new", [
    ("kernel: 3, pad: 1, bias: false}\n  - batchnorm", "kernal: 3, pad: 1, bias: false}\n"
     "  - batchnorm"),                                         # unknown attribute
    ("out: 16,", "out: '16',"),                                # wrong type
    ("out: 16,", "out: 0,"),                                   # below minimum
    ("netspec: 1\n", ""),                                      # missing version
    ("netspec: 1\n", "netspec: 2\n"),                          # other version
    ("  - relu: {}\n  - basic", "  - relu: {}\n  - sequential: {}\n  - basic"),
    ("bias: false}\n  - batchnorm", "bias: false, from: 0}\n  - batchnorm"),
    ("epochs: 3", "epocs: 3"),                                 # unknown train key
    ("{sgd: {lr: 0.1,", "{sgdd: {lr: 0.1,"),                   # unknown optimizer
    ("{flip: horizontal}", "{flip: diagonal}"),                # bad enum value
    ("input: [3, 32, 32]", "input: [3, 32]"),                  # 2-d input
    ("name: resnet-mini", "name: 'resnet mini'"),              # bad name
    ("- linear: {name: fc, out: 10}", "- linear: {name: 'f c', out: 10}"),
    ("layers:\n  - conv: {name: conv1", "layer:\n  - conv: {name: conv1"),
])
def test_bad_specs_rejected_by_both(schema, old, new):
    assert old in GOOD
    bad = GOOD.replace(old, new, 1)
    assert not ok(schema, bad)
    with pytest.raises(netspec.SpecError):
        netspec.load(bad)


def test_args_only_allowed_in_blocks(schema):
    assert not ok(schema, GOOD.replace("out: 16,", "out: $c,"))
    assert ok(schema, GOOD.replace("kernel: 3, stride: $stride", "kernel: $stride, stride: 2"))


def test_every_catalogue_type_with_required_attrs(schema):
    """Each type, written with minimal required attrs, is schema-valid."""
    sample = {"int": 2, "float": 0.5, "bool": True, "str": "x", "int2": 2, "pad": 1,
              "ints": [2], "float_or_ints": 2.0, "any": 1}
    for t, ld in REGISTRY.items():
        attrs = {k: (a.choices[0] if a.choices else sample[a.type])
                 for k, a in ld.attrs.items() if a.required}
        spec = {"netspec": 1, "name": "t", "input": [3, 8, 8], "layers": [{t: attrs}]}
        assert valid(schema, spec, schema), t
        spec["layers"][0][t] = dict(attrs, bogus_key=1)
        assert not valid(schema, spec, schema), t


def test_cli_schema_matches(capsys):
    from netspec.cli import main
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(json_schema()))


@pytest.mark.parametrize("path", sorted((__import__("pathlib").Path(__file__).resolve()
                                         .parents[1] / "specs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_zoo_specs_valid(schema, path):
    """Every spec of the zoo is accepted by the loader and by the schema."""
    netspec.load(path)
    assert ok(schema, path.read_text())
