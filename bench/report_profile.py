"""RESULTS.md's profiling part: where the time goes, and the changes the numbers point at."""
import payloads
from profiling import CLAIM_SIZES, GROUPED, HEADER_PARSING, OLD_DESIGN, TODAY
from report_format import median_by_p99, ms, num, p99_list, table

SMALL, LARGE = (str(size) for size in CLAIM_SIZES)
WAITS = "write-lock wait"
DELIVERY_TARGET_MS = 50
CPU_BOUND = 0.9
"""Server cores used at saturation from which CPU, not waiting, sets the throughput (one core)."""
NOTABLE = 0.005
"""Shares of the threads' time worth naming."""
IDLE_CLAIMS = 0.05
"""Share of claim transactions finding nothing worth naming (a few are window-edge noise)."""


def profile_section(results):
    profile = results.get("profile")
    if not profile:
        return ""
    micro = profile["micro"]
    lines = ["## Where the time goes", "",
             "### One request, alone (bench/profiling.py, one process, no contention, synchronous=FULL)", "",
             f"CPU probe on the server core just before: {ms(profile.get('micro_cpu_probe_ms'))} ms (about 5.3 ms "
             "when the core is not shared; the absolute times below scale with it, their ratios much less).", ""]
    lines += ingest_lines(micro) + dispatch_lines(micro["dispatch"]) + storage_lines(micro["what_ifs"])
    lines += gil_lines(micro["commit_and_gil"]) + handoff_lines(micro["lock_handoff"])
    if profile.get("under_load"):
        lines += under_load_lines(profile["under_load"], results["settings"])
    return "\n".join(lines)


def ingest_lines(micro):
    plain, extra = micro["ingest"]["plain"], micro["ingest"]["with_extra_field"]
    rows = [[name, ms(value["median"], 3), ms(extra[name]["median"], 3)] for name, value in plain.items()]
    rows.append(["**sum**", ms(stage_sum(plain), 3), ms(stage_sum(extra), 3)])
    whole = micro["whole_request_cpu_ms"]
    return [table(["step (ADD_TO_AUDIENCE, 100 mutations), median", "ms", "ms with one unknown field per mutation"],
                  rows), "",
            f"The whole WSGI call, CPU per request (median): {whole['INFO']['median']:.2f} ms with the request log "
            f"line written to a file, {whole['WARNING']['median']:.2f} ms without (alternating calls).", ""]


def dispatch_lines(dispatch):
    small, large = dispatch[SMALL], dispatch[LARGE]
    per_100 = int(LARGE) // 100
    rows = [[name, ms(value["median"], 2), ms(large[name]["median"], 2), ms(value["median"] * 100 / int(SMALL), 3),
             ms(large[name]["median"] / per_100, 3)] for name, value in small.items()]
    rows.append(["**sum**", ms(stage_sum(small), 2), ms(stage_sum(large), 2),
                 ms(per_100_mutations(dispatch, SMALL), 3), ms(per_100_mutations(dispatch, LARGE), 3)])
    return [f"Deliveries of one audience as the dispatcher makes them, alone. Each stored request is one batch row of "
            f"{payloads.MUTATIONS} mutations; claims of {SMALL} mutations (one request: what a claim carries when "
            f"{payloads.AUDIENCES} audiences take turns) and of {LARGE} (ten requests) alternate:", "",
            table(["step (median)", f"ms per delivery of {SMALL}", f"ms per delivery of {LARGE}",
                   f"ms per 100 mutations, claims of {SMALL}", f"ms per 100 mutations, claims of {LARGE}"], rows), ""]


def storage_lines(what_ifs):
    return ["What 100 mutations cost to store, today's design against the old one (the real schemas, WAL, "
            "synchronous=FULL, one process, the variants taking turns; SQL and COMMIT, the JSON encoded beforehand "
            "as enqueue does):", "",
            table(["storage", "ms per request (median)"], [[name, ms(value, 3)] for name, value in what_ifs.items()]),
            ""]


def gil_lines(gil):
    rows = [["alone", ms(gil["alone"], 3)]]
    rows += [[f"beside a CPU-bound Python thread, switch interval {interval} ms", ms(value, 3)]
             for interval, value in gil["beside a busy thread"].items()]
    return ["A request's COMMIT (one batch row, synchronous=FULL) and the GIL: the thread gets the GIL back after the "
            "fsync only when another thread hands it over:", "",
            table(["COMMIT", "ms (median)"], rows), ""]


def handoff_lines(handoff):
    rows = [[hold, *(ms(v[way][column], 2) for way in ("busy_handler", "polling")
                     for column in ("late_ms_median", "late_ms_max", "waiter_cpu_ms_median"))]
            for hold, v in handoff.items()]
    return ["How late a writer waiting for SQLite's write lock gets it after another connection releases it: in "
            "SQLite's busy handler (`timeout=` in `sqlite3.connect`: it sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, "
            "50, 100 ms between tries; the product before) and in `Database`, which retries `BEGIN IMMEDIATE` every "
            "0.5 ms with the handler off (today):", "",
            table(["lock held ms", "busy handler: late, median ms", "max ms", "waiter CPU ms",
                   "polling: late, median ms", "max ms", "waiter CPU ms"], rows), ""]


def under_load_lines(under, settings):
    timers, wrk = under["lock_timers"], under.get("wrk") or {}
    window = timers["window_s"]
    lines = ["### Under saturated load", "",
             f"diy-wsgi under wrk again, with `bench/apps/diy_traced.py` (timers around the write lock, CPU clocks "
             f"around requests and deliveries) and py-spy (`--idle`, 100 Hz, {window:.0f} s) attached: "
             f"{num(wrk.get('requests_per_s'))} requests/s while profiled; the server's processes used "
             f"{under['cpu']['server_cores']:.2f} cores.", ""]
    cpu = cpu_per_request(under)
    if cpu:
        lines += [f"CPU per request in that window, from the threads' own clocks: {cpu['request']:.2f} ms in the WSGI "
                  f"call; {cpu['delivery']:.2f} ms per 100 mutations delivered ({cpu['deliveries']:,} deliveries of "
                  f"{cpu['per_delivery']:.0f} mutations on average, {cpu['each']:.2f} ms each, and the dispatcher's "
                  f"claim loop); {cpu['total']:.2f} ms by all the server's processes, per request.", ""]
    rows = []
    for caller, t in sorted(timers["by_caller"].items(), key=lambda kv: -kv[1]["held_total_s"]):
        rows.append([caller, f"{t['waits']:,}", ms(t["wait_ms"]["mean"], 2), ms(t["wait_ms"]["p99"], 1),
                     ms(t["wait_ms"]["max"], 1), ms(t["begin_sqlite_ms"]["p99"], 1), f"{t['transactions']:,}",
                     ms(t["held_ms_mean"], 2), ms(t["commit_ms_mean"], 2), f"{t['held_total_s']:.2f}"])
    lines += [f"The write lock in those {window:.0f} s, by caller (both workers): held {held_share(timers):.0%} of the "
              "time. A wait runs from asking for the lock to one's own work running: the process's writer lock "
              "(writes and transactions ahead), then SQLite's lock (the other worker). Requests write through group "
              "commit, so their wait is per request and the rest per COMMIT.", "",
              table(["caller", "waits", "wait mean ms", "p99 ms", "max ms", "of it in SQLite p99 ms", "COMMITs",
                     "lock held mean ms", "COMMIT mean ms", "lock held total s"], rows), ""]
    groups = timers["groups"]
    if groups["count"]:
        lines += [f"Group commit: {groups['writes']:,} requests' writes in {groups['count']:,} COMMITs, "
                  f"{groups['writes'] / groups['count']:.2f} per COMMIT on average, at most {groups['max']}.", ""]
    claims = timers["claims"]
    if claims["calls"]:
        claim_transactions = timers["by_caller"].get("claim", {}).get("transactions", 0)
        lines += [f"`claim` was called {claims['calls']:,} times: {claims['empty']:,} claimed nothing, and "
                  f"{claim_transactions:,} took the write lock (a call with no free delivery thread, or whose read "
                  "finds nothing due, returns before BEGIN); claims carried "
                  f"{mutations_per_claim(timers):,.0f} mutations per audience on average.", ""]
    for role, data in under.get("py_spy", {}).items():
        rows = [[name, f"{share:.1%}"] for name, share in data["share"].items() if share >= NOTABLE]
        lines += [f"py-spy, {role}: where their wall-clock time went ({data['samples']:,} samples):", "",
                  table(["where", "share"], rows), ""]
    if under.get("py_spy_error"):
        lines += [f"py-spy failed: `{under['py_spy_error'].strip()}`", ""]
    run = under["open_loop"]
    latency, delivery = run["latency_ms"], run["delivery_ms"]
    lines += [f"Then {settings['profile_open']} s of open loop at {run['rate']:.0f} requests/s "
              f"({run.get('load', 0.75):.0%} of the rate above), the same traced server:", "",
              table(["p50 ms", "p99 ms", "p99.9 ms", "max ms", "not 200", "delivery p50 ms", "delivery p99 ms",
                     "undelivered"],
                    [[ms(latency["p50"]), ms(latency["p99"]), ms(latency["p999"]), ms(latency["max"]),
                      sum(n for s, n in run["statuses"].items() if s != "200") + run["unfinished"],
                      ms(delivery.get("p50")), ms(delivery.get("p99")), delivery["undelivered"]]]), ""]
    return lines + slowest_lines(run)


def slowest_lines(run):
    """Where the slowest requests of the traced open-loop run spent their time, and the COMMITs."""
    requests = run.get("lock_timers", {}).get("requests", {})
    enqueue = run.get("lock_timers", {}).get("by_caller", {}).get("enqueue")
    if not requests.get("slowest_1pct") or not enqueue:
        return []
    rows = [[name, f"{part['count']:,}", ms(part["wall_ms"], 2), ms(part["lock_wait_ms"], 2),
             ms(part["write_rest_ms"], 2), ms(part["other_ms"], 2), ms(part["cpu_ms"], 2)]
            for name, part in (("around the median (p45 to p55)", requests["middle"]),
                               ("the slowest 1%", requests["slowest_1pct"]))]
    commit, cpu, disk = enqueue["commit_ms"], enqueue["commit_cpu_ms"], run["disk_fsync_ms"]
    return [f"Where the requests' time went in that run, from the timers around each WSGI call ({requests['count']:,} "
            "calls; means):", "",
            table(["requests", "count", "in the WSGI call ms", "waiting for the write lock ms",
                   "their write: its work and COMMIT ms", "the rest ms", "of it all, the thread's CPU ms"], rows), "",
            f"Requests' COMMITs in that run took p50 {commit['p50']:.2f} ms, p99 {commit['p99']:.2f} ms, max "
            f"{commit['max']:.1f} ms; the committing thread's CPU in them p50 {cpu['p50']:.2f} ms, p99 "
            f"{cpu['p99']:.2f} ms. The rest of a COMMIT is waiting: for the disk's flush, then for the GIL. The disk "
            "on its own meanwhile (16 KiB appended and fsynced every 50 ms from the load side, as "
            f"`diy-wsgi disk` does; "
            f"{disk['count']:,} flushes): p50 {disk['p50']:.2f} ms, p99 {disk['p99']:.2f} ms, max "
            f"{disk['max']:.1f} ms.", ""]


def findings(results):
    """The changes the numbers point at, most valuable first, each computed from this run."""
    profile = results.get("profile")
    if not profile or not profile.get("under_load"):
        return ""
    micro, under = profile["micro"], profile["under_load"]
    cpu_bound = under["cpu"]["server_cores"] >= CPU_BOUND
    first = [cpu_finding(micro, under, results), lock_finding(micro, under, results)]
    items = [ceiling_finding(results), tail_finding(results, under)] + (first if cpu_bound else first[::-1]) + [
        request_finding(micro, under), small_finding(micro, under), keep_alive_finding(results)]
    lines = ["## What to change, most valuable first", ""]
    lines += [f"{number}. {item}" for number, item in enumerate((item for item in items if item), 1)]
    return "\n".join(lines) + "\n"


def ceiling_finding(results):
    """What the throughput targets ask per request, against what the request path alone costs and
    what the durable minimum reaches."""
    ingest = results.get("ingest", {})
    diy, alone, hello, huey = (ingest.get(key, {}).get("saturation") for key in ("diy", "diy_ingest", "hello",
                                                                                  "flask_huey"))
    if not (diy and alone and hello and huey):
        return ""

    def cost(sat):
        return sat["cpu"]["server_cores"] * 1000 / sat["requests_per_s"]

    rate, ceiling = alone["requests_per_s"], hello["requests_per_s"]
    share_budget = 1000 / (0.35 * ceiling)
    huey_budget = 1000 / (1.5 * huey["requests_per_s"])
    lead = floor_lead(ingest.get("floor", {}).get("saturation"), hello, huey, cost) or (
        "**The two throughput targets ask for less CPU per request than the request path alone uses.** ")
    return lead + (
        f"With no dispatcher running (nothing delivered), diy-wsgi took {rate:,.0f} requests/s: {rate / ceiling:.1%} "
        f"of hello world and {rate / huey['requests_per_s']:.2f}x Flask + huey, at {cost(alone):.2f} ms of the "
        f"server core per request (hello world {cost(hello):.2f} ms, gunicorn's share). Delivering adds "
        f"{cost(diy) - cost(alone):.2f} ms per request ({cost(diy):.2f} ms in all). 35% of hello world allows "
        f"{share_budget:.2f} ms per request in all, 1.5x Flask + huey {huey_budget:.2f} ms. The server used "
        f"{alone['cpu']['server_cores']:.2f} cores of its one for the request path alone, so the gap is CPU work, "
        "most of it Python per mutation (decode, validate, encode the batch; below), and the steps below each take a "
        "few percent of it: meeting these two targets would take a different design, not tuning. huey's consumer "
        "meanwhile falls behind (see Dispatch), so its rate leaves part of its delivery out.")


def floor_lead(floor, hello, huey, cost):
    """The durable minimum's throughput against the two targets, when it was measured."""
    if not floor:
        return ""
    rate = floor["requests_per_s"]
    share, ratio = rate / hello["requests_per_s"], rate / huey["requests_per_s"]
    beyond = [name for name, missed in (("35% of hello world", share < 0.35), ("1.5x Flask + huey", ratio < 1.5))
              if missed]
    text = (f"{rate:,.0f} requests/s: {share:.1%} of hello world, {ratio:.2f}x Flask + huey, at {cost(floor):.2f} "
            "ms of the core per request")
    if not beyond:
        return f"**Both throughput targets are within the durable minimum's reach: it took {text}.** "
    return (f"**{' and '.join(beyond)} {'is' if len(beyond) == 1 else 'are'} beyond even the durable minimum here: "
            f"it took {text}.** It checks the request as Flask + huey does and stores the raw body with one INSERT "
            "and its own COMMIT; it groups nothing by audience and delivers nothing, where diy-wsgi validates every "
            "field, stores a batch per audience and delivers on the same core (its COMMITs are shared under load, "
            "which the minimum's are not). ")


def tail_finding(results, under):
    """What the slowest 1% of requests waited for, in the traced run at the p99 target's load."""
    run = under.get("open_loop", {})
    timers = run.get("lock_timers", {})
    slowest, enqueue = timers.get("requests", {}).get("slowest_1pct"), timers.get("by_caller", {}).get("enqueue")
    if not slowest or not enqueue:
        return ""
    in_write = slowest["lock_wait_ms"] + slowest["write_rest_ms"]
    commit, cpu, disk = enqueue["commit_ms"], enqueue["commit_cpu_ms"], run["disk_fsync_ms"]
    text = (f"**The p99 at {run['load']:.0%} load is the slowest writes: the slowest 1% of requests spent "
            f"{in_write / slowest['wall_ms']:.0%} of their time in the WSGI call on their write.** In the traced run "
            f"at {run['rate']:.0f} requests/s (p99 {run['latency_ms']['p99']:.1f} ms), they took "
            f"{slowest['wall_ms']:.1f} ms on average: {slowest['lock_wait_ms']:.1f} ms waiting for the write lock, "
            f"{slowest['write_rest_ms']:.1f} ms in their own write and COMMIT, {slowest['other_ms']:.1f} ms on the "
            f"rest, with {slowest['cpu_ms']:.2f} ms of CPU in all. Requests' COMMITs took p99 {commit['p99']:.1f} ms, "
            f"of which the committing thread's CPU p99 {cpu['p99']:.2f} ms: the rest is waiting for the disk's "
            f"flush (and then the GIL), and the requests queued behind a slow COMMIT wait it out. The disk on its own "
            f"in the same seconds flushed 16 KiB in p50 {disk['p50']:.2f} ms, p99 {disk['p99']:.2f} ms, max "
            f"{disk['max']:.1f} ms. ")
    text += control_note(results)
    if in_write < 0.5 * slowest["wall_ms"]:
        return text
    return text + ("A 200 is sent after its fsync by design (`synchronous = full`), so on this machine the p99 "
                   "goal rests on the disk's flush tail more than on diy-wsgi's code; a disk with a short flush tail "
                   "(local NVMe, a battery-backed cache) moves p99 with it. `synchronous = normal` would take the "
                   "flush off the request and is not an option: a power cut could then lose acknowledged mutations.")


def control_note(results):
    """The durable minimum's p99 at diy-wsgi's target rate, from the runs that took turns with diy-wsgi's."""
    runs = results.get("ingest", {}).get("floor", {}).get("open_loop", [])
    if not runs:
        return ""
    median = median_by_p99(runs)["latency_ms"]["p99"]
    text = (f"The durable minimum (one INSERT and COMMIT per request, nothing else), at diy-wsgi's 50% rate "
            f"({runs[0]['rate']:.0f} requests/s) and taking turns with its runs there, had p99 {median:.1f} ms"
            + (f" (median of {p99_list(runs)} ms)" if len(runs) > 1 else "") + ". ")
    if median > 10:
        text += ("So the median run missed the 10 ms goal at that rate on this disk even with next to no work "
                 "besides the durable write. ")
    return text


def cpu_finding(micro, under, results):
    """CPU per request, split between the request and its delivery; a delivery's fixed cost."""
    dispatch, cpu = micro["dispatch"], cpu_per_request(under)
    small, large = per_100_mutations(dispatch, SMALL), per_100_mutations(dispatch, LARGE)
    rate = under["wrk"]["requests_per_s"]
    gap_ms = payloads.AUDIENCES / rate * 1000
    linger_s = (int(LARGE) // payloads.MUTATIONS - 1) * gap_ms / 1000
    load, delivery = delivery_where_targeted(results, under)
    fixed = sorted(((name, value["median"] - dispatch[LARGE][name]["median"] / (int(LARGE) // int(SMALL)))
                    for name, value in dispatch[SMALL].items()), key=lambda kv: -kv[1])
    cores = under["cpu"]["server_cores"]
    text = ""
    if cpu:
        lead = "Throughput is CPU: the" if cores >= CPU_BOUND else "At saturation the"
        text = (f"**{lead} server used {cores:.2f} cores of its one, {cpu['total']:.2f} ms per request, and "
                f"delivery {compared(cpu['delivery'], cpu['request'])} taking the request in: "
                f"{cpu['delivery']:.2f} ms per 100 mutations delivered against {cpu['request']:.2f} ms per request in "
                "the WSGI call** (the threads' own CPU clocks under saturated load; the rest is gunicorn's HTTP "
                f"parsing and socket I/O and the interpreter). Deliveries carried {cpu['per_delivery']:.0f} mutations "
                f"on average and cost {cpu['each']:.2f} ms CPU each. ")
    return text + (
        f"A delivery pays a fixed cost whatever it carries: alone, claims of {SMALL} mutations cost {small:.2f} ms per "
        f"100, claims of {LARGE} {large:.2f} ms per 100; per delivery the fixed part is mostly "
        + ", ".join(f"{short(name).split(':')[0]} {value:.2f} ms" for name, value in fixed[:3])
        + " (wall time; the POST's includes the receiver's answer from the other core). "
        f"Claims are small because the dispatcher claims an audience as soon as a commit wakes it and the "
        f"{payloads.AUDIENCES} audiences take turns. Larger deliveries are the next lever, up to "
        f"{small - large:.2f} ms per 100 mutations, but they cost delivery latency: at {rate:.0f} requests/s an "
        f"audience gets a request every {gap_ms:.0f} ms, so claims of {LARGE} would mean lingering about "
        f"{linger_s:.1f} s for an audience's work. Delivery took p50 {ms(delivery.get('p50'))} ms, p99 "
        f"{ms(delivery.get('p99'))} ms at {load}: " + linger_verdict(delivery.get("p50"), gap_ms))


def delivery_where_targeted(results, under):
    """Delivery latency at 50% load from the ingest runs (where the target is measured), else the profile's."""
    runs = results.get("ingest", {}).get("diy", {}).get("open_loop", [])
    half = next((run for run in runs if abs(run["load"] - 0.5) < 1e-9 and run["delivery_ms"].get("count")), None)
    if half:
        return "50% load", half["delivery_ms"]
    run = under["open_loop"]
    return f"{run.get('load', 0.75):.0%} load (the profile's open loop)", run["delivery_ms"]


def linger_verdict(p50, gap_ms):
    budget_ms = DELIVERY_TARGET_MS - (p50 if p50 is not None else DELIVERY_TARGET_MS)
    if budget_ms <= 0:
        return f"already over the {DELIVERY_TARGET_MS} ms p50 target, no room to linger."
    room = f"the {DELIVERY_TARGET_MS} ms p50 target leaves about {budget_ms:.0f} ms to linger"
    if budget_ms < gap_ms:
        return room + ", less than that gap: within the target the lever is the fixed cost itself."
    return (room + f", {budget_ms / gap_ms:.1f} more requests per claim at this rate: worth trying (claim an audience "
            "once it holds max_batch mutations or its oldest batch is that old).")


def lock_finding(micro, under, results):
    """How much of the time the write lock was held, what held it, and what waiting for it cost."""
    timers = under["lock_timers"]
    enqueue = timers["by_caller"].get("enqueue")
    if not enqueue:
        return ""
    share, held = held_share(timers), sum(t["held_total_s"] for t in timers["by_caller"].values())
    in_commit = sum(t["commit_ms_mean"] * t["transactions"] / 1000 for t in timers["by_caller"].values()) / (held or 1)
    gil = micro["commit_and_gil"]
    default, shorter = gil["beside a busy thread"].items()
    groups = timers["groups"]
    spy = under.get("py_spy", {})
    request_wait, dispatcher_wait = (role_share(spy, role, WAITS) for role in ("request threads", "dispatcher threads"))
    text = (f"**The write lock was held {share:.0%} of the time under saturated load, {in_commit:.0%} of that in "
            f"COMMIT: a request's COMMIT took {enqueue['commit_ms_mean']:.2f} ms on average under load against "
            f"{gil['alone']:.2f} ms alone.** ")
    if enqueue["commit_ms_mean"] > 2 * gil["alone"]:
        text += (f"Alone beside one CPU-bound Python thread in the process, a COMMIT takes {default[1]:.2f} ms: after "
                 "the fsync the committing thread needs the GIL back, and a busy thread hands it over only every "
                 f"switch interval ({default[0]} ms by default; at {shorter[0]} ms the COMMIT took "
                 f"{shorter[1]:.2f} ms). Each worker runs its request threads and its dispatcher's beside the writer, "
                 "so the lock is held while the GIL is elsewhere. A shorter `sys.setswitchinterval` helps a "
                 "COMMIT alone, but not the service: in an A/B of open-loop runs at 110 requests/s (six "
                 "interleaved runs of each, 2026-11-27), 0.5 ms made p99 worse in four of six (64-144 ms against "
                 "8-20 ms), so diy-wsgi keeps Python's default. ")
    text += (f"Waiting for the lock took {request_wait:.0%} of the request threads' wall-clock time and "
             f"{dispatcher_wait:.0%} of the dispatcher threads'; a request's write waited "
             f"{enqueue['wait_ms']['mean']:.1f} ms on average for its turn, p99 {enqueue['wait_ms']['p99']:.0f} ms, "
             f"of which SQLite's lock (the other worker) p99 {enqueue['begin_sqlite_ms']['p99']:.1f} ms. Group commit "
             f"put {groups['writes'] / max(1, groups['count']):.2f} requests in a COMMIT on average (at most "
             f"{groups['max']}). " + storage_note(micro, results) + polling_note(micro, timers) + events_note(results))
    return text


def storage_note(micro, results):
    what_ifs = micro["what_ifs"]
    return (f"Alone, 100 mutations cost {ms(what_ifs.get(TODAY), 2)} ms to store as one batch row, "
            f"{ms(what_ifs.get(GROUPED), 2)} ms with 10 requests per COMMIT, against "
            f"{ms(what_ifs.get(OLD_DESIGN), 2)} ms as a row per mutation (the old design); this disk fsyncs in "
            f"{results['machine']['fsync_ms']['p50']:.2f} ms, and on a cloud disk with 1-2 ms fsyncs the sharing is "
            "worth more.")


def polling_note(micro, timers):
    polling = polling_cpu_share(micro, timers)
    if polling is None:
        return ""
    return (f" Polling for SQLite's lock costs CPU while waiting ({polling['per_ms']:.3f} ms per ms waited, alone): "
            f"under load writers waited {polling['waited_s']:.2f} s in it, about {polling['share']:.1%} of a core.")


def events_note(results):
    events = log_events(results)
    if not any(events.values()):
        return ""
    return (f" In this run {events['settles']} settles met a busy database and were retried, {events['abandoned']} "
            f"deliveries were abandoned and {events['locked']} writes waited the whole write_timeout.")


def request_finding(micro, under):
    plain, extra = micro["ingest"]["plain"], micro["ingest"]["with_extra_field"]
    largest = sorted(plain.items(), key=lambda kv: -kv[1]["median"])[:3]
    python = sum(v["median"] for name, v in plain.items() if not name.startswith(("write:", "COMMIT")))
    commit = next((v["median"] for name, v in plain.items() if name.startswith("COMMIT")), 0)
    groups = under["lock_timers"]["groups"]
    per_group = groups["writes"] / groups["count"] if groups["count"] else 1
    text = (f"**The request path, alone: {stage_sum(plain):.2f} ms per request (stage sum); the largest steps are "
            + ", ".join(f"{short(name)} {value['median']:.2f} ms" for name, value in largest)
            + f".** Under load a COMMIT ({commit:.2f} ms alone) is shared by {per_group:.2f} requests on average; "
            f"the Python steps (HMAC, JSON decode, validation, the batch's encoding) take {python:.2f} ms.")
    if stage_sum(extra) > 1.1 * stage_sum(plain):
        text += (f" One unknown field in each mutation moves the stage sum to {stage_sum(extra):.2f} ms: it is "
                 "decoded, kept and encoded with each mutation.")
    return text


def small_finding(micro, under):
    spy = under.get("py_spy", {})
    small = []
    for name, why in (("logging", " (a line per request and per delivery)"), ("metrics", "")):
        shares = [role_share(spy, role, name) for role in ("request threads", "dispatcher threads")]
        if max(shares) >= NOTABLE:
            small.append(f"{name}: {shares[0]:.1%} of the request threads' wall-clock time and {shares[1]:.1%} of "
                         f"the dispatcher threads'{why}")
    headers = role_share(spy, "dispatcher threads", HEADER_PARSING)
    if headers >= NOTABLE:
        small.append(f"http.client parses each platform answer's headers with the email package ({headers:.1%} of the "
                     "dispatcher threads' time)")
    request_id = role_share(spy, "request threads", "request id")
    if request_id >= NOTABLE:
        small.append(f"`secrets.token_hex` for each request id is a getrandom syscall ({request_id:.1%} of request "
                     "thread time)")
    timers = under["lock_timers"]
    claim_transactions = timers["by_caller"].get("claim", {}).get("transactions", 0)
    idle_claims = claim_transactions - (timers["claims"]["calls"] - timers["claims"]["empty"])
    if idle_claims > IDLE_CLAIMS * claim_transactions:
        small.append(f"{idle_claims} of the {claim_transactions} write transactions `claim` opened found nothing to "
                     "claim (its read saw due work another dispatcher took first)")
    info, warn = micro["whole_request_cpu_ms"]["INFO"]["median"], micro["whole_request_cpu_ms"]["WARNING"]["median"]
    small.append(f"alone, the request log line costs about {max(0.0, info - warn):.2f} ms CPU of {info:.2f} ms per "
                 "request")
    return "**Small things, each a few percent at most:** " + "; ".join(small) + "."


def keep_alive_finding(results):
    receiver = results.get("receiver_stats")
    if not receiver:
        return ""
    return (f"**Not a problem here: a TCP connection per platform call.** The shared `HttpClient` keeps connections "
            f"alive: the receiver accepted {receiver['connections']} connections for {receiver['events']:,} events "
            "over the whole run.")


def cpu_per_request(under):
    """ms of CPU: per request in the WSGI call, per 100 mutations delivered, per request in all."""
    cpu = under["lock_timers"]["cpu"]
    requests, delivery = cpu.get("request"), cpu.get("delivery")
    if not requests or not requests["calls"] or not delivery or not delivery["mutations"]:
        return None
    loop = cpu.get("claim loop", {}).get("cpu_s", 0)
    return {"request": requests["cpu_s"] * 1000 / requests["calls"],
            "delivery": (delivery["cpu_s"] + loop) * 1000 * 100 / delivery["mutations"],
            "deliveries": delivery["calls"], "per_delivery": delivery["mutations"] / delivery["calls"],
            "each": delivery["cpu_s"] * 1000 / delivery["calls"],
            "total": under["cpu"]["server_cores"] * under["lock_timers"]["window_s"] * 1000 / requests["calls"]}


def polling_cpu_share(micro, timers):
    """The CPU that polling for SQLite's lock cost under load, from its cost per ms waited alone."""
    longest = max(micro["lock_handoff"], key=float)
    per_ms = micro["lock_handoff"][longest]["polling"]["waiter_cpu_ms_median"] / float(longest)
    waited = sum(t["begin_sqlite_ms"]["total_s"] for t in timers["by_caller"].values())
    if not waited:
        return None
    return {"per_ms": per_ms, "waited_s": waited, "share": waited * per_ms / timers["window_s"]}


def held_share(timers):
    return sum(t["held_total_s"] for t in timers["by_caller"].values()) / timers["window_s"]


def mutations_per_claim(timers):
    return timers["claims"]["mutations"] / max(1, timers["claims"]["audiences"])


def role_share(spy, role, prefix):
    return sum(share for name, share in spy.get(role, {}).get("share", {}).items() if name.startswith(prefix))


def compared(value, other):
    ratio = value / other
    if ratio > 1.15:
        return "costs more CPU than"
    return "costs less CPU than" if ratio < 0.85 else "costs about as much CPU as"


def short(step):
    """A step's name without its details in brackets."""
    return step.split(" (")[0]


def stage_sum(steps):
    return sum(value["median"] for value in steps.values())


def per_100_mutations(dispatch, size):
    return stage_sum(dispatch[size]) * 100 / int(size)


def log_events(results):
    events = log_events_rows(results).values()
    return {"settles": sum(v.get("settles retried (database busy)", 0) for v in events),
            "abandoned": sum(v.get("deliveries abandoned (delivery crashed)", 0) for v in events),
            "locked": sum(v.get("write lock not had within write_timeout", 0) for v in events)}


def log_events_rows(results):
    rows = {}
    diy = results.get("ingest", {}).get("diy")
    if diy:
        for name, values in diy.get("log_events", {}).items():
            rows[f"gunicorn, the ingest runs ({name})"] = values
    if results.get("dispatch"):
        rows["`diy-wsgi dispatch`, the drain"] = results["dispatch"]["log_events"]
    under = results.get("profile", {}).get("under_load")
    if under:
        rows["gunicorn, the profile run"] = under["log_events"]
    return rows
