"""Size and memory guarantees (docs/security.md, "Absurd sizes and memory"): absurd sizes
are refused at check time, located at the offending attribute; the compiler refuses a net
that does not fit in memory, with the figure and its breakdown, before allocating
(NETSPEC_MEMORY_LIMIT)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from netspec import SpecError, check, load
from spechelp import located

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "specs").glob("*.yaml"))

SIZE_CASES = {
    "conv_1e12_channels": ("  - conv: {out: 1000000000000, kernel: 3, pad: 1}\n", 5, "out"),
    "linear_weight_2_31": ("  - flatten: {}\n  - linear: {out: 20000000}\n", 6, "out"),
    "conv_weight_2_31": ("  - conv: {out: 100000000, kernel: 5}\n", 5, "out"),
    "upsample_scale": ("  - upsample: {scale: 1000000}\n", 5, None),
    "pad_huge": ("  - conv: {out: 4, kernel: 1, pad: 1000000000}\n", 5, None),
}


@pytest.mark.parametrize("key", sorted(SIZE_CASES))
def test_absurd_sizes_refused_at_check_time(key):
    body, line, attr = SIZE_CASES[key]
    src = "netspec: 1\nname: t\ninput: [3, 32, 32]\nlayers:\n" + body
    t = time.process_time()
    with pytest.raises(SpecError) as ei:
        check(load(src, file="s.yaml"))
    assert time.process_time() - t < 1
    e = ei.value
    located(e, "s.yaml")
    assert e.line == line and "2**31" in e.message, e
    if attr:   # at the value of the attribute
        assert e.col == e.source_line.index(attr) + len(attr) + 3


def test_input_too_large_refused():
    with pytest.raises(SpecError) as ei:
        check(load("netspec: 1\nname: t\ninput: [3, 65536, 65536]\nlayers:\n  - relu: {}\n",
                   file="s.yaml"))
    assert ei.value.line == 3 and "2**31" in ei.value.message


def test_zoo_passes_size_guard():
    for p in ZOO:
        r = check(load(p))
        assert r.total_params > 0


def _net_bytes(net):
    return {"params": net.param_arena.nbytes,
            "buffers": sum(v.nbytes for v in net.buffers.values()),
            "grads": net.grad_arena.nbytes,
            "optimizer": sum(v.nbytes for v in net.opt_state.values()),
            "activations": sum(a.nbytes for a in net._arenas.values())}


@pytest.mark.parametrize("opt,slots", [({"sgd": {"lr": 0.1}}, 0),
                                       ({"sgd": {"lr": 0.1, "momentum": 0.9}}, 1),
                                       ({"adam": {"lr": 0.001}}, 2)])
def test_memory_estimate_matches_allocation(opt, slots):
    """compiler.memory_needed (what the guard compares) equals what compile allocates:
    parameters, buffers, gradients, optimizer state (per rule) and the planned arenas
    (activations + saved tensors + workspace)."""
    import compiler
    from compiler.net import memory_needed
    spec = load(ROOT / "specs" / "digits.yaml")
    net = compiler.compile(spec, batch_size=8, optimizer=opt)
    need = memory_needed(net.report, net.graphs, True, {**spec.train, "optimizer": opt},
                         np.float32)
    have = _net_bytes(net)
    for k, v in have.items():
        assert need[k] == v, (k, need[k], v)
    assert need["optimizer"] == slots * need["params"]
    assert need["other"] > 0 and need["total"] == sum(v for k, v in need.items() if k != "total")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_arenas_start_on_cache_lines(dtype):
    """Every arena starts on a 64-byte line (compiler.memory.aligned_zeros), so the planner's
    16-element tensor offsets are line-aligned too: numpy's allocator gave addresses 16 bytes
    off a line, and every vector access split two lines (ResNet-20 step 121 vs 102 ms)."""
    import compiler
    from compiler.memory import aligned_zeros
    for n in (1, 7, 1000, 3 * 10**6):
        a = aligned_zeros(n, dtype)
        assert a.ctypes.data % 64 == 0 and a.shape == (n,) and a.dtype == dtype and not a.any()
    net = compiler.compile(load(ROOT / "specs" / "digits.yaml"), batch_size=8, dtype=dtype,
                           optimizer={"sgd": {"lr": 0.1, "momentum": 0.9}})
    arrays = [net.param_arena, net.grad_arena, *net.opt_state.values(), *net._arenas.values()]
    assert arrays and all(a.ctypes.data % 64 == 0 for a in arrays)


def test_memory_limit_refuses_before_allocating(monkeypatch):
    import compiler
    from compiler.net import CompileError
    spec = load(ROOT / "specs" / "digits.yaml")
    monkeypatch.setenv("NETSPEC_MEMORY_LIMIT", "1M")
    allocated = []
    real_zeros = np.zeros

    def spy(shape, *a, **k):
        n = int(np.prod(shape))
        allocated.append(n)
        return real_zeros(shape, *a, **k)
    monkeypatch.setattr(np, "zeros", spy)
    with pytest.raises(CompileError) as ei:
        compiler.compile(spec, batch_size=64)
    msg = str(ei.value)
    assert "needs about" in msg and "MiB" in msg and "batch size 64" in msg
    assert "activations" in msg and "1.00 MiB is available" in msg
    assert max(allocated, default=0) < 1 << 16      # nothing big was allocated
    monkeypatch.setattr(np, "zeros", real_zeros)
    monkeypatch.setenv("NETSPEC_MEMORY_LIMIT", "64M")
    assert compiler.compile(spec, batch_size=64).batch_size == 64
    monkeypatch.setenv("NETSPEC_MEMORY_LIMIT", "200MiB")
    assert compiler.compile(spec, batch_size=8).batch_size == 8


@pytest.mark.parametrize("bad", ["lots", "-5G", "0", "nanM", "inf"])
def test_bad_memory_limit_value(monkeypatch, bad):
    import compiler
    from compiler.net import CompileError
    monkeypatch.setenv("NETSPEC_MEMORY_LIMIT", bad)
    with pytest.raises(CompileError, match="NETSPEC_MEMORY_LIMIT"):
        compiler.compile(load(ROOT / "specs" / "digits.yaml"), batch_size=8)


def test_batch_scaling_refused_with_figure(monkeypatch):
    """A net that fits at batch 8 but not at batch 4096 under a 64 MiB limit."""
    import compiler
    from compiler.net import CompileError
    spec = load(ROOT / "specs" / "digits.yaml")
    monkeypatch.setenv("NETSPEC_MEMORY_LIMIT", "64M")
    compiler.compile(spec, batch_size=8, train=False)
    with pytest.raises(CompileError, match=r"batch size 4096"):
        compiler.compile(spec, batch_size=4096)
