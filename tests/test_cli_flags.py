"""Flag values and file arguments of bench, export, predict, viz, search, compile, features,
import-weights and gradcheck: a nonsense flag value is a usage error (exit 2, argparse's
"netspec CMD: error: argument --flag: ..."), an output that is the input checkpoint is refused
(the file stays intact), and bad inputs (NaN images, empty / key-less .npz, directories, a
spec given as a checkpoint, /etc/passwd as data) give one ``netspec CMD: ...`` message with
exit 1 -- never a traceback, an "internal error" or numpy's ``allow_pickle=`` advice.

Fast: no training; one checkpoint of specs/digits.yaml built with compiler.compile +
save_checkpoint (random weights are enough for everything checked here).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from netspec import cli

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "specs" / "digits.yaml"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def clean(err: str) -> None:
    assert "Traceback" not in err and "internal error" not in err, err
    assert "allow_pickle" not in err and "weights_only" not in err, err


def usage_error(capsys, *argv, flag: str) -> str:
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2, (rc, err)
    assert f"netspec {argv[0]}: error: argument {flag}" in err, err
    clean(err)
    return err


def failure(capsys, *argv, rc_expected=1) -> str:
    rc, out, err = run_cli(capsys, *argv)
    assert rc == rc_expected, (rc, out, err)
    assert err.startswith(f"netspec {argv[0]}: "), err
    clean(err)
    return err


def digest(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def f(tmp_path_factory):
    d = tmp_path_factory.mktemp("flags")
    import compiler
    import netspec
    from runtime.checkpoint import save_checkpoint
    from runtime.train_utils import weights_of
    spec = netspec.load(DIGITS)
    net = compiler.compile(spec, batch_size=8, train=False)
    ck = d / "run" / "checkpoint.npz"
    ck.parent.mkdir()
    save_checkpoint(ck, weights_of(net), {"spec": spec.name, "epoch": 1})
    files = {"dir": d, "ckpt": ck}
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 16, (3, 1, 8, 8)).astype(np.float32)
    np.savez(d / "x_ok.npz", x=x)
    xn = x.copy()
    xn[1, 0, 2, 2] = np.nan
    xn[2, 0, 0, 0] = np.inf
    np.savez(d / "x_nan.npz", x=xn)
    np.savez(d / "x_empty.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    np.savez(d / "x_nokey.npz", y=np.zeros(3))
    np.savez(d / "x_multi.npz", images=x, labels=np.zeros(3))
    np.savez(d / "x_obj.npz", x=np.array([{}, {}], dtype=object))
    (d / "fake.npz").write_text("netspec: 1\n")
    (d / "imgdir").mkdir()
    (d / "outdir").mkdir()
    for k in ("x_ok", "x_nan", "x_empty", "x_nokey", "x_multi", "x_obj", "fake", "imgdir", "outdir"):
        files[k] = d / (k if k in ("imgdir", "outdir") else f"{k}.npz")
    return files


# ---------------------------------------------------------------- 1. output == input
@pytest.mark.parametrize("cmd", ["export-npz", "export-onnx", "features", "import-weights", "viz"])
def test_output_over_the_input_checkpoint_is_refused(f, capsys, cmd, tmp_path):
    ck = tmp_path / "run" / "checkpoint.npz"
    ck.parent.mkdir()
    ck.write_bytes(f["ckpt"].read_bytes())
    before = digest(ck)
    same = tmp_path / "run" / ".." / "run" / "checkpoint.npz"      # same file, other spelling
    link = tmp_path / "link.npz"
    os.symlink(ck, link)
    for out in (same, link):
        argv = {"export-npz": ["export", DIGITS, "--checkpoint", ck, "--format", "npz", "-o", out],
                "export-onnx": ["export", DIGITS, "--checkpoint", ck, "--format", "onnx", "-o", out],
                "features": ["features", DIGITS, "--checkpoint", ck, "--layer", "conv1", "-o", out],
                "import-weights": ["import-weights", DIGITS, ck, "-o", out],
                "viz": ["viz", DIGITS, "--checkpoint", ck, "--what", "filters", "-o", out]}[cmd]
        err = failure(capsys, *argv, rc_expected=2)
        assert str(out) in err and str(ck) in err and "destroy" in err, err
    assert digest(ck) == before


def test_export_to_another_file_still_works(f, capsys, tmp_path):
    out = tmp_path / "w.npz"
    rc, o, err = run_cli(capsys, "export", DIGITS, "--checkpoint", f["ckpt"], "--format", "npz", "-o", out)
    assert rc == 0, err
    with np.load(out) as z:
        assert z["conv1.weight"].shape == (32, 1, 3, 3)


# ---------------------------------------------------------------- 2. internal errors
def test_bench_negative_threads_is_a_usage_error(capsys):
    usage_error(capsys, "bench", DIGITS, "--threads", "-1", flag="--threads")


@pytest.mark.parametrize("opset", ["-5", "0", "12", "999", "x"])
def test_export_opset_out_of_range_is_a_usage_error(f, capsys, opset, tmp_path):
    err = usage_error(capsys, "export", DIGITS, "--checkpoint", f["ckpt"], "--format", "onnx",
                      "--opset", opset, "-o", tmp_path / "m.onnx", flag="--opset")
    if opset != "x":
        try:
            from onnx import defs
        except ImportError:                # without the onnx extra: the documented fallback range
            assert "13.." in err
        else:
            assert f"13..{defs.onnx_opset_version()}" in err
    assert not (tmp_path / "m.onnx").exists()


def test_export_verify_onnxruntime_failure_is_one_message(f, capsys, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import runtime.export

    def broken(path, x):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Load model failed: opset 28\nmore")
    monkeypatch.setattr(runtime.export, "onnx_forward", broken)
    err = failure(capsys, "export", DIGITS, "--checkpoint", f["ckpt"], "--format", "onnx",
                  "--opset", "18", "--verify", "-o", tmp_path / "m.onnx")
    assert "onnxruntime" in err and "cannot run it" in err and "lower --opset" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_export_onnx_checker_failure_is_one_message(f, capsys, tmp_path, monkeypatch):
    import runtime.export

    class ValidationError(Exception):
        pass

    def refuse(*a, **k):
        raise ValidationError("No Op registered for Foo with domain_version of 13\n==> Context")
    monkeypatch.setattr(runtime.export, "export_onnx", refuse)
    err = failure(capsys, "export", DIGITS, "--checkpoint", f["ckpt"], "--format", "onnx",
                  "--opset", "13", "-o", tmp_path / "m.onnx")
    assert "cannot be written as ONNX opset 13" in err and "No Op registered" in err, err


@pytest.mark.parametrize("fmt", ["torch", "npz", "onnx"])
def test_export_to_a_directory_is_one_message(f, capsys, fmt):
    if fmt == "torch":
        pytest.importorskip("torch")
    for out in (f["outdir"], str(f["outdir"]) + "/"):
        err = failure(capsys, "export", DIGITS, "--checkpoint", f["ckpt"], "--format", fmt, "-o", out)
        assert "is a directory" in err and str(f["outdir"]) in err, err


# ---------------------------------------------------------------- 3. nonsense flag values
@pytest.mark.parametrize("argv,flag", [
    (["bench", DIGITS, "--batch-size", "0"], "--batch-size"),
    (["bench", DIGITS, "--threads", "0"], "--threads"),
    (["compile", DIGITS, "--batch-size", "0"], "--batch-size"),
    (["compile", DIGITS, "--batch-size", "-3"], "--batch-size"),
    (["search", DIGITS, "--out", "OUT", "--top-k", "0"], "--top-k"),
    (["search", DIGITS, "--out", "OUT", "--trials", "0"], "--trials"),
    (["gradcheck", DIGITS, "--coords", "0"], "--coords"),
    (["gradcheck", DIGITS, "--h", "nan"], "--h"),
])
def test_nonsense_numbers_are_usage_errors(capsys, argv, flag, tmp_path):
    argv = [tmp_path / "s" if a == "OUT" else a for a in argv]
    usage_error(capsys, *argv, flag=flag)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("flag,value", [("--top", "0"), ("--top", "-1"), ("--scale", "nan"),
                                        ("--scale", "inf"), ("--scale", "0"), ("--scale", "-2")])
def test_predict_flags(f, capsys, flag, value):
    usage_error(capsys, "predict", DIGITS, "--checkpoint", f["ckpt"], f["x_ok"], flag, value, flag=flag)


@pytest.mark.parametrize("flag,value", [("--patch", "0"), ("--patch", "-4"), ("--stride", "0"),
                                        ("--stride", "-1")])
def test_viz_occlusion_flags(f, capsys, flag, value, tmp_path):
    usage_error(capsys, "viz", DIGITS, "--checkpoint", f["ckpt"], "--what", "occlusion",
                "-o", tmp_path / "o.png", flag, value, flag=flag)


def test_bench_threads_above_the_cores_are_clamped_with_a_note(capsys, monkeypatch):
    import runtime.bench
    from netspec.commands._common import cpu_cores
    seen = {}

    def fake(spec, B, threads=None):
        seen.update(B=B, threads=threads)
        raise ValueError("stop here")          # no benchmark in a unit test
    monkeypatch.setattr(runtime.bench, "bench_spec", fake)
    rc, _, err = run_cli(capsys, "bench", DIGITS, "--threads", str(cpu_cores() + 7), "--batch-size", "4")
    assert rc == 1 and seen == {"B": 4, "threads": cpu_cores()}, (seen, err)
    assert f"using {cpu_cores()}" in err and "netspec bench: stop here" in err, err


# ---------------------------------------------------------------- 4. predict inputs
def test_predict_refuses_nan_images(f, capsys):
    err = failure(capsys, "predict", DIGITS, "--checkpoint", f["ckpt"], f["x_nan"])
    assert str(f["x_nan"]) in err and "NaN or infinite" in err and "2 of 3" in err, err


def test_predict_empty_npz_says_no_images(f, capsys):
    err = failure(capsys, "predict", DIGITS, "--checkpoint", f["ckpt"], f["x_empty"])
    assert "no images" in err and str(f["x_empty"]) in err, err


def test_predict_npz_without_x(f, capsys):
    err = failure(capsys, "predict", DIGITS, "--checkpoint", f["ckpt"], f["x_nokey"])
    assert "'y'" in err and "(3,)" in err and "(N, C, H, W)" in err, err
    err = failure(capsys, "predict", DIGITS, "--checkpoint", f["ckpt"], f["x_multi"])
    assert "['images', 'labels']" in err and "'x'" in err, err


def test_predict_directory_and_other_bad_npz(f, capsys):
    err = failure(capsys, "predict", DIGITS, "--checkpoint", f["ckpt"], f["imgdir"])
    assert "is a directory" in err and "no such file" not in err, err
    err = failure(capsys, "predict", DIGITS, "--checkpoint", f["ckpt"], f["fake"])
    assert "is not an .npz file" in err, err
    err = failure(capsys, "predict", DIGITS, "--checkpoint", f["ckpt"], f["x_obj"])
    assert "Python objects" in err, err


def test_predict_good_input_still_works(f, capsys):
    rc, out, err = run_cli(capsys, "predict", DIGITS, "--checkpoint", f["ckpt"], f["x_ok"], "--top", "2")
    assert rc == 0, err
    assert len(out.strip().splitlines()) == 3 and out.count("(") == 6, out


# ---------------------------------------------------------------- 5. not an .npz
@pytest.mark.parametrize("cmd", ["predict", "export", "features", "viz"])
def test_spec_as_checkpoint_is_not_an_npz(f, capsys, cmd, tmp_path):
    argv = {"predict": ["predict", DIGITS, "--checkpoint", DIGITS, f["x_ok"]],
            "export": ["export", DIGITS, "--checkpoint", DIGITS, "--format", "npz", "-o", tmp_path / "o.npz"],
            "features": ["features", DIGITS, "--checkpoint", DIGITS, "--layer", "conv1", "-o", tmp_path / "o.npz"],
            "viz": ["viz", DIGITS, "--checkpoint", DIGITS, "--what", "filters", "-o", tmp_path / "o.png"]}[cmd]
    err = failure(capsys, *argv)
    assert f"{DIGITS} is not an .npz file" in err, err


def test_checkpoint_directory_and_import_weights_of_a_text_file(f, capsys, tmp_path):
    err = failure(capsys, "predict", DIGITS, "--checkpoint", f["outdir"], f["x_ok"])
    assert "is a directory" in err, err
    err = failure(capsys, "import-weights", DIGITS, DIGITS, "-o", tmp_path / "c.npz")
    assert "neither an .npz nor a torch state_dict" in err, err
    err = failure(capsys, "import-weights", DIGITS, f["fake"], "-o", tmp_path / "c.npz")
    assert "is not an .npz file" in err, err


@pytest.mark.skipif(not Path("/etc/passwd").is_file(), reason="needs a non-npz system file")
def test_data_that_is_not_an_npz(f, capsys, tmp_path):
    err = failure(capsys, "features", DIGITS, "--checkpoint", f["ckpt"], "--data", "/etc/passwd",
                  "--layer", "conv1", "-o", tmp_path / "o.npz")
    assert "/etc/passwd is not an .npz file" in err, err


# ---------------------------------------------------------------- 6. prefixes, Errno
def test_bench_errors_have_the_prefix(f, capsys, tmp_path):
    err = failure(capsys, "bench", tmp_path / "missing.yaml")
    assert err.startswith(f"netspec bench: cannot read '{tmp_path / 'missing.yaml'}': No such file"), err
    bad = tmp_path / "bad.yaml"
    bad.write_text("netspec: 1\nname: x\ninput: [1, 8, 8]\nlayers:\n  - conv: {out: 4, kernal: 3}\n")
    err = failure(capsys, "bench", bad)
    assert "bad.yaml:5:" in err and "kernal" in err, err


@pytest.mark.parametrize("cmd", ["gradcheck", "search", "compile"])
def test_missing_spec_says_cannot_read(capsys, cmd, tmp_path):
    argv = [cmd, tmp_path / "nope.yaml"] + (["--out", tmp_path / "s"] if cmd == "search" else [])
    err = failure(capsys, *argv)
    assert "cannot read" in err and "[Errno" not in err, err


def test_write_errors_say_cannot_write(f, capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = failure(capsys, "export", DIGITS, "--checkpoint", f["ckpt"], "--format", "npz",
                  "-o", blocker / "sub" / "w.npz")
    assert "cannot write" in err and "[Errno" not in err, err
    err = failure(capsys, "features", DIGITS, "--checkpoint", f["ckpt"], "--layer", "conv1",
                  "-o", f["outdir"])
    assert "cannot write" in err and "is a directory" in err and "[Errno" not in err, err
    err = failure(capsys, "import-weights", DIGITS, f["ckpt"], "-o", f["outdir"])
    assert "cannot write" in err and "[Errno" not in err, err
    err = failure(capsys, "compile", DIGITS, "--emit", blocker)
    assert "cannot write" in err and "not a directory" in err, err


def test_error_message_helper():
    from netspec.commands._common import error_message
    e = IsADirectoryError(21, "Is a directory", "ex")
    assert error_message("x", e) == "netspec x: cannot read 'ex': Is a directory"
    assert error_message("x", e, writes=["ex"]) == "netspec x: cannot write 'ex': Is a directory"
    e = OSError(13, "Permission denied", "/ro/.tmp123", None, "/ro/out.npz")
    assert error_message("x", e) == "netspec x: cannot write '/ro/out.npz': Permission denied"
    assert error_message("x", ValueError("bad")) == "netspec x: bad"
