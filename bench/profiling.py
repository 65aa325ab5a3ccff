"""Where the time goes: stage timings in one process, what-ifs on the schema, SQLite's busy
handler, and (from run.py) a py-spy profile and lock timers under saturated load.

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
        commit = sum(seconds for _, seconds in diy_traced._stats["enqueue"]["commit"])
        begin = sum(seconds for _, seconds in diy_traced._stats["enqueue"]["begin_wait"])
        steps[extra]["HMAC-SHA1 check (verify)"].append(t1 - t0)
        steps[extra]["JSON decode (decode_body)"].append(t2 - t1)
        steps[extra]["validate into 100 ReceivedMutation (parse_mutations)"].append(t3 - t2)
        steps[extra]["enqueue: build 100 rows, then SQL (lookup, UPDATE, INSERT)"].append(t4 - t3 - commit - begin)
        steps[extra]["COMMIT (WAL append + fsync, synchronous=FULL)"].append(commit)
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


def dispatch_stages(workdir, receiver_port, batches=20, batch=1000):
    """One delivery of `batch` mutations: claim, build + encode + sign the event, POST, settle."""
    from diy import dmp
    from diy.service import Service
    from targets import webhook

    config = _config(workdir, receiver_port, "micro-dispatch")
    service = Service(config)
    outbox = service.outbox
    integration = config.integrations[0]
    for index in range(batches * batch // payloads.MUTATIONS + 1):
        raw = payloads.body("q", index * payloads.AUDIENCES)  # all in audience 0
        outbox.enqueue(integration.name, "add", dmp.parse_mutations(dmp.decode_body(raw, dmp.ADD_TO_AUDIENCE)),
                       pass_through=True, now=time.time())
    target = service.accounts[integration.name].all()[0].target
    steps = collections.defaultdict(list)
    for _ in range(batches):
        t0 = time.perf_counter()
        claims = outbox.claim("bench", now=time.time(), lease=300, limit=1, batch_sizes={integration.name: batch})
        t1 = time.perf_counter()
        claim = claims[0]
        audience = claim.audience.for_target()
        now = time.time()
        event = webhook.members_event(audience, "add", claim.mutations, now)
        message_id = webhook.members_message_id(audience, "add", claim.mutations)
        body = webhook.encode_event(event)
        signature = webhook._signature(target.signing_key, message_id, int(now), body)
        t2 = time.perf_counter()
        target.http.request("POST", target.url, body=body, timeout=10,
                            headers={"content-type": "application/json", "webhook-id": message_id,
                                     "webhook-timestamp": str(int(now)), "webhook-signature": signature})
        t3 = time.perf_counter()
        outbox.settle(claim, now=time.time())
        t4 = time.perf_counter()
        steps["claim: SELECT + decode 1000 rows"].append(t1 - t0)
        steps["event: build dicts + json.dumps + sign"].append(t2 - t1)
        steps["POST to the receiver (keep-alive, loopback)"].append(t3 - t2)
        steps["settle: UPDATE 1000 rows to done + COMMIT"].append(t4 - t3)
    service.close()
    return {"batch": batch, "steps": {name: per_call_ms(values) for name, values in steps.items()}}


STORAGE_VARIANTS = (
    ("today: 100 rows, foreign_keys=ON, one COMMIT per request", "rows", 1, True),
    ("100 rows, foreign_keys=OFF", "rows", 1, False),
    ("100 rows, 10 requests per COMMIT (group commit)", "rows", 10, True),
    ("1 row per request (the mutations as one JSON blob)", "blob", 1, True),
    ("1 row per request, 10 requests per COMMIT", "blob", 10, True),
)


def what_ifs(workdir, rounds=5, requests=60):
    """The same 100 mutations stored in other ways, on the real schema, synchronous=FULL; the
    variants take turns, and each reports the median over its transactions, per request."""
    from outbox.schema import MIGRATIONS, split_statements

    rows = [(1, "add", f"u{k:03d}", f"uuid-{k}", 123, 113, None, 0.0) for k in range(payloads.MUTATIONS)]
    blob = payloads.body("b", 0)
    insert = ("INSERT INTO mutations (audience_id, op, external_user_id, uuid, customer, platform, extra, received_at)"
              " VALUES (?, ?, ?, ?, ?, ?, ?, ?)")

    def fresh(number, foreign_keys):
        connection = sqlite3.connect(Path(workdir) / f"whatif-{number}.sqlite3", isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        for statement in split_statements(MIGRATIONS[0]):
            connection.execute(statement)
        connection.execute("CREATE TABLE batches (id INTEGER PRIMARY KEY AUTOINCREMENT, audience_id INTEGER, body BLOB)")
        connection.execute("INSERT INTO audiences (integration, key, dmp_id, state, created_at, updated_at)"
                           " VALUES ('bench', 'a', 'a', 'ready', 0, 0)")
        return connection

    def store(connection, shape):
        connection.execute("UPDATE audiences SET pending = pending + 100 WHERE id = 1")
        if shape == "rows":
            connection.executemany(insert, rows)
        else:
            connection.execute("INSERT INTO batches (audience_id, body) VALUES (1, ?)", (blob,))

    connections = [fresh(number, foreign_keys) for number, (_, _, _, foreign_keys) in enumerate(STORAGE_VARIANTS)]
    per_request = collections.defaultdict(list)
    for _ in range(rounds):
        for connection, (name, shape, grouped, _) in zip(connections, STORAGE_VARIANTS):
            for _ in range(requests // grouped):
                started = time.perf_counter()
                connection.execute("BEGIN IMMEDIATE")
                for _ in range(grouped):
                    store(connection, shape)
                connection.execute("COMMIT")
                per_request[name].append((time.perf_counter() - started) / grouped)
    for connection in connections:
        connection.close()
    return {name: statistics.median(values) * 1000 for name, values in per_request.items()}


def busy_handler_steps(workdir, holds_ms=(0.5, 2, 5, 12, 20, 40), rounds=9):
    """How long after the write lock is released a waiting BEGIN IMMEDIATE gets it."""
    path = Path(workdir) / "busy-probe.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    waiter = sqlite3.connect(path, isolation_level=None, timeout=5)
    result = {}
    for hold in holds_ms:
        late = []
        for _ in range(rounds):
            holder.execute("BEGIN IMMEDIATE")
            released = {}

            def release():
                time.sleep(hold / 1000)
                holder.execute("COMMIT")
                released["at"] = time.perf_counter()

            thread = threading.Thread(target=release)
            thread.start()
            time.sleep(0.0001)
            cpu = time.thread_time()
            waiter.execute("BEGIN IMMEDIATE")
            got = time.perf_counter()
            cpu = time.thread_time() - cpu
            waiter.execute("COMMIT")
            thread.join()
            late.append(((got - released["at"]) * 1000, cpu * 1000))
        result[str(hold)] = {"late_ms_median": statistics.median(v for v, _ in late),
                             "late_ms_max": max(v for v, _ in late),
                             "waiter_cpu_ms_median": statistics.median(c for _, c in late)}
    return result


def micro(workdir, receiver_port):
    return {
        "ingest": ingest_stages(workdir, receiver_port),
        "whole_request_cpu_ms": whole_request(workdir, receiver_port),
        "dispatch": dispatch_stages(workdir, receiver_port),
        "what_ifs": what_ifs(workdir),
        "busy_handler": busy_handler_steps(workdir),
    }


# Under load: py-spy's samples of the gunicorn workers, sorted into the steps above.

CATEGORIES = (
    ("write-lock wait (queue in the process, then BEGIN IMMEDIATE)", r"^Database\.transaction \(outbox/db\.py:({wait})\)"),
    ("COMMIT (WAL append + fsync)", r"^Database\.transaction \(outbox/db\.py:({commit})\)"),
    ("logging", r"\(logging/"),
    ("metrics", r"\(diy/metrics\.py"),
    ("HMAC check", r"^verify \(diy/signature\.py"),
    ("JSON decode", r"^decode_body \(diy/dmp\.py"),
    ("validate into ReceivedMutation", r"^parse_mutations"),
    ("enqueue SQL (INSERT rows)", r"^Outbox\.(enqueue|_audience_for_key) "),
    ("claim SQL + decode rows", r"^(Outbox\.claim|decode_mutation) "),
    ("settle SQL (UPDATE rows)", r"^Outbox\.(settle|_mark_delivered|_dead_letter|_holds) "),
    ("event build + JSON encode + sign", r"^(members_event|encode_event|_message_id|members_message_id|_signature|"
                                         r"coalesce|WebhookTarget\._post) "),
    ("HTTP call to the platform", r"^HttpClient\."),
    ("request id (os.urandom)", r"^request_id_of "),
    ("dispatcher owner (gethostname)", r"^Dispatcher\.owner "),
    ("other diy-wsgi code", r"\((diy_wsgi\.py|diy/|outbox/|targets/)"),
    ("gunicorn (HTTP parsing, socket I/O, event loop)", r"\(gunicorn/"),
    ("other", r""),
)


def transaction_lines():
    """Line numbers, in outbox/db.py's transaction(), of the waits for the write lock (a thread
    lock's acquire, BEGIN IMMEDIATE) and of COMMIT, as the file reads now: "|"-joined."""
    text = (BENCH.parent / "outbox" / "db.py").read_text().splitlines()
    start = next(i for i, line in enumerate(text) if "def transaction(" in line)
    end = next((i for i in range(start + 1, len(text)) if text[i].startswith("    def ")), len(text))
    body = list(enumerate(text[start:end], start + 1))
    wait = [n for n, line in body if "BEGIN IMMEDIATE" in line and "execute" in line or ".acquire(" in line]
    commit = [n for n, line in body if 'execute("COMMIT")' in line]
    return "|".join(map(str, wait)) or "0", "|".join(map(str, commit)) or "0"


ROLES = (
    ("request threads", re.compile(r"^ThreadWorker\.handle_request \(gunicorn/")),
    ("dispatcher threads", re.compile(r"^Dispatcher\.(deliver|_run) \(outbox/dispatcher\.py")),
)


def categorise(raw_path):
    """Per thread role, {category: share of that role's samples} of a py-spy `--idle --format raw`
    file: the leaf-most frame that matches a category names the sample."""
    wait, commit = transaction_lines()
    rules = [(name, re.compile(pattern.format(wait=wait, commit=commit))) for name, pattern in CATEGORIES]
    rules.insert(-1, ("idle: waiting for work", re.compile(r"^(Event|Condition)\.wait \(threading\.py")))
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
    """diy_traced.py's per-process timers between two wall-clock times, merged per caller:
    BEGIN wait, COMMIT, and how long the write lock was held."""
    merged = collections.defaultdict(lambda: collections.defaultdict(list))
    claims = {"calls": 0, "empty": 0, "audiences": 0, "mutations": 0}
    for path in Path(trace_dir).glob("*.jsonl"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event[0] == "timer":
                _, caller, what, started, seconds = event
                if since <= started <= until:
                    merged[caller][what].append(seconds)
            elif since <= event[1] <= until:
                claims["calls"] += 1
                claims["empty"] += not event[2]
                claims["audiences"] += event[2]
                claims["mutations"] += event[3]
    summary = {}
    for caller, timers in merged.items():
        waits = sorted(timers.get("begin_wait", []))
        sqlite_waits = sorted(timers.get("begin_sqlite", []))
        if not waits:
            continue
        summary[caller] = {
            "transactions": len(waits),
            "begin_wait_ms": {"mean": statistics.fmean(waits) * 1000, "p99": waits[int(len(waits) * 0.99)] * 1000,
                              "max": waits[-1] * 1000, "total_s": sum(waits)},
            "begin_sqlite_ms": {"mean": statistics.fmean(sqlite_waits) * 1000 if sqlite_waits else 0,
                                "p99": sqlite_waits[int(len(sqlite_waits) * 0.99)] * 1000 if sqlite_waits else 0},
            "commit_ms_mean": statistics.fmean(timers["commit"]) * 1000 if timers.get("commit") else 0,
            "held_ms_mean": statistics.fmean(timers["held"]) * 1000 if timers.get("held") else 0,
            "held_total_s": sum(timers.get("held", [])),
        }
    window = until - since if until != float("inf") else None
    return {"by_caller": summary, "claims": claims, "window_s": window}


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
