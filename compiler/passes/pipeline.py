"""The pass pipelines, as visible lists.  Each pass is a pure Graph -> Graph function;
``run`` checks the graph's invariants after every one."""
from __future__ import annotations

from ..ir import Graph, check_graph
from .dce import dce
from .fold_bn import fold_bn
from .fuse_activation import fuse_activation
from .plan_memory import plan_memory

# forward graph of a training step, before autodiff
TRAIN_FORWARD = [fuse_activation, dce]
# after autodiff
TRAIN_BACKWARD = [dce, plan_memory]
# inference (eval-mode) graph
INFERENCE = [fold_bn, fuse_activation, dce, plan_memory]


def run(g: Graph, passes) -> Graph:
    for p in passes:
        g = check_graph(p(g))
    return g
