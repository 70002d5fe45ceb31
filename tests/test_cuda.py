"""The numba-CUDA backend without a GPU.

1. Type checks: every CUDA kernel that the op plans of the op test tables (and the
   optimizer, every rule) launch is compiled to PTX for sm_90 with
   ``numba.cuda.compile_ptx`` from float32 signatures taken from the plans' own arguments.
2. Simulator parity (a subprocess with NUMBA_ENABLE_CUDASIM=1, because the simulator must
   be chosen before numba.cuda is imported): one case per op against the float64 numpy
   reference, then a tiny conv-bn-relu-conv-add-pool-linear net (1x6x6, B=2) CPU vs CUDA:
   forward, loss, every gradient, one optimizer step and the BN running statistics; and a
   two-output net with a weighted auxiliary loss (forward tuple, loss, gradients).
3. ``backend="cuda"`` without a GPU: CompileError with one sentence; the CLI exits 1.

The per-op simulator sweep takes about a minute on 2 cores, so it runs only with
NETSPEC_CUDA_SIM_OPS=1 (or by hand: ``NUMBA_ENABLE_CUDASIM=1 python tests/test_cuda.py sim ops``);
the net parity (~30 s) always runs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

EXTRA = [
    ("bn_fold_weight", [(4, 3, 3, 3), (4,), (4,)], {"eps": 1e-5}, dict(inputs={2: np.arange(1.0, 5.0)})),
    ("bn_fold_bias", [(4,), (4,), (4,), (4,), (4,)], {"eps": 1e-5}, dict(inputs={4: np.arange(1.0, 5.0)})),
    ("fill", [], {"shape": (2, 3), "value": 1.5}, {}),
]


def all_cases():
    """The CPU op tables, less the fused-residual forms only the CPU kernels implement
    (passes/fuse_residual.py is in pipeline.CPU_ONLY) and the per-position cross-entropy
    (CPU only: compile refuses it for backend="cuda")."""
    from test_ops_pointwise import CASES as A
    from test_ops_spatial import CASES as B
    cpu_only = lambda c: (c[0] == "batchnorm" and len(c[1]) > 5) or c[2].get("spatial")
    return [c for c in list(A) + list(B) if not cpu_only(c)] + EXTRA


def _arrays(op, shapes, attrs, kw, dtype=np.float32, make=lambda a: a, seed=0):
    """Inputs (float or int labels), output, saved, ws, dy and dxs for one case."""
    rng = np.random.default_rng(seed)
    ints = kw.get("int_inputs", {})
    host = []
    for i, s in enumerate(shapes):
        if s is None:
            host.append(None)
        elif i in ints:
            host.append(rng.integers(0, ints[i], s).astype(np.int64))
        elif i in kw.get("inputs", {}):
            host.append(np.asarray(kw["inputs"][i], dtype).reshape(s))
        else:
            host.append(rng.standard_normal(s).astype(dtype))
    if op.name == "fill":
        yshape = tuple(attrs["shape"])
    else:
        yshape = op.out_shape([None if s is None else tuple(s) for s in shapes], attrs)
    dt = lambda d: dtype if d == "float" else np.dtype(d)
    sp = [None if s is None else tuple(s) for s in shapes]
    saved = {k: np.zeros(s, dt(d)) for k, (s, d) in op.saved_specs(sp, attrs).items()}
    ws = {k: np.zeros(s, dtype) for k, s in op.workspace(sp, attrs).items()}
    dy = rng.standard_normal(yshape).astype(dtype)
    return host, yshape, saved, ws, dy


def _plans(name, shapes, attrs, kw, ctx):
    """Forward (+ backward when differentiable) plans on numpy arrays (HostCtx)."""
    from compiler.ops import OPS
    from compiler.ops.cuda import CUDA_OPS
    op = OPS[name]
    xs, yshape, saved, ws, dy = _arrays(op, shapes, attrs, kw)
    y = np.zeros(yshape, np.float32)
    train = kw.get("train", True)
    plan = CUDA_OPS[name].plan_forward(ctx, xs, y, saved, ws, attrs, train)
    if op.differentiable and op.name not in ("fill",):
        dxs = [None if (x is None or x.dtype.kind == "i") else np.zeros_like(x) for x in xs]
        if name in ("batchnorm",):
            dxs[3] = dxs[4] = None
        if name in ("softmax_cross_entropy", "hinge", "bce_with_logits", "mse"):
            dxs[1] = None
        plan += CUDA_OPS[name].plan_backward(ctx, xs, y, saved, dy, dxs, ws, attrs)
    return plan


def _optimizer_plans(ctx):
    from compiler.net import ParamInfo
    from compiler.ops.cuda.optim import DeviceOptimizer
    from compiler.optim import make_optimizer
    info = {"w": ParamInfo("l", True, 1.0, False, (4, 6)), "b": ParamInfo("l", False, 1.0, False, (4,))}
    cfgs = [{"sgd": {"lr": 0.1}}, {"momentum": {}}, {"nesterov": {"momentum": 0.9}}, {"adam": {}},
            {"adamw": {"weight_decay": 0.1}}, {"rmsprop": {}}, {"rmsprop": {"momentum": 0.9}}, {"adagrad": {}}]
    plans = []
    for c in cfgs:
        reg = {"weight_decay": 1e-3, "l1": 1e-4, "max_norm": 2.0, "clip_grad_norm": 1.0}
        opt = make_optimizer({"optimizer": c, "regularization": reg}, info)
        dopt = DeviceOptimizer(opt, ctx)
        p, g = np.zeros(28, np.float32), np.zeros(28, np.float32)
        plans += dopt.plan(p, g, {k: np.zeros(28, np.float32) for k in opt.state_specs()})
    return plans


def test_kernels_typecheck_sm90():
    from importlib.metadata import PackageNotFoundError, version
    try:
        version("numba-cuda")
    except PackageNotFoundError:    # numba 0.68's own bundled numba.cuda needs a driver here
        pytest.skip("numba-cuda is not installed (pip install -e \".[gpu]\"): compile_ptx "
                    "without a GPU needs it")
    cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        pytest.skip("compile_ptx needs the real numba.cuda, not the simulator")
    import numba
    from compiler.ops.cuda.common import HostCtx, Launch
    ctx = HostCtx()
    launches = []
    for name, shapes, attrs, kw in all_cases():
        launches += [s for s in _plans(name, shapes, attrs, kw, ctx) if isinstance(s, Launch)]
    launches += _optimizer_plans(ctx)
    # wide convs: the register-blocked forward's 2- and 4-row variants (the tables' convs
    # have few channels, so their plans pick the 1-row one)
    from compiler.ops.cuda.gemm import conv_forward
    from compiler.ops.cuda.gemm import conv_weight_grad
    for rm, O in ((2, 32), (4, 64)):
        x, y = np.zeros((2, 8, 6, 6), np.float32), np.zeros((2, O, 6, 6), np.float32)
        w = np.zeros((O, 8, 3, 3), np.float32)
        launches.append(conv_forward(x, w, None, y, (1, 1, 1, 1, 1, 1, 1), True, ctx=ctx, rm=rm))
        launches += conv_weight_grad(ctx, x, y, w, (1, 1, 1, 1, 1, 1, 1), zm=y)
    seen, failures = set(), []
    for s in launches:
        sig = tuple(numba.typeof(a) for a in s.args)
        key = (s.kernel.py_func.__module__, s.kernel.py_func.__name__, sig)
        if key in seen:
            continue
        seen.add(key)
        try:
            cuda.compile_ptx(s.kernel.py_func, sig, cc=(9, 0))
        except Exception as e:   # report every failing kernel at once
            failures.append(f"{key[1]}{sig}: {type(e).__name__}: {str(e)[:300]}")
    assert not failures, "\n".join(failures)
    assert len(seen) >= 60          # the tables exercise every kernel family
    kernels = {k[1] for k in seen}
    for must in ("conv_fwd_r1", "conv_fwd_r2", "conv_fwd_r4", "phase_weights", "conv_dw_r1", "conv_dw_r2",
                 "conv_dw_r4", "conv_dx", "gemm", "bn_part_stats", "bn_finish_stats", "bn_part_bwd",
                 "bn_bwd_dx", "ce_fwd", "update",
                 "maxpool_fwd", "argmax_bwd", "window_copy", "gn_bwd_dx", "act_fwd_relu", "mul_bcast", "mul_dg",
                 "maxout_fwd", "maxout_bwd", "adaptive_avg_fwd", "adaptive_avg_bwd"):
        assert must in kernels, must


def test_every_op_has_cuda_launchers():
    from compiler.ops import OPS
    from compiler.ops.cuda import CUDA_OPS, FALLBACK, native_ops
    assert set(OPS) == set(CUDA_OPS)
    assert len(native_ops()) == len(OPS) - len(FALLBACK)


def test_cuda_backend_without_gpu_is_one_sentence_and_cli_exit_1(tmp_path):
    from compiler.codegen import cuda_backend
    if cuda_backend.gpu_available():
        pytest.skip("a GPU (or the simulator) is present")
    import compiler
    from compiler.net import CompileError
    with pytest.raises(CompileError) as e:
        compiler.compile(str(ROOT / "specs" / "digits.yaml"), backend="cuda", batch_size=4)
    msg = str(e.value)
    assert msg == cuda_backend.MESSAGE and msg.count(". ") == 1 and msg.endswith("Use --backend cpu.")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-m", "netspec", "train", str(ROOT / "specs" / "digits.yaml"),
                        "--backend", "cuda", "--out", str(tmp_path / "o"), "--no-progress"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "needs an NVIDIA GPU" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr


def test_simulator_parity():
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    args = ["sim", "ops"] if os.environ.get("NETSPEC_CUDA_SIM_OPS") == "1" else ["sim"]
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=900)
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-4000:])
    assert "SIM OK" in r.stdout


# ------------------------------------------------------------------ simulator worker
def _sim_op_cases():
    """One case per op (the first in the tables), to keep the simulator run short."""
    seen, out = set(), []
    for c in all_cases():
        if c[0] not in seen and c[0] not in ("fill",):
            seen.add(c[0])
            out.append(c)
    return out


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def _sim_ops(cases=None):
    """Each case's CUDA forward and backward against the numpy reference; -> problems.  An
    exception fails its case only, so one run reports every broken op."""
    bad = []
    for case in cases if cases is not None else _sim_op_cases():
        try:
            _sim_op(case, bad)
        except Exception as e:  # noqa: BLE001 -- reported and counted as a failure
            bad.append(f"{case[0]} {case[1]} raised {type(e).__name__}: {str(e)[:300]}")
            print(case[0], "RAISED", flush=True)
    return bad


def _sim_op(case, bad):
    from numba import cuda

    from compiler.ops import OPS
    from compiler.ops.cuda import CUDA_OPS
    name, shapes, attrs, kw = case
    op = OPS[name]
    train = kw.get("train", False)
    xs, yshape, saved, ws, dy = _arrays(op, shapes, attrs, kw)
    x64 = [None if a is None else (a.astype(np.float64) if a.dtype.kind == "f" else a) for a in xs]
    if op.random and train:     # same-dtype reference (the rng draws in the array dtype)
        x64 = [None if a is None else a.copy() for a in xs]
    ry, rs = op.ref_forward([None if a is None else a.copy() for a in x64], attrs, train,
                            np.random.default_rng(5))
    dev = [None if a is None else cuda.to_device(a) for a in xs]
    yd = cuda.to_device(np.full(yshape, np.nan, np.float32))
    sd = {k: cuda.to_device(v) for k, v in saved.items()}
    wd = {k: cuda.to_device(v) for k, v in ws.items()}
    CUDA_OPS[name].forward(dev, yd, sd, wd, attrs, train, np.random.default_rng(5))
    e = _rel(yd.copy_to_host(), ry)
    if not e < 1e-4:
        bad.append(f"{name} forward {e:.2e}")
    if not op.differentiable:
        print(name, "ok" if not bad or not bad[-1].startswith(name) else "BAD", flush=True)
        return
    rg = op.ref_backward(x64, ry, rs, dy.astype(np.float64), attrs)
    needs = kw.get("needs", tuple(i for i, g in enumerate(rg) if g is not None))
    dxs = [cuda.to_device(np.full(xs[i].shape, np.nan, np.float32)) if i in needs and rg[i] is not None
           else None for i in range(len(xs))]
    CUDA_OPS[name].backward(dev, yd, sd, cuda.to_device(dy), dxs, wd, attrs)
    for i, d in enumerate(dxs):
        if d is not None:
            e = _rel(d.copy_to_host(), rg[i])
            if not e < 1e-4:
                bad.append(f"{name} d{i} {e:.2e}")
    print(name, "ok" if not bad or not bad[-1].startswith(name) else "BAD", flush=True)


NET = """
netspec: 1
name: tiny
input: [1, 6, 6]
layers:
  - conv: {name: conv1, out: 3, kernel: 3, pad: 1, bias: false}
  - batchnorm: {name: bn1}
  - relu: {}
  - conv: {name: conv2, out: 3, kernel: 3, pad: 1}
  - add: {from: [-1, bn1]}
  - maxpool: {kernel: 2, stride: 2}
  - flatten: {}
  - linear: {name: fc, out: 4}
train:
  optimizer: {sgd: {lr: 0.1, momentum: 0.9}}
"""


def _sim_net():
    import compiler
    from compiler.codegen.cuda import to_cuda
    cpu = compiler.compile(NET, backend="cpu", batch_size=2, seed=1)
    gpu = to_cuda(compiler.compile(NET, backend="cuda", batch_size=2, seed=1))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    t = np.array([1, 3])
    bad = []
    if not _rel(gpu.forward(x), cpu.forward(x)) < 1e-4:
        bad.append("net forward")
    l1, g1 = cpu.loss_and_grads(x, t)
    l2, g2 = gpu.loss_and_grads(x, t)
    if abs(l1 - l2) > 1e-5 * max(1, abs(l1)):
        bad.append(f"loss {l1} {l2}")
    bad += [f"grad {k} {_rel(g2[k], g1[k]):.2e}" for k in g1 if not _rel(g2[k], g1[k]) < 1e-4]
    cpu.lr = gpu.lr = 0.1
    for _ in range(1):
        cpu.step(x, t)
        gpu.step(x, t, want_loss=False)
    bad += [f"param {k}" for k in cpu.params if not _rel(gpu.params[k], cpu.params[k]) < 1e-4]
    bad += [f"buffer {k}" for k in cpu.buffers if not _rel(gpu.buffers[k], cpu.buffers[k]) < 1e-4]
    sd = gpu.state_dict()
    assert any(k.startswith("opt/") for k in sd)
    return bad


NET_AUX = """
netspec: 1
name: tiny_aux
input: [1, 6, 6]
outputs: [fc, aux]
layers:
  - conv: {name: conv1, out: 3, kernel: 3, pad: 1}
  - relu: {name: r1}
  - flatten: {}
  - linear: {name: fc, out: 4}
  - flatten: {name: f2, from: r1}
  - linear: {name: aux, out: 4}
train:
  loss_weights: {aux: 0.3}
  optimizer: {sgd: {lr: 0.1}}
"""


def _sim_net_aux():
    """Several outputs on CUDA: forward gives the tuple, and the weighted auxiliary loss
    (train.loss_weights: per-head loss nodes summed by axpy) matches the CPU's loss and
    gradients."""
    import compiler
    from compiler.codegen.cuda import to_cuda
    cpu = compiler.compile(NET_AUX, backend="cpu", batch_size=2, seed=1)
    gpu = to_cuda(compiler.compile(NET_AUX, backend="cuda", batch_size=2, seed=1))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 6, 6)).astype(np.float32)     # 3 > batch: two chunks
    t = np.array([1, 3])
    bad = []
    yc, yg = cpu.forward(x), gpu.forward(x)
    if not (isinstance(yg, tuple) and len(yg) == 2 and all(_rel(a, b) < 1e-4 for a, b in zip(yg, yc))):
        bad.append("aux net forward")
    l1, g1 = cpu.loss_and_grads(x[:2], t)
    l2, g2 = gpu.loss_and_grads(x[:2], t)
    if abs(l1 - l2) > 1e-5 * max(1, abs(l1)):
        bad.append(f"aux loss {l1} {l2}")
    bad += [f"aux grad {k} {_rel(g2[k], g1[k]):.2e}" for k in g1 if not _rel(g2[k], g1[k]) < 1e-4]
    return bad


def _launch_paths():
    """On a GPU: numba's dispatcher, pre-marshalled launches and the CUDA-graph step give the
    same bits (loss, gradients, parameters after two steps), and the graph was used -- for
    the tiny net and for it with dropout (rng draws run before the graph)."""
    import compiler
    from compiler.codegen.cuda import to_cuda
    from compiler.ops.cuda import common
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    t = np.array([1, 3])
    bad, keep = [], (common.FAST_LAUNCH, common.GRAPHS)
    drop = NET.replace("  - flatten: {}\n", "  - flatten: {}\n  - dropout: {p: 0.5}\n")
    try:
        for name, text in (("tiny", NET), ("tiny+dropout", drop)):
            res = []
            for path in ((False, False), (True, False), (True, True)):
                common.FAST_LAUNCH, common.GRAPHS = path
                n = to_cuda(compiler.compile(text, backend="cuda", batch_size=2, seed=1))
                loss, g = n.loss_and_grads(x, t)
                n.lr = 0.1
                n.step(x, t, want_loss=False)
                n.step(x, t, want_loss=False)
                res.append((loss, {k: v.copy() for k, v in g.items()}, {k: v.copy() for k, v in n.params.items()}))
                if path == (True, True) and not (n._graphs and all(gr for _, gr in n._graphs.values())):
                    bad.append(f"launch paths ({name}): the step did not run as a CUDA graph")
            for label, r in zip(("pre-marshalled", "graph"), res[1:]):
                if r[0] != res[0][0] or any(not np.array_equal(r[i][k], res[0][i][k]) for i in (1, 2) for k in r[i]):
                    bad.append(f"launch paths ({name}): {label} differs from the dispatcher")
    finally:
        common.FAST_LAUNCH, common.GRAPHS = keep
    return bad


if __name__ == "__main__" and sys.argv[1:2] in (["sim"], ["gpu"]):
    # "sim": the simulator worker of test_simulator_parity.  "gpu": the same op table and tiny
    # net on a real device (benchmarks/gpu_check.sh runs it there).
    import time
    sim = sys.argv[1] == "sim"
    assert (os.environ.get("NUMBA_ENABLE_CUDASIM") == "1") == sim, "sim needs NUMBA_ENABLE_CUDASIM=1, gpu must not"
    t0 = time.time()
    every = [c for c in all_cases() if c[0] != "fill"]
    problems = (_sim_ops(every) if "all" in sys.argv[2:] else
                _sim_ops() if "ops" in sys.argv[2:] else [])
    t1 = time.time()
    problems += _sim_net() + _sim_net_aux()
    if not sim:
        problems += _launch_paths()
    print(f"ops {t1 - t0:.1f} s, net {time.time() - t1:.1f} s")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print("SIM OK" if sim else "GPU OK")
