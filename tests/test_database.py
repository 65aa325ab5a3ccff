"""outbox.db against a real SQLite file: group commit, durability per transaction, lock waits."""
import os
import sqlite3
import threading
import time

import pytest

from outbox.db import Database
from outbox.errors import StoreUnavailable
from tests.support import mode_of


@pytest.fixture
def database(sqlite_database):
    """This module is about SQLite's own machinery."""
    return sqlite_database


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Interrupt(BaseException):
    """Like KeyboardInterrupt: not an error of the work, and never caught as one."""


def insert(value, fail=False, interrupt=False):
    def work(connection):
        connection.execute("INSERT INTO dispatchers (owner, started_at, seen_at) VALUES (?, 0, 0)", (value,))
        if fail:
            raise ValueError(f"{value} refuses")
        if interrupt:
            raise Interrupt()
        return threading.get_ident(), connection.execute("PRAGMA synchronous").fetchone()[0]
    return work


def writers(database, works):
    """Run each work through Database.write in its own thread while a transaction holds the
    writer lock, then let them go; returns each thread's result or exception."""
    outcomes = [None] * len(works)

    def run(index):
        try:
            outcomes[index] = database.write(works[index])
        except BaseException as error:
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(works))]
    with database.transaction():
        for thread in threads:
            thread.start()
        wait_for(lambda: len(database._queue) == len(works))
    for thread in threads:
        thread.join(10)
    return outcomes


def owners(database):
    return {row[0] for row in database.read("SELECT owner FROM dispatchers")}


def test_writes_queued_meanwhile_share_one_durable_commit(database):
    outcomes = writers(database, [insert(f"w{i}") for i in range(6)])

    assert len({thread for thread, _ in outcomes}) == 1, "one leader ran every queued write"
    assert {synchronous for _, synchronous in outcomes} == {2}, "FULL: the commit waits for the disk"
    assert owners(database) == {f"w{i}" for i in range(6)}


def test_a_write_that_fails_undoes_only_its_own_part(database):
    outcomes = writers(database, [insert("a"), insert("b", fail=True), insert("c")])

    assert isinstance(outcomes[1], ValueError)
    assert owners(database) == {"a", "c"}


def test_an_interrupted_shared_commit_keeps_nothing_and_the_others_are_unavailable(database):
    outcomes = writers(database, [insert("a"), insert("b", interrupt=True), insert("c")])

    assert sum(isinstance(outcome, Interrupt) for outcome in outcomes) == 1, "the leader's thread keeps the interrupt"
    assert sum(isinstance(outcome, StoreUnavailable) for outcome in outcomes) == 2
    assert owners(database) == set()


def test_a_write_waiting_past_the_timeout_is_withdrawn_and_never_runs(database):
    blocker = sqlite3.connect(database.path, isolation_level=None)
    database.read("SELECT 1")
    blocker.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            database.write(insert("late"))
        assert 0.4 < time.monotonic() - started < 2.0, "waits write_timeout (0.5 s), polling"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert owners(database) == set() and database._queue == []


def test_a_lock_freed_by_another_process_is_taken_within_milliseconds(database):
    blocker = sqlite3.connect(database.path, isolation_level=None, check_same_thread=False)
    database.read("SELECT 1")
    blocker.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    threading.Timer(0.25, blocker.execute, args=("ROLLBACK",)).start()
    database.write(insert("soon"))
    late = time.monotonic() - started - 0.25
    blocker.close()

    assert late < 0.04, f"SQLite's busy handler, sleeping in steps of up to 100 ms, gets it ~80 ms late; {late:.3f} s"


def test_bookkeeping_commits_without_waiting_for_the_disk_and_requests_with(database):
    with database.transaction(durable=False) as connection:
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 1
    with database.transaction() as connection:
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2


def fill_wal(database, pages):
    """Commit about `pages` pages of WAL, a request-sized (16 KB) write at a time."""
    database.write(lambda connection: connection.execute("CREATE TABLE IF NOT EXISTS scratch (data BLOB)"))
    for _ in range(pages // 4):
        database.write(lambda connection: connection.execute("INSERT INTO scratch VALUES (randomblob(16000))"))


def wal_pages(path):
    """Frames in the WAL, from a connection of its own (a PASSIVE checkpoint only reports them)."""
    probe = sqlite3.connect(path, isolation_level=None)
    try:
        return probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    finally:
        probe.close()


def test_request_commits_leave_checkpoints_to_the_background(database):
    """SQLite would checkpoint inside the commit that takes the WAL past 1000 pages, making
    that request (and every one queued behind its lock) wait for the copy and an fsync."""
    fill_wal(database, 1500)
    assert wal_pages(database.path) > 1000, "no request commit checkpointed"


def test_a_background_checkpoint_lets_the_next_commit_start_the_wal_afresh(database):
    fill_wal(database, 1500)

    busy, in_wal, copied = database.checkpoint(truncate=False)
    fill_wal(database, 8)

    assert (busy, copied) == (0, in_wal)
    assert wal_pages(database.path) < 100


def wal_bytes(database):
    return os.path.getsize(database.path + "-wal")


def test_a_wal_within_its_size_limit_is_left_as_it_is(database):
    """Emptying the WAL blocks every writer while it runs: not while SQLite bounds it anyway."""
    fill_wal(database, 200)
    size = wal_bytes(database)

    assert database.trim_wal() is False
    assert wal_bytes(database) == size > 0


def test_a_wal_past_its_size_limit_is_emptied(tmp_path):
    database = Database(tmp_path / "outbox.sqlite3", wal_size_limit=256 * 1024)
    try:
        fill_wal(database, 200)
        assert wal_bytes(database) > 256 * 1024

        assert database.trim_wal() is True
        assert wal_bytes(database) == 0
        database.write(insert("d1"))
    finally:
        database.close()


def test_the_database_and_its_wal_and_shm_are_created_for_their_owner_alone(tmp_path, permissive_umask):
    database = Database(tmp_path / "outbox.sqlite3")
    try:
        database.write(insert("d1"))
        files = {name: mode_of(tmp_path / name) for name in ("outbox.sqlite3", "outbox.sqlite3-wal", "outbox.sqlite3-shm")}
    finally:
        database.close()

    assert files == {name: 0o600 for name in files}
