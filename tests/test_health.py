"""/healthz, /readyz and /metrics, in-process through wsgiref.validate."""
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from diy.health import public_reason
from diy.metrics import Metrics, render
from diy_wsgi import make_app
from outbox.errors import StoreUnavailable
from tests.processes import ROOT, write_config
from tests.support import call, make_config, mode_of, mutation, mutations_body, parse_metrics

LOOPBACK = {"REMOTE_ADDR": "127.0.0.1"}
@pytest.fixture
def build(tmp_path):
    apps = []

    def build(**sections):
        app = make_app(make_config(tmp_path, "http://127.0.0.1:9/events", **sections))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.stop()


def test_healthz_answers_while_the_process_lives(build):
    response = call(build(), "GET", path="/healthz")

    assert (response.status, response.json()) == (200, {"status": "ok"})


def test_readyz_needs_the_embedded_dispatcher_running(build):
    app = build()
    assert call(app, "GET", path="/readyz").status == 503

    app.start()

    assert call(app, "GET", path="/readyz").json() == {"status": "ready"}


def test_readyz_without_an_embedded_dispatcher_looks_for_a_heartbeat(build, clock):
    app = build(dispatcher={"embedded": "no"})
    app.probes.readiness.clock = clock
    response = call(app, "GET", path="/readyz")
    assert response.status == 503 and "diy-wsgi dispatch" in response.json()["error"]

    app.outbox.heartbeat("elsewhere:1:abc", now=time.time())
    clock.advance(1.0)

    assert call(app, "GET", path="/readyz").status == 200


def test_readyz_reports_a_database_that_cannot_take_writes(build):
    app = build()
    app.start()
    blocker = sqlite3.connect(app.config.database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        response = call(app, "GET", path="/readyz")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    assert response.status == 503 and response.json()["error"].startswith("database:")


def locked(database):
    """Another process's connection holding the SQLite write lock (close it to let go)."""
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


def test_readyz_asks_the_database_at_most_once_a_second(build, clock):
    app = build()
    app.start()
    app.probes.readiness.clock = clock
    assert call(app, "GET", path="/readyz").status == 200
    blocker = locked(app.config.database)
    try:
        started = time.monotonic()
        within_the_second = call(app, "GET", path="/readyz")
        waited = time.monotonic() - started
        clock.advance(1.0)
        a_second_later = call(app, "GET", path="/readyz")
    finally:
        blocker.close()

    assert within_the_second.status == 200 and waited < app.config.write_timeout / 2, "no second check, no wait"
    assert a_second_later.status == 503 and "locked" in a_second_later.json()["error"]


def test_probes_arriving_together_wait_for_one_check_at_most(build, clock):
    app = build()
    app.start()
    app.probes.readiness.clock = clock
    call(app, "GET", path="/readyz")
    clock.advance(1.0)
    blocker = locked(app.config.database)
    answers = []

    def probe():
        started = time.monotonic()
        status = call(app, "GET", path="/readyz").status
        answers.append((status, time.monotonic() - started))

    try:
        threads = [threading.Thread(target=probe) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        blocker.close()

    waited = [status for status, seconds in answers if seconds >= app.config.write_timeout * 0.8]
    assert waited == [503], f"one check waited for the lock, the others answered at once: {sorted(answers)}"


def test_public_answers_name_no_file_path(tmp_path, caplog):
    config = make_config(tmp_path, "http://127.0.0.1:9/events", diy={"database": str(tmp_path / "gone" / "outbox.sqlite3"),
                                                                       "metrics_dir": str(tmp_path / "metrics")})
    app = make_app(config)
    try:
        ready = call(app, "GET", path="/readyz")
        stored = call(app, query="type=ADD_TO_AUDIENCE", body=mutations_body("ADD_TO_AUDIENCE", mutation("a", "u1")))
    finally:
        app.stop()

    assert (ready.status, stored.status) == (503, 503)
    assert "cannot open" in ready.json()["error"] and "cannot open" in stored.json()["error"]
    assert str(tmp_path) not in ready.body.decode() + stored.body.decode()
    assert str(tmp_path / "gone") in caplog.text, "the log keeps the details"


SQLITE_FILE = "/srv/diy/outbox.sqlite3"
POSTGRES_URL = "postgresql://diy@db.internal:5432/outbox"


@pytest.mark.parametrize("location, message, public", [
    (SQLITE_FILE, f"cannot open the database {SQLITE_FILE}: disk I/O error", "cannot open the database: disk I/O error"),
    (POSTGRES_URL, f"PostgreSQL at {POSTGRES_URL} is unavailable: connection failed: connection to server"
     ' at "10.0.0.5", port 5432 failed: Connection refused',
     "PostgreSQL is unavailable: connection failed: connection to server failed: Connection refused"),
    (SQLITE_FILE, f"the database {SQLITE_FILE} has schema version 99, see /usr/share/doc/diy",
     "the database has schema version 99, see <path>"),
], ids=["sqlite-path", "postgresql-url-and-address", "other-paths"])
def test_a_public_reason_keeps_what_is_wrong_and_drops_where(location, message, public):
    assert public_reason(StoreUnavailable(message), location) == public


def test_probes_need_no_signature_and_refuse_posts(build):
    response = call(build(), "POST", path="/healthz", body=b"", signed=False)

    assert response.status == 405


def test_metrics_counts_requests_and_reads_the_outbox(build):
    app = build()
    call(app, query="type=ADD_TO_AUDIENCE", body=mutations_body("ADD_TO_AUDIENCE", mutation("a", "u1"), mutation("a", "u2")))
    call(app, query="type=ADD_TO_AUDIENCE", body=b"{}", signed=False)

    response = call(app, "GET", path="/metrics", environ=LOOPBACK)

    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = parse_metrics(response.body.decode())
    add = (("method", "POST"), ("type", "ADD_TO_AUDIENCE"))
    ok = ("diy_requests_total", (("integration", "demo"),) + add + (("status", "200"),))
    refused = ("diy_requests_total", (("integration", "demo"),) + add + (("status", "401"),))
    assert (samples[ok], samples[refused]) == (1, 1)
    assert samples[("diy_outbox_mutations", (("integration", "demo"), ("state", "pending")))] == 2
    assert samples[("diy_request_duration_seconds_count", add)] == 2
    assert samples[("diy_request_duration_seconds_bucket", add + (("le", "+Inf"),))] == 2


DOCUMENTED_AT_ZERO = [
    ("diy_requests_total", (("integration", "demo"), ("method", "POST"), ("type", "ADD_TO_AUDIENCE"), ("status", "200"))),
    ("diy_requests_total", (("integration", "demo"), ("method", "POST"), ("type", "ADD_TO_AUDIENCE"), ("status", "503"))),
    ("diy_requests_total", (("integration", "demo"), ("method", "GET"), ("type", "none"), ("status", "200"))),
    ("diy_request_duration_seconds_count", (("method", "POST"), ("type", "CREATE_AUDIENCE"))),
    *[("diy_deliveries_total", (("integration", "demo"), ("result", result)))
      for result in ("delivered", "partial", "retry", "dead", "created", "refused", "held", "unauthorized")],
    *[("diy_delivered_mutations_total", (("integration", "demo"), ("result", result))) for result in ("delivered", "dead")],
    ("diy_delivery_call_seconds_count", (("integration", "demo"),)),
    ("diy_delivery_latency_seconds_count", (("integration", "demo"),)),
    *[("diy_outbox_mutations", (("integration", "demo"), ("state", state))) for state in ("pending", "leased", "dead")],
    ("diy_outbox_oldest_pending_age_seconds", (("integration", "demo"), ("target", "webhook"))),
    ("diy_dead_letters", (("integration", "demo"), ("target", "webhook"))),
    *[("diy_audiences", (("integration", "demo"), ("state", state))) for state in ("creating", "ready", "failed")],
    ("diy_dispatchers_alive", ()),
    ("diy_account_credentials_refused", (("integration", "demo"), ("account", "demo"))),
]


def test_every_documented_series_is_there_at_zero_before_anything_happens(build):
    """An alert on the oldest pending age, or on increase() of the 503s, needs the series at 0:
    one that appears only with its first event hides that event from rate() and increase()."""
    samples = parse_metrics(call(build(), "GET", path="/metrics", environ=LOOPBACK).body.decode())

    assert {series: samples.get(series) for series in DOCUMENTED_AT_ZERO} == {series: 0 for series in DOCUMENTED_AT_ZERO}


def test_the_oldest_pending_age_is_zero_once_everything_is_delivered(receiver_for, tmp_path):
    receiver = receiver_for()
    app = make_app(make_config(tmp_path, receiver.url))
    try:
        call(app, query="type=ADD_TO_AUDIENCE", body=mutations_body("ADD_TO_AUDIENCE", mutation("a", "u1")))
        while app.service.dispatcher.run_once():  # create the audience, then deliver
            pass
        samples = parse_metrics(call(app, "GET", path="/metrics", environ=LOOPBACK).body.decode())
    finally:
        app.stop()

    assert receiver.members == {"a": {"u1"}}
    assert samples[("diy_outbox_oldest_pending_age_seconds", (("integration", "demo"), ("target", "webhook")))] == 0


def test_audiences_are_counted_by_state_without_a_total_series(build):
    """A total beside its parts would double every sum(); sum(diy_audiences) is the total."""
    app = build(integration={"return_target_id": "yes"})
    call(app, query="type=CREATE_AUDIENCE", body={"Type": "CREATE_AUDIENCE", "Name": "n", "Customer": 1, "Audience": "new"})
    call(app, query="type=ADD_TO_AUDIENCE", body=mutations_body("ADD_TO_AUDIENCE", mutation("passed-through", "u1")))

    samples = parse_metrics(call(app, "GET", path="/metrics", environ=LOOPBACK).body.decode())

    states = {dict(labels)["state"]: value for (name, labels), value in samples.items() if name == "diy_audiences"}
    assert states == {"creating": 1, "ready": 1, "failed": 0}


@pytest.mark.parametrize("method, query, labels", [
    ("GET", "", (("method", "GET"), ("type", "none"))),
    ("HEAD", "type=VALIDATE", (("method", "HEAD"), ("type", "VALIDATE"))),
    ("POST", "type=REMOVE_FROM_AUDIENCE", (("method", "POST"), ("type", "REMOVE_FROM_AUDIENCE"))),
    ("POST", "type=FROBNICATE", (("method", "POST"), ("type", "unknown"))),
    ("PUT", "", (("method", "other"), ("type", "none"))),
], ids=["get-validation", "head", "dmp-type", "unknown-type", "other-method"])
def test_requests_are_labelled_by_http_method_and_dmp_type_apart(build, method, query, labels):
    app = build()
    status = call(app, method, query=query, body=b"{}").status

    samples = parse_metrics(call(app, "GET", path="/metrics", environ=LOOPBACK).body.decode())

    assert samples[("diy_requests_total", (("integration", "demo"),) + labels + (("status", str(status)),))] == 1


def test_unknown_types_and_paths_do_not_become_labels(build):
    app = build()
    call(app, query="type=" + "X" * 50, body=b"{}")
    call(app, path="/nowhere", query="type=whatever", body=b"{}")

    text = call(app, "GET", path="/metrics", environ=LOOPBACK).body.decode()

    assert "XXXX" not in text and "whatever" not in text and "nowhere" not in text


@pytest.mark.parametrize("address,status", [("127.0.0.1", 200), ("::1", 200), ("10.1.2.3", 403), ("", 403)],
                         ids=["ipv4-loopback", "ipv6-loopback", "remote", "unknown"])
def test_metrics_answers_loopback_only_by_default(build, address, status):
    response = call(build(), "GET", path="/metrics", environ={"REMOTE_ADDR": address})

    assert response.status == status


@pytest.mark.parametrize("host, status", [
    ("127.0.0.1:8000", 200), ("localhost", 200), ("[::1]:8000", 200), ("dmp.example.com", 200), ("DMP.Example.COM:443", 200),
    ("rebound.example:8000", 403), ("localhost.rebound.example", 403), ("", 403),
], ids=["ipv4-loopback", "localhost", "ipv6-loopback", "server-name", "server-name-any-case", "rebound-name",
        "name-ending-elsewhere", "empty"])
def test_metrics_from_loopback_must_be_addressed_to_this_machine(build, host, status):
    app = build(diy={"server_name": "dmp.example.com"})

    response = call(app, "GET", path="/metrics", environ={"REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": host})

    assert response.status == status


@pytest.mark.parametrize("authorization,status", [(None, 401), ("Bearer wrong", 401), ("Bearer metrics-secret", 200)],
                         ids=["missing", "wrong", "right"])
def test_a_metrics_token_is_required_when_configured(build, authorization, status):
    app = build(diy={"metrics_token": "metrics-secret"})

    response = call(app, "GET", path="/metrics", headers={"Authorization": authorization}, environ={"REMOTE_ADDR": "10.1.2.3"})

    assert response.status == status


def test_serve_refuses_to_start_with_an_empty_metrics_token_in_one_line(tmp_path):
    config = write_config(tmp_path, "http://127.0.0.1:9/events", diy={"metrics_token": "env:DIY_METRICS_TOKEN"})

    result = subprocess.run([sys.executable, "-m", "diy", "serve", "--config", str(config), "--port", "0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=20,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "DIY_METRICS_TOKEN": ""})

    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"diy-wsgi: {config}: [diy] metrics_token: the token is empty")


def test_counts_of_an_exited_process_are_kept(tmp_path):
    directory = tmp_path / "metrics"
    script = (
        "import sys; from diy.metrics import Metrics; m = Metrics(sys.argv[1]);"
        "m.count('diy_requests_total', (('integration', 'demo'), ('type', 'VALIDATE'), ('status', '200')), 5); m.flush()"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script, str(directory)], cwd=ROOT, check=True)
    mine = Metrics(directory)
    mine.count("diy_requests_total", (("integration", "demo"), ("type", "VALIDATE"), ("status", "200")))

    merged = mine.collect()

    assert merged["counters"] == [["diy_requests_total", [["integration", "demo"], ["type", "VALIDATE"], ["status", "200"]], 11]]
    assert sorted(p.name for p in directory.iterdir() if p.suffix == ".json")[-1] == "retired.json"


def test_metrics_files_are_readable_by_their_owner_alone(tmp_path, permissive_umask):
    directory = tmp_path / "metrics"
    exited = "from diy.metrics import Metrics; m = Metrics({!r}); m.count('diy_requests_total', ()); m.flush()"
    subprocess.run([sys.executable, "-c", exited.format(str(directory))], cwd=ROOT, check=True)
    mine = Metrics(directory)
    mine.count("diy_requests_total", ())
    mine.flush()

    modes = {path.name: mode_of(path) for path in directory.iterdir()}

    assert mode_of(directory) == 0o700
    assert "retired.json" in modes and "lock" in modes and len(modes) == 3
    assert set(modes.values()) == {0o600}, modes


def test_render_escapes_label_values():
    text = render({"counters": [["diy_requests_total", [["integration", 'a"b\\c\nd']], 1]], "histograms": []}, [])

    assert 'integration="a\\"b\\\\c\\nd"' in text


def test_json_logs_carry_the_fields_and_never_a_secret_or_body(build, tmp_path):
    import io
    import json
    import logging

    from diy import logs

    stream = io.StringIO()
    logs.configure("debug", "json", stream)
    try:
        app = build()
        call(app, query="type=ADD_TO_AUDIENCE", body=mutations_body("ADD_TO_AUDIENCE", mutation("aud-1", "user-12345")),
             headers={"X-Request-Id": "req-42"})
    finally:
        logger = logging.getLogger("diy")
        logger.handlers.clear()
        logger.propagate, logger.level = True, logging.NOTSET
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]

    (request,) = [line for line in lines if line["event"] == "request"]
    assert (request["status"], request["type"], request["request_id"], request["level"]) == ("200", "ADD_TO_AUDIENCE", "req-42", "info")
    assert "s3cr3t" not in stream.getvalue() and "user-12345" not in stream.getvalue()
