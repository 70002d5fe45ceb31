"""The one error type of the spec language.

Every problem found while loading or checking a spec is a ``SpecError`` that knows
where it came from (file, 1-based line and column), the offending value and a hint
on how to fix it.  ``str(err)`` prints it the way compilers do::

    specs/net.yaml:12:7: unknown key 'kernal' in conv layer
        - conv: {out: 16, kernal: 3}
                          ^
    hint: did you mean 'kernel'?
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class Loc:
    """A position in a spec file; line and col are 1-based (0 = unknown)."""

    file: str = "<spec>"
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class SpecError(Exception):
    """A problem in a spec, located at ``file:line:col``.

    Attributes: message, file, line, col, hint, value, source_line (the text of the
    offending line when known).
    """

    def __init__(self, message: str, file: str = "<spec>", line: int = 0, col: int = 0,
                 hint: str | None = None, value: Any = None, source_line: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.hint = hint
        self.value = value
        self.source_line = source_line

    @classmethod
    def at(cls, loc: "Loc | None", message: str, hint: str | None = None, value: Any = None,
           source_lines: list[str] | None = None) -> "SpecError":
        loc = loc or Loc()
        src = None
        if source_lines and 0 < loc.line <= len(source_lines):
            src = source_lines[loc.line - 1]
        return cls(message, loc.file, loc.line, loc.col, hint, value, src)

    @property
    def loc(self) -> Loc:
        return Loc(self.file, self.line, self.col)

    def __str__(self) -> str:
        out = [f"{self.file}:{self.line}:{self.col}: {self.message}"]
        if self.source_line is not None:
            line = self.source_line.rstrip("\n")
            if len(line) > 200:
                line = line[:200] + "…"
            out.append("    " + line)
            if self.col > 0:
                out.append("    " + " " * min(self.col - 1, 200) + "^")
        if self.hint:
            out.append(f"hint: {self.hint}")
        return "\n".join(out)


# Layer types and attributes users bring from other frameworks that netspec spells
# differently or does not have: the hint names the equivalent instead of a near-miss spelling
# (difflib offered 'max_pool' for 'max_unpool').
_SEPARABLE = ("write a depthwise conv as `conv: {kernel: 3, groups: depthwise}` (one group per "
              "input channel; `out:` a multiple of them for a channel multiplier); a separable "
              "conv is that followed by a 1x1 `conv`")
FOREIGN_LAYERS = {
    **dict.fromkeys(("max_unpool", "maxunpool", "maxunpool2d", "max_unpool2d", "unpool"),
                    "netspec has no max-unpooling with indices (SegNet); upsample the decoder with "
                    "`upsample` (nearest or bilinear) or a learnable `conv_transpose` (kernel = stride = 2)"),
    **dict.fromkeys(("pixel_shuffle", "pixelshuffle", "depth_to_space", "subpixel", "sub_pixel"),
                    "netspec has no pixel shuffle (ESPCN); `conv_transpose` with kernel = stride = r gives "
                    "the same output size and is learnable, or use `upsample` then `conv`"),
    **dict.fromkeys(("depthwise", "depthwise_conv", "depthwiseconv2d", "dwconv", "separable_conv",
                     "separableconv2d", "sepconv", "separable"), _SEPARABLE),
    **dict.fromkeys(("split", "chunk", "slice", "narrow", "channel_chunk"),
                    "take channels with `channel_slice: {start: a, stop: b}` or "
                    "`{chunks: k, index: i}` (torch.chunk), one layer per piece (both can read "
                    "the same input with `from:`)"),
    **dict.fromkeys(("shuffle", "channelshuffle", "shuffle_channels"),
                    "netspec spells it `channel_shuffle: {groups: g}`"),
    **dict.fromkeys(("transpose", "permute"),
                    "netspec has no general tensor transpose: `channel_shuffle` permutes channels "
                    "(ShuffleNet), `flatten` / `reshape` change the shape; for a learnable "
                    "upsampling layer see `conv_transpose`"),
    **dict.fromkeys(("lstm", "gru", "rnn", "embedding", "attention", "multihead_attention", "transformer"),
                    "netspec declares ConvNets: it has no recurrent, embedding or attention layers"),
}
FOREIGN_ATTRS = {
    "depthwise": _SEPARABLE,
    "depth_multiplier": _SEPARABLE,
    "channel_multiplier": _SEPARABLE,
}


def layer_type_hint(word: str, candidates: Iterable[str]) -> str | None:
    """The hint for an unknown layer type: another framework's name for something netspec
    spells differently (``FOREIGN_LAYERS``), else 'did you mean'."""
    key = str(word).lower()
    return FOREIGN_LAYERS.get(key) or did_you_mean(word, candidates)


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean ...?' hint for a misspelt key, or a list of valid keys."""
    cands = sorted(set(map(str, candidates)))
    close = difflib.get_close_matches(str(word), cands, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    if len(cands) <= 12:
        return "valid keys: " + ", ".join(cands)
    return None
