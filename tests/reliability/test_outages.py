"""Platform outages and misbehaviour: nothing is lost, retries back off, others keep flowing.

`diy-wsgi serve` (its dispatcher embedded) takes continuous signed load while the receiving
platform goes down (connection refused), hangs (past `target.timeout`), answers 500, 503, 429
with and without Retry-After, or answers slowly; then it recovers and everything drains.

Backoff is checked two ways against the configured policy (backoff_base 0.05 s, cap 0.5 s):
each retry the platform sees comes no sooner than the policy's floor (half the exponential
step, or Retry-After), and the dispatcher's retries per audience stay within the most the
policy allows in the outage: no hot loop.

CI form: a 1.5 s fault per scenario. Long form: 15 s faults and more audiences.
"""
import re
import time

import pytest

from reliability import pick
from reliability.checker import (
    backoff_violations,
    check_files,
    load_requests,
    most_attempts_within,
    read_lines,
)
from reliability.harness import (
    Diy,
    LoadGenerator,
    Receiver,
    free_port,
    outbox_counts,
    wait_for_port,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.reliability

BASE, CAP = 0.05, 0.5
FAULT_SECONDS = pick(1.5, 15.0)
AUDIENCES = pick(3, 8)
TIMEOUT = 1.0
RETRY = re.compile(r"will retry integration=(\S+) audience=(\S+) attempt=(\d+)")

SCENARIOS = {
    "down": {"mode": "down"},
    "hang": {"mode": "hang"},
    "500": {"error_rate": 1, "error_status": 500},
    "503": {"error_rate": 1, "error_status": 503},
    "429-no-retry-after": {"rate_limit_rate": 1, "retry_after": None},
    "429-retry-after": {"rate_limit_rate": 1, "retry_after": 1},
    "slow": {"latency": 0.3},
}


def serve(tmp_path, processes, config):
    port = free_port()
    server = Diy(tmp_path, "serve", "--config", config, "--port", port)
    processes.append(server)
    wait_for_port(port, server)
    return server, port


def drain(tmp_path, load, receiver, processes, timeout=60):
    reports = []

    def drained():
        if outbox_counts(tmp_path / "outbox.sqlite3")["pending"]:
            return False
        reports.append(check_files(load.journal, receiver.journal))
        return reports[-1].lost == 0

    wait_until(drained, timeout=timeout, what="everything to drain after recovery", processes=processes,
               interval=0.25)
    return reports[-1]


def retries_by_audience(log_text, integration="demo"):
    counts = {}
    for name, audience, _ in RETRY.findall(log_text):
        if name == integration:
            counts[audience] = counts.get(audience, 0) + 1
    return counts


@pytest.mark.parametrize("scenario", list(SCENARIOS), ids=list(SCENARIOS))
def test_a_platform_fault_loses_nothing_backs_off_and_drains_after_recovery(
        scenario, tmp_path, processes, receiver, figures):
    fault = SCENARIOS[scenario]
    cap = 2.0 if fault.get("retry_after") else CAP  # Retry-After is capped by backoff_cap
    config = write_config(tmp_path, receiver.url, dispatcher={"backoff_cap": f"{cap}s"},
                          integration={"target.timeout": str(TIMEOUT)})
    server, port = serve(tmp_path, processes, config)
    load = LoadGenerator(tmp_path, port, audiences=AUDIENCES, users=6, threads=min(AUDIENCES, 3), rate=20,
                         duration=0, max_mutations=4, prefix=scenario)
    processes.append(load)
    # Every audience exists first: a creation inside CREATE_AUDIENCE that meets the fault is
    # another path (test_a_creation_refused_for_now_inside_the_request_waits_for_retry_after).
    wait_until(lambda: len({c["dmp_id"] for c in receiver.calls()
                            if c["type"] == "audience.created" and c["answer"] == 200}) == AUDIENCES,
               what="every audience created", processes=[server])
    receiver.fault(**fault)
    time.sleep(FAULT_SECONDS)
    receiver.fault()
    time.sleep(0.3)
    summary = load.finish()
    report = drain(tmp_path, load, receiver, [server, load])

    calls = receiver.calls()
    retries = retries_by_audience(server.output())
    retry_after = float(fault.get("retry_after") or 0)
    # The longest a fault can hold an audience back: the fault itself, a timed-out call, a floor.
    allowed = most_attempts_within(FAULT_SECONDS + TIMEOUT + max(retry_after, CAP), BASE, cap)
    figures.add(outage_scenarios=1, requests_sent=report.requests, acknowledged=report.acknowledged,
                mutations_lost=report.lost, platform_calls=report.calls, retries=sum(retries.values()),
                duplicate_events=report.duplicate_events)
    figures.most(most_retries_per_audience=max(retries.values(), default=0),
                 retries_allowed_per_audience=allowed)
    assert report.ok, report.explain()
    assert receiver.state()["bad_requests"] == 0, "every event was signed and strict JSON"
    assert summary["acknowledged"] == summary["requests"], summary
    assert outbox_counts(tmp_path / "outbox.sqlite3")["dead"] == 0
    assert backoff_violations(calls, BASE, cap, retry_after) == []
    assert all(count <= allowed for count in retries.values()), (retries, allowed)
    if scenario == "slow":
        assert retries == {}, "a slow answer within target.timeout is not a failure"
    else:
        assert retries, "the fault was seen and retried"


def test_a_creation_refused_for_now_inside_the_request_waits_for_retry_after(tmp_path, processes, receiver):
    """Was called again at once: the queued creation was due immediately, Retry-After ignored."""
    from reliability.harness import dmp_post

    receiver.fault(rate_limit_rate=1, retry_after=2)
    config = write_config(tmp_path, receiver.url, dispatcher={"backoff_cap": "5s"})
    server, port = serve(tmp_path, processes, config)
    body = {"Type": "CREATE_AUDIENCE", "Name": "Buyers", "Customer": 1, "Audience": "limited"}
    assert dmp_post(port, "CREATE_AUDIENCE", body)[0] == 200  # queued: the platform said 429
    time.sleep(1.5)
    calls = [c["t"] for c in receiver.calls() if c["dmp_id"] == "limited"]
    assert len(calls) == 1, f"the platform was called again {calls[1] - calls[0]:.3f}s after Retry-After: 2"


def test_partial_failures_do_not_apply_to_the_webhook_target():
    pytest.skip("a webhook event is accepted or refused whole; PartialFailure is for platforms that "
                "report per-user refusals (tests/test_dispatcher.py covers the dispatcher's side)")


def latencies(load, receiver):
    """Seconds from each acknowledged mutation's 200 to its first arrival at the platform, per
    audience; mutations the platform never saw (coalesced away) are left out."""
    acknowledged, acked_at = {}, {}
    for line in read_lines(load.journal):
        if line.get("kind") == "attempt" and line["status"] == 200:
            acked_at.setdefault(line["req"], line["t"])
    for request in load_requests(load.journal).values():
        for audience, user, uuid in request.mutations:
            if request.req in acked_at:
                acknowledged[uuid] = (audience, acked_at[request.req])
    arrived = {}
    for call in receiver.calls():
        if call["answer"] == 200:
            for _, uuid in call["members"]:
                arrived.setdefault(uuid, call["t"])
    result = {}
    for uuid, (audience, at) in acknowledged.items():
        if uuid in arrived:
            result.setdefault(audience, []).append(arrived[uuid] - at)
    return result


PROMPT = 3.0
"""Seconds within which a healthy audience's mutation must arrive while something else fails:
far above the tens of milliseconds it takes, below what a blocked dispatcher causes."""

@pytest.mark.parametrize("dead_mode", ["down", "hang"])
def test_a_dead_platform_does_not_hold_back_another_integration(dead_mode, tmp_path, processes, receiver, figures):
    dead = Receiver(tmp_path, name="dead-platform")
    processes.append(dead)
    dead.fault(dead_mode)
    config = write_config(
        tmp_path, receiver.url, dispatcher={"lease": "5m"},
        extra_integrations={"dead": ("/dead", dead.url, {"target.timeout": "8"})},
    )
    server, port = serve(tmp_path, processes, config)
    dead_load = LoadGenerator(tmp_path, port, name="dead-load", path="/dead", audiences=6, users=6, threads=3,
                              rate=20, duration=0, prefix="dead", no_create=True)
    processes.append(dead_load)
    time.sleep(1.0)
    load = LoadGenerator(tmp_path, port, audiences=3, users=6, threads=3, rate=10, duration=pick(3, 30),
                         prefix="healthy")
    processes.append(load)
    load.process.wait(120)
    wait_until(lambda: check_files(load.journal, receiver.journal).lost == 0, timeout=30,
               what="the healthy integration's mutations", processes=[server])
    report = check_files(load.journal, receiver.journal)
    slowest = max((max(values) for values in latencies(load, receiver).values()), default=0.0)
    figures.add(outage_scenarios=1, requests_sent=report.requests, acknowledged=report.acknowledged)
    figures.most(slowest_healthy_delivery_s=round(slowest, 2))
    assert report.ok, report.explain()
    assert slowest < PROMPT, f"a healthy mutation waited {slowest:.1f}s behind a {dead_mode} platform"


def test_an_audience_the_platform_keeps_refusing_does_not_hold_back_the_others(tmp_path, processes, receiver,
                                                                               figures):
    """With the default breaker (5 failures, 30 s), one audience refused again and again."""
    from reliability.harness import dmp_post

    receiver.fault(error_rate=1, audiences=["poisoned"])
    config = write_config(tmp_path, receiver.url, integration={"breaker_cooldown": "30s"},
                          dispatcher={"lease": "5m"})
    server, port = serve(tmp_path, processes, config)
    body = {"Mutations": [{"Audience": "poisoned", "External_user_id": "u1", "Uuid": "p-1"}]}
    assert dmp_post(port, "ADD_TO_AUDIENCE", body)[0] == 200
    wait_until(lambda: len([c for c in receiver.calls() if c["dmp_id"] == "poisoned"]) >= 8, timeout=20,
               what="more failures of the poisoned audience than breaker_failures", processes=[server])
    for number in range(3):
        uuid = f"h-{number}"
        body = {"Mutations": [{"Audience": "healthy", "External_user_id": f"u{number}", "Uuid": uuid}]}
        assert dmp_post(port, "ADD_TO_AUDIENCE", body)[0] == 200
        wait_until(lambda: any(c["answer"] == 200 and [f"u{number}", uuid] in c["members"] for c in receiver.calls()),
                   timeout=PROMPT, what="the healthy audience's mutation", processes=[server])
    receiver.fault()
    wait_until(lambda: outbox_counts(tmp_path / "outbox.sqlite3")["pending"] == 0, timeout=30,
               what="the poisoned audience to drain once the platform takes it", processes=[server])
    assert outbox_counts(tmp_path / "outbox.sqlite3")["dead"] == 0
    figures.add(outage_scenarios=1)
