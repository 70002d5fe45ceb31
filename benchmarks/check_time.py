"""How long does ``netspec check`` take, as a user feels it?

Times the whole process ``python -m netspec.cli check specs/resnet152.yaml`` -- interpreter
start, imports, YAML parsing, block expansion and the check of ResNet-152's 500+ layers --
as the median wall time of 5 runs (after one untimed run that warms the .pyc and OS file
caches), and checks in a separate probe process that the command never imports numba (or
the compiler, torch, scipy, matplotlib): ``check`` must stay instant (DESIGN.md §1, §5).

Writes ``benchmarks/results/check_time.json``::

    {"command": [...], "runs_s": [...], "median_s": 0.21, "goal_s": 0.5, "meets_goal": true,
     "heavy_modules_imported": [], "python": "3.12.3", "machine": "...", "cpus": 2, ...}

Usage: ``python benchmarks/check_time.py [--spec specs/resnet152.yaml] [--runs 5]``
(from the repository root; the project need not be installed: PYTHONPATH is set to it).
Exit status: 0, or 1 when the command fails or imports numba or the compiler. Missing the time
goal is reported in the JSON and on stdout, not as a failure (timings depend on the machine).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "check_time.json"
GOAL_S = 0.5
HEAVY = ("numba", "compiler", "torch", "scipy", "matplotlib", "jinja2", "llvmlite")

# Runs the CLI exactly as `python -m netspec.cli ...` would, then reports which heavy
# modules ended up in sys.modules (a marker line, after whatever the CLI printed).
_PROBE = """
import json, runpy, sys
sys.argv = [{module!r}, "check", {spec!r}]
code = 0
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("\\n@@probe " + json.dumps({{"exit": code, "heavy": heavy}}))
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    return env


def time_runs(spec: str, runs: int, module: str = "netspec.cli") -> tuple[list[float], list[str]]:
    """Wall seconds of ``runs`` complete CLI processes (after one warm-up run)."""
    cmd = [sys.executable, "-m", module, "check", spec]
    env = _env()
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if first.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({first.returncode}):\n"
                           f"{first.stdout[-2000:]}{first.stderr[-2000:]}")
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return times, cmd


def probe_imports(spec: str, module: str = "netspec.cli") -> list[str]:
    """Heavy modules imported by the check command (run in-process in a fresh interpreter)."""
    code = _PROBE.format(spec=spec, heavy=HEAVY, module=module)
    out = subprocess.run([sys.executable, "-c", code],
                         cwd=ROOT, env=_env(), capture_output=True, text=True)
    marker = [l for l in out.stdout.splitlines() if l.startswith("@@probe ")]
    if not marker:
        raise RuntimeError(f"import probe failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    info = json.loads(marker[-1][len("@@probe "):])
    if info["exit"] != 0:
        raise RuntimeError(f"netspec check exited with {info['exit']} in the probe")
    return info["heavy"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="specs/resnet152.yaml")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--module", default="netspec.cli", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        times, cmd = time_runs(args.spec, args.runs, args.module)
        heavy = probe_imports(args.spec, args.module)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"check_time: {e}", file=sys.stderr)
        return 1
    med = statistics.median(times)
    # the bare interpreter start, for scale (what no implementation can remove)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = time.perf_counter() - t0
    res = {
        "command": ["python", *cmd[1:]], "spec": args.spec, "runs_s": [round(t, 4) for t in times],
        "median_s": round(med, 4), "min_s": round(min(times), 4), "goal_s": GOAL_S,
        "meets_goal": med < GOAL_S, "bare_interpreter_s": round(bare, 4),
        "heavy_modules_imported": heavy, "numba_imported": "numba" in heavy,
        "python": platform.python_version(), "machine": platform.processor() or
        platform.machine(), "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"netspec check {args.spec}: median {med * 1000:.0f} ms over {args.runs} runs "
          f"(goal < {GOAL_S * 1000:.0f} ms: {'met' if res['meets_goal'] else 'MISSED'}; "
          f"bare python {bare * 1000:.0f} ms); heavy imports: {heavy or 'none'} -> {out}")
    return 1 if {"numba", "compiler"} & set(heavy) else 0


if __name__ == "__main__":
    sys.exit(main())
