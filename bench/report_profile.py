"""RESULTS.md's profiling part: where the time goes, and the changes the numbers point at."""
from report_format import ms, num, table


def profile_section(results):
    profile = results.get("profile")
    if not profile:
        return ""
    micro = profile["micro"]
    probe = profile.get("micro_cpu_probe_ms")
    lines = ["## Where the time goes", "",
             "### One request, alone (bench/profiling.py, one process, no contention, synchronous=FULL)", "",
             f"CPU probe on the server core just before: {ms(probe)} ms (about 5.3 ms when the core is not shared; "
             "the absolute times below scale with it, their ratios much less).", ""]
    ingest, extra = micro["ingest"]["plain"], micro["ingest"]["with_extra_field"]
    rows = [[name, ms(value["median"], 3), ms(extra[name]["median"], 3)] for name, value in ingest.items()]
    rows.append(["**sum**", ms(sum(v["median"] for v in ingest.values()), 3),
                 ms(sum(v["median"] for v in extra.values()), 3)])
    lines += [table(["step (ADD_TO_AUDIENCE, 100 mutations), median", "ms", "ms with one unknown field per mutation"],
                    rows), ""]
    whole = micro["whole_request_cpu_ms"]
    lines += [f"The whole WSGI call, CPU per request (median): {whole['INFO']['median']:.2f} ms with the request "
              f"log line written to a file, {whole['WARNING']['median']:.2f} ms without (alternating calls).", ""]
    dispatch = micro["dispatch"]
    rows = [[name, ms(value["median"], 2), ms(value["median"] / dispatch["batch"] * 100, 3)]
            for name, value in dispatch["steps"].items()]
    rows.append(["**sum**", ms(sum(v["median"] for v in dispatch["steps"].values()), 2),
                 ms(sum(v["median"] for v in dispatch["steps"].values()) / dispatch["batch"] * 100, 3)])
    lines += [f"Delivering one batch of {dispatch['batch']} mutations (one audience), alone:", "",
              table(["step (median)", "ms per batch", "ms per 100 mutations"], rows), ""]
    lines += ["What the same 100 mutations cost to store in other ways (the real schema, WAL, synchronous=FULL, "
              "one process, the variants taking turns):", "", table(["storage", "ms per request (median)"],
                                          [[k, ms(v, 3)] for k, v in micro["what_ifs"].items()]), ""]
    busy = micro["busy_handler"]
    lines += ["SQLite's busy handler (`timeout=` in `sqlite3.connect`) sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, "
              "50, 100 ms between tries; a writer that waits for another's lock gets it this late after the "
              "release (the waiting thread burns no CPU):", "",
              table(["lock held ms", "acquired after release, median ms", "max ms", "waiter CPU ms"],
                    [[k, ms(v["late_ms_median"], 2), ms(v["late_ms_max"], 2), ms(v["waiter_cpu_ms_median"], 2)]
                     for k, v in busy.items()]), ""]
    under = profile.get("under_load")
    if under:
        lines += under_load_lines(under)
    return "\n".join(lines)


def under_load_lines(under):
    base = under["as is"]
    lines = ["### Under saturated load", ""]
    wrk = base.get("wrk") or {}
    timers = base["lock_timers"]
    lines += [f"diy-wsgi under wrk again, with `bench/apps/diy_traced.py` (timers around each transaction) and "
              f"py-spy (`--idle`, 100 Hz, {timers['window_s']:.0f} s) attached: {num(wrk.get('requests_per_s'))} "
              "requests/s while profiled.", ""]
    rows = []
    for caller, t in sorted(timers["by_caller"].items(), key=lambda kv: -kv[1]["begin_wait_ms"]["total_s"]):
        rows.append([caller, t["transactions"], ms(t["begin_wait_ms"]["mean"], 2), ms(t["begin_wait_ms"]["p99"], 1),
                     ms(t["begin_wait_ms"]["max"], 1), ms(t["begin_sqlite_ms"]["p99"], 1),
                     f"{t['begin_wait_ms']['total_s']:.1f}",
                     ms(t["held_ms_mean"], 2), ms(t["commit_ms_mean"], 2), f"{t['held_total_s']:.1f}"])
    held = sum(t["held_total_s"] for t in timers["by_caller"].values())
    lines += [f"Write transactions in those {timers['window_s']:.0f} s, by caller (both workers): the write lock was "
              f"held {held:.1f} s, **{held / timers['window_s']:.0%} of the time**.", "",
              table(["caller", "transactions", "lock wait mean ms", "p99 ms", "max ms", "of it in SQLite p99 ms",
                     "total wait s",
                     "lock held mean ms", "COMMIT mean ms", "lock held total s"], rows), ""]
    claims = timers["claims"]
    if claims.get("calls"):
        claim_transactions = timers["by_caller"].get("claim", {}).get("transactions", 0)
        lines += [f"`claim` was called {claims['calls']:,} times: {claims['empty']:,} claimed nothing, and "
                  f"{claim_transactions:,} took the write lock (a call with no free delivery thread returns before "
                  f"BEGIN); claims carried {claims['mutations'] / max(1, claims['audiences']):,.0f} mutations per "
                  "audience on average.", ""]
    spy = base.get("py_spy")
    if spy:
        for role, data in spy.items():
            rows = [[name, f"{share:.1%}"] for name, share in data["share"].items() if share >= 0.005]
            lines += [f"py-spy, {role}: where their wall-clock time went ({data['samples']:,} samples):", "",
                      table(["where", "share"], rows), ""]
    elif base.get("py_spy_error"):
        lines += [f"py-spy failed: `{base['py_spy_error'].strip()}`", ""]
    rows = []
    for variant, entry in under.items():
        run = entry["open_loop"]
        latency, delivery = run["latency_ms"], run.get("delivery_ms", {})
        enqueue = entry["lock_timers"]["by_caller"].get("enqueue", {}).get("begin_wait_ms", {})
        enqueue_sqlite = entry["lock_timers"]["by_caller"].get("enqueue", {}).get("begin_sqlite_ms", {})
        rows.append([variant, num(entry["wrk"]["requests_per_s"]), f"{entry['keeping_up']['backlog_slope_per_s']:+,.0f}",
                     ms(enqueue.get("p99")), ms(enqueue_sqlite.get("p99")), num(run["rate"]), ms(latency["p50"]),
                     ms(latency["p99"]),
                     ms(latency["p999"]), ms(latency["max"]), ms(delivery.get("p50")), ms(delivery.get("p99"))])
    first = next(iter(under.values()))["open_loop"]
    lines += ["What-if: the writers of a process queue on one thread lock and the one holding it polls for "
              "SQLite's write lock every 1 ms (`busy_timeout = 0`) instead of sleeping in SQLite's busy handler (a "
              "bench-only wrapper, `BENCH_WRITE_LOCK=polling`). Both variants ran side by side (each its own "
              "gunicorn and outbox, both traced): "
              f"one saturation run each, then {first['runs']} open-loop runs each of "
              f"{first['seconds'] / first['runs']:.0f} s at {first['rate']:.0f} requests/s (75% of the unchanged code's "
              "saturation rate just measured, with py-spy attached), alternating, latencies pooled:", "",
              table(["variant", "saturation req/s", "backlog growth /s", "enqueue lock wait p99 ms",
                     "of it in SQLite p99 ms", "open loop /s",
                     "p50 ms", "p99 ms", "p99.9 ms", "max ms", "delivery p50 ms", "delivery p99 ms"], rows), ""]
    return lines


def findings(results):
    """The changes the numbers point at, most valuable first, each with the numbers behind it."""
    profile = results.get("profile")
    if not profile or "as is" not in profile.get("under_load", {}):
        return ""
    micro, under = profile["micro"], profile["under_load"]
    base = under["as is"]
    variant = next((entry for name, entry in under.items() if name != "as is"), None)
    timers = base["lock_timers"]
    empty = {"begin_wait_ms": {"mean": 0, "p99": 0, "max": 0}, "begin_sqlite_ms": {"p99": 0}, "held_ms_mean": 0}
    enqueue = timers["by_caller"].get("enqueue", empty)
    held = sum(t["held_total_s"] for t in timers["by_caller"].values()) / timers["window_s"]
    spy = base.get("py_spy", {})
    wait_key = next((k for k in spy.get("request threads", {}).get("share", {}) if k.startswith("write-lock wait")), "")
    request_wait = spy.get("request threads", {}).get("share", {}).get(wait_key, 0)
    dispatcher_wait = spy.get("dispatcher threads", {}).get("share", {}).get(wait_key, 0)
    late = micro["busy_handler"].get("20", {}).get("late_ms_median", 0)
    lines = ["## What to change, most valuable first", ""]
    item = (f"1. **The write lock is the bottleneck: it was held {held:.0%} of the time under saturated load.** "
            f"Request threads spent {request_wait:.0%} of their wall-clock time waiting for it (first in their "
            f"process's queue, then in `BEGIN IMMEDIATE` for the other worker), the dispatcher threads "
            f"{dispatcher_wait:.0%}; an enqueue waited {enqueue['begin_wait_ms']['mean']:.1f} ms on average, p99 "
            f"{enqueue['begin_wait_ms']['p99']:.0f} ms, max {enqueue['begin_wait_ms']['max']:,.0f} ms, of which "
            f"SQLite's busy handler (the other process) p99 {enqueue['begin_sqlite_ms']['p99']:.0f} ms. The busy "
            "handler sleeps 1, 2, 5, 10, 15, 20, 25 ... 100 ms between tries: a writer that began waiting 20 ms "
            f"before the release gets the lock {late:.0f} ms after it.")
    if variant:
        a, b = base["open_loop"], variant["open_loop"]
        gain = (b["latency_ms"]["p99"] < 0.8 * a["latency_ms"]["p99"]
                or b["latency_ms"]["p999"] < 0.5 * a["latency_ms"]["p999"])
        item += (f" What-if, polling for SQLite's lock every 1 ms instead of the busy handler (a bench-only wrapper, "
                 f"side by side with the unchanged code, alternating, at {a['rate']:.0f} requests/s): p99 "
                 f"{a['latency_ms']['p99']:.0f} -> {b['latency_ms']['p99']:.0f} ms, p99.9 "
                 f"{a['latency_ms']['p999']:.0f} -> {b['latency_ms']['p999']:.0f} ms, saturation "
                 f"{base['wrk']['requests_per_s']:.0f} -> {variant['wrk']['requests_per_s']:.0f} requests/s. "
                 + ("Worth doing: `busy_timeout = 0` and a 1 ms retry loop for the one writer of each process (or a "
                    "writer thread per process, which also allows group commit, item 3)." if gain else
                    "No clear gain in this run: with writers already queued per process, what is left is how long "
                    "the lock is held, so item 2 is the lever."))
    lines.append(item)
    events = log_events_rows(results).values()
    abandoned = sum(v.get("deliveries abandoned (delivery crashed)", 0) for v in events)
    postponed = sum(v.get("settles retried (database busy)", 0) for v in events)
    if abandoned or postponed:
        lines.append(f"   In this run {postponed} settles met a busy database and were retried, and {abandoned} "
                     "deliveries were abandoned (an abandoned batch stays leased for `lease`, 5 min, and is sent "
                     "again).")
    rows = micro["what_ifs"]
    today = rows.get("today: 100 rows, foreign_keys=ON, one COMMIT per request")
    blob = rows.get("1 row per request (the mutations as one JSON blob)")
    steps = micro["dispatch"]["steps"]
    claim = steps.get("claim: SELECT + decode 1000 rows", {}).get("median")
    settle = steps.get("settle: UPDATE 1000 rows to done + COMMIT", {}).get("median")
    sql = micro["ingest"]["plain"].get("enqueue: build 100 rows, then SQL (lookup, UPDATE, INSERT)", {}).get("median")
    lines.append(
        f"2. **Hold the write lock for less: store a request's mutations of one audience as one row.** A request "
        f"holds the lock {ms(enqueue.get('held_ms_mean'), 1)} ms on average under load for one UPDATE and 100 "
        f"INSERTs (enqueue takes {ms(sql, 2)} ms alone); the dispatcher holds it to claim 1000 rows "
        f"({ms(claim, 1)} ms alone, SELECT and decoding) and to UPDATE them to done ({ms(settle, 1)} ms). On the real "
        f"schema, 100 mutations as 100 rows cost {ms(today, 2)} ms per request to store, as one JSON row "
        f"{ms(blob, 2)} ms; claim and settle would touch a handful of rows instead of 1000. This is the change "
        "that moves the throughput targets: every other item here is worth a few percent.")
    group = rows.get("100 rows, 10 requests per COMMIT (group commit)")
    blob_group = rows.get("1 row per request, 10 requests per COMMIT")
    fsync = results["machine"]["fsync_ms"]["p50"]
    lines.append(
        f"3. **Group commit.** 10 requests per COMMIT: {ms(today, 2)} -> {ms(group, 2)} ms per request with rows per "
        f"mutation, {ms(blob, 2)} -> {ms(blob_group, 2)} ms with one row per request. This disk fsyncs in "
        f"{fsync:.2f} ms; on a cloud disk with 1-2 ms fsyncs COMMIT dominates and grouping is worth more. A writer "
        "thread per process that drains a queue of enqueues into one transaction gives it, and item 1 with it.")
    small = []
    owner = spy.get("dispatcher threads", {}).get("share", {}).get("dispatcher owner (gethostname)")
    if owner and owner >= 0.005:
        small.append(f"`Dispatcher.owner` calls `socket.gethostname()` on every use ({owner:.1%} of the dispatcher "
                     "threads' time): compute it once per pid")
    claims = timers["claims"]
    claim_transactions = timers["by_caller"].get("claim", {}).get("transactions", 0)
    idle_claims = claim_transactions - (claims.get("calls", 0) - claims.get("empty", 0))
    if claim_transactions and idle_claims > 0:
        small.append(f"{idle_claims} of the {claim_transactions} write transactions `claim` opened under load found "
                     "nothing to claim: a read-only look for due work before `BEGIN IMMEDIATE` (as huey's `dequeue` "
                     "does) keeps them off the lock")
    request_id = spy.get("request threads", {}).get("share", {}).get("request id (os.urandom)")
    if request_id and request_id >= 0.005:
        small.append(f"`secrets.token_hex` for each request id is a getrandom syscall ({request_id:.1%} of request "
                     "thread time)")
    info, warn = micro["whole_request_cpu_ms"]["INFO"]["median"], micro["whole_request_cpu_ms"]["WARNING"]["median"]
    small.append(f"the request log line costs about {max(0.0, info - warn):.2f} ms CPU of {info:.2f} ms per request")
    plain = sum(v["median"] for v in micro["ingest"]["plain"].values())
    extra = sum(v["median"] for v in micro["ingest"]["with_extra_field"].values())
    lines.append("4. **Small things, each a few percent at most:** " + "; ".join(small) + ".")
    lines.insert(-1, f"4. **`json.dumps` per mutation.** It only runs for fields diy-wsgi does not know, but then "
                     f"once per mutation: one unknown field in each of the 100 mutations moves a request from "
                     f"{plain:.2f} to {extra:.2f} ms (stage sum, alone). One `json.dumps` of the request's extras, or "
                     "keeping each mutation's raw JSON text from the body, would make it one call per request.")
    lines[-1] = lines[-1].replace("4. **Small things", "5. **Small things", 1)
    receiver = results.get("receiver_stats")
    if receiver:
        lines.append(f"6. **Not a problem here: a TCP connection per platform call.** The shared `HttpClient` keeps "
                     f"connections alive: the receiver accepted {receiver['connections']} connections for "
                     f"{receiver['events']:,} events over the whole run (diy-wsgi's and huey's).")
    return "\n".join(lines) + "\n"


def log_events_rows(results):
    rows = {}
    diy = results.get("ingest", {}).get("diy")
    if diy:
        for name, values in diy.get("log_events", {}).items():
            rows[f"gunicorn, the ingest runs ({name})"] = values
    if results.get("dispatch"):
        rows["`diy-wsgi dispatch`, the drain"] = results["dispatch"]["log_events"]
    for variant, entry in results.get("profile", {}).get("under_load", {}).items():
        rows[f"gunicorn, profile run ({variant})"] = entry["log_events"]
    return rows
