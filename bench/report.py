"""RESULTS.md from the results dict: the targets first, then every number behind them."""
import payloads
from report_format import median_by_p99, ms, num, p99_list, table
from report_postgres import postgres_section
from report_profile import findings, log_events_rows, profile_section

TARGETS_NOTE = ("Ratios come from this one run: the contenders ran side by side on the same machine and took turns "
                "at saturation.")


def verdict(ok):
    return "**met**" if ok else "**not met**"


def at_load(entry, load):
    return next((run for run in entry.get("open_loop", []) if abs(run["load"] - load) < 1e-9), None)


def target_runs(entry):
    """diy-wsgi's runs at 50% load: the first and its repeats."""
    return [run for run in [at_load(entry, 0.5)] + entry.get("target_repeats", []) if run]


def target_run(entry):
    """The run the p99 target is judged on: the median of the runs at 50% load, by p99."""
    return median_by_p99(target_runs(entry))


def targets(results):
    ingest = results.get("ingest", {})
    rows = []
    diy, huey, hello, floor = (ingest.get(key) for key in ("diy", "flask_huey", "hello", "floor"))
    if diy and huey and hello:
        rate = diy["saturation"]["requests_per_s"]
        huey_rate, hello_rate = huey["saturation"]["requests_per_s"], hello["saturation"]["requests_per_s"]
        floor_rate = floor["saturation"]["requests_per_s"] if floor else None
        ratio = rate / huey_rate
        rows.append(["Ingest throughput >= 1.5x Flask + huey", f"{ratio:.2f}x ({rate:,.0f} vs {huey_rate:,.0f} "
                     "requests/s)" + (f"; the durable minimum, which delivers nothing, {floor_rate / huey_rate:.2f}x"
                                      if floor_rate else ""), verdict(ratio >= 1.5)])
        share = rate / hello_rate
        rows.append(["Ingest throughput >= 35% of the hello-world ceiling", f"{share:.1%} ({rate:,.0f} vs "
                     f"{hello_rate:,.0f} requests/s)" + (f"; the durable minimum {floor_rate / hello_rate:.1%}"
                                                         if floor_rate else ""), verdict(share >= 0.35)])
    if diy:
        half, most = target_run(diy), at_load(diy, 0.75)
        if half:
            p99 = half["latency_ms"]["p99"]
            runs = target_runs(diy)
            busy = half.get("cpu", {}).get("server_cores")
            control = floor.get("open_loop") if floor else None
            rows.append(["p99 at 50% of our saturation <= 10 ms", f"{ms(p99)} ms at {half['rate']:.0f} requests/s"
                         + (f", the median of {len(runs)} runs (p99 {p99_list(runs)} ms)" if len(runs) > 1 else "")
                         + (f"; the server's core {busy:.0%} busy in it" if busy is not None else "")
                         + (f"; the durable minimum at the same rate, taking turns: p99 "
                            f"{ms(median_by_p99(control)['latency_ms']['p99'])} ms"
                            + (f" (median of {p99_list(control)} ms)" if len(control) > 1 else "") if control else ""),
                         verdict(p99 <= 10)])
        if most:
            over = most["over_1s"]
            bad = sum(n for s, n in most["statuses"].items() if s != "200")
            rows.append(["No request over 1 s at 75% load", f"{over} of {most['count']} over 1 s (max "
                         f"{ms(most['latency_ms']['max'])} ms); {bad} not 200", verdict(over == 0 and bad == 0)])
        growth = [run["keeping_up"]["backlog_slope_per_s"] for run in diy.get("rounds", []) if run.get("keeping_up")]
        stored = [run["keeping_up"]["stored_per_s"] or run["keeping_up"]["ingested_per_s"]
                  for run in diy.get("rounds", []) if run.get("keeping_up")]
        if growth:
            mean_growth, mean_stored = sum(growth) / len(growth), sum(stored) / len(stored)
            drains = [run.get("drain_s") for run in diy["rounds"]]
            drained = all(d is not None for d in drains)
            rows.append(["Delivered mutations/s >= ingested mutations/s at saturation (the backlog must not grow)",
                         f"backlog growth {mean_growth:+,.0f} mutations/s on average over {len(growth)} rounds "
                         f"({', '.join(f'{g:+,.0f}' for g in growth)}) while {mean_stored:,.0f}/s were stored; "
                         + (f"drained within {max(drains):.1f} s after each round" if drained else "not always drained"),
                         verdict(mean_growth <= 0.01 * mean_stored and drained)])
        if half and half.get("delivery_ms", {}).get("count"):
            p50 = half["delivery_ms"]["p50"]
            rows.append(["Delivery latency p50 < 50 ms (embedded dispatcher)", f"{ms(p50)} ms at 50% load "
                         f"(p99 {ms(half['delivery_ms']['p99'])} ms)", verdict(p50 < 50)])
    scale = results.get("backlog")
    if scale and len(scale) >= 2:
        small, large = scale[0], scale[-1]
        ratio = large["claim_ms"]["p50"] / small["claim_ms"]["p50"]
        rows.append([f"Claim cost at {large['pending']:,} pending <= 2x at {small['pending']:,}",
                     f"{ratio:.2f}x ({ms(large['claim_ms']['p50'], 2)} vs {ms(small['claim_ms']['p50'], 2)} ms p50)",
                     verdict(ratio <= 2)])
    return rows


def machine_section(results):
    m, s = results["machine"], results["settings"]
    versions = ", ".join(f"{k} {v.removeprefix('wrk ')}" for k, v in m["versions"].items())
    pin = s["pinning"]
    pinning = (f"servers (gunicorn masters and workers, the huey consumer, the standalone dispatcher, PostgreSQL's "
               f"processes) on CPU "
               f"{pin['server']}; wrk, loadgen.py, the receiver, the platform stub and this script on CPU "
               f"{pin['client']}" if pin else "nothing pinned")
    return "\n".join([
        "## The machine",
        "",
        *([code_line(results)] if results.get("code") else []),
        f"- CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ram_gib']} GiB",
        f"- Linux {m['kernel']} ({m['os']}); Python {m['python']}; SQLite {m['sqlite']}",
        f"- Disk of the work folder: {m['disk']}; write 4 KiB + fsync p50 {m['fsync_ms']['p50']:.2f} ms, "
        f"p99 {m['fsync_ms']['p99']:.2f} ms",
        f"- Bench tools (their own venv, never project dependencies): {versions}",
        f"- Pinning (taskset): {pinning}. **Each server gets one core**, so the load side never takes CPU "
        "from it; absolute numbers are one-core numbers.",
        f"- Every contender: gunicorn, {s['workers']} workers, `gthread` with {s['threads']} threads each, keepalive "
        "5 s, no access log; diy-wsgi with the project's own `gunicorn.conf.py` (its hooks start one embedded "
        "dispatcher per worker), the others with `bench/apps/gunicorn_peer.conf.py` (the same settings, no hooks).",
        "- The machine is a KVM guest shared with other work: the CPU that other programs used during each measured "
        "window is reported beside it (\"foreign cores\"); each run first waits (up to "
        f"{s['quiet_wait']} s) for a quiet second, and a diy-wsgi open-loop run (the targets') during which other "
        f"programs used more than 0.25 cores is run again {s['retries']} time(s), keeping the quieter one."
        + probe_note(results),
    ])


def probe_note(results):
    probes = [run["cpu_probe_ms"] for entry in results.get("ingest", {}).values()
              for run in entry.get("rounds", []) + entry.get("open_loop", []) if run.get("cpu_probe_ms")]
    if not probes:
        return ""
    return (f" The CPU probe (a fixed piece of Python, best of 5, on the server core before each run) read "
            f"{min(probes):.1f} to {max(probes):.1f} ms in this run: the host gives this core its full speed at some "
            "moments and about half at others, which moves absolute numbers from run to run far more than ratios "
            "taken side by side.")


def code_line(results):
    code = results.get("code")
    if not code:
        return ""
    return (f"- diy-wsgi measured: commit {code['head']}"
            + (", with uncommitted changes to the runtime files" if code["runtime_modified"] else "") + ".")


def method_section(results):
    s = results["settings"]
    wrk = f"wrk -t1 -c{s['connections']} -d{s['saturation']}s" if s.get("wrk") else "loadgen.py --connections"
    return "\n".join([
        "## How it was measured",
        "",
        f"- The request: `POST /dmp?type=ADD_TO_AUDIENCE`, {payloads.MUTATIONS} mutations of one audience "
        f"(16 audiences in turn), about {len(payloads.body('a', 0)) / 1024:.0f} KiB, signed with `X-HMAC`. Every "
        "request of a run adds users no other request adds, so nothing coalesces and each delivery names its "
        "request.",
        f"- Saturation: `{wrk}` (closed loop, keep-alive) after a {s['warmup']} s warm-up; requests/s counts 2xx "
        f"only. All the contenders run side by side (an idle one costs nothing) and take turns, {s['rounds']} "
        "round(s), each after the previous one's backlog drained; a contender's figure is its median round. A CPU "
        "probe (best of 5 runs of a fixed piece of Python on the server's core) before each round shows how fast the "
        "core was.",
        f"- Latency: `bench/loadgen.py`, open loop, {s['open']} s at each of 25%, 50% and 75% of that contender's "
        "own saturation rate. Request i is due at start + i/rate and its latency runs from that intended time to "
        "the last byte of the answer (coordinated omission corrected); connections are opened as needed, up to 256."
        + (f" diy-wsgi runs at 50% {s['target_runs']} times (the others follow the first), and the p99 target is "
           "judged on the median of them: one run on this shared machine can catch a slow minute."
           if s.get("target_runs", 1) > 1 else ""),
        "- diy-wsgi: `DIY_CONFIG=<temp>/diy.ini gunicorn -c gunicorn.conf.py diy_wsgi:app`, the configuration's "
        "defaults but `synchronous = full` written out, the outbox in the work folder (real disk) and the "
        "`webhook` target pointed at the sandbox's counting mode, `diy-wsgi sandbox --counting` (stdlib, threaded, HTTP/1.1 keep-alive, answers 200 at once).",
        "- diy-wsgi, request path alone: the same app and configuration with `[dispatcher] embedded = no` and no "
        "`diy-wsgi dispatch` running, so requests are verified, validated and committed and nothing is delivered. "
        "It is measured at saturation only: it shows what taking requests in costs, apart from delivering them.",
        "- Flask + huey: `bench/apps/flask_huey_app.py` checks the HMAC and the JSON as diy-wsgi does, enqueues one "
        "SqliteHuey task per request (huey's defaults) and answers 200; `huey_consumer -w 4 -k thread` delivers "
        "each task to the same receiver, on the server's CPU, as diy-wsgi's embedded dispatcher does.",
        "- Forward in request (the vendor's example design): `bench/apps/vendor_app.py` checks the request, POSTs it "
        "to a platform stub that answers after 50 ms and answers with its verdict.",
        "- Hello world: `bench/apps/hello_app.py` reads the body and answers 200.",
        "- Durable minimum: `bench/apps/floor_app.py`, a plain WSGI function with Flask + huey's checks, one INSERT "
        "of the raw body and its COMMIT (WAL, synchronous=FULL; SQLite's lock polled every 0.5 ms as diy-wsgi does), "
        "then 200. No grouping per audience, no shared COMMIT, nothing delivered: the least a durable app does. Its "
        "open-loop runs are at diy-wsgi's 50% rate, not its own, taking turns with diy-wsgi's runs there.",
    ])


def saturation_table(results):
    ingest = results["ingest"]
    hello = ingest.get("hello", {}).get("saturation", {}).get("requests_per_s")
    rows = []
    for entry in ingest.values():
        sat = entry["saturation"]
        rate = sat["requests_per_s"]
        rows.append([entry["label"], num(rate), num(rate * payloads.MUTATIONS), f"{rate / hello:.1%}" if hello else "",
                     ms(sat["latency_ms"].get("p50")), ms(sat["latency_ms"].get("p99")), sat["non_2xx"],
                     f"{sat['cpu']['server_cores']:.2f}", " / ".join(map(str, sat.get("connections_by_worker") or [])),
                     " / ".join(f"{r['requests_per_s']:,.0f}" for r in sat["rounds"]),
                     " / ".join(f"{r['foreign_cores']:.2f}" for r in sat["rounds"]),
                     " / ".join(ms(r["cpu_probe_ms"]) for r in sat["rounds"])])
    note = ("\n\n\"connections per worker\" is how gunicorn spread wrk's keep-alive connections: on one core the "
            "worker that happens to be awake accepts nearly all of them, so under keep-alive load the 2 workers x 4 "
            "threads work like one worker's 4 or 5 threads. It costs the CPU-bound contenders nothing (they share "
            "one core anyway) but caps the forward-in-request design at threads / 50 ms: ")
    vendor = ingest.get("vendor")
    if vendor and vendor.get("open_loop"):
        rate = vendor["saturation"]["requests_per_s"]
        service = vendor["open_loop"][0]["latency_ms"]["p50"]
        threads = results["settings"]["workers"] * results["settings"]["threads"]
        note += (f"{rate:,.0f} requests/s x {service:.0f} ms (its unloaded latency) = {rate * service / 1000:.1f} calls "
                 f"in flight on average, where {threads} threads could hold {threads} (about "
                 f"{threads * 1000 / service:,.0f} requests/s).")
    else:
        note = ""
    return table(["contender", "requests/s", "mutations/s", "of hello world", "p50 ms (closed loop)",
                  "p99 ms (closed loop)", "non-2xx", "server cores", "connections per worker", "rounds: requests/s",
                  "rounds: foreign cores", "rounds: CPU probe ms"], rows) + note


def open_loop_table(results):
    rows = []
    for entry in results["ingest"].values():
        repeats = [dict(run, again=True) for run in entry.get("target_repeats", [])]
        for run in sorted(entry["open_loop"] + repeats, key=lambda r: r["load"]):
            latency = run["latency_ms"]
            bad = sum(n for s, n in run["statuses"].items() if s != "200") + run["unfinished"]
            load = (f"{run['rate_of']}'s " if run.get("rate_of") else "") + f"{run['load']:.0%}" + (
                " again" if run.get("again") else "")
            rows.append([entry["label"], load, num(run["rate"]), ms(latency["p50"]), ms(latency["p99"]),
                         ms(latency["p999"]), ms(latency["max"]), run["over_1s"], bad,
                         ms(run["send_lag_ms"]["p99"]), run["peak_connections"], f"{run['cpu']['foreign_cores']:.2f}"])
    return table(["contender", "load", "offered/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "> 1 s",
                  "not 200", "generator late p99 ms", "connections", "foreign cores"], rows)


def dispatch_section(results):
    lines = ["## Dispatch", ""]
    diy = results.get("ingest", {}).get("diy")
    if diy and diy["saturation"].get("keeping_up"):
        rows = []
        for number, run in enumerate(diy["rounds"], 1):
            k, drain = run["keeping_up"], run.get("drain_s")
            rows.append([number, num(k["ingested_per_s"]), num(k.get("stored_per_s")), num(k["delivered_per_s"]),
                         f"{k['backlog_slope_per_s']:+,.0f}",
                         f"{num(k['backlog_start'])} / {num(k['backlog_end'])} / {num(k['backlog_max'])}",
                         f"{drain:.1f} s" if drain is not None else
                         f"not within {results['settings']['drain_wait']} s ({num(run.get('left_after_drain'))} left)"])
        lines += [
            "While wrk saturated diy-wsgi (both embedded dispatchers delivering to the receiver, on the same core), "
            "each saturation round; the rates are slopes over the run less its first 2 s, sampled every 0.5 s (the "
            "backlog moves in steps of up to 1000, a claimed batch, so a slope of a few hundred per second is noise):",
            "",
            table(["round", "ingested mutations/s (wrk, whole run)", "stored mutations/s (outbox counter)",
                   "delivered mutations/s (receiver)", "backlog growth /s",
                   "backlog at start / end / max", "drained after the load in"], rows),
            "",
        ]
    huey = results.get("ingest", {}).get("flask_huey")
    if huey and huey["saturation"].get("keeping_up"):
        k = huey["saturation"]["keeping_up"]
        drain = huey["saturation"].get("drain_s")
        lines += [f"For comparison, huey's consumer during Flask + huey's saturation: {num(k['delivered_per_s'])} "
                  f"mutations/s delivered for {num(k['ingested_per_s'])} ingested, queue growth "
                  f"{k['backlog_slope_per_s'] * payloads.MUTATIONS:+,.0f} mutations/s, drained "
                  f"{'in %.1f s' % drain if drain is not None else 'not within the wait'} after the load.", ""]
    d = results.get("dispatch")
    if d:
        lines += [
            f"One `diy-wsgi dispatch` process (4 threads, the defaults) alone on its core, draining "
            f"{d['mutations']:,} mutations stored through `Outbox.enqueue` (16 audiences, each created on first use):",
            "",
            table(["drained", "seconds", "mutations/s overall", "mutations/s steady (10-90%)", "members received",
                   "server cores", "peak RSS MiB"],
                  [["yes" if d["drained"] else "no", f"{d['seconds']:.1f}", num(d["overall_per_s"]),
                    num(d["steady_per_s"]), f"{d['members_received']:,}", f"{d['cpu']['server_cores']:.2f}",
                    ms(d["rss_mib"])]]),
            "",
        ]
    events = log_events_rows(results)
    if events:
        lines += ["What diy-wsgi's own logs say happened (counted in each process's log over its whole life):", "",
                  table(["process", *next(iter(events.values())).keys()],
                        [[name, *values.values()] for name, values in events.items()]), ""]
    receiver = results.get("receiver_stats")
    if receiver:
        lines += [f"Keep-alive: over the whole run the receiver accepted {receiver['connections']} TCP connections "
                  f"for {receiver['events']:,} webhook events ({receiver['members']:,} members).", ""]
    return "\n".join(lines)


def delivery_section(results):
    rows = []
    for entry in results.get("ingest", {}).values():
        for run in entry["open_loop"]:
            d = run.get("delivery_ms")
            if d and d.get("count"):
                rows.append([entry["label"], f"{run['load']:.0%}", num(run["rate"]), ms(d["p50"]), ms(d["p90"]),
                             ms(d["p99"]), ms(d["max"]), d["undelivered"]])
    if not rows:
        return ""
    return "\n".join([
        "## Delivery latency: from the 200 to the platform",
        "",
        "Time from the moment the load generator had a request's 200 to the receiver's receipt of the event "
        "carrying that request's first member (both clocks CLOCK_MONOTONIC on this machine), during the open-loop "
        "runs above, with a healthy platform that answers at once.",
        "",
        table(["contender", "load", "requests/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "undelivered"], rows),
        "",
        "diy-wsgi's dispatcher is woken by the commit in its own process. huey's consumer polls an empty queue with "
        "a growing pause (its defaults: from 0.1 s, x1.15 per empty poll, up to 10 s), so after a quiet spell (the "
        "drain and the quiet-second wait before each run) its first tasks wait for the next poll.",
    ])


def replay_section(results):
    r = results.get("replay")
    if not r:
        return ""
    return "\n".join([
        "## Dead-letter replay",
        "",
        f"`bench/replay.py`: a real outbox (WAL, synchronous=FULL) filled through `Outbox`: {r['dead_letters']:,} "
        f"mutations dead-lettered, then {r['later_mutations']:,} delivered after them (4 audiences, every user "
        f"distinct; built in {r['build_s']:.0f} s). Then `Admin.replay` of every dead letter, as `diy-wsgi dead "
        "replay` runs it. Each dead letter is checked against every later mutation of its user, so that a "
        "superseded one is not resurrected. The previous design asked the later batches once per dead letter, "
        "inside the write transaction; its query is timed on the first dead letters here and multiplied out.",
        "",
        table(["", "dead letters replayed", "time s", "longest chunk after the first (a write transaction) ms"],
              [["one read of the later batches, then chunks of 1000 (today)", f"{r['replayed']:,}",
                f"{r['replay_s']:.1f}", f"{r['longest_later_chunk_ms']:,.0f}"],
               ["a query per dead letter (the previous design, estimated)", f"{r['dead_letters']:,}",
                f"{r['baseline_s']:,.0f}", f"{r['baseline_ms_per_dead_letter'] * 1000:,.0f}"]]),
        "",
        f"Today's first chunk, which includes the one read, took {r['first_chunk_s']:.1f} s; that read holds no "
        f"lock. That is {r['baseline_s'] / max(r['replay_s'], 1e-9):,.0f}x faster than the previous design here, "
        f"which held the write lock about {r['baseline_ms_per_dead_letter']:.1f} s per chunk of 1000"
        + (": longer than a request's write_timeout (3 s by default), so requests arriving meanwhile were answered 503."
           if r["baseline_ms_per_dead_letter"] > 3 else "."),
    ])


def backlog_section(results):
    scale = results.get("backlog")
    if not scale:
        return ""
    rows = [[f"{r['pending']:,}", f"{r['file_mib']:,.0f}", f"{r['build_s']:.1f}", ms(r["claim_ms"]["p50"], 2),
             ms(r["claim_ms"]["p99"], 2), ms(r["settle_ms"]["p50"], 2), ms(r["settle_ms"]["p99"], 2),
             f"{r['mutations_per_claim']:.0f}"] for r in scale]
    return "\n".join([
        "## Backlog scale: claim and settle",
        "",
        f"Real outbox files made by `outbox.db.Database`, filled by one `INSERT ... SELECT` with batch rows of 100 "
        f"mutations (one request's; 10 audiences, interleaved), then {scale[0]['rounds']} timed rounds each with the "
        "real `Database` (WAL, synchronous=FULL): one `Outbox.claim(limit=4, batch 100)` and one `Outbox.settle` per "
        "claim; the settled batches are put back to pending between rounds, outside the timers. Warm OS cache.",
        "",
        table(["pending mutations", "file MiB", "build s", "claim p50 ms", "claim p99 ms", "settle p50 ms (per claim)",
               "settle p99 ms", "mutations per claim"], rows),
    ])


def memory_section(results):
    rows = []
    for entry in results.get("ingest", {}).values():
        for name, value in entry.get("rss_mib", {}).items():
            rows.append([entry["label"], name, ms(value)])
    d = results.get("dispatch")
    if d:
        rows.append(["diy-wsgi", "standalone `diy-wsgi dispatch` (after draining)", ms(d["rss_mib"])])
    return "\n".join(["## Memory: peak RSS (VmHWM)", "",
                      "Read from /proc at the end of each contender's runs (after saturation and the open-loop runs); "
                      "diy-wsgi's workers include their embedded dispatcher.", "",
                      table(["contender", "process", "peak RSS MiB"], rows)])


def generator_section(results):
    ingest = results.get("ingest", {})
    runs = [(entry["label"], run) for entry in ingest.values() for run in entry.get("open_loop", [])]
    if not runs:
        return ""
    behind = [(label, run) for label, run in runs if run["send_lag_ms"]["p99"] > 10]
    steady = [run for label, run in runs if run["send_lag_ms"]["p99"] <= 10]
    fastest_steady = max((run["rate"] for run in steady), default=0)
    hello = ingest.get("hello", {}).get("saturation", {})
    load_side = hello.get("cpu", {}).get("bench_cores", 0) - hello.get("cpu", {}).get("server_cores", 0)
    lines = [
        "## The load generators' own limits",
        "",
        "- `bench/loadgen.py` is Python (asyncio on uvloop, one process on the load core), because the rates the "
        "targets need are a Python server's on one core. It records its own lateness (actual send time minus "
        "intended) in every run, and lateness counts inside the reported latencies, never outside them. It kept its "
        f"lateness p99 within 10 ms up to {fastest_steady:,.0f} requests/s in this run."
        + (" It fell behind (lateness p99 over 10 ms: too little CPU for it, from its own rate or from other "
           "programs on its core) in: " + "; ".join(f"{label} at {run['rate']:,.0f}/s (lateness p99 "
                                               f"{run['send_lag_ms']['p99']:.0f} ms)" for label, run in behind)
           + ". Those rows measure the generator as much as the server; no target depends on them, and a C "
           "generator would be the fix if they mattered." if behind else ""),
        f"- wrk (one thread on the load core): at the hello-world ceiling the load side used {load_side:.2f} cores "
        "(wrk, the receiver and this script together), so that ceiling is the server's, not wrk's.",
        "- The load core also runs the receiver and the platform stub, which stand for the network and the platform.",
    ]
    return "\n".join(lines)


def durability_section(results):
    sync = results.get("huey_synchronous")
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return "\n".join([
        "## Durability of each contender",
        "",
        "- diy-wsgi: WAL, `synchronous = full`; a 200 is sent after COMMIT, so an acknowledged mutation survives a "
        "power cut; it stays in the outbox until the platform accepted it (a dispatcher killed mid-call loses "
        "nothing: its lease expires and the batch is delivered again). The dispatcher's bookkeeping (leases, "
        "delivered marks) commits with `synchronous = normal`: a power cut can only make a batch be delivered again.",
        f"- Flask + huey (SqliteHuey defaults: `journal_mode=wal`, `fsync=None` so no synchronous pragma): huey's "
        f"own connection runs with `PRAGMA synchronous` = {sync} ({names.get(sync, 'not measured in this run')}), "
        "this SQLite build's default, so an acknowledged enqueue is as durable as diy-wsgi's when that is 2. But the consumer deletes the task row when "
        "it dequeues it, before running it: a consumer killed mid-task loses that task (huey's retries only cover "
        "exceptions), and a task that exhausts its retries is gone.",
        "- Forward in request: nothing is stored; a 200 means the platform had it; a slow or failing platform "
        "makes the DMP's request slow or failed.",
        "- Durable minimum: as durable as diy-wsgi's 200 (WAL, synchronous=FULL), and nothing more: the body is "
        "kept, never delivered.",
        "- Hello world: stores nothing.",
    ])


def foreign_summary(results):
    values = []
    for entry in results.get("ingest", {}).values():
        values += [run["cpu"]["foreign_cores"] for run in entry.get("rounds", [])]
        values += [run["cpu"]["foreign_cores"] for run in entry.get("open_loop", [])]
    postgres = results.get("postgres", {})
    same_run = postgres.get("run", {}).get("started", results["started"]) == results["started"]
    for entry in postgres.get("contenders", {}).values() if same_run else ():
        values += [run["cpu"]["foreign_cores"] for run in entry.get("rounds", [])]
        values += [entry["open_loop"]["cpu"]["foreign_cores"]] if entry.get("open_loop") else []
    if not values:
        return ""
    return (f"Other programs on this shared machine used {sum(values) / len(values):.2f} cores on average during the "
            f"measured windows (max {max(values):.2f}).")


def other_runs(results):
    run = results.get("postgres", {}).get("run")
    if not run or run["started"] == results["started"]:
        return ""
    return (f" The PostgreSQL section alone comes from another run (`{run['command']}`, started {run['started']}, raw "
            f"results in `{run['workdir']}`); its other-programs figures are in that section.")


def render(results):
    parts = [
        "# diy-wsgi benchmarks",
        "",
        f"Produced by `{results['command']}` ({results['mode']} run) from {results['started']} to "
        f"{results['finished']} ({results['elapsed_s'] / 60:.1f} min). Raw numbers and logs were in "
        f"`{results['workdir']}` (outside the repository). {foreign_summary(results)}" + other_runs(results),
        "",
        "## Targets",
        "",
        table(["target", "measured", "verdict"], targets(results)),
        "",
        TARGETS_NOTE,
        "",
        findings(results),
        machine_section(results),
        "",
        method_section(results),
        "",
    ]
    if results.get("ingest"):
        parts += ["## Ingest", "", "### Throughput at saturation", "", saturation_table(results), "",
                  "### Latency at fixed offered loads (open loop)", "", open_loop_table(results), ""]
    parts += [dispatch_section(results), delivery_section(results), "", backlog_section(results), "",
              replay_section(results), "", postgres_section(results), "",
              memory_section(results), "", profile_section(results), "", generator_section(results), "",
              durability_section(results), ""]
    return "\n".join(part for part in parts if part is not None)
