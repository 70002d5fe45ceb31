"""Row-Winograd F(4,3) for 3x3, stride-1, pad-1 convs (kernels: templates/conv_wino.py.j2):
the forward, dX and (C a multiple of 16, O >= BWD_MIN_OUT) dW and the bias gradient;
conv_wide.py's forward / backward call in here where the workspace was planned for it.

The 1-D Winograd transform along the width computes 4 outputs of a kernel row with 6
products instead of 12; along the height the three kernel rows stay taps, so each of the six
transformed problems is a 3-tap, K = 3C-deep tap-GEMM on the existing micro-kernel
(templates/tapgemm.py.j2).  Measured on ResNet-20's 3x3 layers (B=128, 2 threads, whole
forward incl. transforms and epilogue, against the wide-row conv): 16 ch 32x32 1.94 -> 1.29
ms, 32 ch 16x16 1.84 -> 1.07, 64 ch 8x8 2.06 -> 1.09.  The GEMM phase alone ran 1.8-2.3x
faster than the 9-tap kernel (half the multiplies at the same rate, and only one junk row per
image where the wide layout has a junk column per row); 2-D F(2x2,3x3) had lost because its
C-deep GEMMs ran at 110-130 GFLOP/s (docs/architecture.md).  Error: float32 results differ
from the direct sums by ~1e-6 relative to the largest output (the transform's coefficients
up to 8 and 1/24 amplify rounding), float64 by ~1e-15; NETSPEC_WINOGRAD=0 switches it off.

dX is the same forward on the dY masked by the ReLU (in the input transform), with the
flipped, transposed taps (wino_weights flip=1).  dW: the dY transform (dy_plane, also db
and a fused residual's gradient), the input transform on the transposed chunk, six
vec_gemm calls, then G^T (wino_dw_finish).  A one-image batch splits by channels (forward)
or into a dW task and a dX task (backward) so both threads work.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from compiler.codegen.kernel_cache import load_kernels
from compiler.ops import parallel


def _env_on() -> bool:
    """NETSPEC_WINOGRAD=0 (or off / false / no) turns row Winograd off for a process: every
    3x3 conv on the direct wide-row kernels, whose float32 results sit ~5-10x closer to the
    exact sums (see the module docstring)."""
    return os.environ.get("NETSPEC_WINOGRAD", "1").strip().lower() not in ("0", "off", "false", "no")


WINO = _env_on()        # off: every 3x3 conv on the wide-row kernels (tests, benchmarks A/B)
WINO_BUDGET = 1 << 17   # scratch elements (V + M) per chunk: 512 KiB f32, measured best 2-9 images
MIN_CHANNELS = 1        # forward: measured faster down to C = 1 and O = 1 (1.03-1.24x: first
                        # layers 3 -> 16 ch 32x32 1.24x, 1 -> 32 ch 8x8 1.12x)
BWD_MIN_OUT = 8         # backward (dX's depth is 3*O, dW's rows O): O = 1, 2, 4 measured
                        # 0.80-0.90x at 16 channels, O = 8 1.11x
MAX_JUNK = 1.25         # computed / real output columns when W is not a multiple of 4 (the last
                        # tile of a row is partly junk): 7 (8/7) and 14 (16/14) pass, 5, 6, 9 not
ROWWISE_MIN_CHANNELS = 128   # W not a multiple of 4: the transforms go row by row (T of VL lanes
                        # used); measured against the wide kernels (fwd / bwd, B=16-64): 128 ch
                        # 14x14 1.20x / 1.10x, 256 ch 7x7 1.37x / 1.29x, but 64 ch 7x7 0.71x /
                        # 0.88x, 32 ch 14x14 0.98x, 16 ch 14x14 0.77x / 0.73x
DX_MIN_CHANNELS = 12    # dX alone by Winograd (dW on the wide kernels: C not a multiple of 16)
                        # from this many input channels; measured on 8: 0.90-0.98x, 12: 1.06x
SLACK = 16              # columns past LV / LM: the tap-GEMM reads and writes whole vectors


@functools.lru_cache(maxsize=None)
def kernels():
    from compiler.ops import conv_wide
    return load_kernels("conv_wino", tapgemm=conv_wide.tapgemm().__name__, rows=conv_wide.row_kernels().__name__,
                        layout=conv_wide.layout().__name__)


def usable(x_shape, w_shape, attrs) -> bool:
    """3x3, stride 1, pad 1 on every side, no dilation, no groups, no fused pool, and at
    least MIN_CHANNELS input and output channels (dX's K); a width that is not a multiple
    of 4 also needs ROWWISE_MIN_CHANNELS and a last tile that wastes little (MAX_JUNK)."""
    if not WINO or len(x_shape) != 4:
        return False
    _, C, _, W = x_shape
    O, Cg, kh, kw = w_shape
    return ((kh, kw) == (3, 3) and tuple(attrs.get("stride", (1, 1))) == (1, 1)
            and tuple(attrs.get("dilation", (1, 1))) == (1, 1) and tuple(attrs.get("pad", ())) == (1, 1, 1, 1)
            and attrs.get("groups", 1) == 1 and not attrs.get("pool") and W > 0
            and min(C, O) >= (MIN_CHANNELS if W % 4 == 0 else ROWWISE_MIN_CHANNELS)
            and 4 * (-(-W // 4)) <= MAX_JUNK * W)


def bwd_usable(x_shape, w_shape, attrs) -> bool:
    """Backward by Winograd too (dX, and dW where dw_wino): enough output channels."""
    return usable(x_shape, w_shape, attrs) and w_shape[0] >= BWD_MIN_OUT


def planar(*arrays) -> bool:
    """The kernels read and write flat (H, W) planes: each array's last two axes contiguous."""
    return all(a.strides[3] == a.itemsize and a.strides[2] == a.shape[3] * a.itemsize for a in arrays)


def _geometry(N, C, O, H, W):
    """(nb, LV, LM, LVp, LMp): images per chunk, the V / M columns for that chunk, and their
    row pitches (SLACK more, rounded up to whole 64-byte lines so that every row starts on
    one: the transforms' and the tap-GEMM's full-vector stores then never split a line)."""
    T, R = (W + 3) // 4, H + 1
    per_image = 6 * (C + O) * R * T
    nb = int(max(1, min(-(-N // parallel.WORKERS), WINO_BUDGET // per_image)))
    LV, LM = (nb * R + 1) * T, ((nb - 1) * R + H) * T
    return nb, LV, LM, -(-(LV + SLACK) // 16) * 16, -(-(LM + SLACK) // 16) * 16


def dw_wino(C) -> bool:
    """dW by Winograd too (vec_gemm's column vectors are 16-channel blocks of Vt); else the
    wide-row kernels compute dW and db, and only dX comes from here."""
    return C % 16 == 0


def _xt_rows(nb, H, W):
    """Rows of the transposed padded chunk (pad_chunk_t, pitch W + 1): vt_transform reads
    nb*(H+1) + 1 tile rows, the last tile of a row up to column 4T + 1 (past the row when
    W is not a multiple of 4: the next row's values, which only meet junk outputs' zero
    dY), plus a little slack."""
    T = -(-W // 4)
    return (nb * (H + 1) + 1) * (W + 1) + 4 * T + 8


def workspace(x_shape, w_shape) -> dict:
    """Per thread: V (6, K, LVp) and M (6, K, LMp), K = max(C, O), for the forward and dX
    (pitches from _geometry); with dw_wino the dW scratch: dYt (6, O, LMp), the transposed chunk
    xt and Vt (6, LV, C), the transformed dW (6, O, 3C).  Shared: the transformed weights
    (6, 3, O, C)."""
    N, C, H, W = x_shape
    O = w_shape[0]
    nb, LV, LM, LVp, LMp = _geometry(N, C, O, H, W)
    K = max(C, O)
    P = parallel.WORKERS
    out = {"wino_u": (18 * O * C,), "wino_v": (P * 6 * K * LVp,), "wino_m": (P * 6 * K * LMp,)}
    if dw_wino(C) and O >= BWD_MIN_OUT:
        out.update({"wino_dyt": (P * 6 * O * LMp,), "wino_xt": (P * _xt_rows(nb, H, W) * C,),
                    "wino_vt": (P * 6 * LV * C,), "wino_du": (P * 18 * O * C,)})
    return out


def _plan(x_shape, w_shape, ws, dx):
    """Per-part (lo, hi, V, M, offs) views, the transformed weights, nb and every thread's offs (the
    one-image split uses them all) for the forward (dx=False: V over C, M
    over O) or dX (V over O, M over C)."""
    N, C, H, W = x_shape
    O = w_shape[0]
    nb, LV, LM, LVp, LMp = _geometry(N, C, O, H, W)
    cin, cout = (O, C) if dx else (C, O)
    from compiler.ops.conv_wide import _parts
    parts = _parts(N, N * O * C * 9 * H * W)
    vs, ms = np.split(ws["wino_v"], parallel.WORKERS), np.split(ws["wino_m"], parallel.WORKERS)
    offs = [np.zeros(3 * max(C, O) // 8 + 4, np.int64) for _ in range(parallel.WORKERS)]
    per_part = [(lo, hi, vs[p][:6 * cin * LVp].reshape(6, cin, LVp), ms[p][:6 * cout * LMp].reshape(6, cout, LMp),
                 offs[p]) for p, (lo, hi) in enumerate(parts)]
    u = ws["wino_u"].reshape(6, 3, *((C, O) if dx else (O, C)))
    if dx and "wino_du" in ws:          # dW scratch per part (dYt, xt, Vt, du)
        P = parallel.WORKERS
        dyts, xts = np.split(ws["wino_dyt"], P), np.split(ws["wino_xt"], P)
        vts, dus = np.split(ws["wino_vt"], P), np.split(ws["wino_du"], P)
        per_part = [pp + (dyts[p].reshape(6, O, LMp), xts[p].reshape(-1, C), vts[p].reshape(6, LV, C),
                          dus[p].reshape(6, O, 3 * C)) for p, pp in enumerate(per_part)]
    return per_part, u, nb, offs


def _cached_plan(x, w, ws, attrs, dx):
    from compiler.ops.conv_wide import _cached, _tuning
    return _cached(ws, "_wino_dx_plan" if dx else "_wino_plan",
                   (x.shape, w.shape, x.dtype.char, _tuning(), WINO_BUDGET), attrs,
                   lambda: _plan(x.shape, w.shape, ws, dx))


def forward(x, w, b, y, ws, attrs, res=None):
    """y = act(conv3x3(x) + bias (+ res)) (x (N, C, H, W), y (N, O, H, W))."""
    per_part, u, nb, offs = _cached_plan(x, w, ws, attrs, False)
    k = kernels()
    k.wino_weights(w, u, 0)
    one = x.dtype.type(1)
    bias = b if b is not None else u[0, 0, 0]
    relu = 1 if attrs.get("act", "none") == "relu" else 0

    if _one_image(x, w, per_part):
        _split_one(k, x, x, 0, u, bias, b is not None, y, relu, y if res is None else res, res is not None,
                   per_part, offs, one)
        return

    def run(p):
        lo, hi, V, M, offs = per_part[p]
        k.wino_range(x, lo, hi, nb, u, bias, b is not None, y, V, M, relu, y if res is None else res,
                     res is not None, x, 0, offs, one)

    parallel.run(run, len(per_part))


def _one_image(x, w, per_part) -> bool:
    """One image and several threads: split by channels (conv_wide._one_image_split)."""
    from compiler.ops.conv_wide import _one_image_split
    return len(per_part) < parallel.WORKERS and _one_image_split(x, w, x.shape[2], x.shape[3])


def _split_one(k, x, ymask, masked, u, bias, has_bias, y, relu, res, has_res, per_part, offs, one):
    """The conv of a one-image batch on every worker thread: the input transform by channel
    ranges into part 0's V, then the GEMMs and output transform by output-channel ranges
    (M rows are disjoint); two hand-offs instead of one idle thread."""
    _, _, V, M, _ = per_part[0][:5]
    cs, os_ = parallel.split(x.shape[1], parallel.WORKERS), parallel.split(y.shape[1], parallel.WORKERS)
    parallel.run(lambda p: k.wino_in_channels(x, V, cs[p][0], cs[p][1], ymask, masked, one), len(cs))
    parallel.run(lambda p: k.wino_out_rows(x, u, bias, has_bias, y, V, M, os_[p][0], os_[p][1], relu, res, has_res,
                                           offs[p], one), len(os_))


def backward(x, w, y, dy, dx, dW, db, ws, attrs, dres=None):
    """All gradients by Winograd (dw_wino(C)): dx (the input's), dW, db and dres (a fused
    residual's: the masked dy); None for those not wanted.  One pass per chunk of images
    reads dy once for db / dres / dW's transform (wino_bwd_chunk)."""
    per_part, _, nb, offs_all = _cached_plan(x, w, ws, attrs, True)
    k = kernels()
    want_dx, want_dw, want_db, want_dres = dx is not None, dW is not None, db is not None, dres is not None
    dx_part = _dx_task(x, w, y, dy, dx, ws, attrs) if want_dx else None
    one = x.dtype.type(1)
    masked = 1 if attrs.get("act", "none") == "relu" else 0
    O = w.shape[0]
    db2 = ws["db2"].reshape(-1, O)
    nparts = len(per_part)
    db2[:nparts] = 0
    du = ws["wino_du"].reshape(parallel.WORKERS, 6, O, -1)
    dresk = dres if want_dres else dy

    def grads(p, lo, hi):
        _, _, V, M, offs, dyt, xt, Vt, du_p = per_part[p]
        k.wino_bwd_range(x, dy, y, lo, hi, nb, du_p, want_dw, db2[p], want_db, dresk, want_dres, masked,
                         dyt, xt, Vt, offs, one)

    if nparts < parallel.WORKERS and want_dx and (want_dw or want_db or want_dres) and _one_image(x, w, per_part):
        # one image: dW / db / dres on one thread, dX on the other (disjoint scratch of part 0)
        parallel.run(lambda p: grads(0, 0, 1) if p == 0 else dx_part(0, offs_all[1]), 2)
    else:
        def run(p):
            if want_dw or want_db or want_dres:
                grads(p, *per_part[p][:2])
            if want_dx:
                dx_part(p)

        parallel.run(run, nparts)
    if want_dw:
        k.wino_dw_finish(du, nparts, dW)
    if want_db:
        np.sum(db2[:nparts], axis=0, out=db)


def dx_runner(x, w, y, dy, dx, ws, attrs):
    """dX alone by Winograd, dW / db on the wide-row kernels (conv_wide.backward's path for
    C not a multiple of 16): the per-part callable of ``_dx_task``, run after the wide dW /
    db pass of the same part."""
    return _dx_task(x, w, y, dy, dx, ws, attrs)


def _dx_task(x, w, y, dy, dx, ws, attrs):
    """A callable ``run(p, offs=None)`` computing part p's images of dx (the conv's input
    gradient from the output gradient dy, masked by y > 0 under a fused ReLU): the forward
    kernels on the masked dY with the flipped taps (the same compiled function), run in the
    caller's parallel.run; ``offs`` replaces the part's tap-offset scratch (the one-image
    split runs it beside a dW task that uses part 0's)."""
    per_part, u, nb, _ = _cached_plan(x, w, ws, attrs, True)
    k = kernels()
    k.wino_weights(w, u, 1)
    one = x.dtype.type(1)
    masked = 1 if attrs.get("act", "none") == "relu" else 0

    def run(p, offs=None):
        lo, hi, V, M, own = per_part[p][:5]
        k.wino_range(dy, lo, hi, nb, u, u[0, 0, 0], False, dx, V, M, 0, dx, False, y, masked,
                     own if offs is None else offs, one)

    return run
