"""An open-loop HTTP load generator: requests leave on a fixed schedule, whatever the server does.

    python bench/loadgen.py --port 8101 --rate 200 --duration 20 --phase b --out run.json

Request i is due at start + i/rate. Its latency runs from that *intended* time to the last byte
of the answer, so time a request spends waiting for a free connection, or in the generator
itself, counts against the server (no coordinated omission). Keep-alive connections are reused
most-recent-first; when all are busy a new one is opened, up to --max-connections, after which
requests wait in the generator (still on the clock).

Python (asyncio, uvloop when installed) rather than C: the rates it must offer here are those
of a Python server on one core; the JSON it writes carries the generator's own lateness
(`send_lag_ms`: actual minus intended send time), which tells when it falls behind.

"""
import argparse
import asyncio
import collections
import json
import math
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import payloads  # noqa: E402

CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*([0-9]+)", re.IGNORECASE)
CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, generator):
        self.generator = generator
        self.transport = None
        self.buffer = bytearray()
        self.current = None
        self.needed = None

    def connection_made(self, transport):
        self.transport = transport

    def send(self, index, request):
        self.current = index
        self.transport.write(request)

    def data_received(self, data):
        self.buffer += data
        while self.current is not None:
            if self.needed is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[: end + 2])
                length = CONTENT_LENGTH.search(head)
                self.status = int(head[9:12])
                self.closing = bool(CLOSE.search(head))
                self.needed = end + 4 + (int(length.group(1)) if length else 0)
            if len(self.buffer) < self.needed:
                return
            del self.buffer[: self.needed]
            self.needed = None
            index, self.current = self.current, None
            self.generator.answered(self, index, self.status, self.closing)

    def connection_lost(self, exc):
        self.generator.lost(self)


class Generator:
    def __init__(self, host, port, path, phase, max_connections):
        self.host, self.port, self.path, self.phase = host, port, path, phase
        self.max_connections = max_connections
        self.idle = []
        self.waiting = collections.deque()
        self.opened = 0
        self.peak_connections = 0
        self.resent = 0
        self.connect_errors = 0
        self.sent = {}
        self.done = {}
        self.status = {}

    def request(self, index):
        return payloads.http_request(self.phase, index, path=self.path)

    def submit(self, index, front=False):
        if self.idle:
            self.dispatch(self.idle.pop(), index)
            return
        (self.waiting.appendleft if front else self.waiting.append)(index)
        if self.opened < self.max_connections:
            self.opened += 1
            self.peak_connections = max(self.peak_connections, self.opened)
            asyncio.get_running_loop().create_task(self.connect())

    def dispatch(self, connection, index):
        self.sent.setdefault(index, time.monotonic())
        connection.send(index, self.request(index))

    async def connect(self):
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(lambda: Connection(self), self.host, self.port)
        except OSError:
            self.opened -= 1
            self.connect_errors += 1
            await asyncio.sleep(0.01)
            if self.waiting and self.opened < self.max_connections:
                self.opened += 1
                loop.create_task(self.connect())
            return
        self.release(connection)

    def release(self, connection):
        if self.waiting:
            self.dispatch(connection, self.waiting.popleft())
        else:
            self.idle.append(connection)

    def answered(self, connection, index, status, closing):
        self.done[index] = time.monotonic()
        self.status[index] = status
        if closing:
            connection.transport.close()
        else:
            self.release(connection)

    def lost(self, connection):
        self.opened -= 1
        if connection in self.idle:
            self.idle.remove(connection)
        if connection.current is not None:
            self.resent += 1
            index, connection.current = connection.current, None
            self.submit(index, front=True)
        elif self.waiting and self.opened < self.max_connections:
            self.opened += 1
            asyncio.get_running_loop().create_task(self.connect())

    def close(self):
        for connection in self.idle:
            connection.transport.close()


async def open_loop(generator, rate, duration, drain_timeout):
    count = int(rate * duration)
    # No connection is opened ahead: gunicorn's gthread worker gives a new connection a thread
    # that blocks until its first request, so idle pre-opened connections would starve it.
    start = time.monotonic() + 0.1
    index = 0
    while index < count:
        now = time.monotonic()
        while index < count and start + index / rate <= now:
            generator.submit(index)
            index += 1
        if index < count:
            await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
    deadline = time.monotonic() + drain_timeout
    while len(generator.done) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    generator.close()
    intended = [start + i / rate for i in range(count)]
    latencies = sorted((generator.done[i] - intended[i]) * 1000 for i in generator.done)
    lags = sorted((generator.sent[i] - intended[i]) * 1000 for i in generator.sent)
    sent_span = max(generator.sent.values()) - min(generator.sent.values()) if len(generator.sent) > 1 else 0
    return {
        "mode": "open",
        "rate": rate,
        "duration": duration,
        "count": count,
        "start": start,
        "completed": len(generator.done),
        "unfinished": count - len(generator.done),
        "statuses": dict(collections.Counter(map(str, generator.status.values()))),
        "latency_ms": summary(latencies, count),
        "over_1s": sum(1 for v in latencies if v > 1000) + (count - len(generator.done)),
        "send_lag_ms": summary(lags, len(lags)),
        "achieved_send_rate": (len(generator.sent) - 1) / sent_span if sent_span else 0.0,
        "peak_connections": generator.peak_connections,
        "resent": generator.resent,
        "connect_errors": generator.connect_errors,
        "answers": [[i, generator.done[i], generator.status[i]] for i in sorted(generator.done)],
    }


def summary(sorted_values, expected):
    """Percentiles over `expected` requests; missing ones (never answered) count as infinite."""
    if not expected:
        return {}

    def at(q):
        rank = max(0, math.ceil(q * expected) - 1)
        return sorted_values[rank] if rank < len(sorted_values) else math.inf

    return {
        "p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "p999": at(0.999),
        "max": sorted_values[-1] if len(sorted_values) == expected else math.inf,
        "mean": sum(sorted_values) / len(sorted_values) if sorted_values else math.inf,
    }


def install_loop():
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return f"uvloop {uvloop.__version__}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default=payloads.PATH)
    parser.add_argument("--phase", default="z", help="one letter; makes this run's users distinct")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-connections", type=int, default=256)
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the bench only ever sends to loopback")
    loop_name = install_loop()
    generator = Generator(args.host, args.port, args.path, args.phase, args.max_connections)
    result = asyncio.run(open_loop(generator, args.rate, args.duration, args.drain_timeout))
    result["loop"] = loop_name
    with open(args.out, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
