"""The bench's search for a sustainable rate (bench/phases.py RateSearch): pure logic, so its
rules are checked here rather than trusted to an 18-minute run."""
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def RateSearch():
    sys.path.insert(0, str(BENCH))
    try:
        from phases import RateSearch
    finally:
        sys.path.remove(str(BENCH))
    return RateSearch


def step(held):
    """An open-loop run as measured.py reports it, with a request p99 that holds or breaks."""
    return {"latency_ms": {"p99": 20.0 if held else 400.0}, "count": 100, "statuses": {"200": 100},
            "send_lag_ms": {"p99": 1.0}, "cpu": {"server_cores": 0.9, "foreign_cores": 0.0}}


def rates_run(search, outcomes):
    rates = []
    for held in outcomes:
        rates.append(round(search.rate, 2))
        search.record(step(held))
    return rates


def test_the_search_grows_until_a_failure_is_confirmed_then_bisects(RateSearch):
    search = RateSearch(100)
    assert rates_run(search, [True, True, False, False, True]) == [70, 87.5, 109.38, 109.38, 98.44]
    assert (search.low, search.high) == (98.4375, 109.375)
    assert [s["verdict"] for s in search.steps] == ["ok", "ok", "request p99", "request p99", "ok"]
    assert ["again" in s for s in search.steps] == [False, False, True, False, False]


def test_a_failure_that_does_not_repeat_is_not_believed(RateSearch):
    search = RateSearch(100)
    assert rates_run(search, [True, False, True, True]) == [70, 87.5, 87.5, 109.38]
    assert (search.low, search.high) == (109.375, None)


def test_each_new_rate_gets_its_own_second_chance(RateSearch):
    search = RateSearch(100)
    rates_run(search, [False, True, False, False])
    assert [round(s["rate"], 2) for s in search.steps] == [70, 70, 87.5, 87.5]
    assert (search.low, search.high) == (70, 87.5)
