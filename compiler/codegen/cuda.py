"""CUDA printer and runtime: the same planned IR graph -> a generated CUDA step module, and
``CudaNet``, the CompiledNet whose arrays live on the GPU for the whole run.

Printer: ``print_cuda_step_module(g, mode, dtype)`` walks the graph exactly like the CPU
printer (same tensor table, same safe literals) but prints *plan* calls of the CUDA ops
(``compiler.ops.cuda.CUDA_OPS``).  Runtime (``to_cuda(net)``, called by ``compiler.compile``
for backend="cuda" after the CPU-side net is built):

* device arrays: one parameter arena and one gradient arena (params / grads are views, same
  offsets as on the host), the optimizer state arenas, BatchNorm buffers, one planned
  activation arena per graph (views at the planner's offsets) -- allocated once;
* the generated module's plans are bound ONCE into pre-configured launchers
  ``kernel[grid, block, stream]``; a step is a loop over them on one stream;
* input batches go host -> pinned buffer -> device asynchronously (double-buffered, an
  event guards reuse); the loss is copied back only when asked (``step(..., want_loss=False)``
  returns None and never synchronises);
* host mirrors: ``net.params``, ``grads``, ``buffers``, ``opt_state``, ``param_arena``,
  ``grad_arena`` stay the host arrays of the CPU contract; reading one pulls the device copy
  first (if the device is newer) and marks it possibly written, so it is pushed back before
  the next device use.  Reading them every step therefore costs a copy each way.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph
from .cpu import step_listing
from .kernel_cache import _env, import_path, write_module


def print_cuda_step_module(g: Graph, mode: str, dtype: str):
    """-> (source, slots) of the CUDA step module of one planned graph: the CPU printer's
    walk (``step_listing``), spelled as *plan* calls of the CUDA ops."""
    v = step_listing(g, mode, dtype,
                     fwd_call=lambda op, args, train: f"op_{op}.plan_forward(ctx, {args}, {train})",
                     bwd_call=lambda op, args: f"op_{op}.plan_backward(ctx, {args})",
                     fill_call=lambda out, value: (f'ops["fill"].plan_forward(ctx, [], {out}, {{}}, {{}}, '
                                                   f'{{"value": {value}}}, False)'))
    return _env.get_template("step_cuda.py.j2").render(**v), v["tensors"]


_INT = {"int32": np.int32, "int64": np.int64, "uint8": np.uint8, "bool": np.bool_}


def allocate_device(g: Graph, slots, dev, dtype) -> list:
    """The V list on the device (same rules as compiler.net._allocate): views of the device
    arena at the planner's offsets, the persistent device arrays, own arrays otherwise."""
    from numba import cuda
    plan = g.meta["plan"]
    arena = cuda.to_device(np.zeros(max(plan["arena_size"], 1), dtype))
    offsets, views = plan["offsets"], plan["views"]
    pgrad_of = {v: p for p, v in g.param_grads.items()}
    out, by_key = [None] * len(slots), {}
    for s in slots:
        v = g.values.get(s.key)
        if v is not None and v.kind == "param":
            a = dev["params"][s.key]
        elif v is not None and v.kind == "buffer":
            a = dev["buffers"][s.key]
        elif v is not None and v.kind == "pgrad":
            a = dev["grads"][pgrad_of[s.key]]
        elif s.key in offsets:
            n = int(np.prod(s.shape)) if s.shape else 1
            a = arena[offsets[s.key]:offsets[s.key] + n].reshape(*s.shape)
        elif s.key in views:
            continue
        else:
            dt = dtype if s.dtype == "float" else _INT[s.dtype]
            a = cuda.to_device(np.zeros(s.shape, dt))
        out[s.idx] = a
        by_key[s.key] = a
    for n in g.nodes:
        if n.op == "reshape":
            o = n.outputs[0]
            a = by_key[n.inputs[0]].reshape(*g.values[o].shape)
            by_key[o] = a
            for s in slots:
                if s.key == o:
                    out[s.idx] = a
    return out, arena


class _Rt:
    def __init__(self, tensors, ops, ctx):
        self.tensors, self.ops, self.ctx = tensors, ops, ctx


def _views(arena, host_views: dict, base) -> dict:
    """Device views with the same offsets as the host views into ``base``."""
    out = {}
    for k, h in host_views.items():
        off = (h.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // base.itemsize
        out[k] = arena[off:off + h.size].reshape(*h.shape) if h.shape else arena[off:off + 1]
    return out


# ------------------------------------------------------------------------------ runtime
from ..net import CompiledNet  # noqa: E402  (compiler.net imports this module lazily)

_GROUP_OF = {"params": "params", "param_arena": "params", "grads": "grads", "grad_arena": "grads",
             "buffers": "buffers", "opt_state": "opt"}


def _mirror(attr):
    def get(self):
        d = self.__dict__
        if "_dev" in d:
            self._pull(_GROUP_OF[attr])
        return d[attr]

    def put(self, value):
        self.__dict__[attr] = value
    return property(get, put, doc=f"host mirror of the device {attr} (synchronised on access)")


class CudaNet(CompiledNet):
    """CompiledNet on the GPU (docs/compiled-net.md API; see the module docstring)."""

    params = _mirror("params")
    param_arena = _mirror("param_arena")
    grads = _mirror("grads")
    grad_arena = _mirror("grad_arena")
    buffers = _mirror("buffers")
    opt_state = _mirror("opt_state")

    # ---- host <-> device coherence --------------------------------------------------
    def _host_arrays(self, group):
        d = self.__dict__
        if group == "params":
            return [(d["param_arena"], self._d_param)]
        if group == "grads":
            return [(d["grad_arena"], self._d_grad)]
        src = d["buffers"] if group == "buffers" else d["opt_state"]
        dev = self._dev["buffers" if group == "buffers" else "opt"]
        return [(src[k], dev[k]) for k in src]

    def _pull(self, group):
        st = self._state[group]
        if st["dev_newer"]:
            for h, dv in self._host_arrays(group):
                dv.copy_to_host(h, stream=self.stream)
            self.stream.synchronize()
            st["dev_newer"] = False
        st["host_dirty"] = True        # the caller may write through the arrays we return

    def _push(self):
        for group, st in self._state.items():
            if st["host_dirty"]:
                for h, dv in self._host_arrays(group):
                    dv.copy_to_device(h, stream=self.stream)
                st["host_dirty"] = False

    def _touched(self, *groups):
        for g in groups:
            self._state[g]["dev_newer"] = True

    def synchronize(self) -> None:
        self.stream.synchronize()

    # ---- setup -----------------------------------------------------------------------
    def _setup(self):
        from numba import cuda

        from ..ops.cuda import CUDA_OPS
        from ..ops.cuda.common import DeviceCtx
        from ..ops.cuda.optim import DeviceOptimizer
        d = self.__dict__
        self.stream = cuda.stream()
        self._ctx = DeviceCtx()
        self._state = {g: {"dev_newer": False, "host_dirty": False} for g in ("params", "grads", "buffers", "opt")}
        self._d_param = cuda.to_device(d["param_arena"])
        self._d_grad = cuda.to_device(d["grad_arena"])
        dev = {"params": _views(self._d_param, d["params"], d["param_arena"]),
               "grads": _views(self._d_grad, d["grads"], d["grad_arena"]),
               "buffers": {k: cuda.to_device(v) for k, v in d["buffers"].items()},
               "opt": {k: cuda.to_device(v) for k, v in d["opt_state"].items()}}
        self.cuda_sources, self._gen, self._dio, self._seqs, self._d_arenas = {}, {}, {}, {}, {}
        self._graphs = {}      # id(bound sequence) -> (sequence, (draws, StepGraph) or False if capture failed)
        for mode, g in self.graphs.items():
            src, slots = print_cuda_step_module(g, mode, self.dtype.name)
            path = write_module(src, f"step_cuda_{mode}", subdir="steps")
            self.cuda_sources[mode] = (path, src, slots)
            tensors, arena = allocate_device(g, slots, dev, self.dtype)
            self._d_arenas[mode] = arena
            keys = [s.key for s in slots]
            io = {"x": tensors[keys.index("x")]}
            if "target" in g.values:
                io["target"] = tensors[keys.index("target")]
            io["pin"] = {k: [cuda.pinned_array(a.shape, a.dtype) for _ in range(2)] for k, a in list(io.items())}
            io["ev"] = {k: [None, None] for k in io["pin"]}
            io["turn"] = 0
            self._dio[mode] = io
            self._gen[mode] = import_path(path).bind(_Rt(tensors, CUDA_OPS, self._ctx))
        self._dev = dev
        self._dopt = None
        if self.optimizer is not None:
            self._dopt = DeviceOptimizer(self.optimizer, self._ctx)
            from ..ops.cuda.common import bind_plan
            oplan = self._dopt.plan(self._d_param, self._d_grad, dev["opt"])
            self._opt_seq = bind_plan(oplan, self.stream, dynamic={self._dopt.update_index})
        self._pin_out = {}
        # the CPU-side step modules and host activation arenas are not used on this backend
        self._fns = {}
        d.pop("_arenas", None)

    def _seq(self, mode, what):
        from ..ops.cuda.common import bind_plan
        key = (mode, what)
        s = self._seqs.get(key)
        if s is None:
            fns = self._gen[mode]
            plan = fns["plan_grads"]() if what == "grads" else fns["plan_forward"](what == "fwd_train")
            s = self._seqs[key] = bind_plan(plan, self.stream)
        return s

    def _run(self, seq):
        """Run a bound sequence: as its CUDA graph where it has one (captured on first use,
        see ``StepGraph``), else launch by launch."""
        from ..ops.cuda import common
        key = id(seq)
        g = self._graphs.get(key, (None, None))[1]
        if g is None and common.GRAPHS and common.graphable(seq):
            try:
                g = common.draws_then_graph(seq, self.stream)
            except Exception as e:              # capture unsupported here: launch by launch
                import warnings
                warnings.warn(f"CUDA graph capture failed ({e}); launching kernels one by one")
                g = False
            self._graphs[key] = (seq, g)         # holding seq keeps its id unique
        if g:
            draws, graph = g
            for d in draws:
                d(self.rng)
            graph()
        else:
            common.run_seq(seq, self.rng)

    # ---- execution ---------------------------------------------------------------------
    def _copy_in(self, mode, x, target=None):
        """host batch -> pinned buffer (alternating pair) -> device input, asynchronously."""
        from numba import cuda
        io = self._dio[mode]
        io["turn"] ^= 1
        k = io["turn"]
        for name, val in (("x", x), ("target", target)):
            if val is None or name not in io:
                continue
            pin = io["pin"][name][k]
            val = np.asarray(val)
            if name == "x" and val.shape != pin.shape:
                raise ValueError(f"expected input of shape {pin.shape}, got {val.shape}")
            ev = io["ev"][name][k]
            if ev is not None:
                ev.synchronize()        # the copy that last read this buffer is done
            pin[...] = val.reshape(pin.shape)
            io[name].copy_to_device(pin, stream=self.stream)
            ev = io["ev"][name][k] = ev or cuda.event()
            ev.record(self.stream)

    def _read_loss(self, mode="train"):
        out = self._pin_out.get("loss")
        if out is None:
            from numba import cuda
            out = self._pin_out["loss"] = cuda.pinned_array((1,), self.dtype)
        self._gen[mode]["loss"].copy_to_host(out, stream=self.stream)
        self.stream.synchronize()
        return float(out[0])

    def forward(self, x, train: bool = False):
        """As CompiledNet.forward: (N, *output_shape), or a tuple with one array per output
        when the spec lists several ``outputs``."""
        x = np.asarray(x, dtype=self.dtype)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"expected inputs of shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        if train and x.shape[0] != self.batch_size:
            raise ValueError(f"train-mode forward needs exactly batch_size={self.batch_size} samples")
        mode = "train" if train else "eval"
        self._push()
        B, N = self.batch_size, x.shape[0]
        outs = [np.empty((N, *shape), self.dtype) for shape in self.output_shapes]
        ydev = self._gen[mode]["outputs"]
        ydev = ydev if isinstance(ydev, tuple) else (ydev,)
        seq = self._seq(mode, "fwd_train" if train else "fwd_eval")
        key = ("y", mode)
        if key not in self._pin_out:
            from numba import cuda
            self._pin_out[key] = [cuda.pinned_array(d.shape, d.dtype) for d in ydev]
        ypins = self._pin_out[key]
        chunk = np.zeros((B, *self.input_shape), self.dtype)
        for s in range(0, N, B):
            n = min(B, N - s)
            chunk[:n] = x[s:s + n]
            chunk[n:] = 0
            self._copy_in(mode, chunk)
            self._run(seq)
            for d, pin in zip(ydev, ypins):
                d.copy_to_host(pin, stream=self.stream)
            self.stream.synchronize()
            for o, pin in zip(outs, ypins):
                o[s:s + n] = pin[:n]
        if train:
            self._touched("buffers")
        return tuple(outs) if len(outs) > 1 else outs[0]

    def compute_grads(self, x, target) -> float:
        self._push()
        self._copy_in("train", x, target)
        self._run(self._seq("train", "grads"))
        self._touched("grads", "buffers")
        return self._read_loss()

    def apply_update(self) -> None:
        self._push()
        self.step_count += 1
        self._dopt.run(self._opt_seq, self._dopt.scalars(self.lr, self.step_count))
        self._touched("params", "opt")

    def step(self, x, target, want_loss: bool = True):
        """One training step on the device; returns the loss (one sync) or None."""
        self._push()
        self._copy_in("train", x, target)
        self.step_count += 1
        self._run(self._seq("train", "grads"))
        self._dopt.run(self._opt_seq, self._dopt.scalars(self.lr, self.step_count))
        self._touched("params", "grads", "buffers", "opt")
        return self._read_loss() if want_loss else None

    def train_output(self) -> np.ndarray:
        """As CompiledNet.train_output: the last training step's main output, copied to the host."""
        from compiler.outputs import main_output
        out = main_output(self._gen["train"]["outputs"]).copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return out

    def params_finite(self) -> bool:
        """Finite check of the parameters (pulls them once; no host-dirty mark)."""
        prev = self._state["params"]["host_dirty"]
        self._pull("params")
        self._state["params"]["host_dirty"] = prev
        return bool(np.isfinite(self.__dict__["param_arena"]).all())


def to_cuda(net: CompiledNet) -> CudaNet:
    """Turn a freshly compiled CPU-side net into a CudaNet (arrays to the device, plans bound)."""
    if isinstance(net, CudaNet):
        return net
    net.__class__ = CudaNet
    net.backend = "cuda"
    net._setup()
    return net
