"""RESULTS.md's PostgreSQL section: the postgres phase's tables (postgres_phase.py)."""
from report_format import ms, num, table

KEYS = ("sqlite", "pg_one", "pg_two")

def rate(entry):
    return entry["saturation"]["requests_per_s"]


def cpu_ms(run, group=None):
    cores = run["cpu"]["groups"][group] if group else run["cpu"]["server_cores"]
    return cores / run["requests_per_s"] * 1000 if run["requests_per_s"] else None


def postgres_section(results):
    pg = results.get("postgres")
    if not pg:
        return ""
    lines = ["## PostgreSQL: one and two app instances beside SQLite", ""]
    if pg.get("skipped"):
        return "\n".join(lines + [f"Not measured: {pg['skipped']}.", ""])
    entries = {key: pg["contenders"][key] for key in KEYS if pg.get("contenders", {}).get(key, {}).get("saturation")}
    if pg.get("failed") or len(entries) < len(KEYS):
        tail = (pg.get("failed") or "incomplete").strip().splitlines()[-1]
        lines += [f"Did not complete: {tail}; see the work folder's logs.", ""]
        if len(entries) < len(KEYS):
            return "\n".join(lines)
    shown = pg["server"]["settings"]
    lines += [
        f"PostgreSQL {shown['server_version']} on 127.0.0.1, fsync = {shown['fsync']}, synchronous_commit = "
        f"{shown['synchronous_commit']}, full_page_writes = {shown['full_page_writes']}, its processes on the server "
        "core with the gunicorns; two instances share one database, the load split evenly.", "",
        saturation_table(entries), "", open_loop_table(entries), ""]
    return "\n".join(lines)


def saturation_table(entries):
    base = rate(entries["sqlite"])
    rows = []
    for entry in entries.values():
        sat = entry["saturation"]
        k, groups = sat["keeping_up"], sat["cpu"].get("groups", {})
        rows.append([entry["label"], num(rate(entry)), f"{rate(entry) / base:.2f}x",
                     " / ".join(num(r["requests_per_s"]) for r in sat["rounds"]), num(k["delivered_per_s"]),
                     f"{k['backlog_slope_per_s']:+,.0f}", sum(r["non_2xx"] for r in entry["rounds"]),
                     f"{groups.get('gunicorn', 0):.2f} + {groups.get('postgresql', 0):.2f}", ms(cpu_ms(sat), 2),
                     " / ".join(f"{r['foreign_cores']:.2f}" for r in sat["rounds"])])
    return table(["contender", "requests/s", "vs SQLite", "rounds", "mutations delivered/s", "backlog growth /s",
                  "non-2xx", "server cores: gunicorn + PostgreSQL", "CPU ms/request", "rounds: foreign cores"], rows)


def open_loop_table(entries):
    rows = []
    for entry in entries.values():
        run = entry.get("open_loop")
        if run:
            latency, delivery = run["latency_ms"], run["delivery_ms"]
            bad = sum(n for s, n in run["statuses"].items() if s != "200") + run["unfinished"]
            rows.append([entry["label"], num(run["rate"]), ms(latency["p50"]), ms(latency["p99"]),
                         ms(delivery.get("p50")), ms(delivery.get("p99")), delivery["undelivered"], bad,
                         f"{run['cpu']['server_cores']:.2f}", f"{run['cpu']['foreign_cores']:.2f}"])
    return table(["contender", "offered/s (open loop)", "request p50 ms", "request p99 ms", "delivery p50 ms",
                  "delivery p99 ms", "undelivered", "not 200", "server cores", "foreign cores"], rows)
