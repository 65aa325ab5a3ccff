"""The schema, as an ordered list of migrations; `PRAGMA user_version` records how far a file is.

Append a migration to change the schema; never edit one that has shipped.

Mutation states: `pending` until settled; then `done` (delivered), `dead` (refused or given
up; kept for the operator), `superseded` (dead, but a later mutation of the same user in the
same audience was delivered, so replaying it would resurrect a stale state) or `replayed`
(dead, and copied back to the end of its audience's queue by `diy-wsgi dead replay`).

An audience row is also the unit of work: it carries the lease, the backoff and the count of
undelivered mutations, so a dispatcher claims an audience (never single rows) and the
mutations of one audience are delivered by one holder at a time, in id order.
"""
import sqlite3

from outbox.errors import StoreError

MIGRATIONS = (
    """
    CREATE TABLE audiences (
        id INTEGER PRIMARY KEY,
        integration TEXT NOT NULL,
        key TEXT NOT NULL,              -- the Audience value the DMP sends in mutations
        dmp_id TEXT NOT NULL,           -- the DMP's own audience id
        name TEXT,
        customer,
        target_id TEXT,                 -- the platform's id, once created
        state TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'failed')),
        pending INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        lease_token TEXT,
        lease_owner TEXT,
        lease_expires_at REAL,
        claimed_through INTEGER,
        last_error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (integration, key)
    );
    CREATE UNIQUE INDEX audiences_by_dmp_id ON audiences (integration, dmp_id);
    CREATE INDEX audiences_due ON audiences (next_attempt_at)
        WHERE pending > 0 OR state = 'creating';

    CREATE TABLE mutations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: ids order delivery and name it
        audience_id INTEGER NOT NULL REFERENCES audiences (id),
        op TEXT NOT NULL CHECK (op IN ('add', 'remove')),
        external_user_id TEXT NOT NULL,
        uuid TEXT,
        customer,
        platform,
        extra TEXT,                     -- JSON of the fields diy-wsgi does not know, or NULL
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'done', 'dead', 'superseded', 'replayed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        received_at REAL NOT NULL,
        finished_at REAL,
        last_error TEXT
    );
    CREATE INDEX mutations_pending ON mutations (audience_id, id) WHERE state = 'pending';
    CREATE INDEX mutations_finished ON mutations (finished_at)
        WHERE state IN ('done', 'superseded', 'replayed');
    CREATE INDEX mutations_dead ON mutations (audience_id, external_user_id) WHERE state = 'dead';

    CREATE TABLE dispatchers (
        owner TEXT PRIMARY KEY,         -- host:pid:random
        started_at REAL NOT NULL,
        seen_at REAL NOT NULL
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
OUR_TABLES = {"audiences", "mutations", "dispatchers", "sqlite_sequence"}


def migrate(connection, path):
    """Bring the file to SCHEMA_VERSION; safe when several processes start at once."""
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            check_foreign(connection, path, version)
            for number in range(version, SCHEMA_VERSION):
                for statement in split_statements(MIGRATIONS[number]):
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version={number + 1}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as error:
        raise StoreError(f"cannot use the database {path}: {error}") from None


def check_foreign(connection, path, version):
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the database {path} has schema version {version}, newer than this diy-wsgi "
            f"knows ({SCHEMA_VERSION}); run the newer diy-wsgi or restore a matching backup"
        )
    if version == 0:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables - OUR_TABLES:
            raise StoreError(
                f"the database {path} holds other tables ({', '.join(sorted(tables))}) and is not "
                "a diy-wsgi outbox; point [diy] database at a new file"
            )


def split_statements(script):
    """`executescript` would commit our transaction, so statements run one by one."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement.strip()
            statement = ""
