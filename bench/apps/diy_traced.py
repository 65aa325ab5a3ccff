"""diy_wsgi:app with timers around its SQLite transactions, for the profiling phase only.

    DIY_CONFIG=... BENCH_TRACE_DIR=... gunicorn -c gunicorn.conf.py diy_traced:app

Nothing in the project changes: this module wraps, in this process only, `Database.connection`
(so `BEGIN IMMEDIATE` and `COMMIT` are timed) and every public `Outbox` method (so each
transaction is charged to enqueue, claim, settle, ...). Each process appends what it timed since
the last time to BENCH_TRACE_DIR/<pid>.jsonl every second, one JSON array a line:
["timer", caller, "begin_wait" | "begin_sqlite" | "commit" | "held", wall-clock start, seconds] or
["claim", wall-clock time, audiences claimed, mutations claimed].

With BENCH_WRITE_LOCK=polling it tries a change instead of measuring one: the writers of a
process queue on one thread lock, and the one holding it polls for SQLite's write lock every
millisecond (busy_timeout 0) instead of sleeping in SQLite's busy handler.
"""
import atexit
import contextlib
import functools
import json
import os
import sqlite3
import threading
import time

import diy_wsgi
from outbox import db as outbox_db
from outbox import store as outbox_store
from outbox.errors import StoreUnavailable

_local = threading.local()
_lock = threading.Lock()
_stats = {}
"""{caller: {timer: [(wall-clock start, seconds)]}}, for a caller in this process (profiling.py)."""
_unwritten = []


def _record(caller, what, seconds):
    started = time.time() - seconds
    with _lock:
        _stats.setdefault(caller, {}).setdefault(what, []).append((started, seconds))
        _unwritten.append(("timer", caller, what, started, seconds))


class TimedConnection:
    """Forwards everything to the sqlite3 connection; times BEGIN IMMEDIATE and COMMIT."""

    def __init__(self, connection):
        self._connection = connection

    def execute(self, sql, *args):
        if sql in ("BEGIN IMMEDIATE", "COMMIT"):
            started = time.perf_counter()
            try:
                return self._connection.execute(sql, *args)
            finally:
                what = "begin_sqlite" if sql == "BEGIN IMMEDIATE" else "commit"
                _record(getattr(_local, "caller", "other"), what, time.perf_counter() - started)
        return self._connection.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._connection, name)


_original_connection = outbox_db.Database.connection


def _connection(self):
    return TimedConnection(_original_connection(self))


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
            with _lock:
                _unwritten.append(("claim", time.time(), len(result), sum(len(c.mutations) for c in result)))
        return result

    return wrapper


outbox_db.Database.connection = _connection

_original_transaction = outbox_db.Database.transaction
_write_lock = threading.RLock()


@contextlib.contextmanager
def _polling_transaction(self):
    """One writer per process, and that writer asks SQLite for the lock every ~1 ms itself
    (busy_timeout 0) instead of sleeping in the busy handler's 1..100 ms steps."""
    with _write_lock:
        timed = self.connection()
        connection = timed._connection
        connection.execute("PRAGMA busy_timeout = 0")
        started = time.perf_counter()
        deadline = time.monotonic() + self.write_timeout
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error) or time.monotonic() > deadline:
                    raise StoreUnavailable(outbox_db.describe(error)) from None
                time.sleep(0.001)
        _record(getattr(_local, "caller", "other"), "begin_sqlite", time.perf_counter() - started)
        try:
            yield timed
            timed.execute("COMMIT")
        except BaseException as error:
            with contextlib.suppress(sqlite3.Error):
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
            if outbox_db.is_storage_fault(error):
                raise StoreUnavailable(outbox_db.describe(error)) from None
            raise


def _timed(transaction):
    """Times the whole wait for the write lock (in-process queue and BEGIN) and the hold."""

    @contextlib.contextmanager
    def timed_transaction(self):
        caller = getattr(_local, "caller", "other")
        entered = time.perf_counter()
        with transaction(self) as connection:
            began = time.perf_counter()
            _record(caller, "begin_wait", began - entered)
            yield connection
        _record(caller, "held", time.perf_counter() - began)

    return timed_transaction


_inner = {"polling": _polling_transaction}.get(os.environ.get("BENCH_WRITE_LOCK"), _original_transaction)
outbox_db.Database.transaction = _timed(_inner)
for _name, _method in list(vars(outbox_store.Outbox).items()):
    if callable(_method) and not _name.startswith("_"):
        setattr(outbox_store.Outbox, _name, _charged(_name, _method))


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

app = diy_wsgi.app
