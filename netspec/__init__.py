"""netspec: ConvNets declared in YAML, checked like a program, compiled to numba code.

Public API (DESIGN.md §3)::

    spec = netspec.load("specs/lenet5.yaml")   # -> Spec; raises SpecError (file:line:col)
    report = netspec.check(spec)               # -> Report (shapes, params, MACs, RF)

Importing netspec never imports numba or the compiler.
"""
from __future__ import annotations

from .errors import Loc, SpecError
from .spec import LayerSpec, Spec
from .loader import load

__version__ = "0.1.0"

try:
    # Imported eagerly (and bound after the submodule import) so that the name
    # ``netspec.check`` is the function, not the submodule netspec/check.py.
    from .check import check
except ModuleNotFoundError as _e:  # the checker is not there yet (development)
    if _e.name != f"{__name__}.check":
        raise

    def check(spec, input_shape=None, **kwargs):  # type: ignore[no-redef]
        """Placeholder until netspec/check.py exists."""
        raise RuntimeError("netspec.check is not available: netspec/check.py is missing")

__all__ = ["load", "check", "SpecError", "Spec", "LayerSpec", "Loc", "__version__"]
