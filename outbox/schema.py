"""The schema, as an ordered list of migrations; `PRAGMA user_version` records how far a file is.

Append a migration to change the schema; never edit one that has shipped.

A request's mutations of one audience are stored together as one `batches` row (migration 2):
storing and settling 100 mutations is then a row, not 100, which is what lets one SQLite file
keep up with the DMP (bench/RESULTS.md). Each mutation keeps its own identity all the same: its
id is `batch id << 16 | its index in the batch` (MUTATION_ID_BITS), unique and increasing in
the order the DMP sent the mutations; a mutation that dies becomes a row of its own in
`dead_letters`; and the view `mutations` shows every mutation as a row, whatever its state.

Batch states: `pending` until settled, then `done` (kept for the retention, then purged).
Dead letter states: `dead` (refused or given up; kept for the operator), `superseded` (dead, but
a later mutation of the same user in the same audience was delivered, so replaying it would
resurrect a stale state) or `replayed` (dead, and copied back to the end of its audience's queue
by `diy-wsgi dead replay`).

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
    """
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused: orders delivery; see MUTATION_ID_BITS
        audience_id INTEGER NOT NULL REFERENCES audiences (id),
        op TEXT NOT NULL CHECK (op IN ('add', 'remove')),
        size INTEGER NOT NULL,
        dead INTEGER NOT NULL DEFAULT 0,  -- of them, how many were dead-lettered (rows in mutations)
        mutations TEXT NOT NULL,        -- JSON [[external_user_id, uuid, customer, platform, extra], ...]
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
        attempts INTEGER NOT NULL DEFAULT 0,
        received_at REAL NOT NULL,
        finished_at REAL,
        last_error TEXT
    );
    CREATE INDEX batches_pending ON batches (audience_id, id) WHERE state = 'pending';
    CREATE INDEX batches_finished ON batches (finished_at) WHERE state = 'done';

    -- New mutation ids must sort after every id migration 1 handed out.
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'batches', (COALESCE(MAX(seq), 0) >> 16) + 1 FROM sqlite_sequence WHERE name = 'mutations';
    INSERT INTO batches (audience_id, op, size, mutations, attempts, received_at, last_error)
        SELECT audience_id, op, 1, json_array(json_array(external_user_id, uuid, customer, platform, json(extra))),
               attempts, received_at, last_error
        FROM mutations WHERE state = 'pending' ORDER BY id;
    DELETE FROM mutations WHERE state IN ('pending', 'done');
    DROP INDEX mutations_pending;
    ALTER TABLE mutations RENAME TO dead_letters;
    UPDATE audiences SET lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, claimed_through = NULL;

    -- Every mutation as a row, whatever its state, for operators and auditors (not for hot paths).
    CREATE VIEW mutations AS
        SELECT (b.id << 16) + j.key AS id, b.audience_id, b.op,
               json_extract(j.value, '$[0]') AS external_user_id, json_extract(j.value, '$[1]') AS uuid,
               json_extract(j.value, '$[2]') AS customer, json_extract(j.value, '$[3]') AS platform,
               json_extract(j.value, '$[4]') AS extra, b.state, b.attempts, b.received_at, b.finished_at,
               b.last_error
        FROM batches b, json_each(b.mutations) j
        WHERE b.dead = 0 OR NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.id = (b.id << 16) + j.key)
        UNION ALL
        SELECT id, audience_id, op, external_user_id, uuid, customer, platform, extra, state, attempts,
               received_at, finished_at, last_error
        FROM dead_letters;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
OUR_TABLES = {"audiences", "mutations", "batches", "dead_letters", "dispatchers", "sqlite_sequence"}
MUTATION_ID_BITS = 16
"""A batch holds at most 2**16 mutations; a mutation's id is `batch id << 16 | index`."""


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
