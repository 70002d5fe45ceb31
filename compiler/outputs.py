"""``main_output``: the first output of a net's forward result -- the one the loss applies
to -- whether the spec lists one output (an array) or several (a tuple of arrays).  A plain
function rather than a method so that anything net-like (test doubles, ensembles) works."""
from __future__ import annotations


def main_output(y):
    return y[0] if isinstance(y, tuple) else y
