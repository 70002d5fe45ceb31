"""The expanded, located form of a spec: what ``netspec.load`` returns.

Blocks are expanded, ``repeat`` unrolled, ``from:`` resolved to layer names, attributes
validated against the layer catalogue with defaults filled in (but not yet normalised
against input shapes -- that is the checker's job).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import Loc

INPUT = "input"  # the name by which layers refer to the net's input


@dataclass
class LayerSpec:
    name: str                      # hierarchical, PyTorch-style: "layer3.1.conv2", "features.0"
    type: str                      # canonical catalogue type (aliases resolved): "conv", "maxpool", ...
    attrs: dict[str, Any]          # validated user attributes + defaults (not shape-normalised)
    inputs: list[str]              # producer names; "input" is the net input
    loc: Loc = field(default_factory=Loc)                    # where the layer was written
    attr_locs: dict[str, Loc] = field(default_factory=dict)  # where each attribute was written
    trace: tuple[Loc, ...] = ()    # block call sites, outermost first, when expanded from a block


@dataclass
class Spec:
    name: str
    version: int
    input_shape: tuple[int, ...]   # (C, H, W) or (F,), no batch dimension
    layers: list[LayerSpec]        # in topological (written) order
    outputs: list[str]             # names of output layers (default: the last layer)
    train: dict[str, Any]          # validated train: section with defaults filled
    init: dict[str, Any] | None = None   # optional init: {checkpoint, skip}
    file: str = "<spec>"
    source_lines: list[str] = field(default_factory=list)
    input_loc: Loc = field(default_factory=Loc)
    # where spec-level names were written, for check's errors: ("loss_weights", output) and
    # ("outputs", output) -> Loc of that entry (input_loc where absent: specs built in code)
    locs: dict = field(default_factory=dict)

    def layer(self, name: str) -> LayerSpec:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)
