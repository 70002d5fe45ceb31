"""Data-parallel training across processes and machines with MPI (``netspec train --distributed``).

Model: synchronous data parallelism, one process ("rank") per core group / machine, launched
by ``mpiexec -n K``.  Every rank holds a full copy of the CompiledNet, computes gradients on
its shard of each *global* batch, the gradient arena is summed across ranks in place and
scaled by 1/K, and every rank applies the same optimizer update to identical parameters, so
the replicas stay bit-identical without ever exchanging weights after the start.

Semantics (the contract the tests check)
---------------------------------------
* **Batch size is global.**  ``train.batch_size`` / ``--batch-size`` is the global batch
  G; each of the K ranks compiles its net for ``G / K`` samples (G must be divisible by K).
  The loss is the mean over the local batch, so (sum over ranks of the local gradients) / K
  is the gradient of the mean loss over the global batch: K ranks with local batch B take
  the same steps as one process with batch K*B (equal up to float32 summation order).
  Hyper-parameters (lr, schedule, epochs) therefore mean the same for every K.
* **Same data order for every K.**  Every rank owns the same seeded ``order`` Generator and
  draws the same permutation per epoch; global batch b is ``order[b*G:(b+1)*G]`` exactly as
  in a single process, and rank r takes the contiguous slice ``[r*B, (r+1)*B)`` of it
  (``shard_bounds``).  Augmentation, when the loop applies it to the global batch before
  sharding (as ``runtime/train.py`` does), also draws identically on every rank.
* **Resume works for any K.**  A checkpoint holds only global state: parameters, BatchNorm
  buffers (averaged, see below), optimizer slots, step count, the epoch / batch position
  counted in global batches and the data RNG states.  None of that depends on K, so a run
  saved with K ranks resumes with K' ranks (G must be divisible by K').  After loading, call
  ``broadcast_params`` so every rank starts from rank 0's copy.
* **BatchNorm.**  Batch statistics *inside the compiled step* are computed over the local
  batch of each rank (as in Horovod/DDP without SyncBatchNorm): with BatchNorm the K-rank run
  is *not* identical to a single process with batch K*B (it is identical to "ghost batch
  norm" with ghost batch B).  ``sync_buffers`` averages the running mean / var across ranks
  (call it once per epoch, before evaluating or saving) so the replicas agree at evaluation
  time.  Averaging the running variances is the right estimate: each is an (unbiased)
  estimate of the population variance, so no between-rank term is added.
* **Dropout & co.** ``net.rng`` is decorrelated per rank (``decorrelate_rng``): rank 0 keeps
  the stream a single process would use (the one in the checkpoint), other ranks derive
  theirs from it and their rank, so masks differ between ranks.  Like BatchNorm, random
  layers therefore make a K-rank run statistically, not bitwise, equal to one process.
* **Files.**  Only rank 0 (``is_root``) writes checkpoints, metrics, plots and summaries.

Failure behaviour
-----------------
Every collective is non-blocking (``Iallreduce`` / ``Ibcast`` / ``Ibarrier``) and polled
against a deadline of ``NETSPEC_DIST_TIMEOUT`` seconds (default 600; it must exceed the
longest time one rank can spend outside collectives, e.g. the first step's JIT compilation).
A rank whose collective does not complete in time prints one line naming the collective,
its rank and the timeout, then calls ``comm.Abort(1)``, which makes ``mpiexec`` kill every
rank and exit non-zero.  The same line is appended to the abort log (``abort_log``: the run
directory's ``dist_abort.log`` under ``netspec train``, or ``NETSPEC_DIST_ABORT_LOG``),
because MPICH's launcher can tear the job down before it forwards the aborting rank's
stderr (seen about once in ten runs on a loaded 2-core machine).  This covers hung ranks and lost machines the launcher does not
notice; a rank that *dies* (signal, non-zero exit) is normally noticed by the launcher first
(MPICH hydra prints "BAD TERMINATION" and kills the rest).  Caveat measured with MPICH 5.0.2
hydra: a rank that calls ``os._exit(0)`` mid-run makes ``mpiexec`` kill the others and exit
with status 0 -- check ``summary.json``'s ``status`` rather than only the exit status.

Tunables (environment): ``NETSPEC_DIST_TIMEOUT`` (seconds), ``NETSPEC_DIST_BUCKET_MB``
(gradient bucket size, default 25 MB), ``NETSPEC_DIST_ABORT_LOG`` (abort log path).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["DistContext", "DistError", "train_step", "shard_bounds", "shard_indices",
           "launched_by_mpi", "DEFAULT_TIMEOUT", "DEFAULT_BUCKET_MB"]

DEFAULT_TIMEOUT = 600.0
DEFAULT_BUCKET_MB = 25.0   # PyTorch DDP's default; 4/8 MB measured no better on shared memory
_SPIN_S = 0.2            # poll without sleeping this long (latency), then back off (CPU)


class DistError(RuntimeError):
    """Distributed training cannot start (mpi4py missing, batch not divisible, ...)."""


# --------------------------------------------------------------------------- pure sharding
def shard_bounds(global_batch: int, rank: int, size: int) -> tuple[int, int]:
    """[lo, hi) of rank ``rank``'s contiguous shard of a global batch of ``global_batch``.

    Raises DistError when the global batch is not divisible by ``size`` (every rank must
    compile the same static batch size)."""
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} out of range for {size} ranks")
    if global_batch % size:
        raise DistError(f"the global batch size {global_batch} is not divisible by the "
                        f"{size} ranks; choose --batch-size as a multiple of {size}")
    b = global_batch // size
    return rank * b, (rank + 1) * b


def shard_indices(order: np.ndarray, global_batch: int, rank: int, size: int,
                  start_batch: int = 0, drop_last: bool = True) -> Iterator[np.ndarray]:
    """Sample indices of rank ``rank`` for each global batch of one epoch's ``order``.

    Global batch b is ``order[b*G:(b+1)*G]`` (as ``runtime.data.batches`` forms it in a
    single process); the rank gets its contiguous slice of it.  Concatenating the shards of
    ranks 0..K-1 of batch b gives back the global batch in order.  ``drop_last`` must be
    True (a compiled net has a fixed batch size); ``start_batch`` skips batches already done
    (mid-epoch resume)."""
    if not drop_last:
        raise ValueError("distributed batches need drop_last=True (fixed compiled batch size)")
    lo, hi = shard_bounds(global_batch, rank, size)
    for b in range(start_batch, len(order) // global_batch):
        yield order[b * global_batch + lo:b * global_batch + hi]


def launched_by_mpi() -> bool:
    """True when the environment says an MPI launcher (hydra, Open MPI, PMIx, Slurm) started
    this process -- without importing mpi4py (which initialises MPI)."""
    keys = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS",
            "HYDI_CONTROL_FD", "PMI_FD")
    return any(k in os.environ for k in keys)


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MB" if nbytes >= 2**20 else f"{nbytes / 1024:.1f} KB"


def _env_float(name: str, default: float) -> float:
    v = os.environ.get(name)
    if not v:
        return default
    try:
        f = float(v)
    except ValueError:
        raise DistError(f"{name}={v!r} is not a number")
    if f <= 0:
        raise DistError(f"{name} must be positive, got {v!r}")
    return f


# --------------------------------------------------------------------------- the context
class DistContext:
    """Rank, size and the collectives of one data-parallel run.

    ``DistContext()`` is the trivial single-process context (rank 0 of 1, every collective a
    no-op); ``DistContext.create(distributed=True)`` wraps ``mpi4py.MPI.COMM_WORLD``.
    Attributes: ``rank``, ``size``, ``is_root``, ``comm`` (None when single-process),
    ``timeout`` (seconds), ``bucket_bytes``, ``stats`` (seconds spent in / number of
    gradient allreduces, for benchmarks)."""

    def __init__(self, comm=None, *, timeout: float | None = None,
                 bucket_mb: float | None = None):
        self.comm = comm
        self.rank = int(comm.Get_rank()) if comm is not None else 0
        self.size = int(comm.Get_size()) if comm is not None else 1
        self.is_root = self.rank == 0
        self.timeout = float(timeout if timeout is not None
                             else _env_float("NETSPEC_DIST_TIMEOUT", DEFAULT_TIMEOUT))
        mb = bucket_mb if bucket_mb is not None else _env_float("NETSPEC_DIST_BUCKET_MB",
                                                                DEFAULT_BUCKET_MB)
        self.bucket_bytes = max(int(mb * 2**20), 4096)
        self.stats = {"allreduce_seconds": 0.0, "allreduces": 0}
        self.stop_requested = False       # set by train_step from everyone's stop flag
        log = os.environ.get("NETSPEC_DIST_ABORT_LOG")
        self.abort_log = Path(log) if log else None   # where abort() also writes its line

    @classmethod
    def create(cls, distributed: bool = True, **kw) -> "DistContext":
        """The context for this process.  ``distributed=False`` -> single-process context.
        ``distributed=True`` imports mpi4py (DistError with the install command when it is
        missing) and uses COMM_WORLD; a single process started without mpiexec still works
        (K = 1) but prints a note."""
        if not distributed:
            return cls(None, **kw)
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise DistError("--distributed needs mpi4py and an MPI library: "
                            "pip install mpi4py mpich   (or: pip install 'netspec[dist]'); "
                            f"import failed: {e}") from None
        ctx = cls(MPI.COMM_WORLD, **kw)
        if ctx.size == 1 and not launched_by_mpi():
            print("note: --distributed with a single process; launch K ranks with "
                  "`mpiexec -n K netspec train SPEC --distributed`", file=sys.stderr)
        return ctx

    @property
    def distributed(self) -> bool:
        return self.comm is not None and self.size > 1

    def __repr__(self):
        return f"DistContext(rank={self.rank}, size={self.size}, timeout={self.timeout:g}s)"

    # ------------------------------------------------------------------ sharding
    def local_batch(self, global_batch: int) -> int:
        """The per-rank (compiled) batch size of a global batch; DistError if not divisible."""
        lo, hi = shard_bounds(int(global_batch), self.rank, self.size)
        return hi - lo

    def shard(self, xb: np.ndarray, yb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This rank's contiguous slice of a global batch (x (G, ...), y (G, ...)) as
        C-contiguous arrays of B = G / K rows."""
        lo, hi = shard_bounds(len(xb), self.rank, self.size)
        return np.ascontiguousarray(xb[lo:hi]), np.ascontiguousarray(yb[lo:hi])

    def batches(self, x: np.ndarray, y: np.ndarray, global_batch: int,
                rng: np.random.Generator, start_batch: int = 0):
        """(x, y) of this rank's shard of every global batch of one epoch: the permutation
        is drawn from ``rng`` exactly as ``runtime.data.batches`` draws it (one per call)."""
        order = rng.permutation(int(x.shape[0]))
        for idx in shard_indices(order, int(global_batch), self.rank, self.size, start_batch):
            yield x[idx], y[idx]

    def decorrelate_rng(self, rng: np.random.Generator) -> None:
        """Give rank r > 0 its own stream derived from ``rng``'s state and r (in place); rank 0
        keeps ``rng`` as is.  Call after seeding/restoring the net's dropout Generator."""
        if self.rank == 0:
            return
        probe = np.random.Generator(type(rng.bit_generator)())
        probe.bit_generator.state = rng.bit_generator.state
        seed = int(probe.integers(2**63))
        rng.bit_generator.state = np.random.default_rng([seed, self.rank]).bit_generator.state

    # ------------------------------------------------------------------ waiting
    def _wait(self, reqs: list, what: str, on_done=None) -> None:
        """Poll ``reqs`` until all complete, calling ``on_done(i)`` as request i finishes, or
        abort the job when the deadline passes.  Spins (yielding the CPU) for 0.2 s after the
        start or after the last completion -- MPI progress only happens inside MPI calls --
        then sleeps 0.1-2 ms between polls so a rank waiting for a slow peer does not burn a
        core (measured: polling every 1 ms slowed a 102 MB 2-rank allreduce by ~25%)."""
        t0 = time.monotonic()
        deadline = t0 + self.timeout
        pending = list(range(len(reqs)))
        nap = 0.0
        while pending:
            still = []
            for i in pending:
                if reqs[i].Test():
                    if on_done is not None:
                        on_done(i)
                else:
                    still.append(i)
            if not still:
                return
            now = time.monotonic()
            if len(still) < len(pending):           # progress: back to spinning
                t0, nap = now, 0.0
            pending = still
            if now > deadline:
                self.abort(f"{what} did not complete within {self.timeout:g} s "
                           f"(NETSPEC_DIST_TIMEOUT): another rank died, hung or diverged from "
                           f"the common schedule")
            if now - t0 < _SPIN_S:
                os.sched_yield()
            else:
                nap = min(max(nap * 2, 1e-4), 2e-3)
                time.sleep(nap)

    def abort(self, message: str) -> None:
        """Print ``message`` naming this rank and kill the whole job (exit status 1)."""
        line = f"netspec distributed: rank {self.rank}/{self.size}: {message}; aborting all ranks"
        print(line, file=sys.stderr, flush=True)
        if self.abort_log is not None:
            try:            # one O_APPEND write per rank: lines from several ranks do not mix
                fd = os.open(self.abort_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                try:
                    os.write(fd, (line + "\n").encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass        # the log is a convenience; the abort itself must still happen
        if self.comm is not None:
            time.sleep(0.5)  # give the launcher a moment to forward stderr before the kill
            self.comm.Abort(1)
        raise SystemExit(1)

    # ------------------------------------------------------------------ collectives
    def _buckets(self, arena: np.ndarray) -> list[np.ndarray]:
        n = max(self.bucket_bytes // arena.itemsize, 1)
        return [arena[i:i + n] for i in range(0, arena.shape[0], n)]

    def allreduce_grads(self, net, scalars=None):
        """Average ``net.grad_arena`` over the ranks, in place: an ``Iallreduce(IN_PLACE,
        SUM)`` per bucket (``bucket_bytes``, all in flight at once), each bucket scaled by
        1/K as soon as it arrives.  ``scalars``: optional floats (e.g. the loss, a stop flag)
        summed across ranks in the same round trip; returns their sums (float64 array) or
        None.  Single-process: nothing to do (returns the scalars unchanged)."""
        sc = None if scalars is None else np.asarray(scalars, np.float64).reshape(-1).copy()
        if not self.distributed:
            return sc
        from mpi4py import MPI
        t = time.perf_counter()
        arena = net.grad_arena
        if not (arena.flags.c_contiguous and arena.ndim == 1):
            raise DistError("net.grad_arena must be one contiguous 1-D array")
        parts = self._buckets(arena)
        scale = arena.dtype.type(1.0 / self.size)
        reqs = [self.comm.Iallreduce(MPI.IN_PLACE, p, MPI.SUM) for p in parts]
        if sc is not None:
            reqs.append(self.comm.Iallreduce(MPI.IN_PLACE, sc, MPI.SUM))

        def done(i):
            if i < len(parts):
                np.multiply(parts[i], scale, out=parts[i])
        self._wait(reqs, f"allreduce of the gradients ({_size(arena.nbytes)} in {len(parts)} "
                   f"bucket(s), step {int(getattr(net, 'step_count', 0)) + 1})", done)
        self.stats["allreduce_seconds"] += time.perf_counter() - t
        self.stats["allreduces"] += 1
        return sc

    def allreduce_mean(self, value: float) -> float:
        """Mean of one float over the ranks (a cheap round trip; use only when logging)."""
        if not self.distributed:
            return float(value)
        from mpi4py import MPI
        buf = np.array([value], np.float64)
        self._wait([self.comm.Iallreduce(MPI.IN_PLACE, buf, MPI.SUM)], "allreduce of a scalar")
        return float(buf[0]) / self.size

    def sync_buffers(self, net) -> None:
        """Average every BatchNorm running statistic (``net.buffers``) over the ranks, in
        place (one allreduce of all of them in float64).  Call once per epoch before
        evaluation / checkpointing; batch statistics inside a step stay local per rank."""
        if not self.distributed or not getattr(net, "buffers", None):
            return
        from mpi4py import MPI
        names = [k for k, v in net.buffers.items() if np.issubdtype(v.dtype, np.floating)]
        if not names:
            return
        flat = np.concatenate([net.buffers[k].reshape(-1).astype(np.float64) for k in names])
        self._wait([self.comm.Iallreduce(MPI.IN_PLACE, flat, MPI.SUM)],
                   f"allreduce of the BatchNorm buffers ({len(names)} arrays)")
        flat /= self.size
        off = 0
        for k in names:
            b = net.buffers[k]
            b[...] = flat[off:off + b.size].reshape(b.shape)
            off += b.size

    def broadcast_params(self, net, root: int = 0) -> None:
        """Copy rank ``root``'s parameters, buffers, optimizer slots and step count to every
        rank (at the start, and after a resume) so all replicas start identical."""
        if not self.distributed:
            return
        arrays = [net.param_arena] + list(getattr(net, "buffers", {}).values()) \
            + list(getattr(net, "opt_state", {}).values())
        step = np.array([int(getattr(net, "step_count", 0))], np.int64)
        bufs, back = [], []
        for a in arrays:
            if a.size == 0:
                continue
            if a.flags.c_contiguous:
                bufs.append(a)
            else:                                   # bcast a copy, write it back after
                c = np.ascontiguousarray(a)
                bufs.append(c)
                back.append((a, c))
        bufs.append(step)
        reqs = [self.comm.Ibcast(b, root=root) for b in bufs]
        self._wait(reqs, f"broadcast of the parameters from rank {root}")
        for a, c in back:
            a[...] = c
        if hasattr(net, "step_count"):
            net.step_count = int(step[0])

    def barrier(self, what: str = "barrier") -> None:
        if self.distributed:
            self._wait([self.comm.Ibarrier()], what)

    def bcast_object(self, obj, root: int = 0, what: str = "broadcast of an object"):
        """Rank ``root``'s picklable object (e.g. a checkpoint's arrays and metadata, a stop
        decision) on every rank: its pickle's length, then its bytes, both with ``Ibcast``
        under the deadline.  Other ranks' ``obj`` is ignored."""
        if not self.distributed:
            return obj
        import pickle
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if self.rank == root else b""
        n = np.array([len(data)], np.int64)
        self._wait([self.comm.Ibcast(n, root=root)], what)
        buf = np.frombuffer(data, np.uint8).copy() if self.rank == root else np.empty(int(n[0]), np.uint8)
        if n[0]:
            self._wait([self.comm.Ibcast(buf, root=root)], what)
        return obj if self.rank == root else pickle.loads(buf.tobytes())

    def check_same(self, values, what: str) -> None:
        """Raise DistError on every rank when ``values`` (a few floats, e.g. the size and
        checksums of the training data) differ between ranks: one MAX allreduce of
        (v, -v).  Every rank gets the same verdict, so all stop together."""
        if not self.distributed:
            return
        from mpi4py import MPI
        v = np.asarray(values, np.float64).reshape(-1)
        mm = np.concatenate([v, -v])                 # MAX of (v, -v) = (max v, -min v)
        self._wait([self.comm.Iallreduce(MPI.IN_PLACE, mm, MPI.MAX)], f"check of the {what}")
        if not np.array_equal(mm[:v.size], -mm[v.size:]):
            raise DistError(f"the {what} differ between ranks (max {mm[:v.size].tolist()}, "
                            f"min {(-mm[v.size:]).tolist()}); every rank must see the same "
                            f"data and configuration")

    def assert_in_sync(self, net, what: str = "parameters") -> None:
        """Raise DistError when the replicas' parameter arenas differ (a debugging check:
        one allreduce of two float64 checksums)."""
        a = net.param_arena.astype(np.float64)
        self.check_same([a.sum(), (a * np.linspace(1.0, 2.0, a.size)).sum()], what)


# --------------------------------------------------------------------------- the step
def train_step(net, xb: np.ndarray, yb: np.ndarray, ctx: DistContext, *,
               stop: bool = False) -> float:
    """One data-parallel step on this rank's shard (xb (B, C, H, W), yb (B,)) -> the loss
    averaged over all ranks (= the global batch's mean loss).

    ``compute_grads`` -> gradient allreduce (the loss and ``stop`` ride along in the same
    round trip, so logging costs nothing extra) -> ``apply_update``.  After the call
    ``ctx.stop_requested`` is True when any rank passed ``stop=True`` (e.g. Ctrl-C), so all
    ranks can stop at the same step.  Single-process: exactly ``net.step`` (the fused
    compiled step)."""
    if not ctx.distributed:
        ctx.stop_requested = bool(stop)
        return float(net.step(xb, yb))
    loss = float(net.compute_grads(xb, yb))
    sums = ctx.allreduce_grads(net, (loss, 1.0 if stop else 0.0))
    net.apply_update()
    ctx.stop_requested = bool(sums[1] > 0)
    return float(sums[0]) / ctx.size
