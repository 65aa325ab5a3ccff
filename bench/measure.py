"""The measurements: saturation with wrk, open-loop latency with loadgen.py, the outbox backlog
and the receiver's counts over time, and the delivery latency from the 200 to the platform."""
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import payloads
from env import BENCH

UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


class Driver:
    """Runs the load generators on the client CPUs; writes their raw output to the work folder."""

    def __init__(self, workdir, python, wrk, pinning, connections=16):
        self.workdir = Path(workdir)
        self.python = python
        self.wrk = wrk
        self.pinning = pinning
        self.connections = connections
        self.runs = 0

    def _prefix(self):
        return ["taskset", "-c", self.pinning["client"]] if self.pinning else []

    def pool(self, phase, count=1024):
        path = self.workdir / f"pool-{phase}.txt"
        if not path.exists():
            payloads.write_pool(path, phase, count)
        return path

    def saturate(self, port, seconds, phase):
        """Closed-loop throughput: wrk, one thread, `connections` keep-alive connections."""
        return self.saturate_many([port], seconds, [phase])["parts"][0]

    def saturate_many(self, ports, seconds, phases):
        """Closed-loop throughput against one or more instances at once: one wrk per port, started
        together, each with its share of `connections` and payloads of its own phase (so no two
        send the same users); requests/s and errors summed, each wrk's own result in "parts"."""
        shares = [self.connections // len(ports) + (1 if i < self.connections % len(ports) else 0)
                  for i in range(len(ports))]
        script = self.workdir / "post.lua"
        script.write_text(payloads.WRK_SCRIPT)
        running = []
        for port, phase, connections in zip(ports, phases, shares):
            self.runs += 1
            command = self._prefix() + [self.wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
                                        str(script), f"http://127.0.0.1:{port}{payloads.PATH}"]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       env={**os.environ, "BENCH_POOL": str(self.pool(phase))})
            running.append((self.runs, process))
        parts = []
        for number, process in running:
            out, _ = process.communicate(timeout=seconds + 60)
            (self.workdir / f"wrk-{number}.txt").write_text(out)
            parts.append(parse_wrk(out, seconds))
        return {"requests_per_s": sum(p["requests_per_s"] for p in parts), "non_2xx": sum(p["non_2xx"] for p in parts),
                "socket_errors": sum(p["socket_errors"] for p in parts), "parts": parts, "connections": shares}

    def open_loop(self, port, rate, seconds, phase):
        """One open-loop run of loadgen.py; its raw result."""
        return self.open_loop_many([port], rate, seconds, [phase])[0]

    def open_loop_many(self, ports, rate, seconds, phases, drain_timeout=15):
        """The open-loop run split evenly over one or more instances: one loadgen.py per port at
        rate / len(ports), started together; their raw results, in port order."""
        running = []
        for port, phase in zip(ports, phases):
            self.runs += 1
            out = self.workdir / f"open-{self.runs}.json"
            process = subprocess.Popen(self._prefix() + [
                self.python, BENCH / "loadgen.py", "--port", str(port), "--phase", phase,
                "--rate", f"{rate / len(ports):.3f}", "--duration", str(seconds),
                "--drain-timeout", str(drain_timeout), "--out", str(out)])
            running.append((process, out))
        results = []
        for process, out in running:
            if process.wait() != 0:
                raise RuntimeError("bench: loadgen.py failed; see the work folder")
            results.append(json.loads(out.read_text()))
        return results


def parse_wrk(text, seconds):
    def number(pattern, default=0.0):
        found = re.search(pattern, text)
        return float(found.group(1)) if found else default

    total = number(r"(\d+) requests in")
    elapsed_match = re.search(r"requests in ([\d.]+)(us|ms|s|m)", text)
    elapsed = float(elapsed_match.group(1)) * UNITS[elapsed_match.group(2)] / 1000 if elapsed_match else seconds
    non_2xx = number(r"Non-2xx or 3xx responses: (\d+)")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    latency = {}
    for percent, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M):
        latency[f"p{percent}"] = float(value) * UNITS[unit]
    return {"tool": "wrk", "requests": total, "seconds": elapsed, "requests_per_s": (total - non_2xx) / elapsed,
            "non_2xx": int(non_2xx), "socket_errors": errors, "latency_ms": latency}


class Receiver:
    def __init__(self, port):
        self.port = port

    def _get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as answer:
            return json.loads(answer.read())

    def stats(self):
        return self._get("/api/stats")

    def trace(self):
        return self._get("/api/trace")


class Backlog:
    """A read-only look at a queue's SQLite file: how much waits for delivery."""

    DIY = "SELECT COALESCE(SUM(pending), 0) FROM audiences"
    HUEY = "SELECT COUNT(*) FROM task"

    def __init__(self, path, query):
        self.path, self.query = path, query

    def pending(self):
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        try:
            return connection.execute(self.query).fetchone()[0]
        finally:
            connection.close()

    def wait_empty(self, timeout):
        """Seconds it took to empty, or None if it did not within `timeout`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.pending() == 0:
                return time.monotonic() - started
            time.sleep(0.25)
        return None


class PostgresBacklog:
    """The same look as Backlog, at diy-wsgi's outbox on PostgreSQL: one connection of the
    bench's own (its backend runs on the server's CPUs, like every backend; a few cheap
    queries a second)."""

    PENDING = "SELECT COALESCE(SUM(pending), 0) FROM audiences"

    def __init__(self, url):
        self.url = url
        self.lock = threading.Lock()
        self.connection = None

    def _read(self, query, parameters=None):
        import psycopg

        with self.lock:
            if self.connection is None or self.connection.closed:
                self.connection = psycopg.connect(self.url, autocommit=True, application_name="diy-bench")
            return self.connection.execute(query, parameters).fetchall()

    def pending(self):
        return int(self._read(self.PENDING)[0][0])

    def wait_empty(self, timeout):
        return Backlog.wait_empty(self, timeout)

    def close(self):
        with self.lock:
            if self.connection is not None:
                self.connection.close()
                self.connection = None


class Sampler(threading.Thread):
    """Samples (monotonic time, pending, members the receiver got) every `interval`."""

    def __init__(self, backlog, receiver, interval=0.5):
        super().__init__(daemon=True)
        self.backlog, self.receiver, self.interval = backlog, receiver, interval
        self.samples = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            self.samples.append((time.monotonic(), self.backlog.pending(), self.receiver.stats()["members"]))
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
        self.join()
        return self.samples


def slope(points):
    """Least-squares slope of [(t, y)], per second."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (y - mean_y) for t, y in points) / var if var else 0.0


def keeping_up(samples, started, ended):
    """Backlog growth and delivery rate while the load ran (the first 2 s skipped as ramp-up)."""
    window = [s for s in samples if started + 2 <= s[0] <= ended]
    return {"backlog_slope_per_s": slope([(t, p) for t, p, _ in window]),
            "delivered_per_s": slope([(t, m) for t, _, m in window]),
            "backlog_max": max((p for _, p, _ in window), default=None)}


def delivery_latency(answers, phase, trace):
    """From each request's 200 (client clock) to the platform's receipt of its first member."""
    latencies, missing = delivery_latencies(answers, phase, trace)
    return latency_summary(latencies, missing)


def delivery_latencies(answers, phase, trace):
    """([ms from 200 to receipt] of the delivered requests, how many 200s were never delivered)."""
    arrived = {}
    for when, tag in trace:
        arrived.setdefault(tag, when)
    latencies, missing = [], 0
    for index, done, status in answers:
        if status != 200:
            continue
        tag = payloads.tag(phase, index).decode()
        if tag in arrived:
            latencies.append((arrived[tag] - done) * 1000)
        else:
            missing += 1
    return latencies, missing


def latency_summary(latencies, missing=0):
    latencies = sorted(latencies)
    if not latencies:
        return {"count": 0, "undelivered": missing}

    def at(q):
        return latencies[max(0, math.ceil(q * len(latencies)) - 1)]

    return {"count": len(latencies), "undelivered": missing, "p50": at(0.5), "p90": at(0.9), "p99": at(0.99),
            "max": latencies[-1]}


# Who used the CPUs: the server, the rest of the bench, and anything else on the machine.

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_snapshot():
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    processes = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    rest = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            processes[int(entry)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    return time.monotonic(), busy, processes


def _tree(processes, roots):
    children = {}
    for pid, (ppid, _) in processes.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def cpu_usage(before, after, server_pids, started_by_bench=()):
    """Cores used between two snapshots: by the server processes (and their children), by the
    whole bench (this process's tree, and the trees of `started_by_bench`: daemons it started
    that left its tree, like PostgreSQL's postmaster), and by everything else ("foreign")."""
    elapsed = after[0] - before[0]

    def spent(pids):
        return sum(after[2][p][1] - before[2].get(p, (0, 0))[1] for p in pids if p in after[2]) / TICKS

    server = spent(_tree(after[2], server_pids))
    ours = spent(_tree(after[2], [os.getpid(), *started_by_bench]))
    total = (after[1] - before[1]) / TICKS
    return {"server_cores": server / elapsed, "bench_cores": ours / elapsed,
            "foreign_cores": max(0.0, total - ours) / elapsed}


SPEED_PROBE = ("import time\nbest = 1e9\nfor _ in range(5):\n    t = time.perf_counter()\n"
               "    sum(i * i for i in range(100_000))\n    best = min(best, time.perf_counter() - t)\n"
               "print(best * 1000)")


def cpu_speed(cpus=None):
    """Milliseconds a fixed piece of Python takes on `cpus` now (best of 5): how fast the core
    was around a run, on a machine whose cores are shared with others."""
    prefix = ["taskset", "-c", cpus] if cpus else []
    done = subprocess.run(prefix + [sys.executable, "-c", SPEED_PROBE], capture_output=True, text=True, timeout=60)
    return float(done.stdout) if done.returncode == 0 else None


def wait_quiet(max_wait, threshold=0.15):
    """Wait (up to `max_wait` s) for a second in which other programs use under `threshold` cores."""
    if max_wait <= 0:
        return None
    started = time.monotonic()
    while True:
        before = cpu_snapshot()
        time.sleep(1.0)
        foreign = cpu_usage(before, cpu_snapshot(), [])["foreign_cores"]
        if foreign < threshold or time.monotonic() - started >= max_wait:
            return foreign


def during(run, seconds, server_pids, head=2.0, tail=1.0, groups=None, started_by_bench=()):
    """Run `run()` in a thread and measure CPU use over its middle (skipping head and tail); with
    `groups` ({name: pids}), the usage also says how many cores each group's trees used."""
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", run()), daemon=True)
    thread.start()
    time.sleep(min(head, seconds / 3))
    before = cpu_snapshot()
    time.sleep(max(0.5, seconds - head - tail))
    after = cpu_snapshot()
    thread.join()
    if "result" not in box:
        raise RuntimeError("bench: a load run failed; see the work folder's logs")
    usage = cpu_usage(before, after, server_pids, started_by_bench)
    if groups:
        usage["groups"] = {name: cpu_usage(before, after, pids)["server_cores"] for name, pids in groups.items()}
    return box["result"], usage
