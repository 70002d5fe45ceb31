"""Worker of tests/test_distributed.py, launched as ``mpiexec -n K python tests/dist_worker.py``.

Trains a small conv net (no BatchNorm, SGD momentum + weight decay) on fixed random data
with ``runtime.distributed.train_step``: global batch G, K ranks with G/K samples each, the
epoch order drawn from one seeded Generator on every rank.  Rank 0 writes the final
parameters and the per-step (rank-averaged) losses to ``--out`` (.npz).  The same function
``run`` with a single-process DistContext and local batch G is the reference the test
compares against.

``python tests/dist_worker.py loop --out DIR --stop-at S`` instead runs the real training loop
(``runtime.train.train(..., distributed=True)``) on ``LOOP_SPEC`` (the digits data, with
augmentation and a cosine schedule) and interrupts it after global step S (a hook raising
KeyboardInterrupt on every rank at the same step, as an agreed Ctrl-C would), leaving rank 0's
checkpoint in DIR for a resume with another number of ranks.

Fault injection (for the failure tests): ``--die-at S`` makes the last rank SIGKILL itself
before step S; ``--hang-at S`` makes it SIGSTOP itself (a frozen rank / lost machine the
launcher cannot see).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SPEC = """
netspec: 1
name: dist_tiny
input: [1, 8, 8]
layers:
  - conv: {name: conv1, out: 8, kernel: 3, pad: 1}
  - relu: {}
  - maxpool: {kernel: 2, stride: 2}
  - conv: {name: conv2, out: 16, kernel: 3, pad: 1}
  - relu: {}
  - flatten: {}
  - linear: {name: fc, out: 10}
train:
  loss: {softmax_cross_entropy: {}}
  optimizer: {sgd: {lr: 0.05, momentum: 0.9}}
  regularization: {weight_decay: 1.0e-4}
  seed: 0
"""

LOOP_SPEC = SPEC.replace("name: dist_tiny", "name: dist_loop").replace("""  seed: 0
""", """  seed: 0
  data: {source: digits, val_split: 0.1, test_split: 0.2, seed: 0}
  preprocess: [{standardize: per_channel}]
  augment: [{random_crop: {pad: 1}}]
  schedule: {cosine: {min_lr: 0.0}}
  batch_size: 32
  epochs: 2
""")

N_SAMPLES = 192


def data(seed: int = 0):
    """Fixed random inputs (N, 1, 8, 8) float32 and labels (N,) int64 with a learnable signal."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 10, N_SAMPLES).astype(np.int64)
    x = r.standard_normal((N_SAMPLES, 1, 8, 8)).astype(np.float32)
    x[np.arange(N_SAMPLES), 0, y % 8, y // 8] += 2.0
    return x, y


def run(ctx, global_batch: int, steps: int, init_seed: int = 100, die_at: int = -1,
        hang_at: int = -1):
    """Train ``steps`` steps -> (param arena copy, list of losses).  Rank r compiles with a
    different init seed (100 + r) on purpose: broadcast_params must make them equal."""
    import compiler
    import netspec
    from runtime.distributed import train_step
    B = ctx.local_batch(global_batch)
    net = compiler.compile(netspec.load(SPEC), batch_size=B, seed=init_seed + ctx.rank)
    ctx.broadcast_params(net)
    ctx.assert_in_sync(net)
    x, y = data()
    order_rng = np.random.default_rng([0, 1])
    losses, step = [], 0
    while step < steps:
        for xb, yb in ctx.batches(x, y, global_batch, order_rng):
            if step >= steps:
                break
            if ctx.rank == ctx.size - 1 and step == die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if ctx.rank == ctx.size - 1 and step == hang_at:
                os.kill(os.getpid(), signal.SIGSTOP)
            net.lr = 0.05 * (1.0 - 0.5 * step / steps)      # a schedule, as the loop sets it
            losses.append(train_step(net, np.ascontiguousarray(xb), yb, ctx))
            step += 1
    ctx.assert_in_sync(net)
    return net.param_arena.copy(), losses


def loop(out: str, stop_at: int, distributed: bool = True, resume: bool = False) -> dict:
    """The training loop on LOOP_SPEC in ``out``; interrupted after global step ``stop_at``
    (< 0: never)."""
    import netspec
    from runtime.train import train

    def hook(run):
        if run.epoch * run.spe + run.batch == stop_at:
            raise KeyboardInterrupt
    return train(netspec.load(LOOP_SPEC), out, progress=False, resume=resume,
                 distributed=distributed, hooks={"after_step": hook})


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["loop"]:
        q = argparse.ArgumentParser()
        q.add_argument("--out", required=True)
        q.add_argument("--stop-at", type=int, default=-1)
        b = q.parse_args(argv[1:])
        loop(b.out, b.stop_at)
        return 0
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--global-batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--die-at", type=int, default=-1)
    p.add_argument("--hang-at", type=int, default=-1)
    a = p.parse_args(argv)
    from runtime.distributed import DistContext
    ctx = DistContext.create(distributed=True)
    w, losses = run(ctx, a.global_batch, a.steps, die_at=a.die_at, hang_at=a.hang_at)
    # BatchNorm running statistics: rank r holds r + [0, 1, 2] -> averaged on every rank
    class BN:
        buffers = {"bn.running_mean": np.arange(3, dtype=np.float32) + ctx.rank,
                   "bn.running_var": np.full((2, 2), 1.0 + ctx.rank, np.float32)}
    ctx.sync_buffers(BN)
    obj = ctx.bcast_object({"from": ctx.rank, "arr": np.arange(4) * (ctx.rank + 1)})
    gathered = ctx.comm.gather((BN.buffers["bn.running_mean"].tolist(),
                                float(BN.buffers["bn.running_var"][1, 1]), obj["from"],
                                obj["arr"].tolist()), root=0)
    try:                                                 # differing data -> DistError on all
        ctx.check_same([N_SAMPLES, ctx.rank], "training data")
        mismatch = "none"
    except Exception as e:                              # noqa: BLE001
        mismatch = f"{type(e).__name__}: {e}"
    mismatches = ctx.comm.gather(mismatch, root=0)
    if ctx.is_root:
        np.savez(a.out, mismatch=np.array(mismatches), params=w, losses=np.array(losses), size=np.array([ctx.size]),
                 synced=np.array([g[0] + [g[1], g[2]] + g[3] for g in gathered]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
