"""What the reliability suites run beside diy-wsgi: gunicorn, the receiving platform (the
sandbox, on its control port), the load generator; the outbox read from outside; and the
process helpers of `reliability.processes` bound to the runs' short settings.
"""
import base64
import functools
import http.client
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from reliability import processes
from reliability.processes import ROOT, Diy, Spawned, free_port, python, wait_for_port, wait_until  # noqa: F401 (for the suites)

DMP_SECRET = "s3cr3t"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"reliability-webhook-signing-key").decode()
SHORT_RUNS = {
    "diy": {"write_timeout": "3s", "create_timeout": "1s"},
    "dispatcher": {"poll_interval": "0.1s", "backoff_base": "0.05s", "backoff_cap": "0.5s", "lease": "3s",
                   "stop_timeout": "2s", "max_attempts": "1000"},
    "integration": {"hmac_secrets": DMP_SECRET, "target.secret": WEBHOOK_SECRET, "target.timeout": "1",
                    "breaker_cooldown": "0.3s"},
}
"""The reliability runs' settings: short backoffs and timeouts keep runs short."""

config_text = functools.partial(processes.config_text, defaults=SHORT_RUNS)
write_config = functools.partial(processes.write_config, defaults=SHORT_RUNS)
dmp_post = functools.partial(processes.dmp_post, secret=DMP_SECRET.encode(), raw_allowed=True)


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
