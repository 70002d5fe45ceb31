"""The netspec graph compiler: Spec -> IR -> autodiff -> passes -> generated numba code.

    net = compiler.compile(spec, backend="cpu", batch_size=64)

See docs/compiled-net.md for the CompiledNet API and docs/architecture.md for the map.
"""
from .net import CompileError, CompiledNet, ParamInfo, compile, emit  # noqa: F401
