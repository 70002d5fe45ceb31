"""The pass pipelines, as visible lists.  Each pass is a pure Graph -> Graph function;
``run`` checks the graph's invariants after every one."""
from __future__ import annotations

from ..ir import Graph, check_graph
from .dce import dce
from .fold_bn import fold_bn
from .fuse_activation import fuse_activation
from .fuse_maxpool import fuse_maxpool
from .fuse_residual import fuse_residual
from .plan_memory import plan_memory

# forward graph of a training step, before autodiff
TRAIN_FORWARD = [fuse_activation, fuse_residual, fuse_maxpool, dce]
# after autodiff
TRAIN_BACKWARD = [dce, plan_memory]
# inference (eval-mode) graph
INFERENCE = [fold_bn, fuse_activation, fuse_residual, fuse_maxpool, dce, plan_memory]

# passes whose fused ops only the CPU kernels implement: the CUDA kernels and the ONNX
# emitters get the graph without them
CPU_ONLY = (fuse_residual, fuse_maxpool)


def for_target(passes, target: str) -> list:
    """The pass list for a target: "cpu", "cuda" or "onnx"."""
    return [p for p in passes if target == "cpu" or p not in CPU_ONLY]


def run(g: Graph, passes, target: str = "cpu") -> Graph:
    for p in for_target(passes, target):
        g = check_graph(p(g))
    return g
