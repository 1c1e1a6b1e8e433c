"""Learning-rate policies, value by value, against src/network.c: get_current_rate's formulas
written out."""
from __future__ import annotations

import math

import numpy as np
import pytest

from darkcfg.cfg import parse_cfg
from darkcfg.errors import CfgError, DarkcfgError
from darkcfg.netcfg import NET_OPTIONS, NET_QUIET
from darkcfg.options import read_options
from darkcfg.schedule import check_schedule, learning_rate


def net(text: str):
    sec = parse_cfg("[net]\nwidth=8\nheight=8\nchannels=1\n" + text, "t.cfg")[0]
    return read_options(sec, NET_OPTIONS, NET_QUIET), sec


def test_constant():
    opts, _ = net("learning_rate=0.01\n")
    for i in (0, 1, 500, 10**6):
        assert learning_rate(opts, i) == pytest.approx(0.01)


def test_burn_in_overrides_every_policy():
    for policy in ("constant", "steps", "poly", "exp"):
        opts, _ = net(f"learning_rate=0.1\nburn_in=100\npower=4\npolicy={policy}\n"
                      "steps=50\nscales=.1\nmax_batches=1000\ngamma=0.99\n")
        for i in (0, 1, 10, 50, 99):
            assert learning_rate(opts, i) == pytest.approx(0.1 * (i / 100) ** 4)
    opts, _ = net("learning_rate=0.1\nburn_in=100\npower=2\n")
    assert learning_rate(opts, 50) == pytest.approx(0.1 * 0.25)
    assert learning_rate(opts, 100) == pytest.approx(0.1)   # i == burn_in: policy again


def test_step():
    opts, _ = net("learning_rate=0.1\npolicy=step\nstep=30\nscale=0.5\n")
    expect = {0: 0.1, 29: 0.1, 30: 0.05, 59: 0.05, 60: 0.025, 95: 0.1 * 0.5 ** 3}
    for i, v in expect.items():
        assert learning_rate(opts, i) == pytest.approx(v)


def test_steps_cumulative_and_scan_stops_at_first_larger_step():
    opts, _ = net("learning_rate=1\npolicy=steps\nsteps=10,20,30\nscales=.1,.5,10\n")
    expect = {0: 1, 9: 1, 10: 0.1, 19: 0.1, 20: 0.05, 29: 0.05, 30: 0.5, 1000: 0.5}
    for i, v in expect.items():
        assert learning_rate(opts, i) == pytest.approx(v)
    # unsorted steps: the scan stops at the first step > i, so 5 is never reached at i=10
    opts, _ = net("learning_rate=1\npolicy=steps\nsteps=20,5\nscales=.1,.1\n")
    assert learning_rate(opts, 10) == pytest.approx(1.0)
    assert learning_rate(opts, 20) == pytest.approx(0.01)


def test_steps_extra_scales_are_ignored():
    opts, _ = net("learning_rate=1\npolicy=steps\nsteps=10\nscales=.1,.1\n")
    assert learning_rate(opts, 50) == pytest.approx(0.1)


def test_exp():
    opts, _ = net("learning_rate=0.2\npolicy=exp\ngamma=0.999\n")
    for i in (0, 1, 100, 2500):
        assert learning_rate(opts, i) == pytest.approx(0.2 * 0.999 ** i)


def test_poly():
    opts, _ = net("learning_rate=0.1\npolicy=poly\npower=4\nmax_batches=1000\n")
    for i in (0, 1, 250, 500, 999, 1000):
        assert learning_rate(opts, i) == pytest.approx(0.1 * (1 - i / 1000) ** 4)
    assert learning_rate(opts, 1200) == 0.0


def test_sigmoid():
    opts, _ = net("learning_rate=0.1\npolicy=sigmoid\ngamma=0.05\nstep=200\n")
    for i in (0, 100, 200, 300, 5000):
        assert learning_rate(opts, i) == pytest.approx(0.1 / (1 + math.exp(0.05 * (i - 200))))
    assert learning_rate(opts, 10**6) == 0.0   # exp would overflow; the limit is 0


def test_random_draws_from_the_given_generator():
    opts, _ = net("learning_rate=0.1\npolicy=random\npower=2\n")
    got = [learning_rate(opts, 5, np.random.default_rng(7)) for _ in range(2)]
    u = np.random.default_rng(7).uniform(0, 1)
    assert got == [pytest.approx(0.1 * u * u)] * 2
    rng = np.random.default_rng(1)
    seq = [learning_rate(opts, 5, rng) for _ in range(3)]
    assert len(set(seq)) == 3
    with pytest.raises(DarkcfgError, match="random generator"):
        learning_rate(opts, 5)


def sgdr_by_hand(i, lr0, lo, first, mult):
    start, length = 0, first
    while start + length < i:
        start, length = start + length, length * mult
    return lo + 0.5 * (lr0 - lo) * (1 + math.cos(math.pi * (i - start) / length))


def test_sgdr():
    opts, _ = net("learning_rate=0.1\npolicy=sgdr\nlearning_rate_min=0.001\nsgdr_cycle=10\n"
                  "sgdr_mult=2\n")
    # cycles: [0, 10], (10, 30], (30, 70] ...; the end of a cycle reaches the minimum
    assert learning_rate(opts, 0) == pytest.approx(0.1)
    assert learning_rate(opts, 5) == pytest.approx(0.001 + 0.5 * 0.099)
    assert learning_rate(opts, 10) == pytest.approx(0.001)
    assert learning_rate(opts, 11) == pytest.approx(
        0.001 + 0.5 * 0.099 * (1 + math.cos(math.pi * 1 / 20)))
    assert learning_rate(opts, 30) == pytest.approx(0.001)
    assert learning_rate(opts, 50) == pytest.approx(0.001 + 0.5 * 0.099 * (1 + math.cos(
        math.pi * 20 / 40)))
    for i in range(0, 200, 7):
        assert learning_rate(opts, i) == pytest.approx(sgdr_by_hand(i, 0.1, 0.001, 10, 2))


def test_sgdr_cycle_defaults_to_max_batches():
    opts, _ = net("learning_rate=0.1\npolicy=sgdr\nmax_batches=100\n")
    lo = 0.00001
    assert learning_rate(opts, 50) == pytest.approx(lo + 0.5 * (0.1 - lo))
    assert learning_rate(opts, 100) == pytest.approx(lo)


def test_steps_without_scales_is_a_cfg_error_with_the_line():
    opts, sec = net("policy=steps\nsteps=100,200\n")
    with pytest.raises(CfgError) as e:
        check_schedule(opts, sec)
    assert str(e.value).startswith("t.cfg:6: [net] (net): ")
    assert "needs 'scales'" in str(e.value)


def test_fewer_scales_than_steps():
    opts, sec = net("policy=steps\nsteps=100,200,300\nscales=.1,.1\n")
    with pytest.raises(CfgError) as e:
        learning_rate(opts, 0, section=sec)
    assert str(e.value).startswith("t.cfg:7:")
    assert "3 steps (100,200,300) but only 2 scales (0.1,0.1)" in str(e.value)
    # without the section the message is still clear
    with pytest.raises(DarkcfgError, match=r"^\[net\]: 3 steps"):
        learning_rate(opts, 0)


def test_steps_policy_without_steps():
    opts, sec = net("policy=steps\n")
    with pytest.raises(CfgError, match="t.cfg:5: .*needs 'steps'"):
        check_schedule(opts, sec)


def test_poly_without_max_batches():
    opts, sec = net("policy=poly\n")
    with pytest.raises(CfgError, match="max_batches > 0"):
        check_schedule(opts, sec)
