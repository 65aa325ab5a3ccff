"""Storage faults: a database that cannot take the write answers 503, never 200 for unstored data.

Under continuous signed load, the outbox is locked by another process past `write_timeout`,
its disk fills up, its files become unwritable; a file that is not our outbox sits at the
database path. Each time the DMP gets 503 (nothing stored: it sends again), the service recovers
by itself when the fault clears, and afterwards every request's rows in the database match its
200s exactly (a 503 stored nothing, a 200 stored everything). Start-up refuses such a database
with exit code 2 and a message that names the problem.

Mounting a size-limited tmpfs and a read-only bind mount need root; `chattr +i` needs a file
system that has it. Where they are missing the test is skipped with the reason.
"""
import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from diy_wsgi import make_app
from reliability import pick
from reliability.checker import check_files, load_requests
from reliability.harness import (
    ROOT,
    Diy,
    LoadGenerator,
    config_text,
    dmp_post,
    free_port,
    outbox_counts,
    stored_uuids,
    wait_for_port,
    wait_until,
    write_config,
)
from diy.config import parse_config
from outbox.db import Database
from tests.support import call, mutation, mutations_body

pytestmark = pytest.mark.reliability

FAULT_SECONDS = pick(1.5, 10.0)
CYCLES = pick(1, 3)


# Faults of the file system.

def run(*command):
    return subprocess.run(command, capture_output=True, text=True)


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (mount, chattr)")


@contextlib.contextmanager
def tmpfs(path, size):
    """A size-limited tmpfs at `path`, or a skip saying why there cannot be one."""
    need_root()
    path.mkdir()
    done = run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        run("umount", "-l", str(path))


@contextlib.contextmanager
def read_only(path):
    """`path` bind-mounted read-only onto itself: even root cannot write there."""
    need_root()
    done = run("mount", "--bind", str(path), str(path))
    if done.returncode:
        pytest.skip(f"cannot bind-mount here: {done.stderr.strip()}")
    try:
        done = run("mount", "-o", "remount,bind,ro", str(path))
        if done.returncode:
            pytest.skip(f"cannot remount read-only here: {done.stderr.strip()}")
        yield path
    finally:
        run("umount", "-l", str(path))


@contextlib.contextmanager
def immutable(*paths):
    """`chattr +i` on `paths` (root cannot write them either), undone at the end.

    The WAL index (-shm) is left alone: SQLite maps it into memory, and a mapping that cannot
    be written is a SIGBUS, which no program survives; the database and its WAL are enough.
    """
    need_root()
    if not shutil.which("chattr"):
        pytest.skip("chattr is not installed")
    done = [p for p in paths if run("chattr", "+i", str(p)).returncode == 0]
    try:
        if len(done) != len(paths):
            pytest.skip("this file system does not support chattr +i")
        yield
    finally:
        for path in done:
            run("chattr", "-i", str(path))


def fill(directory):
    """Write a filler file until the file system is full; returns its path."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as stream:
        for size in (65536, 4096, 512, 1):  # down to the last byte
            with contextlib.suppress(OSError):
                while True:
                    stream.write(b"\0" * size)
    return filler


# Checks.

def assert_every_200_stored_and_every_503_not(load, database):
    """Per request, the rows with its uuids equal its 200s: a 503 stored nothing."""
    stored = stored_uuids(database)
    mismatched = []
    for request in load_requests(load.journal).values():
        if not request.mutations or request.unknown or None in request.statuses or 500 in request.statuses:
            continue  # an answer that says nothing about what was stored
        expected = request.statuses.count(200)
        counts = Counter(uuid for _, _, uuid in request.mutations)
        for uuid, times in counts.items():
            if stored.get(uuid, 0) != expected * times:
                mismatched.append((request.req, uuid, request.statuses, stored.get(uuid, 0)))
    assert mismatched == [], mismatched[:5]


def statuses(load):
    return Counter(status for request in load_requests(load.journal).values() for status in request.statuses)


def under_load(tmp_path, processes, receiver, database, prefix):
    config = write_config(tmp_path, receiver.url, database=database, diy={"write_timeout": "0.5s"})
    port = free_port()
    server = Diy(tmp_path, "serve", "--config", config, "--port", port)
    processes.append(server)
    wait_for_port(port, server)
    load = LoadGenerator(tmp_path, port, audiences=4, users=8, threads=2, rate=20, duration=0, max_mutations=10,
                         prefix=prefix)
    processes.append(load)
    wait_until(lambda: statuses(load)[200] >= 5, what="the first acknowledged requests", processes=[server, load])
    return server, port, load


@contextlib.contextmanager
def faulty(load, server, port, expect):
    """Inside: the load sees 503s, and a request gets 503 with a message naming the fault.
    After: the load gets 200s again."""
    before = statuses(load)
    yield
    wait_until(lambda: statuses(load)[503] > before[503], timeout=30, what="the load to see a 503",
               processes=[server])
    status, answer = dmp_post(port, "ADD_TO_AUDIENCE", mutations_body("ADD_TO_AUDIENCE", mutation("probe", "p")))
    assert status == 503, answer
    assert expect in answer["error"], answer
    time.sleep(FAULT_SECONDS)


def recovered(load, server):
    seen = statuses(load)[200]
    wait_until(lambda: statuses(load)[200] >= seen + 3, timeout=30, what="200s again once the fault cleared",
               processes=[server])


def after_recovery(tmp_path, load, receiver, server, database, figures, fault):
    summary = load.finish()
    wait_until(lambda: outbox_counts(database)["pending"] == 0, timeout=60, what="the outbox to drain",
               processes=[server])
    report = check_files(load.journal, receiver.journal)
    counted = statuses(load)
    figures.add(storage_faults=CYCLES, requests_sent=summary["requests"], acknowledged=summary["acknowledged"],
                answered_503=counted[503], mutations_lost=report.lost)
    figures.note(f"{fault}: {counted[503]} answers 503, {counted[200]} answers 200, {counted[500]} answers 500")
    assert summary["given_up"] == 0, summary
    assert_every_200_stored_and_every_503_not(load, database)
    assert report.ok, report.explain()
    assert counted[500] == 0, summary


# The service under load.

def test_a_database_locked_past_write_timeout_answers_503_and_recovers(tmp_path, processes, receiver, figures):
    database = tmp_path / "outbox.sqlite3"
    server, port, load = under_load(tmp_path, processes, receiver, database, "locked")
    for _ in range(CYCLES):
        holder = sqlite3.connect(str(database), isolation_level=None, timeout=10)
        try:
            with faulty(load, server, port, "locked"):
                holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        recovered(load, server)
    after_recovery(tmp_path, load, receiver, server, database, figures, "locked")


def test_a_full_disk_answers_503_and_recovers_when_space_is_freed(tmp_path, processes, receiver, figures):
    with tmpfs(tmp_path / "small", "16m") as disk:
        database = disk / "outbox.sqlite3"
        server, port, load = under_load(tmp_path, processes, receiver, database, "full")
        for _ in range(CYCLES):
            try:
                with faulty(load, server, port, "full"):
                    filler = fill(disk)
            finally:
                filler.unlink()
            recovered(load, server)
        after_recovery(tmp_path, load, receiver, server, database, figures, "disk full")
        server.kill()


def test_unwritable_database_files_answer_503_and_recover(tmp_path, processes, receiver, figures):
    database = tmp_path / "outbox.sqlite3"
    server, port, load = under_load(tmp_path, processes, receiver, database, "immutable")
    for _ in range(CYCLES):
        with immutable(database, Path(f"{database}-wal")):
            with faulty(load, server, port, "database"):
                pass
        recovered(load, server)
    after_recovery(tmp_path, load, receiver, server, database, figures, "chattr +i")


def test_a_metrics_file_that_cannot_be_written_never_changes_the_answer(tmp_path):
    """Was a 500 for committed mutations: the metrics write (in <database>.metrics, beside the
    outbox, so a full disk fails it too) raised out of DiyApp.__call__ after the commit."""
    database = tmp_path / "outbox.sqlite3"
    (tmp_path / "outbox.sqlite3.metrics").write_text("a file where the metrics folder goes")
    text = config_text(database, "http://127.0.0.1:9/events")
    app = make_app(parse_config(text, source="test.ini", base_dir=tmp_path, environ={}))
    try:
        response = call(app, query="type=ADD_TO_AUDIENCE", secret=b"s3cr3t",
                        body=mutations_body("ADD_TO_AUDIENCE", mutation("aud", "u1")))
    finally:
        committed = app.outbox.counts()["pending"]
        app.stop()
    assert (response.status, committed) == (200, 1)


# A file that is not our outbox.

def foreign(path):
    with contextlib.closing(sqlite3.connect(str(path))) as connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        connection.commit()


def not_a_database(path):
    path.write_bytes(b"this is a log file, not a database\n" * 200)


def newer_schema(path):
    with contextlib.closing(sqlite3.connect(str(path))) as connection:
        connection.execute("PRAGMA user_version = 99")
        connection.commit()


FOREIGN_FILES = {
    "foreign-sqlite": (foreign, "not a diy-wsgi outbox"),
    "not-a-database": (not_a_database, "file is not a database"),
    "newer-schema": (newer_schema, "schema version 99"),
}


@pytest.mark.parametrize("kind", list(FOREIGN_FILES), ids=list(FOREIGN_FILES))
def test_a_foreign_file_at_the_database_path_answers_503_until_it_is_moved_away(kind, tmp_path, figures):
    make, expect = FOREIGN_FILES[kind]
    database = tmp_path / "outbox.sqlite3"
    make(database)
    text = config_text(database, "http://127.0.0.1:9/events", diy={"write_timeout": "0.5s"})
    app = make_app(parse_config(text, source="test.ini", base_dir=tmp_path, environ={}))
    try:
        body = mutations_body("ADD_TO_AUDIENCE", mutation("aud", "u1"))
        refused = call(app, query="type=ADD_TO_AUDIENCE", body=body, secret=b"s3cr3t")
        assert refused.status == 503, refused.body
        assert expect in refused.json()["error"]
        original = database.read_bytes()

        database.rename(tmp_path / "moved-away")
        accepted = call(app, query="type=ADD_TO_AUDIENCE", body=body, secret=b"s3cr3t")
        assert accepted.status == 200, accepted.body
        assert (tmp_path / "moved-away").read_bytes() == original, "the foreign file was not touched"
        figures.add(storage_faults=1)
    finally:
        app.stop()


def test_a_corrupt_outbox_answers_503_never_200(tmp_path, figures):
    database = tmp_path / "outbox.sqlite3"
    text = config_text(database, "http://127.0.0.1:9/events", diy={"write_timeout": "0.5s"})
    config = parse_config(text, source="test.ini", base_dir=tmp_path, environ={})
    app = make_app(config)
    body = mutations_body("ADD_TO_AUDIENCE", *[mutation("aud", f"u{i}", Padding="x" * 200) for i in range(200)])
    assert call(app, query="type=ADD_TO_AUDIENCE", body=body, secret=b"s3cr3t").status == 200
    app.stop()
    with contextlib.closing(sqlite3.connect(str(database))) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    with open(database, "r+b") as stream:  # every page but the first (the header) is garbage
        size = stream.seek(0, os.SEEK_END)
        stream.seek(page_size)
        stream.write(os.urandom(size - page_size))

    app = make_app(config)
    try:
        answer = call(app, query="type=ADD_TO_AUDIENCE", body=mutations_body("ADD_TO_AUDIENCE", mutation("aud", "x")),
                      secret=b"s3cr3t")
        assert answer.status == 503, answer.body
        assert "malformed" in answer.json()["error"] or "not a database" in answer.json()["error"]
        figures.add(storage_faults=1)
    finally:
        app.stop()


@pytest.mark.skipif(shutil.which("gunicorn") is None and not Path(sys.executable).with_name("gunicorn").exists(),
                    reason="gunicorn is not installed")
def test_gunicorn_workers_with_a_foreign_database_answer_503_then_recover(tmp_path, processes, figures):
    from reliability.harness import Gunicorn

    database = tmp_path / "outbox.sqlite3"
    foreign(database)
    config = write_config(tmp_path, "http://127.0.0.1:9/events", database=database)
    port = free_port()
    gunicorn = Gunicorn(tmp_path, config, port, workers=2)
    processes.append(gunicorn)
    wait_for_port(port, gunicorn)
    body = mutations_body("ADD_TO_AUDIENCE", mutation("aud", "u1"))
    for _ in range(4):
        status, answer = dmp_post(port, "ADD_TO_AUDIENCE", body)
        assert status == 503 and "not a diy-wsgi outbox" in answer["error"], answer
    database.rename(tmp_path / "moved-away")
    wait_until(lambda: dmp_post(port, "ADD_TO_AUDIENCE", body)[0] == 200, timeout=15, what="recovery",
               processes=[gunicorn])
    assert gunicorn.running
    figures.add(storage_faults=1)


# Start-up.

def start(tmp_path, database):
    config = write_config(tmp_path, "http://127.0.0.1:9/events", database=database, diy={"write_timeout": "0.5s"})
    try:
        done = subprocess.run([sys.executable, "-m", "diy", "serve", "--config", str(config), "--port", "0"],
                              cwd=ROOT, capture_output=True, text=True, timeout=20,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        pytest.fail("diy-wsgi serve started on a database it cannot use")
    return done.returncode, [line for line in done.stderr.splitlines() if line.startswith("diy-wsgi:")]


@pytest.mark.parametrize("kind", list(FOREIGN_FILES), ids=list(FOREIGN_FILES))
def test_serve_refuses_to_start_on_a_foreign_file_and_says_why(kind, tmp_path):
    make, expect = FOREIGN_FILES[kind]
    make(tmp_path / "outbox.sqlite3")
    code, message = start(tmp_path, tmp_path / "outbox.sqlite3")
    assert code == 2
    assert len(message) == 1 and expect in message[0] and str(tmp_path / "outbox.sqlite3") in message[0], message


def test_serve_refuses_to_start_on_a_locked_database_and_says_why(tmp_path):
    database = tmp_path / "outbox.sqlite3"
    with contextlib.closing(sqlite3.connect(str(database), isolation_level=None)) as holder:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("BEGIN IMMEDIATE")
        code, message = start(tmp_path, database)
    assert code == 2
    assert len(message) == 1 and "locked" in message[0] and str(database) in message[0], message


def test_serve_refuses_to_start_on_a_full_disk_and_says_why(tmp_path):
    with tmpfs(tmp_path / "small", "256k") as disk:
        fill(disk)
        code, message = start(tmp_path, disk / "outbox.sqlite3")
    assert code == 2
    assert len(message) == 1 and "full" in message[0] and str(disk / "outbox.sqlite3") in message[0], message


def test_serve_refuses_to_start_on_a_read_only_database_and_says_why(tmp_path):
    """Once said only 'unable to open database file' (SQLite cannot create the -wal and -shm files)."""
    folder = tmp_path / "data"
    folder.mkdir()
    database = folder / "outbox.sqlite3"
    outbox = Database(database)
    outbox.connection()
    outbox.close()  # the last connection to close removes the -wal and -shm files
    assert database.exists() and not Path(f"{database}-wal").exists()
    with read_only(folder):
        code, message = start(tmp_path, database)
    assert code == 2
    assert len(message) == 1 and str(database) in message[0], message
    assert "read-only" in message[0] or "readonly" in message[0], message
