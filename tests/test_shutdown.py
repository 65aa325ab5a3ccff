"""Stopping `diy-wsgi serve` and `diy-wsgi dispatch` while a platform call hangs: the first
Ctrl-C says what the stop waits for, a second one exits at once, and nothing acknowledged is lost."""
import signal
import time

import pytest

from tests.processes import Diy, dmp_post, free_port, wait_for_port, wait_until, write_config
from tests.sandboxed import hold_calls
from tests.support import mutation


@pytest.fixture
def hanging_platform(receiver_for):
    """The sandbox's webhook holding its deliveries until `release` is set, the first of them
    then answered 503 (creations pass)."""
    receiver = receiver_for()
    receiver.hung, receiver.release = hold_calls(receiver.sandboxed, status=503)
    yield receiver
    receiver.release.set()


@pytest.mark.parametrize("command", ["serve", "dispatch"])
def test_a_second_sigint_stops_at_once_and_the_hung_delivery_is_taken_over(hanging_platform, tmp_path, command):
    embedded = "yes" if command == "serve" else "no"
    config = write_config(tmp_path, hanging_platform.url, integration={"target.timeout": "30"},
                          dispatcher={"embedded": embedded, "stop_timeout": "60s", "takeover_after": "1s"})
    port = free_port()
    server = Diy(tmp_path, "serve", "--config", config, "--port", port, name="serve")
    stopping = server if command == "serve" else Diy(tmp_path, "dispatch", "--config", config, name="dispatch")
    processes = [server, stopping]
    try:
        wait_for_port(port, server)
        assert dmp_post(port, "ADD_TO_AUDIENCE", {"Mutations": [mutation("4711", "u1")]})[0] == 200
        assert hanging_platform.hung.wait(20), stopping.output()

        stopping.process.send_signal(signal.SIGINT)
        wait_until(lambda: "dispatcher stopping" in stopping.output(), what="the line saying what the stop waits for",
                   processes=processes)
        stopping.process.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = stopping.process.wait(10)
        waited = time.monotonic() - started

        (line,) = [line for line in stopping.output().splitlines() if "dispatcher stopping" in line]
        assert "in_flight=1 integrations=demo longest_call_left=" in line
        assert (code, waited < 5) == (128 + signal.SIGINT, True), stopping.output()
        assert "Traceback" not in stopping.output()

        hanging_platform.release.set()
        processes.append(Diy(tmp_path, "dispatch", "--config", config, name="takeover"))
        wait_until(lambda: hanging_platform.members == {"4711": {"u1"}}, timeout=30, what="the takeover delivering",
                   processes=processes)
    finally:
        hanging_platform.release.set()
        for process in processes:
            process.kill()


def test_a_stop_that_outlasts_stop_timeout_says_which_calls_still_run(hanging_platform, tmp_path):
    config = write_config(tmp_path, hanging_platform.url, integration={"target.timeout": "30"},
                          dispatcher={"stop_timeout": "0.5s"})
    port = free_port()
    server = Diy(tmp_path, "serve", "--config", config, "--port", port)
    try:
        wait_for_port(port, server)
        assert dmp_post(port, "ADD_TO_AUDIENCE", {"Mutations": [mutation("4711", "u1")]})[0] == 200
        assert hanging_platform.hung.wait(20), server.output()

        server.process.send_signal(signal.SIGINT)
        wait_until(lambda: "dispatcher stopped" in server.output(), what="the stop", processes=[server])
        hanging_platform.release.set()
        code = server.process.wait(10)
    finally:
        server.kill()

    (line,) = [line for line in server.output().splitlines() if "dispatcher stopped" in line]
    assert "dispatcher stopped with calls still running" in line and "unfinished=1 integrations=demo" in line
    assert code == 0
    assert "another dispatcher took it over" not in server.output(), "the lease was given back, not taken"


def test_a_stop_names_the_audience_creations_still_running(receiver_for, tmp_path):
    """A CREATE_AUDIENCE the platform does not answer is queued after create_timeout, but its call
    runs on until the platform's timeout, and the process waits for it before it exits."""
    receiver = receiver_for()
    hung, release = hold_calls(receiver.sandboxed, mode="hang")
    config = write_config(tmp_path, receiver.url, integration={"target.timeout": "30"},
                          dispatcher={"embedded": "no"})
    port = free_port()
    server = Diy(tmp_path, "serve", "--config", config, "--port", port)
    try:
        wait_for_port(port, server)
        created = dmp_post(port, "CREATE_AUDIENCE", {"Type": "CREATE_AUDIENCE", "Name": "n", "Customer": 1, "Audience": "a1"})
        assert created == (200, {}) and hung.is_set()

        server.process.send_signal(signal.SIGINT)
        wait_until(lambda: "audience creations still running" in server.output(), what="the line", processes=[server])
        release.set()
        assert server.process.wait(10) == 0
    finally:
        release.set()
        server.kill()

    (line,) = [line for line in server.output().splitlines() if "audience creations still running" in line]
    assert "count=1 integrations=demo longest_call_left=" in line
