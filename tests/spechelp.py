"""Shared assertion for tests of spec errors."""
from __future__ import annotations

from netspec import SpecError


def located(e: SpecError, file: str | None = None) -> None:
    """``e`` names a real place (line >= 1, col >= 0; ``file`` if given) and prints as
    ``file:line:col: message``."""
    assert e.line >= 1 and e.col >= 0, (e.line, e.col, e.message)
    if file:
        assert e.file == file
    assert str(e).startswith(f"{e.file}:{e.line}:{e.col}: ")
