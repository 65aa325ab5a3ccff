"""RESULTS.md's PostgreSQL section: the postgres phase (postgres_phase.py), every figure and
finding computed from the run's results."""
import payloads
from report_format import ms, num, table

KEYS = ("sqlite", "pg_one", "pg_two")
IN_TRANSACTION = "idle in a transaction (the app at work)"
WAITS = (
    ("on a CPU or waiting for one", ("active: on a CPU or waiting for one",)),
    ("waiting for the WAL flush", ("active: IO WALSync", "active: IO WALWrite", "active: LWLock WALWrite",
                                   "active: IO WALInitSync", "active: LWLock WALInsert")),
    ("waiting for a row lock", ("active: Lock transactionid", "active: Lock tuple")),
    (IN_TRANSACTION, ("idle in transaction (the app's turn)",)),
    ("idle", ("idle",)),
)


def postgres_section(results):
    pg = results.get("postgres")
    if not pg:
        return ""
    lines = ["## PostgreSQL: one and two app instances beside SQLite", ""]
    run = pg.get("run")
    if run and run["started"] != results["started"]:
        lines += [f"**From another run**: this section's numbers come from `{run['command']}`, started "
                  f"{run['started']} (raw results in `{run['workdir']}`), a run of this phase alone"
                  + (f", measuring commit {run['code']['head']}"
                     + (" with uncommitted changes to the runtime files" if run["code"]["runtime_modified"] else "")
                     if run.get("code") else "")
                  + "; every other section comes from the run named at the top. Its three contenders ran side by "
                  "side in that one run.", ""]
    if pg.get("skipped"):
        return "\n".join(lines + [f"Not measured in this run: {pg['skipped']}.", ""])
    entries = {key: pg["contenders"][key] for key in KEYS if pg.get("contenders", {}).get(key, {}).get("saturation")}
    if pg.get("failed") or len(entries) < len(KEYS):
        tail = (pg.get("failed") or "incomplete").strip().splitlines()[-1]
        lines += [f"The phase did not complete in this run ({tail}); see the work folder's logs.", ""]
        if len(entries) < len(KEYS):
            return "\n".join(lines)
    lines += [
        "diy-wsgi on SQLite, on PostgreSQL with one app instance, and on PostgreSQL with two app instances sharing "
        "one database, all on this one machine and in this one run, taking turns at saturation. "
        + summary_sentence(entries),
        "",
        "### Throughput at saturation, delivery included",
        "",
        saturation_table(entries, results),
        "",
        "### Latency at one offered rate (open loop)",
        "",
        open_loop_table(entries, pg),
        "",
        "### Where PostgreSQL's time goes (the median round)",
        "",
        activity_table(entries),
        "",
        activity_note(),
        "",
        "### Findings",
        "",
        *findings(entries, pg, results),
        "",
        "### How it was measured",
        "",
        *method(pg, results),
    ]
    return "\n".join(lines)


def rate(entry):
    return entry["saturation"]["requests_per_s"]


def cpu_ms_per_request(run, group=None):
    cpu = run["cpu"]
    cores = cpu["groups"][group] if group else cpu["server_cores"]
    return cores / run["requests_per_s"] * 1000 if run["requests_per_s"] else None


def summary_sentence(entries):
    base = rate(entries["sqlite"])
    return (f"PostgreSQL with one instance took in {rate(entries['pg_one']) / base:.2f}x SQLite's requests/s, two "
            f"instances {rate(entries['pg_two']) / base:.2f}x, on the same server core.")


def saturation_table(entries, results):
    base = rate(entries["sqlite"])
    rows = []
    for entry in entries.values():
        sat = entry["saturation"]
        k = sat["keeping_up"]
        drains = [run.get("drain_s") for run in entry["rounds"]]
        drained = (f"{max(drains):.1f} s" if all(d is not None for d in drains)
                   else f"not within {results['settings']['drain_wait']} s")
        groups = sat["cpu"].get("groups", {})
        rows.append([
            entry["label"], num(rate(entry)), f"{rate(entry) / base:.2f}x",
            " / ".join(num(r["requests_per_s"]) for r in sat["rounds"]),
            num(k["delivered_per_s"]), f"{k['backlog_slope_per_s']:+,.0f}", drained,
            sum(r["non_2xx"] for r in entry["rounds"]),
            f"{groups.get('gunicorn', 0):.2f} + {groups.get('postgresql', 0):.2f}",
            ms(cpu_ms_per_request(sat)),
            " / ".join(f"{r['foreign_cores']:.2f}" for r in sat["rounds"]),
            " / ".join(ms(r["cpu_probe_ms"]) for r in sat["rounds"]),
        ])
    return table(["contender", "requests/s (median round)", "vs SQLite", "rounds: requests/s",
                  "mutations delivered/s (receiver)", "backlog growth mutations/s", "drained after each round within",
                  "non-2xx (all rounds)", "server cores: gunicorn + PostgreSQL", "server CPU ms per request",
                  "rounds: foreign cores", "rounds: CPU probe ms"], rows) + (
        f"\n\nDelivered and backlog are slopes over the median round less its first 2 s, sampled every 0.5 s "
        f"(the receiver's count of members, and the outbox's `SUM(pending)`); the backlog moves in steps of up to a "
        f"claim's 1000 mutations, so a slope of a few hundred per second either way is noise. Ingested is "
        f"{payloads.MUTATIONS} mutations per request.")


def open_loop_table(entries, pg):
    rows = []
    for entry in entries.values():
        run = entry.get("open_loop")
        if not run:
            continue
        latency, delivery = run["latency_ms"], run["delivery_ms"]
        bad = sum(n for s, n in run["statuses"].items() if s != "200") + run["unfinished"]
        rows.append([entry["label"], num(run["rate"]), run["instances"], ms(latency["p50"]), ms(latency["p99"]),
                     ms(latency["max"]), ms(delivery.get("p50")), ms(delivery.get("p99")), ms(delivery.get("max")),
                     delivery["undelivered"], bad, f"{run['cpu']['server_cores']:.2f}",
                     num(run["postgres_per_s"]["commits"] / run["rate"], 1) if run.get("postgres_per_s") else "",
                     f"{run['cpu']['foreign_cores']:.2f}"])
    if not rows:
        return "Not measured."
    return (f"Every contender at {pg['open_rate']:.0f} requests/s (half the slowest contender's saturation rate, so "
            "all three keep up), split evenly over its instances, one `loadgen.py` per instance, for "
            f"{next(iter(entries.values()))['open_loop']['seconds']} s. Request latency runs from each request's "
            "intended send time to its answer; delivery latency from the 200 to the receiver's receipt of the event "
            "carrying the request's first member.\n\n"
            + table(["contender", "offered/s", "instances", "request p50 ms", "request p99 ms", "request max ms",
                     "delivery p50 ms", "delivery p99 ms", "delivery max ms", "undelivered", "not 200",
                     "server cores", "PostgreSQL commits per request", "foreign cores"], rows)
            + "\n\n" + idle_note(entries))


def idle_note(entries):
    rows = []
    for entry in entries.values():
        idle = entry.get("idle")
        if idle:
            rows.append([entry["label"], f"{idle['server_cores']:.3f}", f"{idle['groups']['gunicorn']:.3f}",
                         f"{idle['groups']['postgresql']:.3f}",
                         num(idle["postgres_per_s"]["commits"], 1) if idle.get("postgres_per_s") else ""])
    if not rows:
        return ""
    return ("With no load at all (5 s after the warm-up drained: dispatchers waiting, heartbeating, polling):\n\n"
            + table(["contender", "server cores", "gunicorn", "PostgreSQL", "PostgreSQL commits/s"], rows))


def state_shares(activity):
    states = activity["sessions_by_state"]
    shares = {name: sum(states.get(key, 0.0) for key in keys) for name, keys in WAITS}
    known = {key for _, keys in WAITS for key in keys}
    shares["other"] = sum(value for key, value in states.items() if key not in known)
    return shares


def activity_table(entries):
    rows = []
    for entry in entries.values():
        sat = entry["saturation"]
        activity, per_s = sat.get("postgres_activity"), sat.get("postgres_per_s")
        if not activity or not per_s:
            continue
        shares = state_shares(activity)
        commits = per_s["commits"]
        rows.append([entry["label"], activity["sessions_max"], num(commits),
                     num(commits / sat["requests_per_s"], 1), num(per_s["wal_syncs"]),
                     num(commits / per_s["wal_syncs"], 1) if per_s["wal_syncs"] else "n/a",
                     num(per_s["wal_bytes"] / 1024 / sat["requests_per_s"], 1),
                     *(num(shares[name], 2) for name, _ in WAITS), num(shares["other"], 2)])
    return table(["contender", "diy-wsgi sessions (max)", "commits/s", "commits per request", "WAL flushes/s",
                  "commits per WAL flush", "WAL KiB per request",
                  *(f"sessions {name} (mean)" for name, _ in WAITS), "sessions otherwise (mean)"], rows)


def activity_note():
    return ("Sessions are diy-wsgi's connections to its database (`application_name = 'diy-wsgi'`), their state "
            "sampled from `pg_stat_activity` every 0.2 s during the round; \"idle in a transaction\" is a session "
            "whose "
            "transaction is open while the app works between two statements (Python, or waiting for the core), so "
            "its row locks stay held meanwhile. Commits and WAL figures are deltas of `pg_stat_database` and "
            "`pg_stat_wal` over the round (PostgreSQL publishes them about once a second, so they are approximate); "
            "commits include the dispatchers' bookkeeping, which commits with `synchronous_commit = off` and so "
            "does not wait for a flush.")


def compare(ratio):
    if ratio >= 1.05:
        return "more"
    if ratio <= 0.95:
        return "less"
    return "about the same, within 5%"


def findings(entries, pg, results):
    sqlite, one, two = (entries[key]["saturation"] for key in KEYS)
    out = []
    cost = {key: cpu_ms_per_request(entries[key]["saturation"]) for key in KEYS}
    app = {key: cpu_ms_per_request(entries[key]["saturation"], "gunicorn") for key in KEYS}
    database = {key: cpu_ms_per_request(entries[key]["saturation"], "postgresql") for key in KEYS}
    out.append(
        f"- **One instance on PostgreSQL** took in {rate(entries['pg_one']):,.0f} requests/s against SQLite's "
        f"{rate(entries['sqlite']):,.0f} ({rate(entries['pg_one']) / rate(entries['sqlite']):.2f}x) on the same "
        f"core. Per request the server side spent {ms(cost['pg_one'], 2)} ms of CPU against {ms(cost['sqlite'], 2)} "
        f"ms: {ms(app['pg_one'], 2)} ms in the app's processes (SQLite: {ms(app['sqlite'], 2)} ms, the SQLite "
        f"library included) and {ms(database['pg_one'], 2)} ms in PostgreSQL's. With PostgreSQL the app talks to "
        "a server in another process over TCP, so each statement is a round trip (psycopg's work on both ends and "
        "switches between processes on this one core), where SQLite runs its statements inside the app's own "
        "process; this run measures the CPU, not the statements.")
    activity = one.get("postgres_activity")
    if activity:
        shares = state_shares(activity)
        busy = {name: value for name, value in shares.items() if name != "idle"}
        top = max(busy, key=busy.get)
        out.append(
            f"- **Where the time goes on PostgreSQL** (one instance, the median round): of its "
            f"{activity['sessions_max']} sessions, on average {shares['idle']:.1f} were idle, "
            f"{shares[IN_TRANSACTION]:.1f} idle inside a transaction while the app worked, "
            f"{shares['waiting for a row lock']:.2f} waiting for a row lock, "
            f"{shares['waiting for the WAL flush']:.2f} waiting for the WAL flush and "
            f"{shares['on a CPU or waiting for one']:.2f} running or runnable; the largest share is \"{top}\". "
            + (f"It committed {one['postgres_per_s']['commits'] / one['requests_per_s']:.1f} transactions per "
               f"request and {one['postgres_per_s']['commits'] / one['postgres_per_s']['wal_syncs']:.1f} commits "
               "per WAL flush." if one.get("postgres_per_s", {}).get("wal_syncs") else ""))
    ratio = rate(entries["pg_two"]) / rate(entries["pg_one"])
    sessions = (two.get("postgres_activity") or {}).get("sessions_max")
    out.append(
        f"- **Two instances against one** on PostgreSQL: two took in {ratio:.2f}x what one took in "
        f"({compare(ratio)}: {rate(entries['pg_two']):,.0f} against {rate(entries['pg_one']):,.0f} requests/s; "
        f"{rate(entries['pg_two']) / rate(entries['sqlite']):.2f}x SQLite), with CPU per request "
        f"{ms(cost['pg_two'], 2)} ms against {ms(cost['pg_one'], 2)} ms"
        + (f" and {sessions} database sessions against {(one.get('postgres_activity') or {}).get('sessions_max')}"
           if sessions else "")
        + ". Here both instances share the server's " + (f"CPU {pg['server']['cpus']}" if pg["server"]["cpus"]
                                                           else "unpinned CPUs")
        + " with PostgreSQL, so a second instance brings no CPU of its own: it can only add worker processes and "
        "connections "
        "that compete for the same core. What two instances buy is surviving the loss of one machine (the reliability "
        "suite's figures); throughput beyond one machine's needs each instance on a VM of its own, which one machine "
        "cannot show.")
    keeping = []
    for key in KEYS:
        entry = entries[key]
        growth = [run["keeping_up"]["backlog_slope_per_s"] for run in entry["rounds"]]
        stored = [run["keeping_up"]["stored_per_s"] or run["keeping_up"]["ingested_per_s"] for run in entry["rounds"]]
        drained = all(run.get("drain_s") is not None for run in entry["rounds"])
        mean_growth, mean_stored = sum(growth) / len(growth), sum(stored) / len(stored)
        kept = mean_growth <= 0.01 * mean_stored and drained
        keeping.append(f"{entry['label']} {'kept up' if kept else 'did not keep up'} (backlog {mean_growth:+,.0f} "
                       f"mutations/s on average for {mean_stored:,.0f}/s stored"
                       + ("" if drained else ", not always drained") + ")")
    out.append("- **Delivery at saturation**: " + "; ".join(keeping) + ".")
    runs = {key: entries[key].get("open_loop") for key in KEYS}
    if all(run and run["delivery_ms"].get("count") for run in runs.values()):
        out.append(
            f"- **Latency at {pg['open_rate']:.0f} requests/s**: request p99 "
            + ", ".join(f"{ms(runs[key]['latency_ms']['p99'])} ms ({entries[key]['label']})" for key in KEYS)
            + "; delivery p50 " + ", ".join(f"{ms(runs[key]['delivery_ms']['p50'])} ms" for key in KEYS)
            + " in the same order."
            + (" At this rate PostgreSQL committed "
               f"{runs['pg_one']['postgres_per_s']['commits'] / runs['pg_one']['rate']:.1f} "
               f"transactions per request with one instance and "
               f"{runs['pg_two']['postgres_per_s']['commits'] / runs['pg_two']['rate']:.1f} with two, against "
               f"{one['postgres_per_s']['commits'] / one['requests_per_s']:.1f} at saturation (likely because, "
               "with requests arriving one at a time, each commit's NOTIFY wakes every dispatcher to claim on its own "
               "instead of one claim serving many requests; this run counts the commits, not who made them)."
               if runs["pg_one"].get("postgres_per_s") and runs["pg_two"].get("postgres_per_s")
               and one.get("postgres_per_s") else ""))
    return out


def method(pg, results):
    server, s = pg["server"], results["settings"]
    shown = server["settings"]
    pin = s.get("pinning")
    contenders = pg["contenders"]
    connections = contenders["pg_two"]["saturation"].get("connections") or []
    return [
        f"- PostgreSQL {shown['server_version']}: a throwaway cluster made for the run (`tests/postgres.py`'s "
        f"`PostgresServer(durable=True)`), listening on 127.0.0.1 (TCP, trust authentication, no TLS), its data on "
        f"{server['disk']}. Read back from the server with `SHOW`: fsync = {shown['fsync']}, full_page_writes = "
        f"{shown['full_page_writes']}, synchronous_commit = {shown['synchronous_commit']}, wal_sync_method = "
        f"{shown['wal_sync_method']}, commit_delay = {shown['commit_delay']}, shared_buffers = "
        f"{shown['shared_buffers']}, max_connections = {shown['max_connections']}; everything else its defaults. "
        "Each PostgreSQL contender has a database of its own on it. A request's mutations are committed durably "
        "before its 200 (synchronous_commit on: flushed to this disk), as on SQLite with `synchronous = full`; the "
        "dispatchers' bookkeeping commits with `synchronous_commit = off`, as it skips the flush on SQLite.",
        (f"- Pinning (taskset): every server process on CPU {pin['server']}: the gunicorn masters and workers (each "
         "with its embedded dispatcher) of every instance, and every PostgreSQL process (the postmaster, pinned "
         f"after start with its {server['pinned_processes']} processes then, and every backend it forks later, "
         f"which inherits it). wrk, loadgen.py, the receiver and the bench itself on CPU {pin['client']}. So all "
         "three contenders get the same core budget; the PostgreSQL idle while SQLite runs costs nothing."
         if pin else "- Nothing pinned."),
        f"- Each instance: gunicorn with the project's `gunicorn.conf.py`, {s['workers']} workers x {s['threads']} "
        "threads, one embedded dispatcher per worker, the INI of the ingest phase's diy-wsgi but the database; two "
        f"instances are two such gunicorns ({2 * s['workers']} workers on the core instead of {s['workers']}).",
        f"- Saturation: wrk (one thread) with {s['connections']} keep-alive connections for one instance; for two "
        f"instances one wrk per instance, started together, with {' and '.join(map(str, connections))} connections "
        "(the same total), their requests/s summed, each cycling payloads of its own so that the two never add the "
        f"same users. {s['saturation']} s per round after a {s['warmup']} s warm-up, {s['rounds']} rounds in "
        "rotating order, each after the previous backlog drained; a contender's figure is its median round. Each "
        "round first waits for a quiet second (up to "
        f"{s['quiet_wait']} s); a round during which other programs used more than 0.25 cores is run again "
        f"{s['retries']} time(s), keeping the quietest ("
        + ", ".join(f"{entry['label']}: {sum(r.get('attempts', 1) for r in entry['rounds'])} attempts for "
                    f"{len(entry['rounds'])} rounds" for entry in contenders.values() if entry.get("rounds"))
        + ").",
        "- Server CPU is measured from /proc over each round's middle (the whole process trees of the gunicorn "
        "masters and of the postmaster); the bench's own two PostgreSQL sessions (backlog and activity sampling, a "
        "few cheap queries a second) count in PostgreSQL's share.",
    ]
