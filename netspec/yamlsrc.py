"""Safe YAML -> located plain values.

``parse(text_or_bytes, file)`` returns a ``Document`` whose ``root`` is a tree of
``YMap`` / ``YSeq`` / ``YScalar`` nodes; every node knows its ``Loc`` (file, 1-based
line and column) so that every later error can point at the offending value.
``node.plain()`` turns a subtree into ordinary dicts, lists and scalars.

Only PyYAML's *composer* is used (``SafeLoader`` scanner/parser/resolver); values are
built here, never by a YAML constructor, so no Python object can ever be created.
What is rejected (always as a located ``SpecError`` with a hint, in bounded time):

* explicit tags other than the standard ``!!str !!int !!float !!bool !!null !!map !!seq``;
* duplicate mapping keys (reported at the second occurrence), merge keys ``<<``,
  non-scalar keys;
* bytes that are not UTF-8, characters YAML does not allow;
* a top level that is not a mapping, an empty document, several documents;
* nesting deeper than ``MAX_DEPTH`` (also catches recursive aliases), more than
  ``MAX_NODES`` nodes after alias expansion ("billion laughs"), files over ``MAX_BYTES``.

Scalars resolve as in YAML 1.1 (PyYAML's SafeLoader: ints incl. ``0x``, floats,
bools incl. yes/no/on/off, null) with two changes: YAML 1.2 floats without a dot
(``1e-3``) are floats too (editors using YAML 1.2 agree), and timestamps stay strings.
Mapping keys are always the key's source text (``1:`` gives the key ``"1"``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from .errors import Loc, SpecError

MAX_BYTES = 256 * 1024      # a spec is a few KiB; bounds parse time (pyyaml is ~8 µs a node)
MAX_DEPTH = 100               # nesting levels (maps + lists)
MAX_NODES = 200_000           # nodes after alias expansion

_STD = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_STD + t for t in ("str", "int", "float", "bool", "null")}
_ALLOWED_TAGS = _SCALAR_TAGS | {_STD + "map", _STD + "seq"}


# ---------------------------------------------------------------------------- nodes
@dataclass(eq=False)
class YNode:
    loc: Loc

    def plain(self) -> Any:
        raise NotImplementedError

    @property
    def kind(self) -> str:
        """Human name of the value's type, for error messages."""
        raise NotImplementedError


@dataclass(eq=False)
class YScalar(YNode):
    value: Any = None          # str, int, float, bool or None
    text: str = ""             # the source text of the scalar
    quoted: bool = False

    def plain(self) -> Any:
        return self.value

    @property
    def kind(self) -> str:
        return kind_of(self.value)


@dataclass(eq=False)
class YSeq(YNode):
    items: list[YNode] = field(default_factory=list)

    def plain(self) -> list:
        return [i.plain() for i in self.items]

    @property
    def kind(self) -> str:
        return "a list"


@dataclass(eq=False)
class YMap(YNode):
    items: dict[str, YNode] = field(default_factory=dict)
    key_locs: dict[str, Loc] = field(default_factory=dict)

    def plain(self) -> dict:
        return {k: v.plain() for k, v in self.items.items()}

    @property
    def kind(self) -> str:
        return "a mapping"

    def key_loc(self, key: str) -> Loc:
        return self.key_locs.get(key, self.loc)


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def show(value: Any, limit: int = 60) -> str:
    """Short YAML-ish rendering of a value for messages."""
    if isinstance(value, YNode):
        value = value.plain() if _small(value) else f"<{value.kind}>"
    if value is None:
        s = "null"
    elif isinstance(value, bool):
        s = "true" if value else "false"
    elif isinstance(value, str):
        s = repr(value)
    else:
        s = repr(value)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _small(node: YNode, budget: int = 50) -> bool:
    stack, n = [node], 0
    while stack:
        x = stack.pop()
        n += 1
        if n > budget:
            return False
        if isinstance(x, YSeq):
            stack.extend(x.items)
        elif isinstance(x, YMap):
            stack.extend(x.items.values())
    return True


def from_plain(value: Any, loc: Loc | None = None) -> YNode:
    """Wrap plain Python values as nodes (locations unknown), e.g. a train dict from code."""
    loc = loc or Loc()
    if isinstance(value, dict):
        return YMap(loc, {str(k): from_plain(v, loc) for k, v in value.items()},
                    {str(k): loc for k in value})
    if isinstance(value, (list, tuple)):
        return YSeq(loc, [from_plain(v, loc) for v in value])
    return YScalar(loc, value, str(value))


@dataclass
class Document:
    root: YMap
    file: str
    lines: list[str]

    def error(self, where: "YNode | Loc | None", message: str, hint: str | None = None,
              value: Any = None) -> SpecError:
        loc = where.loc if isinstance(where, YNode) else where
        return SpecError.at(loc or Loc(self.file, 1, 1), message, hint, value, self.lines)


# ---------------------------------------------------------------------------- loader
_FLOAT12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer bounds nesting depth (composition is recursive)."""

    yaml_implicit_resolvers = {
        k: [(t, r) for t, r in v if t not in (_STD + "timestamp", _STD + "merge",
                                             _STD + "value", _STD + "yaml")]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream, file: str, lines: list[str]):
        super().__init__(stream)
        self._depth = 0
        self._file = file
        self._lines = lines

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise SpecError.at(_loc_of(mark, self._file),
                                   f"YAML nesting deeper than {MAX_DEPTH} levels",
                                   "a spec never needs this much nesting; use blocks",
                                   None, self._lines)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


for _c in "-+0123456789":
    _Loader.add_implicit_resolver(_STD + "float", _FLOAT12, [_c])

_CONSTRUCT = SafeConstructor()


def _loc_of(mark, file: str) -> Loc:
    return Loc(file, mark.line + 1, mark.column + 1) if mark is not None else Loc(file, 1, 1)


_YAML_HINTS = [
    ("found character '\\t'", "YAML indentation must use spaces, not tabs"),
    ("mapping values are not allowed", "a ':' inside a value: quote the value, or check the "
     "indentation of this line"),
    ("expected <block end>", "check the indentation: items of one list or mapping must "
     "start in the same column"),
    ("could not find expected ':'", "each mapping entry needs 'key: value' (a space after ':')"),
    ("found undefined alias", "define the anchor (&name) before using *name"),
    ("expected a single document", "a spec is one YAML document: remove the '---' separator"),
    ("found unexpected end of stream", "a quote or bracket is not closed"),
    ("did not find expected ',' or ']'", "a '[' flow list is not closed or an item lacks a ','"),
    ("did not find expected ',' or '}'", "a '{' flow mapping is not closed or an entry lacks "
     "a ','"),
    ("expected ',' or '}'", "close the '{' flow mapping with '}' (or add the missing ',')"),
    ("expected ',' or ']'", "close the '[' flow list with ']' (or add the missing ',')"),
]


def _yaml_error(e: yaml.YAMLError, file: str, lines: list[str]) -> SpecError:
    pm, cm = getattr(e, "problem_mark", None), getattr(e, "context_mark", None)
    mark = pm or cm
    problem = getattr(e, "problem", None) or str(e)
    if pm is not None and cm is not None and (pm.line >= len(lines) or "<stream end>" in problem):
        mark = cm      # ran off the end of the file: point at what was left open, not past the end
    ctx = getattr(e, "context", None)
    msg = f"invalid YAML: {problem}" + (f" ({ctx})" if ctx else "")
    hint = next((h for pat, h in _YAML_HINTS if pat in msg), None)
    return SpecError.at(_loc_of(mark, file), msg, hint, None, lines)


def _decode(data: bytes, file: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        before = data[: e.start]
        line = before.count(b"\n") + 1
        col = len(before) - (before.rfind(b"\n") + 1) + 1
        raise SpecError(f"the spec is not valid UTF-8 (byte 0x{data[e.start]:02x})", file,
                        line, col, hint="save the file as UTF-8") from None


def parse(source: "str | bytes", file: str = "<spec>") -> Document:
    """Parse one YAML document into located nodes; the top level must be a mapping.

    Raises SpecError for everything listed in the module docstring."""
    if isinstance(source, (bytes, bytearray)):
        if len(source) > MAX_BYTES:
            raise SpecError(f"spec file too large ({len(source)} bytes; limit {MAX_BYTES})",
                            file, 1, 1, hint="a spec should be a few kilobytes")
        text = _decode(bytes(source), file)
    else:
        text = source[1:] if source.startswith("\ufeff") else source
        if len(text) > MAX_BYTES:
            raise SpecError(f"spec text too large ({len(text)} characters; limit {MAX_BYTES})",
                            file, 1, 1, hint="a spec should be a few kilobytes")
    lines = text.splitlines()
    try:
        loader = _Loader(text, file, lines)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as e:
        pos = e.position
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        raise SpecError.at(Loc(file, line, col),
                           f"character U+{int(e.character):04X} is not allowed in YAML",
                           "remove control characters from the file", None, lines) from None
    except yaml.YAMLError as e:
        raise _yaml_error(e, file, lines) from None
    except RecursionError:  # defensive: the depth limit above should come first
        raise SpecError("YAML nesting too deep", file, 1, 1,
                        hint=f"at most {MAX_DEPTH} levels") from None
    doc = Document(YMap(Loc(file, 1, 1)), file, lines)
    if node is None:
        raise doc.error(Loc(file, 1, 1), "the spec is empty",
                        "a spec starts with `netspec: 1`, then name, input and layers")
    _check_expansion(node, doc)
    root = _Builder(doc).build(node, 0)
    if not isinstance(root, YMap):
        raise doc.error(root, f"the top level of a spec must be a mapping, not {root.kind}",
                        "a spec starts with `netspec: 1`, then name, input and layers")
    doc.root = root
    return doc


def _check_expansion(root, doc: Document) -> None:
    """Refuse alias bombs before building anything: the expanded node count of every
    composed node, memoised by identity (an alias is the same node object), costs time
    linear in the text, not in the expansion. Located at the first node whose expansion
    alone exceeds MAX_NODES. A node containing itself (recursive alias) is left to the
    builder's depth limit."""
    size: dict[int, int] = {}
    visiting: set[int] = set()
    stack = [(root, False)]
    while stack:
        n, done = stack.pop()
        if id(n) in size:
            continue
        kids = ([] if isinstance(n, ScalarNode) else n.value if isinstance(n, SequenceNode)
                else [x for kv in n.value for x in kv])
        if not done:
            if id(n) in visiting:       # a cycle: the builder reports it as too deep
                return
            visiting.add(id(n))
            stack.append((n, True))
            stack.extend((k, False) for k in kids if id(k) not in size)
            continue
        visiting.discard(id(n))
        total = 1 + sum(size.get(id(k), 0) for k in kids)
        if total > MAX_NODES:
            raise doc.error(_loc_of(n.start_mark, doc.file), f"the spec expands to more than "
                            f"{MAX_NODES} YAML nodes (aliases expanding exponentially?)",
                            "do not nest aliases (*name) of aliases")
        size[id(n)] = total


class _Builder:
    """Turns composed yaml nodes into Y* nodes, expanding aliases with a node budget."""

    def __init__(self, doc: Document):
        self.doc = doc
        self.count = 0

    def build(self, node, depth: int) -> YNode:
        self.count += 1
        loc = _loc_of(node.start_mark, self.doc.file)
        if self.count > MAX_NODES:
            raise self.doc.error(loc, f"the spec expands to more than {MAX_NODES} YAML nodes "
                                 "(aliases expanding exponentially?)",
                                 "do not nest aliases (*name) of aliases")
        if depth > MAX_DEPTH:
            raise self.doc.error(loc, f"YAML nesting deeper than {MAX_DEPTH} levels "
                                 "(a recursive alias?)", "an anchor cannot contain its own alias")
        tag = node.tag
        if tag not in _ALLOWED_TAGS:
            raise self.doc.error(loc, f"YAML tag {_short_tag(tag)!r} is not allowed in a spec",
                                 "specs are plain data: remove the tag (only !!str, !!int, "
                                 "!!float, !!bool, !!null are accepted)", tag)
        if isinstance(node, ScalarNode):
            if tag not in _SCALAR_TAGS:
                raise self.doc.error(loc, f"tag {_short_tag(tag)!r} cannot be used on a scalar")
            return YScalar(loc, self._scalar(node, loc), node.value, node.style is not None)
        if isinstance(node, SequenceNode):
            if tag != _STD + "seq":
                raise self.doc.error(loc, f"tag {_short_tag(tag)!r} cannot be used on a list")
            return YSeq(loc, [self.build(c, depth + 1) for c in node.value])
        if isinstance(node, MappingNode):
            if tag != _STD + "map":
                raise self.doc.error(loc, f"tag {_short_tag(tag)!r} cannot be used on a mapping")
            out = YMap(loc)
            for knode, vnode in node.value:
                kloc = _loc_of(knode.start_mark, self.doc.file)
                if knode.tag not in _ALLOWED_TAGS:
                    raise self.doc.error(kloc, f"YAML tag {_short_tag(knode.tag)!r} is not "
                                         "allowed in a spec", "remove the tag", knode.tag)
                if not isinstance(knode, ScalarNode):
                    raise self.doc.error(kloc, "mapping keys must be plain words, not "
                                         + ("a list" if isinstance(knode, SequenceNode)
                                            else "a mapping"))
                if knode.tag not in _SCALAR_TAGS:
                    raise self.doc.error(kloc, f"YAML tag {_short_tag(knode.tag)!r} is not "
                                         "allowed in a spec", "remove the tag", knode.tag)
                key = knode.value
                if key == "<<" and knode.style is None:
                    raise self.doc.error(kloc, "YAML merge keys (<<) are not supported",
                                         "write the keys out, or use a block (see "
                                         "docs/spec-language.md)")
                if key in out.items:
                    first = out.key_locs[key]
                    raise self.doc.error(kloc, f"duplicate key {key!r}",
                                         f"{key!r} is already set at line {first.line}, "
                                         f"column {first.col}; remove one of them", key)
                self.count += 1
                out.key_locs[key] = kloc
                out.items[key] = self.build(vnode, depth + 1)
            return out
        raise self.doc.error(loc, "unsupported YAML node")  # pragma: no cover

    def _scalar(self, node: ScalarNode, loc: Loc) -> Any:
        tag = node.tag
        try:
            if tag == _STD + "str":
                return node.value
            if tag == _STD + "null":
                return None
            if tag == _STD + "bool":
                return _CONSTRUCT.construct_yaml_bool(node)
            if tag == _STD + "int":
                if len(node.value) > 64:
                    raise ValueError("too many digits")
                return _CONSTRUCT.construct_yaml_int(node)
            if tag == _STD + "float":
                if len(node.value) > 400:
                    raise ValueError("too many digits")
                return _CONSTRUCT.construct_yaml_float(node)
        except (ValueError, TypeError, KeyError, OverflowError):
            kind = tag[len(_STD):]
            raise self.doc.error(loc, f"{node.value[:40]!r} is not a valid {kind}",
                                 "integers and floats are at most 64 digits long" if
                                 len(node.value) > 64 else None, node.value[:40]) from None
        raise self.doc.error(loc, f"unsupported scalar tag {tag!r}")  # pragma: no cover


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_STD):] if tag.startswith(_STD) else tag
