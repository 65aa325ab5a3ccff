"""Running the pieces as real processes: diy-wsgi (serve, dispatch, gunicorn), the receiving
platform and the load generator, each with its output in a log file and killed by its own id.

Every process is started in a session of its own, so `kill()` reaches exactly it and its
children (gunicorn's workers) through its process group, and nothing else; and on a leash
(`reliability.leash`), so it dies with the test run even when the run itself is killed.
"""
import base64
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DMP_SECRET = "s3cr3t"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"reliability-webhook-signing-key").decode()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config_text(database, receivers, *, diy=None, dispatcher=None, integration=None, extra_integrations=None):
    """An INI text with one `[integration:demo]` at /dmp delivering to `receivers` (a URL), plus
    `extra_integrations` ({name: (path, url, {key: value})}). Short backoffs keep runs short."""
    sections = {
        "diy": {"database": database, "write_timeout": "3s", "create_timeout": "1s", **(diy or {})},
        "dispatcher": {"poll_interval": "0.1s", "backoff_base": "0.05s", "backoff_cap": "0.5s", "lease": "3s",
                       "stop_timeout": "2s", "max_attempts": "1000", **(dispatcher or {})},
        "integration:demo": _integration("/dmp", receivers, integration or {}),
    }
    for name, (path, url, keys) in (extra_integrations or {}).items():
        sections[f"integration:{name}"] = _integration(path, url, keys)
    return "".join(
        f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items()) + "\n"
        for name, keys in sections.items()
    )


def _integration(path, url, keys):
    return {"path": path, "hmac_secrets": DMP_SECRET, "target": "webhook", "target.url": url,
            "target.secret": WEBHOOK_SECRET, "target.timeout": "1", "breaker_cooldown": "0.3s", **keys}


def write_config(directory, receiver_url, database=None, **sections):
    path = Path(directory) / "diy.ini"
    path.write_text(config_text(database or Path(directory) / "outbox.sqlite3", receiver_url, **sections))
    return path


class Spawned:
    """A process in its own session with its output in `log_path`; with `hostname`, in a UTS
    namespace of its own with that host name (standing in for another VM; root only)."""

    def __init__(self, directory, args, name, env=None, hostname=None):
        self.name = name
        self.log_path = Path(directory) / f"{name}-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        leashed = [sys.executable, "-m", "reliability.leash", *map(str, args)]
        if hostname:
            leashed = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *leashed]
        self.process = subprocess.Popen(
            leashed, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "DIY_LEASH_PARENT": str(os.getpid()), **(env or {})},
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


def python(*args):
    return [sys.executable, *map(str, args)]


class Diy(Spawned):
    """`python -m diy serve|dispatch --config ...`."""

    def __init__(self, directory, command, config, *extra, name=None):
        super().__init__(directory, python("-m", "diy", command, "--config", config, *extra), name or command)


class Gunicorn(Spawned):
    """diy_wsgi:app under gunicorn with the project's gunicorn.conf.py."""

    def __init__(self, directory, config, port, workers=2, threads=4, name="gunicorn", hostname=None):
        self.port = port
        super().__init__(directory, python("-m", "gunicorn", "-c", "gunicorn.conf.py", "diy_wsgi:app"), name, env={
            "DIY_CONFIG": str(config), "DIY_BIND": f"127.0.0.1:{port}", "DIY_WORKERS": str(workers),
            "DIY_THREADS": str(threads), "DIY_LOG_LEVEL": "warning",
        }, hostname=hostname)


class Receiver(Spawned):
    """The receiving platform: the sandbox's webhook (`diy-wsgi sandbox`) with a journal of every
    call, and its views on a control port that stays up while the platform port is down."""

    CLEAR = {"mode": None, "error_rate": 0, "error_status": 503, "rate_limit_rate": 0, "retry_after": 1,
             "latency": 0, "latency_jitter": 0, "outages": [], "audiences": None}
    """The sandbox's fault settings with no fault: each `fault()` starts from them."""

    def __init__(self, directory, name="platform"):
        self.port, self.control_port = free_port(), free_port()
        self.journal = Path(directory) / f"{name}.jsonl"
        args = python("-m", "diy", "sandbox", "--port", self.port, "--control-port", self.control_port,
                      "--webhook-secret", WEBHOOK_SECRET, "--journal", self.journal)
        super().__init__(directory, args, name)
        self.url = f"http://127.0.0.1:{self.port}/webhook"
        wait_for_port(self.control_port, self)

    def _control(self, method, path, payload=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=10)
        try:
            body = None if payload is None else json.dumps(payload).encode()
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read())
            if response.status != 200:
                raise AssertionError(f"sandbox control {path}: {answer}")
            return answer
        finally:
            connection.close()

    def fault(self, mode=None, **changes):
        """Replace the fault: `fault()` none, `fault("down" | "hang" | "hold")`, or the sandbox's
        fault settings (`error_rate=1, error_status=500`, `latency=0.3`, `audiences=[...]`)."""
        return self._control("POST", "/api/faults", {**self.CLEAR, "mode": mode, **changes})

    def state(self):
        """The journal's counters, `held` (calls held now) and `members` {dmp id: user ids}."""
        stats = self._control("GET", "/api/stats")
        audiences = self._control("GET", "/api/audiences")["webhook"]
        return {**stats["journal"], "held": stats["held"],
                "members": {dmp_id: audience["members"] for dmp_id, audience in audiences.items()}}

    def calls(self):
        from reliability.checker import load_calls

        return load_calls(self.journal) if self.journal.exists() else []


class LoadGenerator(Spawned):
    """`python -m reliability.loadgen` against an endpoint; `journal` is its record."""

    def __init__(self, directory, port, *, name="load", path="/dmp", **options):
        """`port`: one instance's, or a list of several (requests go to each in turn)."""
        self.journal = Path(directory) / f"{name}.jsonl"
        args = ["--secret", DMP_SECRET, "--journal", self.journal]
        for each in port if isinstance(port, (list, tuple)) else [port]:
            args += ["--url", f"http://127.0.0.1:{each}{path}"]
        for key, value in options.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value is not False and value is not None:
                args += [flag, value]
        super().__init__(directory, python("-m", "reliability.loadgen", *args), name)

    def finish(self, timeout=120):
        """Stop sending (each thread completes its current request); returns the summary."""
        if self.running:
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the load generator did not stop:\n{self.output()}") from None
        return self.summary()

    def summary(self):
        for line in reversed(self.output().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise AssertionError(f"the load generator printed no summary:\n{self.output()}")


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


def wait_until(condition, timeout=30, what="the condition", processes=(), interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    logs = "".join(f"\n--- {p.log_path.name}\n{p.output()[-4000:]}" for p in processes)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{logs}")


def query(database, sql):
    """Rows of `sql` in the outbox (an SQLite path or a postgresql:// URL), from a connection of
    its own; [] while the database cannot answer."""
    if str(database).startswith("postgresql://"):
        import psycopg

        try:
            with psycopg.connect(str(database), connect_timeout=5) as connection:
                return connection.execute(sql).fetchall()
        except psycopg.OperationalError:
            return []
    connection = sqlite3.connect(str(database), timeout=10)
    try:
        return connection.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        connection.close()


def outbox_counts(database):
    """Mutations by state in the outbox, read from another connection."""
    rows = query(database, "SELECT state, COUNT(*) FROM mutations GROUP BY state")
    return {"pending": 0, "done": 0, "dead": 0, **dict(rows)}


def lease_holders(database):
    """{audience key: lease owner} of the audiences with work leased right now."""
    return dict(query(database, "SELECT key, lease_owner FROM audiences WHERE lease_owner IS NOT NULL AND pending > 0"))


def time_to_take_over(database, dead_owners, since, timeout=120, interval=0.05):
    """Seconds from `since` (a time.monotonic()) until no audience with work is leased by any of
    `dead_owners` any more: their work is another dispatcher's."""
    while any(owner in dead_owners for owner in lease_holders(database).values()):
        if time.monotonic() - since > timeout:
            raise AssertionError(f"the leases of {sorted(dead_owners)} were not taken over in {timeout}s")
        time.sleep(interval)
    return time.monotonic() - since


def stored_uuids(database):
    """{uuid: number of rows} of every mutation in the outbox file."""
    connection = sqlite3.connect(str(database), timeout=10)
    try:
        rows = connection.execute("SELECT uuid, COUNT(*) FROM mutations GROUP BY uuid").fetchall()
    finally:
        connection.close()
    return dict(rows)


def dmp_post(port, request_type, payload, path="/dmp", timeout=10):
    """POST a signed request as the DMP does; returns (status, parsed JSON body or None)."""
    from diy.signature import sign

    body = json.dumps(payload).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", f"{path}?type={request_type}", body=body, headers={
            "Content-Type": "application/json", "X-HMAC": sign(DMP_SECRET.encode(), body)})
        response = connection.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw or b"null")
        except ValueError:
            return response.status, raw
    finally:
        connection.close()
