"""Render jinja2 kernel templates into real files in a content-hashed cache dir and import them.

numba's ``cache=True`` only works for functions defined in real files, so every kernel
variant (template + static configuration) is rendered once to
``<cache>/kernels/<template>_<hash>.py`` and imported with importlib.  The file name
depends only on the rendered source, so the same variant used by different nets (or
different runs) hits the same numba on-disk cache: compile once per machine.

Cache root: ``$NETSPEC_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/netspec`` or
``~/.cache/netspec``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import jinja2

TEMPLATE_DIRS = [Path(__file__).resolve().parent.parent / "ops" / "templates",
                 Path(__file__).resolve().parent / "templates"]

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader([str(p) for p in TEMPLATE_DIRS]),
    undefined=jinja2.StrictUndefined,   # a missing config variable is a bug, not an empty string
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)
_modules: dict[str, ModuleType] = {}


def cache_root() -> Path:
    env = os.environ.get("NETSPEC_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "netspec"


def _check_config(config: dict) -> None:
    """Only plain numbers, bools and identifier-like strings may reach generated source."""
    import re
    ident = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
    for k, v in config.items():
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            continue
        if isinstance(v, str) and ident.match(v):
            continue
        if isinstance(v, (tuple, list)) and all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in v):
            continue
        raise ValueError(f"kernel config {k}={v!r} is not a safe template value")


def render(template: str, **config) -> str:
    """Render ``<template>.py.j2`` with a static configuration."""
    _check_config(config)
    return _env.get_template(f"{template}.py.j2").render(**config)


def write_module(source: str, stem: str, subdir: str = "kernels") -> Path:
    """Write ``source`` to ``<cache>/<subdir>/<stem>_<sha>.py`` atomically (if absent)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    d = cache_root() / subdir
    try:
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{stem}_{digest}.py"
        if not path.exists() or path.read_text() != source:
            fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(source)
            os.replace(tmp, path)
    except OSError as e:
        raise OSError(f"cannot write generated code to the kernel cache {d}: {e.strerror or e}; "
                      f"set NETSPEC_CACHE_DIR to a writable directory") from None
    _warn_read_only(d)
    return path


_warned: set = set()


def _warn_read_only(d: Path) -> None:
    """A cache that is readable but not writable (a shared, read-only install) still works,
    but numba cannot store its compiled code there: every process compiles again (~20 s)."""
    if d not in _warned and not os.access(d, os.W_OK):
        _warned.add(d)
        import sys
        print(f"note: the kernel cache {d} is read-only, so kernels are compiled again in every "
              f"process; set NETSPEC_CACHE_DIR to a writable directory", file=sys.stderr)


def import_path(path: Path) -> ModuleType:
    key = str(path)
    mod = _modules.get(key)
    if mod is not None:
        return mod
    name = "netspec_gen_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    _modules[key] = mod
    return mod


def load_kernels(template: str, **config) -> ModuleType:
    """Render, write (if new) and import one kernel variant; returns the module."""
    src = render(template, **config)
    # other generated modules named in the config (imports) stay out of the stem: the digest
    # covers them, and the name must stay short enough to be passed on as config itself
    stem = template + "".join(f"_{k}{v}" for k, v in sorted(config.items())
                              if isinstance(v, (str, bool, int)) and not str(v).startswith("netspec_gen_"))[:60]
    stem = "".join(c if c.isalnum() or c == "_" else "_" for c in stem)
    return import_path(write_module(src, stem))
