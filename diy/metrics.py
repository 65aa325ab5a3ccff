"""Prometheus metrics written by hand: counters and histograms per process, merged across processes.

Each process (gunicorn worker, `diy-wsgi dispatch`) keeps its counts in memory and writes them,
at most once a second, to its own file in a shared folder; a scrape in any process merges every
file, so `/metrics` shows the whole service, not one worker's view. Files of processes that
have exited are folded into `retired.json` so their counts survive and never go backwards.
Gauges (outbox depth, ages, file sizes) are read from the database at scrape time; the few that
are a process's own state (`set`: an account whose credentials the platform refuses) are kept
only while their process lives and merged by their largest value, like prometheus_client's
multiprocess gauges in `livemax` mode. Files are 0600 in a 0700 folder (outbox/files.py).
"""
import fcntl
import json
import logging
import os
import re
import secrets
import threading
import time

from diy import dmp
from outbox.dispatcher import CREDENTIALS_GAUGE, DELIVERY_BUCKETS
from outbox.files import make_private_folder, open_private

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 3.0, 5.0, 10.0)
"""Seconds; dense below the DMP's targets (1 s for mutations, 3 s for creation)."""

HELP = {
    "diy_requests_total": ("counter", "Requests answered, by integration, HTTP method, DMP request type and status."),
    "diy_request_duration_seconds": ("histogram", "Time to answer a request, by HTTP method and DMP request type."),
    "diy_deliveries_total": ("counter", "Platform calls and their outcome, by integration and result."),
    "diy_delivered_mutations_total": ("counter", "Mutations settled by the dispatcher, by integration and result."),
    "diy_delivery_call_seconds": ("histogram", "Duration of one platform call, by integration."),
    "diy_delivery_latency_seconds": ("histogram", "From the 200 to the DMP until the platform accepted, by integration."),
    CREDENTIALS_GAUGE: ("gauge", "1 while the platform refuses an account's credentials and its work is held."),
}
API_DEPRECATION_NOTICES = "diy_api_deprecation_notices_total"
API_DEPRECATED_GAUGE = "diy_api_deprecated"
HELP[API_DEPRECATION_NOTICES] = ("counter", "Platform answers saying the API version in use is deprecated.")
HELP[API_DEPRECATED_GAUGE] = ("gauge", "1 while a platform announces the end (sunset) of the API version in use.")
METHODS = ("GET", "HEAD", "POST")
WRITES = (dmp.CREATE_AUDIENCE, dmp.ADD_TO_AUDIENCE, dmp.REMOVE_FROM_AUDIENCE)
DMP_REQUESTS = (("GET", "none"), ("GET", dmp.VALIDATE), ("POST", dmp.VALIDATE)) + tuple(("POST", kind) for kind in WRITES)
"""(method, type) of what the DMP sends: their series exist from the start."""
DELIVERY_RESULTS = ("delivered", "partial", "retry", "dead", "created", "refused", "held", "unauthorized")
MUTATION_RESULTS = ("delivered", "dead")
FILE = re.compile(r"(\d+)\.[0-9a-f]+\.json")
log = logging.getLogger("diy.metrics")


class Metrics:
    def __init__(self, directory, *, flush_interval=1.0, clock=time.monotonic):
        self.directory = str(directory)
        self.flush_interval = flush_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._counters = {}
        self._histograms = {}
        self._gauges = {}
        self._file = None
        self._pid = None
        self._flushed_at = 0.0
        self._dirty = False
        self._timer = None

    def count(self, name, labels, value=1):
        key = (name, tuple(labels))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + value
            self._dirty = True
        self._maybe_flush()

    def observe(self, name, labels, seconds, buckets=LATENCY_BUCKETS, count=1):
        """Record `count` observations of `seconds` (a batch of mutations that waited as long)."""
        key = (name, tuple(labels))
        with self._lock:
            histogram = self._histograms.get(key)
            if histogram is None:
                histogram = self._histograms[key] = {"buckets": list(buckets), "counts": [0] * len(buckets), "sum": 0.0, "count": 0}
            for index, bound in enumerate(histogram["buckets"]):
                if seconds <= bound:
                    histogram["counts"][index] += count
            histogram["sum"] += seconds * count
            histogram["count"] += count
            self._dirty = True
        self._maybe_flush()

    def set(self, name, labels, value):
        """A gauge of this process's own state, shown while the process lives."""
        with self._lock:
            self._gauges[(name, tuple(labels))] = value
            self._dirty = True
        self._maybe_flush()

    def _maybe_flush(self):
        """Flush now if the last flush is old enough, else soon: an idle process must not
        keep its last counts to itself."""
        wait = self.flush_interval - (self.clock() - self._flushed_at)
        if wait <= 0:
            self.flush()
            return
        with self._lock:
            if self._timer is None or not self._timer.is_alive() or self._pid != os.getpid():
                self._timer = threading.Timer(wait, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self):
        """Write this process's counts to its own file (atomically, by rename).

        Never raises: metrics are not worth a failed request (a full disk, a read-only folder);
        the failure is logged and the counts stay in memory for the next flush.
        """
        try:
            self._flush()
        except OSError as error:
            with self._lock:
                self._dirty = True
            log.warning("metrics not written directory=%s reason=%r", self.directory, error.strerror or str(error))

    def _flush(self):
        with self._lock:
            if not self._dirty and self._pid == os.getpid():
                return
            if self._pid != os.getpid():
                if self._pid is not None:
                    self._counters, self._histograms, self._gauges = {}, {}, {}
                self._pid = os.getpid()
                self._file = os.path.join(self.directory, f"{self._pid}.{secrets.token_hex(4)}.json")
                make_private_folder(self.directory)
                self._retire_dead_processes()
            snapshot = self._snapshot()
            self._dirty = False
            self._flushed_at = self.clock()
        write_atomically(self._file, snapshot)

    def _snapshot(self):
        return {
            "counters": [[name, list(map(list, labels)), value] for (name, labels), value in self._counters.items()],
            "histograms": [[name, list(map(list, labels)), h] for (name, labels), h in self._histograms.items()],
            "gauges": [[name, list(map(list, labels)), value] for (name, labels), value in self._gauges.items()],
        }

    def _retire_dead_processes(self):
        """Fold the files of exited processes into retired.json, under a lock shared by all."""
        with os.fdopen(open_private(os.path.join(self.directory, "lock"), os.O_WRONLY | os.O_APPEND), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            retired_path = os.path.join(self.directory, "retired.json")
            retired = read_json(retired_path) or {"counters": [], "histograms": []}
            gone = []
            for name in os.listdir(self.directory):
                match = FILE.fullmatch(name)
                if match and not alive(int(match.group(1))):
                    gone.append(os.path.join(self.directory, name))
            if not gone:
                return
            merged = merge([retired] + [read_json(path) or {} for path in gone], live=False)
            write_atomically(retired_path, merged)
            for path in gone:
                os.unlink(path)

    def collect(self):
        """Every process's counts merged: this one's current state plus every file."""
        self.flush()
        return read_all(self.directory)


def request_labels(request_type, method):
    """A request's `method` and `type` labels, from bounded sets: an unknown method is "other";
    `type` is the DMP's request type, "none" without ?type=, "unknown" for any other value."""
    if request_type is None:
        kind = "none"
    else:
        kind = request_type if request_type in dmp.REQUEST_TYPES else "unknown"
    return (("method", method if method in METHODS else "other"), ("type", kind))


def zeros(accounts):
    """Every series a configured service is known to have, at 0, in merge()'s form: merged with
    the counts, a series exists from the first scrape, so its first increase shows in rate() and
    increase() (Prometheus's "avoid missing metrics"). `accounts` maps each integration to its
    accounts' labels. Requests: the DMP's own, answered 200, and 503 for those that write."""
    counters, histograms, gauges = [], [], []

    def histogram(buckets):
        return {"buckets": list(buckets), "counts": [0] * len(buckets), "sum": 0.0, "count": 0}

    for method, kind in DMP_REQUESTS:
        histograms.append(["diy_request_duration_seconds", [["method", method], ["type", kind]], histogram(LATENCY_BUCKETS)])
    for integration, labels in accounts.items():
        for method, kind in DMP_REQUESTS:
            for status in ("200", "503") if kind in WRITES else ("200",):
                counters.append(["diy_requests_total", [["integration", integration], ["method", method],
                                                        ["type", kind], ["status", status]], 0])
        counters += [["diy_deliveries_total", [["integration", integration], ["result", result]], 0]
                     for result in DELIVERY_RESULTS]
        counters += [["diy_delivered_mutations_total", [["integration", integration], ["result", result]], 0]
                     for result in MUTATION_RESULTS]
        histograms += [[name, [["integration", integration]], histogram(DELIVERY_BUCKETS)]
                       for name in ("diy_delivery_call_seconds", "diy_delivery_latency_seconds")]
        gauges += [[CREDENTIALS_GAUGE, [["integration", integration], ["account", label]], 0] for label in labels]
    return {"counters": counters, "histograms": histograms, "gauges": gauges}


def read_all(directory):
    """The merged counts and live gauges of every process's file in `directory`, read only
    (`diy-wsgi status` reads them without writing a file of its own); empty when there is none."""
    documents = []
    try:
        names = os.listdir(directory)
    except OSError:
        names = []
    for name in names:
        match = FILE.fullmatch(name)
        if match or name == "retired.json":
            document = read_json(os.path.join(directory, name)) or {}
            if not (match and alive(int(match.group(1)))):
                document.pop("gauges", None)
            documents.append(document)
    return merge(documents)


def live_gauges(merged, name):
    """{labels as a tuple of pairs: value} of gauge `name` in `merged` (read_all)."""
    return {tuple(map(tuple, labels)): value for gauge, labels, value in merged["gauges"] if gauge == name}


def merge(documents, *, live=True):
    """Counters and histograms summed; gauges (unless not `live`: a retired process has none)
    by their largest value."""
    counters, histograms, gauges = {}, {}, {}
    for document in documents:
        if live:
            for name, labels, value in document.get("gauges", []):
                key = (name, tuple(map(tuple, labels)))
                gauges[key] = max(value, gauges.get(key, value))
        for name, labels, value in document.get("counters", []):
            key = (name, tuple(map(tuple, labels)))
            counters[key] = counters.get(key, 0) + value
        for name, labels, histogram in document.get("histograms", []):
            key = (name, tuple(map(tuple, labels)))
            total = histograms.get(key)
            if total is None or total["buckets"] != histogram["buckets"]:
                histograms[key] = {**histogram, "counts": list(histogram["counts"])}
                continue
            total["counts"] = [a + b for a, b in zip(total["counts"], histogram["counts"])]
            total["sum"] += histogram["sum"]
            total["count"] += histogram["count"]
    return {
        "counters": [[name, list(map(list, labels)), value] for (name, labels), value in counters.items()],
        "histograms": [[name, list(map(list, labels)), h] for (name, labels), h in histograms.items()],
        "gauges": [[name, list(map(list, labels)), value] for (name, labels), value in gauges.items()],
    }


def render(merged, gauges):
    """The Prometheus text exposition format (version 0.0.4) of merged counts and `gauges`.

    `gauges` is a list of (name, help, [(labels, value)]).
    """
    lines = []
    by_name = {}
    for name, labels, value in merged["counters"]:
        by_name.setdefault(name, []).append(("counter", labels, value))
    for name, labels, histogram in merged["histograms"]:
        by_name.setdefault(name, []).append(("histogram", labels, histogram))
    for name, labels, value in merged.get("gauges", []):
        by_name.setdefault(name, []).append(("gauge", labels, value))
    for name in sorted(by_name):
        kind, help_text = HELP.get(name, (by_name[name][0][0], name))
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for kind, labels, value in sorted(by_name[name], key=lambda entry: entry[1]):
            if kind in ("counter", "gauge"):
                lines.append(f"{name}{label_text(labels)} {number(value)}")
                continue
            for bound, count in zip(value["buckets"], value["counts"]):
                lines.append(f"{name}_bucket{label_text(labels + [['le', number(bound)]])} {count}")
            lines.append(f"{name}_bucket{label_text(labels + [['le', '+Inf']])} {value['count']}")
            lines.append(f"{name}_sum{label_text(labels)} {number(value['sum'])}")
            lines.append(f"{name}_count{label_text(labels)} {value['count']}")
    for name, help_text, samples in gauges:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f"{name}{label_text(labels)} {number(value)}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def label_text(labels):
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{escape(str(value))}"' for key, value in labels) + "}"


def escape(value):
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value):
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return repr(value) if isinstance(value, float) else str(value)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_json(path):
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return None


def write_atomically(path, document):
    """One write of the whole text: json.dump would write it in hundreds of small pieces, and the
    flush runs in whichever request finds it due (about 1 ms that way, 0.35 ms this way)."""
    temporary = f"{path}.{secrets.token_hex(4)}.tmp"
    with os.fdopen(open_private(temporary, new=True), "w", encoding="utf-8") as stream:
        stream.write(json.dumps(document))
    os.replace(temporary, path)
