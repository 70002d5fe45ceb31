"""Is there a CUDA device to compile for?  ``require_gpu()`` is called by ``compiler.compile``
for ``backend="cuda"`` before anything is built."""
from __future__ import annotations

import os

MESSAGE = ("backend 'cuda' needs an NVIDIA GPU and driver; none was found "
           "(numba.cuda.is_available() is False). Use --backend cpu.")


def simulator() -> bool:
    """NUMBA_ENABLE_CUDASIM=1 (numba's CUDA simulator) counts as available."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def gpu_available() -> bool:
    if simulator():
        return True
    try:
        from numba import cuda
    except Exception:            # numba-cuda not installed or broken (e.g. wrong numpy)
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def require_gpu() -> None:
    """Raise compiler.net.CompileError with one sentence when no GPU can be used."""
    if not gpu_available():
        from compiler.net import CompileError
        if simulator() is False:
            try:
                import numba.cuda  # noqa: F401
            except Exception:
                raise CompileError("backend 'cuda' needs numba-cuda (pip install \"numba-cuda[cu12]\") "
                                   "and an NVIDIA GPU; numba.cuda could not be imported. "
                                   "Use --backend cpu.") from None
        raise CompileError(MESSAGE)
