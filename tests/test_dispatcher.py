"""The dispatcher against a real webhook receiver (the sandbox's, in process), clock moved by hand."""
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from diy.service import Service
from outbox.dispatcher import call_splitting, coalesce
from outbox.store import ReceivedMutation
from targets.base import Mutation
from targets.errors import PayloadTooLarge
from tests.sandboxed import hold_calls
from tests.support import make_config


def service_builder(tmp_path, clock, database):
    services = []

    def build(receiver, sections=None, diy=None, **overrides):
        config = make_config(tmp_path, receiver.url, sections=sections, diy={"database": database, **(diy or {})},
                             **overrides)
        service = Service(config, clock=clock)
        service.dispatcher.rand = lambda: 0.0
        services.append(service)
        return service

    return build, services


@pytest.fixture
def service_for(tmp_path, clock, database_location):
    """service_for(receiver, ...): a Service on each backend, on the test's clock."""
    build, services = service_builder(tmp_path, clock, database_location)
    yield build
    for service in services:
        service.close()


@pytest.fixture
def sqlite_service_for(tmp_path, clock):
    """For what only SQLite has: another process's file lock, WAL checkpoints."""
    build, services = service_builder(tmp_path, clock, tmp_path / "outbox.sqlite3")
    yield build
    for service in services:
        service.close()


def enqueue(service, op, audience, *users, clock, pass_through=True):
    received = [ReceivedMutation(audience, user, uuid=f"uuid-{user}", customer=123, platform=113) for user in users]
    service.outbox.enqueue("demo", op, received, pass_through=pass_through, now=clock())


def drain(service, clock, rounds=50, step=1.0):
    """Run the dispatcher round by round, moving the clock past any backoff, until idle."""
    for _ in range(rounds):
        if not service.dispatcher.run_once():
            clock.advance(step)
            if not service.dispatcher.run_once():
                return


def test_a_batch_reaches_the_receiver_and_is_marked_delivered(receiver_for, service_for, clock):
    receiver = receiver_for()
    service = service_for(receiver)
    enqueue(service, "add", "4711", "u1", "u2", clock=clock)

    drain(service, clock)

    assert receiver.members == {"4711": {"u1", "u2"}}
    assert service.outbox.counts() == {"pending": 0, "done": 2, "dead": 0}


def test_add_remove_add_of_one_user_ends_a_member(receiver_for, service_for, clock):
    receiver = receiver_for()
    service = service_for(receiver)
    for op in ("add", "remove", "add"):
        enqueue(service, op, "4711", "u1", clock=clock)
        service.dispatcher.run_once()

    drain(service, clock)

    assert receiver.members == {"4711": {"u1"}}
    assert [e["type"] for e in receiver.events] == ["audience.members_added", "audience.members_removed", "audience.members_added"]


def test_several_mutations_of_one_user_in_a_batch_are_coalesced_to_the_last(receiver_for, service_for, clock):
    receiver = receiver_for()
    service = service_for(receiver)
    for op in ("add", "remove", "add", "remove"):
        enqueue(service, op, "4711", "u1", clock=clock)

    drain(service, clock)

    assert [e["type"] for e in receiver.events] == ["audience.members_removed"]
    assert service.outbox.counts()["done"] == 4


def test_a_transient_failure_is_retried_after_a_backoff_with_the_same_webhook_id(receiver_for, service_for, clock):
    receiver = receiver_for(script=[503, 503])
    service = service_for(receiver)
    enqueue(service, "add", "4711", "u1", clock=clock)

    service.dispatcher.run_once()
    assert service.dispatcher.run_once() == 0, "backing off: not tried again at once"
    drain(service, clock)

    assert receiver.calls == 3
    assert receiver.members == {"4711": {"u1"}}
    assert len(set(receiver.ids)) == 1


def test_retry_after_is_honoured(receiver_for, service_for, clock):
    receiver = receiver_for(script=[429], retry_after=30)
    service = service_for(receiver, dispatcher={"backoff_cap": "1m"})
    enqueue(service, "add", "4711", "u1", clock=clock)
    service.dispatcher.run_once()

    clock.advance(29)
    assert service.dispatcher.run_once() == 0
    clock.advance(1)
    assert service.dispatcher.run_once() == 1
    assert receiver.members == {"4711": {"u1"}}


def test_a_permanent_refusal_is_dead_lettered_with_the_receivers_reason(receiver_for, service_for, clock):
    receiver = receiver_for(script=[400])
    service = service_for(receiver)
    enqueue(service, "add", "4711", "u1", clock=clock)

    drain(service, clock)

    assert receiver.calls == 1
    (row,) = service.outbox.dead_letters()
    assert "HTTP 400" in row[-1] and "scripted failure" in row[-1]


def test_exhausted_retries_are_dead_lettered(receiver_for, service_for, clock):
    receiver = receiver_for(script=[503] * 10)
    service = service_for(receiver, dispatcher={"max_attempts": "3"})
    enqueue(service, "add", "4711", "u1", clock=clock)

    drain(service, clock)

    assert receiver.calls == 3
    (row,) = service.outbox.dead_letters()
    assert row[-1].startswith("gave up after 3 attempts")


def test_a_failing_audience_does_not_hold_up_another(receiver_for, service_for, clock):
    receiver = receiver_for()
    service = service_for(receiver)
    enqueue(service, "add", "broken", "u1", clock=clock)
    service.outbox.retry_later(service.outbox.claim("other", now=clock(), lease=60, limit=1, batch_sizes={"demo": 10})[0],
                               "down", at=clock() + 3600, now=clock())
    enqueue(service, "add", "healthy", "u2", clock=clock)

    service.dispatcher.run_once()

    assert receiver.members == {"healthy": {"u2"}}


def test_an_audience_first_seen_in_a_mutation_is_created_then_filled(receiver_for, service_for, clock):
    receiver = receiver_for()
    service = service_for(receiver)
    enqueue(service, "add", "dmp-aud", "u1", clock=clock, pass_through=False)

    drain(service, clock)

    [created] = receiver.created_ids()
    assert [e["type"] for e in receiver.events] == ["audience.created", "audience.members_added"]
    assert receiver.events[1]["data"]["audience"]["id"] == created
    assert service.outbox.audience("demo", "dmp-aud").target_id == created


def test_mutations_wait_while_creation_is_failing_then_flow(receiver_for, service_for, clock):
    receiver = receiver_for(script=[503, 503])
    service = service_for(receiver)
    enqueue(service, "add", "dmp-aud", "u1", clock=clock, pass_through=False)

    drain(service, clock)

    assert [e["type"] for e in receiver.events] == ["audience.created", "audience.members_added"]
    assert receiver.members == {"dmp-aud": {"u1"}}


def test_a_refused_creation_dead_letters_the_audiences_mutations(receiver_for, service_for, clock):
    receiver = receiver_for(script=[400])
    service = service_for(receiver)
    enqueue(service, "add", "dmp-aud", "u1", "u2", clock=clock, pass_through=False)

    drain(service, clock)

    assert service.outbox.counts()["dead"] == 2
    assert all("could not be created" in row[-1] for row in service.outbox.dead_letters())


def test_batches_are_cut_at_the_targets_max_batch(receiver_for, service_for, clock):
    receiver = receiver_for()
    service = service_for(receiver, integration={"target.max_batch": "10"})
    enqueue(service, "add", "4711", *(f"u{i}" for i in range(25)), clock=clock)

    drain(service, clock)

    assert [len(e["data"]["members"]) for e in receiver.events] == [10, 10, 5]


def test_a_413_splits_the_batch_until_it_passes(receiver_for, service_for, clock):
    receiver = receiver_for(script=[413])
    service = service_for(receiver)
    enqueue(service, "add", "4711", *(f"u{i}" for i in range(4)), clock=clock)

    drain(service, clock)

    assert [len(e["data"]["members"]) for e in receiver.events] == [2, 2]
    assert receiver.members == {"4711": {"u0", "u1", "u2", "u3"}}


def test_a_single_mutation_too_large_for_the_platform_is_dead_lettered():
    def refuse(audience, batch):
        raise PayloadTooLarge("HTTP 413")

    assert call_splitting(refuse, None, [Mutation(1, "add", "u1")]) == {1: "HTTP 413"}


def test_coalesce_keeps_the_last_mutation_of_each_user_in_order():
    mutations = [Mutation(1, "add", "a"), Mutation(2, "add", "b"), Mutation(3, "remove", "a")]

    assert [m.id for m in coalesce(mutations)] == [2, 3]


def test_the_background_dispatcher_delivers_what_is_committed_in_process(receiver_for, tmp_path, database_location):
    receiver = receiver_for()
    service = Service(make_config(tmp_path, receiver.url, diy={"database": database_location},
                                  dispatcher={"poll_interval": "30s"}))
    service.dispatcher.start()
    try:
        service.outbox.enqueue("demo", "add", [ReceivedMutation("4711", "u1")], pass_through=True, now=time.time())
        service.dispatcher.wake()
        deadline = time.monotonic() + 10
        while not receiver.events and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        service.close()

    assert receiver.members == {"4711": {"u1"}}, "woken at once, not after the 30 s poll"


def test_a_running_dispatcher_beats_its_heart_and_retires_at_stop(receiver_for, tmp_path, database_location):
    receiver = receiver_for()
    service = Service(make_config(tmp_path, receiver.url, diy={"database": database_location},
                                  dispatcher={"takeover_after": "1s"}))
    owner = service.dispatcher.owner

    def seen():
        return [at for who, at in service.database.read("SELECT owner, seen_at FROM dispatchers") if who == owner]

    service.dispatcher.start()
    try:
        deadline = time.monotonic() + 10
        while not seen() and time.monotonic() < deadline:
            time.sleep(0.01)
        first = seen()
        time.sleep(0.5)
        assert first and seen()[0] > first[0], "a heartbeat every takeover_after / 5"
    finally:
        service.close()

    assert seen() == [], "a graceful stop retires the dispatcher"


def test_a_graceful_stop_gives_back_the_lease_of_a_call_in_flight(receiver_for, tmp_path, database_location):
    receiver = receiver_for()
    entered, release = hold_calls(receiver.sandboxed)
    service = Service(make_config(tmp_path, receiver.url, diy={"database": database_location},
                                  dispatcher={"stop_timeout": "0.2s"}))
    service.outbox.enqueue("demo", "add", [ReceivedMutation("4711", "u1")], pass_through=True, now=time.time())
    service.dispatcher.start()
    try:
        assert entered.wait(10)
        service.dispatcher.stop()
        claims = service.outbox.claim("next", now=time.time(), lease=60, limit=1, batch_sizes={"demo": 10})
        assert [m.external_user_id for c in claims for m in c.mutations] == ["u1"]
    finally:
        release.set()
        service.close()


def test_a_stopping_dispatcher_keeps_its_leases_while_it_waits_for_a_call_in_flight(receiver_for, tmp_path,
                                                                                      database_location):
    """A stop waits up to stop_timeout for calls in flight; if its heart stopped first, another
    dispatcher would take the audience over after takeover_after and send the batch again while
    the first call still runs."""
    receiver = receiver_for()
    entered, release = hold_calls(receiver.sandboxed)
    service = Service(make_config(tmp_path, receiver.url, diy={"database": database_location},
                                  dispatcher={"stop_timeout": "10s", "takeover_after": "1s"},
                                  integration={"target.timeout": "10"}))
    service.outbox.enqueue("demo", "add", [ReceivedMutation("4711", "u1")], pass_through=True, now=time.time())
    service.dispatcher.start()
    stopping = threading.Thread(target=service.dispatcher.stop)
    try:
        assert entered.wait(10)
        stopping.start()
        time.sleep(2.5)
        now = time.time()
        taken_over = service.outbox.claim("next", now=now, lease=60, limit=1, batch_sizes={"demo": 10},
                                          alive_since=now - 1.0)
    finally:
        release.set()
        stopping.join(15)
        service.close()

    assert taken_over == [], "the call in flight still holds its lease"


def test_delivery_threads_keep_each_audiences_order(receiver_for, tmp_path, database_location):
    receiver = receiver_for()
    service = Service(make_config(tmp_path, receiver.url, diy={"database": database_location},
                                  dispatcher={"threads": "3"}, integration={"target.max_batch": "5"}))
    for round_ in range(12):
        for audience in ("a", "b", "c", "d"):
            op = "remove" if round_ % 3 == 2 else "add"
            service.outbox.enqueue("demo", op, [ReceivedMutation(audience, f"u{round_ % 4}") for _ in range(2)]
                                   + [ReceivedMutation(audience, f"{audience}{round_}")], pass_through=True,
                                   now=time.time())
    service.dispatcher.start()
    try:
        deadline = time.monotonic() + 30
        while service.outbox.counts()["pending"] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        service.close()

    expected = {}
    for round_ in range(12):
        for audience in ("a", "b", "c", "d"):
            members = expected.setdefault(audience, set())
            change = members.discard if round_ % 3 == 2 else members.add
            change(f"u{round_ % 4}")
            change(f"{audience}{round_}")
    assert service.outbox.counts() == {"pending": 0, "done": 144, "dead": 0}
    assert receiver.members == {audience: members for audience, members in expected.items() if members}


# Accounts, rate limits, circuit breaker.

def enqueue_for(service, customer, audience, *users, clock):
    received = [ReceivedMutation(audience, user, customer=customer) for user in users]
    service.outbox.enqueue("demo", "add", received, pass_through=True, now=clock())


def test_each_customer_is_delivered_with_its_own_account(receiver_for, service_for, clock):
    first = receiver_for()
    second = receiver_for()
    service = service_for(first, sections={
        "integration:demo:customer:1": {"target.url": first.url},
        "integration:demo:customer:2": {"target.url": second.url},
    })
    enqueue_for(service, 1, "aud-a", "u1", clock=clock)
    enqueue_for(service, 2, "aud-b", "u2", clock=clock)

    drain(service, clock)

    assert (first.members, second.members) == ({"aud-a": {"u1"}}, {"aud-b": {"u2"}})


def test_a_customer_without_an_account_is_dead_lettered_with_the_reason(receiver_for, service_for, clock):
    receiver = receiver_for()
    service = service_for(receiver, sections={"integration:demo:customer:1": {}})
    enqueue_for(service, 99, "aud", "u1", clock=clock)

    drain(service, clock)

    assert receiver.calls == 0
    (row,) = service.outbox.dead_letters()
    assert "no platform account is configured for DMP client 99" in row[-1]


def test_an_open_breaker_holds_work_back_without_burning_attempts(receiver_for, service_for, clock):
    receiver = receiver_for(script=[503] * 100)
    service = service_for(receiver, integration={"breaker_failures": "2", "breaker_cooldown": "1h"},
                          dispatcher={"max_attempts": "3"})
    enqueue(service, "add", "a", "u1", clock=clock)
    enqueue(service, "add", "b", "u2", clock=clock)

    drain(service, clock, rounds=20, step=5)

    assert receiver.calls == 2, "two audiences failing open the breaker; no call while it is open"
    assert service.outbox.counts() == {"pending": 2, "done": 0, "dead": 0}, "attempts not burned"
    receiver.sandboxed.sandbox.faults.clear_script()
    clock.advance(3600)
    drain(service, clock)
    assert receiver.members == {"a": {"u1"}, "b": {"u2"}}


def test_one_audience_failing_again_and_again_does_not_stall_the_others(receiver_for, service_for, clock):
    receiver = receiver_for(script=[503] * 6)
    service = service_for(receiver, integration={"breaker_failures": "2", "breaker_cooldown": "1h"})
    enqueue(service, "add", "poisoned", "u1", clock=clock)
    drain(service, clock, rounds=6, step=5)
    enqueue(service, "add", "healthy", "u2", clock=clock)

    service.dispatcher.run_once()

    assert receiver.members.get("healthy") == {"u2"}


def test_the_rate_limit_spreads_calls_over_time(receiver_for, service_for, clock):
    receiver = receiver_for()
    service = service_for(receiver, integration={"calls_per_second": "1/m"})
    for audience in ("a", "b", "c"):
        enqueue(service, "add", audience, "u1", clock=clock)

    service.dispatcher.run_once()
    assert receiver.calls == 1
    clock.advance(60)
    service.dispatcher.run_once()
    assert receiver.calls == 2


def test_an_outcome_is_recorded_even_when_the_database_is_busy_at_that_moment(receiver_for, sqlite_service_for, clock):
    """The platform accepted the batch while another process held the write lock past
    write_timeout: the dispatcher keeps trying to record it instead of sending it again later."""
    receiver = receiver_for()
    service = sqlite_service_for(receiver)
    released = threading.Event()

    def hold_the_lock():
        blocker = sqlite3.connect(service.database.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        released.wait(10)
        blocker.execute("ROLLBACK")
        blocker.close()

    def lock_before_answering(exchange):
        """Called once the webhook applied the batch, before its answer leaves."""
        threading.Thread(target=hold_the_lock, daemon=True).start()
        threading.Timer(1.2, released.set).start()
        time.sleep(0.2)

    receiver.sandboxed.sandbox.listeners.append(lock_before_answering)
    enqueue(service, "add", "4711", "u1", clock=clock)

    service.dispatcher.run_once()

    assert receiver.calls == 1
    assert service.outbox.counts() == {"pending": 0, "done": 1, "dead": 0}


def test_the_dispatcher_checkpoints_the_wal_every_second_in_the_background(receiver_for, sqlite_service_for, clock):
    """Request commits never checkpoint (outbox/db.py); the dispatcher's loop does, so the WAL
    stays small while requests keep coming. (The probe's own checkpoint, at the end of each
    round, lets the next round start with an empty WAL.)"""
    service = sqlite_service_for(receiver_for())
    database = service.database
    users = [f"user-{n:04d}-" + "x" * 200 for n in range(1000)]

    def wal_after_a_second_of_requests():
        for start in range(0, len(users), 100):
            enqueue(service, "add", "4711", *users[start:start + 100], clock=clock)
        clock.advance(1.0)
        service.dispatcher.maintain()
        enqueue(service, "add", "4711", "one-more", clock=clock)
        probe = sqlite3.connect(database.path)
        try:
            return probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        finally:
            probe.close()

    service.dispatcher.checkpoint_interval = 3600
    service.dispatcher.maintain()
    assert wal_after_a_second_of_requests() > 60, "without it, the requests' pages stay in the WAL"
    service.dispatcher.checkpoint_interval = 1.0
    clock.advance(3600)
    service.dispatcher.maintain()
    assert wal_after_a_second_of_requests() < 20, "the WAL started afresh after the dispatcher's checkpoint"


def test_the_minutely_maintenance_empties_the_wal_only_once_it_outgrew_its_limit(receiver_for, sqlite_service_for, clock):
    service = sqlite_service_for(receiver_for())
    wal = service.database.path + "-wal"
    enqueue(service, "add", "4711", *(f"user-{n:04d}-" + "x" * 200 for n in range(1000)), clock=clock)
    size = os.path.getsize(wal)

    clock.advance(3600)
    service.dispatcher.maintain()
    assert os.path.getsize(wal) == size, "within its limit, SQLite bounds the WAL itself"

    service.database.wal_size_limit = size // 2
    clock.advance(3600)
    service.dispatcher.maintain()
    assert os.path.getsize(wal) == 0


def test_a_database_that_cannot_be_written_pauses_the_loop_with_one_line_not_a_traceback(
        receiver_for, sqlite_service_for, clock, caplog):
    """A full disk or a lock held elsewhere is a state the operator should see, greppable, once
    per poll; a traceback every second would bury it (and real crashes) in the log."""
    service = sqlite_service_for(receiver_for(), diy={"write_timeout": "0.1s"},
                          dispatcher={"poll_interval": "0.05s"})
    enqueue(service, "add", "4711", "u1", clock=clock)
    blocker = sqlite3.connect(service.database.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        service.dispatcher.start()
        deadline = time.monotonic() + 5
        while not any("dispatcher waiting for the database" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the loop never reported the locked database"
            time.sleep(0.01)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    waiting = [r for r in caplog.records if "dispatcher waiting for the database" in r.getMessage()]
    assert "locked by another writer" in waiting[0].getMessage()
    assert not any(r.exc_info for r in caplog.records if r.name == "diy.dispatcher")


def test_another_processs_commit_wakes_an_sqlite_dispatcher_within_milliseconds(tmp_path, receiver_for):
    """SQLite has no NOTIFY: the dispatcher watches the file's data_version. It polls every 30 s
    here, yet delivers within seconds what another process (`diy-wsgi dispatch`'s usual
    neighbour, a gunicorn worker) commits."""
    receiver = receiver_for()
    config = make_config(tmp_path, receiver.url, dispatcher={"poll_interval": "30s"})
    service = Service(config)
    service.dispatcher.start()
    committer = (
        "import sys, time\n"
        "from outbox.db import Database\n"
        "from outbox.store import Outbox, ReceivedMutation\n"
        "Outbox(Database(sys.argv[1])).enqueue('demo', 'add', [ReceivedMutation('4711', 'u1')],"
        " pass_through=True, now=time.time())\n"
    )
    try:
        time.sleep(1.0)
        subprocess.run([sys.executable, "-c", committer, str(tmp_path / "outbox.sqlite3")], check=True, timeout=60)
        deadline = time.monotonic() + 10
        while not receiver.events and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        service.close()

    assert receiver.members == {"4711": {"u1"}}


@pytest.mark.parametrize("beside_requests, listens", [(False, True), (True, False)], ids=["alone", "embedded"])
def test_on_sqlite_only_a_dispatcher_without_requests_watches_for_other_commits(tmp_path, beside_requests, listens):
    """The watch polls every 5 ms under load; an embedded dispatcher is woken by its own
    process's requests, so it would pay that for nothing."""
    service = Service(make_config(tmp_path, "http://127.0.0.1:9/hook"))
    service.dispatcher.start(beside_requests=beside_requests)
    try:
        names = {thread.name for thread in threading.enumerate()}
    finally:
        service.close()

    assert ("diy-listen" in names) == listens
