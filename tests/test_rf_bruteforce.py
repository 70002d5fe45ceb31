"""Receptive fields from check() against brute force.

For random small stacks of conv / maxpool / avgpool layers (kernel, stride, asymmetric
padding, dilation, ceil mode, non-square) with an add or concat merge of two branches in
the middle (an add may get a checker-inserted 1x1 projection), propagate a boolean
dependency mask backwards from the centre output position to the input: the marked
input pixels are exactly those that can influence it. For interior outputs the bounding
box of the marked pixels must have extent RF size and centre start + o*jump.

Branches of a merge are centre-preserving (odd effective kernels, padding (k_eff-1)/2):
where branches are not aligned, the union of their fields is larger than each and
"the largest over the paths" (Araujo et al.) is by definition an under-estimate.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from netspec.check import check
from netspec.spec import INPUT, LayerSpec, Spec

WINDOW = ("conv", "maxpool", "avgpool")


def back_window(mask, in_hw, a):
    """Input pixels read by the marked outputs of a window layer (padding reads nothing)."""
    out = np.zeros(in_hw, dtype=bool)
    ii, jj = np.nonzero(mask)
    (kh, kw), (sh, sw) = a["kernel"], a["stride"]
    dh, dw = a.get("dilation", (1, 1))
    t, l = a["pad"][0], a["pad"][2]
    for p in range(kh):
        r = ii * sh - t + p * dh
        for q in range(kw):
            c = jj * sw - l + q * dw
            ok = (r >= 0) & (r < in_hw[0]) & (c >= 0) & (c < in_hw[1])
            out[r[ok], c[ok]] = True
    return out


def brute_rf(report):
    """-> (rows, cols) of input pixels the centre output position depends on, and o."""
    last = report.layers[-1]
    _, oh, ow = last.output_shape
    o = (oh // 2, ow // 2)
    masks = {last.name: np.zeros((oh, ow), dtype=bool)}
    masks[last.name][o] = True
    for l in reversed(report.layers):
        m = masks.get(l.name)
        if m is None:
            continue
        for src, shp in zip(l.inputs, l.input_shapes):
            hw = tuple(shp[1:])
            im = back_window(m, hw, l.attrs) if l.type in WINDOW else m
            masks[src] = masks[src] | im if src in masks else im
    rows, cols = np.nonzero(masks[INPUT])
    return rows, cols, o


# ------------------------------------------------------------------ random nets

def pairs(lo, hi):
    return st.tuples(st.integers(lo, hi), st.integers(lo, hi))


@st.composite
def free_layer(draw):
    """Any window layer (arbitrary, possibly asymmetric padding) or an elementwise one."""
    typ = draw(st.sampled_from(WINDOW + ("relu",)))
    if typ == "relu":
        return ("relu", {})
    k, s = draw(pairs(1, 4)), draw(pairs(1, 3))
    if typ == "conv":
        d = draw(pairs(1, 3))
        pad = list(draw(st.tuples(*[st.integers(0, 3)] * 4)))
        return ("conv", dict(out=2, kernel=list(k), stride=list(s), dilation=list(d), pad=pad))
    ph, pw = draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2))
    a = dict(kernel=list(k), stride=list(s), pad=[ph, pw], ceil_mode=draw(st.booleans()))
    if typ == "maxpool":
        a["dilation"] = list(draw(pairs(1, 2)))
    return (typ, a)


@st.composite
def centred_layer(draw, stride):
    """A window layer that keeps the field centred: odd k_eff, padding (k_eff-1)/2."""
    typ = draw(st.sampled_from(WINDOW))
    k = tuple(2 * x + 1 for x in draw(pairs(0, 2)))
    if typ == "conv":
        d = draw(pairs(1, 2))
        pad = [d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2]
        return ("conv", dict(out=2, kernel=list(k), stride=stride, dilation=list(d), pad=pad))
    return (typ, dict(kernel=list(k), stride=stride, pad=[k[0] // 2, k[1] // 2]))


@st.composite
def branch(draw, stride, allow_empty):
    n = draw(st.integers(0 if allow_empty else 1, 2))
    if n == 0:
        return []
    at = draw(st.integers(0, n - 1))  # which layer carries the stride
    return [draw(centred_layer(stride if i == at else [1, 1])) for i in range(n)]


@st.composite
def nets(draw):
    prefix = draw(st.lists(free_layer(), min_size=0, max_size=3))
    merge = draw(st.sampled_from(["add", "concat", None]))
    stride = list(draw(pairs(1, 2)))
    b1 = draw(branch(stride, False)) if merge else []
    b2 = draw(branch(stride, merge == "add" or stride == [1, 1])) if merge else []
    suffix = draw(st.lists(free_layer(), min_size=0 if merge or prefix else 1, max_size=2))
    return prefix, merge, b1, b2, suffix


def build(net, hw):
    prefix, merge, b1, b2, suffix = net
    layers, prev = [], INPUT

    def put(typ, attrs, src):
        name = f"l{len(layers)}"
        layers.append(LayerSpec(name, typ, dict(attrs), [src]))
        return name
    for t, a in prefix:
        prev = put(t, a, prev)
    if merge:
        split = prev
        ends = []
        for br in (b1, b2):
            x = split
            for t, a in br:
                x = put(t, a, x)
            ends.append(x)
        layers.append(LayerSpec("m.merge", merge, {}, ends))
        prev = "m.merge"
    for t, a in suffix:
        prev = put(t, a, prev)
    return Spec("rf", 1, (2,) + hw, layers, [], {})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nets())
def test_receptive_field_matches_bruteforce(net):
    probe = check(build(net, (4096, 4096)))    # the RF does not depend on the input size
    rf = probe.layers[-1].receptive_field
    hw = tuple(int(2 * rf.size[a] + 6 * rf.jump[a] + 16) for a in range(2))
    assume(max(hw) <= 1500)                      # keep the masks small
    r = check(build(net, hw))
    rf = r.layers[-1].receptive_field
    rows, cols, o = brute_rf(r)
    for ax, idx in ((0, rows), (1, cols)):
        centre = rf.start[ax] + o[ax] * rf.jump[ax]
        lo, hi = centre - rf.size[ax] / 2, centre + rf.size[ax] / 2
        assume(lo >= 0 and hi <= hw[ax])          # interior output only
        assert idx.max() - idx.min() + 1 == rf.size[ax], (ax, net)
        assert (idx.min() + idx.max() + 1) / 2 == centre, (ax, net)
    if net[1] == "add" and not net[3] and (net[2] and any(
            a.get("stride", [1, 1]) != [1, 1] for _, a in net[2])):
        assert any(l.inserted for l in r.layers)  # the projection took part in the walk


def test_known_values():
    """Hand-checked: conv3 -> conv3 s2 -> maxpool2 s2 -> conv3 d2."""
    layers = [LayerSpec("a", "conv", dict(out=1, kernel=3), [INPUT]),
              LayerSpec("b", "conv", dict(out=1, kernel=3, stride=2, pad=1), ["a"]),
              LayerSpec("c", "maxpool", dict(kernel=2), ["b"]),
              LayerSpec("d", "conv", dict(out=1, kernel=3, dilation=2, pad=[0, 2]), ["c"])]
    r = check(Spec("k", 1, (1, 64, 64), layers, [], {}))
    got = [(l.receptive_field.size, l.receptive_field.jump, l.receptive_field.start)
           for l in r.layers]
    assert got == [((3, 3), (1, 1), (1.5, 1.5)), ((5, 5), (2, 2), (1.5, 1.5)),
                   ((7, 7), (4, 4), (2.5, 2.5)), ((23, 23), (4, 4), (10.5, 2.5))]
    assert r.to_json()["layers"][3]["receptive_field"] == {"size": 23, "jump": 4,
                                                          "start": [10.5, 2.5]}
