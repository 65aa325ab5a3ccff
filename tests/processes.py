"""Running diy-wsgi as real processes, and talking to it like the DMP does."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from diy.signature import sign
from tests.support import DMP_SECRET, config_text

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(tmp_path, receiver_url, **sections):
    path = tmp_path / "diy.ini"
    path.write_text(config_text(tmp_path / "outbox.sqlite3", receiver_url, **sections))
    return path


class Process:
    """`python -m diy ARGS...` with its output captured to a file, killed at the end."""

    def __init__(self, tmp_path, *args, name="diy"):
        self.log_path = tmp_path / f"{name}-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "diy", *map(str, args)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def output(self):
        return self.log_path.read_text(errors="replace")

    def kill(self, sig=signal.SIGKILL):
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(15)
        self.log.close()
        return code


def wait_for_port(port, process, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise AssertionError(f"the process exited early:\n{process.output()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} never opened:\n{process.output()}")


def wait_until(condition, timeout=15, what="the condition", processes=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    logs = "".join(f"\n--- {p.log_path.name}\n{p.output()}" for p in processes)
    raise AssertionError(f"timed out waiting for {what}{logs}")


def dmp_post(port, request_type, payload, path="/dmp", secret=DMP_SECRET):
    """POST a signed request as the DMP does; returns (status, parsed JSON body)."""
    body = json.dumps(payload).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", f"{path}?type={request_type}", body=body, headers={
            "Content-Type": "application/json", "X-HMAC": sign(secret, body)})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()
