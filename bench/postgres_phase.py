"""The postgres phase: diy-wsgi on SQLite, on PostgreSQL with one app instance, and on PostgreSQL
with two app instances sharing one database, in one run, taking turns at saturation (rounds in
rotating order, as the ingest phase does); then each at one offered rate, open loop, for the
delivery latency.

PostgreSQL is a throwaway cluster (tests/postgres.py's PostgresServer with `durable=True`: fsync,
full_page_writes and synchronous_commit on) on 127.0.0.1, its processes pinned to the servers'
CPUs, so that every contender's server-side work (the gunicorn workers with their embedded
dispatchers, and PostgreSQL for the two on it) shares one core budget. Two instances split the
load evenly: one wrk per instance, started together, each with half the connections.
"""
import shutil
import threading
import time
import traceback
from collections import Counter

import contenders
import measure
import payloads
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
ACTIVITY_INTERVAL = 0.2
IDLE_SECONDS = 5.0
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


class Activity(threading.Thread):
    """What diy-wsgi's PostgreSQL sessions are doing, sampled from pg_stat_activity every
    `interval`: how many are running (on a CPU or waiting for one), waiting on what (WAL flush,
    a row lock...), idle inside a transaction (the app's turn) or idle."""

    QUERY = ("SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
             "WHERE datname = %s AND application_name = 'diy-wsgi'")

    def __init__(self, url, database, interval=ACTIVITY_INTERVAL):
        super().__init__(daemon=True)
        self.url, self.database, self.interval = url, database, interval
        self.counts = Counter()
        self.samples = 0
        self.sessions = []
        self.stopping = threading.Event()

    def run(self):
        import psycopg

        with psycopg.connect(self.url, autocommit=True, application_name="diy-bench") as connection:
            while not self.stopping.is_set():
                rows = connection.execute(self.QUERY, (self.database,)).fetchall()
                self.samples += 1
                self.sessions.append(len(rows))
                self.counts.update(classify(*row) for row in rows)
                self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
        self.join()
        samples = max(1, self.samples)
        return {"samples": self.samples, "sessions_max": max(self.sessions, default=0),
                "sessions_mean": sum(self.sessions) / samples,
                "sessions_by_state": {name: count / samples for name, count in self.counts.most_common()}}


def classify(state, wait_type, wait_event):
    if state == "active":
        return "active: on a CPU or waiting for one" if wait_type is None else f"active: {wait_type} {wait_event}"
    if state == "idle in transaction":
        return "idle in transaction (the app's turn)"
    return state or "unknown"


class PostgresPhase:
    def __init__(self, bench):
        self.bench = bench
        self.settings, self.procs, self.driver = bench.settings, bench.procs, bench.driver
        self.server_cpus = self.procs.pinning["server"] if self.procs.pinning else None
        self.server = self.admin = None

    def log(self, message):
        self.bench.log(f"postgres: {message}")

    def run(self):
        from tests.postgres import PostgresServer, unavailable, wait_until_accepting

        reason = unavailable()
        whole = self.bench.results
        results = whole["postgres"] = {"run": {key: whole.get(key) for key in ("command", "started", "workdir",
                                                                                "code")}}
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
        running["sqlite"] = Group("sqlite", [sqlite], measure.Backlog(sqlite.outbox, measure.Backlog.DIY,
                                                                      measure.Backlog.DIY_INSERTED))
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
        for key, group in running.items():
            results["contenders"][key]["idle"] = self.idle(group)
        for number in range(self.settings["rounds"]):
            order = KEYS[number % len(KEYS):] + KEYS[:number % len(KEYS)]
            for key in order:
                run = self.retried(lambda: self.saturation(running[key]), running[key].label)
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
            run = self.retried(lambda: self.open_loop(running[key], rate), running[key].label)
            results["contenders"][key]["open_loop"] = run
            self.log(f"{running[key].label}: {rate:.0f}/s open loop: request p99 {run['latency_ms']['p99']:.1f} ms, "
                     f"delivery p50 {run['delivery_ms'].get('p50', float('nan')):.1f} ms, "
                     f"p99 {run['delivery_ms'].get('p99', float('nan')):.1f} ms")
        for key, group in running.items():
            results["contenders"][key]["rss_mib"] = group.peak_rss()

    def retried(self, measure_once, label):
        """One measurement, made again (settings "retries" times) while other programs used more
        than the bench's noise threshold of CPU during it; the quietest attempt is kept, and
        how many there were is recorded with the others' figures."""
        attempts = []
        for _ in range(1 + self.settings["retries"]):
            attempts.append(measure_once())
            foreign = attempts[-1]["cpu"]["foreign_cores"]
            if foreign <= self.bench.noisy:
                break
            self.log(f"{label}: other programs used {foreign:.2f} cores" +
                     ("; again" if len(attempts) <= self.settings["retries"] else "; keeping the quietest"))
        kept = min(attempts, key=lambda run: run["cpu"]["foreign_cores"])
        kept["attempts"] = len(attempts)
        kept["discarded"] = [{"requests_per_s": run.get("requests_per_s"), "foreign_cores": run["cpu"]["foreign_cores"]}
                             for run in attempts if run is not kept]
        return kept

    def idle(self, group, seconds=IDLE_SECONDS):
        """The server CPU a contender uses with no load at all (its dispatchers waiting, polling,
        heartbeating), and PostgreSQL's commits meanwhile."""
        group.queue.wait_empty(self.settings["drain_wait"])
        time.sleep(1.0)
        counters = self.counters(group)
        before = measure.cpu_snapshot()
        time.sleep(seconds)
        after = measure.cpu_snapshot()
        usage = measure.cpu_usage(before, after, self.server_pids(group), [self.postmaster()])
        usage["groups"] = {"gunicorn": measure.cpu_usage(before, after, group.master_pids)["server_cores"],
                           "postgresql": measure.cpu_usage(before, after, [self.postmaster()])["server_cores"]}
        if counters:
            usage["postgres_per_s"] = self.per_second(counters, self.counters(group))
        return usage

    def server_pids(self, group):
        return group.master_pids + ([self.postmaster()] if group.database else [])

    @staticmethod
    def per_second(before, after):
        before, after = dict(before), dict(after)
        elapsed = after.pop("at") - before.pop("at")
        return {name: (after[name] - before[name]) / elapsed for name in after}

    def counters(self, group):
        """PostgreSQL's cumulative counters: WAL written and flushed (the cluster), commits (the
        contender's database)."""
        if not group.database:
            return None
        wal = self.admin.execute(
            "SELECT wal_records, wal_bytes::float8, wal_write, wal_sync FROM pg_stat_wal").fetchone()
        db = self.admin.execute("SELECT xact_commit, xact_rollback, deadlocks FROM pg_stat_database WHERE datname = %s",
                                (group.database,)).fetchone()
        return dict(zip(("wal_records", "wal_bytes", "wal_writes", "wal_syncs", "commits", "rollbacks", "deadlocks"),
                        (*wal, *db)), at=time.monotonic())

    def saturation(self, group):
        seconds = self.settings["saturation"]
        speed = measure.cpu_speed(self.server_cpus)
        quiet = measure.wait_quiet(self.settings["quiet_wait"])
        sampler = measure.Sampler(group.queue, self.bench.receiver)
        sampler.start()
        activity = Activity(self.server.url(), group.database) if group.database else None
        if activity:
            activity.start()
        before = self.counters(group)
        started = time.monotonic()
        server_pids = self.server_pids(group)
        result, (cpu, connections) = measure.during(
            lambda: self.driver.saturate_many(group.ports, seconds, SATURATION_PHASES[:len(group.ports)]), seconds,
            server_pids, probe=lambda: [self.bench_connections(instance) for instance in group.instances],
            groups={"gunicorn": group.master_pids, "postgresql": [self.postmaster()]},
            started_by_bench=[self.postmaster()])
        ended = time.monotonic()
        after = self.counters(group)
        result.update(cpu=cpu, connections_by_worker=connections, foreign_before=quiet, cpu_probe_ms=speed)
        result["keeping_up"] = measure.keeping_up(sampler.stop(), started, ended)
        result["keeping_up"]["ingested_per_s"] = result["requests_per_s"] * payloads.MUTATIONS
        if activity:
            result["postgres_activity"] = activity.stop()
        if before and after:
            result["postgres_per_s"] = self.per_second(before, after)
        result["drain_s"] = group.queue.wait_empty(self.settings["drain_wait"])
        result["left_after_drain"] = group.queue.pending()
        return result

    def bench_connections(self, instance):
        from phases import connections_by_worker

        return connections_by_worker(instance)

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
        before = self.counters(group)
        parts, cpu = measure.during(lambda: self.driver.open_loop_many(group.ports, rate, seconds, phases), seconds,
                                    self.server_pids(group),
                                    groups={"gunicorn": group.master_pids, "postgresql": [self.postmaster()]},
                                    started_by_bench=[self.postmaster()])
        after = self.counters(group)
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
                "cpu": cpu, "foreign_before": quiet, "cpu_probe_ms": speed,
                "postgres_per_s": self.per_second(before, after) if before and after else None}


def run(bench):
    PostgresPhase(bench).run()
