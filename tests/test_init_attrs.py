"""`weight_init` / `bias_init` (netspec/layers/initattrs.py -> compiler/init.py, and the
torch twin): the ParamSpec init strings, the statistics of the arrays drawn from them, and
located errors."""
from __future__ import annotations

import numpy as np
import pytest

from netspec import SpecError, check


def test_weight_and_bias_init_attrs():
    """weight_init / bias_init on layers with weights: the ParamSpec init strings, the arrays
    the compiler draws from them (std of a big tensor within 5 %), and located errors."""
    import compiler
    from netspec import load
    text = """netspec: 1
name: gen
input: [64, 4, 4]
layers:
  - conv_transpose: {name: up, out: 64, kernel: 4, bias: false, weight_init: {normal: 0.02}}
  - conv: {name: c, out: 64, kernel: 3, pad: 1, weight_init: he, bias_init: 0}
  - conv: {name: u, out: 64, kernel: 3, pad: 1, weight_init: {uniform: 0.5}, weight_norm: true}
  - flatten: {}
  - linear: {name: fc, out: 200, weight_init: xavier_normal, bias_init: 0.1}
"""
    rep = check(load(text))
    inits = {full: ps.init for l in rep.layers for full, ps in l.param_specs}
    assert inits["up.weight"] == "normal:0.02" and inits["c.weight"] == "kaiming_normal"
    assert inits["c.bias"] == "const:0.0" and inits["fc.bias"] == "const:0.1"
    assert inits["u.weight_v"] == "uniform:0.5" and inits["u.weight_g"] == "norm_of:weight_v"
    assert inits["u.bias"] == "uniform_fan_in"                   # untouched without bias_init
    net = compiler.compile(load(text), batch_size=1, train=False, seed=0)
    p = net.params
    assert abs(p["up.weight"].std() / 0.02 - 1) < 0.05
    assert abs(p["c.weight"].std() / np.sqrt(2 / (64 * 9)) - 1) < 0.05
    assert np.all(p["c.bias"] == 0) and np.all(p["fc.bias"] == np.float32(0.1))
    assert abs(p["u.weight_v"].std() / (0.5 / np.sqrt(3)) - 1) < 0.05
    fan_in, fan_out = 64 * 7 * 7, 200                           # up: 4x4 -> 7x7
    assert abs(p["fc.weight"].std() / np.sqrt(2 / (fan_in + fan_out)) - 1) < 0.05
    with pytest.raises(SpecError, match="bias_init is set but the layer has no bias"):
        check(load(text.replace("bias: false, weight_init: {normal: 0.02}",
                                "bias: false, bias_init: 0.5")))
    for bad, msg in (("hee", "unknown weight_init 'hee'"), ("{normal: -1}", "needs a finite number > 0"),
                     ("{normal: 1, uniform: 2}", "unknown weight_init")):
        with pytest.raises(SpecError, match=msg) as e:
            check(load(text.replace("weight_init: he,", f"weight_init: {bad},")))
        assert e.value.line == 6


def test_xavier_fans_of_conv_and_locally_connected():
    """xavier_* uses fan_in + fan_out of one output position: torch's rule for a conv
    (O*kh*kw out), and the same per-position fans for locally_connected's 6-D weight
    (OH, OW, out, in, kh, kw), not its whole shape (which made the std 7x too small)."""
    import compiler
    from netspec import load
    text = """netspec: 1
name: x
input: [16, 6, 6]
layers:
  - conv: {name: c, out: 64, kernel: 3, pad: 1, weight_init: xavier_uniform}
  - locally_connected: {name: lc, out: 32, kernel: 3, weight_init: xavier_normal}
"""
    net = compiler.compile(load(text), batch_size=1, train=False, seed=0)
    p = net.params
    assert abs(p["c.weight"].std() / np.sqrt(2 / (16 * 9 + 64 * 9)) - 1) < 0.05
    assert abs(p["lc.weight"].std() / np.sqrt(2 / (64 * 9 + 32 * 9)) - 1) < 0.05


@pytest.mark.parametrize("he,fan", [("{a: 0.2}", 16 * 9), ("{mode: fan_out}", 64 * 9),
                                    ("{a: 0.25, mode: fan_out, distribution: uniform}", 64 * 9)])
def test_he_init_with_a_slope_and_fan_out(he, fan):
    """weight_init {he: {a, mode, distribution}}: torch's kaiming_*_ statistics (gain
    √(2/(1+a²)) over fan_in or fan_out), in the compiled net and in the torch twin."""
    import compiler
    from netspec import load
    a = float(he.split("a: ")[1].split(",")[0].rstrip("}")) if "a: " in he else 0.0
    want = np.sqrt(2 / (1 + a * a)) / np.sqrt(fan)
    text = f"netspec: 1\nname: h\ninput: [16, 6, 6]\nlayers:\n  - conv: {{name: c, out: 64, kernel: 3, weight_init: {{he: {he}}}}}\n"
    net = compiler.compile(load(text), batch_size=1, train=False, seed=0)
    assert abs(net.params["c.weight"].std() / want - 1) < 0.05
    torch = pytest.importorskip("torch")
    from runtime.torch_twin import build_torch_module
    torch.manual_seed(0)
    m = build_torch_module(check(load(text)))
    assert abs(float(m.state_dict()["c.weight"].std()) / want - 1) < 0.05
    with pytest.raises(SpecError, match="mode must be fan_in or fan_out"):
        check(load(text.replace(he, "{mode: fan_avg}")))
