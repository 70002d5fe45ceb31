"""Data-parallel training (runtime/distributed.py).

(a) K=2 ranks with local batch B end at the same weights (and per-step losses) as one
    process with batch 2B -- run through ``mpiexec -n 2 python tests/dist_worker.py``;
(b) a rank that dies or hangs mid-run makes the job stop, non-zero, within the timeout;
(c) sharding and the single-process context, without MPI.
The MPI tests skip (with the reason) when mpi4py or mpiexec is not installed
(``pip install mpi4py mpich``).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from runtime import data as D  # noqa: E402
from runtime.distributed import (DistContext, DistError, shard_bounds,  # noqa: E402
                                 shard_indices, train_step)


def _mpiexec() -> str | None:
    cand = Path(sys.executable).parent / "mpiexec"
    return str(cand) if cand.is_file() else shutil.which("mpiexec")


def _need_mpi():
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install mpi4py mpich)")
    if _mpiexec() is None:
        pytest.skip("no mpiexec found (pip install mpich)")


def _launch(tmp_path, *args, n=2, timeout_env=None, bucket_mb=None, limit=120, extra_env=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", **(extra_env or {}))
    if timeout_env is not None:
        env["NETSPEC_DIST_TIMEOUT"] = str(timeout_env)
    if bucket_mb is not None:
        env["NETSPEC_DIST_BUCKET_MB"] = str(bucket_mb)
    cmd = [_mpiexec(), "-n", str(n), sys.executable, str(ROOT / "tests" / "dist_worker.py"), *args]
    t = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit, cwd=ROOT)
    return p, time.monotonic() - t


# ----------------------------------------------------------------------------- (a)
def test_two_ranks_match_one_process_with_double_batch(tmp_path):
    _need_mpi()
    import dist_worker as W
    out = tmp_path / "k2.npz"
    # 4 KB buckets: the ~15 KB gradient arena goes as 4 concurrent Iallreduce buckets
    p, _ = _launch(tmp_path, "--out", str(out), "--global-batch", "32", "--steps", "12",
                   bucket_mb=0.004)
    assert p.returncode == 0, p.stderr[-3000:]
    got = np.load(out)
    assert int(got["size"][0]) == 2
    ref_w, ref_losses = W.run(DistContext(), 32, 12)      # one process, batch 32, net.step
    import compiler
    import netspec
    w0 = compiler.compile(netspec.load(W.SPEC), batch_size=32, seed=100).param_arena
    moved = np.abs(ref_w - w0).max()
    assert moved > 1e-2                                    # training really changed the weights
    np.testing.assert_allclose(got["params"], ref_w, rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(got["losses"], ref_losses, rtol=1e-5)
    assert np.abs(got["params"] - ref_w).max() < 1e-3 * moved
    # sync_buffers averaged rank 0's [0,1,2]/1.0 and rank 1's [1,2,3]/2.0 on both ranks;
    # bcast_object delivered rank 0's object to both
    np.testing.assert_allclose(got["synced"], [[0.5, 1.5, 2.5, 1.5, 0, 0, 1, 2, 3]] * 2)
    # check_same: rank-dependent "data" is refused on every rank
    assert all(m.startswith("DistError: the training data differ between ranks") for m in got["mismatch"])


def test_cli_train_distributed_rank0_writes(tmp_path):
    """`mpiexec -n 2 python -m netspec.cli train SPEC --distributed`: one summary line, the
    run files written once (by rank 0), exit status 0; an indivisible batch is refused."""
    _need_mpi()
    import dist_worker as W
    spec = tmp_path / "loop.yaml"
    spec.write_text(W.LOOP_SPEC)
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "netspec.cli", "train", str(spec),
           "--distributed", "--epochs", "1", "--out", str(tmp_path / "run")]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("dist_loop: 1 epoch,") == 1, p.stdout
    assert p.stderr.count("epoch 1/1") == 1                # epoch line from rank 0 only
    import json
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["status"] == "completed" and s["batch_size"] == 32 and s["test_accuracy"] > 0.3
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 2                                  # header + one epoch
    p = subprocess.run(cmd[:-2] + ["--batch-size", "33", "--out", str(tmp_path / "bad")],
                       env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert p.returncode != 0 and "not divisible by the 2 ranks" in p.stderr


def test_training_loop_k2_interrupted_then_resumed_with_k1_equals_k1(tmp_path):
    """runtime.train.train(distributed=True) with 2 ranks (sharding after augmentation,
    schedule, rank-0 checkpoint) stopped mid-epoch 2, resumed by ONE process: the final
    weights equal an uninterrupted single-process run (the checkpoint is global state)."""
    _need_mpi()
    import dist_worker as W
    from runtime.checkpoint import load_checkpoint
    run = tmp_path / "k2"
    p, _ = _launch(tmp_path, "loop", "--out", str(run), "--stop-at", "50", limit=180)
    assert p.returncode == 0, p.stderr[-3000:]
    ck_meta = load_checkpoint(run / "checkpoint.npz")[1]
    assert ck_meta["epoch"] == 1 and ck_meta["batch"] > 0        # stopped mid epoch 2
    assert json_status(run / "summary.json") == "interrupted"
    s = W.loop(str(run), -1, distributed=False, resume=True)
    assert s["status"] == "completed" and s["epochs"] == 2
    ref = W.loop(str(tmp_path / "k1"), -1, distributed=False)
    got = load_checkpoint(run / "checkpoint.npz")[0]
    want = load_checkpoint(tmp_path / "k1" / "checkpoint.npz")[0]
    names = [k for k in want if k.startswith("params/")]
    assert names
    for k in names:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert abs(s["test_accuracy"] - ref["test_accuracy"]) < 0.01


def json_status(path) -> str:
    import json
    return json.loads(Path(path).read_text()).get("status")


# ----------------------------------------------------------------------------- (b)
def test_killed_rank_stops_the_job(tmp_path):
    """A rank SIGKILLed mid-run: the launcher (or our deadline) ends the others, non-zero."""
    _need_mpi()
    log = tmp_path / "abort.log"
    p, dt = _launch(tmp_path, "--out", str(tmp_path / "x.npz"), "--die-at", "3",
                    timeout_env=5, limit=60, extra_env={"NETSPEC_DIST_ABORT_LOG": str(log)})
    assert p.returncode != 0
    assert dt < 5 + 25                                    # deadline + start-up and compile
    msg = p.stdout + p.stderr + (log.read_text() if log.exists() else "")
    assert ("BAD TERMINATION" in msg or "did not complete within 5 s" in msg), msg[-2000:]
    assert not (tmp_path / "x.npz").exists()


def test_hung_rank_makes_the_others_abort_with_a_clear_message(tmp_path):
    """A frozen rank (SIGSTOP: the launcher sees nothing) -> rank 0 aborts after the timeout,
    naming the collective and the timeout."""
    _need_mpi()
    log = tmp_path / "abort.log"
    p, dt = _launch(tmp_path, "--out", str(tmp_path / "x.npz"), "--hang-at", "3",
                    timeout_env=3, limit=60, extra_env={"NETSPEC_DIST_ABORT_LOG": str(log)})
    assert p.returncode != 0
    assert dt < 3 + 25
    # MPICH's launcher sometimes tears the job down before forwarding the aborting rank's
    # stderr (about 1 run in 10 on a loaded 2-core machine), so the abort log is the record
    msg = log.read_text()
    assert msg.startswith("netspec distributed: rank 0/2: allreduce of the gradients"), msg
    assert "did not complete within 3 s (NETSPEC_DIST_TIMEOUT)" in msg
    assert "step 4" in msg                                # the 4th step is the one never done
    assert msg.count("\n") == 1                           # only the waiting rank aborted
    if p.stderr.strip():
        assert msg.strip() in p.stderr


# ----------------------------------------------------------------------------- (c)
def test_shard_bounds_partition_the_batch():
    for K in (1, 2, 3, 4, 8):
        G = 8 * K * 3
        spans = [shard_bounds(G, r, K) for r in range(K)]
        assert spans[0][0] == 0 and spans[-1][1] == G
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert {hi - lo for lo, hi in spans} == {G // K}
    with pytest.raises(DistError, match="not divisible"):
        shard_bounds(10, 0, 4)
    with pytest.raises(ValueError):
        shard_bounds(8, 2, 2)


@pytest.mark.parametrize("K,B", [(1, 16), (2, 8), (4, 4), (3, 5)])
def test_shards_concatenate_to_the_single_process_batches(K, B):
    """Ranks 0..K-1 of every step, concatenated, are exactly the batch of size K*B that
    runtime.data.batches gives one process from the same seeded Generator (same order)."""
    n, G = 101, K * B
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
    y = np.arange(n)
    single = [yb for _, yb in D.batches(x, y, G, np.random.default_rng(7), shuffle=True)]
    per_rank = []
    for r in range(K):
        ctx = DistContext()
        ctx.rank, ctx.size = r, K                      # a stand-in for rank r of K (no MPI)
        per_rank.append([yb for _, yb in ctx.batches(x, y, G, np.random.default_rng(7))])
    assert all(len(p) == len(single) == n // G for p in per_rank)
    for s, parts in zip(single, zip(*per_rank)):
        np.testing.assert_array_equal(np.concatenate(parts), s)
    # a mid-epoch resume skips whole global batches
    order = np.random.default_rng(7).permutation(n)
    later = list(shard_indices(order, G, K - 1, K, start_batch=2))
    assert len(later) == n // G - 2
    np.testing.assert_array_equal(later[0], single[2][(K - 1) * B:])


def test_one_permutation_per_epoch_like_data_batches():
    """ctx.batches advances the order Generator exactly as runtime.data.batches does, so the
    order RNG state saved in a checkpoint means the same for every K."""
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    list(D.batches(np.zeros((50, 1)), np.zeros(50), 10, r1))
    list(DistContext().batches(np.zeros((50, 1)), np.zeros(50), 10, r2))
    assert r1.bit_generator.state == r2.bit_generator.state


def test_single_process_context_is_trivial():
    ctx = DistContext.create(distributed=False)
    assert (ctx.rank, ctx.size, ctx.is_root, ctx.distributed) == (0, 1, True, False)
    assert ctx.local_batch(64) == 64
    x, y = np.zeros((8, 1, 2, 2)), np.arange(8)
    xs, ys = ctx.shard(x, y)
    assert xs.shape == x.shape and np.array_equal(ys, y)
    assert ctx.allreduce_mean(2.5) == 2.5
    np.testing.assert_array_equal(ctx.allreduce_grads(None, [1.0, 2.0]), [1.0, 2.0])
    ctx.barrier()
    ctx.check_same([1.0, 2.0], "anything")
    ctx.sync_buffers(None)
    ctx.broadcast_params(None)


def test_rank_shard_of_a_batch_and_local_batch():
    ctx = DistContext()
    ctx.rank, ctx.size = 1, 4
    x, y = np.arange(16).reshape(16, 1), np.arange(16)
    xs, ys = ctx.shard(x, y)
    np.testing.assert_array_equal(ys, [4, 5, 6, 7])
    assert xs.flags.c_contiguous and ctx.local_batch(16) == 4
    with pytest.raises(DistError, match="multiple of 4"):
        ctx.local_batch(18)


def test_decorrelated_rng_per_rank():
    a, b, c = (np.random.default_rng(5) for _ in range(3))
    for rank, g in ((0, a), (1, b), (2, c)):
        ctx = DistContext()
        ctx.rank, ctx.size = rank, 3
        ctx.decorrelate_rng(g)
    ref = np.random.default_rng(5).random(4)
    np.testing.assert_array_equal(a.random(4), ref)          # rank 0: the checkpointed stream
    vb, vc = b.random(4), c.random(4)
    assert not np.allclose(vb, ref) and not np.allclose(vb, vc)


def test_distributed_without_mpi4py_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)          # import mpi4py -> ImportError
    with pytest.raises(DistError, match="pip install mpi4py mpich"):
        DistContext.create(distributed=True)


def test_bad_timeout_env(monkeypatch):
    monkeypatch.setenv("NETSPEC_DIST_TIMEOUT", "soon")
    with pytest.raises(DistError, match="NETSPEC_DIST_TIMEOUT"):
        DistContext()


def test_train_step_single_process_is_net_step():
    class Net:
        def __init__(self):
            self.calls = []

        def step(self, x, y):
            self.calls.append("step")
            return 1.5

    net, ctx = Net(), DistContext()
    assert train_step(net, None, None, ctx, stop=True) == 1.5
    assert net.calls == ["step"] and ctx.stop_requested
