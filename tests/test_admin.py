"""The operator's commands, run through `diy-wsgi` in-process against a real database."""
import json
import re
import sqlite3
import time

import pytest

from diy.cli import main
from diy.config import load_config
from diy.signature import sign
from outbox.admin import Admin, DeadFilter
from outbox.backends import open_database
from outbox.store import Outbox, ReceivedMutation
from tests.processes import config_text, write_config
from tests.support import DMP_SECRET, mode_of

SIZES = {"demo": 100}


@pytest.fixture
def config_path(tmp_path, database_location):
    """On each backend."""
    return write_config(tmp_path, "http://127.0.0.1:9/events", diy={"database": database_location})


@pytest.fixture
def sqlite_config_path(tmp_path):
    """For the commands that work on the SQLite file."""
    return write_config(tmp_path, "http://127.0.0.1:9/events")


def open_outbox(config_path):
    config = load_config(config_path)
    return Outbox(open_database(config.database), retention=config.retention)


@pytest.fixture
def outbox(config_path):
    box = open_outbox(config_path)
    yield box
    box.database.close()


@pytest.fixture
def sqlite_outbox(sqlite_config_path):
    box = open_outbox(sqlite_config_path)
    yield box
    box.database.close()


@pytest.fixture
def sqlite_populated(sqlite_outbox):
    return populate(sqlite_outbox)


def add(outbox, op, audience, *users):
    outbox.enqueue("demo", op, [ReceivedMutation(audience, u, customer=7) for u in users], pass_through=True, now=time.time())


def settle_next(outbox, dead_reason=None):
    (claim,) = outbox.claim("test", now=time.time(), lease=60, limit=1, batch_sizes=SIZES)
    if dead_reason:
        outbox.dead_letter(claim, dead_reason, now=time.time())
    else:
        outbox.settle(claim, now=time.time())


@pytest.fixture
def populated(outbox):
    return populate(outbox)


def populate(outbox):
    """aud-1: two pending adds. aud-2: a dead add of u3, superseded when a later remove of u3
    was delivered, and a dead add of u4 that nothing superseded."""
    outbox.record_created("demo", "aud-1", name="Buyers", customer=7, target_id="T-1", key="aud-1", now=time.time())
    add(outbox, "add", "aud-1", "u1", "u2")
    add(outbox, "add", "aud-2", "u3", "u4")
    settle_next_for(outbox, "aud-2", dead_reason="HTTP 400: no such user")
    add(outbox, "remove", "aud-2", "u3")
    settle_next_for(outbox, "aud-2")
    return outbox


def settle_next_for(outbox, key, dead_reason=None):
    now = time.time()
    for claim in outbox.claim("test", now=now, lease=60, limit=10, batch_sizes=SIZES):
        if claim.audience.key != key:
            outbox.postpone(claim, at=now, now=now)
        elif dead_reason:
            outbox.dead_letter(claim, dead_reason, now=now)
        else:
            outbox.settle(claim, now=now)


def run(capsys, *args):
    code = main([*args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys, config_path, *args):
    code, out, err = run(capsys, *args, "--config", str(config_path), "--json")
    assert code == 0, err
    return json.loads(out)


def test_status_counts_pending_leased_and_dead_per_integration(populated, config_path, capsys):
    populated.claim("someone", now=time.time(), lease=600, limit=1, batch_sizes=SIZES)

    status = run_json(capsys, config_path, "status")

    demo = status["integrations"]["demo"]
    assert (demo["pending"], demo["leased"], demo["dead"], demo["audiences"]) == (2, 2, 1, 2), "u3's dead add is superseded"
    assert demo["oldest_pending_age"] >= 0
    assert status["files"]["database_bytes"] > 0


def test_status_prints_a_table(populated, config_path, capsys):
    code, out, _ = run(capsys, "status", "--config", str(config_path))

    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["integration", "pending", "leased", "dead"]
    assert out.splitlines()[1].split()[:4] == ["demo", "2", "0", "1"]


def test_dead_list_filters_by_audience(populated, config_path, capsys):
    populated.enqueue("demo", "add", [ReceivedMutation("aud-3", "u9")], pass_through=True, now=time.time())

    letters = run_json(capsys, config_path, "dead", "list", "--audience", "aud-2")

    assert [(d["external_user_id"], d["reason"]) for d in letters] == [("u4", "HTTP 400: no such user")]


def test_dead_show_gives_everything_kept(populated, config_path, capsys):
    (letter,) = run_json(capsys, config_path, "dead", "list")

    shown = run_json(capsys, config_path, "dead", "show", str(letter["id"]))

    assert shown["uuid"] is None and shown["customer"] == 7 and shown["op"] == "add"


def test_dead_replay_requeues_only_what_no_later_mutation_superseded(populated, config_path, capsys):
    result = run_json(capsys, config_path, "dead", "replay")

    assert result == {"replayed": 1, "superseded": 0}
    claims = populated.claim("test", now=time.time(), lease=60, limit=10, batch_sizes=SIZES)
    replayed = [m for c in claims if c.audience.key == "aud-2" for m in c.mutations]
    assert [(m.op, m.external_user_id) for m in replayed] == [("add", "u4")]


def test_a_dead_add_superseded_by_a_later_pending_remove_is_not_replayed(outbox, config_path, capsys):
    add(outbox, "add", "aud", "u1")
    settle_next(outbox, dead_reason="refused")
    add(outbox, "remove", "aud", "u1")

    result = run_json(capsys, config_path, "dead", "replay")

    assert result == {"replayed": 0, "superseded": 1}


def dead_letters_of(outbox, audience, users):
    add(outbox, "add", audience, *users)
    settle_next_for(outbox, audience, dead_reason="refused")


def test_replay_reads_the_later_batches_once_not_per_dead_letter(sqlite_outbox):
    """(SQLite's statement trace shows it; PostgreSQL runs the same replay code.)"""
    outbox = sqlite_outbox
    dead_letters_of(outbox, "aud", [f"u{i}" for i in range(50)])
    add(outbox, "remove", "aud", "u0")
    add(outbox, "add", "aud", "v1", "v2")
    statements = []
    outbox.database.connection().set_trace_callback(statements.append)

    assert Admin(outbox).replay(DeadFilter(), now=time.time(), chunk=20) == (49, 1)
    outbox.database.connection().set_trace_callback(None)
    reads_of_batch_contents = [s for s in statements if "json_each(b.mutations)" in s]
    assert len(reads_of_batch_contents) <= 1 + 3, "one read, then one per chunk for what was stored since"


def test_replay_sees_mutations_stored_while_it_runs(outbox):
    """A remove stored between two chunks supersedes a dead add of a later chunk."""
    dead_letters_of(outbox, "aud", ["u1", "u2", "u3"])

    def between_chunks(replayed, superseded):
        if replayed == 1:
            add(outbox, "remove", "aud", "u3")

    result = Admin(outbox).replay(DeadFilter(), now=time.time(), chunk=1, progress=between_chunks)

    assert result == (2, 1)
    claims = outbox.claim("test", now=time.time(), lease=60, limit=10, batch_sizes=SIZES)
    queued = [(m.op, m.external_user_id) for c in claims for m in c.mutations]
    assert queued == [("add", "u1"), ("remove", "u3"), ("add", "u2")]


def test_a_later_dead_letter_supersedes_and_a_second_replay_finds_nothing(outbox):
    dead_letters_of(outbox, "aud", ["u1"])
    dead_letters_of(outbox, "aud", ["u1"])
    admin = Admin(outbox)

    assert admin.replay(DeadFilter(), now=time.time()) == (1, 1)
    assert admin.replay(DeadFilter(), now=time.time()) == (0, 0)


def test_disk_times_flushes_in_the_database_folder_and_leaves_nothing_behind(sqlite_config_path, capsys):
    config_path = sqlite_config_path
    measured = run_json(capsys, config_path, "disk", "--seconds", "0.2")

    assert measured["folder"] == str(config_path.parent) and measured["block_bytes"] == 16384
    assert measured["flushes"] >= 1 and 0 < measured["p50_ms"] <= measured["p99_ms"] <= measured["max_ms"]
    assert not [p for p in config_path.parent.iterdir() if "flush-probe" in p.name]


def test_disk_names_a_folder_it_cannot_write_in(tmp_path, capsys):
    config_path = tmp_path / "diy.ini"
    config_path.write_text(config_text(tmp_path / "gone" / "outbox.sqlite3", "http://127.0.0.1:9/events"))

    code, _, err = run(capsys, "disk", "--seconds", "0.1", "--config", str(config_path))

    assert code == 2 and "cannot write a test file in" in err and "gone" in err


def test_dead_purge_needs_a_filter_or_all(populated, config_path, capsys):
    code, _, err = run(capsys, "dead", "purge", "--config", str(config_path))
    assert code == 2 and "--all" in err

    assert run_json(capsys, config_path, "dead", "purge", "--all") == {"purged": 1}
    assert run_json(capsys, config_path, "dead", "list") == []


def test_dead_purge_by_age_leaves_recent_ones(populated, config_path, capsys):
    assert run_json(capsys, config_path, "dead", "purge", "--older-than", "1h") == {"purged": 0}


def test_audiences_list_and_show(populated, config_path, capsys):
    audiences = run_json(capsys, config_path, "audiences", "list")
    shown = run_json(capsys, config_path, "audiences", "show", "aud-1")

    assert [(a["dmp_id"], a["target_id"], a["state"]) for a in audiences] == [("aud-1", "T-1", "ready"), ("aud-2", "aud-2", "ready")]
    assert shown["mutations"] == {"pending": 2}


def test_audiences_set_maps_by_hand(outbox, config_path, capsys):
    shown = run_json(capsys, config_path, "audiences", "set", "aud-9", "T-9")

    assert (shown["target_id"], shown["state"]) == ("T-9", "ready")


def test_audiences_forget_is_refused_while_mutations_wait(populated, config_path, capsys):
    code, _, err = run(capsys, "audiences", "forget", "aud-1", "--config", str(config_path))

    assert code == 2 and "2 pending" in err


def test_audiences_forget_deletes_a_finished_audience(outbox, config_path, capsys):
    add(outbox, "add", "aud", "u1")
    settle_next(outbox)

    assert run_json(capsys, config_path, "audiences", "forget", "aud") == {"forgotten": "aud"}
    assert run_json(capsys, config_path, "audiences", "list") == []


@pytest.mark.parametrize("secret,code", [(DMP_SECRET, 0), (b"other", 1)], ids=["valid", "invalid"])
def test_verify_checks_a_body_against_the_configured_secrets(config_path, tmp_path, capsys, secret, code):
    body = tmp_path / "body.json"
    body.write_bytes(b'{"Type":"VALIDATE"}')

    result, out, _ = run(capsys, "verify", "--config", str(config_path), "--signature", sign(secret, body.read_bytes()), str(body))

    assert result == code
    assert out.startswith("valid" if code == 0 else "invalid")
    assert DMP_SECRET.decode() not in out


def test_purge_deletes_delivered_rows_past_the_retention(outbox, config_path, capsys):
    add(outbox, "add", "aud", "u1")
    settle_next(outbox)
    with outbox.database.transaction() as connection:
        connection.execute("UPDATE batches SET finished_at = finished_at - 2 * 86400")

    assert run_json(capsys, config_path, "purge") == {"purged": 1}


def test_vacuum_truncates_the_wal(sqlite_populated, sqlite_config_path, capsys):
    result = run_json(capsys, sqlite_config_path, "vacuum")

    assert result["after"]["wal_bytes"] == 0


def test_backup_copies_the_live_database(sqlite_populated, sqlite_config_path, tmp_path, capsys):
    destination = tmp_path / "backup.sqlite3"

    result = run_json(capsys, sqlite_config_path, "backup", str(destination))

    assert result["bytes"] > 0
    copy = sqlite3.connect(destination)
    assert copy.execute("SELECT COUNT(*) FROM mutations WHERE state = 'pending'").fetchone() == (2,)
    assert run(capsys, "backup", str(destination), "--config", str(sqlite_config_path))[0] == 2, "never overwrites"


def test_a_backup_is_readable_by_its_owner_alone(sqlite_populated, sqlite_config_path, tmp_path, capsys, permissive_umask):
    destination = tmp_path / "backup.sqlite3"

    run_json(capsys, sqlite_config_path, "backup", str(destination))

    assert mode_of(destination) == 0o600


def test_check_finds_a_sound_database_sound_while_it_is_in_use(sqlite_populated, sqlite_config_path, capsys):
    result = run_json(capsys, sqlite_config_path, "check", "--full")

    assert (result["sound"], result["problems"]) == (True, [])


def test_check_reports_a_corrupt_backup_and_exits_1(sqlite_populated, sqlite_config_path, tmp_path, capsys):
    backup = tmp_path / "backup.sqlite3"
    run_json(capsys, sqlite_config_path, "backup", str(backup))
    page_size = sqlite3.connect(backup).execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(backup.read_bytes())
    data[2 * page_size:3 * page_size] = b"\xff" * page_size
    backup.write_bytes(bytes(data))

    code, out, _ = run(capsys, "check", "--file", str(backup), "--config", str(sqlite_config_path))

    assert code == 1
    assert "problem(s) found" in out and len(out.splitlines()) >= 2


@pytest.mark.parametrize("command", [("backup", "copy.sqlite3"), ("check",), ("vacuum",), ("disk",)])
def test_the_file_commands_on_postgresql_name_the_servers_own_tools(postgres_server, tmp_path, capsys, command):
    url = postgres_server.create_database()
    config_path = write_config(tmp_path, "http://127.0.0.1:9/events", diy={"database": url})

    code, _, err = run(capsys, *command, "--config", str(config_path))

    assert code == 2 and ("pg_dump" in err or "pg_test_fsync" in err), err
    assert len(err.strip().splitlines()) == 1


# What a person reads is printable; --json stays exact.

HOSTILE = "Buyers\x1b[2J\x1b]0;owned\x07\x00\u202e\ndemo  aud-9  T-9  ready  0  forged row"


def printed_and_exact(capsys, config_path, *command):
    """(the table or listing as printed, the same as --json)."""
    code, out, err = run(capsys, *command, "--config", str(config_path))
    assert code == 0, err
    return out, run_json(capsys, config_path, *command)


def assert_harmless(out, lines):
    """Each value on its line, escaped: no terminal control reaches the screen, no row is forged."""
    assert len(out.splitlines()) == lines
    assert all(line.isprintable() for line in out.splitlines()), out
    assert "Buyers\\x1b[2J\\x1b]0;owned\\x07\\x00\\u202e\\ndemo" in out


def test_a_hostile_audience_name_is_printed_escaped_by_audiences_list_and_show(sqlite_outbox, sqlite_config_path, capsys):
    """(Printing is the same on both backends; a NUL is refused before PostgreSQL would see it.)"""
    outbox, config_path = sqlite_outbox, sqlite_config_path
    outbox.record_created("demo", "aud-1", name=HOSTILE, customer=7, target_id="T-1", key="aud-1", now=time.time())

    listed, listed_json = printed_and_exact(capsys, config_path, "audiences", "list")
    shown, shown_json = printed_and_exact(capsys, config_path, "audiences", "show", "aud-1")

    assert_harmless(listed, lines=1 + len(listed_json))
    assert_harmless(shown, lines=len(shown_json))
    assert listed_json[0]["name"] == shown_json["name"] == HOSTILE


def test_a_hostile_platform_reason_is_printed_escaped_by_dead_list_and_show(sqlite_outbox, sqlite_config_path, capsys):
    """(Printing is the same on both backends; a NUL is refused before PostgreSQL would see it.)"""
    outbox, config_path = sqlite_outbox, sqlite_config_path
    add(outbox, "add", "aud-1", "u1")
    settle_next(outbox, dead_reason=HOSTILE)

    listed, listed_json = printed_and_exact(capsys, config_path, "dead", "list")
    shown, shown_json = printed_and_exact(capsys, config_path, "dead", "show", str(listed_json[0]["id"]))

    assert_harmless(listed, lines=1 + len(listed_json))
    assert_harmless(shown, lines=len(shown_json))
    assert listed_json[0]["reason"] == shown_json["reason"] == HOSTILE


# Moving an SQLite outbox to PostgreSQL.

def test_migrate_moves_the_outbox_into_an_empty_postgresql_database_keeping_ids_and_order(
        sqlite_populated, sqlite_config_path, postgres_server, capsys):
    url = postgres_server.create_database()
    add(sqlite_populated, "add", "aud-1", "u9")
    before = [(c.audience.key, [m.id for m in c.mutations])
              for c in sqlite_populated.claim("peek", now=time.time(), lease=0, limit=10, batch_sizes=SIZES)]
    sqlite_populated.release("peek")
    for owner in ("peek", "test"):
        sqlite_populated.retire(owner)

    moved = run_json(capsys, sqlite_config_path, "migrate", "--to", url)

    assert (moved["audiences"], moved["pending"], moved["dead_letters"]) == (2, 3, 2)
    target = Outbox(open_database(url))
    try:
        after = [(c.audience.key, [m.id for m in c.mutations])
                 for c in target.claim("d", now=time.time(), lease=60, limit=10, batch_sizes=SIZES)]
        assert after == before
        assert target.counts("demo") == {"pending": 3, "done": 0, "dead": 1}
        assert target.audience("demo", "aud-1").target_id == "T-1"
        assert target.audience("demo", "aud-1").customer == 7
        add(target, "add", "aud-3", "new")
        newest = max(row[0] for row in target.database.read("SELECT id FROM batches"))
        oldest_unused = max(row[0] for row in sqlite_populated.database.read("SELECT id FROM batches"))
        assert newest > oldest_unused, "new ids follow every id the file handed out"
    finally:
        target.database.close()
    assert run(capsys, "migrate", "--to", url, "--config", str(sqlite_config_path))[0] == 2, "never into a full one"


def test_migrate_refuses_while_a_dispatcher_is_running_on_the_file(sqlite_outbox, sqlite_config_path,
                                                                   postgres_server, capsys):
    sqlite_outbox.heartbeat("vm:123:abc", now=time.time())

    code, _, err = run(capsys, "migrate", "--to", postgres_server.create_database(), "--config", str(sqlite_config_path))

    assert code == 2 and "a dispatcher is running on this outbox (vm:123:abc" in err


# The platform is back: retry now.

def in_backoff(outbox, key, *users, seconds=600):
    """`users` added to `key`, whose delivery failed and waits `seconds` for its retry."""
    add(outbox, "add", key, *users)
    now = time.time()
    for claim in outbox.claim("test", now=now, lease=60, limit=10, batch_sizes=SIZES):
        outbox.retry_later(claim, "connection refused", at=now + seconds, now=now)


def due_now(outbox):
    """The audiences a dispatcher would claim now. (The command dates by the database's clock,
    which on PostgreSQL may be some milliseconds off this one: a second is allowed for it.)"""
    now = time.time() + 1
    claims = outbox.claim("peek", now=now, lease=60, limit=10, batch_sizes=SIZES)
    for claim in claims:
        outbox.postpone(claim, at=now, now=now)
    return sorted(claim.audience.key for claim in claims)


def test_retry_now_makes_audiences_waiting_for_a_retry_due_at_once(outbox, config_path, capsys):
    in_backoff(outbox, "aud-1", "u1", "u2")
    in_backoff(outbox, "aud-2", "u3")
    assert due_now(outbox) == []

    assert run_json(capsys, config_path, "retry-now") == {"audiences": 2, "mutations": 3}

    assert due_now(outbox) == ["aud-1", "aud-2"]


def test_retry_now_of_one_audience_leaves_the_others_waiting(outbox, config_path, capsys):
    in_backoff(outbox, "aud-1", "u1")
    in_backoff(outbox, "aud-2", "u2")

    assert run_json(capsys, config_path, "retry-now", "--audience", "aud-2") == {"audiences": 1, "mutations": 1}

    assert due_now(outbox) == ["aud-2"]


def test_retry_now_says_when_nothing_waits(outbox, config_path, capsys):
    add(outbox, "add", "aud-1", "u1")

    code, out, _ = run(capsys, "retry-now", "--config", str(config_path))

    assert (code, out) == (0, "nothing was waiting for a retry\n")


# Only `audiences set` (and the service) creates the database.

ON_A_DATABASE = [("dead", "list"), ("dead", "show", "1"), ("dead", "replay"), ("dead", "purge", "--all"),
                 ("audiences", "list"), ("audiences", "show", "aud-1"), ("audiences", "forget", "aud-1"),
                 ("retry-now",), ("purge",), ("vacuum",), ("check",), ("backup", "copy.sqlite3"),
                 ("migrate", "--to", "postgresql://x/y")]


@pytest.mark.parametrize("command", ON_A_DATABASE, ids=[" ".join(c[:2]) for c in ON_A_DATABASE])
def test_a_command_on_a_database_not_yet_created_says_so_in_one_line_and_creates_nothing(
        sqlite_config_path, capsys, monkeypatch, command):
    monkeypatch.chdir(sqlite_config_path.parent)  # where backup would write its copy

    code, out, err = run(capsys, *command, "--config", str(sqlite_config_path))

    assert code == 2 and out == ""
    assert err.startswith("diy-wsgi: no database at ") and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in sqlite_config_path.parent.iterdir()) == ["diy.ini"]


def test_status_before_the_database_exists_shows_the_configured_integrations_with_nothing_in_them(
        sqlite_config_path, capsys):
    code, out, _ = run(capsys, "status", "--config", str(sqlite_config_path))
    status = run_json(capsys, sqlite_config_path, "status")

    assert code == 0
    assert out.splitlines()[1].split()[:4] == ["demo", "0", "0", "0"]
    assert out.splitlines()[-1].startswith("no database at ")
    assert status["integrations"]["demo"]["pending"] == 0 and status["files"] is None
    assert sorted(p.name for p in sqlite_config_path.parent.iterdir()) == ["diy.ini"]


def test_status_of_a_fresh_database_shows_the_configured_integrations(outbox, config_path, capsys):
    outbox.heartbeat("someone", now=time.time())  # the service has opened it, and stored nothing yet

    status = run_json(capsys, config_path, "status")

    assert status["integrations"] == {"demo": {
        "pending": 0, "leased": 0, "dead": 0, "oldest_pending_age": None, "audiences": 0,
        "audiences_creating": 0, "audiences_failed": 0, "last_error": None}}


# What a person reads: times, words, dashes; --json stays as it was.

LOCAL_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d"


def test_dead_show_prints_local_times_and_a_dash_for_what_is_missing(populated, config_path, capsys):
    (letter,) = run_json(capsys, config_path, "dead", "list")

    code, out, _ = run(capsys, "dead", "show", str(letter["id"]), "--config", str(config_path))

    fields = dict(line.strip().split("  ", 1) for line in out.splitlines())
    assert code == 0
    assert re.fullmatch(LOCAL_TIME, fields["died_at"].strip()) and re.fullmatch(LOCAL_TIME, fields["received_at"].strip())
    assert fields["uuid"].strip() == "-" and "None" not in out
    assert isinstance(run_json(capsys, config_path, "dead", "show", str(letter["id"]))["died_at"], float)


def test_audiences_show_counts_mutations_in_words(populated, config_path, capsys):
    code, out, _ = run(capsys, "audiences", "show", "aud-1", "--config", str(config_path))

    assert code == 0
    assert "  2 pending\n" in out and "{" not in out and "None" not in out


def test_audiences_list_shows_the_id_the_dmp_sends_beside_the_platform_id(outbox, config_path, capsys):
    outbox.record_created("demo", "a5940e473cea659.3566", name="Buyers", customer=7, target_id="sbx-1", key="sbx-1",
                          now=time.time())

    code, out, _ = run(capsys, "audiences", "list", "--config", str(config_path))

    header, row = out.splitlines()
    assert header.split()[:5] == ["integration", "dmp", "id", "dmp", "sends"]
    assert row.split()[:4] == ["demo", "a5940e473cea659.3566", "sbx-1", "sbx-1"]


def test_progress_is_never_printed_where_stderr_is_not_a_terminal(populated, config_path, capsys):
    for command in (("dead", "replay"), ("dead", "purge", "--all"), ("purge",)):
        code, _, err = run(capsys, *command, "--config", str(config_path), "--json")
        assert (code, err) == (0, ""), command


# Which integration an audience is in.

@pytest.fixture
def two_integrations(tmp_path, database_location):
    return write_config(tmp_path, "http://127.0.0.1:9/events", diy={"database": database_location}, sections={
        "integration:other": {"path": "/other", "hmac_secrets": "another-secret-0123", "target": "webhook",
                              "target.url": "http://127.0.0.1:9/events"}})


def test_audiences_show_finds_the_one_integration_that_has_the_audience(outbox, two_integrations, capsys):
    add(outbox, "add", "aud-1", "u1")

    assert run_json(capsys, two_integrations, "audiences", "show", "aud-1")["integration"] == "demo"


def test_audiences_show_of_an_audience_in_several_integrations_names_them(outbox, two_integrations, capsys):
    add(outbox, "add", "aud-1", "u1")
    outbox.enqueue("other", "add", [ReceivedMutation("aud-1", "u1")], pass_through=True, now=time.time())

    code, _, err = run(capsys, "audiences", "show", "aud-1", "--config", str(two_integrations))

    assert code == 2 and len(err.splitlines()) == 1
    assert "audience aud-1 is in several integrations (demo, other); name one with --integration" in err
