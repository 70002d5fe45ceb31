"""runtime/gradcheck.py and ``netspec gradcheck``: the numerical gradient check of a spec.

LeNet-5 (float64, batch 2) passes with every parameter tensor checked; fake nets with a
known wrong gradient and with a kink show that the verdict and the kink detection work.
"""
from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from runtime.gradcheck import GradcheckResult, ParamCheck, grade, gradcheck, rel_error

SPECS = Path(__file__).resolve().parent.parent / "specs"


from clihelp import run_command as _cli  # noqa: E402


def test_lenet5_passes(capsys):
    assert _cli("gradcheck", [str(SPECS / "lenet5.yaml"), "--json", "--coords", "4"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["verdict"] == "pass" and r["max_rel_error"] < 1e-4
    names = [p["name"] for p in r["params"]]
    assert names == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                     "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    assert all(p["checked"] + p["kinks"] == 4 and p["checked"] >= 2 for p in r["params"])
    assert 2.0 < r["loss"] < 2.7        # ~ln(10) at initialisation


class FakeNet:
    """f(w) = sum(g(w)) with an analytic gradient we control (numpy, float64)."""

    def __init__(self, f, grad, w0):
        self.params = {"w": np.array(w0, np.float64)}
        self.grads = {"w": np.zeros_like(self.params["w"])}
        self.param_info = {"w": SimpleNamespace(frozen=False)}
        self.report = SimpleNamespace(name="fake")
        self.batch_size, self.dtype = 1, np.dtype(np.float64)
        self.input_shape, self.output_shape = (1,), (1,)
        self.loss_cfg = {"mse": {}}
        self.rng = None
        self.f, self.grad = f, grad

    def compute_grads(self, x, target):
        w = self.params["w"]
        self.grads["w"][...] = self.grad(w)
        return self.f(w)


def test_wrong_gradient_fails():
    net = FakeNet(lambda w: float(np.sum(np.sin(w))), lambda w: np.cos(w) * 1.05, np.linspace(-1, 1, 8))
    r = gradcheck(net=net, coords=8)
    assert r.verdict == "fail" and 0.04 < r.max_rel_error < 0.06
    assert "WRONG" in r.table() and "FAIL" in r.table()
    good = FakeNet(lambda w: float(np.sum(np.sin(w))), np.cos, np.linspace(-1, 1, 8))
    assert gradcheck(net=good, coords=8).max_rel_error < 1e-8


def test_kinks_are_detected_and_skipped():
    # |w|: at 3e-6 the +-1e-5 probes straddle the kink but the h/100 retry does not (checked);
    # at 4e-9 both steps straddle it (skipped as a kink)
    w0 = np.array([3e-6, 0.5, -0.7, 4e-9])
    net = FakeNet(lambda w: float(np.sum(np.abs(w))), np.sign, w0)
    r = gradcheck(net=net, coords=4)
    p = r.params[0]
    assert p.kinks == 1 and p.checked == 3 and r.verdict == "pass"


def test_grades_and_rel_error():
    assert rel_error(1.0, 1.0 + 1e-9) < 1e-8 and rel_error(0.0, 1e-13) == 0.0
    assert [grade(e) for e in (1e-9, 1e-5, 1e-3, 0.5)] == ["excellent", "ok",
                                                          "uncomfortable", "WRONG"]
    r = GradcheckResult("n", 1.0, 2, 1e-5, [ParamCheck("a", (2,), 2, 0, 3e-3, 1e-3)])
    assert r.verdict == "warn" and r.to_json()["params"][0]["grade"] == "uncomfortable"


def test_invalid_spec_is_one_message(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("netspec: 1\nname: x\ninput: [1, 4, 4]\nlayers:\n  - cnov: {out: 2}\n")
    assert _cli("gradcheck", [str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("netspec gradcheck:") and "Traceback" not in err


def test_kinks_on_both_sides_are_caught():
    """Kinks at w0 +- 3e-6 bend f the same way on both sides: the one-sided differences at
    h = 1e-5 agree (both 0.7 too high) -- what ResNet-20's many ReLUs do.  The h vs h/10
    comparison catches it and the check one decade lower is exact."""
    w0 = 0.3

    def f(w):
        return float(np.sum(0.5 * w + np.maximum(w - (w0 + 3e-6), 0) - np.maximum((w0 - 3e-6) - w, 0)))

    net = FakeNet(f, lambda w: np.full_like(w, 0.5), [w0])
    r = gradcheck(net=net, coords=1)
    assert r.params[0].checked == 1 and r.max_rel_error < 1e-6 and r.verdict == "pass"


NOTHING_TO_TRAIN = """
netspec: 1
name: frozen
input: [1, 8, 8]
layers:
  - conv: {out: 10, kernel: 3, freeze: true}
  - global_avgpool: {}
  - flatten: {}
"""


def test_nothing_to_train(tmp_path, capsys, monkeypatch):
    """A net whose every parameter is frozen (or one with none) still gives its loss; training
    and the gradient check refuse it with one sentence, not an internal error."""
    import compiler
    from runtime.train import train
    for text in (NOTHING_TO_TRAIN, NOTHING_TO_TRAIN.replace("  - conv: {out: 10, kernel: 3, freeze: true}\n", "")):
        net = compiler.compile(text, batch_size=2, seed=0)
        x = np.random.default_rng(0).standard_normal((2, *net.input_shape)).astype(np.float32)
        loss, grads = net.loss_and_grads(x, np.array([0, 0]))
        assert np.isfinite(loss) and all(not g.any() for g in grads.values())
        assert net.step(x, np.array([0, 0])) == pytest.approx(loss)
    spec = tmp_path / "frozen.yaml"
    spec.write_text(NOTHING_TO_TRAIN)
    def no_compile(*a, **k):
        raise AssertionError("compiled a net with nothing to train")
    with monkeypatch.context() as m:          # refused before the compile it would waste
        m.setattr(compiler, "compile", no_compile)
        with pytest.raises(ValueError, match="nothing to train: every parameter is frozen"):
            train(str(spec), tmp_path / "run", epochs=1, progress=False)
    assert _cli("gradcheck", [str(spec)]) == 1
    err = capsys.readouterr().err
    assert "nothing to check" in err and "Traceback" not in err
