"""`netspec check` / `netspec schema`: exit codes (0 valid, 1 invalid or unreadable,
2 usage), located errors without tracebacks, --json output, no numba import."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netspec.cli import main

ROOT = Path(__file__).resolve().parents[1]
LENET = """netspec: 1
name: lenet
input: [1, 28, 28]
layers:
  - conv: {name: conv1, out: 6, kernel: 5, pad: 2}
  - relu:
  - maxpool: {kernel: 2}
  - conv: {name: conv2, out: 16, kernel: 5}
  - relu:
  - maxpool: {kernel: 2}
  - flatten:
  - linear: {name: fc1, out: 120}
  - relu:
  - linear: {name: fc2, out: 10}
"""


@pytest.fixture
def lenet(tmp_path):
    p = tmp_path / "lenet.yaml"
    p.write_text(LENET)
    return p


def test_check_table(lenet, capsys):
    assert main(["check", str(lenet)]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "fc2" in out


def test_check_json(lenet, capsys):
    assert main(["check", str(lenet), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["name"] == "lenet" and r["output_shape"] == [10]
    assert r["total_params"] == 156 + 2416 + 16 * 5 * 5 * 120 + 120 + 1210
    assert [l["name"] for l in r["layers"]][:2] == ["conv1", "relu1"]


def test_check_input_shape(lenet, capsys):
    assert main(["check", str(lenet), "--json", "--input-shape", "1,32,32"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["input_shape"] == [1, 32, 32] and r["layers"][0]["output_shape"] == [6, 32, 32]


def test_check_invalid_spec(tmp_path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text(LENET.replace("kernel: 5, pad", "kernal: 5, pad"))
    assert main(["check", str(p)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{p}:5:33: unknown attribute 'kernal' for conv layer")
    assert "hint: did you mean 'kernel'?" in err and "Traceback" not in err


def test_check_shape_error_is_exit_1(lenet, capsys):
    assert main(["check", str(lenet), "--input-shape", "1,4,4"]) == 1
    err = capsys.readouterr().err
    assert str(lenet) in err and "Traceback" not in err


def test_missing_file(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nope.yaml")]) == 1
    err = capsys.readouterr().err
    assert "cannot read" in err and "nope.yaml" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["check"], ["check", "x.yaml", "--input-shape", "a,b"],
                                  ["check", "x.yaml", "--input-shape", "3,32"], ["frobnicate"],
                                  [], ["check", "x.yaml", "--bogus"]])
def test_usage_errors(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_and_version(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "check" in out and "schema" in out
    assert main(["--version"]) == 0


def test_subprocess_exit_codes_and_no_numba(lenet, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = ("import sys, runpy; sys.argv = ['netspec'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('netspec', run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    assert 'numba' not in sys.modules, 'check imported numba'\n    raise\n")
    r = subprocess.run([sys.executable, "-c", code, "check", str(lenet)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("netspec: 2\n")
    r = subprocess.run([sys.executable, "-m", "netspec", "check", str(bad)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "unsupported spec language version 2" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "netspec.cli", "schema"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout)["properties"]["netspec"]["const"] == 1


def test_schema_output_file(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["schema", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["title"].startswith("netspec")
    assert main(["schema", "-o", str(tmp_path / "no" / "dir.json")]) == 1
