"""The sandbox's fault model beyond rates and outages, its control port and its journal: what the
reliability suites drive it with (they run it as `diy-wsgi sandbox --control-port --journal`);
and its counting mode, the benchmark's platform (`diy-wsgi sandbox --counting`).

Each test starts a real sandbox in a thread on port 0 and talks to it over HTTP.
"""
import http.client
import json
import random
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from diy.sandbox import DEFAULT_WEBHOOK_SECRET, SandboxConfigError, SandboxSettings
from diy.sandbox.faults import Call, FaultSettings, decide
from targets.webhook import sign
from tests.processes import free_port, wait_until


def request(url, method, path, body=None, timeout=10):
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def event(url, kind, dmp_id, *users, message_id=None, timeout=10):
    document = {"type": kind, "timestamp": "2026-01-01T00:00:00Z", "data": {
        "integration": "shop", "audience": {"id": None, "dmp_id": dmp_id, "name": None},
        "members": [{"external_user_id": user, "uuid": f"uuid-{user}"} for user in users]}}
    body = json.dumps(document).encode()
    message_id = message_id or f"msg_{dmp_id}_{'_'.join(users)}_{kind}"
    now = int(time.time())
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("POST", "/webhook", body=body, headers={
            "Content-Type": "application/json", "webhook-id": message_id, "webhook-timestamp": str(now),
            "webhook-signature": sign(DEFAULT_WEBHOOK_SECRET, message_id, now, body)})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def faults(server, **changes):
    status, _, body = request(getattr(server, "control_url", server.url), "POST", "/api/faults", changes)
    assert status == 200, body
    return json.loads(body)


def stats(server):
    return json.loads(request(getattr(server, "control_url", server.url), "GET", "/api/stats")[2])


ADDED = "audience.members_added"


# The fault model, pure.

@pytest.mark.parametrize("call, faulted", [
    (Call("poisoned"), True), (Call("healthy"), False), (Call(None), False),
], ids=["its-audience", "another-audience", "no-audience"])
def test_faults_for_some_audiences_spare_the_others(call, faulted):
    settings = FaultSettings(error_rate=1.0, audiences=frozenset({"poisoned"}))

    assert (decide(settings, random.Random(0), 0, call).status == 503) is faulted


def test_the_error_status_is_chosen_and_a_429_may_come_without_retry_after():
    assert decide(FaultSettings(error_rate=1.0, error_status=500), random.Random(0), 0).status == 500
    throttled = decide(FaultSettings(rate_limit_rate=1.0, retry_after=None), random.Random(0), 0)
    assert (throttled.status, throttled.retry_after) == (429, None)


def test_a_hold_lets_creations_through():
    settings = FaultSettings(mode="hold")

    assert decide(settings, random.Random(0), 0, Call("a", creates=True)).hold is False
    assert decide(settings, random.Random(0), 0, Call("a")).hold is True


# Scripted answers (fail_next) come first.

def test_scripted_answers_come_after_the_normal_ones_asked_for_and_in_order(start_sandbox):
    sandbox = start_sandbox()
    sandbox.sandbox.faults.fail_next(503, times=2, body={"error": "scripted"}, after=1)

    statuses = [event(sandbox.url, ADDED, "a", f"u{n}")[0] for n in range(4)]

    assert statuses == [200, 503, 503, 200]
    assert stats(sandbox)["faults"]["scripted"] == 2


# Modes, on a sandbox with a control port.

def test_down_closes_the_platform_port_and_up_opens_it_again_on_the_same_one(start_sandbox):
    sandbox = start_sandbox(control_port=0)
    faults(sandbox, mode="down")

    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", urlsplit(sandbox.url).port), timeout=2).close()
    faults(sandbox, mode=None)

    assert event(sandbox.url, ADDED, "a", "u1")[0] == 200


def test_the_control_port_serves_no_platform_and_down_needs_one(start_sandbox):
    controlled = start_sandbox(control_port=0)
    assert request(controlled.control_url, "POST", "/webhook", {})[0] == 404

    status, _, body = request(start_sandbox().url, "POST", "/api/faults", {"mode": "down"})
    assert status == 400 and b"--control-port" in body


def test_a_hung_call_gets_no_answer_until_the_faults_change(start_sandbox):
    sandbox = start_sandbox(control_port=0)
    faults(sandbox, mode="hang")
    outcome = []
    sender = threading.Thread(target=lambda: outcome.append(_attempt(sandbox.url)))
    sender.start()
    wait_until(lambda: stats(sandbox)["requests"]["webhook"].get("none") == 1, timeout=5)
    assert outcome == []

    faults(sandbox, mode=None)
    sender.join(10)

    assert outcome == ["closed without an answer"]


def test_a_held_call_is_counted_then_applied_when_the_faults_change(start_sandbox):
    sandbox = start_sandbox(control_port=0)
    faults(sandbox, mode="hold")
    outcome = []
    sender = threading.Thread(target=lambda: outcome.append(event(sandbox.url, ADDED, "a", "u1")[0]))
    sender.start()
    wait_until(lambda: stats(sandbox)["held"] == 1, timeout=5)

    faults(sandbox, mode=None)
    sender.join(10)

    assert outcome == [200] and stats(sandbox)["held"] == 0
    audiences = json.loads(request(sandbox.control_url, "GET", "/api/audiences")[2])
    assert audiences["webhook"]["a"]["members"] == ["u1"]


def _attempt(url):
    try:
        return event(url, ADDED, "a", "u1")[0]
    except (http.client.RemoteDisconnected, ConnectionError):
        return "closed without an answer"


# The journal.

def test_the_journal_records_every_call_with_its_answer_and_duplicates(start_sandbox, tmp_path):
    journal = tmp_path / "platform.jsonl"
    sandbox = start_sandbox(journal=str(journal))
    event(sandbox.url, ADDED, "a", "u1", message_id="msg_1")
    event(sandbox.url, ADDED, "a", "u1", message_id="msg_1")
    faults(sandbox, error_rate=1, error_status=500)
    event(sandbox.url, ADDED, "a", "u2", message_id="msg_2")
    faults(sandbox, error_rate=0)
    request(sandbox.url, "POST", "/webhook", {"not": "signed"})

    lines = [json.loads(line) for line in journal.read_text().splitlines()]

    assert [(line["id"], line["answer"], line["fault"], line["dup"]) for line in lines] == [
        ("msg_1", 200, "ok", False), ("msg_1", 200, "ok", True), ("msg_2", 500, "error", False),
        (None, None, "bad_requests", False)]
    assert lines[0]["members"] == [["u1", "uuid-u1"]] and lines[0]["dmp_id"] == "a"
    assert [line["seq"] for line in lines] == [1, 2, 3, 4]
    counts = stats(sandbox)["journal"]
    assert (counts["delivered"], counts["duplicates"], counts["refused"], counts["bad_requests"]) == (1, 1, 1, 1)


def test_a_body_cut_short_by_a_dying_sender_is_journaled_as_truncated_and_not_answered(start_sandbox, tmp_path):
    journal = tmp_path / "platform.jsonl"
    sandbox = start_sandbox(journal=str(journal))
    with socket.create_connection(("127.0.0.1", urlsplit(sandbox.url).port), timeout=5) as connection:
        connection.sendall(b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"type\":")
        connection.shutdown(socket.SHUT_WR)
        assert connection.recv(100) == b""

    wait_until(lambda: stats(sandbox)["journal"]["truncated"] == 1, timeout=5)
    assert json.loads(journal.read_text().splitlines()[-1])["fault"] == "truncated"


def test_a_journal_and_a_control_port_come_from_the_command_line():
    from diy.sandbox import settings_from_flags

    port = free_port()
    settings = settings_from_flags(port=0, control_port=port, journal="platform.jsonl")
    assert (settings.control_port, settings.journal) == (port, "platform.jsonl")
    with pytest.raises(SandboxConfigError, match="--control-port"):
        settings_from_flags(port=port, control_port=port)


# The counting mode, the benchmark's platform.

def test_counting_mode_answers_every_post_and_counts_members_without_checking(start_sandbox):
    pattern = r'"external_user_id":"([a-z][0-9]{8})000"'
    sandbox = start_sandbox(counting=True, trace=pattern)
    body = b'{"members":[{"external_user_id":"b00000007000"},{"external_user_id":"b000000071"}]}'

    assert request(sandbox.url, "POST", "/anywhere", body)[:3:2] == (200, b"{}")
    status, _, counts = request(sandbox.url, "GET", "/api/stats")

    assert json.loads(counts) == {"events": 1, "members": 2, "bytes": len(body), "connections": 2}
    trace = json.loads(request(sandbox.url, "GET", "/api/trace")[2])
    assert [tag for _, tag in trace] == ["b00000007"]
    assert json.loads(request(sandbox.url, "GET", "/api/trace")[2]) == []


@pytest.mark.parametrize("fields", [
    {"faults": FaultSettings(error_rate=0.1)}, {"control_port": 0}, {"journal": "calls.jsonl"},
    {"trace": "no group"},
], ids=["a-fault-but-latency", "control-port", "journal", "trace-without-a-group"])
def test_counting_mode_takes_latency_as_its_one_fault_and_nothing_else(fields):
    with pytest.raises(SandboxConfigError):
        SandboxSettings(port=0, counting=True, **fields)


def test_a_trace_needs_counting_mode():
    with pytest.raises(SandboxConfigError, match="--counting"):
        SandboxSettings(port=0, trace="(x)")
