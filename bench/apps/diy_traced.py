"""diy_wsgi:app with timers around its use of SQLite's write lock, for the profiling phase only.

    DIY_CONFIG=... BENCH_TRACE_DIR=... gunicorn -c gunicorn.conf.py diy_traced:app

Nothing in the project changes: this module wraps, in this process only,
- `Database.transaction` (the dispatcher's bookkeeping, the audience mapping) and the group
  commits of `Database.write` (the requests' enqueues): how long each write waited for the lock
  (from asking until its own work ran), how long each transaction held it, and within that the
  wait for SQLite's lock (`Database._begin`, which polls) and COMMIT;
- every public `Outbox` method, so each transaction is charged to enqueue, claim, settle, ...;
- the WSGI call, `Dispatcher.deliver` and `Dispatcher._claim_and_submit`: the CPU time of
  their thread; for the WSGI call also its wall-clock time and its write's (from asking for the
  lock to the write's end, and the part spent waiting for its turn);
- COMMIT: the committing thread's CPU time beside the wall-clock time (the rest is waiting for
  the disk's flush, and for the GIL after it).
Each process appends what it timed since the last time to BENCH_TRACE_DIR/<pid>.jsonl every
second, one JSON array a line, the wall-clock time second:
["timer", start, caller, "wait" | "begin_sqlite" | "held" | "commit" | "commit_cpu", seconds],
["group", time, writes committed together], ["claim", time, audiences, mutations claimed],
["cpu", time, "request" | "delivery" | "claim loop", thread CPU seconds, mutations],
["request", time, wall seconds, thread CPU seconds, write seconds, of it waiting for its turn].
"""
import atexit
import contextlib
import functools
import json
import os
import threading
import time

import diy_wsgi
from outbox import db as outbox_db
from outbox import dispatcher as outbox_dispatcher
from outbox import store as outbox_store

_local = threading.local()
_lock = threading.Lock()
_stats = {}
"""{caller: {timer: [(wall-clock start, seconds)]}}, for a caller in this process (profiling.py)."""
_unwritten = []


def _caller():
    return getattr(_local, "caller", None) or "other"


def _note(*event):
    with _lock:
        _unwritten.append(event)


def _record(caller, what, seconds):
    started = time.time() - seconds
    with _lock:
        _stats.setdefault(caller, {}).setdefault(what, []).append((started, seconds))
        _unwritten.append(("timer", started, caller, what, seconds))


class TimedConnection:
    """Forwards everything to the sqlite3 connection; times COMMIT."""

    def __init__(self, connection):
        self._connection = connection

    def execute(self, sql, *args):
        if sql != "COMMIT":
            return self._connection.execute(sql, *args)
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return self._connection.execute(sql, *args)
        finally:
            _record(_caller(), "commit", time.perf_counter() - started)
            _record(_caller(), "commit_cpu", time.thread_time() - cpu)

    def __getattr__(self, name):
        return getattr(self._connection, name)


class TimedWrite(outbox_db.Write):
    """A write of a group commit that knows who asked for it and when: its wait ends when its work runs."""

    __slots__ = ("asked", "caller", "ran", "ended")

    def __init__(self, work):
        super().__init__(work)
        self.asked, self.caller = time.perf_counter(), _caller()
        self.ran = self.ended = None
        _local.write = self

    def run(self, connection):
        self.ran = time.perf_counter()
        _record(self.caller, "wait", self.ran - self.asked)
        super().run(connection)


def _timed_write(write):
    """Database.write, noting when the asking thread's write ended (committed or failed)."""

    def timed(self, work):
        try:
            return write(self, work)
        finally:
            _local.write.ended = time.perf_counter()

    return timed


def _timed_request(app):
    """The WSGI call: its wall-clock and CPU time, and its write's, one event per request."""

    def timed(environ, start_response):
        _local.write = None
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return app(environ, start_response)
        finally:
            wall, cpu = time.perf_counter() - started, time.thread_time() - cpu
            job = _local.write
            write = wait = 0.0
            if job is not None and job.ended is not None:
                write = job.ended - job.asked
                wait = (job.ran or job.ended) - job.asked
            _note("request", time.time(), wall, cpu, write, wait)
            _note("cpu", time.time(), "request", cpu, 0)

    return timed


def _timed_connection(connection):
    return lambda self: TimedConnection(connection(self))


def _timed_begin(begin):
    """BEGIN IMMEDIATE, polled until SQLite's lock is free; marks when the lock was had."""

    def timed(self, *args):
        started = time.perf_counter()
        begin(self, *args)
        _local.began = time.perf_counter()
        _record(_caller(), "begin_sqlite", _local.began - started)

    return timed


def _timed_transaction(transaction):
    @contextlib.contextmanager
    def timed(self, **options):
        caller = _caller()
        asked = time.perf_counter()
        with transaction(self, **options) as connection:
            _record(caller, "wait", time.perf_counter() - asked)
            yield connection
        _record(caller, "held", time.perf_counter() - _local.began)

    return timed


def _timed_group(run_group):
    def timed(self, jobs, *args):
        _local.began = None
        run_group(self, jobs, *args)
        if _local.began is not None:
            _record(_caller(), "held", time.perf_counter() - _local.began)
            _note("group", time.time(), len(jobs))

    return timed


def _charged(name, method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        outer = getattr(_local, "caller", None)
        _local.caller = outer or name
        try:
            result = method(self, *args, **kwargs)
        finally:
            _local.caller = outer
        if name == "claim":
            _note("claim", time.time(), len(result), sum(len(c.mutations) for c in result))
        return result

    return wrapper


def _cpu_timed(role, function, mutations=lambda *args: 0):
    def timed(*args, **kwargs):
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            _note("cpu", time.time(), role, time.thread_time() - started, mutations(*args))

    return timed


Database, Dispatcher = outbox_db.Database, outbox_dispatcher.Dispatcher
Database.connection = _timed_connection(Database.connection)
Database._begin = _timed_begin(Database._begin)
Database.transaction = _timed_transaction(Database.transaction)
Database._run_group = _timed_group(Database._run_group)
Database.write = _timed_write(Database.write)
outbox_db.Write = TimedWrite
for _name, _method in list(vars(outbox_store.Outbox).items()):
    if callable(_method) and not _name.startswith("_"):
        setattr(outbox_store.Outbox, _name, _charged(_name, _method))
Dispatcher.deliver = _cpu_timed("delivery", Dispatcher.deliver, lambda self, claim: len(claim.mutations))
Dispatcher._claim_and_submit = _cpu_timed("claim loop", Dispatcher._claim_and_submit)
app = _timed_request(diy_wsgi.app)


def _dump():
    """Append what was timed since the last call; cheap whatever the run's length."""
    global _unwritten
    folder = os.environ.get("BENCH_TRACE_DIR")
    with _lock:
        events, _unwritten = _unwritten, []
    if folder and events:
        with open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a") as out:
            out.write("".join(json.dumps(event) + "\n" for event in events))


def _dump_every_second():
    while True:
        time.sleep(1)
        _dump()


threading.Thread(target=_dump_every_second, name="bench-trace", daemon=True).start()
atexit.register(_dump)
