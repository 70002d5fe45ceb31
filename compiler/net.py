"""``compile(spec) -> CompiledNet``: lower, differentiate, run the passes, print, load.

The CompiledNet owns every array of the run: one flat parameter arena (``params`` are
views into it, in spec order), a gradient arena with the same offsets, the optimizer's
state arenas, BatchNorm buffers, and one planned activation arena per graph (train and
inference).  The generated modules bind views of those arrays once; calling a step is
straight-line kernel calls (docs/compiled-net.md is the API contract).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .autodiff import differentiate
from .codegen.cpu import print_step_module
from .codegen.kernel_cache import import_path, write_module
from .init import init_array
from .ir import Graph, format_graph
from .lower import LowerError, lower, spatial_loss
from .memory import aligned_zeros, memory_limit, memory_needed  # noqa: F401  (memory_needed: API)
from .ops import OPS
from .outputs import main_output
from .passes import pipeline
from .threads import blas_limit


class CompileError(Exception):
    """A spec that cannot be compiled (unsupported configuration, does not fit in memory)."""


@dataclass(frozen=True)
class ParamInfo:
    layer: str
    decay: bool
    lr_mult: float
    frozen: bool
    shape: tuple
    unit_dims: int = 1      # leading dims indexing a unit (max_norm: the rest is its incoming row)


class _Bound:
    """What a generated module's ``bind`` sees."""

    def __init__(self, tensors, net):
        self.tensors = tensors
        self.ops = OPS
        self._net = net

    def __getattr__(self, k):   # param_arena, grad_arena, opt_state, optimizer
        return getattr(self.__dict__["_net"], k)


class CompiledNet:
    def __init__(self, report, batch_size, dtype, backend, graphs, sources, seed):
        self.report = report
        self.batch_size = batch_size
        self.dtype = np.dtype(dtype)
        self.backend = backend
        self.input_shape = tuple(report.input_shape)
        self.output_shape = tuple(report.output_shape)       # the first output's (the loss's)
        self.output_names = list(report.outputs or [report.layers[-1].name])
        self.output_shapes = [tuple(report.layer(o).output_shape) for o in self.output_names]
        self.graphs = graphs              # {"eval": Graph, "train": Graph}
        self.sources = sources            # {"eval": (path, src), ...}
        self.rng = np.random.default_rng(seed)
        self.lr = 0.0
        self.step_count = 0
        self.optimizer = None
        self.opt_state: dict[str, np.ndarray] = {}
        self._fns: dict[str, dict] = {}

    # ------------------------------------------------------------------ parameters
    def load_params(self, d: dict, strict: bool = False) -> None:
        """Copy arrays in by PyTorch name; refuses unknown or mis-shaped ones (naming each,
        with both shapes), and with ``strict`` also a dict that lacks any of the net's
        parameters or buffers (nothing is copied unless everything fits)."""
        problems = []
        if strict:
            have = {k for k in d if not k.endswith("num_batches_tracked")}
            problems += [f"missing tensor {k!r} {v.shape}" for k, v in {**self.params, **self.buffers}.items()
                         if k not in have]
        for k, v in d.items():
            if k.endswith("num_batches_tracked"):
                continue
            tgt = self.params.get(k, self.buffers.get(k))
            if tgt is None:
                problems.append(f"unexpected tensor {k!r}")
                continue
            v = np.asarray(v)
            if tuple(v.shape) != tgt.shape:
                problems.append(f"{k}: shape {tuple(v.shape)} in the file, {tgt.shape} in the net")
                continue
        if problems:
            raise ValueError("cannot load parameters: " + "; ".join(problems))
        for k, v in d.items():
            if k.endswith("num_batches_tracked"):
                continue
            tgt = self.params.get(k, self.buffers.get(k))
            tgt[...] = np.asarray(v, dtype=self.dtype)

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {f"params/{k}": v.copy() for k, v in self.params.items()}
        out.update({f"buffers/{k}": v.copy() for k, v in self.buffers.items()})
        out.update({f"opt/{k}": v.copy() for k, v in self.opt_state.items()})
        out["step_count"] = np.array([self.step_count], np.int64)
        return out

    def load_state_dict(self, d: dict) -> None:
        for k, v in d.items():
            kind, _, name = k.partition("/")
            if kind == "params":
                self.params[name][...] = v
            elif kind == "buffers":
                self.buffers[name][...] = v
            elif kind == "opt":
                self.opt_state[name][...] = v
            elif k == "step_count":
                self.step_count = int(np.asarray(v).reshape(-1)[0])

    # ------------------------------------------------------------------ execution
    def _copy_in(self, mode, x, target=None):
        t = self._io[mode]
        x = np.asarray(x)
        if x.shape != t["x"].shape:
            raise ValueError(f"expected input of shape {t['x'].shape}, got {x.shape}")
        t["x"][...] = x
        if target is not None:
            tt = t["target"]
            tgt = np.asarray(target)
            if tgt.size != tt.size:
                raise ValueError(f"expected targets of shape {tt.shape} (the loss's target for each of the "
                                 f"batch's {tt.shape[0]} samples), got {tgt.shape}")
            if tt.dtype.kind in "iu" and tgt.dtype.kind not in "iub":
                flat = tgt.reshape(-1)
                if flat.dtype.kind == "f":
                    ok = np.isfinite(flat) & (flat == np.round(flat))
                else:
                    ok = np.zeros(len(flat), bool)
                if not ok.all():
                    raise ValueError(f"class labels must be integers, got {flat[np.argmin(ok)].item()!r} "
                                     f"(dtype {tgt.dtype}); pass integer class indices")
            tt[...] = tgt.reshape(tt.shape)

    def forward(self, x, train: bool = False):
        """x (N, *input_shape), any N -> (N, *output_shape), processed in chunks of batch_size.
        A spec with several ``outputs`` gives a tuple of arrays, one per output, in order
        (shapes ``output_shapes``)."""
        x = np.asarray(x, dtype=self.dtype)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"expected inputs of shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        mode = "train" if train else "eval"
        if train and x.shape[0] != self.batch_size:
            raise ValueError(f"train-mode forward needs exactly batch_size={self.batch_size} samples")
        B, N = self.batch_size, x.shape[0]
        outs = [np.empty((N, *shape), self.dtype) for shape in self.output_shapes]
        buf = self._io[mode]["x"]
        for s in range(0, N, B):
            n = min(B, N - s)
            buf[:n] = x[s:s + n]
            if n < B:
                buf[n:] = 0
            with blas_limit():
                y = self._fns[mode]["forward"](self.rng, train)
            for o, yo in zip(outs, y if len(outs) > 1 else (y,)):
                o[s:s + n] = yo[:n]
        return tuple(outs) if len(outs) > 1 else outs[0]

    def forward_main(self, x, train: bool = False) -> np.ndarray:
        """The first output only -- the one the loss applies to, which evaluation,
        prediction and ensembles use -- whatever number of ``outputs`` the spec lists."""
        return main_output(self.forward(x, train))

    def compute_grads(self, x, target) -> float:
        self._copy_in("train", x, target)
        with blas_limit():
            return self._fns["train"]["grads"](self.rng)

    def loss_and_grads(self, x, target):
        loss = self.compute_grads(x, target)
        return loss, {k: v.copy() for k, v in self.grads.items()}

    def apply_update(self) -> None:
        self.step_count += 1
        self.optimizer.update(self.param_arena, self.grad_arena, self.opt_state, self.lr, self.step_count)

    def step(self, x, target) -> float:
        self._copy_in("train", x, target)
        self.step_count += 1
        with blas_limit():
            return self._fns["train"]["step"](self.rng, self.lr, self.step_count)

    def train_output(self) -> np.ndarray:
        """The main output of the last training step's forward (train mode: dropout and
        batch statistics as that step saw them), (batch_size, *output_shape).  A view of
        the activation arena (graph outputs stay live to the end of the step): valid until
        the next step."""
        return main_output(self._fns["train"]["outputs"])

    def loss_fn(self, outputs, target) -> float:
        """Eval-mode loss of given outputs with the numpy reference of the loss op."""
        (name, attrs), = self.loss_cfg.items()
        y = np.asarray(outputs, np.float64)
        target = np.asarray(target)
        if spatial_loss(self.loss_cfg):
            target = target.reshape((len(y), *y.shape[2:]))
        elif name in ("softmax_cross_entropy", "hinge"):
            y = y.reshape(len(y), -1)
        elif target.size == y.size:
            # dense losses: one target per output value, as the training step reads them
            # (labels (N,) of a one-logit bce net are its (N, 1) targets; never broadcast)
            target = target.reshape(y.shape)
        else:
            raise ValueError(f"{name}: expected {y.size} target values (the output's shape "
                             f"{y.shape}), got {target.shape}")
        val, _ = OPS[name].ref_forward([y, target], dict(attrs or {}), False)
        return float(np.asarray(val).reshape(-1)[0])

    def memory_report(self) -> dict:
        out = {}
        for mode, g in self.graphs.items():
            p = g.meta["plan"]
            out[mode] = {"planned_bytes": p["arena_size"] * self.dtype.itemsize,
                         "unplanned_bytes": p["unplanned"] * self.dtype.itemsize}
        out["param_bytes"] = self.param_arena.nbytes
        return out


def _check_batch_statistics(g) -> None:
    """A training-mode BatchNorm that sees one value per channel (batch 1 on a 1x1 map, or
    batch 1 of (N, F) features) has no batch variance: its output would be the constant
    beta and every gradient through it 0.  Refused before compiling, as PyTorch refuses
    it at the first forward ("Expected more than 1 value per channel when training")."""
    for n in g.nodes:
        if n.op != "batchnorm" or dict(n.attrs).get("global_stats", False):
            continue
        shape = g.values[n.inputs[0]].shape
        per_channel = shape[0] * int(np.prod(shape[2:], dtype=np.int64))
        if per_channel <= 1:
            raise ValueError(f"batchnorm {n.layer!r} sees 1 value per channel in training (input "
                             f"{tuple(shape)}): batch statistics need more; use a batch size above 1, "
                             f"or set use_global_stats: true on this layer")


def _build_graphs(report, batch_size, train, loss_cfg, frozen, target="cpu"):
    graphs = {}
    g = lower(report, batch_size)
    graphs["eval"] = pipeline.run(g, pipeline.INFERENCE, target)
    if train:
        try:
            g = lower(report, batch_size, loss=loss_cfg)
        except LowerError as e:        # a loss the net's output cannot feed: a compile error
            raise CompileError(str(e)) from None
        _check_batch_statistics(g)
        g = pipeline.run(g, pipeline.TRAIN_FORWARD, target)
        g = differentiate(g, frozen=frozen)
        graphs["train"] = pipeline.run(g, pipeline.TRAIN_BACKWARD, target)
    return graphs


def compile(spec, backend: str = "cpu", batch_size: int = 64, train: bool = True,
            dtype=np.float32, loss: dict | None = None, optimizer: dict | None = None,
            input_shape=None, seed: int | None = None) -> CompiledNet:
    """Compile a spec (a netspec.Spec, a path or YAML text) for a fixed batch size."""
    import netspec
    if not hasattr(spec, "layers"):
        spec = netspec.load(spec)
    report = netspec.check(spec, input_shape=input_shape) if input_shape else netspec.check(spec)
    if backend not in ("cpu", "cuda"):
        raise CompileError(f"unknown backend {backend!r} (use 'cpu' or 'cuda')")
    if backend == "cuda":
        from .codegen import cuda_backend
        cuda_backend.require_gpu()
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise CompileError("dtype must be float32 or float64")
    if batch_size < 1:
        raise CompileError("batch_size must be at least 1")
    tcfg = dict(spec.train or {})
    loss_cfg = loss or tcfg.get("loss") or {"softmax_cross_entropy": {"label_smoothing": 0.0}}
    if train and backend == "cuda" and spatial_loss(loss_cfg):     # (its output shape: lower())
        raise CompileError("softmax_cross_entropy with spatial: true (per-pixel classes) runs on the "
                           "CPU backend only; train it without --backend cuda")
    frozen = {full for L in report.layers if getattr(L, "freeze", False) for full, ps in L.param_specs
              if ps.kind == "param"}
    graphs = _build_graphs(report, batch_size, train, loss_cfg, frozen, backend)

    # ---- refuse what will not fit, before allocating anything big
    opt_cfg = {**tcfg, "optimizer": optimizer} if optimizer else tcfg
    need = memory_needed(report, graphs, train, opt_cfg, dtype)
    limit = memory_limit()
    if need["total"] > limit:
        gib = lambda b: next(f"{b / 2**e:.2f} {u}" for e, u in ((30, "GiB"), (20, "MiB"), (10, "KiB"),
                                                                  (0, "B")) if b >= 2**e or e == 0)
        parts = ", ".join(f"{k} {gib(v)}" for k, v in need.items() if k != "total" and v)
        raise CompileError(f"net {report.name!r} needs about {gib(need['total'])} at batch size "
                           f"{batch_size} ({parts}), but only {gib(limit)} is available"
                           + (" (NETSPEC_MEMORY_LIMIT); lower the batch size or raise the limit"
                              if os.environ.get("NETSPEC_MEMORY_LIMIT") else
                              "; lower the batch size or set NETSPEC_MEMORY_LIMIT"))

    sources = {}
    for mode, g in graphs.items():
        src, slots = print_step_module(g, mode, dtype.name)
        path = write_module(src, f"step_{mode}", subdir="steps")
        sources[mode] = (path, src, slots)
    net = CompiledNet(report, batch_size, dtype, backend, graphs, sources,
                      seed if seed is not None else int((spec.train or {}).get("seed", 0) or 0))
    net.loss_cfg = loss_cfg

    # ---- persistent arrays: parameters (one arena, spec order), gradients, buffers
    rng = np.random.default_rng(net.rng.integers(2**63))
    pspecs = [(full, ps, L) for L in report.layers for full, ps in L.param_specs if ps.kind == "param"]
    sizes = [int(np.prod(ps.shape)) if ps.shape else 1 for _, ps, _ in pspecs]
    net.param_arena = aligned_zeros(sum(sizes), dtype)
    net.grad_arena = aligned_zeros(sum(sizes), dtype)
    net.params, net.grads, net.param_info = {}, {}, {}
    off = 0
    for (full, ps, L), n in zip(pspecs, sizes):
        net.params[full] = net.param_arena[off:off + n].reshape(ps.shape)
        net.grads[full] = net.grad_arena[off:off + n].reshape(ps.shape)
        if not ps.init.startswith("norm_of:"):
            net.params[full][...] = init_array(ps.init, ps.shape, ps.fan_in, rng, dtype, ps.fan_out)
        net.param_info[full] = ParamInfo(L.name, bool(ps.decay), float(getattr(L, "lr_mult", 1.0) or 1.0),
                                         full in frozen, tuple(ps.shape), int(getattr(ps, "unit_dims", 1)))
        off += n
    # weight normalisation: g starts as the norm of v per output unit (so w = v initially)
    for full, ps, L in pspecs:
        if ps.init.startswith("norm_of:"):
            src = net.params[f"{L.name}.{ps.init.split(':', 1)[1]}"]
            norms = np.sqrt((src.astype(np.float64) ** 2).reshape(src.shape[0], -1).sum(1))
            net.params[full][...] = norms.reshape(ps.shape)
    net.buffers = {full: init_array(ps.init, ps.shape, ps.fan_in, rng, dtype, ps.fan_out)
                   for L in report.layers for full, ps in L.param_specs if ps.kind == "buffer"}
    if train:
        from .optim import make_optimizer
        net.optimizer = make_optimizer(opt_cfg, net.param_info, dtype)
        net.opt_state = {k: aligned_zeros(n, dtype) for k, n in net.optimizer.state_specs().items()}
        if hasattr(net.optimizer, "init_state"):
            net.optimizer.init_state(net.opt_state)

    # ---- bind the generated modules
    net._io = {}
    for mode, g in graphs.items():
        path, src, slots = sources[mode]
        tensors = _allocate(g, slots, net, dtype)
        net._io[mode] = {"x": tensors[[s.key for s in slots].index("x")]}
        if "target" in g.values:
            net._io[mode]["target"] = tensors[[s.key for s in slots].index("target")]
        mod = import_path(path)
        net._fns[mode] = mod.bind(_Bound(tensors, net))
    if backend == "cuda":
        from .codegen.cuda import to_cuda
        net = to_cuda(net)
    return net


_INT = {"int32": np.int32, "int64": np.int64, "uint8": np.uint8, "bool": np.bool_}


def _allocate(g: Graph, slots, net, dtype) -> list:
    """The V list of one generated module: views into the arenas, persistent arrays,
    or (for non-float saved tensors and graph inputs) arrays of their own."""
    plan = g.meta["plan"]
    arena = aligned_zeros(max(plan["arena_size"], 1), dtype)
    offsets, views = plan["offsets"], plan["views"]
    pgrad_of = {v: p for p, v in g.param_grads.items()}
    slot_of = {s.key: s.idx for s in slots}
    out: list = [None] * len(slots)
    by_key = {}
    for s in slots:
        v = g.values.get(s.key)
        if v is not None and v.kind == "param":
            a = net.params[s.key]
        elif v is not None and v.kind == "buffer":
            a = net.buffers[s.key]
        elif v is not None and v.kind == "pgrad":
            a = net.grads[pgrad_of[s.key]]
        elif s.key in offsets:
            n = int(np.prod(s.shape)) if s.shape else 1
            a = arena[offsets[s.key]:offsets[s.key] + n].reshape(s.shape)
        elif s.key in views:
            continue
        else:
            dt = dtype if s.dtype == "float" else _INT[s.dtype]
            a = np.zeros(s.shape, dt)
        out[s.idx] = a
        by_key[s.key] = a
    # reshape views, in node order (a view's base is bound before it)
    for n in g.nodes:
        if n.op == "reshape":
            o = n.outputs[0]
            a = by_key[n.inputs[0]].reshape(g.values[o].shape)
            by_key[o] = a
            if o in slot_of:
                out[slot_of[o]] = a
    net.__dict__.setdefault("_arenas", {})[id(g)] = arena   # for memory accounting
    return out


def emit(spec, out_dir, batch_size: int = 1, train: bool = True, input_shape=None) -> dict:
    """Write the generated step sources and the formatted IR into out_dir (for reading)."""
    import netspec
    from pathlib import Path
    if not hasattr(spec, "layers"):
        spec = netspec.load(spec)
    report = netspec.check(spec, input_shape=input_shape) if input_shape else netspec.check(spec)
    tcfg = dict(spec.train or {})
    loss_cfg = tcfg.get("loss") or {"softmax_cross_entropy": {"label_smoothing": 0.0}}
    frozen = {full for L in report.layers if getattr(L, "freeze", False) for full, ps in L.param_specs}
    graphs = _build_graphs(report, batch_size, train, loss_cfg, frozen)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {}
    for mode, g in graphs.items():
        src, _ = print_step_module(g, mode, "float32")
        (out / f"step_{mode}.py").write_text(src)
        (out / f"ir_{mode}.txt").write_text(format_graph(g))
        p = g.meta["plan"]
        info[mode] = {"nodes": len(g.nodes), "planned_bytes": p["arena_size"] * 4,
                      "unplanned_bytes": p["unplanned"] * 4}
    return info
