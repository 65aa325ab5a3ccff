"""A signed load generator: plays the DMP against a diy-wsgi endpoint and journals every answer.

    python -m reliability.loadgen --url http://127.0.0.1:8000/dmp --secret s3cr3t \
        --journal load.jsonl --audiences 6 --users 10 --threads 3 --rate 40 --duration 30

Each thread owns a fixed set of audiences (audience i belongs to thread i % threads) and sends
its requests one at a time, so the order of every audience's mutations is the order of its
thread's requests. Requests alternate at random between ADD_TO_AUDIENCE and
REMOVE_FROM_AUDIENCE over a small pool of users, so adds and removes of the same users
interleave. Every mutation has a unique `Uuid` that the receiving platform sees again.

Like the DMP, a request that got no answer or a 5xx is sent again, same body, until a 200 or a
4xx (or `--retry-for` runs out): a thread never moves past a request whose fate is unknown, so
the acknowledged sequence of each audience is exact. The journal has one JSON line per request
and one per attempt:

    {"kind": "request", "req": "1-17", "thread": 1, "seq": 17, "type": "ADD_TO_AUDIENCE",
     "mutations": [["aud-1", "u4", "<uuid>"], ...]}
    {"kind": "attempt", "req": "1-17", "status": 200, "t": 1764221661.2}   (status null: no answer)

On SIGTERM (or when `--duration` is over, and after an hour whatever it was told) each thread
finishes the request it is on, then the process prints a one-line JSON summary and exits. Only
ever talks to 127.0.0.1.
"""
import argparse
import http.client
import json
import random
import signal
import sys
import threading
import time
from urllib.parse import urlsplit

from diy.signature import sign

ADD = "ADD_TO_AUDIENCE"
REMOVE = "REMOVE_FROM_AUDIENCE"
CREATE = "CREATE_AUDIENCE"
LONGEST = 3600.0
"""No run goes on longer than this, whatever it was told: the load always stops by itself."""


class Journal:
    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()

    def write(self, **line):
        text = json.dumps(line) + "\n"
        with self.lock:
            self.file.write(text)
            self.file.flush()

    def close(self):
        with self.lock:
            self.file.close()


class LoadGenerator:
    def __init__(self, url, secret, journal, *, audiences=6, users=10, threads=3, rate=30.0, duration=30.0,
                 max_mutations=8, create=True, prefix="run", seed=0, retry_for=90.0, timeout=10.0,
                 remove_share=0.4, retry_pause=0.1):
        self.endpoints = []
        for each in [url] if isinstance(url, str) else url:
            parts = urlsplit(each)
            if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError("the load generator only talks to the loopback interface")
            self.endpoints.append((parts.hostname, parts.port or 80, parts.path or "/"))
        self.secret = secret
        self.journal = journal
        self.audiences = [f"{prefix}-aud-{i}" for i in range(audiences)]
        self.users = [f"u{i}" for i in range(users)]
        self.threads = threads
        self.interval = threads / rate if rate > 0 else 0.0
        self.duration = duration
        self.max_mutations = max_mutations
        self.create = create
        self.prefix = prefix
        self.seed = seed
        self.retry_for = retry_for
        self.timeout = timeout
        self.remove_share = remove_share
        self.retry_pause = retry_pause
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.figures = {"requests": 0, "attempts": 0, "acknowledged": 0, "mutations_acknowledged": 0,
                        "refused_4xx": 0, "unavailable_503": 0, "other_5xx": 0, "no_answer": 0,
                        "given_up": 0}
        self.statuses = {}

    def run(self):
        started = time.monotonic()
        workers = [threading.Thread(target=self._worker, args=(n,), name=f"load-{n}") for n in range(self.threads)]
        for worker in workers:
            worker.start()
        self.stopping.wait(min(self.duration, LONGEST) if self.duration else LONGEST)
        self.stopping.set()
        for worker in workers:
            while worker.is_alive():
                worker.join(0.5)  # a timed join lets SIGTERM's handler run in this thread
        elapsed = time.monotonic() - started
        summary = {**self.figures, "statuses": self.statuses, "seconds": round(elapsed, 2),
                   "rate": round(self.figures["requests"] / elapsed, 1) if elapsed else 0.0}
        self.journal.write(kind="summary", **summary)
        return summary

    def _worker(self, number):
        rand = random.Random(f"{self.seed}-{number}")
        owned = self.audiences[number::self.threads]
        connection = None
        seq = 0
        if self.create:
            for audience in owned[::2]:  # the other half is created on first use
                seq += 1
                body = {"Type": CREATE, "Name": f"Audience {audience}", "Customer": 123, "Audience": audience}
                connection = self._send(connection, f"{number}-{seq}", number, seq, CREATE, body, [])
        next_at = time.monotonic()
        while not self.stopping.is_set() and owned:
            seq += 1
            kind = REMOVE if rand.random() < self.remove_share else ADD
            mutations = []
            for index in range(rand.randint(1, self.max_mutations)):
                audience, user = rand.choice(owned), rand.choice(self.users)
                mutations.append([audience, user, f"{self.prefix}-{number}-{seq}-{index}"])
            body = {"Type": kind, "Mutations": [
                {"Uuid": uuid, "Audience": audience, "Customer": 123, "Platform": 113, "External_user_id": user}
                for audience, user, uuid in mutations]}
            connection = self._send(connection, f"{number}-{seq}", number, seq, kind, body, mutations)
            next_at += self.interval
            pause = next_at - time.monotonic()
            if pause > 0:
                self.stopping.wait(pause)
            else:
                next_at = time.monotonic()
        if connection is not None:
            connection.close()

    def _send(self, connection, req, thread, seq, kind, body, mutations):
        """Send one request until it is answered 200 or 4xx; returns the connection to reuse.

        With several endpoints it plays a load balancer: each request goes to the next one, and
        each try after a failure to the one after that."""
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "X-HMAC": sign(self.secret, raw)}
        self.journal.write(kind="request", req=req, thread=thread, seq=seq, type=kind, mutations=mutations)
        self._count("requests")
        give_up_at = time.monotonic() + self.retry_for
        tries = 0
        while True:
            status, error = None, None
            host, port, path = self.endpoints[(seq + tries) % len(self.endpoints)]
            tries += 1
            if connection is not None and (connection.host, connection.port) != (host, port):
                connection.close()
                connection = None
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(host, port, timeout=self.timeout)
                connection.request("POST", f"{path}?type={kind}", body=raw, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as failure:
                error = type(failure).__name__
                if connection is not None:
                    connection.close()
                connection = None
            self.journal.write(kind="attempt", req=req, status=status, t=time.time(), error=error, port=port)
            self._count("attempts")
            with self.lock:
                self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
            if status == 200:
                self._count("acknowledged")
                self._count("mutations_acknowledged", len(mutations))
                return connection
            if status is not None and 400 <= status < 500:
                self._count("refused_4xx")
                return connection
            self._count("no_answer" if status is None else "unavailable_503" if status == 503 else "other_5xx")
            if time.monotonic() >= give_up_at:
                self._count("given_up")
                return connection
            time.sleep(self.retry_pause)

    def _count(self, name, amount=1):
        with self.lock:
            self.figures[name] += amount


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, action="append",
                        help="the endpoint, http://127.0.0.1:PORT/PATH; give it again for a second instance, "
                             "and requests go to each in turn, as through a load balancer")
    parser.add_argument("--secret", required=True, help="the DMP's HMAC secret")
    parser.add_argument("--journal", required=True)
    parser.add_argument("--audiences", type=int, default=6)
    parser.add_argument("--users", type=int, default=10, help="users per audience pool (small: ops interleave)")
    parser.add_argument("--threads", type=int, default=3, help="concurrent senders, each owning some audiences")
    parser.add_argument("--rate", type=float, default=30.0,
                        help="requests a second, all threads together (0: flat out)")
    parser.add_argument("--duration", type=float, default=30.0,
                        help=f"seconds to run (0: until SIGTERM, at most {LONGEST:g})")
    parser.add_argument("--max-mutations", type=int, default=8, help="mutations per request, 1 to this")
    parser.add_argument("--no-create", action="store_true",
                        help="no CREATE_AUDIENCE: every audience is created on first use")
    parser.add_argument("--prefix", default="run", help="prefix of audience ids and uuids")
    parser.add_argument("--seed", default="0")
    parser.add_argument("--retry-for", type=float, default=90.0, help="seconds to keep resending one request")
    args = parser.parse_args(argv)
    journal = Journal(args.journal)
    generator = LoadGenerator(
        args.url, args.secret.encode(), journal, audiences=args.audiences, users=args.users, threads=args.threads,
        rate=args.rate, duration=args.duration, max_mutations=args.max_mutations, create=not args.no_create,
        prefix=args.prefix, seed=args.seed, retry_for=args.retry_for,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: generator.stopping.set())
    summary = generator.run()
    journal.close()
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
