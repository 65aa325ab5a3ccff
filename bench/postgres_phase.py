"""The postgres phase: diy-wsgi on SQLite, on PostgreSQL with one app instance, and on PostgreSQL
with two app instances sharing one database, in one run, taking turns at saturation (rounds in
rotating order, as the ingest phase does); then each at one offered rate, open loop, for the
delivery latency.

PostgreSQL is a throwaway cluster (reliability/postgres.py's PostgresServer with `durable=True`: fsync,
full_page_writes and synchronous_commit on) on 127.0.0.1, its processes pinned to the servers'
CPUs, so that every contender's server-side work (the gunicorn workers with their embedded
dispatchers, and PostgreSQL for the two on it) shares one core budget. Two instances split the
load evenly: one wrk per instance, started together, each with half the connections.
"""
import shutil
import time
import traceback
from collections import Counter

import contenders
import measure
from env import filesystem_of
from loadgen import summary

KEYS = ("sqlite", "pg_one", "pg_two")
LABELS = {
    "sqlite": ("SQLite, one instance", "diy-wsgi as in the ingest phase: one gunicorn, the outbox an SQLite file "
                                       "(WAL, synchronous=FULL) in the work folder"),
    "pg_one": ("PostgreSQL, one instance", "the same gunicorn and INI but `database = postgresql://...` "
                                           "(its own database on the bench's cluster)"),
    "pg_two": ("PostgreSQL, two instances", "two such gunicorns (each the same workers and threads, each its own "
                                            "INI and metrics folder) on one database, the load split evenly"),
}
WARMUP_PHASE = "a"
SATURATION_PHASES = ("b", "t")
"""wrk's payload pools, one per instance: two instances never add the same users at once."""
OPEN_PHASES = ("v", "y")
OPEN_LOAD = 0.5
"""The open-loop rate, as a share of the slowest contender's median saturation rate: the same
offered rate for all three, one that each can keep up with."""
SETTINGS_SHOWN = ("server_version", "fsync", "full_page_writes", "synchronous_commit", "wal_sync_method",
                  "wal_level", "commit_delay", "shared_buffers", "max_connections")


class Group:
    """A contender made of one or more diy-wsgi instances (gunicorn masters)."""

    def __init__(self, key, instances, queue, database=None):
        self.key = key
        self.label, self.description = LABELS[key]
        self.instances, self.queue, self.database = instances, queue, database

    @property
    def ports(self):
        return [instance.port for instance in self.instances]

    @property
    def master_pids(self):
        return [instance.master.pid for instance in self.instances]

    def peak_rss(self):
        rss = {}
        for number, instance in enumerate(self.instances, 1):
            for name, value in instance.peak_rss().items():
                rss[f"instance {number} {name}" if len(self.instances) > 1 else name] = value
        return rss


class PostgresPhase:
    def __init__(self, bench):
        self.bench = bench
        self.settings, self.procs, self.driver = bench.settings, bench.procs, bench.driver
        self.server_cpus = self.procs.pinning["server"] if self.procs.pinning else None
        self.server = self.admin = None

    def log(self, message):
        self.bench.log(f"postgres: {message}")

    def run(self):
        from reliability.postgres import PostgresServer, unavailable, wait_until_accepting

        reason = unavailable()
        results = self.bench.results["postgres"] = {}
        if reason:
            results["skipped"] = reason
            self.log(f"skipped: {reason}")
            return
        started = time.monotonic()
        running = {}
        try:
            self.server = PostgresServer(durable=True)
            wait_until_accepting(self.server)
            results["server"] = self.describe_server()
            self.log(f"PostgreSQL {results['server']['settings']['server_version']} on 127.0.0.1:{self.server.port}, "
                     f"fsync={results['server']['settings']['fsync']}, pinned to CPU {self.server_cpus}")
            running = self.start_contenders(results)
            self.measure(running, results)
        except Exception:
            results["failed"] = traceback.format_exc()
            self.log("failed:\n" + results["failed"])
        finally:
            for group in running.values():
                for instance in group.instances:
                    contenders.stop(self.procs, instance)
                if group.queue is not None and hasattr(group.queue, "close"):
                    group.queue.close()
            for group in running.values():
                results.setdefault("contenders", {}).setdefault(group.key, {})["log_events"] = {
                    instance.master.name: contenders.log_events(instance.master.log_path)
                    for instance in group.instances}
            if self.admin is not None:
                self.admin.close()
            if self.server is not None:
                shutil.copy(self.server.folder / "server.log", self.bench.workdir / "postgres-server.log")
                self.server.close()
            results["elapsed_s"] = time.monotonic() - started

    def describe_server(self):
        import psycopg

        self.admin = psycopg.connect(self.server.url(), autocommit=True, application_name="diy-bench")
        shown = {name: self.admin.execute(f"SHOW {name}").fetchone()[0] for name in SETTINGS_SHOWN}
        pinned = None
        if self.server_cpus:
            postmaster = int((self.server.data / "postmaster.pid").read_text().split()[0])
            pinned = contenders.pin_tree(postmaster, self.server_cpus)
        mount, device, kind = filesystem_of(self.server.folder)
        return {"settings": shown, "port": self.server.port, "pinned_processes": pinned, "cpus": self.server_cpus,
                "disk": f"{device} ({kind}) mounted at {mount}", "folder": str(self.server.folder)}

    def postmaster(self):
        return int((self.server.data / "postmaster.pid").read_text().split()[0])

    def create_database(self, name):
        self.admin.execute(f"CREATE DATABASE {name}")
        return self.server.url(name)

    def start_contenders(self, results):
        bench = self.bench
        start = dict(python=bench.python, workdir=bench.workdir, receiver_port=bench.receiver.port,
                     workers=bench.workers, threads=bench.threads)
        results["contenders"] = {}
        running = {}
        sqlite = contenders.start_diy(self.procs, name="pg-phase-sqlite", **start)
        running["sqlite"] = Group("sqlite", [sqlite], measure.Backlog(sqlite.outbox, measure.Backlog.DIY))
        url = self.create_database("diy_bench_one")
        one = contenders.start_diy(self.procs, name="pg-phase-one", database=url, **start)
        running["pg_one"] = Group("pg_one", [one], measure.PostgresBacklog(url), database="diy_bench_one")
        url = self.create_database("diy_bench_two")
        two = [contenders.start_diy(self.procs, name=f"pg-phase-two-{letter}", database=url, **start)
               for letter in "ab"]
        running["pg_two"] = Group("pg_two", two, measure.PostgresBacklog(url), database="diy_bench_two")
        for key, group in running.items():
            results["contenders"][key] = {"label": group.label, "description": group.description,
                                          "instances": len(group.instances), "rounds": []}
            self.log(f"{group.label}: started on 127.0.0.1:{', '.join(map(str, group.ports))}")
        # Anything forked since the pinning (a backend per connection) inherited it; pin again anyway.
        if self.server_cpus:
            contenders.pin_tree(self.postmaster(), self.server_cpus)
        return running

    def measure(self, running, results):
        for group in running.values():
            self.driver.saturate_many(group.ports, self.settings["warmup"],
                                      [WARMUP_PHASE] * len(group.ports))
            group.queue.wait_empty(self.settings["drain_wait"])
        for number in range(self.settings["rounds"]):
            order = KEYS[number % len(KEYS):] + KEYS[:number % len(KEYS)]
            for key in order:
                run = self.saturation(running[key])
                results["contenders"][key]["rounds"].append(run)
                k = run["keeping_up"]
                self.log(f"{running[key].label}: round {number + 1}: {run['requests_per_s']:.0f} requests/s, "
                         f"{k['delivered_per_s']:,.0f} mutations/s delivered, "
                         f"backlog {k['backlog_slope_per_s']:+,.0f}/s "
                         f"(other programs: {run['cpu']['foreign_cores']:.2f} cores)")
        from phases import median_run

        for entry in results["contenders"].values():
            entry["saturation"] = median_run(entry["rounds"])
        slowest = min(entry["saturation"]["requests_per_s"] for entry in results["contenders"].values())
        rate = results["open_rate"] = OPEN_LOAD * slowest
        for key in KEYS:
            run = self.open_loop(running[key], rate)
            results["contenders"][key]["open_loop"] = run
            self.log(f"{running[key].label}: {rate:.0f}/s open loop: request p99 {run['latency_ms']['p99']:.1f} ms, "
                     f"delivery p50 {run['delivery_ms'].get('p50', float('nan')):.1f} ms, "
                     f"p99 {run['delivery_ms'].get('p99', float('nan')):.1f} ms")
        for key, group in running.items():
            results["contenders"][key]["rss_mib"] = group.peak_rss()

    def server_pids(self, group):
        return group.master_pids + ([self.postmaster()] if group.database else [])

    def saturation(self, group):
        seconds = self.settings["saturation"]
        speed = measure.cpu_speed(self.server_cpus)
        quiet = measure.wait_quiet(self.settings["quiet_wait"])
        sampler = measure.Sampler(group.queue, self.bench.receiver)
        sampler.start()
        started = time.monotonic()
        result, cpu = measure.during(
            lambda: self.driver.saturate_many(group.ports, seconds, SATURATION_PHASES[:len(group.ports)]), seconds,
            self.server_pids(group), groups={"gunicorn": group.master_pids, "postgresql": [self.postmaster()]},
            started_by_bench=[self.postmaster()])
        ended = time.monotonic()
        result.update(cpu=cpu, foreign_before=quiet, cpu_probe_ms=speed)
        result["keeping_up"] = measure.keeping_up(sampler.stop(), started, ended)
        result["drain_s"] = group.queue.wait_empty(self.settings["drain_wait"])
        return result

    def open_loop(self, group, rate):
        """Every contender at the same offered rate, split evenly over its instances; request
        latency from the intended send time, delivery latency from the 200 to the receiver."""
        seconds = self.settings["open"]
        receiver = self.bench.receiver
        group.queue.wait_empty(self.settings["drain_wait"])
        speed = measure.cpu_speed(self.server_cpus)
        quiet = measure.wait_quiet(self.settings["quiet_wait"])
        receiver.trace()  # forget what earlier runs delivered
        phases = OPEN_PHASES[:len(group.ports)]
        parts, cpu = measure.during(lambda: self.driver.open_loop_many(group.ports, rate, seconds, phases), seconds,
                                    self.server_pids(group),
                                    groups={"gunicorn": group.master_pids, "postgresql": [self.postmaster()]},
                                    started_by_bench=[self.postmaster()])
        drain = group.queue.wait_empty(self.settings["drain_wait"])
        trace = receiver.trace()
        requests, delivered, missing, statuses = [], [], 0, Counter()
        for part, phase in zip(parts, phases):
            for index, done, _status in part["answers"]:
                requests.append((done - (part["start"] + index / part["rate"])) * 1000)
            latencies, undelivered = measure.delivery_latencies(part["answers"], phase, trace)
            delivered += latencies
            missing += undelivered
            statuses.update(part["statuses"])
        expected = sum(part["count"] for part in parts)
        return {"rate": rate, "seconds": seconds, "instances": len(parts), "count": expected,
                "unfinished": sum(part["unfinished"] for part in parts), "statuses": dict(statuses),
                "latency_ms": summary(sorted(requests), expected), "delivery_ms": measure.latency_summary(delivered,
                                                                                                         missing),
                "send_lag_p99_ms": max(part["send_lag_ms"]["p99"] for part in parts), "drain_s": drain,
                "cpu": cpu, "foreign_before": quiet, "cpu_probe_ms": speed}


def run(bench):
    PostgresPhase(bench).run()
