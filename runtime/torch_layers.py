"""The PyTorch forward function of each netspec layer type (``_op``), used by
``runtime.torch_twin.build_torch_module``; ``SUPPORTED_TYPES`` lists the types with a twin.

Every function here gets the checked layer (a LayerReport or its JSON) and returns
f(*input tensors) -> output tensor with PyTorch's semantics for that layer; parameters are
looked up by the caller's ``net`` (the module tree with PyTorch state_dict names).
torch is passed in (imported lazily by the caller: it is an optional extra).
"""
from __future__ import annotations

import math
from typing import Any, Callable

INPUT = "input"

# ------------------------------------------------------------------ report access helpers

def _get(obj: Any, key: str, default: Any = None) -> Any:
    """Attribute or mapping access (reports may be dataclasses or parsed JSON dicts)."""
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _pad4(v: Any) -> tuple[int, int, int, int]:
    """Canonical pad is (top, bottom, left, right); tolerate int / (ph, pw) too."""
    if isinstance(v, (list, tuple)):
        if len(v) == 4:
            return tuple(int(x) for x in v)  # type: ignore[return-value]
        if len(v) == 2:
            return int(v[0]), int(v[0]), int(v[1]), int(v[1])
        v = v[0]
    return (int(v),) * 4  # type: ignore[return-value]


SUPPORTED_TYPES = (
    "conv", "conv_transpose", "locally_connected", "maxpool", "avgpool", "global_avgpool",
    "global_maxpool", "adaptive_avgpool", "fractional_maxpool", "maxout", "flatten", "reshape", "identity", "linear",
    "dropconnect", "dropout", "stochastic_depth", "batchnorm", "layernorm", "instancenorm",
    "groupnorm", "lrn", "relu", "sigmoid", "tanh", "leaky_relu", "prelu", "elu", "softmax",
    "relu6", "hardsigmoid", "hardswish", "silu", "gelu", "softplus",
    "add", "multiply", "concat", "upsample", "center_crop", "shortcut_pad", "channel_shuffle",
    "channel_slice",
)


def _op(torch, net, layer) -> Callable:
    """The forward function of one layer: f(*input tensors) -> output tensor."""
    F = torch.nn.functional
    t = _get(layer, "type")
    name = _get(layer, "name")
    a = dict(_get(layer, "attrs", {}) or {})
    in_shapes = [tuple(s) for s in (_get(layer, "input_shapes") or [])]
    out_shape = tuple(_get(layer, "output_shape"))
    where = net._tensors.get(name) or {}

    def P(k):
        """The layer's tensor ``k`` (looked up at call time: .to() may replace it)."""
        w = where.get(k)
        if w is None:
            return None
        holder, leaf, kind = w
        return holder._buffers[leaf] if kind == "buffer" else holder._parameters[leaf]
    training = lambda: net.training  # noqa: E731

    def weight():
        """The (possibly weight-normalised) weight: w = g * v / ||v|| over dims 1.. ."""
        if P("weight_v") is not None:
            return torch._weight_norm(P("weight_v"), P("weight_g"), 0)
        return P("weight")

    if t == "conv":
        s, d, g = _pair(a.get("stride", 1)), _pair(a.get("dilation", 1)), int(a.get("groups", 1))
        pt, pb, pl, pr = _pad4(a.get("pad", 0))
        if pt == pb and pl == pr:
            return lambda x: F.conv2d(x, weight(), P("bias"), s, (pt, pl), d, g)
        return lambda x: F.conv2d(F.pad(x, (pl, pr, pt, pb)), weight(), P("bias"), s, 0, d, g)

    if t == "conv_transpose":
        s, d, g = _pair(a.get("stride", 1)), _pair(a.get("dilation", 1)), int(a.get("groups", 1))
        op = _pair(a.get("output_padding", 0))
        pt, pb, pl, pr = _pad4(a.get("pad", 0))
        if pt == pb and pl == pr:
            return lambda x: F.conv_transpose2d(x, weight(), P("bias"), s, (pt, pl), op, g, d)

        def convt(x):  # asymmetric padding = crop of the unpadded transposed conv
            y = F.conv_transpose2d(x, weight(), P("bias"), s, 0, op, g, d)
            return y[:, :, pt:y.shape[2] - pb, pl:y.shape[3] - pr]
        return convt

    if t == "locally_connected":
        k, s = _pair(a["kernel"]), _pair(a.get("stride", 1))
        pt, pb, pl, pr = _pad4(a.get("pad", 0))
        oc, oh, ow = out_shape

        def local(x):
            cols = F.unfold(F.pad(x, (pl, pr, pt, pb)), k, stride=s)      # (N, C*kh*kw, OH*OW)
            w = P("weight").reshape(oh * ow, oc, -1)                       # (P, O, C*kh*kw)
            # contiguous: at batch 1 the einsum's result has channels-last strides, on which
            # torch 2.13's eval-mode batch_norm backward gave a wrong weight gradient
            y = torch.einsum("njp,poj->nop", cols, w).reshape(x.shape[0], oc, oh, ow).contiguous()
            return y + P("bias") if P("bias") is not None else y
        return local

    if t in ("maxpool", "avgpool"):
        k = _pair(a["kernel"])
        s = _pair(a.get("stride") or a["kernel"])
        pt, pb, pl, pr = _pad4(a.get("pad", 0))
        ceil = bool(a.get("ceil_mode", False))
        sym = pt == pb and pl == pr
        oh, ow = out_shape[1:]
        if t == "maxpool":
            d = _pair(a.get("dilation", 1))
            if sym:
                return lambda x: F.max_pool2d(x, k, s, (pt, pl), d, ceil)
            # [:oh, :ow]: a ceil_mode window may not start in the bottom/right padding (the
            # PyTorch rule netspec applies to explicit pads); on the pre-padded input torch
            # counts that padding as input
            return lambda x: F.max_pool2d(F.pad(x, (pl, pr, pt, pb), value=-math.inf), k, s, 0,
                                          d, ceil)[..., :oh, :ow]
        cip = bool(a.get("count_include_pad", True))
        if sym:
            return lambda x: F.avg_pool2d(x, k, s, (pt, pl), ceil, cip)

        def avg_asym(x):  # sum over the zero-padded input / the counted positions
            xp = F.pad(x, (pl, pr, pt, pb))
            tot = F.avg_pool2d(xp, k, s, 0, ceil, True)[..., :oh, :ow] * (k[0] * k[1])
            if cip:
                return tot / (k[0] * k[1])
            ones = F.pad(torch.ones_like(x[:1, :1]), (pl, pr, pt, pb))
            return tot / (F.avg_pool2d(ones, k, s, 0, ceil, True)[..., :oh, :ow] * (k[0] * k[1]))
        return avg_asym

    if t == "global_avgpool":
        return lambda x: x.mean(dim=(2, 3)).reshape(x.shape[0], *out_shape)
    if t == "global_maxpool":
        return lambda x: x.amax(dim=(2, 3)).reshape(x.shape[0], *out_shape)
    if t == "adaptive_avgpool":
        return lambda x: F.adaptive_avg_pool2d(x, tuple(out_shape[1:]))
    if t == "fractional_maxpool":
        k = _pair(a.get("kernel", 2))
        return lambda x: F.fractional_max_pool2d(x, k, output_size=out_shape[1:])
    if t == "maxout":
        kk = int(a.get("k", 2))
        return lambda x: x.reshape(x.shape[0], x.shape[1] // kk, kk, *x.shape[2:]).amax(2)
    if t in ("flatten", "reshape", "identity"):
        return lambda x: x.reshape(x.shape[0], *out_shape)

    if t in ("linear", "dropconnect"):
        p = float(a.get("p", 0.0)) if t == "dropconnect" else 0.0

        def dense(x):
            x = x.reshape(x.shape[0], -1)   # image inputs are flattened C-major (catalogue)
            w = weight()
            if p > 0.0 and training():
                w = w * (torch.rand_like(w) >= p).to(w.dtype) / (1.0 - p)
            return F.linear(x, w, P("bias"))
        return dense

    if t == "dropout":
        p = float(a.get("p", 0.5))
        return lambda x: F.dropout(x, p, training())
    if t == "stochastic_depth":
        p = float(a.get("p", 0.5))

        def sdepth(x):
            if not training() or p == 0.0:
                return x
            keep = (torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= p)
            return x * keep.to(x.dtype) / (1.0 - p)
        return sdepth

    if t == "batchnorm":
        eps, mom = float(a.get("eps", 1e-5)), float(a.get("momentum", 0.1))
        glob = bool(a.get("use_global_stats", False))     # like calling .eval() on this layer

        def bn(x):
            y = F.batch_norm(x, P("running_mean"), P("running_var"), P("weight"), P("bias"),
                             training() and not glob, mom, eps)
            nbt = P("num_batches_tracked")
            if nbt is not None and training() and not glob:
                nbt.add_(1)
            return y
        return bn
    if t == "layernorm":
        eps = float(a.get("eps", 1e-5))
        return lambda x: F.layer_norm(x, tuple(x.shape[1:]), P("weight"), P("bias"), eps)
    if t == "instancenorm":
        eps = float(a.get("eps", 1e-5))
        return lambda x: F.instance_norm(x, None, None, P("weight"), P("bias"), True, 0.1, eps)
    if t == "groupnorm":
        eps, g = float(a.get("eps", 1e-5)), int(a["groups"])
        return lambda x: F.group_norm(x, g, P("weight"), P("bias"), eps)
    if t == "lrn":
        size, alpha = int(a["size"]), float(a.get("alpha", 1e-4))
        beta, kk = float(a.get("beta", 0.75)), float(a.get("k", 1.0))
        return lambda x: F.local_response_norm(x, size, alpha, beta, kk)

    if t == "relu":
        return F.relu
    if t in ("relu6", "hardsigmoid", "hardswish", "silu", "gelu", "softplus"):
        # hardsigmoid as relu6(x + 3) / 6: torch 2.13's F.hardsigmoid backward rounds its 1/6
        # to float32 even on float64 tensors (3e-8 relative), too coarse for float64 parity
        return {"relu6": F.relu6, "hardsigmoid": lambda x: F.relu6(x + 3) / 6, "hardswish": F.hardswish,
                "silu": F.silu, "gelu": F.gelu, "softplus": F.softplus}[t]
    if t == "sigmoid":
        return torch.sigmoid
    if t == "tanh":
        return torch.tanh
    if t == "leaky_relu":
        slope = float(a.get("slope", a.get("negative_slope", 0.01)))
        return lambda x: F.leaky_relu(x, slope)
    if t == "prelu":
        return lambda x: F.prelu(x, P("weight"))
    if t == "elu":
        alpha = float(a.get("alpha", 1.0))
        return lambda x: F.elu(x, alpha)
    if t == "softmax":
        return lambda x: torch.softmax(x, dim=1)

    if t == "multiply":
        return lambda a, b: a * b
    if t == "add":
        def add(*xs):
            y = xs[0]
            for z in xs[1:]:
                y = y + z
            return y
        return add
    if t == "concat":
        return lambda *xs: torch.cat(xs, dim=1)
    if t == "upsample":
        mode = str(a.get("mode", "nearest"))
        sc = None if a.get("by_size") else a.get("scale")
        # a `scale` -> scale_factor (coordinates map with 1/scale, as nn.Upsample(scale_factor))
        kw = {"size": tuple(out_shape[1:])} if sc is None else \
            {"scale_factor": tuple(float(s) for s in (sc if isinstance(sc, (list, tuple)) else (sc, sc)))}
        if len(in_shapes) == 2:               # from: [x, ref]: ref's spatial size
            kw = {"size": tuple(out_shape[1:])}
        if mode in ("bilinear", "bicubic"):
            ac = bool(a.get("align_corners", False))
            return lambda x, *ref: F.interpolate(x, mode=mode, align_corners=ac, **kw)
        return lambda x, *ref: F.interpolate(x, mode=mode, **kw)
    if t == "center_crop":
        return _center_crop(a, in_shapes, out_shape)
    if t == "shortcut_pad":
        return _shortcut_pad(torch, a, in_shapes, out_shape)
    if t == "channel_shuffle":
        # torchvision's shufflenetv2.channel_shuffle (view, transpose, flatten), written out:
        # F.channel_shuffle has no float64 CPU kernel in every build
        g = int(a["groups"])
        return lambda x: x.reshape(x.shape[0], g, x.shape[1] // g, *x.shape[2:]).transpose(1, 2) \
            .reshape(x.shape)
    if t == "channel_slice":
        a0, a1 = int(a["start"]), int(a["stop"])
        return lambda x: x[:, a0:a1]
    raise NotImplementedError(
        f"runtime.torch_twin: layer {name!r} has type {t!r}, which has no PyTorch twin "
        f"(supported: {', '.join(SUPPORTED_TYPES)})")


def _center_crop(a: dict, in_shapes: list, out_shape: tuple) -> Callable:
    """Crop input 0 to the output's (H, W) from top = (H - h) // 2, left = (W - w) // 2
    (an odd extra row/column is cut at the bottom/right); input 1, the size reference of
    the U-Net form, is not read."""
    oh, ow = out_shape[-2:]
    top, left = (in_shapes[0][1] - oh) // 2, (in_shapes[0][2] - ow) // 2
    return lambda x, *_ref: x[:, :, top:top + oh, left:left + ow]


def _shortcut_pad(torch, a: dict, in_shapes: list, out_shape: tuple) -> Callable:
    """ResNet option A: x[:, :, ::s, ::s], then (out - C) // 2 zero channels before and the
    rest after (the catalogue's rule, as in the common CIFAR code)."""
    sh, sw = _pair(a.get("stride", 1))
    extra = out_shape[0] - in_shapes[0][0]
    lo, hi = extra // 2, extra - extra // 2
    return lambda x: torch.nn.functional.pad(x[:, :, ::sh, ::sw], (0, 0, 0, 0, lo, hi))


# ------------------------------------------------------------------ entry point
