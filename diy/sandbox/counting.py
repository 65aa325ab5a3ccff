"""The sandbox's counting mode, a platform for load tests: `diy-wsgi sandbox --counting`.

    diy-wsgi sandbox --counting --port 8201                  answers every POST 200 {} at once
    diy-wsgi sandbox --counting --port 8202 --latency 50ms   a platform that takes 50 ms a call
    diy-wsgi sandbox --counting --trace '"external_user_id":"([a-z][0-9]{8})000"'

It checks nothing and keeps no audiences: it counts what arrives (events, members, bytes, TCP
connections) without parsing JSON, members as occurrences of `"external_user_id"`, so that it
costs the load test as little as a platform can. The one fault it takes is `--latency` (a fixed
delay before each answer). With `--trace PATTERN` (a regular expression with one group) it also
notes, for every match in a body, the time it arrived (time.monotonic, comparable across
processes on Linux; taken once the body is read, before any --latency) and the group: the bench
finds the first member of each of its requests so. Events and members are counted once answered.

    GET /api/stats   {"events", "members", "bytes", "connections"}
    GET /api/trace   [[monotonic seconds, group], ...] noted since the last GET /api/trace

Like the sandbox it listens on loopback only; it answers every POST, whatever its path, and
its GETs only to a Host that names this machine.
"""
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from diy.hosts import host_name, is_loopback
from diy.sandbox.settings import SandboxSettings
from diy.servers import QuietDisconnects

MEMBER = b'"external_user_id"'


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.events = self.members = self.bytes = self.connections = 0
        self.trace = []


class CountingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "diy-wsgi-sandbox-counting"
    disable_nagle_algorithm = True  # and each answer leaves in one write: no delayed-ACK stalls

    def setup(self):
        super().setup()
        with self.server.counters.lock:
            self.server.counters.connections += 1

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        arrived = time.monotonic()
        if self.server.delay:
            time.sleep(self.server.delay)
        members = raw.count(MEMBER)
        tags = self.server.trace.findall(raw) if self.server.trace is not None else ()
        counters = self.server.counters
        with counters.lock:
            counters.events += 1
            counters.members += members
            counters.bytes += len(raw)
            counters.trace.extend((arrived, tag.decode("utf-8", "replace")) for tag in tags)
        self.answer(200, b"{}")

    def do_GET(self):
        if not is_loopback(host_name(self.headers.get("Host") or "127.0.0.1")):
            return self.answer(403, b'{"error": "the sandbox answers only requests addressed to this machine"}')
        counters = self.server.counters
        with counters.lock:
            if self.path == "/api/trace":
                document, counters.trace = counters.trace, []
            elif self.path == "/api/stats":
                document = {k: getattr(counters, k) for k in ("events", "members", "bytes", "connections")}
            else:
                return self.answer(404, b'{"error": "GET /api/stats or /api/trace"}')
        self.answer(200, json.dumps(document).encode())

    def answer(self, status, payload):
        reason = {200: b"OK", 403: b"Forbidden", 404: b"Not Found"}[status]
        self.wfile.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (status, reason, len(payload), payload))

    def log_message(self, *args):
        pass


class CountingServer(QuietDisconnects, ThreadingHTTPServer):
    """The counting mode's server; `url` is where it listens, `counters` what it counted."""

    daemon_threads = True
    request_queue_size = 1024
    counting = True

    def __init__(self, settings: SandboxSettings):
        if ":" in settings.host:
            self.address_family = socket.AF_INET6
        super().__init__((settings.host, settings.port), CountingHandler)
        host, port = self.server_address[:2]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self.delay = settings.faults.latency
        self.trace = None if not settings.trace else re.compile(settings.trace.encode("utf-8"))
        self.counters = Counters()
