"""`/healthz`, `/readyz` and `/metrics`: answered before any integration path, without HMAC."""
import hmac
import json
import logging
import re
import threading
import time
from dataclasses import dataclass

from diy.hosts import addressed_to_this_machine, is_loopback
from diy.http_errors import Forbidden, MethodNotAllowed, ServiceUnavailable, Unauthorized
from diy.metrics import CREDENTIALS_GAUGE, live_gauges, merge, render, zeros
from outbox.admin import Admin
from outbox.errors import StoreError

HEARTBEAT_STALE = 30.0
CHECK_INTERVAL = 1.0
"""Seconds a process reuses its last database check for /readyz."""
ABSOLUTE_PATH = re.compile(r"(?<![\w.])/[^\s:'\"]+")
SERVER_ADDRESS = re.compile(r' at "[^"]*", port [0-9]+')
HELD_FOR_CREDENTIALS = ("the platform refuses diy-wsgi's credentials: requests are stored, deliveries wait "
                        "until they are accepted again (diy-wsgi status, the service log)")
NOTHING_STORED = {"pending": 0, "leased": 0, "dead": 0, "oldest_pending_age": None, "audiences": 0,
                  "audiences_creating": 0, "audiences_failed": 0}
"""The status of an integration without a row in the outbox yet."""
log = logging.getLogger("diy.health")


@dataclass(frozen=True)
class Reply:
    body: bytes
    content_type: str = "application/json"


class Probes:
    def __init__(self, config, service):
        self.config = config
        self.service = service
        self.admin = Admin(service.outbox, clock=service.clock)
        self.readiness = Readiness(self.shared_state)
        self._database_fault = None

    def answer(self, path, environ):
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            raise MethodNotAllowed(f"{path} answers GET only", "GET, HEAD")
        if path == "/healthz":
            return json_reply({"status": "ok"})
        if path == "/readyz":
            return self.ready()
        self.check_metrics_access(environ)
        return Reply(self.metrics_text().encode(), "text/plain; version=0.0.4; charset=utf-8")

    def ready(self):
        """Ready when the database takes a write and a dispatcher is alive.

        An integration whose platform refuses our credentials is named under `held` but does not
        make the answer 503: the service still stores every request, and a load balancer that
        took each VM out over one platform's credentials would refuse the DMP's requests for
        every integration (alert on `diy_account_credentials_refused` instead)."""
        problems, held = self.readiness.current()
        problems = list(problems)
        if self.config.dispatcher.embedded and not self.service.dispatcher.alive:
            problems.append("dispatcher: the embedded dispatcher is not running in this process")
        held = {name: HELD_FOR_CREDENTIALS for name in held}
        if problems:
            raise ServiceUnavailable("; ".join(problems + [f"integration {name}: {why}" for name, why in held.items()]))
        return json_reply({"status": "ready", **({"held": held} if held else {})})

    def shared_state(self):
        """What /readyz reads beyond this process, once a second: the database's problems
        and the integrations held because a platform refuses our credentials."""
        return self.database_problems(), self.held_integrations()

    def held_integrations(self):
        """Integrations with an account whose credentials a platform refuses, as any process of
        this machine last found (the gauge the dispatchers keep in the metrics folder)."""
        refused = live_gauges(self.service.metrics.collect(), CREDENTIALS_GAUGE)
        return sorted({dict(labels)["integration"] for labels, value in refused.items() if value})

    def database_problems(self):
        """What /readyz must ask the database: whether it takes a write now and, without an
        embedded dispatcher, whether another one beats its heart. In public words (the log
        line, written when the reason changes, has the details)."""
        outbox = self.service.outbox
        try:
            outbox.probe()
            if self.config.dispatcher.embedded:
                alive = True
            else:
                alive = outbox.live_dispatchers(seen_since=self.service.clock() - HEARTBEAT_STALE)
        except StoreError as error:
            self._log_change(str(error))
            return [f"database: {public_reason(error, outbox.location)}"]
        self._log_change(None)
        if not alive:
            return [f"dispatcher: no dispatcher seen in the last {HEARTBEAT_STALE:.0f}s (run diy-wsgi dispatch)"]
        return []

    def _log_change(self, reason):
        if reason != self._database_fault:
            if reason is None:
                log.info("database ready again")
            else:
                log.warning("database not ready reason=%r", reason)
            self._database_fault = reason

    def check_metrics_access(self, environ):
        token = self.config.metrics_token
        if token is not None:
            scheme, _, offered = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(offered.strip().encode(), token.encode()):
                return
            raise Unauthorized("/metrics needs Authorization: Bearer <[diy] metrics_token>",
                               [("WWW-Authenticate", 'Bearer realm="diy-wsgi metrics"')])
        if not is_loopback(environ.get("REMOTE_ADDR", "")):
            raise Forbidden("/metrics answers loopback only unless [diy] metrics_token is set")
        host = environ.get("HTTP_HOST")
        if host is not None and not addressed_to_this_machine(host, self.config.server_name):
            raise Forbidden("/metrics answers requests addressed to this machine only (Host localhost, "
                            "127.0.0.1, [::1] or [diy] server_name) unless [diy] metrics_token is set")

    def metrics_text(self):
        """Every series of every configured integration, at 0 until something happens (an
        integration with nothing stored yet, no pending mutation: an oldest age of 0)."""
        status = self.admin.status(now=self.service.clock())
        targets = {i.name: i.target for i in self.config.integrations}
        integrations = {name: NOTHING_STORED for name in targets}
        integrations.update(status["integrations"])

        def per_integration(key):
            return [([["integration", name], ["target", targets.get(name, "")]], s[key] or 0)
                    for name, s in integrations.items()]

        outbox_depth = [
            ([["integration", name], ["state", state]], s[state])
            for name, s in integrations.items() for state in ("pending", "leased", "dead")
        ]
        audiences = [
            ([["integration", name], ["state", state]], count)
            for name, s in integrations.items()
            for state, count in (("creating", s["audiences_creating"]), ("failed", s["audiences_failed"]),
                                 ("ready", s["audiences"] - s["audiences_creating"] - s["audiences_failed"]))
        ]
        gauges = [
            ("diy_outbox_mutations", "Mutations in the outbox by state (pending includes leased).", outbox_depth),
            ("diy_outbox_oldest_pending_age_seconds", "Age of the oldest undelivered mutation (0: none pending).",
             per_integration("oldest_pending_age")),
            ("diy_dead_letters", "Dead-lettered mutations kept for the operator.", per_integration("dead")),
            ("diy_audiences", "Audiences by creation state (creating, ready, failed).", audiences),
            ("diy_dispatchers_alive", "Dispatchers with a heartbeat in the last 30 s.",
             [([], sum(1 for d in status["dispatchers"] if d["seen_age"] < HEARTBEAT_STALE))]),
            ("diy_database_bytes", "Size of the outbox: the SQLite file and its WAL, or the PostgreSQL database.",
             [([["file", key.split("_")[0]]], size) for key, size in status["files"].items()]),
        ]
        accounts = {name: [account.label for account in accounts.all()] for name, accounts in self.service.accounts.items()}
        return render(merge([zeros(accounts), self.service.metrics.collect()]), gauges)


class Readiness:
    """The database's part of /readyz, checked at most once a CHECK_INTERVAL per process.

    The check takes the write lock (SQLite) or runs a write transaction (PostgreSQL): the only
    honest test that a request could be stored now, and at 1,000 probes a second it competed
    with the DMP's writes. So one thread of the process checks at a time and its result serves
    every probe for the next second; threads that ask while a check runs get the previous result
    without waiting (only the very first probe waits for its own). Any rate of probes then costs
    at most one check a second per process, and a database locked past write_timeout, full or
    read-only still shows within a second of the check that finds it.
    """

    def __init__(self, check, *, clock=time.monotonic, interval=CHECK_INTERVAL):
        self.check = check
        self.clock = clock
        self.interval = interval
        self._checking = threading.Lock()
        self._last = None
        """(result, when the check ended) of the last check."""

    def current(self):
        """The last check's result, checking first if it is older than the interval."""
        last = self._last
        if self._fresh(last):
            return last[0]
        if not self._checking.acquire(blocking=last is None):
            return last[0]
        try:
            last = self._last
            if not self._fresh(last):
                last = self._last = (self.check(), self.clock())
        finally:
            self._checking.release()
        return last[0]

    def _fresh(self, last):
        return last is not None and self.clock() - last[1] < self.interval


def public_reason(error, location):
    """A storage fault's reason as a public answer (/readyz, a 503 to the DMP) gives it: what is
    wrong, without the database's file path or URL, the server's address or any other absolute
    path. The log line keeps the whole reason."""
    text = str(error)
    for before in (" at ", " "):
        text = text.replace(f"{before}{location}", "")
    text = SERVER_ADDRESS.sub("", text.replace(str(location), "the database"))
    return ABSOLUTE_PATH.sub("<path>", text)


def json_reply(document):
    return Reply(json.dumps(document).encode())
