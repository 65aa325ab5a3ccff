"""Moving an SQLite outbox into an empty PostgreSQL one (`diy-wsgi migrate --to URL`).

What moves: every audience with its ids and mapping (leases are not: nothing runs meanwhile),
the undelivered batches in their order and with their ids, and every dead letter. Delivered
batches stay behind (they are kept only for `retention`). Ids keep their meaning: PostgreSQL
hands out new ids after every id the SQLite file ever used, so a mutation id names one mutation
before and after the move.

The SQLite file is held with its write lock for the whole copy, so no request can be stored
there meanwhile and missed; and the copy is one PostgreSQL transaction, so an interrupted move
leaves the target empty and can simply be run again.
"""
import time

from outbox.errors import StoreError
from outbox.values import JsonValue

CHUNK = 1000
AUDIENCE_COLUMNS = ("id, integration, key, dmp_id, name, customer, target_id, state, pending, attempts,"
                    " next_attempt_at, last_error, created_at, updated_at")
BATCH_COLUMNS = "id, audience_id, op, size, dead, mutations, state, attempts, received_at, finished_at, last_error"
DEAD_COLUMNS = ("id, audience_id, op, external_user_id, uuid, customer, platform, extra, state, attempts,"
                " received_at, finished_at, last_error")
QUIET_FOR = 30.0
"""A dispatcher heard from this recently is taken to be running."""


def move(source, target, *, now=None, progress=None):
    """Copy the outbox in `source` (an SQLite Database) into `target` (an empty
    PostgresDatabase); returns what was moved: {"audiences": n, "pending": n, "dead_letters": n}."""
    now = time.time() if now is None else now
    progress = progress or (lambda table, count: None)
    with source.transaction() as reader:
        refuse_while_running(reader, now)
        with target.transaction() as writer:
            refuse_unless_empty(writer, target.location)
            moved = {
                "audiences": copy_rows(reader, writer, "audiences", AUDIENCE_COLUMNS, "", progress,
                                       json_columns=(5,)),
                "batches": copy_rows(reader, writer, "batches", BATCH_COLUMNS, " WHERE state = 'pending'", progress),
                "dead_letters": copy_rows(reader, writer, "dead_letters", DEAD_COLUMNS, "", progress,
                                          json_columns=(5, 6)),
            }
            continue_ids_after(reader, writer)
            moved["pending"] = compare(reader, writer)
    return moved


def refuse_while_running(reader, now):
    rows = reader.execute("SELECT owner, seen_at FROM dispatchers WHERE seen_at > ?", (now - QUIET_FOR,)).fetchall()
    if rows:
        owner, seen_at = max(rows, key=lambda row: row[1])
        raise StoreError(
            f"a dispatcher is running on this outbox ({owner}, heard from {max(0.0, now - seen_at):.0f}s ago): "
            "stop the service and every diy-wsgi dispatch first, then run migrate again"
        )


def refuse_unless_empty(writer, location):
    for table in ("audiences", "batches", "dead_letters"):
        if writer.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone():
            raise StoreError(f"the database {location} already holds an outbox ({table} is not empty); "
                             "migrate moves into an empty one")


def copy_rows(reader, writer, table, columns, where, progress, json_columns=()):
    """Copy `table` in id order, CHUNK rows at a time; returns how many."""
    placeholders = ", ".join("?" * len(columns.split(",")))
    insert = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"
    copied, after = 0, None
    while True:
        rows = reader.execute(
            f"SELECT {columns} FROM {table}{where}{' AND' if where else ' WHERE'} id > ? ORDER BY id LIMIT ?",
            (-1 if after is None else after, CHUNK),
        ).fetchall()
        if not rows:
            return copied
        writer.executemany(insert, [wrap(row, json_columns) for row in rows])
        copied += len(rows)
        after = rows[-1][0]
        progress(table, copied)


def wrap(row, json_columns):
    return tuple(JsonValue(value) if index in json_columns else value for index, value in enumerate(row))


def continue_ids_after(reader, writer):
    """New ids start after every id the file handed out (delivered and purged ones too)."""
    used = dict(reader.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    for table in ("audiences", "batches"):
        (highest,) = reader.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()
        last = max(highest, used.get(table, 0))
        if last:
            writer.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), ?)", (last,))


def compare(reader, writer):
    """The pending mutations and dead letters of both sides, which must agree; returns pending."""
    query = ("SELECT (SELECT COALESCE(SUM(size - dead), 0) FROM batches WHERE state = 'pending'),"
             " (SELECT COUNT(*) FROM dead_letters WHERE state = 'dead')")
    before, after = tuple(reader.execute(query).fetchone()), tuple(writer.execute(query).fetchone())
    if tuple(map(int, before)) != tuple(map(int, after)):
        raise StoreError(f"the copy does not match (pending, dead: {before} in SQLite, {after} in PostgreSQL); "
                         "nothing was moved")
    return int(before[0])
