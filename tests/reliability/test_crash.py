"""Crash: SIGKILL the whole service under continuous signed load; every 200 still arrives.

gunicorn (two workers, each with its embedded dispatcher) and a separate `diy-wsgi dispatch`
share one outbox. A load generator in its own process plays the DMP (several audiences, adds
and removes of the same users interleaved) and journals every answer; the receiving platform
journals every call. The service is killed with SIGKILL, master, workers and dispatcher at
once, at random moments, and restarted; then the load stops and the outbox drains.

CI form: 2 kills in about 20 s of load. Long form: 20 kills over about 5 minutes, and 5
dispatcher kills in the middle of a platform call.
"""
import random
import time

import pytest

from reliability import pick
from reliability.checker import check_files, expected_members, load_requests
from reliability.harness import (
    Diy,
    Gunicorn,
    LoadGenerator,
    free_port,
    lease_holders,
    outbox_counts,
    time_to_take_over,
    wait_for_port,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.reliability
pytest.importorskip("gunicorn")

KILLS = pick(2, 20)
SECONDS_BETWEEN_KILLS = pick((4.0, 7.0), (8.0, 20.0))
MID_CALL_KILLS = pick(2, 5)


class Service:
    """gunicorn plus a separate dispatcher on one outbox, killed and restarted as one."""

    def __init__(self, tmp_path, config, processes, workers=2, dispatcher=True):
        self.tmp_path, self.config, self.processes = tmp_path, config, processes
        self.port = free_port()
        self.workers = workers
        self.dispatcher = dispatcher
        self.running = []
        self.start()

    def start(self):
        gunicorn = Gunicorn(self.tmp_path, self.config, self.port, workers=self.workers)
        self.running = [gunicorn]
        if self.dispatcher:
            self.running.append(Diy(self.tmp_path, "dispatch", "--config", self.config))
        self.processes.extend(self.running)
        wait_for_port(self.port, gunicorn)

    def kill(self):
        for process in self.running:
            process.kill()

    def logs(self):
        return [p for p in self.processes if hasattr(p, "output")]


def drain(tmp_path, load, receiver, service, timeout=90):
    """Wait until nothing is pending and every acknowledged mutation has arrived."""
    database = tmp_path / "outbox.sqlite3"
    reports = []

    def drained():
        if outbox_counts(database)["pending"]:
            return False
        reports.append(check_files(load.journal, receiver.journal))
        return reports[-1].lost == 0

    wait_until(drained, timeout=timeout, what="the outbox to drain and every 200 to arrive",
               processes=service.logs(), interval=0.5)
    return reports[-1]


def test_sigkill_of_gunicorn_and_dispatcher_under_load_loses_no_acknowledged_mutation(
        tmp_path, processes, receiver, figures):
    config = write_config(tmp_path, receiver.url)
    service = Service(tmp_path, config, processes)
    load = LoadGenerator(tmp_path, service.port, audiences=6, users=8, threads=3, rate=40, duration=0,
                         max_mutations=8, prefix="crash")
    processes.append(load)
    rand = random.Random(5)
    for _ in range(KILLS):
        time.sleep(rand.uniform(*SECONDS_BETWEEN_KILLS))
        assert load.running, load.output()
        service.kill()
        time.sleep(rand.uniform(0.0, 1.0))
        service.start()
    time.sleep(2.0)
    summary = load.finish()
    report = drain(tmp_path, load, receiver, service)

    figures.add(requests_sent=report.requests, acknowledged=report.acknowledged, kills=KILLS,
                mutations_acknowledged=report.mutations_acknowledged, mutations_lost=report.lost,
                duplicate_events=report.duplicate_events, duplicate_mutations=report.duplicate_mutations,
                order_violations=report.order_violations)
    assert report.ok, report.explain()
    assert summary["given_up"] == 0 and report.unknown == 0, summary
    state = receiver.state()
    figures.add(calls_cut_short_by_kills=state["truncated"])
    assert state["bad_requests"] == 0
    expected = expected_members(load_requests(load.journal))
    assert {a: set(users) for a, users in state["members"].items() if users} == \
        {a: users for a, users in expected.items() if users}
    assert outbox_counts(tmp_path / "outbox.sqlite3")["dead"] == 0


def test_a_dispatcher_killed_in_the_middle_of_a_platform_call_loses_nothing_and_is_taken_over_in_seconds(
        tmp_path, processes, receiver, figures):
    """The lease is 5 minutes: only the heartbeat takeover (takeover_after, 5 s) frees the killed
    dispatcher's audience for its successor, started at once as systemd's Restart= would."""
    config = write_config(tmp_path, receiver.url, dispatcher={"embedded": "no", "lease": "5m"})
    database = tmp_path / "outbox.sqlite3"
    service = Service(tmp_path, config, processes, dispatcher=False)
    load = LoadGenerator(tmp_path, service.port, audiences=4, users=6, threads=2, rate=20, duration=0,
                         max_mutations=5, prefix="midcall")
    processes.append(load)
    dispatcher = Diy(tmp_path, "dispatch", "--config", config)
    processes.append(dispatcher)
    takeovers = []
    for _ in range(MID_CALL_KILLS):
        receiver.fault("hold")
        wait_until(lambda: receiver.state()["held"] >= 1 and lease_holders(database), timeout=30,
                   what="a platform call in flight", processes=[dispatcher, *service.running])
        holders = set(lease_holders(database).values())
        assert dispatcher.kill() == -9
        killed_at = time.monotonic()
        receiver.fault()  # the held call completes at the platform: the sender never hears of it
        dispatcher = Diy(tmp_path, "dispatch", "--config", config)
        processes.append(dispatcher)
        takeovers.append(time_to_take_over(database, holders, since=killed_at))
    time.sleep(1.0)
    load.finish()
    service.processes = processes
    report = drain(tmp_path, load, receiver, service)

    figures.add(requests_sent=report.requests, acknowledged=report.acknowledged, dispatcher_kills=MID_CALL_KILLS,
                mutations_acknowledged=report.mutations_acknowledged, mutations_lost=report.lost,
                duplicate_events=report.duplicate_events, duplicate_mutations=report.duplicate_mutations,
                order_violations=report.order_violations)
    figures.most(sqlite_takeover_s_max=max(takeovers))
    figures.note(f"SQLite takeover after a dispatcher's SIGKILL (lease 5 min, takeover_after 5 s): "
                 f"{', '.join(f'{t:.1f}' for t in takeovers)} s")
    assert report.ok, report.explain()
    assert receiver.state()["bad_requests"] == 0
    assert max(takeovers) < 60, "taken over by the heartbeat, not after the 5-minute lease"
