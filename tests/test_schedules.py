"""runtime.schedules against the formulas at specific epochs."""
from __future__ import annotations

import json
import math

import pytest

from runtime.schedules import make_schedule

LR = 0.1


def S(cfg, epochs=30, spe=10, warmup=0, **kw):
    return make_schedule(cfg, LR, epochs, spe, warmup, **kw)


def test_constant_and_defaults():
    for cfg in (None, {}, "constant", {"constant": {}}):
        s = S(cfg)
        assert s.lr(0) == s.lr(17.3) == LR and s.state() == {}


def test_step_multistep():
    s = S({"step": {"step_size": 10, "gamma": 0.5}})
    assert s.lr(0) == LR and s.lr(9.99) == LR
    assert s.lr(10) == pytest.approx(0.05) and s.lr(25) == pytest.approx(0.025)
    m = S({"multistep": {"milestones": [60, 30], "gamma": 0.1}}, epochs=90)
    assert [m.lr(e) for e in (0, 29.9, 30, 59, 60, 89)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_exponential_inverse_time():
    s = S({"exponential": {"gamma": 0.9}})
    assert s.lr(3) == pytest.approx(LR * 0.9 ** 3)
    assert s.lr(2.5) == pytest.approx(LR * 0.9 ** 2.5)                 # per step: smooth
    assert S({"exponential": {"gamma": 0.9}}, per_step=False).lr(2.5) == pytest.approx(
        LR * 0.81)                                                        # per epoch: floored
    s = S({"inverse_time": {"decay": 0.5}})
    assert s.lr(4) == pytest.approx(LR / 3) and s.lr(0) == LR


def test_cosine():
    s = S({"cosine": {"min_lr": 0.001}}, epochs=20)
    assert s.lr(0) == pytest.approx(LR)
    assert s.lr(10) == pytest.approx(0.001 + (LR - 0.001) / 2)
    assert s.lr(5) == pytest.approx(0.001 + (LR - 0.001) * (1 + math.cos(math.pi / 4)) / 2)
    assert s.lr(20) == pytest.approx(0.001) and s.lr(25) == pytest.approx(0.001)
    assert s.lr_at_step(50) == s.lr(5)


def test_sgdr_cycles():
    s = S({"sgdr": {"t0": 2, "t_mult": 2, "min_lr": 0.0}}, epochs=14)
    assert s.cycle_ends() == [2, 6, 14]
    assert s.is_cycle_end(6) and not s.is_cycle_end(5)
    assert s.lr(0) == LR and s.lr(2) == LR and s.lr(6) == LR              # restarts
    assert s.lr(1) == pytest.approx(LR / 2)                                # mid cycle 0 (len 2)
    assert s.lr(4) == pytest.approx(LR / 2)                                # mid cycle 1 (len 4)
    assert s.lr(7) == pytest.approx(LR * (1 + math.cos(math.pi / 8)) / 2)  # cycle 2 (len 8)
    assert s.lr(5.999) < 1e-5
    s1 = S({"sgdr": {"t0": 5, "t_mult": 1}}, epochs=12)
    assert s1.cycle_ends() == [5, 10] and s1.lr(7.5) == pytest.approx(LR / 2)
    assert S({"cosine": {}}, epochs=12).cycle_ends() == [12]
    with pytest.raises(ValueError):
        S({"sgdr": {"t0": 5, "t_mult": 0.5}})


def test_warmup_combined():
    s = S({"cosine": {}}, epochs=20, spe=10, warmup=2)
    assert s.lr_at_step(0) == pytest.approx(s.base(0) * 1 / 20)          # ~0 at the start
    assert s.lr(1) == pytest.approx(s.base(1) * 11 / 20)
    assert s.lr_at_step(19) == pytest.approx(s.base(1.9))                 # full at t = W
    assert s.lr(10) == pytest.approx(LR / 2)                              # clock not shifted
    # warmup inside the schedule mapping (the DESIGN example) overrides the argument
    s2 = S({"step": {"step_size": 5, "gamma": 0.1, "warmup_epochs": 1}}, spe=4)
    assert s2.warmup_epochs == 1 and s2.lr(0) == pytest.approx(LR / 4)
    assert s2.lr(0.5) == pytest.approx(LR * 0.75) and s2.lr(6) == pytest.approx(0.01)
    steps = [s.lr_at_step(i) for i in range(20)]
    assert all(a < b for a, b in zip(steps, steps[1:]))                  # monotone ramp


def test_plateau_and_state_resume():
    s = S({"plateau": {"factor": 0.5, "patience": 2, "metric": "val_loss"}})
    assert s.metric == "val_loss" and s.p["mode"] == "min"
    vals = [1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.9, 0.9, 0.9]
    reduced = [s.observe(v) for v in vals]
    # bad epochs after 0.9: 3 > patience 2 -> reduce at index 4; after 0.8: again at index 8
    assert reduced == [False, False, False, False, True, False, False, False, True]
    assert s.lr(5) == pytest.approx(LR * 0.25)
    st = json.loads(json.dumps(s.state()))
    t = S({"plateau": {"factor": 0.5, "patience": 2, "metric": "val_loss"}})
    t.load_state(st)
    assert t.lr(0) == s.lr(0) and t.state() == s.state()
    acc = S({"plateau": {"metric": "val_accuracy", "patience": 0, "factor": 0.1}})
    assert acc.p["mode"] == "max"
    assert [acc.observe(v) for v in (0.5, 0.6, 0.6)] == [False, False, True]
    assert acc.lr(0) == pytest.approx(0.01)
    # a min_lr above the initial rate never raises it (torch's ReduceLROnPlateau only lowers)
    hi = S({"plateau": {"metric": "val_loss", "patience": 0, "factor": 0.5, "min_lr": 10 * LR}})
    assert [hi.observe(v) for v in (1.0, 1.0, 1.0)] == [False, True, True]
    assert hi.lr(0) == pytest.approx(LR)


def test_errors():
    with pytest.raises(ValueError, match="unknown schedule"):
        S({"linear": {}})
    with pytest.raises(ValueError, match="unknown key"):
        S({"cosine": {"eta_min": 0}})
    with pytest.raises(ValueError):
        S({"plateau": {"mode": "up"}})
