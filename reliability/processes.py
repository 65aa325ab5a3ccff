"""The one process harness: diy-wsgi (and what stands beside it) run as real processes, each with
its output in a log file and killed by its own id; waiting for ports and conditions; the INI
text they run with; signed requests sent as the DMP sends them.

The tests (`tests/processes.py`), the reliability suites (`reliability/harness.py`) and the
bench import it from here; each binds its own defaults (secrets, timeouts, short backoffs)
with `functools.partial`, so that the helpers themselves exist once.

Every process is started in a session of its own, so `kill()` reaches exactly it and its
children (gunicorn's workers) through its process group, and nothing else; and on a leash
(`reliability.leash`), so it dies with the test run even when the run itself is killed.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from outbox.postgres import is_postgres_url

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def python(*args):
    return [sys.executable, *map(str, args)]


def environment(env=None):
    """What every process here runs with: this one's environment, PYTHONPATH at the project, and
    `env`'s variables on top ({name: None} unsets one)."""
    merged = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return {name: value for name, value in merged.items() if value is not None}


class Spawned:
    """A process in its own session with its output in `log_path` and `environment(env)`; with
    `hostname`, in a UTS namespace of its own with that host name (standing in for another VM;
    root only)."""

    def __init__(self, directory, args, name, env=None, hostname=None):
        self.name = name
        self.log_path = Path(directory) / f"{name}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        leashed = [sys.executable, "-m", "reliability.leash", *map(str, args)]
        if hostname:
            leashed = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *leashed]
        self.process = subprocess.Popen(
            leashed, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env=environment({"DIY_LEASH_PARENT": str(os.getpid()), **(env or {})}),
        )
        self.pid = self.process.pid

    def output(self):
        return self.log_path.read_text(errors="replace")

    @property
    def running(self):
        return self.process.poll() is None

    def kill(self, sig=signal.SIGKILL, timeout=20):
        """Send `sig` to this process's group (it and its children); returns the exit code."""
        if self.process.poll() is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            code = self.process.wait(timeout)
        if sig == signal.SIGKILL:
            # Children (gunicorn workers) that outlived their parent: the group is ours alone.
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()
        return code

    def freeze(self):
        """SIGSTOP to the whole group: it stops answering without closing a connection, as a VM
        that loses power or network does."""
        os.killpg(self.pid, signal.SIGSTOP)

    def stop(self, timeout=30):
        """SIGTERM to the process itself (gunicorn's master stops its workers); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()


class Diy(Spawned):
    """`python -m diy ARGS...` (serve, dispatch, sandbox...); named for its command unless `name`."""

    def __init__(self, directory, *args, name=None):
        super().__init__(directory, python("-m", "diy", *args), name or str(args[0]))


def wait_for_port(port, process=None, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.running:
            raise AssertionError(f"{process.name} exited early:\n{process.output()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"port {port} never opened" + (f":\n{process.output()}" if process else ""))


def wait_until(condition, timeout=30, what="the condition", processes=(), interval=0.05, tail=4000):
    """Poll `condition` every `interval` seconds; on timeout, fail with the last `tail` characters
    (None: all) of each of `processes`' output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    logs = "".join(f"\n--- {p.log_path.name}\n{p.output()[-tail if tail else 0:]}" for p in processes)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{logs}")


def config_text(database, receiver_url, *, defaults, diy=None, dispatcher=None, integration=None,
                sections=None, extra_integrations=None):
    """An INI text with one `[integration:demo]` at /dmp delivering to `receiver_url` by webhook.

    `defaults` ({"diy" | "dispatcher" | "integration": {key: value}}) holds the caller's secrets
    and timings; each keyword's {key: value} overrides or adds keys of that section;
    `extra_integrations` ({name: (path, url, {key: value})}) adds integrations built on the same
    defaults; `sections` adds whole sections ({name: {key: value}})."""
    def integration_at(path, url, keys):
        return {"path": path, "target": "webhook", "target.url": url, **defaults["integration"], **keys}

    built = {
        "diy": {"database": database, **defaults["diy"], **(diy or {})},
        "dispatcher": {**defaults["dispatcher"], **(dispatcher or {})},
        "integration:demo": integration_at("/dmp", receiver_url, integration or {}),
    }
    for name, (path, url, keys) in (extra_integrations or {}).items():
        built[f"integration:{name}"] = integration_at(path, url, keys)
    built.update(sections or {})
    return "".join(
        f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items()) + "\n"
        for name, keys in built.items()
    )


def write_config(directory, receiver_url, database=None, *, defaults, **sections):
    """`config_text` written to DIRECTORY/diy.ini (the outbox in DIRECTORY unless `database`)."""
    path = Path(directory) / "diy.ini"
    database = database or Path(directory) / "outbox.sqlite3"
    path.write_text(config_text(database, receiver_url, defaults=defaults,
                                **metrics_within(directory, database, sections)))
    return path


def metrics_within(directory, database, sections):
    """`sections` with `metrics_dir` in `directory` when the outbox is on PostgreSQL: its default
    is a folder of the machine's /tmp (diy.config.default_metrics_dir), which a test's throwaway
    database would leave behind."""
    diy = sections.get("diy") or {}
    if "metrics_dir" in diy or not is_postgres_url(diy.get("database", database)):
        return sections
    return {**sections, "diy": {**diy, "metrics_dir": Path(directory) / "metrics"}}


def dmp_post(port, request_type, payload, *, secret, path="/dmp", timeout=10, raw_allowed=False):
    """POST a request signed with `secret` (bytes) as the DMP does; returns (status, parsed JSON
    body). A body that is not JSON fails, unless `raw_allowed`: then it is returned as bytes."""
    from diy.signature import sign

    body = json.dumps(payload).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", f"{path}?type={request_type}", body=body, headers={
            "Content-Type": "application/json", "X-HMAC": sign(secret, body)})
        response = connection.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw or b"null")
        except ValueError:
            if raw_allowed:
                return response.status, raw
            raise
    finally:
        connection.close()
