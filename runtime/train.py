"""The training loop: ``train(spec, out_dir, ...) -> summary dict`` (used by ``netspec train``).

Per run (``out_dir``) it writes ``metrics.csv`` + ``curves.png`` (every epoch),
``checkpoint.npz`` (atomic, every epoch and on Ctrl-C), ``best.npz`` (early stopping's best
weights), ``snapshot_<k>.npz`` (snapshot ensembles) and ``summary.json``.

Determinism / exact resume.  Three Generators, all seeded from ``train.seed``:
``order`` (the epoch's shuffle; its state is saved at the start of the epoch), ``aug``
(augmentation) and ``net.rng`` (dropout ...).  A checkpoint stores those states, the net's
state_dict (params, buffers, optimizer slots, step_count), the preprocessing statistics, the
schedule state, early-stopping / snapshot bookkeeping, the epoch and the number of batches
already done in it, so ``resume=True`` continues exactly as an uninterrupted run would --
also from a Ctrl-C in the middle of an epoch (the loop stops at a step boundary).

Divergence: a non-finite loss, or non-finite parameters after an update, raises
``TrainingDiverged`` naming the epoch and step; the last good checkpoint is left untouched.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import data as D
from .checkpoint import load_checkpoint, rng_state, save_checkpoint
from .distributed import DistContext, train_step   # [distributed]
from .ensemble import evaluate_ensemble
from .lbfgs import LBFGS, check_lbfgs_config, lbfgs_epoch, random_layers
from .metrics import write_summary
from .augment import Augmenter, center_crop, eval_crop
from .preprocess import Preprocessor
from .rundir import Interrupt, RunLock, check_resume, clear_run, prepare_out, remove_if_empty
from .schedules import make_schedule
from .train_utils import (EMA, check_data_fits, check_targets, check_trainable, data_config, evaluate,
                          fold_summary, has_class_probs, load_weights, net_arrays, predicted_class, restore_net,
                          weights_of, write_metrics)

PLOT_EVERY_S = 20.0   # curves.png is redrawn at most this often during a run, and at its end


class TrainingDiverged(RuntimeError):
    """Loss or parameters became NaN/Inf; the message names epoch and step."""


def _load_spec(spec):
    if isinstance(spec, (str, Path)):
        import netspec
        return netspec.load(spec)
    return spec


def _default_factory(backend: str):
    def make(spec, batch_size):
        import compiler
        return compiler.compile(spec, backend=backend, batch_size=batch_size, train=True)
    return make


def train(spec, out_dir, *, epochs: int | None = None, batch_size: int | None = None,
          data: Any = None, resume: bool = False, folds: int | None = None,
          progress: bool = True, backend: str = "cpu",
          net_factory: Callable | None = None, hooks: dict | None = None,
          distributed: bool = False, overwrite: bool = False) -> dict:
    """Train ``spec`` (a netspec Spec or a path) and write the run files into ``out_dir``.

    ``data``: a source name, a path or a dict overriding ``train.data`` (or a
    ``runtime.data.Dataset``).  ``folds=K``: K-fold cross-validation over train+val, one
    sub-directory ``fold<i>`` per fold; the summary reports mean/std val accuracy.
    ``net_factory(spec, batch_size) -> net`` replaces ``compiler.compile`` (tests);
    ``hooks``: {"after_step": f(ctx)} called after every step (tests inject NaN / Ctrl-C).
    ``distributed=True`` [distributed]: data-parallel over the MPI ranks (runtime/distributed.py):
    the batch size is global (each rank compiles batch/K), only rank 0 writes files, and the
    other ranks return ``{"status": ..., "distributed_rank": r}``.  One training per
    ``out_dir`` at a time (runtime/rundir.py RunLock); ``overwrite`` first removes the run
    files already there (the CLI refuses an existing run without --resume or --overwrite).
    Returns the summary dict (also in ``out_dir/summary.json``).  Raises TrainingDiverged,
    runtime.data.DataError, runtime.checkpoint.CheckpointError, ValueError.
    """
    t0 = time.perf_counter()
    spec = _load_spec(spec)
    from netspec.spec import Spec
    report = None                    # (a test double's spec has none)
    if isinstance(spec, Spec):       # before the run directory, the data and the compile:
        import netspec               # a spec error leaves no empty directory behind, and a
        report = netspec.check(spec)     # net with nothing to train costs no compile
        check_trainable(report)
    cfg = dict(getattr(spec, "train", None) or {})
    out = Path(out_dir)
    ctx = DistContext.create(distributed)                          # [distributed]
    created = not out.exists()
    prepare_out(out)
    try:
        with RunLock(out) if ctx.is_root else contextlib.nullcontext():
            if overwrite and ctx.is_root:
                clear_run(out)
            return _train(spec, cfg, out, ctx, t0, epochs=epochs, batch_size=batch_size, data=data,
                          resume=resume, folds=folds, progress=progress, backend=backend,
                          net_factory=net_factory, hooks=hooks, report=report)
    except BaseException:
        if created:               # failed before writing anything: leave no empty directory
            remove_if_empty(out)
        raise


def _train(spec, cfg, out, ctx, t0, *, epochs, batch_size, data, resume, folds, progress, backend,
           net_factory, hooks, report) -> dict:
    """train() inside the run directory's lock."""
    dcfg = data_config(cfg.get("data"), None if isinstance(data, D.Dataset) else data)
    ds = data if isinstance(data, D.Dataset) else D.load_dataset(dcfg, base_dir=D.spec_dir(spec))
    splits = D.split_dataset(ds, float(dcfg.get("val_split", 0.1)), float(dcfg.get("test_split", 0.2)),
                             int(dcfg.get("seed", 0)))
    factory = net_factory or _default_factory(backend)
    run_kw = dict(epochs=epochs, batch_size=batch_size, resume=resume, progress=progress,
                  factory=factory, hooks=hooks or {}, ctx=ctx, report=report,
                  data_desc="the given Dataset" if isinstance(data, D.Dataset) else
                  str(dcfg.get("path") or dcfg.get("source") or "digits (the built-in default)"))
    if not folds:
        summary = _Run(spec, cfg, out, splits, **run_kw).run()
    else:
        xs = np.concatenate([splits.train[0], splits.val[0]])
        ys = np.concatenate([splits.train[1], splits.val[1]])
        per = []
        for i, (tr, va) in enumerate(D.kfold(len(ys), int(folds), int(cfg.get("seed", 0)))):
            sp = D.Splits((xs[tr], ys[tr]), (xs[va], ys[va]), splits.test, splits.class_names)
            fdir = out / f"fold{i}"
            done = fdir / "summary.json"
            skip = resume and done.is_file() and json.loads(done.read_text()).get("status") == "completed"
            if ctx.bcast_object(skip if ctx.is_root else None):   # [distributed] rank 0 decides
                per.append(json.loads(done.read_text()) if ctx.is_root else {"status": "completed"})
                continue
            per.append(_Run(spec, cfg, fdir, sp, **run_kw).run())
            if per[-1].get("status") != "completed":
                return per[-1]
        summary = fold_summary(per) if ctx.is_root else {"status": "completed"}   # [distributed]
    summary["seconds"] = time.perf_counter() - t0
    if not ctx.is_root:                                            # [distributed]
        return {"status": summary.get("status"), "distributed_rank": ctx.rank}
    write_summary(out / "summary.json", summary)
    return summary


class _Run:
    """One training run in one directory (a fold is one run)."""

    def __init__(self, spec, cfg, out: Path, splits, *, epochs, batch_size, resume, progress,
                 factory, hooks, ctx=None, data_desc="the training data", report=None):
        self.spec, self.cfg, self.out, self.hooks = spec, cfg, out, hooks
        self.ctx = ctx or DistContext()                            # [distributed]
        self.class_names = list(splits.class_names)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.ctx.distributed and self.ctx.abort_log is None:    # [distributed] see abort()
            self.ctx.abort_log = self.out / "dist_abort.log"
        self.epochs = int(epochs if epochs is not None else cfg.get("epochs", 30))
        self.B = int(batch_size if batch_size is not None else cfg.get("batch_size", 64))
        self.progress, self.resume = progress, resume
        seed = int(cfg.get("seed", 0))
        self._last_plot = time.monotonic()
        self.order_rng = np.random.default_rng([seed, 1])
        self.aug_rng = np.random.default_rng([seed, 2])
        (xtr, ytr), (xva, yva), (xte, yte) = splits.train, splits.val, splits.test
        if len(ytr) < self.B:
            raise ValueError(f"the training split has {len(ytr)} images, fewer than one batch "
                             f"of {self.B}; lower --batch-size")
        self.ckpt_path = out / "checkpoint.npz"
        ck = load_checkpoint(self.ckpt_path) if resume and self.ckpt_path.is_file() and self.ctx.is_root else None
        ck = self.ctx.bcast_object(ck, what="broadcast of the checkpoint")   # [distributed]
        if resume and ck is None and self.ctx.is_root:
            print(f"note: no checkpoint at {self.ckpt_path}; starting from scratch", file=sys.stderr)
        self.pre = (Preprocessor.from_state(cfg.get("preprocess"), {k[5:]: v for k, v in ck[0].items()
                                                                    if k.startswith("prep/")})
                    if ck else Preprocessor(cfg.get("preprocess")).fit(xtr))
        self.xtr, self.ytr = self.pre.apply(xtr), ytr
        self.xva, self.yva = self.pre.apply(xva) if len(yva) else xva.astype(np.float32), yva
        self.xte, self.yte = self.pre.apply(xte) if len(yte) else xte.astype(np.float32), yte
        crop = eval_crop(cfg.get("augment"))          # random (h, w) training crops: evaluate
        if crop and self.xva.ndim == 4:               # on the centre window
            self.xva, self.xte = center_crop(self.xva, crop), center_crop(self.xte, crop)
        # train.target: input (autoencoders): the loss compares the output with the input the
        # net saw; the labels still drive the stratified split
        self.recon = cfg.get("target", "labels") == "input"
        if self.ytr.ndim > 1 and cfg.get("augment") and not self.recon:
            raise ValueError("train.augment moves the images' pixels but not the per-pixel targets "
                             f"(labels of shape {self.ytr.shape[1:]}); remove train.augment")
        self.tva, self.tte = (self.xva, self.xte) if self.recon else (self.yva, self.yte)
        self.ctx.check_same([len(self.ytr), float(np.sum(self.ytr, dtype=np.float64)),    # [distributed]
                             float(np.sum(self.xtr, dtype=np.float64)), len(self.yva), len(self.yte)],
                            "training data")
        self.aug = Augmenter(cfg.get("augment"), self.xtr)
        check_data_fits(spec, self.aug(self.xtr[:1], np.random.default_rng(0)).shape[1:], data_desc)
        check_targets(report, cfg, self.xtr, self.ytr, self.recon)     # before compiling
        tc = time.perf_counter()
        self.net = factory(self.spec, self.ctx.local_batch(self.B))   # [distributed] B is global
        self.compile_seconds = time.perf_counter() - tc
        check_trainable(self.net)
        if ck is None and getattr(self.spec, "init", None) and hasattr(self.net, "params"):
            # transfer learning: start from another run's weights (init: {checkpoint, skip})
            from .transfer import apply_spec_init
            rep = apply_spec_init(self.net, self.spec)
            if rep is not None and self.ctx.is_root and progress:
                print(f"initialised from {self.spec.init['checkpoint']}: {rep.format()}", file=sys.stderr)
        from compiler.optim import resolve_config
        self.opt_cfg = resolve_config(cfg)
        self.spe = len(self.ytr) // self.B
        self.sched = make_schedule(cfg.get("schedule"), self.opt_cfg.lr, self.epochs, self.spe,
                                   float(cfg.get("warmup_epochs") or 0))
        self.net.rng.bit_generator.state = np.random.default_rng([seed, 3]).bit_generator.state
        es = cfg.get("early_stopping") or None
        self.es = dict({"metric": "val_accuracy", "patience": 10, "restore_best": True}, **es) if es else None
        if self.es and len(self.yva) == 0:
            print("warning: early stopping needs a validation split; disabled", file=sys.stderr)
            self.es = None
        ema = cfg.get("ema") or None
        self.ema = EMA(self.net.param_arena, (ema or {}).get("decay", 0.999),
                       (ema or {}).get("warmup", True)) if ema else None
        self.snap = bool(cfg.get("snapshot_ensemble"))
        self.lbfgs = None
        if self.opt_cfg.name == "lbfgs":
            if self.ctx.distributed:                               # [distributed]
                raise ValueError("L-BFGS (full-batch) does not support --distributed")
            check_lbfgs_config(self.opt_cfg, cfg, getattr(self.net, "param_info", {}),
                               random_layers(self.net))
            self.lbfgs = LBFGS(int(self.opt_cfg.hyper["history"]), self.opt_cfg.lr)
        # bookkeeping (all in checkpoint meta)
        self.epoch, self.batch, self.rows = 0, 0, []
        self.loss_sum, self.loss_n, self.train_seconds, self.train_images = 0.0, 0, 0.0, 0
        self.correct, self.seen = 0, 0    # train accuracy: the steps' own train-mode outputs
        self.first_step_seconds = None    # the process's first step (numba JIT), not in img/s
        self.best, self.best_epoch, self.bad, self.snapshots, self.done = None, 0, 0, [], False
        self.order_state = rng_state(self.order_rng)
        if ck:
            self._restore(*ck)
        self.ctx.broadcast_params(self.net)                        # [distributed] replicas equal
        self.ctx.decorrelate_rng(self.net.rng)                     # [distributed] dropout per rank

    # ------------------------------------------------------------------ checkpoint
    def _meta(self, net_scalars) -> dict:
        return dict(spec=getattr(self.spec, "name", "?"), epoch=self.epoch, batch=self.batch,
                    epochs=self.epochs, batch_size=self.B, net_scalars=net_scalars,
                    order_rng=self.order_state, aug_rng=rng_state(self.aug_rng),
                    net_rng=rng_state(self.net.rng), schedule=self.sched.state(), rows=self.rows,
                    loss_sum=self.loss_sum, loss_n=self.loss_n, correct=self.correct, seen=self.seen,
                    train_seconds=self.train_seconds,
                    train_images=self.train_images, best=self.best, best_epoch=self.best_epoch,
                    bad=self.bad, snapshots=self.snapshots, done=self.done,
                    optimizer=self.opt_cfg.name, train_cfg=self.cfg, class_names=self.class_names,
                    input_shape=list(self.xtr.shape[1:]), first_step_seconds=self.first_step_seconds)

    def save(self) -> None:
        if not self.ctx.is_root:                                   # [distributed]
            return
        arrays, scalars = net_arrays(self.net)
        arrays.update({f"prep/{k}": v for k, v in self.pre.state().items()})
        if self.ema is not None:
            arrays["ema/arena"] = self.ema.avg
        if self.lbfgs is not None:
            arrays.update({f"lbfgs/{k}": v for k, v in self.lbfgs.state_dict().items()})
        try:
            save_checkpoint(self.ckpt_path, arrays, self._meta(scalars))
        except OSError as e:            # disk full, quota, file size limit: the write is atomic
            keep = "the previous checkpoint is kept" if self.ckpt_path.is_file() else "no checkpoint was kept"
            raise ValueError(f"could not write the checkpoint {self.ckpt_path}: {e.strerror or e}; "
                             f"{keep}") from None

    def _restore(self, arrays, meta) -> None:
        check_resume(meta, self.B, self.cfg)
        restore_net(self.net, arrays, meta.get("net_scalars", {}))
        for k in ("epoch", "batch", "rows", "loss_sum", "loss_n", "train_seconds", "train_images",
                  "best", "best_epoch", "bad", "snapshots", "done", "first_step_seconds"):
            setattr(self, k, meta[k])
        self.correct, self.seen = int(meta.get("correct", 0)), int(meta.get("seen", 0))
        self.order_state = meta["order_rng"]
        self.order_rng.bit_generator.state = meta["order_rng"]
        self.aug_rng.bit_generator.state = meta["aug_rng"]
        self.net.rng.bit_generator.state = meta["net_rng"]
        self.sched.load_state(meta["schedule"])
        if self.ema is not None and "ema/arena" in arrays:
            self.ema.avg[...] = arrays["ema/arena"]
        if self.lbfgs is not None and "lbfgs/s" in arrays:
            self.lbfgs.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("lbfgs/")})

    # ------------------------------------------------------------------ loop
    def run(self) -> dict:
        status = "completed"
        # overflow in a diverging step is reported by the NaN guard with the epoch and step;
        # numpy's own RuntimeWarnings would only print noise before that message
        with Interrupt() as intr, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                while not self.done and self.epoch < self.epochs:
                    if not self._epoch(intr):
                        status = "interrupted"
                        break
            except KeyboardInterrupt:
                status = "interrupted"
                if self._at_boundary:
                    self.save()
        if self.ctx.is_root and self.rows and status == "interrupted":
            write_metrics(self.out, self.rows, plot=True)
        if status == "interrupted" and not self.ctx.is_root:      # [distributed]
            return {"status": "interrupted", "distributed_rank": self.ctx.rank}
        if status == "interrupted":
            by = f" by {intr.name}" if intr.name else ""
            print(f"\ninterrupted{by} at epoch {min(self.epoch + 1, self.epochs)}, step {self.batch}; "
                  f"checkpoint saved to {self.ckpt_path} (continue with --resume)", file=sys.stderr)
            s = {"status": "interrupted", "epoch": self.epoch, "step": self.batch,
                 "checkpoint": str(self.ckpt_path)}
            write_summary(self.out / "summary.json", s)
            return s
        self.done = True
        return self._finish()

    _at_boundary = True
    _cold = True

    def _epoch(self, intr) -> bool:
        """One epoch (or its remainder after a resume); False when interrupted."""
        from tqdm import tqdm
        e = self.epoch
        if self.batch == 0:
            self.order_state = rng_state(self.order_rng)
            self.loss_sum, self.loss_n, self.correct, self.seen = 0.0, 0, 0, 0
        else:                                  # mid-epoch resume: replay the epoch's permutation
            self.order_rng.bit_generator.state = self.order_state
        show = self.progress and sys.stderr.isatty() and self.ctx.is_root   # [distributed]
        bar = tqdm(total=self.spe, initial=self.batch, desc=f"epoch {e + 1}/{self.epochs}",
                   unit="batch", disable=not show, leave=False, dynamic_ncols=True)
        ts = time.perf_counter()
        if self.lbfgs is not None:
            self._lbfgs_epoch()
            self.train_seconds += time.perf_counter() - ts
        else:
            for xb, yb in D.batches(self.xtr, self.ytr, self.B, self.order_rng, shuffle=True,
                                    drop_last=True, start_batch=self.batch):
                if self.aug:
                    xb = self.aug(xb, self.aug_rng)
                if self.recon:
                    yb = xb
                lr = self.sched.lr(e + self.batch / self.spe)
                self.net.lr = lr
                self._at_boundary = False
                tq = time.perf_counter()
                if self.ctx.distributed:                           # [distributed] my shard
                    xs, ys = self.ctx.shard(xb, yb)
                    loss = train_step(self.net, np.ascontiguousarray(xs, np.float32), ys,
                                      self.ctx, stop=intr.flag)
                else:
                    ys = yb
                    loss = float(self.net.step(np.ascontiguousarray(xb, np.float32), yb))
                dt = time.perf_counter() - tq
                pred = None if self.recon else predicted_class(self.net, self.net.train_output(), ys)
                if pred is not None and pred.size == np.size(ys):      # Keras's running train accuracy
                    self.correct += int(np.count_nonzero(pred.reshape(-1) == np.asarray(ys).reshape(-1)))
                    self.seen += pred.size
                self.batch += 1
                self._at_boundary = True
                if self._cold:               # JIT compilation happens on the first call
                    self._cold = False
                    self.first_step_seconds = self.first_step_seconds or dt
                else:
                    self.train_seconds += dt
                    self.train_images += self.B
                self._check(loss)
                if self.ema is not None:
                    self.ema.update(self.net.param_arena, self.net.step_count)
                self.loss_sum += loss
                self.loss_n += 1
                if "after_step" in self.hooks:
                    self.hooks["after_step"](self)
                self._check(loss)           # a hook may have injected a NaN
                if show:
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}",
                                    img_s=f"{self.train_images / max(self.train_seconds, 1e-9):.0f}")
                    bar.update(1)
                if (self.ctx.stop_requested if self.ctx.distributed else intr.flag):  # [distributed]
                    bar.close()
                    self.save()
                    return False
        bar.close()
        self._end_epoch()
        return True

    def _check(self, loss: float) -> None:
        where = f"epoch {self.epoch + 1}, step {self.batch} (global step {self.epoch * self.spe + self.batch})"
        keep = (f"; the last good checkpoint {self.ckpt_path} is kept" if self.ckpt_path.is_file()
                else "; no checkpoint was written yet")
        if not math.isfinite(loss):
            raise TrainingDiverged(f"training diverged: the loss became {loss} at {where}{keep}. "
                                   f"Try a lower learning rate or gradient clipping.")
        a = self.net.param_arena
        if not math.isfinite(float(np.sum(a, dtype=np.float64))) and not np.isfinite(a).all():
            bad = [k for k, v in self.net.params.items() if not np.isfinite(v).all()]
            raise TrainingDiverged(f"training diverged: parameters {', '.join(bad[:3])} became "
                                   f"non-finite after the update at {where}{keep}")

    def _lbfgs_epoch(self) -> None:
        """One call of ``max_iter`` full-batch L-BFGS iterations (runtime/lbfgs.py
        ``lbfgs_epoch``); the logged train loss is the data loss."""
        f = lbfgs_epoch(self.net, self.lbfgs, self.xtr, self.xtr if self.recon else self.ytr, self.B,
                        self.spe, self.opt_cfg.weight_decay, int(self.opt_cfg.hyper["max_iter"]))
        self._check(f)
        self.loss_sum, self.loss_n, self.batch = f, 1, self.spe
        self.train_images += self.spe * self.B

    def _end_epoch(self) -> None:
        e = self.epoch + 1
        self.ctx.sync_buffers(self.net)                            # [distributed] BN statistics
        root = self.ctx.is_root
        # the lr the epoch started with (torch's convention; with a per-step schedule the
        # last step's lr would read the same for every sgdr cycle)
        row = {"epoch": e, "lr": float(self.sched.lr(self.epoch)) if self.lbfgs is None else self.opt_cfg.lr,
               "train_loss": self.loss_sum / max(self.loss_n, 1),
               # this rank's running accuracy, averaged over the ranks (equal shards)
               "train_accuracy": self.ctx.allreduce_mean(self.correct / self.seen if self.seen else math.nan)}
        v = evaluate(self.net, self.xva, self.tva)
        row.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
        if self.ema is not None:
            self.ema.swap_in(self.net)
            try:
                ve = evaluate(self.net, self.xva, self.tva)
            finally:
                self.ema.swap_out(self.net)
            row.update(ema_val_loss=ve["loss"], ema_val_accuracy=ve["accuracy"])
        row.update(images_per_second=self.train_images / max(self.train_seconds, 1e-9),
                   seconds=self.train_seconds)
        self.rows.append(row)
        if self.sched.metric:
            self.sched.observe(row.get(self.sched.metric, math.nan))
        if self.es:
            m = row[self.es["metric"]]
            better = self.best is None or (m > self.best if "acc" in self.es["metric"] else m < self.best)
            if better:
                self.best, self.best_epoch, self.bad = float(m), e, 0
                if root:
                    save_checkpoint(self.out / "best.npz", weights_of(self.net),
                                    {"epoch": e, self.es["metric"]: m})
            else:
                self.bad += 1
                if self.bad >= int(self.es["patience"]):   # Keras / Lightning: patience bad epochs
                    self.done = True
                    root and print(f"early stopping after epoch {e}: {self.es['metric']} has not improved "
                          f"for {self.bad} epochs (best {self.best:.4g} at epoch {self.best_epoch})",
                          file=sys.stderr)
        if self.snap and self.sched.is_cycle_end(e):
            p = self.out / f"snapshot_{len(self.snapshots)}.npz"
            if root:
                save_checkpoint(p, weights_of(self.net), {"epoch": e})
            self.snapshots.append(p.name)
        self.epoch, self.batch = e, 0
        self.order_state = rng_state(self.order_rng)      # the next epoch starts from here
        self.done = self.ctx.bcast_object(self.done, what="broadcast of the stop decision")  # [distributed]
        self.save()              # first: metrics.csv never runs ahead of the checkpoint
        if root:
            last = self.done or e >= self.epochs
            plot = last or time.monotonic() - self._last_plot > PLOT_EVERY_S
            write_metrics(self.out, self.rows, plot=plot)
            if plot:
                self._last_plot = time.monotonic()
        if self.progress and root:
            msg = (f"epoch {e}/{self.epochs}  loss {row['train_loss']:.4f}  val_acc "
                   f"{row['val_accuracy']:.4f}  {row['images_per_second']:.0f} img/s")
            print(msg, file=sys.stderr)

    # ------------------------------------------------------------------ final evaluation
    def _finish(self) -> dict:
        if not self.ctx.is_root:                                   # [distributed] rank 0 reports
            return {"status": "completed", "distributed_rank": self.ctx.rank}
        s = {"status": "completed", "epochs": self.epoch, "compile_seconds": self.compile_seconds,
             "train_loss": self.rows[-1]["train_loss"] if self.rows else math.nan,
             "train_accuracy": self.rows[-1].get("train_accuracy", math.nan) if self.rows else math.nan,
             "images_per_second": self.train_images / max(self.train_seconds, 1e-9),
             "train_seconds": self.train_seconds, "batch_size": self.B, "optimizer": self.opt_cfg.name,
             "first_step_seconds": self.first_step_seconds, "class_names": self.class_names}
        if self.es:
            s["best_epoch"], s["best_" + self.es["metric"]] = self.best_epoch, self.best
            if self.es.get("restore_best", True) and (self.out / "best.npz").is_file():
                load_weights(self.net, load_checkpoint(self.out / "best.npz")[0])
        v, t = evaluate(self.net, self.xva, self.tva), evaluate(self.net, self.xte, self.tte)
        s.update(val_loss=v["loss"], val_accuracy=v["accuracy"], test_loss=t["loss"],
                 test_accuracy=t["accuracy"])
        if self.ema is not None:
            self.ema.swap_in(self.net)
            try:
                s["ema_val_accuracy"] = evaluate(self.net, self.xva, self.tva)["accuracy"]
                s["ema_test_accuracy"] = evaluate(self.net, self.xte, self.tte)["accuracy"]
            finally:
                self.ema.swap_out(self.net)
        if self.snapshots:
            s["snapshots"] = list(self.snapshots)
        if self.snapshots and len(self.yte) and not math.isnan(s.get("test_accuracy", math.nan)) \
                and has_class_probs(self.net):          # one class per image: average probabilities
            s["ensemble_test_accuracy"] = evaluate_ensemble(
                self.net, [self.out / p for p in self.snapshots], self.xte, self.yte)["ensemble"]
        write_summary(self.out / "summary.json", s)
        return s
