"""The database's clock (outbox/clock.py): pure logic, on clocks moved by hand."""
from outbox.clock import RETRY_SECONDS, DatabaseClock


class Hand:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_two_machines_whose_clocks_disagree_by_an_hour_agree_on_the_database_time():
    server = Hand(5_000.0)
    ahead = DatabaseClock(server, monotonic=Hand(3_600.0 + 17.0), fallback=lambda: 1e12)
    behind = DatabaseClock(server, monotonic=Hand(42.0), fallback=lambda: 1e12)

    assert ahead() == behind() == 5_000.0


def test_the_time_runs_on_the_monotonic_clock_between_readings():
    server, local = Hand(5_000.0), Hand(100.0)
    clock = DatabaseClock(server, monotonic=local, resync=60)
    clock()
    server.now = 9_999_999.0
    local.now += 30

    assert clock() == 5_030.0, "no reading before resync"
    local.now += 31
    assert clock() == 9_999_999.0, "read again after resync"


def test_a_reading_that_fails_keeps_the_last_offset_and_is_tried_again_soon():
    local = Hand(100.0)
    readings = iter([5_000.0, ConnectionError("away"), 7_000.0])

    def server():
        reading = next(readings)
        if isinstance(reading, Exception):
            raise reading
        return reading

    clock = DatabaseClock(server, monotonic=local, resync=60)
    clock()
    local.now += 61
    assert clock() == 5_061.0
    local.now += RETRY_SECONDS
    assert clock() == 7_000.0


def test_before_any_reading_the_machine_clock_stands_in():
    def away():
        raise ConnectionError("away")

    assert DatabaseClock(away, monotonic=Hand(1.0), fallback=lambda: 123.0)() == 123.0
