"""The bench's phases, in the order run.py calls them: ingest (every contender), dispatch drain,
profile, backlog scale, dead-letter replay, and PostgreSQL beside SQLite (postgres_phase.py).
Each adds its numbers to the shared results dict."""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import backlog
import contenders
import measure
import payloads
import profiling
import replay
from env import BENCH, ROOT

CONTENDERS = ("hello", "diy", "floor", "diy_ingest", "flask_huey", "vendor")
SATURATION_ONLY = ("diy_ingest",)
"""Contenders measured at saturation only: what they show is a ceiling, not a latency."""
CONTROL = "floor"
"""The contender whose open-loop runs are at diy-wsgi's p99-target rate, taking turns with
diy-wsgi's runs there: what the disk allows any durable write at that rate."""
MODULES = {"hello": "hello_app", "flask_huey": "flask_huey_app", "vendor": "vendor_app", "floor": "floor_app"}
DELIVERING = ("diy", "flask_huey")
PROFILED_LOAD = 0.5
"""The traced open-loop run's load, as a share of the traced saturation: the p99 target's."""
PHASES = {"warmup": "a", "saturation": "b", "open": "cde", "retry": "fgh", "profile": "i", "drain": "w",
          "repeat": "jk", "repeat_retry": "lm", "control": "nop", "control_retry": "qrs"}
TARGET_LOAD = 0.5
"""The load of the p99 target: diy-wsgi's run there is repeated (settings "target_runs") and the
target judged on the median run, since one run on this shared machine can catch a slow minute."""


class Bench:
    def __init__(self, results, procs, driver, workdir, settings, workers, threads, noisy):
        self.results, self.procs, self.driver = results, procs, driver
        self.workdir, self.settings = Path(workdir), settings
        self.workers, self.threads, self.noisy = workers, threads, noisy
        self.python = sys.executable

    def log(self, message):
        print(f"bench: {message}", flush=True)

    def start_platforms(self):
        process = contenders.start_receiver(self.procs, self.python, "receiver", trace=True)
        self.receiver = measure.Receiver(process.port)
        self.stub = contenders.start_receiver(self.procs, self.python, "platform-stub", delay_ms=50)

    def start(self, key, **diy_options):
        if key == "diy":
            return contenders.start_diy(self.procs, self.python, self.workdir, self.receiver.port, self.workers,
                                        self.threads, **diy_options)
        if key == "diy_ingest":
            return contenders.start_diy(self.procs, self.python, self.workdir, self.receiver.port, self.workers,
                                        self.threads, name="diy-ingest", embedded=False)
        platform = self.stub.port if key == "vendor" else self.receiver.port
        return contenders.start_peer(self.procs, self.python, self.workdir, key, MODULES[key], self.workers,
                                     self.threads, platform, consumer=key == "flask_huey")

    # Ingest: saturation, then open loop at fixed fractions of it.

    def ingest(self):
        """All the contenders run side by side (idle ones cost nothing); saturation is measured in
        rounds that take turns, so a slow minute on this shared machine hits every contender alike;
        then each gets its open-loop runs at 25/50/75% of its median saturation rate."""
        self.results["ingest"] = ingest = {}
        running = {}
        try:
            for key in CONTENDERS:
                running[key] = contender = self.start(key)
                self.log(f"{contender.label}: started on 127.0.0.1:{contender.port}")
                ingest[key] = {"label": contender.label, "description": contender.description, "rounds": []}
            for key, contender in running.items():
                self.driver.saturate(contender.port, self.settings["warmup"], PHASES["warmup"])
                self.drain(contender)
            for number in range(self.settings["rounds"]):
                order = CONTENDERS[number % len(CONTENDERS):] + CONTENDERS[:number % len(CONTENDERS)]
                for key in order:
                    run = self.saturation(running[key])
                    ingest[key]["rounds"].append(run)
                    self.log(f"{running[key].label}: round {number + 1}: {run['requests_per_s']:.0f} requests/s "
                             f"(other programs: {run['cpu']['foreign_cores']:.2f} cores)")
            for entry in ingest.values():
                entry["saturation"] = median_run(entry["rounds"])
                entry["open_loop"] = []
            for key, contender in running.items():
                if key in SATURATION_ONLY or key == CONTROL:
                    continue
                rate = ingest[key]["saturation"]["requests_per_s"]
                ingest[key]["open_loop"] = [
                    self.open_loop(contender, queue_of(contender), load, rate, (PHASES["open"][index],
                                                                               PHASES["retry"][index]))
                    for index, load in enumerate(self.results["settings"]["loads"])]
                if key == "diy":
                    self.target_load_runs(running, ingest)
            for key, contender in running.items():
                ingest[key]["rss_mib"] = contender.peak_rss()
        finally:
            for contender in running.values():
                contenders.stop(self.procs, contender)
        for key, contender in running.items():
            ingest[key]["log_events"] = {p.name: contenders.log_events(p.log_path) for p in contender.processes}
        if "flask_huey" in ingest:
            self.results["huey_synchronous"] = huey_synchronous(self.workdir)

    def target_load_runs(self, running, ingest):
        """diy-wsgi's repeats at TARGET_LOAD (its first run there was among its loads), taking
        turns with the durable minimum's runs at the same offered rate, so that both meet the
        same minutes of this shared disk."""
        diy, control = running["diy"], running.get(CONTROL)
        rate = ingest["diy"]["saturation"]["requests_per_s"]
        repeats = ingest["diy"]["target_repeats"] = []
        for index in range(self.settings["target_runs"]):
            if control:
                run = self.open_loop(control, None, TARGET_LOAD, rate,
                                     (PHASES["control"][index], PHASES["control_retry"][index]))
                ingest[CONTROL]["open_loop"].append(dict(run, rate_of="diy-wsgi"))
            if index < self.settings["target_runs"] - 1:
                repeats.append(self.open_loop(diy, queue_of(diy), TARGET_LOAD, rate,
                                              (PHASES["repeat"][index], PHASES["repeat_retry"][index])))

    def drain(self, contender):
        queue = queue_of(contender)
        return queue.wait_empty(self.settings["drain_wait"]) if queue else None

    def saturation(self, contender):
        seconds = self.settings["saturation"]
        queue = queue_of(contender)
        speed = measure.cpu_speed(self.procs.pinning["server"] if self.procs.pinning else None)
        quiet = measure.wait_quiet(self.settings["quiet_wait"])
        sampler = measure.Sampler(queue, self.receiver) if queue else None
        if sampler:
            sampler.start()
        started = time.monotonic()
        result, (cpu, connections) = measure.during(
            lambda: self.driver.saturate(contender.port, seconds, PHASES["saturation"]), seconds,
            [p.pid for p in contender.processes], probe=lambda: connections_by_worker(contender))
        ended = time.monotonic()
        result.update(cpu=cpu, connections_by_worker=connections, foreign_before=quiet, cpu_probe_ms=speed)
        if sampler:
            result["keeping_up"] = measure.keeping_up(sampler.stop(), started, ended)
            result["keeping_up"]["ingested_per_s"] = result["requests_per_s"] * payloads.MUTATIONS
            result["drain_s"] = queue.wait_empty(self.settings["drain_wait"])
            result["left_after_drain"] = queue.pending()
        return result

    def open_loop(self, contender, queue, load, saturation_rate, phases):
        """One open-loop run at `load`, its payloads from `phases[0]`; for diy-wsgi run again
        from `phases[1]` if other programs took too much CPU meanwhile."""
        seconds = self.settings["open"]
        rate = load * saturation_rate
        attempts = []
        retries = self.settings["retries"] if contender.key in ("diy", CONTROL) else 0
        for phase in phases[:1 + retries]:
            speed = measure.cpu_speed(self.procs.pinning["server"] if self.procs.pinning else None)
            quiet = measure.wait_quiet(self.settings["quiet_wait"])
            backlog_before = queue.pending() if queue else None
            self.receiver.trace()  # forget what earlier runs delivered
            result, cpu = measure.during(
                lambda: self.driver.open_loop(contender.port, rate, seconds, phase), seconds,
                [p.pid for p in contender.processes])
            answers = result.pop("answers")
            result.update(load=load, cpu=cpu, foreign_before=quiet, backlog_before=backlog_before, cpu_probe_ms=speed)
            if queue:
                result["drain_s"] = queue.wait_empty(self.settings["drain_wait"])
            if contender.key in DELIVERING:
                result["delivery_ms"] = measure.delivery_latency(answers, phase, self.receiver.trace())
            attempts.append(result)
            if cpu["foreign_cores"] <= self.noisy or len(attempts) > retries:
                break
            self.log(f"{contender.label}: other programs used {cpu['foreign_cores']:.2f} cores; {load:.0%} again")
        kept = min(attempts, key=lambda r: r["cpu"]["foreign_cores"])
        kept["attempts"] = len(attempts)
        latency = kept["latency_ms"]
        self.log(f"{contender.label}: {load:.0%} = {rate:.0f}/s open loop: p50 {latency['p50']:.1f} ms, "
                 f"p99 {latency['p99']:.1f} ms, p99.9 {latency['p999']:.1f} ms")
        return kept

    # Dispatch: how fast one dispatcher process drains a backlog.

    def dispatch_drain(self):
        from diy import dmp
        from outbox.db import Database
        from outbox.store import Outbox

        folder = self.workdir / "drain"
        folder.mkdir(exist_ok=True)
        config = contenders.diy_config(folder, self.receiver.port, embedded=False)
        requests = self.settings["drain_mutations"] // payloads.MUTATIONS
        self.log(f"dispatch: storing {requests * payloads.MUTATIONS:,} mutations through Outbox.enqueue")
        database = Database(config.parent / "outbox.sqlite3", synchronous="normal")
        store = Outbox(database)
        for index in range(requests):
            raw = payloads.body(PHASES["drain"], index)
            store.enqueue("bench", "add", dmp.parse_mutations(dmp.decode_body(raw, dmp.ADD_TO_AUDIENCE)),
                          pass_through=False, now=time.time())
        database.close()
        queue = measure.Backlog(config.parent / "outbox.sqlite3", measure.Backlog.DIY)
        total = queue.pending()
        members_before = self.receiver.stats()["members"]
        before = measure.cpu_snapshot()
        started = time.monotonic()
        process = self.procs.start("dispatcher", [self.python, "-m", "diy", "dispatch", "--config", config],
                                   side="server", env={"PYTHONPATH": str(ROOT)})
        samples = [(started, total)]
        while samples[-1][1] > 0 and time.monotonic() - started < 180:
            time.sleep(0.25)
            samples.append((time.monotonic(), queue.pending()))
        after = measure.cpu_snapshot()
        rss = contenders.peak_rss_mib(process.pid)
        self.procs.stop(process)
        events = contenders.log_events(process.log_path)
        finished = samples[-1][0]
        middle = [(t, p) for t, p in samples if 0.1 * total <= p <= 0.9 * total]
        self.results["dispatch"] = {
            "mutations": total,
            "drained": samples[-1][1] == 0,
            "seconds": finished - started,
            "overall_per_s": (total - samples[-1][1]) / (finished - started),
            "steady_per_s": -measure.slope(middle) if len(middle) >= 3 else None,
            "members_received": self.receiver.stats()["members"] - members_before,
            "rss_mib": rss,
            "cpu": measure.cpu_usage(before, after, [process.pid]),
            "log_events": events,
        }
        self.log(f"dispatch: {total:,} mutations in {finished - started:.1f} s")

    # Profile: stage timings alone, then py-spy, lock timers and CPU clocks under saturated load.

    def profile(self):
        self.log("profile: stage timings in one process")
        out = self.workdir / "micro.json"
        prefix = ["taskset", "-c", self.procs.pinning["server"]] if self.procs.pinning else []
        speed = measure.cpu_speed(self.procs.pinning["server"] if self.procs.pinning else None)
        subprocess.run(prefix + [self.python, str(BENCH / "profiling.py"), "micro", "--workdir",
                                 str(self.workdir / "micro"), "--receiver-port", str(self.receiver.port),
                                 "--out", str(out)], check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        self.results["profile"] = {"micro": json.loads(out.read_text()), "micro_cpu_probe_ms": speed}
        self.log("profile: py-spy, lock timers and CPU clocks under saturated load")
        self.results["profile"]["under_load"] = self.profile_under_load()

    def profile_under_load(self):
        """diy-wsgi with bench/apps/diy_traced.py's timers: a saturation run with py-spy attached,
        then an open-loop run at PROFILED_LOAD of the rate it reached."""
        trace_dir = self.workdir / "lock-timers"
        trace_dir.mkdir(exist_ok=True)
        contender = self.start("diy", app="diy_traced:app", name="diy-traced",
                               extra_env={"PYTHONPATH": f"{ROOT}:{BENCH / 'apps'}", "BENCH_TRACE_DIR": str(trace_dir)})
        try:
            entry = self.traced_saturation(contender, trace_dir)
            self.log(f"profile: {entry['wrk']['requests_per_s']:.0f} requests/s")
            entry["open_loop"] = self.traced_open_loop(contender, PROFILED_LOAD * entry["wrk"]["requests_per_s"],
                                                       trace_dir)
        finally:
            contenders.stop(self.procs, contender)
        entry["log_events"] = contenders.log_events(contender.master.log_path)
        return entry

    def traced_saturation(self, contender, trace_dir):
        seconds = self.settings["profile"]
        raw = self.workdir / "py-spy.txt"
        self.driver.saturate(contender.port, self.settings["warmup"], PHASES["warmup"])
        queue = queue_of(contender)
        queue.wait_empty(self.settings["drain_wait"])
        sampler = measure.Sampler(queue, self.receiver)
        sampler.start()
        box = {}
        load = threading.Thread(target=lambda: box.setdefault(
            "wrk", self.driver.saturate(contender.port, seconds + 6, PHASES["saturation"])))
        started = time.monotonic()
        load.start()
        time.sleep(3)
        since, before = time.time(), measure.cpu_snapshot()
        prefix = ["taskset", "-c", self.procs.pinning["client"]] if self.procs.pinning else []
        spy = subprocess.run(
            prefix + [str(Path(self.python).parent / "py-spy"), "record", "--pid", str(contender.master.pid),
                      "--subprocesses", "--idle", "--nonblocking", "--rate", "100", "--format", "raw",
                      "--duration", str(seconds), "-o", str(raw)], capture_output=True, text=True)
        until, after = time.time(), measure.cpu_snapshot()
        load.join()
        keeping = measure.keeping_up(sampler.stop(), started, time.monotonic())
        time.sleep(1.5)  # the workers write their timers every second
        entry = {"wrk": box.get("wrk"), "keeping_up": keeping,
                 "cpu": measure.cpu_usage(before, after, [contender.master.pid]),
                 "lock_timers": profiling.lock_timers(trace_dir, since, until)}
        keeping["ingested_per_s"] = entry["wrk"]["requests_per_s"] * payloads.MUTATIONS
        if spy.returncode == 0 and raw.exists():
            entry["py_spy"] = profiling.categorise(raw)
        else:
            entry["py_spy_error"] = (spy.stderr or spy.stdout)[-500:]
        return entry

    def traced_open_loop(self, contender, rate, trace_dir):
        """The open-loop run, with the lock timers of its window and the disk probed on its own."""
        queue = queue_of(contender)
        queue.wait_empty(self.settings["drain_wait"])
        self.receiver.trace()  # forget what earlier runs delivered
        probe = measure.FsyncProbe(self.workdir)
        probe.start()
        since = time.time()
        run = self.driver.open_loop(contender.port, rate, self.settings["profile_open"], PHASES["profile"])
        until = time.time()
        run["disk_fsync_ms"] = probe.stop()
        queue.wait_empty(self.settings["drain_wait"])
        time.sleep(1.5)  # the workers write their timers every second
        run["lock_timers"] = profiling.lock_timers(trace_dir, since, until)
        run["load"] = PROFILED_LOAD
        run["delivery_ms"] = measure.delivery_latency(run.pop("answers"), PHASES["profile"], self.receiver.trace())
        latency = run["latency_ms"]
        self.log(f"profile: at {rate:.0f}/s p99 {latency['p99']:.1f} ms, p99.9 {latency['p999']:.1f} ms")
        return run

    # Backlog scale.

    def backlog(self):
        folder = self.workdir / "backlog"
        folder.mkdir(exist_ok=True)
        self.results["backlog"] = backlog.measure(folder, self.settings["backlog_sizes"],
                                                  self.settings["backlog_rounds"])

    # PostgreSQL: one and two app instances beside SQLite, taking turns.

    def postgres(self):
        import postgres_phase

        postgres_phase.run(self)

    # Dead-letter replay, an operator's command beside the live service.

    def replay(self):
        dead, later = self.settings["replay_requests"]
        self.log(f"replay: {dead * payloads.MUTATIONS:,} dead letters, then {later * payloads.MUTATIONS:,} mutations "
                 "delivered after them")
        self.results["replay"] = replay.run(self.workdir / "replay", dead, later)
        self.log(f"replay: {self.results['replay']['replay_s']:.1f} s")


def median_run(runs):
    """The round with the median throughput, carrying every round's throughput beside it."""
    ordered = sorted(runs, key=lambda r: r["requests_per_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds"] = [{"requests_per_s": r["requests_per_s"], "foreign_cores": r["cpu"]["foreign_cores"],
                         "cpu_probe_ms": r["cpu_probe_ms"]} for r in runs]
    return chosen


def connections_by_worker(contender):
    """How many established client connections each gunicorn worker holds (from `ss`)."""
    try:
        out = subprocess.run(["ss", "-tnpH", "state", "established", f"sport = :{contender.port}"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted((out.count(f"pid={pid},") for pid in contender.worker_pids()), reverse=True)


def queue_of(contender):
    if contender.outbox:
        return measure.Backlog(contender.outbox, measure.Backlog.DIY, measure.Backlog.DIY_INSERTED)
    if contender.huey_db:
        return measure.Backlog(contender.huey_db, measure.Backlog.HUEY)
    return None


def huey_synchronous(workdir):
    """The synchronous level SqliteHuey's own connection runs with, read from huey itself."""
    sys.path.insert(0, str(BENCH / "apps"))
    from huey import SqliteHuey

    huey = SqliteHuey("probe", filename=str(Path(workdir) / "huey-probe.sqlite3"))
    return huey.storage.conn.execute("PRAGMA synchronous").fetchone()[0]
