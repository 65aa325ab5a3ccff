"""`/healthz`, `/readyz` and `/metrics`: answered before any integration path, without HMAC."""
import hmac
import ipaddress
import json
from dataclasses import dataclass

from diy.http_errors import Forbidden, MethodNotAllowed, ServiceUnavailable, Unauthorized
from diy.metrics import render
from outbox.admin import Admin
from outbox.errors import StoreError

PATHS = ("/healthz", "/readyz", "/metrics")
HEARTBEAT_STALE = 30.0


@dataclass(frozen=True)
class Reply:
    body: bytes
    content_type: str = "application/json"


class Probes:
    def __init__(self, app):
        self.app = app
        self.config = app.config
        self.service = app.service
        self.admin = Admin(app.outbox, clock=app.service.clock)

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
        """Ready when the database takes a write and a dispatcher is alive."""
        problems = []
        try:
            self.service.outbox.probe()
        except StoreError as error:
            problems.append(f"database: {error}")
        if self.config.dispatcher.embedded:
            if not self.service.dispatcher.alive:
                problems.append("dispatcher: the embedded dispatcher is not running in this process")
        elif not problems:
            if not self.service.outbox.live_dispatchers(seen_since=self.service.clock() - HEARTBEAT_STALE):
                problems.append(f"dispatcher: no dispatcher seen in the last {HEARTBEAT_STALE:.0f}s (run diy-wsgi dispatch)")
        if problems:
            raise ServiceUnavailable("; ".join(problems))
        return json_reply({"status": "ready"})

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

    def metrics_text(self):
        status = self.admin.status(now=self.service.clock())
        targets = {i.name: i.target for i in self.config.integrations}
        integrations = status["integrations"]

        def per_integration(key, transform=lambda value: value):
            return [([["integration", name], ["target", targets.get(name, "")]], transform(s[key]))
                    for name, s in integrations.items() if s[key] is not None]

        outbox_depth = [
            ([["integration", name], ["state", state]], s[state])
            for name, s in integrations.items() for state in ("pending", "leased", "dead")
        ]
        audiences = [
            ([["integration", name], ["state", state]], count)
            for name, s in integrations.items()
            for state, count in (("creating", s["audiences_creating"]), ("failed", s["audiences_failed"]),
                                 ("all", s["audiences"]))
        ]
        gauges = [
            ("diy_outbox_mutations", "Mutations in the outbox by state (pending includes leased).", outbox_depth),
            ("diy_outbox_oldest_pending_age_seconds", "Age of the oldest undelivered mutation.", per_integration("oldest_pending_age")),
            ("diy_dead_letters", "Dead-lettered mutations kept for the operator.", per_integration("dead")),
            ("diy_audiences", "Audiences by creation state.", audiences),
            ("diy_dispatchers_alive", "Dispatchers with a heartbeat in the last 30 s.",
             [([], sum(1 for d in status["dispatchers"] if d["seen_age"] < HEARTBEAT_STALE))]),
            ("diy_database_bytes", "Size of the outbox: the SQLite file and its WAL, or the PostgreSQL database.",
             [([["file", key.split("_")[0]]], size) for key, size in status["files"].items()]),
        ]
        return render(self.service.metrics.collect(), gauges)


def json_reply(document):
    return Reply(json.dumps(document).encode())


def is_loopback(address):
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False
