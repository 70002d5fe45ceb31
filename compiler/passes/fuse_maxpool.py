"""Fuse a non-overlapping max pool into the conv that produces its input (CPU only).

conv2d (+ fused ReLU) -> maxpool2d with kernel == stride, no padding, no dilation and
floor-mode output (LeNet's, VGG's, U-Net's 2x2/2 pools) becomes one conv2d node with
``pool=(ph, pw)``: the conv's epilogue takes the window maximum while the conv result is
still in cache and writes only the pooled output and its argmax (flat index within the
conv-output plane, maxpool2d's convention).  Backward scatters the pooled gradient
straight into the conv's gradient gather.  The full-size conv output is never written nor
read again: one activation (and its gradient) less per pool, and no separate pool kernels.

Legal when the conv output has exactly one consumer (the pool) and is not a graph output,
and the conv runs on the wide-row kernels (conv_wide.usable), whose epilogue implements it.
Not done where the conv would run row Winograd (conv_wino.usable: 3x3 stride-1 pad-1) on
at least WINOGRAD_MIN_CHANNELS input channels: Winograd plus a separate pool was measured
faster there (a VGG-style 32x32 net, B=64: train step 31.1 -> 22.7 ms, inference 9.9 ->
7.3 ms; the digits net 2.51 -> 2.48 / 0.68 -> 0.66 ms); on fewer channels (a first layer)
the pool's extra pass costs more than Winograd saves (MNIST-style 1 -> 32 ch: 5.8 vs 6.4 ms).
Forward graphs only (before autodiff).  Only the CPU kernels implement ``pool``, so
pipeline.for_target drops this pass for CUDA and ONNX export.
"""
from __future__ import annotations

from ..ir import Graph, Node
from . import rewrite as rewrites
from ..ops import conv_wide, conv_wino

OVER_WINOGRAD = False   # True: fuse into a conv that would otherwise run row Winograd (A/B, tests)
WINOGRAD_MIN_CHANNELS = 16  # input channels from which Winograd + a separate pool beat the fused
                            # wide-row conv (32x32 -> 32 ch, B=64, train / infer: C=4 3.1 vs 3.7 /
                            # 1.13 vs 1.32 ms fused better, C=8 4.4 vs 4.9 / 1.64 vs 1.67, C=16
                            # 5.0 vs 4.7 / 2.49 vs 2.27 Winograd better)


def poolable(pool: dict) -> tuple[int, int] | None:
    """(ph, pw) when the maxpool attrs describe a fusable window, else None."""
    kh, kw = pool["kernel"]
    if tuple(pool.get("stride") or (kh, kw)) != (kh, kw) or kh * kw < 2:
        return None
    if tuple(pool.get("pad", (0, 0, 0, 0))) != (0, 0, 0, 0) or tuple(pool.get("dilation", (1, 1))) != (1, 1):
        return None
    return kh, kw


def fuse_maxpool(g: Graph) -> Graph:
    consumers = g.consumers()
    producers = g.producers()
    drop: set[str] = set()
    rewrite: dict[str, Node] = {}
    for n in g.nodes:
        if n.op != "maxpool2d" or n.phase != "fwd":
            continue
        win = poolable(n.a)
        x = n.inputs[0]
        conv = rewrites.sole_producer(g, x, consumers, producers, ("conv2d",))
        if (win is None or conv is None or "pool" in conv.a
                or len(conv.inputs) > 3):      # a fused residual: the epilogue does one or the other
            continue
        xs, ws = g.values[conv.inputs[0]].shape, g.values[conv.inputs[1]].shape
        if len(xs) != 4 or not conv_wide.usable(xs, ws, conv.a):
            continue
        if not OVER_WINOGRAD and conv_wino.usable(xs, ws, conv.a) and xs[1] >= WINOGRAD_MIN_CHANNELS:
            continue

        _, _, OH, OW = g.values[x].shape
        if g.values[n.outputs[0]].shape[2:] != (OH // win[0], OW // win[1]) or OH < win[0] or OW < win[1]:
            continue     # ceil_mode with a partial last window: keep the separate pool
        rewrite[conv.id] = Node(conv.id, conv.op, conv.inputs, (n.outputs[0],), conv.with_attrs(pool=win).attrs,
                                rewrites.fused_layer(conv, n), conv.phase)
        drop.add(n.id)
    return rewrites.apply(g, rewrite, drop)
