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
