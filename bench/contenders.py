"""Starting and stopping what the bench measures: the contenders, the receiver, the stub.

Every process listens on 127.0.0.1 only, is pinned with taskset (server side on one set of
CPUs, load generator and platform side on the other), logs to the work folder, and is stopped
by its own pid (SIGTERM, then SIGKILL) when its phase ends or the bench exits.
"""
import base64
import os
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import payloads
from env import BENCH, ROOT
from reliability.processes import free_port, wait_until

APPS = BENCH / "apps"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"bench-webhook-signing-key-00000").decode()


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Processes:
    """Every process the bench started, so that each is stopped by its pid, whatever happens."""

    def __init__(self, workdir, pinning):
        self.workdir = Path(workdir)
        self.pinning = pinning
        self.running = []
        self.started = 0

    def start(self, name, command, *, side, env=None, cwd=None):
        self.started += 1
        name = f"{self.started:02d}-{name}"
        log = open(self.workdir / f"{name}.log", "ab")
        prefix = ["taskset", "-c", self.pinning[side]] if self.pinning else []
        process = subprocess.Popen(
            prefix + [str(part) for part in command], cwd=cwd or ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        )
        process.name, process.log_path, process.log_file = name, self.workdir / f"{name}.log", log
        self.running.append(process)
        return process

    def stop(self, process, timeout=30):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.log_file.close()
        if process in self.running:
            self.running.remove(process)

    def stop_all(self):
        for process in list(reversed(self.running)):
            self.stop(process, timeout=10)


def pin_tree(pid, cpus):
    """Pin a running process and all its descendants to `cpus` ("0" or "0,1"); processes it
    forks later inherit the pinning (PostgreSQL's postmaster forks a backend per connection)."""
    import measure

    wanted = {int(c) for c in cpus.split(",")}
    pinned = 0
    for member in measure._tree(measure.cpu_snapshot()[2], [pid]):
        try:
            os.sched_setaffinity(member, wanted)
            pinned += 1
        except OSError:
            pass
    return pinned


def children(pid):
    """Pids of the direct children of `pid` (gunicorn's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return sorted(found)


LOG_EVENTS = {
    "deliveries abandoned (delivery crashed)": "delivery crashed",
    "write lock not had within write_timeout": "locked by another writer",
    "settles retried (database busy)": "settle postponed",
    "answers 503": "status=503",
    "leases lost": "lease lost",
    "retries scheduled": "will retry",
    "tracebacks": "Traceback",
}


def log_events(path):
    """How often the things worth knowing about appear in a process's log."""
    text = Path(path).read_text(errors="replace")
    return {label: text.count(marker) for label, marker in LOG_EVENTS.items()}


def peak_rss_mib(pid):
    """VmHWM, the peak resident set of a live process, in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


@dataclass
class Contender:
    key: str
    label: str
    description: str
    processes: list = field(default_factory=list)
    port: int = 0
    master: object = None
    extra_rss: dict = field(default_factory=dict)
    outbox: Path = None
    huey_db: Path = None

    def worker_pids(self):
        return children(self.master.pid)

    def peak_rss(self):
        """{process label: peak RSS MiB} of the workers (and any helper process) right now."""
        rss = {f"worker {i + 1}": peak_rss_mib(pid) for i, pid in enumerate(self.worker_pids())}
        for label, process in self.extra_rss.items():
            rss[label] = peak_rss_mib(process.pid)
        return rss


def gunicorn_env(port, workers, threads):
    return {"DIY_BIND": f"127.0.0.1:{port}", "DIY_WORKERS": str(workers), "DIY_THREADS": str(threads)}


def diy_config(workdir, receiver_port, embedded=True, name="diy", database=None):
    """diy-wsgi's real configuration: defaults everywhere but the database and the webhook target.
    `database` a postgresql:// URL instead of the SQLite file (each instance then keeps its
    metrics folder beside its INI, as separate VMs would)."""
    folder = Path(workdir) / name
    folder.mkdir(exist_ok=True)
    path = folder / "diy.ini"
    if database:
        (folder / "metrics").mkdir(exist_ok=True)
    path.write_text(
        "[diy]\n"
        + (f"database = {database}\nmetrics_dir = metrics\n" if database else "database = outbox.sqlite3\n")
        + "synchronous = full\n"
        "\n[dispatcher]\n"
        f"embedded = {'yes' if embedded else 'no'}\n"
        "\n[integration:bench]\n"
        "path = /dmp\n"
        f"hmac_secrets = {payloads.DMP_SECRET.decode()}\n"
        "target = webhook\n"
        f"target.url = http://127.0.0.1:{receiver_port}/events\n"
        f"target.secret = {WEBHOOK_SECRET}\n"
    )
    return path


DIY_LABELS = {
    "diy": ("diy-wsgi", "diy_wsgi:app, the project's gunicorn.conf.py, a dispatcher embedded in each worker, "
                        "outbox WAL + synchronous=FULL"),
    "diy_standalone": ("diy-wsgi, standalone dispatcher", "the same gunicorn with `embedded = no`, and one "
                       "`diy-wsgi dispatch` process on the same INI and outbox, on the server's core"),
    "diy_ingest": ("diy-wsgi, request path alone", "the same gunicorn with `embedded = no` and no dispatcher "
                   "running: requests are stored, nothing is delivered"),
}


def start_diy(procs, python, workdir, receiver_port, workers, threads, key="diy", name=None, database=None):
    """diy-wsgi as deployed: `key` "diy" (a dispatcher embedded in each worker), "diy_standalone"
    (`embedded = no` and one `diy-wsgi dispatch` process beside it) or "diy_ingest" (`embedded =
    no` and no dispatcher anywhere: nothing is delivered). `database`: a postgresql:// URL
    instead of the SQLite outbox in the work folder."""
    name = name or key.replace("_", "-")
    config = diy_config(workdir, receiver_port, embedded=key == "diy", name=name, database=database)
    contender = Contender(key, *DIY_LABELS[key])
    contender.port = free_port()
    if key != "diy_ingest" and not database:
        contender.outbox = config.parent / "outbox.sqlite3"
    env = {**gunicorn_env(contender.port, workers, threads), "DIY_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
    contender.master = procs.start(f"{name}-gunicorn", [python, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                                        "diy_wsgi:app"], side="server", env=env, cwd=ROOT)
    contender.processes = [contender.master]
    log = contender.master.log_path
    if key == "diy":
        wait_until(lambda: log.read_text(errors="replace").count("dispatcher started") >= workers, 30, "diy-wsgi workers")
    else:
        wait_until(lambda: port_open(contender.port) and len(contender.worker_pids()) >= workers, 30, "diy-wsgi workers")
    if key == "diy_standalone":
        dispatcher = procs.start(f"{name}-dispatch", [python, "-m", "diy", "dispatch", "--config", config],
                                 side="server", env={"PYTHONPATH": str(ROOT)}, cwd=ROOT)
        wait_until(lambda: "dispatcher started" in dispatcher.log_path.read_text(errors="replace"), 30,
                 "diy-wsgi dispatch")
        contender.processes.append(dispatcher)
        contender.extra_rss["diy-wsgi dispatch"] = dispatcher
    return contender


HUEY_CONSUMER = ("-w", "64", "-k", "thread", "-d", "0.01", "-m", "0.1", "-q")
"""huey_consumer tuned for latency, as a user who reads its docs would: thread workers (each task
waits on the platform), as many as its best delivery rate needed, and polling an empty queue from
every 10 ms backing off to at most 100 ms (defaults 0.1 s up to 10 s), so a task never waits long
for a poll after a quiet spell. Each task is one platform call of 50 ms, so 4 workers deliver at
most 80 requests/s. At saturation against the 50 ms platform (2026-12-03, one round each) -w 4 /
16 / 32 / 64 / 128 delivered 51 / 127 / 167 / 160-223 / 165 requests/s: 64 it is."""


def start_peer(procs, python, workdir, key, module, workers, threads, platform_port, consumer=False):
    labels = {
        "hello": ("hello world", "a WSGI app that reads the body and answers 200 (the ceiling)"),
        "flask_huey": ("Flask + huey", "Flask view, SqliteHuey enqueue (WAL, synchronous as built), `huey_consumer "
                       + " ".join(HUEY_CONSUMER) + "` delivering to the same receiver"),
        "vendor": ("forward in request", "Flask view forwarding to a platform stub as slow as the platform "
                   "(keep-alive per thread), answering with its verdict"),
        "floor": ("durable minimum", "a WSGI function with Flask + huey's checks, one INSERT of the raw body and its "
                  "COMMIT (WAL, synchronous=FULL); nothing validated further, nothing delivered"),
    }
    label, description = labels[key]
    contender = Contender(key, label, description)
    contender.port = free_port()
    env = {**gunicorn_env(contender.port, workers, threads), "PYTHONPATH": str(APPS),
           "BENCH_PLATFORM_URL": f"http://127.0.0.1:{platform_port}/events",
           "BENCH_DMP_SECRET": payloads.DMP_SECRET.decode()}
    if consumer:
        contender.huey_db = Path(workdir) / "huey" / "huey.sqlite3"
        contender.huey_db.parent.mkdir(exist_ok=True)
        env["BENCH_HUEY_DB"] = str(contender.huey_db)
    if key == "floor":
        (Path(workdir) / "floor").mkdir(exist_ok=True)
        env["BENCH_FLOOR_DB"] = str(Path(workdir) / "floor" / "floor.sqlite3")
    contender.master = procs.start(f"{key}-gunicorn", [python, "-m", "gunicorn", "-c", APPS / "gunicorn_peer.conf.py",
                                                       f"{module}:app"], side="server", env=env, cwd=APPS)
    contender.processes = [contender.master]
    if consumer:
        huey_consumer = Path(python).parent / "huey_consumer"
        process = procs.start(f"{key}-consumer", [huey_consumer, f"{module}.huey", *HUEY_CONSUMER],
                              side="server", env=env, cwd=APPS)
        contender.processes.append(process)
        contender.extra_rss["huey consumer"] = process
    wait_until(lambda: port_open(contender.port) and len(contender.worker_pids()) >= workers, 30, f"{label} workers")
    return contender


def start_receiver(procs, python, name, delay_ms=0.0, trace=False):
    """The platform: the sandbox's counting mode, from the checkout (see diy/sandbox/counting.py)."""
    port = free_port()
    command = [python, "-m", "diy", "sandbox", "--counting", "--port", port, "--latency", f"{delay_ms}ms"]
    command += ["--trace", payloads.TRACE_ID.pattern.decode()] if trace else []
    process = procs.start(name, command, side="client", env={"PYTHONPATH": str(ROOT)}, cwd=ROOT)
    wait_until(lambda: port_open(port), 15, name)
    process.port = port
    return process


def stop(procs, contender):
    for process in reversed(contender.processes):
        procs.stop(process)

