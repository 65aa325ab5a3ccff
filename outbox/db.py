"""Opening the SQLite file: pragmas, one connection per thread and process, explicit transactions.

Connections are opened lazily, so nothing is opened before a fork, and reopened when the pid
changes (a gunicorn worker never reuses its master's connection). Each thread gets its own
connection because a dispatcher acknowledges from its pool threads while a request commits from
another.
"""
import contextlib
import os
import sqlite3
import threading
import time

from outbox.errors import StoreError, StoreUnavailable

MINIMUM_SQLITE = (3, 35, 0)
SYNCHRONOUS_MODES = ("full", "normal")
WAL_SIZE_LIMIT = 64 * 1024 * 1024


def require_sqlite(version_info=sqlite3.sqlite_version_info):
    if tuple(version_info) < MINIMUM_SQLITE:
        found = ".".join(map(str, version_info))
        raise StoreError(
            f"diy-wsgi needs SQLite 3.35 or newer (for RETURNING); this Python links SQLite {found}. "
            "Use a Python built against a newer SQLite."
        )


class Database:
    """A path and its settings; hands each thread of each process its own connection."""

    def __init__(self, path, *, synchronous="full", write_timeout=3.0):
        require_sqlite()
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        self.path = str(path)
        self.synchronous = synchronous
        self.write_timeout = write_timeout
        self._local = threading.local()
        self._opened = []
        self._migrated_in = None
        self._lock = threading.Lock()
        self._writer = threading.Lock()

    def connection(self):
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.connection = self._open()
            local.pid = os.getpid()
        return local.connection

    def _open(self):
        """Open, set the pragmas and, once per process, migrate. Threads of one process open one
        at a time, so none waits on another's switch to WAL or migration."""
        from outbox.schema import migrate

        with self._lock:
            try:
                connection = sqlite3.connect(
                    self.path, timeout=self.write_timeout, isolation_level=None, check_same_thread=False
                )
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(f"PRAGMA synchronous={self.synchronous}")
                connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
                connection.execute("PRAGMA foreign_keys=ON")
            except sqlite3.OperationalError as error:
                raise StoreUnavailable(f"cannot open the database {self.path}: {describe(error)}") from None
            except sqlite3.DatabaseError as error:
                raise StoreError(f"cannot open the database {self.path}: {error}") from None
            if self._migrated_in != os.getpid():
                migrate(connection, self.path)
                self._migrated_in = os.getpid()
            self._opened.append((os.getpid(), connection))
        return connection

    @contextlib.contextmanager
    def transaction(self):
        """`BEGIN IMMEDIATE` ... `COMMIT`: the write lock is taken up front, so a transaction
        never fails half-way on a lock upgrade; storage faults become `StoreUnavailable`.

        Writers of one process queue on a thread lock first: SQLite's busy handler polls with
        sleeps of up to 100 ms, so threads left to it take turns unfairly and the slowest wait
        for seconds. Only writers of other processes meet the busy handler, within what is
        left of `write_timeout`.
        """
        connection = self.connection()
        started = time.monotonic()
        if not self._writer.acquire(timeout=self.write_timeout):
            raise StoreUnavailable(describe(sqlite3.OperationalError("database is locked")))
        try:
            waited = time.monotonic() - started
            if waited > 0.001:
                remaining_ms = max(1, int((self.write_timeout - waited) * 1000))
                connection.execute(f"PRAGMA busy_timeout={remaining_ms}")
            try:
                connection.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as error:
                raise StoreUnavailable(describe(error)) from None
            finally:
                if waited > 0.001:
                    connection.execute(f"PRAGMA busy_timeout={int(self.write_timeout * 1000)}")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException as error:
                with contextlib.suppress(sqlite3.Error):
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                if is_storage_fault(error):
                    raise StoreUnavailable(describe(error)) from None
                raise
        finally:
            self._writer.release()

    def read(self, sql, parameters=()):
        try:
            return self.connection().execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            if is_storage_fault(error):
                raise StoreUnavailable(describe(error)) from None
            raise

    def close(self):
        """Close every connection this process opened (call when no thread uses them)."""
        with self._lock:
            mine = [c for pid, c in self._opened if pid == os.getpid()]
            self._opened = []
            self._local = threading.local()
        for connection in mine:
            connection.close()


def is_storage_fault(error):
    return isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.IntegrityError)


def describe(error):
    """A short operator-facing reason for an SQLite failure."""
    text = str(error)
    if "locked" in text or "busy" in text:
        return "the database is locked by another writer (waited the whole write_timeout)"
    if "full" in text:
        return "the disk holding the database is full"
    if "readonly" in text or "read-only" in text:
        return "the database is read-only"
    if "unable to open" in text:
        return ("cannot open or create the database file or its -wal and -shm files beside it: "
                "does the folder exist, and may this user write to it (a read-only file system)?")
    return f"the database failed: {text}"
