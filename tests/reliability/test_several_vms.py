"""Several VMs on PostgreSQL: two app instances on one database, one killed for good, the database
restarted, under signed load; every 200 still arrives, in order.

Each instance is its own gunicorn (two workers, each with its embedded dispatcher) with a host
name of its own (a UTS namespace, standing in for another VM), on one PostgreSQL server the tests
start themselves. The load generator plays the DMP behind a load balancer: each request goes to
the next instance, and a request that gets no answer is sent to the other one. The lease is 5
minutes, so only the heartbeat takeover (`takeover_after`, 5 s) hands the killed instance's
audiences to the survivor in time.

1. Load on both; the platform holds its calls until the instance to kill holds a lease.
2. That instance dies: SIGKILL (master and workers), or, standing in for a VM that loses power
   or its network, SIGSTOP (it stops answering without closing a connection; a transaction it
   had open stays open on the server until `idle_in_transaction_session_timeout`), killed later.
   The platform lets calls through.
3. The survivor takes the dead instance's audiences over: the seconds this took are the
   takeover figure.
4. PostgreSQL is restarted mid-load: the DMP gets 503 meanwhile (never 500, never a 200 for
   what was not stored), and the survivor reconnects by itself.
5. The load stops, the outbox drains: 0 acknowledged mutations lost, order per user kept.

Each dispatcher has 2 delivery threads, so one instance holds at most 4 of the 8 audiences while
calls are held and the other always gets some. The platform's calls time out after 60 s here,
longer than any hold: the receiver applies a
held call when the hold ends, and a call given up for a timeout (and sent again, with later
mutations of its audience) but applied afterwards would arrive after newer ones. That is what
any platform that finishes a call its client gave up on does (see "How delivery works").

CI form: two rounds (a kill, a freeze), about 30 s of load. Long form: six rounds and six restarts.
"""
import os
import shutil
import time

import pytest

from reliability import pick
from reliability.checker import check_files, expected_members, load_requests
from reliability.harness import (
    Gunicorn,
    LoadGenerator,
    free_port,
    lease_holders,
    outbox_counts,
    query,
    time_to_take_over,
    wait_for_port,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.reliability
pytest.importorskip("gunicorn")

ROUNDS = pick(2, 6)
DEATHS = ("SIGKILL", "SIGSTOP")
CONNECTIONS_PER_INSTANCE = 2 * (4 + 4 + 3)
"""The budget deploy/README.md gives: per worker, 4 request threads, 4 delivery threads and the
dispatcher's 3 of its own; two workers."""
LOAD_SECONDS_BEFORE_KILL = pick(4.0, 15.0)


def own_host_names():
    return os.geteuid() == 0 and shutil.which("unshare") is not None


class Instance:
    """One app VM: gunicorn with two workers and their embedded dispatchers."""

    def __init__(self, tmp_path, config, processes, name, port=None):
        self.name, self.port = name, port or free_port()
        self.hostname = name if own_host_names() else None
        self.gunicorn = Gunicorn(tmp_path, config, self.port, workers=2, name=name, hostname=self.hostname)
        processes.append(self.gunicorn)
        wait_for_port(self.port, self.gunicorn, timeout=30)

    def owns(self, owner):
        """Whether a dispatcher's owner name is one of this instance's processes."""
        if self.hostname:
            return owner.startswith(f"{self.hostname}:")
        return int(owner.split(":")[1]) in self.pids()

    def pids(self):
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        if int(stat.read().rsplit(")", 1)[1].split()[3]) == self.gunicorn.pid:
                            found.add(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
        return found


def test_two_instances_on_postgresql_survive_losing_one_and_a_database_restart(
        tmp_path, processes, receiver, figures, postgres_server):
    url = postgres_server.create_database()
    config = write_config(tmp_path, receiver.url, database=url, dispatcher={"lease": "5m", "takeover_after": "5s", "threads": "2"},
                          integration={"target.timeout": "60"})
    instances = [Instance(tmp_path, config, processes, name) for name in ("vm-a", "vm-b")]
    load = LoadGenerator(tmp_path, [i.port for i in instances], audiences=8, users=8, threads=4, rate=40,
                         duration=0, max_mutations=8, prefix="vms")
    processes.append(load)
    takeovers, restarts, connections = [], 0, []
    for round_number in range(ROUNDS):
        time.sleep(LOAD_SECONDS_BEFORE_KILL)
        connections.append(query(url, "SELECT COUNT(*) FROM pg_stat_activity"
                                      " WHERE datname = current_database() AND application_name = 'diy-wsgi'")[0][0])
        victim, survivor = instances
        receiver.fault("hold")
        wait_until(lambda: any(victim.owns(o) for o in lease_holders(url).values()), timeout=60,
                   what=f"{victim.name} to hold a lease", processes=[victim.gunicorn])
        death = DEATHS[round_number % len(DEATHS)]
        if death == "SIGKILL":
            assert victim.gunicorn.kill() == -9
        else:
            victim.gunicorn.freeze()
        killed_at = time.monotonic()
        held = {o for o in lease_holders(url).values() if victim.owns(o)}
        receiver.fault()
        takeovers.append((death, time_to_take_over(url, held, since=killed_at) if held else None))
        if death == "SIGSTOP":
            victim.gunicorn.kill()
        assert load.running, load.output()
        time.sleep(2.0)
        postgres_server.restart()
        restarts += 1
        replacement = Instance(tmp_path, config, processes, f"vm-{chr(ord('c') + round_number)}", port=victim.port)
        instances = [survivor, replacement]  # behind the balancer at the dead VM's address
    time.sleep(3.0)
    summary = load.finish()
    wait_until(lambda: outbox_counts(url)["pending"] == 0, timeout=120, what="the outbox to drain",
               processes=[i.gunicorn for i in instances])
    wait_until(lambda: check_files(load.journal, receiver.journal).lost == 0, timeout=60,
               what="every acknowledged mutation to arrive", processes=[i.gunicorn for i in instances])
    report = check_files(load.journal, receiver.journal)

    figures.add(requests_sent=report.requests, acknowledged=report.acknowledged, instances_lost=ROUNDS,
                database_restarts=restarts, mutations_acknowledged=report.mutations_acknowledged,
                mutations_lost=report.lost, duplicate_events=report.duplicate_events,
                duplicate_mutations=report.duplicate_mutations, order_violations=report.order_violations,
                answered_503=summary["unavailable_503"], answered_500=summary["other_5xx"])
    seconds = [t for _, t in takeovers if t is not None]
    assert seconds, f"no instance died holding a lease, so no takeover was measured: {takeovers}"
    figures.most(postgresql_takeover_s_max=max(seconds), connections_max=max(connections))
    figures.note("PostgreSQL takeover after an instance died (lease 5 min, takeover_after 5 s): " + ", ".join(
        f"{t:.1f} s ({death})" if t is not None else f"no lease held at its death ({death})" for death, t in takeovers))
    assert report.ok, report.explain()
    assert set(summary["statuses"]) <= {"200", "503", "None"}, summary["statuses"]
    assert summary["given_up"] == 0 and report.unknown == 0, summary
    assert receiver.state()["bad_requests"] == 0
    expected = expected_members(load_requests(load.journal))
    members = receiver.state()["members"]
    assert {a: set(u) for a, u in members.items() if u} == {a: u for a, u in expected.items() if u}
    assert outbox_counts(url)["dead"] == 0
    assert max(seconds) < 60, "taken over by the heartbeat, not after the 5-minute lease"
    assert max(connections) <= CONNECTIONS_PER_INSTANCE * len(instances), connections
