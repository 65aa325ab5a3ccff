"""What operators ask of the outbox: status, dead letters, the audience mapping, backups.

Every query here uses the partial indexes or the per-audience counters, so it stays fast with
millions of delivered rows, but one: a replay reads the batches stored after its first dead letter,
once (outbox/replay.py, which holds the replay's statements). None of it runs on the request path. Both backends run these statements
(see outbox/store.py); the file commands (backup, check, vacuum) are SQLite's alone.
"""
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

from outbox.errors import StoreError
from outbox.files import open_private
from outbox.replay import replay

SQLITE_ONLY = ("{command} works on the SQLite file; on PostgreSQL use the server's own tools "
               "(pg_dump, pg_basebackup or the managed service's backups; VACUUM and amcheck)")


@dataclass(frozen=True)
class DeadFilter:
    """Which dead letters an operator means; None matches anything."""

    integration: Optional[str] = None
    audience: Optional[str] = None
    """The DMP's audience id or the key the DMP sends."""
    customer: Optional[str] = None
    older_than: Optional[float] = None
    """Seconds since the mutation died."""
    newer_than: Optional[float] = None

    def where(self, now, database):
        clauses, parameters = ["m.state = 'dead'"], []
        if self.integration is not None:
            clauses.append("a.integration = ?")
            parameters.append(self.integration)
        if self.audience is not None:
            clauses.append("(a.dmp_id = ? OR a.key = ?)")
            parameters += [self.audience, self.audience]
        if self.customer is not None:
            clauses.append(f"{database.text_of('COALESCE(m.customer, a.customer)')} = ?")
            parameters.append(str(self.customer))
        if self.older_than is not None:
            clauses.append("m.finished_at <= ?")
            parameters.append(now - self.older_than)
        if self.newer_than is not None:
            clauses.append("m.finished_at >= ?")
            parameters.append(now - self.newer_than)
        return " AND ".join(clauses), parameters


@dataclass(frozen=True)
class DeadLetter:
    id: int
    integration: str
    audience: str
    dmp_id: str
    op: str
    external_user_id: str
    uuid: Optional[str]
    customer: Any
    platform: Any
    extra: Optional[str]
    attempts: int
    received_at: float
    died_at: float
    reason: Optional[str]

    def as_dict(self):
        return asdict(self)


DEAD_COLUMNS = (
    "m.id, a.integration, a.key, a.dmp_id, m.op, m.external_user_id, m.uuid, m.customer, m.platform, m.extra,"
    " m.attempts, m.received_at, m.finished_at, m.last_error"
)


class Admin:
    def __init__(self, outbox, *, clock=time.time):
        self.outbox = outbox
        self.database = outbox.database
        self.clock = clock
        """The database's clock (outbox/clock.py), for the commands' `now`."""

    # Status.

    def status(self, *, now):
        """Per integration: mutations pending, leased, dead; the oldest pending; audiences by state."""
        rows = self.database.read(
            "SELECT integration, CAST(SUM(pending) AS BIGINT), COUNT(*),"
            " SUM(CASE WHEN state = 'creating' THEN 1 ELSE 0 END), SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END),"
            " CAST(SUM(CASE WHEN lease_expires_at > ? THEN"
            "   (SELECT SUM(size) FROM batches b WHERE b.audience_id = audiences.id AND b.state = 'pending'"
            "    AND b.id <= audiences.claimed_through) ELSE 0 END) AS BIGINT),"
            " MIN(CASE WHEN pending > 0 THEN (SELECT received_at FROM batches b"
            "   WHERE b.audience_id = audiences.id AND b.state = 'pending' ORDER BY b.id LIMIT 1) END)"
            " FROM audiences GROUP BY integration ORDER BY integration",
            (now,),
        )
        dead = dict(self.database.read(
            "SELECT a.integration, COUNT(*) FROM dead_letters m JOIN audiences a ON a.id = m.audience_id"
            " WHERE m.state = 'dead' GROUP BY a.integration"
        ))
        errors = {
            name: error
            for name, error in self.database.read(
                "SELECT a.integration, a.last_error FROM audiences a WHERE a.last_error IS NOT NULL"
                " AND a.updated_at = (SELECT MAX(updated_at) FROM audiences b WHERE b.integration = a.integration"
                " AND b.last_error IS NOT NULL) ORDER BY a.id"
            )
        }
        integrations = {}
        for name, pending, audiences, creating, failed, leased, oldest in rows:
            integrations[name] = {
                "pending": pending or 0,
                "leased": leased or 0,
                "dead": dead.get(name, 0),
                "oldest_pending_age": None if oldest is None else max(0.0, now - oldest),
                "audiences": audiences,
                "audiences_creating": creating or 0,
                "audiences_failed": failed or 0,
                "last_error": errors.get(name),
            }
        dispatchers = [
            {"owner": owner, "seen_age": now - seen_at}
            for owner, seen_at in self.database.read("SELECT owner, seen_at FROM dispatchers ORDER BY owner")
        ]
        return {"integrations": integrations, "dispatchers": dispatchers, "files": self.file_sizes()}

    def file_sizes(self):
        return self.database.sizes()

    # Dead letters.

    def dead(self, where, *, now, limit=100):
        clause, parameters = where.where(now, self.database)
        return [
            DeadLetter(*row)
            for row in self.database.read(
                f"SELECT {DEAD_COLUMNS} FROM dead_letters m JOIN audiences a ON a.id = m.audience_id"
                f" WHERE {clause} ORDER BY m.id LIMIT ?",
                (*parameters, limit),
            )
        ]

    def dead_letter(self, mutation_id):
        rows = self.database.read(
            f"SELECT {DEAD_COLUMNS} FROM dead_letters m JOIN audiences a ON a.id = m.audience_id WHERE m.id = ?",
            (mutation_id,),
        )
        return DeadLetter(*rows[0]) if rows else None

    def replay(self, where, *, now, chunk=1000, progress=None):
        """Queue the matching dead letters again, at the end of their audiences' queues, in order.

        A dead mutation is replayed only if it is the latest of its user in its audience: one that
        a later mutation (pending, delivered or dead) supersedes would resurrect a stale state, so
        it is marked superseded instead. Audiences whose creation failed are created again.
        Returns (replayed, superseded).
        """
        clause, parameters = where.where(now, self.database)
        return replay(self.database, clause, parameters, now=now, chunk=chunk, progress=progress)

    def purge_dead(self, where, *, now, chunk=5000, progress=None):
        """Delete the matching dead letters for good; returns how many."""
        deleted = 0
        while True:
            with self.database.transaction() as connection:
                clause, parameters = where.where(now, self.database)
                count = connection.execute(
                    f"DELETE FROM dead_letters WHERE id IN (SELECT m.id FROM dead_letters m"
                    f" JOIN audiences a ON a.id = m.audience_id WHERE {clause} LIMIT ?)",
                    (*parameters, chunk),
                ).rowcount
            deleted += count
            if progress:
                progress(deleted)
            if count < chunk:
                return deleted

    # Retrying now.

    def retry_now(self, *, integration=None, audience=None, now):
        """Make the audiences waiting for a retry (a backoff, a postponement, a creation to try
        again) due at `now`, when the operator knows the platform is back; attempts already
        counted stay counted. Returns (audiences, their undelivered mutations).

        The audiences are locked first in the order requests lock them, so that on PostgreSQL
        this never deadlocks with a request (see outbox/replay.py's lock_audiences)."""
        clauses, parameters = ["(pending > 0 OR state = 'creating') AND next_attempt_at > ?"], [now]
        if integration is not None:
            clauses.append("integration = ?")
            parameters.append(integration)
        if audience is not None:
            clauses.append("(dmp_id = ? OR key = ?)")
            parameters += [audience, audience]
        in_order, database = self.database.CODE_POINT_ORDER, self.database
        with database.transaction() as connection:
            waiting = connection.execute(
                f"SELECT id, pending FROM audiences WHERE {' AND '.join(clauses)}"
                f" ORDER BY integration{in_order}, key{in_order}{database.LOCK_ROWS}",
                parameters,
            ).fetchall()
            if waiting:
                among, ids = database.in_list("id", [audience_id for audience_id, _ in waiting])
                connection.execute(f"UPDATE audiences SET next_attempt_at = ? WHERE {among}", (now, ids))
                database.notify_work(connection)
        return len(waiting), sum(pending for _, pending in waiting)

    # The audience mapping.

    AUDIENCE_COLUMNS = "integration, dmp_id, key, name, customer, target_id, state, pending, attempts, last_error"

    def audiences(self, *, integration=None, state=None, limit=1000):
        clauses, parameters = ["TRUE"], []
        if integration is not None:
            clauses.append("integration = ?")
            parameters.append(integration)
        if state is not None:
            clauses.append("state = ?")
            parameters.append(state)
        return [
            audience_dict(row)
            for row in self.database.read(
                f"SELECT {self.AUDIENCE_COLUMNS} FROM audiences WHERE {' AND '.join(clauses)}"
                " ORDER BY integration, id LIMIT ?",
                (*parameters, limit),
            )
        ]

    def audience(self, integration, audience):
        rows = self.database.read(
            f"SELECT {self.AUDIENCE_COLUMNS}, id FROM audiences WHERE integration = ? AND (dmp_id = ? OR key = ?)"
            " ORDER BY dmp_id = ? DESC LIMIT 1",
            (integration, audience, audience, audience),
        )
        if not rows:
            return None
        found = audience_dict(rows[0][:-1])
        found["mutations"] = dict(self.database.read(
            "SELECT state, SUM(size) FROM batches WHERE audience_id = ? GROUP BY state"
            " UNION ALL SELECT state, COUNT(*) FROM dead_letters WHERE audience_id = ? GROUP BY state",
            (rows[0][-1], rows[0][-1]),
        ))
        return found

    def set_audience(self, integration, dmp_id, target_id, *, now):
        """Map `dmp_id` to the platform's `target_id` by hand; its mutations flow to that id."""
        with self.database.transaction() as connection:
            for _ in range(2):
                if connection.execute(
                    "UPDATE audiences SET target_id = ?, state = 'ready', attempts = 0, last_error = NULL,"
                    " next_attempt_at = ?, updated_at = ? WHERE integration = ? AND dmp_id = ?",
                    (target_id, now, now, integration, dmp_id),
                ).rowcount:
                    return
                if connection.execute(
                    "INSERT INTO audiences (integration, key, dmp_id, target_id, state, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, 'ready', ?, ?) ON CONFLICT DO NOTHING",
                    (integration, dmp_id, dmp_id, target_id, now, now),
                ).rowcount:
                    return

    def forget_audience(self, integration, audience):
        """Delete the mapping and its finished rows; refused while mutations wait or are dead."""
        with self.database.transaction() as connection:
            row = connection.execute(
                "SELECT id FROM audiences WHERE integration = ? AND (dmp_id = ? OR key = ?)",
                (integration, audience, audience),
            ).fetchone()
            if row is None:
                raise StoreError(f"no audience {audience} in integration {integration}")
            waiting = dict(connection.execute(
                "SELECT 'pending', SUM(size) FROM batches WHERE audience_id = ? AND state = 'pending' HAVING COUNT(*) > 0"
                " UNION ALL SELECT 'dead', COUNT(*) FROM dead_letters WHERE audience_id = ? AND state = 'dead'"
                " HAVING COUNT(*) > 0", (row[0], row[0]),
            ))
            if waiting:
                counts = ", ".join(f"{count} {state}" for state, count in sorted(waiting.items()))
                raise StoreError(
                    f"audience {audience} still has mutations ({counts}); let them be delivered, "
                    "or replay or purge the dead ones, before forgetting it"
                )
            connection.execute("DELETE FROM batches WHERE audience_id = ?", (row[0],))
            connection.execute("DELETE FROM dead_letters WHERE audience_id = ?", (row[0],))
            connection.execute("DELETE FROM audiences WHERE id = ?", (row[0],))

    # Files.

    def purge_delivered(self, *, now, progress=None):
        purged = 0
        while True:
            count = self.outbox.purge(now=now)
            purged += count
            if progress:
                progress(purged)
            if count < 5000:
                return purged

    def backup(self, destination, *, progress=None, pages=1024):
        """An online, consistent copy through SQLite's backup API (writers keep going)."""
        self.require_sqlite("backup")
        try:
            os.close(open_private(destination, new=True))
        except FileExistsError:
            raise StoreError(f"{destination} exists; choose a new file for the backup") from None
        target = sqlite3.connect(destination)
        try:
            self.database.connection().backup(
                target, pages=pages, progress=(lambda status, remaining, total: progress(total - remaining, total)) if progress else None
            )
        finally:
            target.close()
        return size_of(destination)

    def check(self, path=None, *, full=False):
        """What SQLite finds wrong with the database file (or a backup at `path`): [] when it is
        sound. A connection of its own that only reads, so it is safe beside the running service
        (writers go on meanwhile) and leaves no -wal or -shm beside a backup; `full` also checks
        that every index matches its table."""
        if path is None:
            self.require_sqlite("check")
            path = self.database.path
        if not os.path.isfile(path):
            raise StoreError(f"{path} does not exist")
        pragma = "integrity_check" if full else "quick_check"
        try:
            connection = sqlite3.connect(path)
            try:
                found = [row[0] for row in connection.execute(f"PRAGMA {pragma}")]
            finally:
                connection.close()
        except sqlite3.DatabaseError as error:
            return [str(error)]
        return [] if found == ["ok"] else found

    def vacuum(self):
        """Checkpoint and truncate the WAL, then rebuild the file to return free pages to the disk."""
        self.require_sqlite("vacuum")
        before = self.file_sizes()
        self.outbox.checkpoint(truncate=True)
        with self.database.patient() as connection:
            connection.execute("VACUUM")
        self.outbox.checkpoint(truncate=True)
        return before, self.file_sizes()

    def require_sqlite(self, command):
        if self.database.kind != "sqlite":
            raise StoreError(SQLITE_ONLY.format(command=command))


def audience_dict(row):
    keys = ("integration", "dmp_id", "key", "name", "customer", "target_id", "state", "pending", "attempts", "last_error")
    return dict(zip(keys, row))


def size_of(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
