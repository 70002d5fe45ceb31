"""Random hyperparameter search, coarse to fine (the seeds' "Hyperparameter Search").

The seeds' recipe: random layouts beat grids (an unimportant parameter does not waste
trials); sample the learning rate and regularisation strength on a LOG scale; first a
coarse stage of short runs over wide ranges, then finer stages over ranges narrowed around
the best results; score on the validation split.

* ``space``: {name: distribution}; distributions ``{"log": [lo, hi]}`` (log-uniform),
  ``{"uniform": [lo, hi]}``, ``{"int": [lo, hi]}`` (inclusive) and ``{"choice": [...]}``.
  Names are paths into the ``train:`` section (``regularization.l1``,
  ``schedule.cosine.min_lr``) or the aliases ``lr``/``momentum`` (the spec's optimizer),
  ``weight_decay``/``l1`` (``regularization``, or the optimizer mapping when the spec
  writes it there), ``batch_size``, ``label_smoothing`` (epochs come from ``stages``).
  Default: lr log [1e-4, 1e-1], weight_decay log [1e-6, 1e-2].
* ``stages``: [(trials, epochs), ...], default [(8, 1), (4, 3)].  After each stage the ranges
  of the numeric parameters shrink to the span of the ``top_k`` best trials, widened by 10%
  of the previous (log-)width and clipped to it; choices keep the values of the top trials.
* ``train_fn(spec, out_dir, epochs) -> summary dict`` with ``val_accuracy`` (default: a short
  ``runtime.train.train`` run with ``resume=True``, so a killed trial continues); a run that
  diverges scores NaN (status "diverged") and the search goes on.
* Output in ``out``: ``results.csv`` (one row per trial, sorted by score, best first,
  rewritten atomically after every trial), ``trials/<id>/`` (each run's files) and
  ``best.yaml`` -- the original spec file's mapping (``yaml.safe_load``) with the ``train:``
  section updated by the best trial's values, written with ``yaml.safe_dump``.
* Resumable: trial ids are ``s<stage>t<k>`` and every configuration is drawn from a
  generator seeded by (seed, stage); trials already in ``results.csv`` are not run again
  (their recorded values are used for narrowing), so an interrupted search continues where
  it stopped and ends with the same CSV.
"""
from __future__ import annotations

import copy
import csv
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

from .metrics import write_summary

DEFAULT_SPACE = {"lr": {"log": [1e-4, 1e-1]}, "weight_decay": {"log": [1e-6, 1e-2]}}
DEFAULT_STAGES = ((8, 1), (4, 3))
_REG_KEYS = ("weight_decay", "l1", "max_norm", "clip_grad_norm")
_FIXED_COLS = ["trial", "stage", "epochs", "score", "status", "train_loss", "seconds"]


class SearchError(ValueError):
    pass


class SearchInterrupted(KeyboardInterrupt):
    """A trial was interrupted (Ctrl-C / SIGTERM): the search stops without recording it;
    rerunning the same command resumes that trial from its checkpoint."""


# ----------------------------------------------------------------------------- the space

def parse_param(text: str) -> tuple[str, dict]:
    """``"lr=log:1e-4,1e-1"`` | ``"momentum=uniform:0.8,0.99"`` | ``"batch_size=choice:32,64"``
    | ``"epochs=int:1,4"`` -> (name, distribution)."""
    try:
        name, rest = text.split("=", 1)
        kind, vals = rest.split(":", 1)
    except ValueError:
        raise SearchError(f"bad --param {text!r}: expected NAME=KIND:A,B (e.g. lr=log:1e-4,1e-1)")
    items = [v.strip() for v in vals.split(",") if v.strip()]
    kind = kind.strip()
    if kind == "choice":
        return name.strip(), {"choice": [_scalar(v) for v in items]}
    if kind not in ("log", "uniform", "int") or len(items) != 2:
        raise SearchError(f"bad --param {text!r}: KIND is log, uniform, int (two bounds) or choice")
    return name.strip(), _check_dist(name, {kind: [float(items[0]), float(items[1])]})


def _scalar(v: str):
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def _check_dist(name, d: dict) -> dict:
    if not isinstance(d, dict) or len(d) != 1:
        raise SearchError(f"{name}: a distribution is one of {{log|uniform|int|choice: ...}}")
    (kind, v), = d.items()
    if kind == "choice":
        if not v:
            raise SearchError(f"{name}: empty choice")
        return d
    if kind not in ("log", "uniform", "int") or len(v) != 2 or not v[0] <= v[1]:
        raise SearchError(f"{name}: {kind} needs [low, high] with low <= high")
    if kind == "log" and v[0] <= 0:
        raise SearchError(f"{name}: a log-uniform range must be positive")
    return d


def sample(space: dict, rng: np.random.Generator) -> dict:
    """One configuration: {name: value} (values rounded to 6 significant digits)."""
    out = {}
    for name, d in space.items():
        (kind, v), = d.items()
        if kind == "log":
            x = float(math.exp(rng.uniform(math.log(v[0]), math.log(v[1]))))
        elif kind == "uniform":
            x = float(rng.uniform(v[0], v[1]))
        elif kind == "int":
            x = int(rng.integers(int(v[0]), int(v[1]) + 1))
        else:
            x = v[int(rng.integers(len(v)))]
        out[name] = float(f"{x:.6g}") if isinstance(x, float) else x
    return out


def narrow(space: dict, best: list[dict]) -> dict:
    """Ranges around the values of the best configurations (see the module docstring)."""
    if not best:
        return space
    new = {}
    for name, d in space.items():
        (kind, v), = d.items()
        vals = [b[name] for b in best if name in b]
        if not vals:
            new[name] = d
        elif kind == "choice":
            new[name] = {"choice": [c for c in v if c in vals] or v}
        else:
            f = (lambda t: math.log(t)) if kind == "log" else (lambda t: t)
            g = (lambda t: math.exp(t)) if kind == "log" else (lambda t: t)
            lo, hi = f(float(v[0])), f(float(v[1]))
            pad = 0.1 * (hi - lo)
            a = max(lo, min(f(float(x)) for x in vals) - pad)
            b = min(hi, max(f(float(x)) for x in vals) + pad)
            rng_ = [g(a), g(b)]
            if kind == "int":
                rng_ = [int(math.floor(rng_[0])), int(math.ceil(rng_[1]))]
            new[name] = {kind: rng_}
    return new


# ----------------------------------------------------------------------------- spec editing

def _opt_name(raw_train: dict, spec) -> str:
    o = raw_train.get("optimizer")
    if isinstance(o, dict) and len(o) == 1:
        return next(iter(o))
    if isinstance(o, str):
        return o
    (name, _), = (getattr(spec, "train", None) or {"optimizer": {"sgd": {}}})["optimizer"].items()
    return name


def apply_overrides(raw: dict, cfg: dict, spec=None) -> dict:
    """A deep copy of the spec mapping ``raw`` with the train values of ``cfg`` set."""
    raw = copy.deepcopy(raw)
    tr = raw.get("train")
    if not isinstance(tr, dict):
        tr = raw["train"] = {}
    oname = _opt_name(tr, spec)
    opt = tr.get("optimizer")
    if not isinstance(opt, dict):
        opt = tr["optimizer"] = {oname: {}}
    if not isinstance(opt.get(oname), dict):
        opt[oname] = {}
    for name, value in cfg.items():
        if name in ("lr", "momentum"):
            path = ["optimizer", oname, name]
        elif name in _REG_KEYS:
            path = ["optimizer", oname, name] if name in opt[oname] else ["regularization", name]
        elif name == "label_smoothing":
            path = ["loss", "softmax_cross_entropy", "label_smoothing"]
        else:
            path = name.split(".")
        node = tr
        for k in path[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[path[-1]] = value
    return raw


def spec_with(raw: dict, cfg: dict, spec, file: str):
    """Load the overridden mapping as a Spec (named after ``file`` so relative data paths
    resolve as in the original).  SpecError when an override is invalid."""
    import netspec
    import yaml
    return netspec.load(yaml.safe_dump(apply_overrides(raw, cfg, spec), sort_keys=False), file=file)


# ----------------------------------------------------------------------------- results

def read_results(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for r in rows:
        d = {k: _scalar(v) if v != "" else None for k, v in r.items()}
        d["trial"] = r["trial"]
        d["score"] = float(r["score"]) if r.get("score") not in (None, "", "nan") else math.nan
        out[r["trial"]] = d
    return out


def _sort_key(r):
    s = r.get("score")
    return (0, -s) if isinstance(s, (int, float)) and not math.isnan(s) else (1, 0)


def write_results(path: Path, rows: list[dict], params: list[str]) -> None:
    cols = _FIXED_COLS[:4] + params + _FIXED_COLS[4:]
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        for r in sorted(rows, key=_sort_key):
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    os.replace(tmp, path)


def default_train_fn(spec, out_dir, epochs: int) -> dict:
    from .train import train
    # resume a trial that was killed; a fresh one starts without train's "no checkpoint" note
    resume = (Path(out_dir) / "checkpoint.npz").is_file()
    return train(spec, out_dir, epochs=epochs, resume=resume, progress=False)


# ----------------------------------------------------------------------------- the search

def _same_search(out: Path, setup: dict) -> None:
    """``out/search.json`` records the spec, seed, stages and space a search directory was
    started with; a rerun with other ones would silently reuse trials sampled for them."""
    import json
    p = out / "search.json"
    if p.is_file():
        try:
            old = json.loads(p.read_text())
        except ValueError:
            old = None
        if isinstance(old, dict):
            diff = [k for k in setup if k in old and old[k] != setup[k]]
            if diff:
                raise SearchError(f"{out} holds a search started with another {', '.join(diff)} "
                                  f"({'; '.join(f'{k}: {old[k]}' for k in diff)}); rerun it with "
                                  f"the same settings to continue, or choose another --out")
            return
    write_summary(p, setup)          # atomic JSON (runtime/metrics.py)


def random_search(spec_path, out_dir, space: dict | None = None, stages=DEFAULT_STAGES,
                  top_k: int = 3, seed: int = 0, train_fn: Callable | None = None,
                  log: Callable[[str], None] | None = None) -> list[dict]:
    """Run (or continue) the search; returns the result rows sorted best first."""
    import netspec
    import yaml
    spec_path = Path(spec_path)
    spec = netspec.load(spec_path)
    raw = yaml.safe_load(spec_path.read_text())
    space = {k: _check_dist(k, v) for k, v in (space or DEFAULT_SPACE).items()}
    params = list(space)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    _same_search(out, {"spec": str(spec_path.resolve()), "seed": int(seed),
                       "stages": [[int(n), int(e)] for n, e in stages],
                       "space": {k: str(v) for k, v in space.items()}})
    rows = read_results(csv_path)
    train_fn = train_fn or default_train_fn
    log = log or (lambda s: None)
    cur = space
    for s, (n, epochs) in enumerate(stages):
        rng = np.random.default_rng([seed, s])
        stage_rows = []
        for t in range(int(n)):
            tid = f"s{s}t{t:03d}"
            cfg = sample(cur, rng)
            if tid in rows:
                stage_rows.append(rows[tid])
                log(f"{tid}: done before (score {rows[tid]['score']})")
                continue
            row = {"trial": tid, "stage": s, "epochs": int(epochs), **cfg}
            try:
                sp = spec_with(raw, cfg, spec, str(spec_path))
                summ = train_fn(sp, out / "trials" / tid, int(epochs)) or {}
                if summ.get("status") == "interrupted":
                    raise SearchInterrupted(f"trial {tid} interrupted; rerun the same command to "
                                            f"continue the search")
                score = float(summ.get("val_accuracy", math.nan))
                row.update(score=score, status=summ.get("status", "completed"),
                           train_loss=summ.get("train_loss"), seconds=summ.get("seconds"))
            except netspec.SpecError as e:
                raise SearchError(f"trial {tid}: the overridden spec is invalid: {e}") from e
            except (ArithmeticError, RuntimeError) as e:   # TrainingDiverged is a RuntimeError
                row.update(score=math.nan, status="diverged", error=str(e)[:200])
            rows[tid] = row
            stage_rows.append(row)
            write_results(csv_path, list(rows.values()), params)
            log(f"{tid}: score {row['score']:.4f}  " + ", ".join(f"{k}={cfg[k]}" for k in params))
        good = sorted([r for r in stage_rows if not math.isnan(r["score"])], key=_sort_key)
        cur = narrow(cur, good[:top_k])
    ordered = sorted(rows.values(), key=_sort_key)
    write_results(csv_path, ordered, params)
    best = next((r for r in ordered if not math.isnan(r["score"])), None)
    if best is not None:
        cfg = {k: best[k] for k in params if best.get(k) is not None}
        (out / "best.yaml").write_text(
            f"# best of {len(ordered)} trials ({best['trial']}, val_accuracy {best['score']:.4f})\n"
            + yaml.safe_dump(apply_overrides(raw, cfg, spec), sort_keys=False))
    return ordered
