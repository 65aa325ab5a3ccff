"""The outbox on PostgreSQL, for several app VMs on one database (psycopg 3, an optional extra).

The same interface as `outbox.db.Database` (SQLite), so `Outbox` and `Admin` run their SQL on
either: statements are written with `?` placeholders and portable SQL, and this module turns
the placeholders into psycopg's and supplies the few fragments that differ (`in_list`,
`LOCK_DUE_ROWS`, `text_of`).

Connections: one per thread and process, opened lazily (after any fork) in autocommit mode,
with explicit `BEGIN` ... `COMMIT` like the SQLite side. A connection that failed is dropped and
the next use opens a new one, so a restarted or failed-over server is found again by itself;
meanwhile every use raises `StoreUnavailable` (the receiver answers 503). Connections of
threads that have ended are closed when another thread opens one, so a server that starts a
thread per request cannot exhaust `max_connections`.

Durability: what a 200 promises commits with the server's `synchronous_commit` (on by default:
flushed on the primary, and on a synchronous standby where one is configured); the
dispatcher's bookkeeping commits with `synchronous_commit = off`, as it skips the fsync on
SQLite.
"""
import contextlib
import os
import secrets
import threading
from urllib.parse import urlsplit, urlunsplit

from outbox.errors import StoreError, StoreUnavailable
from outbox.postgres_schema import migrate
from outbox.schema import MUTATION_ID_BITS
from outbox.values import JsonValue

EXTRA_HINT = "pip install 'diy-wsgi[postgres]'"
NOTIFY_CHANNEL = "diy_outbox"
LOCK_DUE_ROWS = " FOR UPDATE OF audiences SKIP LOCKED"
"""Dispatchers claiming at once never lease one audience twice: a claim locks the audience rows
it takes, and skips (never waits for) those another transaction holds: another claim, or a
write adding batches to that audience."""
LOCK_ROWS = " FOR UPDATE"
"""Lock the rows a SELECT returns, in its ORDER BY: a transaction that touches several
audiences locks them all first, in the order requests do (integration, key), so two such
transactions never wait for each other in a circle."""
CODE_POINT_ORDER = ' COLLATE "C"'
"""Text in Python's order (sorted()), whatever the database's own collation."""
TCP_USER_TIMEOUT_MS = 10000
"""A connection whose server stopped answering (a network cut, a dead VM) fails after this
instead of hanging a request or a dispatcher for the kernel's TCP timeout (minutes)."""


IDLE_IN_TRANSACTION_MS = 10000
"""A transaction left open by a VM that died in the middle of it (its rows stay locked, its
audience waits) is ended by the server after this. diy-wsgi's own transactions run their
statements back to back, never waiting on anything else in between."""


def is_postgres_url(location):
    return str(location).startswith(("postgresql://", "postgres://"))


def without_password(url):
    """The URL as logs and messages may show it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def load_psycopg():
    try:
        import psycopg
    except ImportError:
        raise StoreError(f"[diy] database is a PostgreSQL URL but psycopg is not installed: {EXTRA_HINT}") from None
    return psycopg


class PostgresDatabase:
    kind = "postgresql"
    LOCK_DUE_ROWS = LOCK_DUE_ROWS
    LOCK_ROWS = LOCK_ROWS
    CODE_POINT_ORDER = CODE_POINT_ORDER
    LISTENS_FOR_FREE = True
    """LISTEN waits on the socket: nothing to pay while no one commits."""

    def __init__(self, url, *, password=None, write_timeout=3.0, application_name="diy-wsgi"):
        self.psycopg = load_psycopg()
        self.url = url
        self.location = without_password(url)
        self.write_timeout = write_timeout
        self._password = password
        self._application_name = application_name
        self._local = threading.local()
        self._opened = []
        self._lock = threading.Lock()
        self._migrated_in = None
        self._sender_suffix = secrets.token_hex(4)

    def __repr__(self):
        return f"PostgresDatabase({self.location!r})"

    # Connections.

    def connection(self):
        local = self._local
        connection = getattr(local, "connection", None)
        if connection is None or local.pid != os.getpid() or connection.raw.closed:
            local.connection = self._open()
            local.pid = os.getpid()
        return local.connection

    def _open(self):
        psycopg = self.psycopg
        self._close_abandoned()
        try:
            options = self._connect_options()
        except psycopg.ProgrammingError as error:
            raise StoreError(f"the database URL {self.location} is not valid: {first_line(error)}") from None
        try:
            raw = psycopg.connect(self.url, **options)
        except psycopg.Error as error:
            raise StoreUnavailable(self.describe(error)) from None
        connection = Connection(raw, self)
        try:
            if self._migrated_in != os.getpid():
                with self._lock:
                    if self._migrated_in != os.getpid():
                        migrate(connection, self.location)
                        self._migrated_in = os.getpid()
        except BaseException:
            raw.close()
            raise
        with self._lock:
            self._opened.append((os.getpid(), threading.current_thread(), raw))
        return connection

    def _connect_options(self):
        """What libpq gets beside the URL: ours, unless the URL sets the same (its `options`
        are kept and ours added after them)."""
        given = self.psycopg.conninfo.conninfo_to_dict(self.url)
        settings = (f"-c lock_timeout={int(self.write_timeout * 1000)}"
                    f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}")
        options = {
            "autocommit": True,
            "application_name": self._application_name,
            "connect_timeout": max(2, int(self.write_timeout + 0.999)),
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 2,
            "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
            "options": f"{given['options']} {settings}" if given.get("options") else settings,
        }
        if self._password is not None:
            options["password"] = self._password
        return {key: value for key, value in options.items() if key not in given or key in ("autocommit", "options")}

    def _close_abandoned(self):
        """Close the connections of threads that have ended (a thread-per-request server)."""
        with self._lock:
            alive, ended = [], []
            for entry in self._opened:
                (alive if entry[0] == os.getpid() and entry[1].is_alive() else ended).append(entry)
            self._opened = alive
        for pid, _, raw in ended:
            if pid == os.getpid():
                with contextlib.suppress(Exception):
                    raw.close()

    def close(self):
        """Close the connections this process opened, but those of threads still running (a
        delivery abandoned at stop may yet settle); those are closed when their thread ends."""
        with self._lock:
            ours = [(thread, raw) for pid, thread, raw in self._opened if pid == os.getpid()]
            self._opened = [(pid, thread, raw) for pid, thread, raw in self._opened
                            if pid == os.getpid() and thread.is_alive() and thread is not threading.current_thread()]
            self._local = threading.local()
        for thread, raw in ours:
            if thread is threading.current_thread() or not thread.is_alive():
                with contextlib.suppress(Exception):
                    raw.close()

    # Transactions.

    @contextlib.contextmanager
    def transaction(self, *, durable=True):
        """`BEGIN` ... `COMMIT`. `durable=False` commits without waiting for the flush
        (`synchronous_commit = off`): for bookkeeping whose loss only means doing something
        again, never for what a 200 promised. Storage faults become `StoreUnavailable`."""
        connection = self.connection()
        try:
            if connection.durable != durable:
                connection.execute("RESET synchronous_commit" if durable else "SET synchronous_commit = off")
                connection.durable = durable
            connection.execute("BEGIN")
            yield connection
            connection.execute("COMMIT")
        except BaseException as error:
            self._rollback(connection)
            if self.is_storage_fault(error):
                raise StoreUnavailable(self.describe(error)) from None
            raise

    def write(self, work):
        """Run `work(connection)` in a durable transaction of its own; returns what it returned.
        (PostgreSQL groups the flushes of concurrent commits itself.)"""
        with self.transaction() as connection:
            return work(connection)

    def read(self, sql, parameters=()):
        try:
            return self.connection().execute(sql, parameters).fetchall()
        except self.psycopg.Error as error:
            self._drop_if_broken()
            if self.is_storage_fault(error):
                raise StoreUnavailable(self.describe(error)) from None
            raise

    def _rollback(self, connection):
        raw = connection.raw
        if raw.closed or raw.broken:
            self._drop_if_broken()
            return
        with contextlib.suppress(self.psycopg.Error):
            if raw.info.transaction_status != self.psycopg.pq.TransactionStatus.IDLE:
                raw.execute("ROLLBACK")

    def _drop_if_broken(self):
        connection = getattr(self._local, "connection", None)
        if connection is not None and (connection.raw.broken or connection.raw.closed):
            with contextlib.suppress(Exception):
                connection.raw.close()
            self._local.connection = None

    @contextlib.contextmanager
    def patient(self):
        """This thread's connection for long statements (operators' commands)."""
        connection = self.connection()
        try:
            connection.execute("SET lock_timeout = 0")
            yield connection
        except self.psycopg.Error as error:
            self._drop_if_broken()
            if self.is_storage_fault(error):
                raise StoreUnavailable(self.describe(error)) from None
            raise
        finally:
            with contextlib.suppress(self.psycopg.Error):
                connection.execute(f"SET lock_timeout = {int(self.write_timeout * 1000)}")

    # What differs from SQLite.

    @staticmethod
    def in_list(column, values):
        """`column` is one of `values`: the SQL and its one parameter."""
        return f"{column} = ANY(?)", list(values)

    @staticmethod
    def batch_members(where):
        """Every mutation of the batches matching `where` (on `b`), as (audience_id,
        external_user_id, id), read out of the batches' JSON."""
        return (
            "SELECT b.audience_id AS audience_id, j.member ->> 0 AS external_user_id,"
            f" (b.id << {MUTATION_ID_BITS}) + j.position - 1 AS id FROM batches b CROSS JOIN LATERAL"
            f" json_array_elements(b.mutations::json) WITH ORDINALITY AS j (member, position) WHERE {where}"
        )

    @staticmethod
    def text_of(expression):
        """The text of a stored JSON value: a number as its digits, a string without quotes."""
        return f"({expression} #>> '{{}}')"

    def notify_work(self, connection):
        """Wake the dispatchers of every other process and VM once this transaction commits
        (this process's own dispatcher is woken directly, so its listener skips the echo)."""
        connection.execute("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, self.sender))

    @property
    def sender(self):
        """Who sent a notification: this process (a forked worker is another sender)."""
        return f"{os.getpid()}-{self._sender_suffix}"

    def checkpoint(self, *, truncate):
        """PostgreSQL checkpoints by itself."""
        return None

    def trim_wal(self):
        """PostgreSQL keeps its WAL in bounds by itself."""
        return False

    def now(self):
        """The database server's clock, in seconds since the epoch."""
        return self.read("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8")[0][0]

    def sizes(self):
        (size,) = self.read("SELECT pg_database_size(current_database())")[0]
        return {"database_bytes": size}

    def listen(self, wake, stopping, *, timeout=1.0):
        """Call `wake()` whenever work is committed anywhere, until `stopping` is set; a
        connection of its own, reopened after a failure (polling covers the gap)."""
        psycopg = self.psycopg
        while not stopping.is_set():
            try:
                with psycopg.connect(self.url, **self._connect_options()) as raw:
                    raw.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    while not stopping.is_set():
                        notes = list(raw.notifies(timeout=timeout, stop_after=1))
                        if any(note.payload != self.sender for note in notes):
                            wake()
            except psycopg.Error:
                stopping.wait(timeout)

    # Errors.

    def is_storage_fault(self, error):
        """A failure of the database, not of our statement or data: the request may succeed later."""
        errors = self.psycopg.errors
        if isinstance(error, (self.psycopg.OperationalError, self.psycopg.InterfaceError)):
            return True
        return isinstance(error, (errors.ReadOnlySqlTransaction, errors.AdminShutdown, errors.CannotConnectNow,
                                  self.psycopg.InternalError))

    def describe(self, error):
        """A short operator-facing reason: never the password, never a statement's parameters."""
        errors = self.psycopg.errors
        if isinstance(error, errors.LockNotAvailable):
            return "a row this write needs is locked by another transaction (waited the whole write_timeout)"
        if isinstance(error, errors.ReadOnlySqlTransaction):
            return f"PostgreSQL at {self.location} is read-only (a standby, or failing over)"
        if isinstance(error, errors.DiskFull):
            return f"the disk of PostgreSQL at {self.location} is full"
        text = first_line(error)
        if isinstance(error, (self.psycopg.OperationalError, self.psycopg.InterfaceError)):
            return f"PostgreSQL at {self.location} is unavailable: {text}"
        return f"PostgreSQL at {self.location} failed: {text}"


def first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class Connection:
    """A psycopg connection that takes the outbox's `?` placeholders and `JsonValue`s.

    `durable` says whether the session commits with the server's own `synchronous_commit`
    (durable) or with it off: a thread's transactions are mostly of one kind (requests'
    durable, the dispatcher's bookkeeping not), so the setting changes for the session when
    the kind changes, not in every transaction."""

    __slots__ = ("raw", "database", "durable")

    def __init__(self, raw, database):
        self.raw = raw
        self.database = database
        self.durable = True

    def execute(self, sql, parameters=()):
        return self.raw.execute(placeholders(sql), adapt(parameters, self.database.psycopg) if parameters else None)

    def executemany(self, sql, rows):
        cursor = self.raw.cursor()
        cursor.executemany(placeholders(sql), [adapt(row, self.database.psycopg) for row in rows])
        return cursor


_PLACEHOLDERS = {}


def placeholders(sql):
    translated = _PLACEHOLDERS.get(sql)
    if translated is None:
        translated = _PLACEHOLDERS[sql] = sql.replace("?", "%s")
    return translated


def adapt(parameters, psycopg):
    """`JsonValue`s become jsonb. PostgreSQL's text cannot hold NUL: the DMP's ids and names are
    refused with one at the edge (diy/dmp.py), so only free text (a platform's error reason)
    ever gets here with one, and it is stored with NUL_STANDIN in its place."""
    return [
        (None if p.value is None else psycopg.types.json.Jsonb(p.value)) if isinstance(p, JsonValue)
        else p.replace("\x00", NUL_STANDIN) if type(p) is str and "\x00" in p else p
        for p in parameters
    ]


NUL_STANDIN = "\u2400"
"""SYMBOL FOR NULL."""

