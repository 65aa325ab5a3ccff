"""The platform side: a keep-alive HTTP/1.1 receiver on loopback, standard library only.

    python bench/receiver.py --port 8201                 answers every POST 200 at once
    python bench/receiver.py --port 8202 --delay-ms 50   a platform that takes 50 ms per call

It counts what arrives (events, members, bytes, TCP connections) without parsing JSON: members
are counted as occurrences of `"external_user_id"`. With `--trace` it also notes, per event,
the arrival time (time.monotonic, comparable across processes on Linux) of the first member of
each bench request (see payloads.TRACE_ID), for the delivery latency.

    GET /stats   {"events", "members", "bytes", "connections"}
    GET /trace   [[monotonic seconds, request tag], ...] noted since the last GET /trace
"""
import argparse
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MEMBER = b'"external_user_id"'
TRACE_ID = re.compile(rb'"external_user_id":"([a-z][0-9]{8})000"')  # payloads.TRACE_ID


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.events = self.members = self.bytes = self.connections = 0
        self.trace = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bench-receiver"
    disable_nagle_algorithm = True  # and each answer leaves in one write: no delayed-ACK stalls

    def setup(self):
        super().setup()
        with self.server.counters.lock:
            self.server.counters.connections += 1

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.server.delay:
            time.sleep(self.server.delay)
        arrived = time.monotonic()
        members = raw.count(MEMBER)
        tags = TRACE_ID.findall(raw) if self.server.tracing else ()
        counters = self.server.counters
        with counters.lock:
            counters.events += 1
            counters.members += members
            counters.bytes += len(raw)
            counters.trace.extend((arrived, t.decode()) for t in tags)
        self.answer(b"{}")

    def do_GET(self):
        counters = self.server.counters
        with counters.lock:
            if self.path == "/trace":
                document, counters.trace = counters.trace, []
            else:
                document = {k: getattr(counters, k) for k in ("events", "members", "bytes", "connections")}
        self.answer(json.dumps(document).encode())

    def answer(self, payload):
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(payload), payload))

    def log_message(self, *args):
        pass


class Receiver(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, port, delay, tracing):
        super().__init__(("127.0.0.1", port), Handler)
        self.delay = delay
        self.tracing = tracing
        self.counters = Counters()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args(argv)
    server = Receiver(args.port, args.delay_ms / 1000, args.trace)
    print(f"receiver listening on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
