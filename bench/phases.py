"""The bench's phases, in the order run.py calls them: ingest (every contender at saturation, open
loop at fixed loads, then each one's sustainable rate found by stepping), dispatch drain, backlog
scale, dead-letter replay, and PostgreSQL beside SQLite (postgres_phase.py). Each adds its numbers
to the shared results dict."""
import math
import sys
import time
from pathlib import Path

import backlog
import contenders
import measure
import payloads
import replay
from env import BENCH, ROOT

CONTENDERS = ("hello", "diy", "diy_standalone", "floor", "diy_ingest", "flask_huey", "vendor")
DIY = ("diy", "diy_standalone", "diy_ingest")
OPEN_LOADS = {"diy": (0.25, 0.50, 0.75), "diy_standalone": (0.50, 0.75), "flask_huey": (0.50, 0.75)}
"""The open-loop runs at fixed shares of each contender's own saturation; the others need none."""
CONTROL = "floor"
"""The durable minimum: its open-loop runs are at diy-wsgi's TARGET_LOAD rate, taking turns with
diy-wsgi's runs there: what the disk allows any durable write at that rate."""
TARGET_LOAD, HEAVY_LOAD = 0.5, 0.75
"""diy-wsgi's runs at these loads are repeated (settings "target_runs") and judged on the median
run, so that one stall of the shared machine does not decide a p99 target."""
MODULES = {"hello": "hello_app", "flask_huey": "flask_huey_app", "vendor": "vendor_app", "floor": "floor_app"}
DELIVERING = ("diy", "diy_standalone", "flask_huey")
PHASES = {"warmup": "a", "saturation": "b", "open": "cde", "drain": "w", "repeat": "jk", "heavy": "fg", "control": "nop",
          "steps": "xz"}
"""Payload pools by use: each letter makes a run's users distinct (payloads.tag)."""
SUSTAINABLE = {"request_p99_ms": 250.0, "delivery_p99_ms": 1000.0}
"""What a rate must keep to be sustainable: request p99 and delivery p99 under these, only 200s."""
FIRST_STEP, GROWTH = 0.7, 1.25
"""The stepping starts at FIRST_STEP x saturation and goes up by GROWTH until a step fails."""


class Bench:
    def __init__(self, results, procs, driver, workdir, settings, workers, threads):
        self.results, self.procs, self.driver = results, procs, driver
        self.workdir, self.settings = Path(workdir), settings
        self.workers, self.threads = workers, threads
        self.python = sys.executable

    def log(self, message):
        print(f"bench: {message}", flush=True)

    def start_platforms(self):
        """The platform every delivering contender calls (its counts and trace are the measure of
        delivery), and a stub with the same latency for the contender forwarding inside requests."""
        latency = self.settings["platform_latency_ms"]
        process = contenders.start_receiver(self.procs, self.python, "receiver", delay_ms=latency, trace=True)
        self.receiver = measure.Receiver(process.port)
        self.stub = contenders.start_receiver(self.procs, self.python, "platform-stub", delay_ms=latency)

    def start(self, key):
        if key in DIY:
            return contenders.start_diy(self.procs, self.python, self.workdir, self.receiver.port, self.workers,
                                        self.threads, key=key)
        platform = self.stub.port if key == "vendor" else self.receiver.port
        return contenders.start_peer(self.procs, self.python, self.workdir, key, MODULES[key], self.workers,
                                     self.threads, platform, consumer=key == "flask_huey")

    # Ingest: saturation, open loop at fixed loads, sustainable rate.

    def ingest(self):
        """All the contenders run side by side (idle ones cost nothing); saturation is measured in
        rounds that take turns, so a slow minute on this shared machine hits every contender alike;
        then the open-loop runs, then each contender's sustainable rate."""
        self.results["ingest"] = ingest = {}
        running = {}
        try:
            for key in CONTENDERS:
                running[key] = contender = self.start(key)
                self.log(f"{contender.label}: started on 127.0.0.1:{contender.port}")
                ingest[key] = {"label": contender.label, "description": contender.description, "rounds": []}
            for contender in running.values():
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
            for key, loads in OPEN_LOADS.items():
                rate = ingest[key]["saturation"]["requests_per_s"]
                for index, load in enumerate(loads):
                    ingest[key]["open_loop"].append(self.open_loop(running[key], load, rate, PHASES["open"][index]))
                if key == "diy":
                    self.target_load_runs(running, ingest)
            self.sustainable(running, ingest)
            for key, contender in running.items():
                ingest[key]["rss_mib"] = contender.peak_rss()
        finally:
            for contender in running.values():
                contenders.stop(self.procs, contender)
        for key, contender in running.items():
            ingest[key]["log_events"] = {p.name: contenders.log_events(p.log_path) for p in contender.processes}
        self.results["huey_synchronous"] = huey_synchronous(self.workdir)

    def target_load_runs(self, running, ingest):
        """diy-wsgi's repeats at TARGET_LOAD and HEAVY_LOAD (its first runs there were among its
        loads), taking turns with the durable minimum's runs at diy-wsgi's TARGET_LOAD rate."""
        rate = ingest["diy"]["saturation"]["requests_per_s"]
        repeats = ingest["diy"]["target_repeats"] = []
        for index in range(self.settings["target_runs"]):
            run = self.open_loop(running[CONTROL], TARGET_LOAD, rate, PHASES["control"][index])
            ingest[CONTROL]["open_loop"].append(dict(run, rate_of="diy-wsgi"))
            if index < self.settings["target_runs"] - 1:
                repeats.append(self.open_loop(running["diy"], TARGET_LOAD, rate, PHASES["repeat"][index]))
                repeats.append(self.open_loop(running["diy"], HEAVY_LOAD, rate, PHASES["heavy"][index]))

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
        result, cpu = measure.during(lambda: self.driver.saturate(contender.port, seconds, PHASES["saturation"]),
                                     seconds, [p.pid for p in contender.processes])
        ended = time.monotonic()
        result.update(cpu=cpu, foreign_before=quiet, cpu_probe_ms=speed)
        if sampler:
            result["keeping_up"] = measure.keeping_up(sampler.stop(), started, ended)
            result["keeping_up"]["ingested_per_s"] = result["requests_per_s"] * payloads.MUTATIONS
            result["drain_s"] = queue.wait_empty(self.settings["drain_wait"])
            result["left_after_drain"] = queue.pending()
        return result

    def measured_run(self, contender, rate, seconds, phase):
        """One open-loop run at `rate` after the backlog drained: request latency from the
        intended send times, CPU from /proc, and for the delivering contenders the delivery
        latency of every 200 (those not delivered within the drain window after it counted)."""
        queue = queue_of(contender)
        if queue:
            queue.wait_empty(self.settings["drain_wait"])
        speed = measure.cpu_speed(self.procs.pinning["server"] if self.procs.pinning else None)
        quiet = measure.wait_quiet(self.settings["quiet_wait"])
        self.receiver.trace()  # forget what earlier runs delivered
        result, cpu = measure.during(lambda: self.driver.open_loop(contender.port, rate, seconds, phase), seconds,
                                     [p.pid for p in contender.processes])
        answers = result.pop("answers")
        result.update(cpu=cpu, foreign_before=quiet, cpu_probe_ms=speed)
        if queue:
            result["drain_s"] = queue.wait_empty(self.settings["delivery_window"])
            time.sleep(0.5)  # huey deletes a task when it starts it: let the last calls land
        if contender.key in DELIVERING:
            result["delivery_ms"] = measure.delivery_latency(answers, phase, self.receiver.trace())
        return result

    def open_loop(self, contender, load, saturation_rate, phase):
        run = dict(self.measured_run(contender, load * saturation_rate, self.settings["open"], phase), load=load)
        self.log(f"{contender.label}: {load:.0%} = {run['rate']:.0f}/s open loop: p50 {run['latency_ms']['p50']:.1f} "
                 f"ms, p99 {run['latency_ms']['p99']:.1f} ms")
        return run

    def sustainable(self, running, ingest):
        """Each contender's highest open-loop rate that keeps SUSTAINABLE (a RateSearch from its
        saturation rate), in settings "steps" runs of settings "step" seconds, each after the
        previous one's backlog drained. The contenders take turns step by step, in rotating
        order, so a slow spell of this shared machine falls on every contender's search alike
        rather than on one contender's whole search."""
        searches = {key: RateSearch(ingest[key]["saturation"]["requests_per_s"]) for key in CONTENDERS}
        for number in range(self.settings["steps"]):
            phase = PHASES["steps"][number % len(PHASES["steps"])]
            for key in CONTENDERS[number % len(CONTENDERS):] + CONTENDERS[:number % len(CONTENDERS)]:
                contender, search = running[key], searches[key]
                run = self.measured_run(contender, search.rate, self.settings["step"], phase)
                step = search.record(run)
                late = step["delivery_p99_ms"]
                self.log(f"{contender.label}: step {number + 1} at {step['rate']:.0f}/s: request p99 "
                         f"{step['request_p99_ms']:.1f} ms" + (f", delivery p99 {late:.1f} ms" if late is not None else "")
                         + f": {step['verdict']}" + (" (run again before it is believed)" if "again" in step else ""))
        for key, search in searches.items():
            ingest[key]["sustainable"] = {"rate": search.low, "steps": search.steps}

    # Dispatch: how fast one dispatcher process drains a backlog.

    def dispatch_drain(self):
        from diy import dmp
        from outbox.db import Database
        from outbox.store import Outbox

        folder = self.workdir / "drain"
        folder.mkdir(exist_ok=True)
        config = contenders.diy_config(folder, self.receiver.port, embedded=False)
        requests = self.settings["drain_mutations"] // payloads.MUTATIONS
        self.log(f"dispatch: storing {requests * payloads.MUTATIONS:,} mutations through Outbox.enqueue_members")
        database = Database(config.parent / "outbox.sqlite3", synchronous="normal")
        store = Outbox(database)
        for index in range(requests):
            raw = payloads.body(PHASES["drain"], index)
            store.enqueue_members("bench", "add", dmp.parse_mutations(dmp.decode_body(raw, dmp.ADD_TO_AUDIENCE)),
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
        finished = samples[-1][0]
        middle = [(t, p) for t, p in samples if 0.1 * total <= p <= 0.9 * total]
        self.results["dispatch"] = {
            "mutations": total, "drained": samples[-1][1] == 0, "seconds": finished - started,
            "overall_per_s": (total - samples[-1][1]) / (finished - started),
            "steady_per_s": -measure.slope(middle) if len(middle) >= 3 else None,
            "members_received": self.receiver.stats()["members"] - members_before, "rss_mib": rss,
            "cpu": measure.cpu_usage(before, after, [process.pid]),
            "log_events": contenders.log_events(process.log_path),
        }
        self.log(f"dispatch: {total:,} mutations in {finished - started:.1f} s")

    def backlog(self):
        folder = self.workdir / "backlog"
        folder.mkdir(exist_ok=True)
        self.results["backlog"] = backlog.measure(folder, self.settings["backlog_sizes"],
                                                  self.settings["backlog_rounds"])

    def postgres(self):
        import postgres_phase

        postgres_phase.run(self)

    def replay(self):
        dead, later = self.settings["replay_requests"]
        self.log(f"replay: {dead * payloads.MUTATIONS:,} dead letters behind {later * payloads.MUTATIONS:,} later "
                 "mutations")
        self.results["replay"] = replay.run(self.workdir / "replay", dead, later)
        self.log(f"replay: {self.results['replay']['replay_s']:.1f} s")


class RateSearch:
    """From FIRST_STEP x the saturation rate up by GROWTH until a step fails, then a bisection
    between the last rate that held (`low`) and the first that did not.

    A rate that fails is run once more before it is believed: one stall of the shared machine
    (a 200 ms pause inside an 8 s step is enough to break a p99) otherwise halves a search's
    range for good. The second run decides."""

    def __init__(self, saturation_rate):
        self.rate = FIRST_STEP * saturation_rate
        self.low, self.high = 0.0, None
        self.steps = []
        self._doubted = None

    def record(self, run):
        """The step just run at `rate`; moves `rate` on to the next one."""
        verdict = step_verdict(run)
        step = {"rate": self.rate, "verdict": verdict, "request_p99_ms": run["latency_ms"]["p99"],
                "delivery_p99_ms": delivery_p99(run.get("delivery_ms")),
                "delivery_p50_ms": (run.get("delivery_ms") or {}).get("p50"),
                "not_200": run["count"] - run["statuses"].get("200", 0),
                "send_lag_p99_ms": run["send_lag_ms"].get("p99"), "server_cores": run["cpu"]["server_cores"],
                "foreign_cores": run["cpu"]["foreign_cores"]}
        self.steps.append(step)
        if verdict != "ok" and self._doubted != self.rate:
            self._doubted = step["again"] = self.rate
            return step
        if verdict == "ok":
            self.low = self.rate
        else:
            self.high = self.rate
        self.rate = self.low * GROWTH if self.high is None else (self.low + self.high) / 2
        return step


def delivery_p99(delivery):
    """The delivery p99 in ms, the 200s never delivered counted as slower than any; None if none was due."""
    if not delivery:
        return None
    total = delivery["count"] + delivery["undelivered"]
    if delivery["undelivered"] > total - math.ceil(0.99 * total):
        return math.inf
    return delivery["p99"]


def step_verdict(run):
    """"ok", or what broke SUSTAINABLE in this run."""
    broken = []
    if run["latency_ms"]["p99"] >= SUSTAINABLE["request_p99_ms"]:
        broken.append("request p99")
    if run["count"] != run["statuses"].get("200", 0):
        broken.append("not 200")
    late = delivery_p99(run.get("delivery_ms"))
    if late is not None and late >= SUSTAINABLE["delivery_p99_ms"]:
        broken.append("delivery p99")
    return ", ".join(broken) or "ok"


def median_run(runs):
    """The round with the median throughput, carrying every round's throughput beside it."""
    ordered = sorted(runs, key=lambda r: r["requests_per_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["rounds"] = [{"requests_per_s": r["requests_per_s"], "foreign_cores": r["cpu"]["foreign_cores"],
                         "cpu_probe_ms": r["cpu_probe_ms"]} for r in runs]
    return chosen


def queue_of(contender):
    if contender.outbox:
        return measure.Backlog(contender.outbox, measure.Backlog.DIY)
    if contender.huey_db:
        return measure.Backlog(contender.huey_db, measure.Backlog.HUEY)
    return None


def huey_synchronous(workdir):
    """The synchronous level SqliteHuey's own connection runs with, read from huey itself."""
    sys.path.insert(0, str(BENCH / "apps"))
    from huey import SqliteHuey

    huey = SqliteHuey("probe", filename=str(Path(workdir) / "huey-probe.sqlite3"))
    return huey.storage.conn.execute("PRAGMA synchronous").fetchone()[0]
