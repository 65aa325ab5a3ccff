"""Where the time goes: stage timings in one process, the storage design against the old one,
how a waiting writer gets SQLite's lock, and (from run.py) a py-spy profile, lock timers and CPU
clocks under saturated load.

    python bench/profiling.py micro --workdir DIR --receiver-port PORT --out FILE

`micro` runs alone on a quiet CPU, in its own process because it wraps the outbox's
connections with bench/apps/diy_traced.py's timers.
"""
import argparse
import collections
import json
import re
import sqlite3
import statistics
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH), str(BENCH / "apps")]

import payloads  # noqa: E402

EXTRA_FIELD = (b'"Platform":113,', b'"Platform":113,"Channel":"web",')
CLAIM_SIZES = (100, 1000)
"""Mutations per delivery: one stored request (16 audiences at saturation), and ten."""
OLD_DESIGN = "the old design, a row per mutation (migration 1's table, for comparison)"
TODAY = "today: one batch row per request and audience"
GROUPED = "one batch row, 10 requests per COMMIT (what group commit does under load)"
HEADER_PARSING = "HTTP response headers (http.client parses them with the email package)"
IDLE = "idle: waiting for work"


def per_call_ms(samples):
    return {"median": statistics.median(samples) * 1000, "mean": statistics.fmean(samples) * 1000}


def _config(workdir, receiver_port, name):
    from diy.config import parse_config
    from contenders import diy_config  # the bench's real configuration, embedded dispatcher off

    folder = Path(workdir) / name
    folder.mkdir(parents=True, exist_ok=True)
    path = diy_config(folder, receiver_port, embedded=False)
    return parse_config(path.read_text(), source=str(path), base_dir=str(path.parent))


def ingest_stages(workdir, receiver_port, count=300):
    """Wall time of each step of an ADD_TO_AUDIENCE with 100 mutations, no contention; requests
    with and without an unknown field in every mutation alternate, so noise hits both alike."""
    import diy_traced
    from diy import dmp
    from diy.signature import verify
    from diy_wsgi import make_app

    config = _config(workdir, receiver_port, "micro")
    app = make_app(config)
    integration = config.integrations[0]
    steps = {False: collections.defaultdict(list), True: collections.defaultdict(list)}
    for index in range(2 * (count + 30)):
        extra = bool(index % 2)
        raw = payloads.body("m", index)
        raw = raw.replace(*EXTRA_FIELD) if extra else raw
        signature = payloads.signature(raw)
        diy_traced._stats.clear()
        t0 = time.perf_counter()
        assert verify(integration.hmac_secrets, raw, signature)
        t1 = time.perf_counter()
        body = dmp.decode_body(raw, dmp.ADD_TO_AUDIENCE)
        t2 = time.perf_counter()
        mutations = dmp.parse_mutations(body)
        t3 = time.perf_counter()
        app.outbox.enqueue(integration.name, "add", mutations, pass_through=integration.return_target_id, now=time.time())
        t4 = time.perf_counter()
        if index < 60:
            continue  # warm-up: audiences created, caches filled
        timers = {what: sum(seconds for _, seconds in values) for what, values in diy_traced._stats["enqueue"].items()}
        for name, seconds in (
            ("HMAC-SHA1 check (verify)", t1 - t0),
            ("JSON decode (decode_body)", t2 - t1),
            ("validate into 100 ReceivedMutation (parse_mutations)", t3 - t2),
            ("enqueue: group by audience, encode the batch JSON", t4 - t3 - timers["wait"] - timers["held"]),
            ("write: the writer lock and BEGIN IMMEDIATE (uncontended)", timers["wait"]),
            ("write: audience lookup, UPDATE pending, INSERT the batch row (in a savepoint)",
             timers["held"] - timers["commit"]),
            ("COMMIT (WAL append + fsync, synchronous=FULL)", timers["commit"]),
        ):
            steps[extra][name].append(seconds)
    app.stop()
    return {("with_extra_field" if extra else "plain"): {name: per_call_ms(values) for name, values in by_step.items()}
            for extra, by_step in steps.items()}


def whole_request(workdir, receiver_port, count=400):
    """The WSGI call as gunicorn makes it, CPU per request, with the request log line written
    (log level INFO, to a file) and not (WARNING), alternating."""
    import io
    import logging

    from diy_wsgi import make_app

    config = _config(workdir, receiver_port, "micro-whole")
    app = make_app(config)
    root = logging.getLogger()
    handler = logging.FileHandler(Path(workdir) / "micro-requests.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.handlers[:] = [handler]
    cpu = {"INFO": [], "WARNING": []}
    for index in range(count + 40):
        level = "INFO" if index % 2 else "WARNING"
        root.setLevel(level)
        raw = payloads.body("w", index)
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/dmp", "QUERY_STRING": "type=ADD_TO_AUDIENCE",
                   "CONTENT_LENGTH": str(len(raw)), "wsgi.input": io.BytesIO(raw),
                   "HTTP_X_HMAC": payloads.signature(raw), "wsgi.errors": sys.stderr}
        started = time.thread_time()
        app(environ, lambda status, headers, exc_info=None: None)
        if index >= 40:
            cpu[level].append(time.thread_time() - started)
    app.stop()
    root.handlers[:] = []
    return {level: per_call_ms(values) for level, values in cpu.items()}


def dispatch_stages(workdir, receiver_port, rounds=20, warmup=2):
    """Deliveries of one audience as the dispatcher makes them, alone: claim (a read, then a
    transaction), coalesce + build + encode + sign the event, POST, settle (a transaction). Every stored request
    is one batch row of 100 mutations; claims of one request and of ten alternate."""
    from diy import dmp
    from diy.service import Service

    config = _config(workdir, receiver_port, "micro-dispatch")
    service = Service(config)
    integration = config.integrations[0]
    for index in range((rounds + warmup) * sum(CLAIM_SIZES) // payloads.MUTATIONS):
        raw = payloads.body("q", index * payloads.AUDIENCES)  # all in audience 0
        service.outbox.enqueue(integration.name, "add", dmp.parse_mutations(dmp.decode_body(raw, dmp.ADD_TO_AUDIENCE)),
                               pass_through=True, now=time.time())
    target = service.accounts[integration.name].all()[0].target
    steps = {size: collections.defaultdict(list) for size in CLAIM_SIZES}
    for number in range(rounds + warmup):
        for size in CLAIM_SIZES:
            timings = deliver_once(service.outbox, target, integration.name, size)
            if number >= warmup:
                for name, seconds in timings.items():
                    steps[size][name].append(seconds)
    service.close()
    return {str(size): {name: per_call_ms(values) for name, values in by_step.items()}
            for size, by_step in steps.items()}


def deliver_once(outbox, target, integration, size):
    """One claim of `size` mutations delivered and settled; the seconds of each step."""
    from outbox.dispatcher import coalesce
    from targets import webhook

    t0 = time.perf_counter()
    claim, = outbox.claim("bench", now=time.time(), lease=300, limit=1, batch_sizes={integration: size})
    t1 = time.perf_counter()
    assert len(claim.mutations) == size
    audience = claim.audience.for_target()
    now = time.time()
    latest = coalesce(claim.mutations)
    event = webhook.members_event(audience, "add", latest, now)
    message_id = webhook.members_message_id(audience, "add", latest)
    body = webhook.encode_event(event)
    signature = webhook._signature(target.signing_key, message_id, int(now), body)
    t2 = time.perf_counter()
    target.http.request("POST", target.url, body=body, timeout=10,
                        headers={"content-type": "application/json", "webhook-id": message_id,
                                 "webhook-timestamp": str(int(now)), "webhook-signature": signature})
    t3 = time.perf_counter()
    assert outbox.settle(claim, now=time.time())
    t4 = time.perf_counter()
    return {"claim: a read for due work, a transaction (audience, its batch rows, lease), decode": t1 - t0,
            "event: coalesce, build the dicts, json.dumps, sign": t2 - t1,
            "POST to the receiver (keep-alive, loopback)": t3 - t2,
            "settle: a transaction (batch rows done, audience released)": t4 - t3}


STORAGE_VARIANTS = (
    (OLD_DESIGN, 1, 1),
    (TODAY, 2, 1),
    (GROUPED, 2, 10),
)
"""(name, schema version, requests per COMMIT)."""


def what_ifs(workdir, rounds=5, requests=60):
    """The same 100 mutations stored by the old design and by today's, on the real schemas,
    synchronous=FULL; the variants take turns, and each reports the median over its
    transactions, per request (SQL and COMMIT; the JSON is encoded before, as enqueue does)."""
    connections = [fresh_outbox(Path(workdir) / f"whatif-{number}.sqlite3", version)
                   for number, (_, version, _) in enumerate(STORAGE_VARIANTS)]
    stored = stored_request()
    per_request = collections.defaultdict(list)
    for _ in range(rounds):
        for connection, (name, version, grouped) in zip(connections, STORAGE_VARIANTS):
            for _ in range(requests // grouped):
                started = time.perf_counter()
                connection.execute("BEGIN IMMEDIATE")
                for _ in range(grouped):
                    store(connection, version, stored)
                connection.execute("COMMIT")
                per_request[name].append((time.perf_counter() - started) / grouped)
    for connection in connections:
        connection.close()
    return {name: statistics.median(values) * 1000 for name, values in per_request.items()}


def fresh_outbox(path, version):
    """A raw connection to a new outbox file at schema `version`, WAL, synchronous=FULL, one audience."""
    from outbox.schema import MIGRATIONS, split_statements

    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    for migration in MIGRATIONS[:version]:
        for statement in split_statements(migration):
            connection.execute(statement)
    connection.execute("INSERT INTO audiences (integration, key, dmp_id, state, created_at, updated_at)"
                       " VALUES ('bench', 'a', 'a', 'ready', 0, 0)")
    return connection


def stored_request():
    """A bench request's 100 mutations: as migration 1's rows, and as today's batch row."""
    from diy import dmp
    from outbox.store import encode_batch

    received = dmp.parse_mutations(dmp.decode_body(payloads.body("b", 0), dmp.ADD_TO_AUDIENCE))
    members = [[m.external_user_id, m.uuid, m.customer, m.platform, None] for m in received]
    return {1: [(1, "add", *member[:4], None, 0.0) for member in members],
            2: (1, "add", len(members), encode_batch(members), 0.0)}


def store(connection, version, stored):
    connection.execute("UPDATE audiences SET pending = pending + 100 WHERE id = 1")
    if version == 1:
        connection.executemany("INSERT INTO mutations (audience_id, op, external_user_id, uuid, customer, platform,"
                               " extra, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", stored[1])
    else:
        connection.execute("INSERT INTO batches (audience_id, op, size, mutations, received_at)"
                           " VALUES (?, ?, ?, ?, ?)", stored[2])


def commit_beside_busy_thread(workdir, commits=150, intervals=(None, 0.0005)):
    """Median ms of a request's durable COMMIT (one batch row) alone, then with a CPU-bound Python
    thread in the same process, at the default switch interval and a shorter one: after the fsync
    the committing thread needs the GIL back, which a busy thread hands over every interval."""
    connection = fresh_outbox(Path(workdir) / "gil-probe.sqlite3", 2)
    stored = stored_request()

    def median_commit():
        seconds = []
        for _ in range(commits):
            connection.execute("BEGIN IMMEDIATE")
            store(connection, 2, stored)
            started = time.perf_counter()
            connection.execute("COMMIT")
            seconds.append(time.perf_counter() - started)
        return statistics.median(seconds) * 1000

    default = sys.getswitchinterval()
    result = {"alone": median_commit(), "beside a busy thread": {}}
    stop = threading.Event()
    busy = threading.Thread(target=spin, args=(stop,))
    busy.start()
    try:
        for interval in intervals:
            sys.setswitchinterval(interval or default)
            result["beside a busy thread"][f"{(interval or default) * 1000:g}"] = median_commit()
    finally:
        sys.setswitchinterval(default)
        stop.set()
        busy.join()
    connection.close()
    return result


def spin(stop):
    while not stop.is_set():
        sum(range(1000))


def lock_handoff(workdir, holds_ms=(0.5, 2, 5, 12, 20, 40), rounds=9):
    """How late after another connection releases the write lock a writer waiting for it gets
    it: in SQLite's busy handler (the product before) and in `Database`, which polls (today)."""
    from outbox.db import Database

    path = Path(workdir) / "lock-probe.sqlite3"
    database = Database(str(path), synchronous="normal")
    database.connection()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    handler = sqlite3.connect(path, isolation_level=None, timeout=5)

    def in_busy_handler():
        handler.execute("BEGIN IMMEDIATE")
        got = time.perf_counter()
        handler.execute("COMMIT")
        return got

    def polling():
        with database.transaction(durable=False):
            return time.perf_counter()

    waiters = {"busy_handler": in_busy_handler, "polling": polling}
    result = {}
    for hold in holds_ms:
        late = {name: [] for name in waiters}
        for _ in range(rounds):
            for name, waiter in waiters.items():
                late[name].append(handoff(holder, waiter, hold / 1000))
        result[str(hold)] = {name: {"late_ms_median": statistics.median(v for v, _ in values),
                                    "late_ms_max": max(v for v, _ in values),
                                    "waiter_cpu_ms_median": statistics.median(c for _, c in values)}
                             for name, values in late.items()}
    holder.close()
    handler.close()
    database.close()
    return result


def handoff(holder, waiter, hold):
    """`holder` takes the write lock and releases it after `hold` s while `waiter()` waits for it:
    (ms from the release to the waiter having it, the waiter's CPU ms)."""
    holder.execute("BEGIN IMMEDIATE")
    released = {}

    def release():
        time.sleep(hold)
        holder.execute("COMMIT")
        released["at"] = time.perf_counter()

    thread = threading.Thread(target=release)
    thread.start()
    time.sleep(0.0001)
    cpu = time.thread_time()
    got = waiter()
    cpu = time.thread_time() - cpu
    thread.join()
    return (got - released["at"]) * 1000, cpu * 1000


def micro(workdir, receiver_port):
    return {
        "ingest": ingest_stages(workdir, receiver_port),
        "whole_request_cpu_ms": whole_request(workdir, receiver_port),
        "dispatch": dispatch_stages(workdir, receiver_port),
        "what_ifs": what_ifs(workdir),
        "commit_and_gil": commit_beside_busy_thread(workdir),
        "lock_handoff": lock_handoff(workdir),
    }


# Under load: py-spy's samples of the gunicorn workers, sorted into the steps above.

CATEGORIES = (
    ("write-lock wait: the process's writer lock (the writes and transactions ahead)", r"^Database\._take_writer "),
    ("write-lock wait: SQLite's lock (BEGIN IMMEDIATE, polled every 0.5 ms)", r"^Database\._polling "),
    ("COMMIT (WAL append; fsync for requests)", r"^Database\.(transaction|_run_group) \(outbox/db\.py:({commit})\)"),
    ("logging", r"\(logging/"),
    ("metrics", r"\(diy/metrics\.py"),
    ("HMAC check", r"^verify \(diy/signature\.py"),
    ("JSON decode", r"^decode_body \(diy/dmp\.py"),
    ("validate into ReceivedMutation", r"^parse_mutations"),
    ("enqueue: group by audience + encode the batch JSON",
     r"^(Outbox\.enqueue(\.<locals>\.<listcomp>)?|encode_batch|chunks) "),
    ("enqueue SQL (audience lookup, UPDATE, INSERT the batch row)",
     r"^(Outbox\.(enqueue\.<locals>\.store|_audience_for_key)|Write\.run) "),
    ("claim SQL (the read for due work, the transaction) + decode the batches",
     r"^(Outbox\.claim|take_batches|decode_batches|Database\.read)[ .]"),
    ("settle SQL", r"^Outbox\.(settle|_release|_dead_letter|_supersede_dead|_finish_batches) "),
    ("event build + JSON encode + sign",
     r"^(coalesce|members_event|encode_event|_iso_utc|_message_id|members_message_id|_signature|"
     r"WebhookTarget\._(post|deliver_members))[ .]"),
    (HEADER_PARSING, r"^parse_headers \(http/client\.py|\(email/"),
    ("HTTP call to the platform (send, wait for the answer, read it)", r"\(targets/http(_wire)?\.py:"),
    ("request id (os.urandom)", r"^request_id_of "),
    ("other diy-wsgi code", r"\((diy_wsgi\.py|diy/|outbox/|targets/)"),
    ("gunicorn (HTTP parsing, socket I/O, event loop)", r"\(gunicorn/"),
    ("other", r""),
)


def commit_lines():
    """Line numbers of outbox/db.py's COMMITs, as the file reads now: "|"-joined."""
    text = (BENCH.parent / "outbox" / "db.py").read_text().splitlines()
    return "|".join(str(number) for number, line in enumerate(text, 1) if 'execute("COMMIT")' in line) or "0"


ROLES = (
    ("request threads", re.compile(r"^ThreadWorker\.handle_request \(gunicorn/")),
    ("dispatcher threads", re.compile(r"^Dispatcher\.(deliver|_run) \(outbox/dispatcher\.py")),
)


def categorise(raw_path):
    """Per thread role, {category: share of that role's samples} of a py-spy `--idle --format raw`
    file: the leaf-most frame that matches a category names the sample."""
    commit = commit_lines()
    rules = [(name, re.compile(pattern.format(commit=commit))) for name, pattern in CATEGORIES]
    rules.insert(-1, (IDLE, re.compile(r"^(Event|Condition)\.wait \(threading\.py")))
    counts = {role: collections.Counter() for role, _ in ROLES}
    for line in Path(raw_path).read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        frames = stack.split(";")
        role = next((name for name, marker in ROLES if any(marker.search(f) for f in frames)), None)
        if role is None:
            continue
        category = "other"
        for frame in reversed(frames):
            category = next((n for n, rule in rules[:-1] if rule.search(frame)), None)
            if category:
                break
        counts[role][category or "other"] += int(number)
    return {role: {"samples": sum(c.values()), "share": {k: v / sum(c.values()) for k, v in c.most_common()}}
            for role, c in counts.items() if c}


def lock_timers(trace_dir, since=0.0, until=float("inf")):
    """What diy_traced.py's processes recorded between two wall-clock times, merged: per caller,
    the waits for the write lock and how long it was held; the group commits' sizes; the claims;
    the CPU time of requests, deliveries and the claim loop; where the slowest requests' time went."""
    timers = collections.defaultdict(lambda: collections.defaultdict(list))
    groups, claims, cpu, requests = [], [], collections.defaultdict(list), []
    for path in Path(trace_dir).glob("*.jsonl"):
        for line in path.read_text().splitlines():
            kind, at, *rest = json.loads(line)
            if not since <= at <= until:
                continue
            if kind == "timer":
                caller, what, seconds = rest
                timers[caller][what].append(seconds)
            elif kind == "group":
                groups.append(rest[0])
            elif kind == "claim":
                claims.append(rest)
            elif kind == "request":
                requests.append(rest)
            else:
                role, seconds, mutations = rest
                cpu[role].append((seconds, mutations))
    return {"by_caller": {caller: caller_summary(t) for caller, t in timers.items() if t.get("wait")},
            "groups": {"count": len(groups), "writes": sum(groups), "max": max(groups, default=0)},
            "claims": {"calls": len(claims), "empty": sum(1 for audiences, _ in claims if not audiences),
                       "audiences": sum(a for a, _ in claims), "mutations": sum(m for _, m in claims)},
            "cpu": {role: {"calls": len(values), "cpu_s": sum(s for s, _ in values),
                           "mutations": sum(m for _, m in values)} for role, values in cpu.items()},
            "requests": request_summary(requests),
            "window_s": until - since if until != float("inf") else None}


def request_summary(requests):
    """The WSGI calls by wall-clock time, those around the median (p45 to p55) and the slowest 1%:
    their means split into waiting for the write lock, the rest of the write (its work and
    COMMIT) and everything else, and the thread's own CPU time in all."""
    ordered = sorted(requests)

    def split(part):
        if not part:
            return None
        wall, cpu, write, wait = (statistics.fmean(r[i] for r in part) * 1000 for i in range(4))
        return {"count": len(part), "wall_ms": wall, "cpu_ms": cpu, "lock_wait_ms": wait,
                "write_rest_ms": write - wait, "other_ms": wall - write}

    slowest = ordered[int(len(ordered) * 0.99):]
    middle = ordered[int(len(ordered) * 0.45):int(len(ordered) * 0.55) + 1]
    return {"count": len(ordered), "middle": split(middle), "slowest_1pct": split(slowest)}


def caller_summary(timers):
    """Waits are per write (from asking to one's own work running); the rest per transaction."""
    waits, sqlite_waits = sorted(timers["wait"]), sorted(timers.get("begin_sqlite", []))
    held, commits = timers.get("held", []), timers.get("commit", [])
    ordered_commits, commit_cpu = sorted(commits), sorted(timers.get("commit_cpu", []))
    return {
        "waits": len(waits),
        "transactions": len(held),
        "wait_ms": {"mean": statistics.fmean(waits) * 1000, "p99": percentile(waits, 0.99) * 1000,
                    "max": waits[-1] * 1000, "total_s": sum(waits)},
        "begin_sqlite_ms": {"mean": statistics.fmean(sqlite_waits) * 1000 if sqlite_waits else 0,
                            "p99": percentile(sqlite_waits, 0.99) * 1000, "total_s": sum(sqlite_waits)},
        "commit_ms_mean": statistics.fmean(commits) * 1000 if commits else 0,
        "commit_ms": {"p50": percentile(ordered_commits, 0.5) * 1000, "p99": percentile(ordered_commits, 0.99) * 1000,
                      "max": ordered_commits[-1] * 1000 if commits else 0},
        "commit_cpu_ms": {"p50": percentile(commit_cpu, 0.5) * 1000, "p99": percentile(commit_cpu, 0.99) * 1000},
        "held_ms_mean": statistics.fmean(held) * 1000 if held else 0,
        "held_total_s": sum(held),
    }


def percentile(ordered, fraction):
    return ordered[int(len(ordered) * fraction)] if ordered else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["micro"])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--receiver-port", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    result = micro(args.workdir, args.receiver_port)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
