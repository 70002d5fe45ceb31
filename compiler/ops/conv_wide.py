"""conv2d (stride 1 or 2, groups 1) as "wide-row" implicit GEMM
(kernels: templates/conv_wide.py.j2, micro-kernel: templates/tapgemm.py.j2, vector row
kernels: templates/conv_rows.py.j2).

For stride 1 and groups 1, zero-padding a chunk of images into one (C, nb*Hp*Wp) matrix
makes every tap (ki, kj) a column shift of the same matrix (``_planes``: neighbouring rows
and images share their zero padding where legal).  The forward is then
yw = sum over taps W_t · xpad[:, off_t:], computed by the tap-GEMM micro-kernel with the
output block in registers across all taps (166-209 GFLOP/s raw per thread on ResNet-20's
shapes; the kh*kw BLAS calls it replaced reached 44-58% of sgemm), followed by an epilogue
(bias, fused residual, act, fused max pool; vector IR, conv_rows.py.j2).  No im2col (which cost ~2x the GEMM at 16
channels, measured).  Backward on the same layout: dX is the same micro-kernel on
the transposed taps (the "flipped weights" conv of DESIGN §5 without materialising the flip
or a col2im); dW is the micro-kernel on a transposed operand where a channel count is a
multiple of 16 (dw_tap: the chunk transposed to positions x channels, a tap a shift by
whole rows, all taps in one vec_gemm pass; dw_tap_t: dY transposed, for the problem dW^T),
else one BLAS ?gemm per tap,
called from inside the nogil kernels (address from scipy.linalg.cython_blas).  Each chunk
is one Python call, and the batch is split over
``parallel.WORKERS`` threads, each with its own scratch and dW/db accumulators (summed at
the end in a fixed order).

Stride 2: the padded plane is split into its four phase planes (even/odd rows x columns);
tap (ki, kj) then reads phase (ki%2, kj%2) shifted by (ki//2, kj//2), i.e. the same shifted-
view conv (ResNet-20's 3x3 stride-2 convs: 7.3/15.2 ms fwd/bwd vs 10.2/21.4 for im2col,
before the micro-kernel).  1x1 stride 2 reads one phase of four; it stayed on im2col (1.9/3.5
vs 4.3/9.3 ms) until the phase split was vectorised (conv_rows.py.j2 split_row), and now
beats it in the forward (see ``usable``).  Its dX is one tap-GEMM per phase plane over that phase's taps (measured
equal to the adjoint BLAS GEMMs it replaced, 2.6-3.3 ms; kept so dX has one mechanism).
Few input channels and no dX (a first layer, C*kw <= ROWS_MAX_K): dW by kh GEMMs of depth
C*kw on a kernel-column im2col (LeNet conv1 0.60 vs 0.72 ms).

Cost model: the kernels also compute Hp*Wp - OH*OW junk columns per image, so the path is
chosen only while that overhead is moderate (``usable``); otherwise conv.py keeps im2col +
BLAS.  Per-layer GFLOP/s against this machine's sgemm: benchmarks/roofline.py.
"""
from __future__ import annotations

import functools

import numpy as np

from compiler.codegen.kernel_cache import load_kernels
from compiler.ops import conv_wino, parallel

WIDE_BUDGET = 1 << 14      # scratch elements (xpad + yw) per chunk: 64 KiB f32 (measured best: 1-3 images)
MIN_CHANNELS = 1           # measured: even C=1 (rank-1 GEMMs, LeNet conv1) beats im2col and
                           # direct numba loops (1.1 vs 1.5 vs 3.1 ms fwd, B=64)
MAX_WASTE = 2.5            # padded-plane / output-plane area above this: im2col wins (LeNet
                           # conv2, 14x14 -> 10x10, waste 1.96: wide 0.8 ms vs im2col 1.7 ms)
ROWS_MAX_K = 32            # C*kw up to which a first layer's dW (no dX) uses the kernel-row
                           # variant (rows_bwd: kh GEMMs of depth C*kw on a kernel-column
                           # im2col; LeNet conv1 C*kw=5, ResNet conv1 9)
PAR_MIN_MACS = 2_000_000   # below this a second thread's hand-off costs more than it saves
DW_TAP = True              # dW by the tap-GEMM where dw_tap allows (else one BLAS ?gemm per tap)
SLACK = 16                 # columns past the end of every xpad / yw row: the tap-GEMM micro-kernel
                           # reads and writes whole vector blocks (templates/tapgemm.py.j2 TAP_VL)


@functools.lru_cache(maxsize=None)
def kernels(act="none"):
    """The conv_wide kernel module for ``act``; it imports the tap-GEMM and layout modules
    by name (one compiled copy of those for every act variant)."""
    return load_kernels("conv_wide", act=act, tapgemm=tapgemm().__name__, layout=layout().__name__,
                        rows=row_kernels().__name__)


@functools.lru_cache(maxsize=None)
def tapgemm():
    return load_kernels("tapgemm")


@functools.lru_cache(maxsize=None)
def row_kernels():
    """The vector row kernels (templates/conv_rows.py.j2): epilogue, dY gather, 2x2 pool,
    stride-2 phase (de)interleave."""
    return load_kernels("conv_rows")


@functools.lru_cache(maxsize=None)
def layout():
    return load_kernels("conv_layout", rows=row_kernels().__name__)


def gemm_address(dtype_char: str) -> int:
    """Address of BLAS sgemm ("f") or dgemm ("d") for layout().gemm_rm (also dense.py's)."""
    return _gemm_addr(dtype_char)


@functools.lru_cache(maxsize=None)
def _gemm_addr(dtype_char: str) -> int:
    from numba.extending import get_cython_function_address
    return get_cython_function_address("scipy.linalg.cython_blas", {"f": "sgemm", "d": "dgemm"}[dtype_char])


def _stride(attrs) -> int:
    """1 or 2 for the supported strides ((1,1) any dilation, (2,2) without dilation), else 0."""
    st, dil = tuple(attrs.get("stride", (1, 1))), tuple(attrs.get("dilation", (1, 1)))
    return 1 if st == (1, 1) else 2 if st == (2, 2) and dil == (1, 1) else 0


def _planes(x_shape, w_shape, attrs):
    """_plane_geometry for an attrs dict (memoised: launchers call it on every step)."""
    return _plane_geometry(tuple(x_shape), tuple(w_shape), tuple(attrs.get("stride", (1, 1))),
                           tuple(attrs.get("pad", (0, 0, 0, 0))), tuple(attrs.get("dilation", (1, 1))))


@functools.lru_cache(maxsize=4096)
def _plane_geometry(x_shape, w_shape, stride, pad, dilation):
    """(s, Hp, Wp, OH, OW, extra): stride, padded plane (stride 1) or phase plane (stride 2)
    size, and the zero rows the last image of a chunk needs past its plane.

    Stride 1 shares padding between neighbours: a row is [pl zeros | W pixels], so the
    right padding of a row is the next row's left padding (legal when pr <= pl), and an
    image's bottom padding is the next image's top padding (pb <= pt); only the chunk's last
    image needs ``extra`` = pb zero rows after it.  A 3x3 pad-1 conv on 8x8 images computes
    9x9 = 81 wide columns per image instead of 10x10 = 100 (4x4: 25 instead of 36)."""
    N, C, H, W = x_shape
    O, Cg, kh, kw = w_shape
    s = _stride({"stride": stride, "dilation": dilation})
    pt, pb, pl, pr = pad
    dh, dw = dilation
    OH = (H + pt + pb - dh * (kh - 1) - 1) // max(s, 1) + 1
    OW = (W + pl + pr - dw * (kw - 1) - 1) // max(s, 1) + 1
    Hp, Wp, extra = OH + dh * (kh - 1) // max(s, 1), OW + dw * (kw - 1) // max(s, 1), 0
    if s == 1 and pr <= pl and pr <= dw * (kw - 1):
        Wp = W + pl
    if s == 1 and pb <= pt and pb <= dh * (kh - 1):
        Hp, extra = H + pt, pb
    return s, Hp, Wp, OH, OW, extra


def usable(x_shape, w_shape, attrs) -> bool:
    s, Hp, Wp, OH, OW, _ = _planes(x_shape, w_shape, attrs)
    if not s or attrs.get("groups", 1) != 1 or x_shape[1] < MIN_CHANNELS:
        return False
    # 1x1 stride 2 reads one phase plane of four; since the phase split is vectorised
    # (conv_rows.py.j2 split_row) it beats im2col + BLAS anyway (ResNet-20 B=128 projections
    # fwd 1.33 -> 0.73 and 0.85 -> 0.57 ms, bwd about equal: 1.95 -> 1.72, 1.08 -> 1.17)
    return OH > 0 and OW > 0 and Hp * Wp <= MAX_WASTE * OH * OW


def dw_tap(C, s) -> bool:
    """dW on the tap-GEMM micro-kernel (transposed padded chunk, templates/conv_wide.py.j2
    wide_bwd): C a multiple of the f32 vector width (whole-vector rows), stride 1 or 2.
    Measured against the per-tap BLAS calls it replaces: see DW_TAP."""
    return DW_TAP and s in (1, 2) and C % 16 == 0


def dw_tap_t(C, O, s) -> bool:
    """The transposed tap-GEMM dW (dW^T = xpad shifts · dYw^T) where dw_tap does not apply
    but O is a multiple of the vector width (LeNet-5 conv2: C = 6, O = 16)."""
    return DW_TAP and s in (1, 2) and not dw_tap(C, s) and O % 16 == 0


def use_rows(C, kw, s=1) -> bool:
    return s == 1 and C * kw <= ROWS_MAX_K


def _geom(x_shape, w_shape, attrs):
    N, C, H, W = x_shape
    O, _, kh, kw = w_shape
    pt, pb, pl, pr = attrs.get("pad", (0, 0, 0, 0))
    dh, dw = attrs.get("dilation", (1, 1))
    s, Hp, Wp, _, _, extra = _planes(x_shape, w_shape, attrs)
    S = Hp * Wp
    nparts = parallel.WORKERS
    per_part = -(-N // nparts)
    rows = use_rows(C, kw, s)
    nb = int(max(1, min(per_part, WIDE_BUDGET // ((s * s * C + O + (C * kw if rows else 0)) * S))))
    tail = extra * Wp + dw * (kw - 1) // s + SLACK
    return N, C, O, kh, kw, pt, pl, dh, dw, Hp, Wp, S, nb, tail, s, rows


def workspace(x_shape, w_shape, attrs) -> dict:
    N, C, O, kh, kw, pt, pl, dh, dw, Hp, Wp, S, nb, tail, s, rows = _geom(x_shape, w_shape, attrs)
    P = parallel.WORKERS
    out = {"wide": (P * (s * s * C * (nb * S + tail) + O * (_lead(kh, kw, dh, dw, Wp, s) + nb * S + SLACK)),),
           "wt": (kh * kw * O * C,), "wtT": (kh * kw * O * C,),
           "dwt": (P * kh * kw * O * C,), "db2": (P * O,)}
    if rows:
        out["cols"] = (P * C * kw * (nb * S + tail),)
    # int64 scratch for the tap offsets (kh*kw + 1 per part, and the tap-GEMM dW's vector
    # offsets, kh*kw*C/VL <= kh*kw*C/8), in float elements (viewed as int64 by _offsets: two
    # float32 / one float64 per entry, so 2x covers both)
    out["offs"] = (P * 2 * (kh * kw * (C // 8 + 1) + 1),)
    if dw_tap(C, s):
        out["xt"] = (P * s * s * C * (nb * S + tail),)
    if dw_tap_t(C, O, s):
        out["ywt"] = (P * nb * S * O,)
    if conv_wino.usable(x_shape, w_shape, attrs):
        out.update(conv_wino.workspace(x_shape, w_shape))
    return out


def _lead(kh, kw, dh, dw, Wp, s):
    """Zero columns in front of each wide dY row (templates/conv_layout.py.j2 dx_lead)."""
    if s == 1:
        return (kh - 1) * dh * Wp + (kw - 1) * dw
    return ((kh - 1) // 2) * Wp + (kw - 1) // 2


def _part_views(ws, p, C, O, nb, S, tail, s, lead=0):
    """Part p's flat scratch: xpad (s*s*C*(nb*S + tail)), yw (O*(lead + nb*S + SLACK)),
    cols (or a dummy)."""
    nx = s * s * C * (nb * S + tail)
    per = nx + O * (lead + nb * S + SLACK)
    base = ws["wide"][p * per:(p + 1) * per]
    return base[:nx], base[nx:], _split(ws["cols"] if "cols" in ws else ws["db2"])[p]


def _split(a):
    """A 1-D scratch array cut into parallel.WORKERS equal parts, one per thread."""
    n = a.shape[0] // parallel.WORKERS
    return [a[p * n:(p + 1) * n] for p in range(parallel.WORKERS)]


def _offsets(ws):
    """ws["offs"] as int64, one slice per part: the kernels' tap-offset scratch (so the
    step allocates nothing for them)."""
    return _split(ws["offs"].view(np.int64))


def _per_part(ws, key):
    """ws[key] split into parallel.WORKERS equal parts, or 1-element stand-ins (no key)."""
    if key is None or key not in ws:
        return [ws["db2"][:1]] * parallel.WORKERS
    return _split(ws[key])


def _parts(N, macs):
    return parallel.split(N, parallel.WORKERS if macs >= PAR_MIN_MACS else 1)


def _pool_args(x_shape, w_shape, attrs, arg):
    """(OH, OW, ph, pw, arg): the conv output size, the fused pool window ((0, 0) if none)
    and the argmax array (an int32 stand-in when absent)."""
    _, _, _, OH, OW, _ = _planes(x_shape, w_shape, attrs)
    ph, pw = attrs.get("pool", (0, 0))
    return OH, OW, ph, pw, _NO_ARG if arg is None else arg


_NO_ARG = np.zeros((1, 1, 1, 1), np.int32)


def _tuning():
    """The module settings a plan depends on (tests and benchmarks change them)."""
    return parallel.WORKERS, WIDE_BUDGET, PAR_MIN_MACS, DW_TAP, ROWS_MAX_K


def _cached(ws, name, key, attrs, build):
    """The launch plan ``build()`` for this node, kept in its workspace dict ``ws`` under
    ``name`` and rebuilt when ``key`` (shapes, dtype, wanted gradients) or ``attrs`` change:
    geometry, thread parts and per-part scratch views cost ~11 us (forward) and ~18 us
    (backward) of Python per call to recompute, ~4 % of a LeNet-5 step.  A compiled step
    passes the same attrs dict every call (identity check); anything else compares equal."""
    hit = ws.get(name)
    if hit is not None and hit[0] == key and (hit[1] is attrs or hit[1] == attrs):
        return hit[2]
    plan = build()
    ws[name] = (key, attrs, plan)
    return plan


def _fwd_plan(x, w, ws, attrs):
    N, C, O, kh, kw, pt, pl, dh, dw, Hp, Wp, S, nb, tail, s, rows = _geom(x.shape, w.shape, attrs)
    OH, OW, ph, pw, _ = _pool_args(x.shape, w.shape, attrs, None)
    parts = _parts(N, N * O * C * kh * kw * OH * OW)
    offs = _offsets(ws)
    lead = _lead(kh, kw, dh, dw, Wp, s)
    per_part = [(lo, hi, *_part_views(ws, p, C, O, nb, S, tail, s, lead)[:2], offs[p])
                for p, (lo, hi) in enumerate(parts)]
    return (layout(), kernels(attrs.get("act", "none")), x.dtype.type(1), ws["db2"][:1], per_part,
            (kh, kw, pt, pl, dh, dw, s), (OH, OW, ph, pw), (Hp, Wp, tail), nb)


def forward(x, w, b, y, ws, attrs, arg=None, train=False, res=None):
    """y = act(conv(x) + bias (+ res)), max-pooled over attrs["pool"] windows when present
    (argmax into ``arg`` in train mode).  3x3 stride-1 pad-1 convs go to the row-Winograd
    kernels (conv_wino.py) where their workspace was planned."""
    if "wino_v" in ws and conv_wino.usable(x.shape, w.shape, attrs) and conv_wino.planar(x, y, *(
            () if res is None else (res,))):
        return conv_wino.forward(x, w, b, y, ws, attrs, res)
    k0, ka, one, no_bias, per_part, (kh, kw, pt, pl, dh, dw, s), (OH, OW, ph, pw), (Hp, Wp, tail), nb = \
        _cached(ws, "_fwd_plan", (x.shape, w.shape, x.dtype.char, _tuning()), attrs,
                lambda: _fwd_plan(x, w, ws, attrs))
    arg = _NO_ARG if arg is None else arg
    train = bool(train and ph)
    wt = ws["wt"]
    k0.taps_weights(w, wt)     # per-tap layout: the micro-kernel needs no column im2col
    bias = b if b is not None else no_bias
    if len(per_part) < parallel.WORKERS and _one_image_split(x, w, OH, OW):
        # one image, several threads: pad by channel ranges, then the GEMM and epilogue by
        # output-channel ranges (both threads share part 0's scratch)
        lo, hi, xflat, yflat, offs = per_part[0]
        offs2 = _offsets(ws)
        C, O = x.shape[1], w.shape[0]
        cs, os_ = parallel.split(C, parallel.WORKERS), parallel.split(O, parallel.WORKERS)
        parallel.run(lambda p: ka.wide_pad_channels(x, xflat, cs[p][0], cs[p][1], pt, pl, Hp, Wp, s, tail), len(cs))
        parallel.run(lambda p: ka.wide_fwd_rows(x, wt, bias, b is not None, y, xflat, yflat, os_[p][0], os_[p][1],
                                                kh, kw, dh, dw, s, one, OH, OW, ph, pw, arg, train,
                                                y if res is None else res, res is not None, Hp, Wp, tail, offs2[p]),
                     len(os_))
        return

    def run(p):
        lo, hi, xflat, yflat, offs = per_part[p]
        ka.wide_fwd_range(x, lo, hi, nb, wt, bias, b is not None, y, xflat, yflat,
                          kh, kw, pt, pl, dh, dw, s, one, OH, OW, ph, pw, arg, train,
                          y if res is None else res, res is not None, Hp, Wp, tail, offs)

    parallel.run(run, len(per_part))


def _one_image_split(x, w, OH, OW) -> bool:
    """A batch of one image on several threads: split the conv over channels (the batch split
    would leave every thread but one idle: U-Net at B=1 ran at 0.36x of PyTorch), when the
    conv is big enough for the two hand-offs (PAR_MIN_MACS)."""
    return (x.shape[0] == 1 and parallel.WORKERS > 1 and min(x.shape[1], w.shape[0]) >= parallel.WORKERS
            and w.shape[0] * x.shape[1] * w.shape[2] * w.shape[3] * OH * OW >= PAR_MIN_MACS)


def _bwd_plan(x, w, ws, attrs, want_dx):
    N, C, O, kh, kw, pt, pl, dh, dw, Hp, Wp, S, nb, tail, s, rows = _geom(x.shape, w.shape, attrs)
    OH, OW, ph, pw, _ = _pool_args(x.shape, w.shape, attrs, None)
    # few channels and no dX (a first layer): dW by the kernel-row variant, measured faster
    # there (LeNet conv1 0.60 vs 0.72 ms); with dX the per-tap dW was as fast or faster
    # (LeNet conv2 0.72 vs 0.77 ms, ResNet 16ch 7.8 vs 7.9 ms)
    rows = rows and not want_dx
    lead = _lead(kh, kw, dh, dw, Wp, s)
    parts = _parts(N, N * O * C * kh * kw * OH * OW)
    dwt = ws["dwt"].reshape(parallel.WORKERS, -1)
    # the tap-GEMM dW's scratch per part (a 1-element stand-in selects another dW path)
    tflats = _per_part(ws, "xt" if dw_tap(C, s) else None)
    transposed = dw_tap_t(C, O, s) and not rows and "ywt" in ws
    yflats = _per_part(ws, "ywt" if transposed else None)
    offs = _offsets(ws)
    # scratch views for every worker (a one-image batch uses part 1's for its dX task), image
    # ranges for the parts that have images
    ranges = parts + [(0, 0)] * (parallel.WORKERS - len(parts))
    per_part = [(lo, hi, *_part_views(ws, p, C, O, nb, S, tail, s, lead), dwt[p], tflats[p], yflats[p], offs[p])
                for p, (lo, hi) in enumerate(ranges)]
    mode = 1 if rows else 3 if dw_tap(C, s) else 2 if transposed else 0
    return (layout(), kernels(attrs.get("act", "none")), _gemm_addr(x.dtype.char), x.dtype.type(1), rows,
            per_part, len(parts), dwt, ws["db2"].reshape(-1, O), mode, (kh, kw, pt, pl, dh, dw, s),
            (OH, OW, ph, pw), (Hp, Wp, tail), nb)


def backward(x, w, y, dy, dx, dW, db, ws, attrs, arg=None, dres=None):
    """Gradients of ``forward`` (dy: the gradient of its possibly pooled output y; dres,
    when given, receives the residual's gradient)."""
    want_dx, want_dw, want_db = dx is not None, dW is not None, db is not None
    if ("wino_du" in ws and conv_wino.bwd_usable(x.shape, w.shape, attrs) and conv_wino.planar(x, dy, y)
            and (dx is None or conv_wino.planar(dx)) and (dres is None or conv_wino.planar(dres))):
        return conv_wino.backward(x, w, y, dy, dx, dW, db, ws, attrs, dres)
    # dX by row Winograd (conv_wino.py) after this part's dW / db pass, in the same thread
    wino = (want_dx and "wino_v" in ws and conv_wino.bwd_usable(x.shape, w.shape, attrs)
            and x.shape[1] >= conv_wino.DX_MIN_CHANNELS and conv_wino.planar(dy, y, dx))
    wino_run = conv_wino.dx_runner(x, w, y, dy, dx, ws, attrs) if wino else None
    # the plan's dW variant as with dX (the kernel-row dW is for first layers only: with dX
    # it was measured slower), the kernels' dX only where Winograd does not take it
    plan_dx = want_dx
    want_dx = want_dx and not wino
    (k0, ka, fn, one, rows, per_part, nparts, dwt, db2, mode, (kh, kw, pt, pl, dh, dw, s), (OH, OW, ph, pw),
     (Hp, Wp, tail), nb) = _cached(ws, "_bwd_plan", (x.shape, w.shape, x.dtype.char, plan_dx, _tuning()), attrs,
                                   lambda: _bwd_plan(x, w, ws, attrs, plan_dx))
    arg = _NO_ARG if arg is None else arg
    if want_dx:
        k0.taps_weights_t(w, ws["wtT"], s)
    db2[:nparts] = 0
    dxk = dx if want_dx else y[:1]
    wtT = ws["wtT"]

    def part(p, lo, hi, dx_on, dw_on, db_on, res_on):
        _, _, xflat, yflat, cflat, dwt_p, tflat, yflat_t, offs = per_part[p]
        ka.wide_bwd_range(fn, x, wtT, y, dy, lo, hi, nb, dxk, dx_on, dwt_p, dw_on, db2[p], db_on,
                          kh, kw, pt, pl, dh, dw, s, xflat, yflat, cflat, rows, one, OH, OW, ph, pw, arg,
                          y if dres is None else dres, res_on, Hp, Wp, tail, tflat, yflat_t, offs)

    if (nparts < parallel.WORKERS and plan_dx and (want_dw or want_db or dres is not None)
            and _one_image_split(x, w, OH, OW)):
        # one image: dW / db / dres on one thread, dX (its own dY gather on part 1's scratch,
        # or Winograd's) on the other, instead of one thread doing both
        def task(p):
            if p == 0:
                part(0, 0, 1, False, want_dw, want_db, dres is not None)
            elif wino_run is not None:
                wino_run(0)
            else:
                part(1, 0, 1, True, False, False, False)
        parallel.run(task, 2)
    else:
        def run(p):
            lo, hi = per_part[p][:2]
            part(p, lo, hi, want_dx, want_dw, want_db, dres is not None)
            if wino_run is not None:
                wino_run(p)

        parallel.run(run, nparts)
    if want_dw:
        k0.taps_grad_finish(dwt, nparts, dW, mode)
    if want_db:
        np.sum(db2[:nparts], axis=0, out=db)

