"""runtime/bench.py's measurement method (the numbers themselves live in benchmarks/)."""
import time

from runtime.bench import _interleaved


def test_first_calls_after_another_candidate_do_not_count():
    # a candidate whose first call after the other one ran is slow (as ours is right after
    # a PyTorch window: its OpenMP workers still spin), steady calls fast
    state = {"last": None}

    def make(name, steady, cold):
        def fn():
            time.sleep(cold if state["last"] != name else steady)
            state["last"] = name
        return fn

    fns = {"a": make("a", 0.001, 0.02), "b": make("b", 0.002, 0.02)}
    res = _interleaved(fns, steps=3, windows=3, warmup=1, min_window_s=0.01)
    assert res["a"][0] < 0.004 and res["b"][0] < 0.005      # the 20 ms cold call is not timed
    assert res["a"][0] <= res["a"][1]


def test_windows_last_long_enough_for_tiny_steps():
    calls = []
    _interleaved({"x": lambda: calls.append(1)}, steps=3, windows=2, warmup=1, min_window_s=0.002)
    # the tiny function gets far more than 3 timed calls per window
    assert len(calls) > 2 * 3 + 10


def test_slow_candidates_get_a_smaller_plan_within_the_budget():
    """A multi-second step (a U-Net) must not keep `netspec bench` busy for many minutes:
    past the budget, one warm-up and one timed call per window and fewer rounds (>= 2)."""
    calls = {"a": 0, "b": 0}

    def make(k):
        def fn():
            calls[k] += 1
            time.sleep(0.02)
        return fn

    info = {}
    res = _interleaved({"a": make("a"), "b": make("b")}, steps=3, windows=7, warmup=2, min_window_s=0.0,
                       budget_s=0.2, info=info)
    assert info == {"windows": 2, "warmup": 1, "steps": 1}
    assert calls["a"] == 2 + 1 + 2 * (1 + 1)         # first warm-ups and timing, then 2 rounds
    assert 0.015 < res["a"][0] < 0.1
    info = {}
    _interleaved({"a": make("a")}, steps=3, windows=3, warmup=1, min_window_s=0.0, budget_s=100, info=info)
    assert info == {"windows": 3, "warmup": 1, "steps": 3}           # within budget: unchanged
