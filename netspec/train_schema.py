"""The ``train:`` section: its schema as data, and ``validate_train(node) -> dict``.

The schema (``TRAIN``) is a tree of ``Group`` (a mapping of named fields), ``Field``
(a typed value with default), ``Choice`` (a one-key mapping ``{option: params}``, e.g.
``optimizer: {sgd: {lr: 0.1}}``), ``Enum`` (an option whose value is a word,
``{standardize: per_channel}``) and ``ListOf`` (a list of choices, e.g. ``augment``).
``netspec schema`` generates its JSON Schema from the same tree (netspec/schema.py).

``validate_train`` returns plain data with every default filled, in the same shape as
the YAML: one-key choices stay one-key dicts (``{"sgd": {"lr": 0.01, ...}}``); lists and
pairs are lists. Keys and defaults are those of docs/spec-language.md, plus:

* optimizer aliases ``adamw``/``sgdw`` (decoupled weight decay), ``nesterov``, ``momentum``
  (as compiler/optim.py accepts) and the torch-style optimizer-level regularization keys
  (``sgd: {weight_decay: 5.0e-4}``), which are moved to ``regularization``;
* ``warmup_epochs`` inside a schedule's mapping (DESIGN.md's sketch writes it there);
* the augmentation options runtime/augment.py implements (``fill``, ``ratio``,
  ``interpolation``, ``flip: {direction, p}``, ``clip``) and plateau's ``mode``,
  ``threshold``, ``cooldown``, ``min_lr`` (runtime/schedules.py).
Cross-field checks: ``data.path`` is required for every source but ``digits``;
``val_split + test_split < 1``; nesterov needs momentum > 0; ``snapshot_ensemble`` needs
the ``sgdr`` schedule; metrics on the validation split need ``val_split > 0``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import Loc, did_you_mean
from .values import choice_hint, coerce
from .yamlsrc import Document, YMap, YNode, YScalar, YSeq, from_plain, show

OMIT = object()   # optional field without a default: absent from the result unless given


@dataclass(frozen=True)
class Field:
    type: str                      # int | float | bool | str | floats | ints
    default: Any = OMIT
    doc: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    nullable: bool = False
    length: int | None = None      # exact list length (pairs)


@dataclass(frozen=True)
class Group:
    fields: dict = field(default_factory=dict)
    doc: str = ""
    nullable: bool = False         # `key: null` allowed (and is the default when null_default)
    null_default: bool = False
    shorthand: str | None = None   # a bare word sets this field: `flip: vertical`


@dataclass(frozen=True)
class Enum:
    values: tuple
    default: str
    doc: str = ""


@dataclass(frozen=True)
class Choice:
    options: dict                  # option name -> Group | Enum
    default: Any                   # plain one-key dict, validated like user input
    doc: str = ""


@dataclass(frozen=True)
class ListOf:
    item: Choice
    default: list
    doc: str = ""


@dataclass(frozen=True)
class Weights:
    """A mapping of names (the spec's outputs) to non-negative weights; default {}."""
    doc: str = ""


def _lr(v):
    return Field("float", v, "learning rate", min=0.0)


_REG = {
    "weight_decay": Field("float", 0.0, "L2 coefficient", min=0.0),
    "decoupled": Field("bool", False, "decoupled weight decay (AdamW / SGDW style)"),
    "l1": Field("float", 0.0, "L1 coefficient (elastic net = l1 + weight_decay)", min=0.0),
    "max_norm": Field("float", None, "max-norm constraint on each unit's incoming weights",
                      min=0.0, nullable=True),
    "clip_grad_norm": Field("float", None, "clip the global gradient norm", min=0.0,
                            nullable=True),
    "decay_all": Field("bool", False, "also decay biases and normalisation parameters"),
}
_OPT_REG = {k: Field(f.type, OMIT, f"same as regularization.{k} (torch style)", f.min,
                     f.max, nullable=f.nullable) for k, f in _REG.items()}
_SGD = Group({"lr": _lr(0.01), "momentum": Field("float", 0.0, "momentum", min=0.0),
              "nesterov": Field("bool", False, "Nesterov momentum (needs momentum > 0)"),
              **_OPT_REG}, "stochastic gradient descent")
_ADAM = Group({"lr": _lr(0.001),
               "betas": Field("floats", [0.9, 0.999], "[beta1, beta2]", 0.0, 1.0, length=2),
               "eps": Field("float", 1.0e-8, "denominator epsilon", min=0.0), **_OPT_REG},
              "Adam (Kingma & Ba 2015)")
_METRICS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
_EMPTY = Group({}, "no parameters")

TRAIN = Group({
    "data": Group({
        "source": Field("str", "digits", "data set", choices=("digits", "mnist", "cifar10",
                                                            "npz", "folder")),
        "path": Field("str", None, "file or folder (required except for digits)",
                      nullable=True),
        "val_split": Field("float", 0.1, "fraction held out for validation", 0.0, 0.99),
        "test_split": Field("float", 0.2, "fraction held out for testing", 0.0, 0.99),
        "seed": Field("int", 0, "seed of the split", min=0),
    }, "where the data comes from and how it is split"),
    "preprocess": ListOf(Choice({
        "standardize": Enum(("per_channel", "global"), "per_channel",
                            "(x - mean) / std, statistics from the training split"),
        "mean_subtract": Enum(("per_pixel", "per_channel"), "per_channel",
                              "x - mean (image or per channel)"),
        "rescale": Group({"scale": Field("float", 0.00392156862745098, "multiplier"),
                          "shift": Field("float", -0.5, "added after scaling")},
                         "x * scale + shift"),
        "zca_whiten": Group({"eps": Field("float", 0.1, "added to the covariance's eigenvalues",
                                          min=0.0)},
                            "ZCA whitening (decorrelated pixels, shape kept), fitted on the "
                            "training split; samples of at most 4096 values"),
    }, None, "a preprocessing step"), [{"standardize": "per_channel"}],
        "preprocessing steps, fitted on the training split, in order"),
    "augment": ListOf(Choice({
        "random_crop": Group({"pad": Field("int", 4, "zero padding per side", min=0),
                              "fill": Field("float", 0.0, "pad value"),
                              "size": Field("ints", None, "[h, w] crop size (default: the image "
                                            "size); smaller crops train on random (h, w) "
                                            "windows and evaluate on the centre one (AlexNet)",
                                            min=1, length=2, nullable=True)},
                             "pad, then crop at a random offset"),
        "random_scale_crop": Group({
            "scale": Field("floats", [0.8, 1.0], "area fraction range", 0.0, 1.0, length=2),
            "ratio": Field("floats", [0.75, 1.3333333333333333], "aspect ratio range",
                           min=0.0, length=2),
            "interpolation": Field("str", "bilinear", "resize method",
                                   choices=("bilinear", "nearest"))},
            "crop a random region, resize back"),
        "flip": Group({"direction": Field("str", "horizontal", "mirror axis",
                                          choices=("horizontal", "vertical")),
                       "p": Field("float", 0.5, "probability", 0.0, 1.0)},
                      "random mirroring", shorthand="direction"),
        "color_jitter": Group({"brightness": Field("float", 0.2, "max brightness change",
                                                   min=0.0),
                               "contrast": Field("float", 0.2, "max contrast change", min=0.0),
                               "saturation": Field("float", 0.2, "max saturation change",
                                                   min=0.0),
                               "clip": Field("bool", True, "clip to the data range")},
                              "random brightness / contrast / saturation"),
        "pca_color": Group({"std": Field("float", 0.1, "std of the PCA noise", min=0.0),
                            "clip": Field("bool", True, "clip to the data range")},
                           "AlexNet-style PCA colour noise"),
    }, None, "an augmentation"), [], "augmentations applied to training batches, in order"),
    "loss": Choice({
        "softmax_cross_entropy": Group({"label_smoothing": Field("float", 0.0,
                                                                 "label smoothing", 0.0, 1.0),
                                        "spatial": Field("bool", False,
                                                         "per-position classes (segmentation): "
                                                         "output (K, H, W), targets (H, W) of "
                                                         "class indices")},
                                       "softmax + cross-entropy"),
        "hinge": Group({"margin": Field("float", 1.0, "margin", min=0.0)}, "multiclass hinge"),
        "bce_with_logits": _EMPTY, "mse": _EMPTY,
    }, {"softmax_cross_entropy": {}}, "training loss"),
    "target": Field("str", "labels", "what the loss compares the output with: the data's class "
                    "labels, or the (preprocessed, augmented) input itself (autoencoders; "
                    "mse or bce_with_logits, output shaped like the input)",
                    choices=("labels", "input")),
    "loss_weights": Weights("the loss also applied to these extra outputs, weighted and added "
                            "to the first output's (weight 1): e.g. {aux1: 0.3} for GoogLeNet's "
                            "auxiliary classifiers; same loss, same targets"),
    "optimizer": Choice({
        "sgd": _SGD, "sgdw": _SGD, "momentum": Group({**_SGD.fields, "momentum": Field(
            "float", 0.9, "momentum", min=0.0)}, "SGD with momentum 0.9"),
        "nesterov": Group({**_SGD.fields, "momentum": Field("float", 0.9, "momentum", min=0.0),
                           "nesterov": Field("bool", True, "Nesterov momentum")},
                          "SGD with Nesterov momentum"),
        "adam": _ADAM, "adamw": _ADAM,
        "adagrad": Group({"lr": _lr(0.01), "eps": Field("float", 1.0e-10, "epsilon", min=0.0),
                          **_OPT_REG}, "Adagrad"),
        "rmsprop": Group({"lr": _lr(0.01), "alpha": Field("float", 0.99, "smoothing", 0.0, 1.0),
                          "eps": Field("float", 1.0e-8, "epsilon", min=0.0),
                          "momentum": Field("float", 0.0, "momentum", min=0.0), **_OPT_REG},
                         "RMSprop"),
        "lbfgs": Group({"lr": _lr(1.0), "history": Field("int", 10, "history size", min=1),
                        "max_iter": Field("int", 20, "iterations per step", min=1),
                        **_OPT_REG}, "L-BFGS (full batch)"),
    }, {"sgd": {}}, "optimizer"),
    "regularization": Group(dict(_REG), "weight decay, L1, max-norm, gradient clipping"),
    "schedule": Choice({name: Group({**f, "warmup_epochs": Field(
        "int", OMIT, "linear warmup epochs (same as train.warmup_epochs)", min=0)}, d)
        for name, f, d in [
            ("constant", {}, "constant learning rate"),
            ("step", {"step_size": Field("int", 10, "epochs per step", min=1),
                      "gamma": Field("float", 0.1, "factor per step", min=0.0)}, "step decay"),
            ("multistep", {"milestones": Field("ints", [30, 60], "epochs", min=0),
                           "gamma": Field("float", 0.1, "factor", min=0.0)}, "decay at epochs"),
            ("exponential", {"gamma": Field("float", 0.95, "factor per epoch", min=0.0)},
             "lr0 * gamma**t"),
            ("inverse_time", {"decay": Field("float", 0.1, "decay", min=0.0)},
             "lr0 / (1 + decay*t)"),
            ("cosine", {"min_lr": Field("float", 0.0, "final lr", min=0.0)}, "cosine annealing"),
            ("sgdr", {"t0": Field("int", 10, "first cycle (epochs)", min=1),
                      "t_mult": Field("int", 2, "cycle growth", min=1),
                      "min_lr": Field("float", 0.0, "lowest lr", min=0.0)}, "warm restarts"),
            ("plateau", {"factor": Field("float", 0.1, "reduction factor", 0.0, 1.0),
                         "patience": Field("int", 5, "epochs without improvement", min=0),
                         "metric": Field("str", "val_loss", "watched metric", choices=_METRICS),
                         "mode": Field("str", None, "min or max (default from the metric)",
                                       choices=("min", "max"), nullable=True),
                         "threshold": Field("float", 1.0e-4, "relative improvement", min=0.0),
                         "cooldown": Field("int", 0, "epochs to wait after a cut", min=0),
                         "min_lr": Field("float", 0.0, "lowest lr", min=0.0)},
             "reduce on plateau")]}, {"constant": {}}, "learning-rate schedule"),
    "warmup_epochs": Field("int", 0, "linear warmup, combined with any schedule", min=0),
    "batch_size": Field("int", 64, "images per step", min=1, max=1 << 20),
    "epochs": Field("int", 30, "training epochs", min=1, max=1 << 24),
    "seed": Field("int", 0, "seed for initialisation, shuffling and augmentation", min=0),
    "early_stopping": Group({"metric": Field("str", "val_accuracy", "watched metric",
                                             choices=_METRICS),
                             "patience": Field("int", 10, "epochs without improvement", min=0),
                             "restore_best": Field("bool", True, "restore the best weights")},
                            "stop when the metric stops improving", nullable=True,
                            null_default=True),
    "ema": Group({"decay": Field("float", 0.999, "EMA decay", 0.0, 1.0),
                  "warmup": Field("bool", True, "decay min(decay, (1+t)/(10+t)) at step t "
                                  "(TensorFlow's num_updates)")},
                 "Polyak/EMA weights for evaluation", nullable=True, null_default=True),
    "snapshot_ensemble": Field("bool", False, "with sgdr: keep a snapshot per cycle"),
}, "training configuration")


def _paths(g: Group, prefix: str, out: dict) -> dict:
    """key name -> [dotted paths where it is valid] (for 'belongs under' hints)."""
    for k, f in g.fields.items():
        out.setdefault(k, []).append(prefix + k)
        if isinstance(f, Group):
            _paths(f, prefix + k + ".", out)
    return out


_WHERE = _paths(TRAIN, "train.", {})


class _V:
    def __init__(self, doc: Document):
        self.doc = doc

    def group(self, g: Group, node: YNode | None, path: str) -> Any:
        if node is None:
            return None if g.null_default else self.group(g, YMap(Loc(self.doc.file)), path)
        if isinstance(node, YScalar) and node.value is None:
            if g.nullable:
                return None
            node = YMap(node.loc)
        if isinstance(node, YScalar) and g.shorthand and isinstance(node.value, str):
            node = YMap(node.loc, {g.shorthand: node}, {g.shorthand: node.loc})
        if not isinstance(node, YMap):
            raise self.doc.error(node, f"`{path}` must be a mapping, got {node.kind} "
                                 f"{show(node)}", "write `{key: value, ...}`"
                                 + (" or null" if g.nullable else ""))
        for k in node.items:
            if k not in g.fields:
                hint = did_you_mean(k, g.fields) if g.fields else f"`{path}` takes no keys"
                elsewhere = [p for p in _WHERE.get(k, []) if p.rsplit(".", 1)[0] != path]
                if elsewhere and not (hint or "").startswith("did"):
                    hint = f"`{k}` belongs under `{elsewhere[0].rsplit('.', 1)[0]}`"
                raise self.doc.error(node.key_loc(k), f"unknown key {k!r} in `{path}`", hint, k)
        out = {}
        for k, f in g.fields.items():
            sub = node.items.get(k)
            out_v = self.value(f, sub, f"{path}.{k}")
            if out_v is not OMIT:
                out[k] = out_v
        return out

    def value(self, f, node: YNode | None, path: str) -> Any:
        if isinstance(f, Group):
            return self.group(f, node, path)
        if isinstance(f, Choice):
            return self.choice(f, node if node is not None else from_plain(f.default), path)
        if isinstance(f, Weights):
            if node is None or (isinstance(node, YScalar) and node.value is None):
                return {}
            if not isinstance(node, YMap):
                raise self.doc.error(node, f"`{path}` must be a mapping {{output: weight}}, got "
                                     f"{node.kind} {show(node)}", "write `{aux: 0.3, ...}`")
            return {str(k): coerce(self.doc, v, "float", f"`{path}.{k}`", min=0.0)
                    for k, v in node.items.items()}
        if isinstance(f, ListOf):
            if node is None or (isinstance(node, YScalar) and node.value is None):
                node = from_plain(f.default) if node is None else YSeq(node.loc)
            if not isinstance(node, YSeq):
                raise self.doc.error(node, f"`{path}` must be a list, got {node.kind}",
                                     f"write `{path.split('.')[-1]}: [{{...}}, ...]`")
            return [self.choice(f.item, x, f"{path}[{i}]") for i, x in enumerate(node.items)]
        if node is None:
            if f.default is OMIT:
                return OMIT
            return list(f.default) if isinstance(f.default, list) else f.default
        t = "ints" if f.type == "ints" else f.type
        v = coerce(self.doc, node, t, f"`{path}`", min=f.min, max=f.max, choices=f.choices,
                   nullable=f.nullable)
        if f.length is not None and len(v) != f.length:
            raise self.doc.error(node, f"`{path}` must have {f.length} values, got {len(v)}")
        return list(v) if isinstance(v, tuple) else v

    def choice(self, c: Choice, node: YNode, path: str) -> dict:
        if isinstance(node, YScalar) and isinstance(node.value, str) and node.value in c.options:
            node = YMap(node.loc, {node.value: YScalar(node.loc, None)}, {node.value: node.loc})
        if not isinstance(node, YMap) or len(node.items) != 1:
            opts = ", ".join(c.options)
            got = f"{len(node.items)} keys" if isinstance(node, YMap) else \
                f"{node.kind} {show(node)}"
            raise self.doc.error(node, f"`{path}` must be a one-key mapping "
                                 f"{{option: parameters}}, got {got}", f"options: {opts}")
        (name, val), = node.items.items()
        if name not in c.options:
            raise self.doc.error(node.key_loc(name), f"unknown option {name!r} for `{path}`",
                                 choice_hint(name, c.options), name)
        opt = c.options[name]
        if isinstance(opt, Enum):
            if val is None or (isinstance(val, YScalar) and val.value is None):
                return {name: opt.default}
            return {name: coerce(self.doc, val, "str", f"`{path}.{name}`", choices=opt.values)}
        return {name: self.group(opt, val, f"{path}.{name}")}


def validate_train(node: "YNode | dict | None", doc: Document | None = None) -> dict:
    """Validate a ``train:`` section (a located node, a plain dict, or None for all
    defaults) -> plain dict with every default filled. Raises located SpecError."""
    if doc is None:
        doc = Document(YMap(Loc()), "<train>", [])
    if node is not None and not isinstance(node, YNode):
        node = from_plain(node, Loc(doc.file))
    v = _V(doc)
    out = v.group(TRAIN, node, "train")
    m = node if isinstance(node, YMap) else YMap(Loc(doc.file))
    _cross_checks(doc, out, m)
    return out


def _at(m: YMap, *keys) -> YNode | Loc:
    """Node at a path of keys, or the deepest existing one (for error locations)."""
    cur: Any = m
    for k in keys:
        if isinstance(cur, YMap) and k in cur.items:
            cur = cur.items[k]
        elif isinstance(cur, YMap) and len(cur.items) == 1 and k is None:
            cur = next(iter(cur.items.values()))
        else:
            break
    return cur


def _cross_checks(doc: Document, t: dict, m: YMap) -> None:
    d = t["data"]
    if d["source"] != "digits" and d["path"] is None:
        raise doc.error(_at(m, "data", "source"), f"data source {d['source']!r} needs a "
                        "`path`", "add `path: <file or folder>` to `train.data`")
    if d["val_split"] + d["test_split"] >= 1.0:
        raise doc.error(_at(m, "data"), "val_split + test_split must be below 1 (nothing "
                        "left to train on)", "lower val_split or test_split")
    (oname, o), = t["optimizer"].items()
    reg = t["regularization"]
    for k in list(o):
        if k in _REG:
            given = _at(m, "regularization", k)
            if isinstance(given, YScalar) and reg[k] != o[k]:
                raise doc.error(_at(m, "optimizer", None, k), f"{k} is set both in "
                                f"`optimizer.{oname}` and in `regularization`", "keep one")
            reg[k] = o.pop(k)
    if oname in ("adamw", "sgdw"):
        reg["decoupled"] = True
    if o.get("nesterov") and o.get("momentum", 0.0) <= 0.0:
        raise doc.error(_at(m, "optimizer", None, "nesterov"), "nesterov momentum needs "
                        "momentum > 0", "add e.g. `momentum: 0.9`")
    (sname, s), = t["schedule"].items()
    if sname == "plateau" and not 0.0 < s["factor"] < 1.0:
        raise doc.error(_at(m, "schedule", None, "factor"), f"plateau factor must be in (0, 1), "
                        f"got {s['factor']}", "e.g. `factor: 0.1` (multiply the lr by it on a plateau)")
    if t["snapshot_ensemble"] and sname != "sgdr":
        raise doc.error(_at(m, "snapshot_ensemble"), "snapshot_ensemble needs the sgdr "
                        "schedule (one snapshot per restart cycle)",
                        "set `schedule: {sgdr: {t0: 10}}`")
    uses = [(s.get("metric"), ("schedule", None, "metric"))] + \
           [((t["early_stopping"] or {}).get("metric"), ("early_stopping", "metric"))]
    for metric, keys in uses:
        if metric and metric.startswith("val_") and d["val_split"] <= 0.0:
            raise doc.error(_at(m, *keys), f"metric {metric!r} needs a validation split",
                            "set `train.data.val_split` above 0, or watch a train_ metric")
