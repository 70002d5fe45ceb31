"""Security guarantees of the spec pipeline (docs/security.md).

1. Hostile spec text (python tags, alias bombs, deep nesting, huge numbers, non-UTF-8,
   mutated zoo specs, hostile attribute values for every layer type) ends in a located
   SpecError -- never another exception -- in bounded time and memory, through load AND
   check.
2. No value from a spec reaches generated source except identifiers matching a strict
   pattern and numbers printed from parsed ints/floats: injection strings in every name and
   value field are refused; where a field legitimately takes any string (data path,
   init.checkpoint) the generated step source is byte-identical; layer/spec names only
   appear in comments/docstring, and the generated module's AST uses a fixed vocabulary.
(3. Absurd sizes and the memory guard: tests/test_size_guards.py.)
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netspec import SpecError, check, load
from spechelp import located

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "specs").glob("*.yaml"))

# ------------------------------------------------------------------------------ helpers
INJECTIONS = [
    "a'b", 'a"b', "a\nb", "conv1\n", "\nimport os", "__import__('os').system('id')",
    "{{ 7*7 }}", "{% for x in y %}{% endfor %}", "{# c #}", "a\\b", "\\", "x;import os",
    "a b", "a#b", "$(id)", "`id`", "ｃｏｎｖ1",        # fullwidth letters
    "cοnv1",                                          # Greek omicron look-alike
    "conv1\u200b", "conv1\u202e", "é", "a\x00b"[:1] + "\u0085b", "1e5", "-1x", "",
]
BASE = """netspec: 1
name: {name}
input: [3, 8, 8]
blocks:
  {block}:
    args: {{{arg}: int, mode: {{type: str, default: nearest}}}}
    layers:
      - conv: {{name: {inner}, out: ${arg}, kernel: 3, pad: 1}}
      - relu: {{}}
layers:
  - conv: {{name: {l1}, out: 4, kernel: 3, pad: 1}}
  - {block}: {{name: {inst}, {arg}: 4}}
  - upsample: {{name: up, scale: 2, mode: {mode}}}
  - add: {{from: [-1, -1], project: {project}}}
  - sequential:
      name: {seq}
      layers:
        - maxpool: {{kernel: 2, pad: {pad}}}
        - global_avgpool: {{}}
        - flatten: {{}}
        - linear: {{name: {l2}, out: 3}}
outputs: [{out}]
init: {{checkpoint: {ckpt}, skip: [{skip}]}}
train:
  data: {{source: npz, path: {path}}}
  optimizer: {{{opt}: {{lr: 0.1}}}}
"""
DEFAULTS = dict(name="t", block="blk", arg="ch", inner="c", l1="conv1", inst="b1", mode="nearest",
                project="auto", seq="head", pad="0", l2="fc", out="head", ckpt="w.npz",
                skip="conv1", path="d.npz", opt="sgd")
# fields that only take identifiers / choices: every injection must be refused
STRICT = ["name", "block", "arg", "inner", "l1", "inst", "mode", "project", "seq", "pad", "l2",
          "out", "skip", "opt"]
FREE = ["ckpt", "path"]        # any string is legal here (file names); never reaches code


def yq(s: str) -> str:
    """s as a YAML double-quoted scalar (so the injection reaches the loader intact)."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or 0x7f <= ord(ch) < 0xa0 or ch in "\u2028\u2029":
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def spec_text(**over) -> str:
    vals = {**DEFAULTS, **over}
    return BASE.format(**vals)


def emit_sources(spec, tmp: Path) -> dict[str, str]:
    import compiler
    tmp.mkdir(parents=True, exist_ok=True)
    compiler.emit(spec, tmp, batch_size=2, train=True)
    return {m: (tmp / f"step_{m}.py").read_text() for m in ("train", "eval")}


def strip_comments(src: str) -> str:
    """The generated source without its module docstring and `#` comments (the only places
    names may appear). Generated code contains no '#' inside string literals."""
    tree = ast.parse(src)
    doc = ast.get_docstring(tree, clean=False)
    body = src.split('"""', 2)[2] if doc is not None else src
    return "\n".join(line.split("#", 1)[0].rstrip() for line in body.splitlines())


# names the generated step module may use (everything else would be spec-derived)
_NAME_OK = re.compile(r"(t\d+|D\d+|V|rt|ops|op_[a-z0-9_]+|rng|train|lr|step_no|loss|forward|"
                      r"grads|step|bind|float)\Z")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")


def assert_plain_module(src: str) -> None:
    """Structural proof that a generated step module is made of the fixed vocabulary only:
    identifiers from _NAME_OK, string constants that are identifiers (or 'inf'/'nan' inside
    float(...)), numbers, bools, None; attribute access only to kernel methods and rt/tensor
    members; docstrings are the template's own; comments match a strict pattern."""
    tree = ast.parse(src)
    docs = {ast.get_docstring(n, clean=False) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            assert _NAME_OK.match(node.id), node.id
        elif isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, str):
                assert v in docs or _IDENT.match(v) or re.fullmatch(r"-?(inf|nan)", v), v
            else:
                assert v is None or isinstance(v, (bool, int, float)), v
        elif isinstance(node, ast.Attribute):
            assert node.attr in ("tensors", "ops", "forward", "backward", "fill", "optimizer",
                                 "update", "param_arena", "grad_arena", "opt_state"), node.attr
        elif isinstance(node, (ast.Import, ast.ImportFrom, ast.Lambda, ast.ClassDef,
                               ast.Global, ast.Nonlocal, ast.With, ast.Try, ast.While)):
            raise AssertionError(f"unexpected {type(node).__name__} in generated code")
    fn_docs = [d for d in docs if d and not d.startswith("Generated by netspec")]
    assert all("\n" not in d for d in fn_docs)
    for line in src.splitlines():
        if "#" in line:
            c = line.split("#", 1)[1]
            assert re.fullmatch(r" [A-Za-z0-9_.\[\]/:+\-, ()]*", c), line


# ------------------------------------------------------------------------------ 1. loader
HOSTILE = {
    "python_tag_value": "netspec: 1\nname: !!python/object/apply:os.system ['id']\n",
    "python_tag_key": "netspec: 1\n!!python/name:os.system : 1\n",
    "python_tag_in_list": "netspec: 1\nname: t\ninput: [3, !!python/object/new:int [8], 8]\n",
    "python_tag_top": "!!python/object/apply:subprocess.check_output [[id]]\n",
    "local_tag": "netspec: 1\nname: !expr 1+1\n",
    "alias_bomb": "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]) + "\n",
    "alias_bomb_in_layers": "netspec: 1\nname: t\ninput: [3, 8, 8]\nx: &a [{relu: {}}]\n"
    + "".join(f"y{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}, *{'a' if i == 0 else f'b{i - 1}'}, "
              f"*{'a' if i == 0 else f'b{i - 1}'}, *{'a' if i == 0 else f'b{i - 1}'}]\n" for i in range(14))
    + "layers: *b13\n",
    "recursive_alias": "netspec: 1\nlayers: &x [*x]\n",
    "deep_flow": "netspec: 1\nlayers: " + "[" * 50000 + "]" * 50000 + "\n",
    "deep_block": "netspec: 1\nlayers:\n" + "".join(" " * i + "- \n" for i in range(1, 2000)),
    "deep_map": "netspec: 1\nx: " + "{a: " * 20000 + "1" + "}" * 20000 + "\n",
    "huge_int_out": "netspec: 1\nname: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: "
    + "9" * 100000 + ", kernel: 3}\n",
    "huge_int_2_70": "netspec: 1\nname: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: "
    + str(2 ** 70) + ", kernel: 3}\n",
    "huge_hex": "netspec: 1\nname: t\ninput: [3, 8, 8]\nlayers:\n  - conv: {out: 0x" + "f" * 60
    + ", kernel: 3}\n",
    "huge_float_digits": "netspec: 1\nname: t\ninput: [3, 8, 8]\nlayers:\n  - relu: {}\n"
    "train: {optimizer: {sgd: {lr: 1." + "1" * 100000 + "}}}\n",
    "huge_input": "netspec: 1\nname: t\ninput: [3, 2147483647, 2147483647]\nlayers:\n  - relu: {}\n",
    "repeat_bomb": "netspec: 1\nname: t\ninput: [3, 8, 8]\nblocks:\n  b: {layers: [{relu: }, {relu: }]}\n"
    "  c: {layers: [{b: {repeat: 10000}}]}\n  d: {layers: [{c: {repeat: 10000}}]}\nlayers:\n"
    "  - d: {repeat: 10000}\n",
    "not_utf8": b"netspec: 1\nname: caf\xe9\n",
    "utf16": "netspec: 1\nname: t\n".encode("utf-16"),
    "nul_bytes": b"netspec: 1\nname: t\x00\n",
    "control_chars": "netspec: 1\nname: \x1b[31mred\n",
    "too_big": b"netspec: 1\n" + b"#" * (3 * 1024 * 1024),
    "wide_map": "netspec: 1\nname: t\n" + "".join(f"k{i}: {i}\n" for i in range(150000)),
    "merge_key": "netspec: 1\nname: t\nbase: &b {input: [3, 8, 8]}\n<<: *b\n",
    "two_docs": "netspec: 1\n---\n!!python/object/apply:os.system [id]\n",
    "directive": "%TAG !p! tag:yaml.org,2002:python/\n---\nnetspec: 1\nname: !p!object/apply:os.system [id]\n",
}


@pytest.mark.parametrize("key", sorted(HOSTILE))
def test_hostile_spec_is_a_located_spec_error_quickly(key, tmp_path):
    src = HOSTILE[key]
    p = tmp_path / "h.yaml"
    p.write_bytes(src if isinstance(src, bytes) else src.encode())
    t = time.process_time()          # CPU time: robust to a loaded machine
    with pytest.raises(SpecError) as ei:
        check(load(p))
    dt = time.process_time() - t
    located(ei.value, str(p))
    assert dt < 2.0, f"{key}: {dt:.2f} s"


# size-proportional inputs: bounded by MAX_BYTES (256 KiB) and the node/layer budgets
HOSTILE_BIG = {
    "many_layers": "netspec: 1\nname: t\ninput: [3, 8, 8]\nlayers:\n" + "  - relu: {}\n" * 21000,
    "max_size_many_nodes": "netspec: 1\nname: t\ninput: [3, 8, 8]\nlayers:\n"
    + "  - relu: {}\n" * 160000,
}


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(HOSTILE_BIG))
def test_size_proportional_inputs_are_bounded(key):
    t = time.process_time()
    with pytest.raises(SpecError) as ei:
        check(load(HOSTILE_BIG[key], file="big.yaml"))
    located(ei.value, "big.yaml")
    assert time.process_time() - t < 40


def test_max_size_spec_refused_quickly():
    t = time.process_time()
    with pytest.raises(SpecError):
        load(HOSTILE_BIG["max_size_many_nodes"], file="big.yaml")
    assert time.process_time() - t < 2


def test_hostile_specs_bounded_memory():
    """Every hostile input, parsed in a child process whose address space is capped at
    768 MiB: each ends in SpecError (an alias bomb or a deep nest would need far more)."""
    import pickle
    code = textwrap.dedent("""
        import pickle, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))
        import netspec
        cases = pickle.load(sys.stdin.buffer)
        for k, src in sorted(cases.items()):
            try:
                netspec.check(netspec.load(src, file="h.yaml"))
                print(k, "ACCEPTED")
            except netspec.SpecError as e:
                print(k, "SpecError", e.line)
            except BaseException as e:
                print(k, "OTHER", type(e).__name__)
    """)
    r = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(HOSTILE),
                       capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       timeout=120)
    lines = r.stdout.decode().split("\n")
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    res = dict(line.split(" ", 1) for line in lines if line)
    assert set(res) == set(HOSTILE)
    bad = {k: v for k, v in res.items() if not v.startswith("SpecError") or v.endswith(" 0")}
    assert not bad, bad


# mutated zoo specs through load AND check: only SpecError, always located
TOKENS = ["0", "-1", "1", "3", "1000000000000", "99999999999999999999", "1e308", ".nan", "-.inf",
          "[]", "{}", "[1, 2]", "null", "true", "'x'", "$x", "&a", "*a", "!!python/none", "<<",
          "conv", "relu", "add", "from", "input", "name", "layer1", "same", "valid", "{{x}}",
          ":", "- ", "\t", "#", "\"", "[", "}", "\n", "  "]
FUZZ = settings(max_examples=120, deadline=5000, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])


@st.composite
def mutated_zoo(draw):
    path = draw(st.sampled_from(ZOO))
    src = path.read_text()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace_number", "insert", "delete", "token"]))
        if op == "replace_number":
            nums = [m.span() for m in re.finditer(r"\b\d+\b", src)]
            if nums:
                a, b = draw(st.sampled_from(nums))
                src = src[:a] + draw(st.sampled_from(TOKENS[:9])) + src[b:]
        elif op == "insert":
            i = draw(st.integers(0, len(src)))
            src = src[:i] + draw(st.sampled_from(TOKENS)) + src[i:]
        elif op == "delete" and src:
            i = draw(st.integers(0, len(src) - 1))
            src = src[:i] + src[i + draw(st.integers(1, 8)):]
        else:
            words = re.findall(r"[A-Za-z_]+", src)
            w = draw(st.sampled_from(words))
            src = src.replace(w, draw(st.sampled_from(TOKENS)), 1)
    return src


@FUZZ
@given(mutated_zoo())
def test_mutated_zoo_specs_load_and_check(src):
    t = time.process_time()
    try:
        check(load(src, file="zoo.yaml"))
    except SpecError as e:
        located(e, "zoo.yaml")
    assert time.process_time() - t < 3


HOSTILE_VALUES = ["0", "-1", "1", "2", "1000000000000", "4611686018427387904", "1e308", "-1e308",
                  ".nan", ".inf", "-.inf", "0.5", "'x'", "\"{{x}}\"", "\"__import__('os')\"", "[]",
                  "[0, 0]", "[1, 1000000000000]", "[.nan, 1]", "[1e308, 2]", "{a: 1}", "null",
                  "true", "[1, 2, 3, 4]", "[-5, -5, -5, -5]", "same", "valid"]


@pytest.mark.slow
def test_hostile_attribute_values_every_layer_type():
    """Every attribute of every layer type given every hostile value, on image and vector
    inputs: load + check only ever raise a located SpecError (about 8,000 specs)."""
    from netspec.layers import REGISTRY
    problems = {}
    for t, ld in sorted(REGISTRY.items()):
        frm = ", from: [-1, -1]" if ld.arity is None or ld.arity > 1 else ""
        for inshape in ("[3, 8, 8]", "[16]"):
            for k in ld.attrs:
                req = [f"{kk}: {'4' if kk == 'out' else '2'}" for kk, a in ld.attrs.items()
                       if a.required and kk != k]
                for v in HOSTILE_VALUES:
                    src = (f"netspec: 1\nname: t\ninput: {inshape}\nlayers:\n  - relu: {{}}\n"
                           f"  - {t}: {{{', '.join([f'{k}: {v}', *req])}{frm}}}\n")
                    try:
                        check(load(src, file="v.yaml"))
                    except SpecError as e:
                        if e.line < 1:
                            problems[(t, k, v, "unlocated")] = e.message
                    except Exception as e:  # noqa: BLE001
                        problems.setdefault((t, k, type(e).__name__), (v, inshape, str(e)[:80]))
    assert not problems, problems


@pytest.mark.parametrize("layer,attr", [("upsample", "scale"), ("fractional_maxpool", "output_ratio")])
@pytest.mark.parametrize("value", ["1e308", ".nan", ".inf", "1e20"])
def test_non_finite_any_typed_attrs_are_spec_errors(layer, attr, value):
    """Regression: int(nan) / int(inf) inside layer rules escaped as ValueError /
    OverflowError; check() now reports them at the layer."""
    src = (f"netspec: 1\nname: t\ninput: [3, 8, 8]\nlayers:\n  - relu: {{}}\n"
           f"  - {layer}: {{{attr}: {value}}}\n")
    with pytest.raises(SpecError) as ei:
        check(load(src, file="a.yaml"))
    located(ei.value, "a.yaml")
    assert ei.value.line == 6


# ------------------------------------------------------------------------------ 2. codegen
def test_base_spec_is_valid(tmp_path):
    s = load(spec_text(), file="b.yaml")
    assert [L.name for L in s.layers][:2] == ["conv1", "b1.c"]
    assert s.train["data"]["path"] == "d.npz" and s.init["checkpoint"] == "w.npz"
    srcs = emit_sources(s, tmp_path)
    for src in srcs.values():
        assert_plain_module(src)


@pytest.mark.parametrize("field", STRICT)
@pytest.mark.parametrize("inj", INJECTIONS, ids=range(len(INJECTIONS)))
def test_injection_in_strict_fields_is_refused(field, inj):
    text = spec_text(**{field: yq(inj)})
    try:
        s = load(text, file="i.yaml")
        check(s)
    except SpecError as e:
        located(e, "i.yaml")
        return
    pytest.fail(f"{field}={inj!r} was accepted: names {[L.name for L in s.layers]}")


@pytest.mark.parametrize("field", FREE)
@pytest.mark.parametrize("inj", [i for i in INJECTIONS if i and "\x00" not in i],
                         ids=range(len([i for i in INJECTIONS if i and "\x00" not in i])))
def test_free_strings_never_reach_generated_code(field, inj, tmp_path):
    base = emit_sources(load(spec_text(), file="b.yaml"), tmp_path / "base")
    s = load(spec_text(**{field: yq(inj)}), file="i.yaml")
    got = s.train["data"]["path"] if field == "path" else s.init["checkpoint"]
    assert got == inj                      # accepted verbatim: it is a file name
    assert emit_sources(s, tmp_path / "inj") == base   # byte-identical step sources


PY_NAMES = ["__import__", "os", "exec", "eval", "V", "rt", "ops", "bind", "t0", "t1", "D0",
            "forward", "step", "rng", "lr", "train", "None_", "class_", "lambda_", "__class__"]


@pytest.mark.parametrize("name", PY_NAMES)
def test_identifier_names_only_appear_in_comments(name, tmp_path):
    """Names that are legal identifiers but meaningful to Python (or to the generated
    module itself) change nothing but comments and the docstring."""
    base = emit_sources(load(spec_text(), file="b.yaml"), tmp_path / "base")
    s = load(spec_text(l1=name, inst=name + "_b", seq=name + "_s", out=name + "_s", l2=name,
                       skip=name, name=name, block=name + "_k", inner=name),
             file="n.yaml")
    got = emit_sources(s, tmp_path / "n")
    for mode in base:
        assert_plain_module(got[mode])
        assert strip_comments(got[mode]) == strip_comments(base[mode]), mode


def test_zoo_generated_modules_use_fixed_vocabulary(tmp_path):
    for p in ZOO:
        if p.stem in ("resnet152", "resnet50", "googlenet", "vgg16", "vgg16_bn", "alexnet", "unet"):
            continue   # big: the small ones cover every op family used by the zoo quickly
        for mode, src in emit_sources(load(p), tmp_path / p.stem).items():
            assert_plain_module(src)


def test_safe_literal_refuses_non_identifiers():
    from compiler.codegen.cpu import UnsafeValue, safe_literal
    assert safe_literal(3) == "3" and safe_literal(np.int64(-2)) == "-2"
    assert safe_literal(0.1) == "0.1" and safe_literal(True) == "True"
    assert safe_literal(float("nan")) == "float('nan')" and safe_literal(float("-inf")) == "float('-inf')"
    assert safe_literal((1, 2.5, "nearest")) == "(1, 2.5, 'nearest')"
    assert safe_literal(("x",)) == "('x',)"
    for bad in INJECTIONS + ["relu\n", "a" * 65, b"bytes", {"a": 1}, object(), np.bool_(True)]:
        if isinstance(bad, str) and _IDENT.match(bad) and "\n" not in bad:
            continue
        with pytest.raises(UnsafeValue):
            safe_literal(bad)
        with pytest.raises(UnsafeValue):
            safe_literal((1, bad))


def test_trailing_newline_is_not_an_identifier():
    """Regression: IDENT used `$`, which also matches before a trailing newline."""
    from compiler.codegen.cpu import COMMENT_SAFE, IDENT, UnsafeValue, safe_literal
    assert IDENT.match("relu") and not IDENT.match("relu\n")
    assert not COMMENT_SAFE.match("conv1\n") and COMMENT_SAFE.match("layer1.0/ws/x")
    with pytest.raises(UnsafeValue):
        safe_literal("relu\n")


def test_kernel_config_refuses_injection():
    from compiler.codegen.kernel_cache import _check_config
    _check_config({"act": "relu", "k": 3, "p": (1, 2), "f": 0.5, "b": True, "n": None})
    for bad in ["a'b", "{{x}}", "__import__('os')", "a b", "", "ｒｅｌｕ", ("a",), [1, "x"],
                [True], {"a": 1}, b"x"]:
        with pytest.raises(ValueError):
            _check_config({"act": bad})


def test_kernel_config_refuses_trailing_newline():
    from compiler.codegen.kernel_cache import _check_config
    with pytest.raises(ValueError):
        _check_config({"act": "relu\n"})


def test_loader_name_rules_are_strict():
    from netspec.blocks import IDENT
    from netspec.loader import SPEC_NAME
    for pat in (IDENT, SPEC_NAME):
        assert pat.match("conv1") and not pat.match("conv1\n") and not pat.match("cοnv1")
        assert not pat.match("ｃｏｎｖ1") and not pat.match("a'b") and not pat.match("")
