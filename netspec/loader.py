"""``load(path_or_text) -> Spec``: the spec language front end (docs/spec-language.md).

Pipeline: safe YAML with locations (``yamlsrc.parse``) -> top-level keys -> block
definitions -> expansion of ``layers`` (sequential, blocks with ``$arg`` substitution,
``repeat``/``first``) into a flat list of ``LayerSpec`` in written order, with
hierarchical PyTorch-style names and ``from:`` resolved to producer names -> outputs,
init, train.  Every problem is a ``SpecError`` located at the offending value.  Name and
``from:`` resolution and ``$arg`` substitution live in ``scope.py`` (the ``Resolver`` mixin).

Decisions not spelled out in the language doc:
* ``freeze`` and ``lr_mult`` (``netspec.layers.COMMON_ATTRS``) are stored in
  ``LayerSpec.attrs`` for every layer (defaults false / 1.0). On a block instance or a
  sequential they apply to every layer inside (freeze is or-ed, lr_mult multiplied).
* Relative indices count the entries of the current scope (a block instance or a
  sequential counts as one entry, its output being its last layer); ``-k`` may reach
  back to the scope's input (``-1`` on the first entry is the scope input).
* A block instance or sequential name (``layer1``, ``layer1.0``, ``features``) can be
  used in ``from:``/``outputs`` and stands for its last layer.
* Layer names may not be ``input`` (reserved for ``from: input``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .blocks import INSTANCE_KEYS, BlockArg, BlockDef, check_bodies, coerce_arg, parse_blocks
from .errors import Loc, SpecError, did_you_mean, layer_type_hint
from .scope import Resolver, Scope, _name_hint
from .spec import INPUT, LayerSpec, Spec
from .values import coerce
from .yamlsrc import MAX_BYTES, Document, YMap, YNode, YScalar, YSeq, parse, show

VERSION = 1
SPEC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")
TOP_KEYS = ("netspec", "name", "input", "blocks", "layers", "outputs", "train", "init")
MAX_LAYERS = 20_000   # ResNet-152 has ~500 layers; bounds expansion time (~1 s)
MAX_REPEAT = 10_000
STRUCTURAL = ("name", "from")


def load(path_or_text: "str | os.PathLike | bytes", *, file: str | None = None) -> Spec:
    """Load and expand a spec.

    ``path_or_text``: a ``Path``; a ``str`` naming an existing file (a one-line string
    ending in .yaml/.yml is taken as a path even if missing -> FileNotFoundError); YAML
    text (``str`` or ``bytes``). ``file`` overrides the name used in messages.
    Raises SpecError for every problem in the spec, OSError when a file cannot be read."""
    data, name = _read(path_or_text, file)
    return _Expander(parse(data, name)).run()


def _read(src, file):
    if isinstance(src, os.PathLike) or (
            isinstance(src, str) and "\n" not in src and src.strip()
            and (src.endswith((".yaml", ".yml")) or os.path.isfile(src))):
        p = Path(src)
        with open(p, "rb") as f:     # bounded read: /dev/zero or a FIFO report st_size 0
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            size = p.stat().st_size if p.is_file() else None
            got = f"{size} bytes" if size else "not a regular file"
            raise SpecError(f"spec file too large ({got}; limit {MAX_BYTES} bytes)",
                            file or str(p), 1, 1, hint="a spec should be a few kilobytes")
        return data, file or str(p)
    if isinstance(src, (str, bytes, bytearray)):
        return src, file or "<spec>"
    raise TypeError(f"load() takes a path or YAML text, not {type(src).__name__}")


def _registry() -> dict:
    from . import layers  # noqa: F401  (importing the package registers the catalogue)
    from .layers.base import REGISTRY
    return REGISTRY


def _common_attrs() -> dict:
    from . import layers
    return getattr(layers, "COMMON_ATTRS", {})


class _Expander(Resolver):
    def __init__(self, doc: Document):
        self.doc = doc
        self.reg = _registry()
        self.common = _common_attrs()
        self.blocks: dict[str, BlockDef] = {}
        self.layers: list[LayerSpec] = []
        self.defined: dict[str, Loc] = {}    # every name (layers and groups) -> where
        self.stack: list[str] = []           # blocks being expanded (recursion check)
        self.top: Scope | None = None

    # ------------------------------------------------------------------ errors
    def err(self, where, message, hint=None, value=None, scope: Scope | None = None):
        """A located SpecError (``scope`` is accepted for readability; the block call
        sites are added by ``_entry`` to every error raised inside a block)."""
        return self.doc.error(where, message, hint, value)

    @staticmethod
    def _note(e: SpecError, scope: Scope) -> None:
        if scope.trace and not getattr(e, "_traced", False):
            where = "; ".join(f"in block used at {loc}" for loc in reversed(scope.trace))
            e.hint = f"{e.hint}\nnote: {where}" if e.hint else f"(this layer is {where})"
            e._traced = True

    # ------------------------------------------------------------------ top level
    def run(self) -> Spec:
        root, doc = self.doc.root, self.doc
        if "netspec" not in root.items:
            raise self.err(Loc(doc.file, 1, 1), "missing the language version `netspec: 1`",
                           "add `netspec: 1` as the first line")
        v = root.items["netspec"]
        val = v.value if isinstance(v, YScalar) else None
        if isinstance(val, int) and not isinstance(val, bool):
            if val != VERSION:
                raise self.err(v, f"unsupported spec language version {val}",
                               f"this netspec reads version {VERSION} specs: write "
                               f"`netspec: {VERSION}` and see docs/spec-language.md", val)
        else:
            raise self.err(v, f"`netspec:` must be the integer {VERSION}, got {v.kind}"
                           + (f" {show(val)}" if isinstance(v, YScalar) else ""),
                           f"write `netspec: {VERSION}`", val)
        for k in root.items:
            if k not in TOP_KEYS:
                raise self.err(root.key_loc(k), f"unknown top-level key {k!r}",
                               did_you_mean(k, TOP_KEYS), k)
        for k in ("name", "input", "layers"):
            if k not in root.items:
                raise self.err(Loc(doc.file, 1, 1), f"missing required top-level key {k!r}",
                               {"name": "add e.g. `name: mynet`",
                                "input": "add the input shape without batch, e.g. "
                                         "`input: [3, 32, 32]`",
                                "layers": "add `layers:` with a list of layers"}[k])
        name = coerce(doc, root.items["name"], "str", "`name`")
        if not SPEC_NAME.match(name):
            raise self.err(root.items["name"], f"invalid spec name {name!r}",
                           "use letters, digits, '_' and '-', starting with a letter or '_'",
                           name)
        inode = root.items["input"]
        if not isinstance(inode, YSeq) or len(inode.items) not in (1, 3):
            raise self.err(inode, "`input` must be a list [C, H, W] (or [F] for vectors), got "
                           + (f"a list of {len(inode.items)}" if isinstance(inode, YSeq)
                              else f"{inode.kind} {show(inode)}"),
                           "e.g. `input: [3, 32, 32]` (channels, height, width; no batch)")
        shape = coerce(doc, inode, "ints", "`input`", min=1, max=2 ** 31 - 1)
        if "blocks" in root.items:
            self.blocks = parse_blocks(doc, root.items["blocks"],
                                       set(self.reg) | {"sequential", INPUT})
            check_bodies(doc, self.blocks, self.reg)
        lnode = root.items["layers"]
        self.top = Scope(prefix="", input=INPUT, outs=[INPUT])
        self._entries(lnode, self.top, "`layers`")
        outputs = self._outputs(root.items.get("outputs"))
        init = self._init(root.items.get("init"))
        from .train_schema import validate_train
        tnode = root.items.get("train")
        train = validate_train(None if _is_null(tnode) else tnode, doc)
        locs = {}
        if train.get("loss_weights"):
            train["loss_weights"] = self._loss_weights(tnode.items["loss_weights"], outputs, locs)
        return Spec(name=name, version=VERSION, input_shape=tuple(shape), layers=self.layers,
                    outputs=outputs, train=train, init=init, file=doc.file,
                    source_lines=doc.lines, input_loc=inode.loc, locs=locs)

    def _loss_weights(self, node: YMap, outputs: list[str], locs: dict) -> dict[str, float]:
        """``train.loss_weights`` keys resolved like ``outputs`` entries; each must be one of
        the outputs after the first (whose loss has weight 1).  locs[("loss_weights", name)]
        gets each key's location."""
        out = {}
        for k, v in node.items.items():
            prod = self._lookup(str(k), self.top)
            if prod is None or prod not in outputs:
                raise self.err(node.key_loc(k), f"`train.loss_weights` names {k!r}, which is not "
                               f"one of the spec's `outputs` {outputs}",
                               "list the extra head in `outputs` first (after the main output)", k)
            if prod == outputs[0]:
                raise self.err(node.key_loc(k), f"`train.loss_weights` names the first output "
                               f"{k!r}: its loss always has weight 1",
                               "weight the extra outputs relative to it", k)
            out[prod] = float(coerce(self.doc, v, "float", f"`train.loss_weights.{k}`", min=0.0))
            locs[("loss_weights", prod)] = node.key_loc(k)
        return out

    def _outputs(self, node) -> list[str]:
        if _is_null(node):
            return [self.layers[-1].name]
        items = node.items if isinstance(node, YSeq) else [node]
        if not items:
            raise self.err(node, "`outputs` is empty", "remove it (the default is the last "
                           "layer) or list layer names")
        out: list[str] = []
        for it in items:
            ref = coerce(self.doc, it, "str", "`outputs` entry")
            if ref == INPUT:
                raise self.err(it, "the net input cannot be an output",
                               "list layer names (add an identity-like layer if you need the "
                               "input back)", ref)
            prod = self._lookup(ref, self.top)
            if prod is None:
                raise self.err(it, f"`outputs` names unknown layer {ref!r}",
                               _name_hint(ref, self.top.local, "list layer names"), ref)
            if prod in out:
                raise self.err(it, f"output {ref!r} is listed twice", "remove one", ref)
            out.append(prod)
        return out

    def _init(self, node) -> dict | None:
        if _is_null(node):
            return None
        m = self._map(node, "`init`", ("checkpoint", "skip"))
        if "checkpoint" not in m.items:
            raise self.err(node, "`init` needs `checkpoint: <path>`", "e.g. "
                           "`init: {checkpoint: runs/base/checkpoint.npz}`")
        ck = coerce(self.doc, m.items["checkpoint"], "str", "`init.checkpoint`")
        skip = []
        sk = m.items.get("skip")
        for it in (sk.items if isinstance(sk, YSeq) else [] if _is_null(sk) else [sk]):
            s = coerce(self.doc, it, "str", "`init.skip` entry")
            if s not in self.defined:
                raise self.err(it, f"`init.skip` names unknown layer {s!r}",
                               _name_hint(s, self.defined, "list layer names"), s)
            skip.append(s)
        return {"checkpoint": ck, "skip": skip}

    def _map(self, node, what: str, keys, scope=None) -> YMap:
        if _is_null(node):
            return YMap(node.loc)
        if not isinstance(node, YMap):
            raise self.err(node, f"{what} must be a mapping, got {node.kind} {show(node)}",
                           "write `{key: value, ...}`", scope=scope)
        for k in node.items:
            if k not in keys:
                raise self.err(node.key_loc(k), f"unknown key {k!r} in {what}",
                               did_you_mean(k, keys), k, scope)
        return node

    # ------------------------------------------------------------------ blocks
    # ------------------------------------------------------------------ expansion
    def _entries(self, lnode, scope: Scope, what: str) -> None:
        if not isinstance(lnode, YSeq):
            raise self.err(lnode, f"{what} must be a list of layers, got {lnode.kind}",
                           "write each layer as a list item: `- conv: {out: 16, kernel: 3}`",
                           scope=scope)
        if not lnode.items:
            raise self.err(lnode, f"{what} is empty", "add at least one layer", scope=scope)
        for i, e in enumerate(lnode.items):
            try:
                self._entry(e, scope, i)
            except SpecError as err:
                self._note(err, scope)
                raise

    def _entry(self, node: YNode, scope: Scope, index: int) -> None:
        if isinstance(node, YScalar) and isinstance(node.value, str):
            raise self.err(node, f"layer entry {node.value!r} is not a mapping",
                           f"write `- {node.value}: {{}}`", node.value, scope)
        if not isinstance(node, YMap) or not node.items:
            raise self.err(node, f"a layer entry must be a one-key mapping `- TYPE: {{attrs}}`"
                           f", got {node.kind}", "e.g. `- conv: {out: 16, kernel: 3}`",
                           scope=scope)
        keys = list(node.items)
        if len(keys) > 1:
            first = keys[0]
            hint = (f"indent the attributes under `{first}:` (or write `- {first}: "
                    f"{{{keys[1]}: ...}}`)" if _is_null(node.items[first]) else
                    "start each layer with its own '-'")
            raise self.err(node.key_loc(keys[1]), f"a layer entry has one key (its type); "
                           f"found {keys[1]!r} after {first!r}", hint, keys[1], scope)
        tname, tloc = keys[0], node.key_loc(keys[0])
        body = node.items[tname]
        if isinstance(tname, str) and tname.startswith("$"):     # `- $act: {}`: a str argument
            if scope.env is None:
                raise self.err(tloc, f"layer type {tname!r} outside a block",
                               "a `$name` layer type is a str argument of the block it is in", tname, scope)
            if tname[1:] in scope.env:
                tname = str(scope.env[tname[1:]].value)
                if tname == "identity" and isinstance(body, YMap):
                    # the "no layer" choice: the attributes belong to the other choices
                    body = YMap(body.loc, {k: v for k, v in body.items.items() if k in ("name", "from")},
                                body.key_locs)
        if _is_null(body):
            body = YMap(body.loc)
        if not isinstance(body, YMap):
            raise self.err(body, f"the attributes of {tname!r} must be a mapping, got "
                           f"{body.kind} {show(body)}",
                           f"write `- {tname}: {{...}}` (or `- {tname}: {{}}`)", scope=scope)
        if len(self.layers) >= MAX_LAYERS:     # this entry would add layer MAX_LAYERS + 1
            raise self.err(tloc, f"the spec expands to more than {MAX_LAYERS} layers",
                           "check `repeat` values", scope=scope)
        if tname == "sequential":
            self._sequential(tname, tloc, body, scope, index)
        elif tname in self.blocks:
            self._block_use(self.blocks[tname], tloc, body, scope, index)
        elif tname in self.reg:
            self._layer(tname, tloc, body, scope, index)
        else:
            cands = list(self.reg) + list(self.blocks) + ["sequential"]
            raise self.err(tloc, f"unknown layer type {tname!r}",
                           layer_type_hint(tname, cands) or "`netspec schema` lists all types; "
                           "blocks must be defined under `blocks:`", tname, scope)

    def _flags(self, a: dict[str, YNode], scope: Scope) -> tuple[bool, float]:
        c = self.common
        fr = coerce(self.doc, a["freeze"], "bool", "`freeze`") if "freeze" in a else False
        lr = 1.0
        if "lr_mult" in a:
            at = c.get("lr_mult")
            lr = coerce(self.doc, a["lr_mult"], "float", "`lr_mult`",
                        min=at.min if at else 0.0, max=at.max if at else None)
        return scope.freeze or fr, scope.lr_mult * lr

    def _layer(self, tname: str, tloc: Loc, body: YMap, scope: Scope, index: int) -> None:
        ld = self.reg[tname]
        ctype = ld.type
        a = self._attrs(body, scope)
        allowed = list(ld.attrs) + list(STRUCTURAL) + ["freeze", "lr_mult"]
        self._check_keys(body, allowed, f"{ctype} layer", scope, {
            k: f"`{k}` is for block instances and sequential, not single layers"
            for k in ("repeat", "first", "layers")})
        full = scope.prefix + self._name(a, ctype, scope, index)
        inputs = self._inputs(a.get("from"), scope)
        what = f"{ctype} layer {full!r}"
        if ld.arity is not None and len(inputs) != ld.arity:
            raise self.err(a.get("from", tloc), f"{what} takes {ld.arity} input"
                           f"{'s' if ld.arity != 1 else ''}, but `from` gives {len(inputs)}",
                           "give one layer name or index" if ld.arity == 1 else None,
                           scope=scope)
        attrs: dict[str, Any] = {}
        locs: dict[str, Loc] = {k: a[k].loc for k in STRUCTURAL if k in a}
        for key, at in ld.attrs.items():
            if key in a:
                attrs[key] = coerce(self.doc, a[key], at.type, f"{what}: `{key}`", min=at.min,
                                    max=at.max, choices=tuple(at.choices),
                                    nullable=at.default is None)
                locs[key] = a[key].loc
            elif at.required:
                raise self.err(tloc, f"{what} is missing required attribute {key!r}",
                               f"add `{key}: ...`" + (f" ({at.doc})" if at.doc else ""),
                               scope=scope)
            else:
                attrs[key] = at.default
        attrs["freeze"], attrs["lr_mult"] = self._flags(a, scope)
        for k in ("freeze", "lr_mult"):
            if k in a:
                locs[k] = a[k].loc
        self._define(full, full, tloc, scope, a.get("name"))
        self.layers.append(LayerSpec(full, ctype, attrs, inputs, tloc, locs, scope.trace))
        scope.outs.append(full)

    def _sequential(self, tname, tloc, body: YMap, scope: Scope, index: int) -> None:
        a = self._attrs(body, scope, skip=("layers",))
        self._check_keys(body, ("name", "from", "layers", "freeze", "lr_mult"), "sequential",
                         scope)
        if "layers" not in a:
            raise self.err(tloc, "sequential needs `layers:`", "e.g. `- sequential: {name: "
                           "features, layers: [...]}`", scope=scope)
        full = scope.prefix + self._name(a, "sequential", scope, index)
        self._claim(full, "sequential", tloc, scope, a.get("name"))
        src = self._inputs(a.get("from"), scope)
        if len(src) != 1:
            raise self.err(a["from"], "a sequential takes one input", scope=scope)
        fr, lr = self._flags(a, scope)
        sub = Scope(prefix=full + ".", input=scope.input, outs=[src[0]], parent=scope,
                    by_index=True, env=scope.env, block=scope.block, trace=scope.trace,
                    freeze=fr, lr_mult=lr)
        self._entries(a["layers"], sub, f"`layers` of sequential {full!r}")
        self._define(full, sub.outs[-1], tloc, scope, a.get("name"))
        scope.outs.append(sub.outs[-1])

    def _block_use(self, bd: BlockDef, tloc: Loc, body: YMap, scope: Scope, index: int):
        if bd.name in self.stack:
            cycle = " -> ".join(self.stack[self.stack.index(bd.name):] + [bd.name])
            raise self.err(tloc, f"block {bd.name!r} uses itself ({cycle})",
                           "blocks cannot be recursive; use `repeat`", bd.name, scope)
        a = self._attrs(body, scope)
        allowed = list(bd.args) + list(INSTANCE_KEYS)
        self._check_keys(body, allowed, f"block {bd.name!r}", scope)
        repeat = None
        if "repeat" in a:
            repeat = coerce(self.doc, a["repeat"], "int", "`repeat`", min=1, max=MAX_REPEAT)
        env: dict[str, YNode] = {}
        for an, arg in bd.args.items():
            if an in a:
                env[an] = self._argval(arg, a[an], bd)
            elif arg.default is not None:
                env[an] = self._argval(arg, arg.default, bd)
            else:
                raise self.err(tloc, f"block {bd.name!r} needs argument {an!r} ({arg.type})",
                               f"add `{an}: ...`", an, scope)
        first = dict(env)
        if "first" in a:
            fm = a["first"]
            if not isinstance(fm, YMap):
                raise self.err(fm, "`first` must be a mapping of block arguments",
                               "e.g. `first: {stride: 2}`", scope=scope)
            for k, v in fm.items.items():
                if k not in bd.args:
                    raise self.err(fm.key_loc(k), f"`first` sets unknown argument {k!r} of "
                                   f"block {bd.name!r}", did_you_mean(k, bd.args), k, scope)
                first[k] = self._argval(bd.args[k], v, bd)
        tmpl = self._name_template(a, repeat, scope)
        full = scope.prefix + self._name(a, bd.name, scope, index)
        if tmpl is not None:      # `name: denselayer{i}`: instances denselayer1, denselayer2, ...
            full = scope.prefix + tmpl.replace("{i}", "")
        self._claim(full, "block instance", tloc, scope, a.get("name"))
        src = self._inputs(a.get("from"), scope)
        if len(src) != 1:
            raise self.err(a["from"], f"block {bd.name!r} takes one input", scope=scope)
        fr, lr = self._flags(a, scope)
        cur = src[0]
        self.stack.append(bd.name)
        for r in range(repeat or 1):
            inst = f"{full}.{r}" if repeat is not None else full
            if tmpl is not None:
                inst = scope.prefix + tmpl.replace("{i}", str(r + 1))
            sub = Scope(prefix=inst + ".", input=cur, outs=[cur], parent=scope,
                        env=first if r == 0 else env, block=bd.name,
                        trace=scope.trace + (tloc,), freeze=fr, lr_mult=lr)
            self._entries(bd.layers, sub, f"`layers` of block {bd.name!r}")
            cur = sub.outs[-1]
            if repeat is not None:
                self._define(inst, cur, tloc, scope, a.get("name"))
        self.stack.pop()
        self._define(full, cur, tloc, scope, a.get("name"))
        scope.outs.append(cur)

    def _name_template(self, a: dict, repeat, scope: Scope) -> str | None:
        """A repeated instance named with ``{i}`` (``denselayer{i}``: torchvision DenseNet's
        1-based, separator-free names) -> the template; ``a["name"]`` is replaced by its
        first instance's name so the usual name rules check it."""
        node = a.get("name")
        if not (isinstance(node, YScalar) and isinstance(node.value, str) and "{i}" in node.value):
            return None
        if repeat is None:
            raise self.err(node, "`{i}` in a name numbers the repetitions of `repeat`",
                           "add `repeat: N`, or remove `{i}`", node.value, scope)
        rest = node.value.replace("{i}", "")
        if node.value.count("{i}") != 1 or "{" in rest or "}" in rest or not rest or rest.endswith("."):
            raise self.err(node, f"invalid name template {node.value!r}",
                           "use {i} once, after a name: `denselayer{i}`", node.value, scope)
        a["name"] = YScalar(node.loc, node.value.replace("{i}", "1"), node.text)
        return node.value

    def _argval(self, arg: BlockArg, node: YNode, bd: BlockDef) -> YNode:
        v = coerce_arg(self.doc, node, arg.type, f"argument {arg.name!r} of block {bd.name!r}")
        if isinstance(node, YSeq):           # a list argument (ints / floats): substituted as a list
            return YSeq(node.loc, [YScalar(x.loc, e, x.text if isinstance(x, YScalar) else str(e))
                                   for x, e in zip(node.items, v)])
        return YScalar(node.loc, v, node.text if isinstance(node, YScalar) else str(v))


def _is_null(node) -> bool:
    return node is None or (isinstance(node, YScalar) and node.value is None)
