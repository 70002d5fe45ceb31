"""CUDA kernels of the ops, keyed like ``compiler.ops.OPS`` (see ``common`` for the contract).

Importing this package registers every family.  It imports numba.cuda lazily (kernel
modules are rendered and imported on first use), so building plans on a machine without
a GPU -- for ``compile_ptx`` type checks -- works.  Ops listed in ``FALLBACK`` have no CUDA
kernels yet and run the CPU op on host copies (correct, one synchronisation per call).
"""
from .common import CUDA_OPS, CudaOp, HostFallback, register  # noqa: F401
from . import gemm, loss, pointwise, pool, reduce  # noqa: F401  (registration)

FALLBACK = ("local2d", "fractional_maxpool2d", "dropconnect_linear")
for _name in FALLBACK:
    CUDA_OPS[_name] = HostFallback(_name)


def native_ops() -> list[str]:
    """Names of the ops with real CUDA kernels."""
    return sorted(k for k, v in CUDA_OPS.items() if not isinstance(v, HostFallback))
