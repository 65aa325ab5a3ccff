"""Replaying dead letters: queueing them again at the end of their audiences' queues, in order,
without resurrecting a stale state (a dead mutation that a later one of the same user supersedes
is marked superseded instead). outbox/admin.py's `Admin.replay` is the way in.

The audiences a chunk touches are locked first, in the order requests lock theirs, so that a
replay and a request never deadlock on PostgreSQL.
"""
import contextlib
import json

from outbox.store import batch_of, encode_batch


def replay(database, clause, parameters, *, now, chunk=1000, progress=None):
    """Queue the dead letters matching `clause` again, `chunk` at a time, in id order; one that a
    later mutation of its user supersedes is marked superseded. Returns (replayed, superseded)."""
    replayed = superseded = 0
    with LaterMutations(database, clause, parameters) as later:
        while True:
            with database.transaction() as connection:
                later.catch_up(connection)
                rows = connection.execute(
                    f"SELECT m.id, m.audience_id, m.external_user_id, m.op, m.uuid, m.customer, m.platform, m.extra"
                    f" FROM dead_letters m JOIN audiences a ON a.id = m.audience_id WHERE {clause} ORDER BY m.id"
                    " LIMIT ?",
                    (*parameters, chunk),
                ).fetchall()
                lock_audiences(connection, database, {row[1] for row in rows})
                for row in rows:
                    if requeue(connection, later, row, now):
                        replayed += 1
                    else:
                        superseded += 1
            if progress:
                progress(replayed, superseded)
            if len(rows) < chunk:
                return replayed, superseded


def lock_audiences(connection, database, audience_ids):
    """Lock the audiences a chunk of dead letters touches before touching any, in the order a
    request locks its audiences (by key), so a replay and a request never deadlock."""
    if audience_ids:
        among, ids = database.in_list("id", sorted(audience_ids))
        in_order = database.CODE_POINT_ORDER
        connection.execute(f"SELECT id FROM audiences WHERE {among} ORDER BY integration{in_order}, key{in_order}"
                           f"{database.LOCK_ROWS}", (ids,)).fetchall()


def requeue(connection, later, row, now):
    """Queue one dead letter again, or mark it superseded if `later` holds a later mutation of its
    user; whether it was queued."""
    mutation_id, audience_id, user, op, uuid, customer, platform, extra = row
    if later.exists(connection, audience_id, user, after=mutation_id):
        connection.execute(
            "UPDATE dead_letters SET state = 'superseded', finished_at = ? WHERE id = ?", (now, mutation_id)
        )
        return False
    connection.execute(
        "UPDATE audiences SET pending = pending + 1,"
        " next_attempt_at = CASE WHEN next_attempt_at < ? THEN next_attempt_at ELSE ? END,"
        " attempts = 0, state = CASE state WHEN 'failed' THEN 'creating' ELSE state END WHERE id = ?",
        (now, now, audience_id),
    )
    connection.execute(
        "INSERT INTO batches (audience_id, op, size, mutations, received_at) VALUES (?, ?, 1, ?, ?)",
        (audience_id, op, encode_batch([[user, uuid, customer, platform, json.loads(extra or "null")]]), now),
    )
    connection.execute("UPDATE dead_letters SET state = 'replayed', finished_at = ? WHERE id = ?", (now, mutation_id))
    return True


class LaterMutations:
    """Which users of the audiences a replay touches have a mutation after a given one.

    The batches hold their users inside JSON, which no index reaches. So the batches stored from
    the first matching dead letter's on are read once, before the replay writes anything (a read
    holds no lock, and requests go on being stored meanwhile), into a TEMP table of each user's
    latest mutation id; each chunk's transaction then adds only the batches stored since. Asking
    the batches once per dead letter would read them as many times, holding the write lock. The
    audiences to read are those of the matching dead letters when the replay starts.
    """

    def __init__(self, database, clause, parameters):
        self.database = database
        with database.patient() as connection:
            for table in ("replay_latest", "replay_audiences"):
                connection.execute(f"DROP TABLE IF EXISTS {table}")
            connection.execute(
                "CREATE TEMP TABLE replay_latest (audience_id BIGINT NOT NULL, external_user_id TEXT NOT NULL,"
                " id BIGINT NOT NULL, PRIMARY KEY (audience_id, external_user_id))"
            )
            connection.execute(
                "CREATE TEMP TABLE replay_audiences AS SELECT DISTINCT m.audience_id AS id"
                f" FROM dead_letters m JOIN audiences a ON a.id = m.audience_id WHERE {clause}",
                parameters,
            )
            (first,) = connection.execute(
                f"SELECT MIN(m.id) FROM dead_letters m JOIN audiences a ON a.id = m.audience_id WHERE {clause}",
                parameters,
            ).fetchone()
            self.read_through = None if first is None else batch_of(first) - 1
            self.catch_up(connection)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(Exception):
            for table in ("replay_latest", "replay_audiences"):
                self.database.connection().execute(f"DROP TABLE IF EXISTS {table}")

    def catch_up(self, connection):
        """Take in the batches stored since the last read (all of them, the first time)."""
        if self.read_through is None:
            return
        (last,) = connection.execute("SELECT MAX(id) FROM batches").fetchone()
        if last is None or last <= self.read_through:
            return
        members = self.database.batch_members(
            "b.id > ? AND b.id <= ? AND b.audience_id IN (SELECT id FROM replay_audiences)")
        connection.execute(
            "INSERT INTO replay_latest (audience_id, external_user_id, id) SELECT audience_id, external_user_id,"
            f" MAX(id) FROM ({members}) m WHERE TRUE GROUP BY audience_id, external_user_id"
            " ON CONFLICT (audience_id, external_user_id) DO UPDATE SET id = CASE"
            " WHEN excluded.id > replay_latest.id THEN excluded.id ELSE replay_latest.id END",
            (self.read_through, last),
        )
        self.read_through = last

    @staticmethod
    def exists(connection, audience_id, user, *, after):
        """Whether a mutation of `user` after the mutation `after` is pending, delivered (and
        not yet purged) or dead in the audience."""
        latest = connection.execute(
            "SELECT id FROM replay_latest WHERE audience_id = ? AND external_user_id = ?", (audience_id, user)
        ).fetchone()
        if latest and latest[0] > after:
            return True
        return connection.execute(
            "SELECT 1 FROM dead_letters WHERE audience_id = ? AND external_user_id = ? AND id > ? AND state = 'dead'"
            " LIMIT 1",
            (audience_id, user, after),
        ).fetchone() is not None
