"""Opening the SQLite file: pragmas, one connection per thread and process, explicit transactions.

Connections are opened lazily, so nothing is opened before a fork, and reopened when the pid
changes (a gunicorn worker never reuses its master's connection). Each thread gets its own
connection because a dispatcher acknowledges from its pool threads while a request commits from
another; those of threads that have ended are closed when another thread opens one.

`Database` and `outbox.postgres.PostgresDatabase` are the two backends behind `Outbox` and
`Admin`: the same methods, and the few SQL fragments that differ (`in_list`, `LOCK_DUE_ROWS`,
`LOCK_ROWS`, `CODE_POINT_ORDER`, `text_of`, `notify_work`, `listen`).

Why one module of this length: it is the whole of SQLite for the outbox, the connection per
thread, the group commit and waiting for the write lock, checkpoints and the commit watch, each
depending on how the others use the same connections and lock.
"""
import contextlib
import json
import os
import sqlite3
import threading
import time

from outbox.errors import StoreError, StoreUnavailable
from outbox.files import create_private
from outbox.schema import MUTATION_ID_BITS, migrate

MINIMUM_SQLITE = (3, 35, 0)
SYNCHRONOUS_MODES = ("full", "normal")
WAL_SIZE_LIMIT = 64 * 1024 * 1024
BUSY_POLL = 0.0005
COMMIT_WATCH_INTERVALS = (0.005, 0.1)
"""How often a dispatcher looks for other processes' commits (Database.listen): right after
one, and at most while none come."""
AUTOCHECKPOINT_PAGES = 10000
"""SQLite checkpoints the WAL inside the commit that takes it past this many pages (its default is
1000). That commit answers late, and so does every request waiting for the write lock behind it,
so the dispatcher checkpoints in the background instead (Database.checkpoint); this high mark is
only the backstop for when no dispatcher runs."""


def require_sqlite(version_info=sqlite3.sqlite_version_info):
    if tuple(version_info) < MINIMUM_SQLITE:
        found = ".".join(map(str, version_info))
        raise StoreError(
            f"diy-wsgi needs SQLite 3.35 or newer (for RETURNING); this Python links SQLite {found}. "
            "Use a Python built against a newer SQLite."
        )


class Database:
    """A path and its settings; hands each thread of each process its own connection."""

    kind = "sqlite"
    LOCK_DUE_ROWS = ""
    """One writer at a time: the claim's transaction already holds the database."""
    LOCK_ROWS = ""
    CODE_POINT_ORDER = ""
    """SQLite compares text byte by byte (UTF-8), which is Python's order already."""

    def __init__(self, path, *, synchronous="full", write_timeout=3.0, wal_size_limit=WAL_SIZE_LIMIT):
        require_sqlite()
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}, not {synchronous!r}")
        self.path = self.location = str(path)
        self.synchronous = synchronous
        self.write_timeout = write_timeout
        self.wal_size_limit = wal_size_limit
        self._local = threading.local()
        self._opened = []
        self._migrated_in = None
        self._lock = threading.Lock()
        self._writer = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue = []

    def connection(self):
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.connection = self._open()
            local.pid = os.getpid()
            local.durable = True
        return local.connection

    def _open(self):
        """Open, set the pragmas and, once per process, migrate. Threads of one process open one
        at a time, so none waits on another's switch to WAL or migration."""
        self._close_abandoned()
        with self._lock:
            create_outbox_file(self.path)
            try:
                connection = sqlite3.connect(
                    self.path, timeout=self.write_timeout, isolation_level=None, check_same_thread=False
                )
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(f"PRAGMA synchronous={self.synchronous}")
                connection.execute(f"PRAGMA journal_size_limit={self.wal_size_limit}")
                connection.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
                connection.execute("PRAGMA foreign_keys=ON")
            except sqlite3.OperationalError as error:
                raise StoreUnavailable(f"cannot open the database {self.path}: {describe(error)}") from None
            except sqlite3.DatabaseError as error:
                raise StoreError(f"cannot open the database {self.path}: {error}") from None
            if self._migrated_in != os.getpid():
                migrate(connection, self.path)
                self._migrated_in = os.getpid()
            connection.execute("PRAGMA busy_timeout=0")
            self._opened.append((os.getpid(), threading.current_thread(), connection))
        return connection

    @contextlib.contextmanager
    def transaction(self, *, durable=True):
        """`BEGIN IMMEDIATE` ... `COMMIT`: the write lock is taken up front, so a transaction
        never fails half-way on a lock upgrade; storage faults become `StoreUnavailable`.

        `durable=False` commits without waiting for the disk (synchronous=NORMAL for this
        transaction): a power cut may undo it, a crashed process never does. For bookkeeping
        whose loss only means doing something again (a lease, a delivered mark), never for what
        a 200 promised.
        """
        deadline = time.monotonic() + self.write_timeout
        connection = self.connection()
        self._take_writer(deadline)
        try:
            self._begin(connection, durable, deadline)
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException as error:
                rollback(connection)
                if is_storage_fault(error):
                    raise StoreUnavailable(describe(error)) from None
                raise
        finally:
            self._writer.release()

    def write(self, work):
        """Run `work(connection)` in a durable transaction shared with the writes other threads of
        this process ask for meanwhile (group commit): one fsync then covers them all. Returns
        what `work` returned, or raises what it raised; nothing of a failed `work` is kept.

        The first thread to get the writer lock runs every queued write, each in a savepoint;
        the others find theirs done when they get the lock in turn. A write that waited the whole
        `write_timeout` without being picked up is withdrawn (StoreUnavailable); one picked up is
        always waited for, so a committed write is never reported as failed.
        """
        job = Write(work)
        deadline = time.monotonic() + self.write_timeout
        with self._queue_lock:
            self._queue.append(job)
        try:
            self._take_writer(deadline)
        except StoreUnavailable:
            with self._queue_lock:
                withdrawn = job in self._queue
                if withdrawn:
                    self._queue.remove(job)
            if withdrawn:
                raise
            job.done.wait()
            return job.outcome()
        try:
            if not job.done.is_set():
                with self._queue_lock:
                    jobs, self._queue = self._queue, []
                self._run_group(jobs, job, deadline)
        finally:
            self._writer.release()
        return job.outcome()

    def _run_group(self, jobs, leader, deadline):
        """Run `jobs` in one transaction. If the transaction fails, nothing of any is kept: the
        leader's job keeps the error as it came (an interrupt stays an interrupt), every other
        job fails with StoreUnavailable (its request is answered 503, nothing stored)."""
        try:
            connection = self.connection()
            self._begin(connection, True, deadline)
            try:
                for job in jobs:
                    job.run(connection)
                connection.execute("COMMIT")
            except BaseException:
                rollback(connection)
                raise
        except BaseException as error:
            if isinstance(error, StoreUnavailable):
                unavailable = error
            elif isinstance(error, sqlite3.Error):
                unavailable = StoreUnavailable(describe(error))
            else:
                unavailable = StoreUnavailable(f"the commit shared with other requests failed ({type(error).__name__})")
            for job in jobs:
                job.fail(error if job is leader and not is_storage_fault(error) else unavailable)
        finally:
            for job in jobs:
                job.done.set()

    def _take_writer(self, deadline):
        """Writers of one process queue on a thread lock: only one at a time meets SQLite's lock."""
        if not self._writer.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise StoreUnavailable(describe(sqlite3.OperationalError("database is locked")))

    def _begin(self, connection, durable, deadline):
        """BEGIN IMMEDIATE, in the durability asked for."""
        local = self._local
        try:
            if local.durable != durable:
                connection.execute(f"PRAGMA synchronous={self.synchronous if durable else 'normal'}")
                local.durable = durable
            self._polling(connection.execute, ("BEGIN IMMEDIATE",), deadline)
        except sqlite3.DatabaseError as error:
            raise StoreUnavailable(describe(error)) from None

    @staticmethod
    def _polling(execute, arguments, deadline):
        """Run `execute`, trying again every BUSY_POLL until `deadline` while another process
        holds a lock it needs. Connections run without SQLite's busy handler (busy_timeout 0):
        it sleeps 1, 2, 5, 10 ... 100 ms between tries, so a writer that began waiting early
        gets a lock freed meanwhile up to 100 ms late."""
        while True:
            try:
                return execute(*arguments)
            except sqlite3.OperationalError as error:
                if not is_busy(error) or time.monotonic() >= deadline:
                    raise
            time.sleep(BUSY_POLL)

    @contextlib.contextmanager
    def patient(self):
        """This thread's connection with SQLite's busy handler on, for the rare statements that
        must wait for other connections inside SQLite: a WAL checkpoint, VACUUM."""
        connection = self.connection()
        try:
            connection.execute(f"PRAGMA busy_timeout={int(self.write_timeout * 1000)}")
            yield connection
        except sqlite3.Error as error:
            if is_storage_fault(error):
                raise StoreUnavailable(describe(error)) from None
            raise
        finally:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("PRAGMA busy_timeout=0")

    def checkpoint(self, *, truncate):
        """Copy the WAL's committed pages into the database file, holding no lock of ours.

        PASSIVE unless `truncate`: writers go on appending to the WAL meanwhile, and it never
        waits (what readers still need is left for the next one). `truncate` also empties the
        WAL file, waiting for readers and blocking writers while it runs (rarely: it bounds the
        file on disk). Returns SQLite's (busy, pages in the WAL, pages checkpointed).
        """
        mode = "TRUNCATE" if truncate else "PASSIVE"
        with self.patient() as connection:
            return connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()

    def trim_wal(self):
        """Empty the WAL file if it has outgrown `wal_size_limit`; True when it did.

        SQLite cuts the file back to that size itself whenever it starts the WAL afresh (once a
        checkpoint has copied every frame), so only a WAL that readers kept from starting afresh
        gets this far. The TRUNCATE checkpoint that empties it blocks every writer while it runs
        (60-90 ms on a 40 MiB WAL under load), so it runs only then.
        """
        try:
            size = os.path.getsize(self.path + "-wal")
        except OSError:
            return False
        if size <= self.wal_size_limit:
            return False
        self.checkpoint(truncate=True)
        return True

    def read(self, sql, parameters=()):
        connection = self.connection()
        try:
            return self._polling(
                lambda: connection.execute(sql, parameters).fetchall(), (), time.monotonic() + self.write_timeout
            )
        except sqlite3.Error as error:
            if is_storage_fault(error):
                raise StoreUnavailable(describe(error)) from None
            raise

    def _close_abandoned(self):
        """Close the connections of threads that have ended: a server that starts a thread per
        request (`diy-wsgi serve`) would otherwise keep two file descriptors per request."""
        with self._lock:
            ended = [c for pid, thread, c in self._opened if pid == os.getpid() and not thread.is_alive()]
            self._opened = [(pid, thread, c) for pid, thread, c in self._opened
                            if pid == os.getpid() and thread.is_alive()]
        for connection in ended:
            connection.close()

    # What differs from PostgreSQL.

    @staticmethod
    def in_list(column, values):
        """`column` is one of `values`: the SQL and its one parameter."""
        return f"{column} IN (SELECT value FROM json_each(?))", json.dumps(list(values))

    @staticmethod
    def batch_members(where):
        """Every mutation of the batches matching `where` (on `b`), as (audience_id,
        external_user_id, id), read out of the batches' JSON."""
        return (
            "SELECT b.audience_id AS audience_id, json_extract(j.value, '$[0]') AS external_user_id,"
            f" (b.id << {MUTATION_ID_BITS}) + j.key AS id FROM batches b, json_each(b.mutations) j WHERE {where}"
        )

    @staticmethod
    def text_of(expression):
        """The text of a stored value: a number as its digits, a string as it is."""
        return f"CAST({expression} AS TEXT)"

    @staticmethod
    def notify_work(connection):
        """Nothing to send: the other processes' dispatchers see the commit through `listen`."""

    @staticmethod
    def now():
        """The database's clock: this machine's, which every process using the file shares."""
        return time.time()

    def sizes(self):
        return {"database_bytes": size_of(self.path), "wal_bytes": size_of(self.path + "-wal")}

    LISTENS_FOR_FREE = False

    def listen(self, wake, stopping):
        """Call `wake()` when another connection commits (another process's request, most
        often), until `stopping` is set. SQLite has no notifications: a connection of its own
        reads `PRAGMA data_version`, which changes with every commit by any other connection (a
        read of the WAL index in shared memory). It looks every 5 ms after a change and backs
        off to every 100 ms while nothing changes, so an idle process stays idle and a busy one
        hears of work within milliseconds. Without it a dispatcher of its own (`diy-wsgi
        dispatch`) found requests' work only by polling, half a `poll_interval` late on average."""
        connection = seen = None
        interval = COMMIT_WATCH_INTERVALS[1]
        while not stopping.wait(interval):
            try:
                if connection is None:
                    connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                version = connection.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                if connection is not None:
                    connection.close()
                connection = seen = None
                continue
            if seen is not None and version != seen:
                wake()
                interval = COMMIT_WATCH_INTERVALS[0]
            else:
                interval = min(interval * 2, COMMIT_WATCH_INTERVALS[1])
            seen = version
        if connection is not None:
            connection.close()

    def close(self):
        """Close the connections this process opened, but those of threads still running: a
        delivery abandoned at stop may yet settle, and closing a connection under a thread
        that uses it crashes the interpreter (Python 3.9). Those stay open until the thread
        ends; a thread that goes on after this opens a new one."""
        with self._lock:
            ours = [(thread, c) for pid, thread, c in self._opened if pid == os.getpid()]
            self._opened = []
            self._local = threading.local()
        for thread, connection in ours:
            if thread is threading.current_thread() or not thread.is_alive():
                connection.close()


class Write:
    """One thread's part of a group commit (Database.write)."""

    __slots__ = ("work", "done", "result", "error")

    def __init__(self, work):
        self.work = work
        self.done = threading.Event()
        self.result = self.error = None

    def run(self, connection):
        """`work` in a savepoint: an error of its own undoes its part only. A storage fault
        propagates and fails the whole group."""
        connection.execute("SAVEPOINT write")
        try:
            self.result = self.work(connection)
        except Exception as error:
            if is_storage_fault(error):
                raise
            connection.execute("ROLLBACK TO write")
            self.error = error
        connection.execute("RELEASE write")

    def fail(self, error):
        self.result, self.error = None, error

    def outcome(self):
        if self.error is not None:
            raise self.error
        return self.result


def create_outbox_file(path):
    """Create the database file 0600 before SQLite does: SQLite would make it 0644 less the
    umask, readable by every user of the machine under the usual 0022, and its -wal and -shm
    take the database file's mode. A folder that is missing or read-only is left for SQLite's
    own error to explain."""
    with contextlib.suppress(OSError):
        create_private(path)


def size_of(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def rollback(connection):
    with contextlib.suppress(sqlite3.Error):
        if connection.in_transaction:
            connection.execute("ROLLBACK")


def is_busy(error):
    return "locked" in str(error) or "busy" in str(error)


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
