"""Op registry: importing this package registers every op family."""
from .base import OPS, Op, register_op  # noqa: F401
import importlib

for _m in ("conv", "local", "pool", "dense", "resample", "norm", "activation", "elementwise", "loss", "fold"):
    try:
        importlib.import_module(f"{__name__}.{_m}")
    except ModuleNotFoundError as e:   # a family not written yet (during bring-up)
        if e.name != f"{__name__}.{_m}":
            raise
