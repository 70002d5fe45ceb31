"""netspec.yamlsrc: safe YAML with locations; hostile inputs end in a located SpecError
quickly (tags, duplicate keys, non-UTF-8, deep nesting, alias bombs, huge numbers)."""
from __future__ import annotations

import time

import pytest

from netspec import SpecError, load
from netspec.yamlsrc import MAX_BYTES, YMap, YScalar, YSeq, parse


def perr(src, file="s.yaml") -> SpecError:
    with pytest.raises(SpecError) as e:
        parse(src, file)
    return e.value


def test_values_and_locations():
    d = parse("a: 1\nb:\n  - 2.5\n  - 1.0e-3\n  - 1e-3\n  - yes\n  - ~\n  - 0x10\n"
              "  - 2020-01-01\n  - '7'\n3: x\n", "f.yaml")
    assert d.root.plain() == {"a": 1, "b": [2.5, 0.001, 0.001, True, None, 16, "2020-01-01",
                                            "7"], "3": "x"}
    b = d.root.items["b"]
    assert isinstance(b, YSeq) and isinstance(d.root, YMap)
    assert (b.items[0].loc.line, b.items[0].loc.col) == (3, 5)
    assert d.root.key_locs["b"].line == 2 and d.root.items["a"].loc.col == 4
    q = b.items[7]
    assert isinstance(q, YScalar) and q.quoted and q.text == "7"
    assert d.lines[0] == "a: 1"


@pytest.mark.parametrize("src", [
    "a: !!python/object:os.system ls\n", "a: !!python/object/apply:os.system [ls]\n",
    "a: !!python/name:os.system\n", "!!python/object:__main__.X {}\n", "a: !custom 3\n",
    "a: !!binary aGVsbG8=\n", "a: !!timestamp 2020-01-01\n", "a: !!set {x}\n",
    "a: !!omap [{x: 1}]\n", "!!python/tuple [1]: x\n",
])
def test_tags_rejected(src):
    e = perr(src)
    assert "tag" in e.message and e.line == 1 and e.hint


def test_standard_tags_allowed():
    assert parse("a: !!str 5\nb: !!float 1\nc: !!int '7'\n").root.plain() == \
        {"a": "5", "b": 1.0, "c": 7}


def test_duplicate_key_at_second():
    e = perr("x: 1\ny:\n  a: 1\n  a: 2\n")
    assert (e.line, e.col) == (4, 3) and "duplicate key 'a'" in e.message
    assert "line 3" in e.hint and e.source_line == "  a: 2"


def test_merge_and_complex_keys():
    assert "merge keys" in perr("a: &x {b: 1}\nc:\n  <<: *x\n").message
    assert "keys must be plain" in perr("? [1, 2]\n: x\n").message


def test_not_utf8():
    e = perr(b"a: 1\nb: caf\xe9\n")
    assert "not valid UTF-8" in e.message and (e.line, e.col) == (2, 7)
    assert parse("\ufeffa: 1".encode("utf-8")).root.plain() == {"a": 1}   # BOM is fine


def test_control_characters():
    e = perr("a: 1\nb: x\x01y\n")
    assert "U+0001" in e.message and (e.line, e.col) == (2, 5)


@pytest.mark.parametrize("src,msg", [
    ("", "empty"), ("# only a comment\n", "empty"), ("[1, 2]\n", "must be a mapping"),
    ("just text\n", "must be a mapping"), ("a: 1\n---\nb: 2\n", "single document"),
])
def test_top_level(src, msg):
    assert msg in perr(src).message


def test_parse_errors_located():
    e = perr("a: 1\nb: [1, 2\nc: 3\n")
    assert e.line >= 2 and "invalid YAML" in e.message
    e = perr("a:\n\tb: 1\n")
    assert (e.line, e.col) == (2, 1) and "tabs" in e.hint
    e = perr("a: b: c\n")
    assert (e.line, e.col) == (1, 5)
    # an unclosed '{' / '[' at the end of the file: the error points at the bracket left
    # open (not at a line past the end) and says how to close it
    e = perr("a: 1\nb:\n  - c: {x: 1, y: 3\n")
    assert (e.line, e.col) == (3, 8) and "'}'" in e.hint
    e = perr("a: [1, 2\n")
    assert (e.line, e.col) == (1, 4) and "']'" in e.hint


def test_deep_nesting_bounded():
    for src in ("a: " + "[" * 5000 + "]" * 5000, "a:\n" + "".join(
            " " * (2 * i + 2) + f"k{i}:\n" for i in range(300)) + " " * 602 + "1\n",
            "a: " + "{x: " * 3000 + "1" + "}" * 3000):
        t = time.perf_counter()
        e = perr(src)
        assert "nesting deeper than 100" in e.message and e.line >= 1
        assert time.perf_counter() - t < 2


def test_recursive_alias():
    assert "nesting" in perr("a: &x [1, *x]\n").message


def test_billion_laughs_bounded():
    lines = ["a: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    t = time.perf_counter()
    e = perr("\n".join(lines) + "\n")
    assert "more than 200000 YAML nodes" in e.message and e.hint
    assert time.perf_counter() - t < 5


def test_size_limit(tmp_path):
    assert "too large" in perr(b"a: 1\n" + b"#" * (MAX_BYTES + 1)).message
    p = tmp_path / "big.yaml"
    p.write_bytes(b"#" * (MAX_BYTES + 10))
    with pytest.raises(SpecError, match="too large"):
        load(p)


def test_huge_numbers():
    e = perr("a: " + "9" * 5000 + "\n")
    assert "not a valid int" in e.message and (e.line, e.col) == (1, 4)
    assert parse("a: 1e400\n").root.plain()["a"] == float("inf")
    with pytest.raises(SpecError, match="too large"):
        load("netspec: 1\nname: t\ninput: [3, 8, 8]\nlayers:\n"
             "  - conv: {out: 99999999999999999999, kernel: 3}\n")
