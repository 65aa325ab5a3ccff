"""The outbox against a real SQLite file, with the clock moved by hand."""
import sqlite3

import pytest

from outbox.db import Database, require_sqlite
from outbox.errors import StoreError, StoreUnavailable
from outbox.store import Outbox, ReceivedMutation

SIZES = {"demo": 100}


def received(audience, *users, **extra):
    return [ReceivedMutation(audience, user, uuid=f"uuid-{user}", customer=7, platform=113, extra=extra) for user in users]


def claim_one(outbox, clock, owner="d1", lease=60, sizes=SIZES):
    claims = outbox.claim(owner, now=clock(), lease=lease, limit=10, batch_sizes=sizes)
    assert len(claims) <= 1
    return claims[0] if claims else None


def test_an_audience_first_seen_in_a_mutation_is_queued_for_creation(outbox, clock):
    outbox.enqueue("demo", "add", received("aud-1", "u1"), pass_through=False, now=clock())

    claim = claim_one(outbox, clock)

    assert claim.audience.state == "creating"
    assert claim.mutations == []


def test_with_pass_through_the_audience_value_is_the_platform_id(outbox, clock):
    outbox.enqueue("demo", "add", received("4711", "u1"), pass_through=True, now=clock())

    claim = claim_one(outbox, clock)

    assert (claim.audience.state, claim.audience.target_id) == ("ready", "4711")
    assert [m.external_user_id for m in claim.mutations] == ["u1"]


def test_mutations_keep_every_field_the_dmp_sent(outbox, clock):
    outbox.enqueue("demo", "remove", received("4711", "u1", Segment_name="x", Nested={"a": [1]}), pass_through=True, now=clock())

    (mutation,) = claim_one(outbox, clock).mutations

    assert (mutation.op, mutation.external_user_id, mutation.uuid, mutation.customer, mutation.platform) == (
        "remove", "u1", "uuid-u1", 7, 113)
    assert mutation.extra == {"Segment_name": "x", "Nested": {"a": [1]}}


def test_a_claimed_audience_is_not_claimed_again_until_its_lease_runs_out(outbox, clock):
    outbox.enqueue("demo", "add", received("4711", "u1"), pass_through=True, now=clock())
    first = claim_one(outbox, clock, owner="d1", lease=60)

    assert claim_one(outbox, clock, owner="d2") is None
    clock.advance(61)
    second = claim_one(outbox, clock, owner="d2")

    assert second.mutations == first.mutations
    assert outbox.settle(first, now=clock()) is False, "the expired holder must not settle"
    assert outbox.settle(second, now=clock()) is True
    assert outbox.counts()["done"] == 1


def test_a_lease_whose_holder_stopped_beating_its_heart_is_taken_over_before_it_runs_out(outbox, clock):
    outbox.enqueue("demo", "add", received("4711", "u1"), pass_through=True, now=clock())
    first = outbox.claim("d1", now=clock(), lease=300, limit=1, batch_sizes=SIZES, alive_since=clock() - 5)[0]

    clock.advance(4)
    assert outbox.claim("d2", now=clock(), lease=300, limit=1, batch_sizes=SIZES, alive_since=clock() - 5) == []
    clock.advance(2)
    (second,) = outbox.claim("d2", now=clock(), lease=300, limit=1, batch_sizes=SIZES, alive_since=clock() - 5)

    assert second.mutations == first.mutations
    assert outbox.settle(first, now=clock()) is False, "the presumed-dead holder must not settle"
    assert outbox.settle(second, now=clock()) is True


def test_a_holder_that_keeps_beating_its_heart_keeps_its_lease(outbox, clock):
    outbox.enqueue("demo", "add", received("4711", "u1"), pass_through=True, now=clock())
    (first,) = outbox.claim("d1", now=clock(), lease=300, limit=1, batch_sizes=SIZES, alive_since=clock() - 5)

    for _ in range(50):
        clock.advance(4)
        outbox.heartbeat("d1", now=clock())
        assert outbox.claim("d2", now=clock(), lease=300, limit=1, batch_sizes=SIZES, alive_since=clock() - 5) == []

    assert outbox.settle(first, now=clock()) is True


def test_dispatchers_gone_for_long_are_forgotten(outbox, clock):
    outbox.heartbeat("gone", now=clock())
    clock.advance(10)
    outbox.heartbeat("alive", now=clock())

    assert outbox.forget_dispatchers(seen_before=clock() - 5) == 1
    assert [row[0] for row in outbox.database.read("SELECT owner FROM dispatchers")] == ["alive"]


def test_batches_follow_the_order_the_dmp_sent_and_the_batch_size(outbox, clock):
    users = [f"u{i}" for i in range(250)]
    outbox.enqueue("demo", "add", received("4711", *users), pass_through=True, now=clock(), batch_limit=100)
    seen = []
    while True:
        claim = claim_one(outbox, clock)
        if claim is None:
            break
        assert len(claim.mutations) <= 100
        seen += [m.external_user_id for m in claim.mutations]
        outbox.settle(claim, now=clock())

    assert seen == users


def test_a_claim_takes_whole_stored_batches_up_to_the_batch_size(outbox, clock):
    for request in range(3):
        users = [f"r{request}-u{i}" for i in range(60)]
        outbox.enqueue("demo", "add", received("4711", *users), pass_through=True, now=clock())
    outbox.enqueue("demo", "add", received("4711", *[f"big{i}" for i in range(150)]), pass_through=True, now=clock())

    sizes = []
    while (claim := claim_one(outbox, clock)) is not None:
        sizes.append(len(claim.mutations))
        ids = [m.id for m in claim.mutations]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        outbox.settle(claim, now=clock())

    assert sizes == [60, 60, 60, 150], "a batch stored larger than the size is claimed whole, never torn"
    assert outbox.counts() == {"pending": 0, "done": 330, "dead": 0}


def test_mutations_arriving_during_a_lease_wait_for_the_next_claim(outbox, clock):
    outbox.enqueue("demo", "add", received("4711", "u1"), pass_through=True, now=clock())
    claim = claim_one(outbox, clock)
    outbox.enqueue("demo", "remove", received("4711", "u1"), pass_through=True, now=clock())

    outbox.settle(claim, now=clock())
    following = claim_one(outbox, clock)

    assert [(m.op, m.external_user_id) for m in following.mutations] == [("remove", "u1")]


def test_retry_later_holds_the_audience_back_until_the_time_given(outbox, clock):
    outbox.enqueue("demo", "add", received("4711", "u1"), pass_through=True, now=clock())
    claim = claim_one(outbox, clock)

    outbox.retry_later(claim, "HTTP 503", at=clock() + 30, now=clock())

    assert claim_one(outbox, clock) is None
    clock.advance(30)
    again = claim_one(outbox, clock)
    assert again.audience.attempts == 1
    assert again.audience.last_error == "HTTP 503"


def test_a_failing_audience_does_not_hold_up_another(outbox, clock):
    outbox.enqueue("demo", "add", received("slow", "u1") + received("fast", "u2"), pass_through=True, now=clock())
    claims = outbox.claim("d1", now=clock(), lease=60, limit=10, batch_sizes=SIZES)
    slow = next(c for c in claims if c.audience.key == "slow")
    fast = next(c for c in claims if c.audience.key == "fast")
    outbox.retry_later(slow, "timeout", at=clock() + 600, now=clock())
    outbox.settle(fast, now=clock())
    outbox.enqueue("demo", "add", received("fast", "u3"), pass_through=True, now=clock())

    claim = claim_one(outbox, clock)

    assert claim.audience.key == "fast"


def test_partial_failure_dead_letters_only_the_named_mutations(outbox, clock):
    outbox.enqueue("demo", "add", received("4711", "u1", "u2", "u3"), pass_through=True, now=clock())
    claim = claim_one(outbox, clock)
    bad = claim.mutations[1].id

    outbox.settle(claim, dead={bad: "MissingUserId"}, now=clock())

    assert outbox.counts() == {"pending": 0, "done": 2, "dead": 1}
    assert [(row[0], row[-1]) for row in outbox.dead_letters()] == [(bad, "MissingUserId")]


def test_dead_letter_keeps_the_reason_for_the_whole_batch(outbox, clock):
    outbox.enqueue("demo", "add", received("4711", "u1", "u2"), pass_through=True, now=clock())

    outbox.dead_letter(claim_one(outbox, clock), "HTTP 400: bad id", now=clock())

    assert [row[-1] for row in outbox.dead_letters()] == ["HTTP 400: bad id"] * 2
    assert claim_one(outbox, clock) is None


def test_creation_then_delivery(outbox, clock):
    outbox.enqueue("demo", "add", received("aud-1", "u1"), pass_through=False, now=clock())
    creating = claim_one(outbox, clock)

    assert outbox.created(creating, "T-1", now=clock())
    ready = claim_one(outbox, clock)

    assert (ready.audience.state, ready.audience.target_id) == ("ready", "T-1")
    assert [m.external_user_id for m in ready.mutations] == ["u1"]


def test_a_refused_audience_hands_its_mutations_to_the_dispatcher_to_dead_letter(outbox, clock):
    outbox.enqueue("demo", "add", received("aud-1", "u1"), pass_through=False, now=clock())
    outbox.creation_failed(claim_one(outbox, clock), "name taken", now=clock())

    claim = claim_one(outbox, clock)

    assert (claim.audience.state, claim.audience.last_error) == ("failed", "name taken")
    assert len(claim.mutations) == 1


def test_record_created_maps_the_dmp_id_and_keys_it_by_the_platform_id(outbox, clock):
    record = outbox.record_created("demo", "dmp-1", name="Buyers", customer=7, target_id="T-9", key="T-9", now=clock())
    outbox.enqueue("demo", "add", received("T-9", "u1"), pass_through=True, now=clock())

    claim = claim_one(outbox, clock)

    assert (record.key, record.target_id, record.state) == ("T-9", "T-9", "ready")
    assert claim.audience.dmp_id == "dmp-1"
    assert outbox.audience("demo", "dmp-1").pending == 1


def test_record_created_is_idempotent_and_keeps_the_first_key(outbox, clock):
    outbox.record_created("demo", "dmp-1", name="Buyers", customer=7, target_id="T-9", key="T-9", now=clock())
    again = outbox.record_created("demo", "dmp-1", name="Buyers", customer=7, target_id="T-9", key="dmp-1", now=clock())

    assert again.key == "T-9"


def test_pending_creation_is_created_by_the_dispatcher_from_the_time_given(outbox, clock):
    outbox.record_creation_pending("demo", "dmp-1", name="Buyers", customer=7, error="HTTP 429",
                                   retry_at=clock() + 2, now=clock())

    assert claim_one(outbox, clock) is None, "not before the platform's Retry-After"
    clock.advance(2)
    claim = claim_one(outbox, clock)

    assert (claim.audience.state, claim.audience.name, claim.audience.attempts) == ("creating", "Buyers", 1)


def test_release_gives_back_the_leases_of_one_owner(outbox, clock):
    outbox.enqueue("demo", "add", received("4711", "u1"), pass_through=True, now=clock())
    claim_one(outbox, clock, owner="d1", lease=600)

    assert outbox.release("d1") == 1
    assert claim_one(outbox, clock, owner="d2") is not None


def test_purge_deletes_delivered_rows_past_the_retention_only(outbox, clock):
    outbox.enqueue("demo", "add", received("4711", "u1", "u2"), pass_through=True, now=clock())
    claim = claim_one(outbox, clock)
    outbox.settle(claim, dead={claim.mutations[0].id: "refused"}, now=clock())

    assert outbox.purge(now=clock() + 3599) == 0
    assert outbox.purge(now=clock() + 3601) == 1
    assert outbox.counts() == {"pending": 0, "done": 0, "dead": 1}


def test_zero_retention_deletes_delivered_rows_at_once(database, clock):
    outbox = Outbox(database, retention=0)
    outbox.enqueue("demo", "add", received("4711", "u1"), pass_through=True, now=clock())

    outbox.settle(claim_one(outbox, clock), now=clock())

    assert outbox.counts() == {"pending": 0, "done": 0, "dead": 0}


def test_other_integrations_are_left_to_their_own_dispatchers(outbox, clock):
    outbox.enqueue("other", "add", received("4711", "u1"), pass_through=True, now=clock())

    assert claim_one(outbox, clock, sizes={"demo": 10}) is None


def test_a_write_blocked_by_another_process_past_the_budget_is_unavailable(sqlite_database, sqlite_outbox, clock):
    database, outbox = sqlite_database, sqlite_outbox
    blocker = sqlite3.connect(database.path, isolation_level=None)
    outbox.counts()
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            outbox.enqueue("demo", "add", received("4711", "u1"), pass_through=True, now=clock())
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert outbox.counts()["pending"] == 0


def test_a_foreign_database_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER)")

    with pytest.raises(StoreError, match="not a diy-wsgi outbox"):
        Outbox(Database(path)).counts()


def test_a_file_that_is_not_a_database_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)

    with pytest.raises(StoreError, match="cannot"):
        Outbox(Database(path)).counts()


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "newer.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version=99")

    with pytest.raises(StoreError, match="newer"):
        Outbox(Database(path)).counts()


def test_an_old_sqlite_is_refused_with_the_version_found():
    with pytest.raises(StoreError, match="3.35 or newer.*3.31.1"):
        require_sqlite((3, 31, 1))


def test_every_mutation_is_a_row_of_the_mutations_view_whatever_its_state(outbox, clock):
    outbox.enqueue("demo", "add", received("4711", "u1", "u2", "u3"), pass_through=True, now=clock())
    claim = claim_one(outbox, clock)
    outbox.settle(claim, dead={claim.mutations[1].id: "refused"}, now=clock())
    outbox.enqueue("demo", "remove", received("4711", "u4"), pass_through=True, now=clock())

    rows = outbox.database.read(
        "SELECT id, op, external_user_id, uuid, customer, state, last_error FROM mutations ORDER BY id"
    )

    ids = [m.id for m in claim.mutations]
    assert rows[:3] == [
        (ids[0], "add", "u1", "uuid-u1", 7, "done", None),
        (ids[1], "add", "u2", "uuid-u2", 7, "dead", "refused"),
        (ids[2], "add", "u3", "uuid-u3", 7, "done", None),
    ]
    assert rows[3][1:6] == ("remove", "u4", "uuid-u4", 7, "pending") and rows[3][0] > ids[2]


def test_a_migration_1_file_keeps_its_queue_order_and_dead_letters(tmp_path, clock):
    from outbox.schema import MIGRATIONS, split_statements

    path = tmp_path / "v1.sqlite3"
    old = sqlite3.connect(path, isolation_level=None)
    for statement in split_statements(MIGRATIONS[0]):
        old.execute(statement)
    old.execute("PRAGMA user_version=1")
    old.execute(
        "INSERT INTO audiences (integration, key, dmp_id, customer, target_id, state, pending, lease_token,"
        " lease_expires_at, claimed_through, created_at, updated_at)"
        " VALUES ('demo', '4711', '4711', 7, '4711', 'ready', 2, 'tok', 9e9, 70002, 1, 1)"
    )
    rows = [
        (70001, "done", "u1", None), (70002, "pending", "u2", '{"Score":1}'),
        (70003, "dead", "u3", None), (70004, "pending", "u4", None),
    ]
    for mutation_id, state, user, extra in rows:
        old.execute(
            "INSERT INTO mutations (id, audience_id, op, external_user_id, uuid, customer, platform, extra, state,"
            " attempts, received_at, last_error) VALUES (?, 1, 'add', ?, NULL, 7, 113, ?, ?, 2, 5.0, 'boom')",
            (mutation_id, user, extra, state),
        )
    old.close()

    outbox = Outbox(Database(path))
    claim = claim_one(outbox, clock)

    assert [(m.external_user_id, m.extra, m.customer, m.platform) for m in claim.mutations] == [
        ("u2", {"Score": 1}, 7, 113), ("u4", {}, 7, 113)
    ], "the old lease is void, the pending rows come back in their order, with every field"
    assert claim.mutations[0].id > 70003, "new ids sort after every old one"
    assert [row[0] for row in outbox.dead_letters()] == [70003]
    outbox.settle(claim, now=clock())
    assert outbox.counts() == {"pending": 0, "done": 2, "dead": 1}
    assert outbox.database.read("SELECT pending FROM audiences") == [(0,)]


def test_a_claim_with_nothing_due_never_takes_the_write_lock(sqlite_database, sqlite_outbox, clock):
    database, outbox = sqlite_database, sqlite_outbox
    outbox.enqueue("demo", "add", received("4711", "u1"), pass_through=True, now=clock())
    first = claim_one(outbox, clock)
    blocker = sqlite3.connect(database.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        assert claim_one(outbox, clock) is None, "leased: nothing due, and no wait for the lock"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert outbox.settle(first, now=clock()) is True
