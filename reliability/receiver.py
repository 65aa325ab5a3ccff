"""A receiving platform for the reliability suites: a Standard Webhooks receiver with faults.

    python -m reliability.receiver --port 8101 --control-port 8102 --journal platform.jsonl

It verifies every event's signature with `targets.webhook.verify` and parses it as strict JSON
(a bad signature or a body that is not JSON is answered 401 and counted as a bad request; a body
cut short because its sender died is counted as truncated), keeps each audience's
members (applying a `webhook-id` once: dedupe-aware, as a real receiver should), and records
**every** call in the journal, one JSON line each, duplicates and refused calls included:

    {"seq": 7, "t": 1764221661.2, "id": "msg_...", "type": "audience.members_added",
     "dmp_id": "aud-1", "answer": 200, "fault": "ok", "dup": false,
     "members": [["u3", "uuid-..."], ...]}

`answer` is the status it sent (null for a hang: none). A held call is recorded, applied and
answered when it is let go, whether or not its sender is still there to read the answer.
Faults are switched at run time on the control port, which stays up when the receiver is down:

    POST /fault {"mode": "ok"}                       answer 200 (the default)
    POST /fault {"mode": "down"}                     close the listening socket and every open
                                                     connection: connection refused
    POST /fault {"mode": "hang"}                     read the request, answer nothing until the
                                                     fault changes, then close the connection
    POST /fault {"mode": "status", "status": 503}    answer 503 (or 500, 429, ...); with
                 "retry_after": "1"                  a Retry-After header
    POST /fault {"mode": "slow", "delay": 0.3}       answer 200 after `delay` seconds
    POST /fault {"mode": "hold"}                     hold member calls until the fault changes
                                                     (then apply them): a call "in flight"
    "audiences": ["aud-0"]                           any fault but down: only for these dmp ids
    GET /state                                       counters, calls held (under the current
                                                     fault), the members

The process stops on SIGTERM or SIGINT. Only ever binds 127.0.0.1.
"""
import argparse
import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from targets.webhook import SignatureError, verify

MODES = ("ok", "down", "hang", "status", "slow", "hold")
HANG_LIMIT = 120.0
"""A hung or held call gives up after this long whatever happens, so the process always ends."""


class Fault:
    def __init__(self, mode="ok", status=503, retry_after=None, delay=0.0, audiences=None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self.status = int(status)
        self.retry_after = None if retry_after is None else str(retry_after)
        self.delay = float(delay)
        self.audiences = None if audiences is None else frozenset(audiences)

    def applies_to(self, dmp_id):
        return self.audiences is None or dmp_id in self.audiences

    def describe(self):
        if self.mode == "status":
            return f"status:{self.status}" + ("" if self.retry_after is None else f":retry-after={self.retry_after}")
        return self.mode


class Platform:
    """The receiver's state; `serve()` runs the data and control servers until `stop()`."""

    def __init__(self, secret, journal_path, host="127.0.0.1", port=0, control_port=0, created_ids=False):
        self.secret = secret
        self.host = host
        self.port = port
        self.created_ids = created_ids
        self.journal = open(journal_path, "a", encoding="utf-8")
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.fault = Fault()
        self.generation = 0
        """Counts fault changes: a call held or hung under one fault is let go by the next."""
        self.members = {}
        self.seen_ids = set()
        self.seq = 0
        self.counts = {"calls": 0, "delivered": 0, "duplicates": 0, "refused": 0, "bad_requests": 0, "truncated": 0,
                       "held": 0, "hung": 0}
        self.calls_by_audience = {}
        self.data_server = None
        self.data_thread = None
        self.control_server = _Server((host, control_port), ControlHandler)
        self.control_server.platform = self
        self.control_port = self.control_server.server_address[1]
        self.stopped = threading.Event()

    # The data server's life.

    def up(self):
        if self.data_server is not None:
            return
        server = _Server((self.host, self.port), EventHandler)
        server.platform = self
        self.port = server.server_address[1]
        self.data_server = server
        self.data_thread = threading.Thread(target=server.serve_forever, name="platform-data", daemon=True)
        self.data_thread.start()

    def down(self):
        server, self.data_server = self.data_server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.drop_connections()

    def set_fault(self, spec):
        fault = Fault(**spec)
        if fault.mode == "down":
            self.down()
        else:
            self.up()
        with self.changed:
            self.fault = fault
            self.generation += 1
            self.counts["held"] = 0
            self.changed.notify_all()
        return fault

    def serve(self):
        self.up()
        threading.Thread(target=self.control_server.serve_forever, name="platform-control", daemon=True).start()
        self.stopped.wait()
        self.down()
        self.control_server.shutdown()
        self.control_server.server_close()
        with self.changed:
            self.changed.notify_all()
        self.journal.close()

    def stop(self):
        self.stopped.set()

    # Calls.

    def current_fault(self, dmp_id):
        """The fault for a call to `dmp_id`, and the generation it belongs to."""
        with self.lock:
            fault, generation = self.fault, self.generation
        return (fault if fault.applies_to(dmp_id) else Fault()), generation

    def wait_for_change(self, generation):
        """Block until the fault changes after `generation` (bounded by HANG_LIMIT)."""
        deadline = time.monotonic() + HANG_LIMIT
        with self.changed:
            while not self.stopped.is_set() and self.generation == generation and time.monotonic() < deadline:
                self.changed.wait(0.2)

    def record(self, message_id, event, answer, fault, apply):
        """Journal one call; apply a delivered event's members once per webhook-id."""
        data = event.get("data", {})
        dmp_id = data.get("audience", {}).get("dmp_id")
        members = [[m.get("external_user_id"), m.get("uuid")] for m in data.get("members", [])]
        with self.lock:
            self.seq += 1
            self.counts["calls"] += 1
            self.calls_by_audience[dmp_id] = self.calls_by_audience.get(dmp_id, 0) + 1
            duplicate = False
            if apply:
                duplicate = message_id in self.seen_ids
                self.counts["duplicates" if duplicate else "delivered"] += 1
                if not duplicate:
                    self.seen_ids.add(message_id)
                    current = self.members.setdefault(dmp_id, set())
                    users = {user for user, _ in members}
                    if event.get("type") == "audience.members_added":
                        current |= users
                    elif event.get("type") == "audience.members_removed":
                        current -= users
            else:
                self.counts["refused"] += 1
            line = {"seq": self.seq, "t": time.time(), "id": message_id, "type": event.get("type"),
                    "dmp_id": dmp_id, "answer": answer, "fault": fault, "dup": duplicate, "members": members}
            self.journal.write(json.dumps(line) + "\n")
            self.journal.flush()

    def reject(self, kind, reason):
        """Journal and count a call that carried no event: `truncated` or `bad_requests`."""
        with self.lock:
            self.seq += 1
            self.counts[kind] += 1
            line = {"seq": self.seq, "t": time.time(), "id": None, "type": None, "dmp_id": None, "answer": None,
                    "fault": kind, "dup": False, "members": [], "reason": reason}
            self.journal.write(json.dumps(line) + "\n")
            self.journal.flush()

    def state(self):
        with self.lock:
            return {
                "port": self.port, "up": self.data_server is not None, "fault": self.fault.describe(),
                **self.counts, "calls_by_audience": dict(self.calls_by_audience),
                "members": {key: sorted(users) for key, users in self.members.items()},
            }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args, **kwargs):
        self.connections = set()
        self.connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def drop_connections(self):
        with self.connections_lock:
            connections, self.connections = self.connections, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self):
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def answer(self, status, payload, headers=()):
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format, *args):
        pass


class EventHandler(_Handler):
    def do_POST(self):
        platform = self.server.platform
        body = self.body()
        if len(body) < int(self.headers.get("Content-Length") or 0):
            # The sender died while sending (SIGKILL mid-call): nothing arrived, nothing to answer.
            platform.reject("truncated", f"{len(body)} of {self.headers.get('Content-Length')} bytes")
            self.close_connection = True
            return
        try:
            verify(platform.secret, dict(self.headers.items()), body, now=time.time())
            event = json.loads(body, parse_constant=_not_json)  # strict: no NaN, no Infinity
        except (SignatureError, ValueError) as error:
            platform.reject("bad_requests", str(error))
            return self.answer(401, {"error": str(error)})
        message_id = self.headers["webhook-id"]
        dmp_id = event.get("data", {}).get("audience", {}).get("dmp_id")
        fault, generation = platform.current_fault(dmp_id)
        if fault.mode == "hang":
            with platform.lock:
                platform.counts["hung"] += 1
            platform.record(message_id, event, None, "hang", apply=False)
            platform.wait_for_change(generation)
            self.close_connection = True
            return
        if fault.mode == "status":
            headers = [("Retry-After", fault.retry_after)] if fault.retry_after is not None else []
            platform.record(message_id, event, fault.status, fault.describe(), apply=False)
            return self.answer(fault.status, {"error": f"scripted {fault.status}"}, headers)
        if fault.mode == "slow":
            time.sleep(fault.delay)
        if fault.mode == "hold" and event.get("type") != "audience.created":
            with platform.lock:
                if platform.generation == generation:
                    platform.counts["held"] += 1
            platform.wait_for_change(generation)
        platform.record(message_id, event, 200, fault.mode, apply=True)
        created = event.get("type") == "audience.created" and platform.created_ids
        self.answer(200, {"id": f"rcv-{dmp_id}"} if created else {})


def _not_json(token):
    raise ValueError(f"{token} is not JSON")


class ControlHandler(_Handler):
    def do_GET(self):
        if self.path == "/state":
            return self.answer(200, self.server.platform.state())
        self.answer(404, {"error": "GET /state"})

    def do_POST(self):
        platform = self.server.platform
        if self.path == "/fault":
            try:
                fault = platform.set_fault(json.loads(self.body() or b"{}"))
            except (TypeError, ValueError) as error:
                return self.answer(400, {"error": str(error)})
            return self.answer(200, {"fault": fault.describe(), "port": platform.port})
        if self.path == "/stop":
            self.answer(200, {})
            return platform.stop()
        self.answer(404, {"error": "POST /fault or /stop"})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0, help="events port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--control-port", type=int, default=0)
    parser.add_argument("--secret", required=True, help="the integration's target.secret (whsec_...)")
    parser.add_argument("--journal", required=True, help="the JSON-lines file every call is recorded in")
    parser.add_argument("--created-ids", action="store_true",
                        help='answer audience.created with {"id": "rcv-<dmp id>"}')
    args = parser.parse_args(argv)
    platform = Platform(args.secret, args.journal, port=args.port, control_port=args.control_port,
                        created_ids=args.created_ids)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: platform.stop())
    platform.up()
    print(json.dumps({"port": platform.port, "control_port": platform.control_port}), flush=True)
    platform.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
