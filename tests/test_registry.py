"""Every layer type is complete: shape rule, lowering, ops with a numpy reference, CPU
kernels (forward and backward) and a row in an op gradient-check table; every loss too."""
from __future__ import annotations

import pytest

from compiler.lower import LAYER_OPS, LOSS_TARGET, LOWER
from compiler.ops import OPS
from compiler.ops.base import Op
from netspec.layers import REGISTRY
from netspec.layers.base import LayerDef

import test_ops_pointwise
import test_ops_spatial

TABLE_OPS = {row[0] for row in test_ops_spatial.CASES} | {row[0] for row in test_ops_pointwise.CASES}
LAYER_TYPES = sorted({d.type for d in REGISTRY.values()})


def overridden(obj, base, name):
    return getattr(type(obj), name) is not getattr(base, name)


@pytest.mark.parametrize("t", LAYER_TYPES)
def test_layer_type_is_complete(t):
    d = REGISTRY[t]
    assert overridden(d, LayerDef, "output_shape"), f"{t}: no shape rule"
    assert t in LOWER, f"{t}: no lowering rule in compiler/lower.py"
    assert t in LAYER_OPS, f"{t}: LAYER_OPS does not say which ops it lowers to"
    for op_name in LAYER_OPS[t]:
        op = OPS.get(op_name)
        assert op is not None, f"{t}: op {op_name} not registered"
        for m in ("ref_forward", "forward"):
            assert overridden(op, Op, m), f"{op_name}: no {m}"
        if d.differentiable and op.differentiable:
            for m in ("ref_backward", "backward"):
                assert overridden(op, Op, m), f"{op_name}: no {m}"
        assert op_name in TABLE_OPS, f"{op_name}: no row in an op gradient-check table"


@pytest.mark.parametrize("loss", sorted(LOSS_TARGET))
def test_losses_are_complete(loss):
    op = OPS[loss]
    for m in ("ref_forward", "forward", "ref_backward", "backward"):
        assert overridden(op, Op, m)
    assert loss in TABLE_OPS
