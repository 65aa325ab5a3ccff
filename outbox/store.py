"""The outbox's rows: what the receiver commits and what the dispatcher claims and settles.

Storage only moves rows; when to retry and what to give up on is the dispatcher's call. Every
method is one transaction, and every settling method checks the lease token first: a dispatcher
whose lease ran out (it was too slow, or presumed dead) changes nothing.

Delivery order: a claim takes the first pending mutations of one audience by id, and no other
dispatcher may claim that audience until the lease is settled or expires. New rows only ever get
higher ids (AUTOINCREMENT), so "pending and id <= claimed_through" is exactly the claimed batch.
"""
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from targets.base import Audience, Mutation

AUDIENCE_COLUMNS = (
    "id, integration, key, dmp_id, name, customer, target_id, state, pending, attempts, "
    "last_error, claimed_through"
)
MUTATION_COLUMNS = "id, op, external_user_id, uuid, customer, platform, extra"
RELEASED = "lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, claimed_through = NULL"


@dataclass(frozen=True)
class ReceivedMutation:
    """A mutation as the DMP sent it, before it has a row."""

    audience: str
    external_user_id: str
    uuid: Optional[str] = None
    customer: Optional[Any] = None
    platform: Optional[Any] = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AudienceRecord:
    id: int
    integration: str
    key: str
    """The value the DMP puts in `Audience` of mutations: its own id, or ours if we returned one."""
    dmp_id: str
    name: Optional[str]
    customer: Any
    target_id: Optional[str]
    state: str
    """`creating` until the platform has it, then `ready`; `failed` if the platform refused it."""
    pending: int
    attempts: int
    last_error: Optional[str]
    claimed_through: Optional[int]

    def for_target(self):
        return Audience(self.integration, self.dmp_id, self.name, self.customer, self.target_id)


@dataclass(frozen=True)
class Claim:
    """One audience leased to one dispatcher: create it, or deliver `mutations` (in id order)."""

    audience: AudienceRecord
    token: str
    mutations: Sequence[Mutation]
    received_at: Sequence[float] = ()
    """When each of `mutations` was committed (for the delivery latency)."""


class Outbox:
    def __init__(self, database, *, retention=86400.0):
        self.database = database
        self.retention = retention

    # The receiver's side.

    def enqueue(self, integration, op, received, *, pass_through, now):
        """Commit `received` (ReceivedMutation, DMP order) in one transaction; returns the count.

        An audience first seen here is either taken as the platform's own id (`pass_through`:
        the DMP sends the id we handed back) or queued for creation on first use.
        """
        by_audience = {}
        for m in received:
            by_audience.setdefault(m.audience, []).append(
                (op, m.external_user_id, m.uuid, m.customer, m.platform, encode_extra(m.extra), now)
            )
        rows = []
        with self.database.transaction() as connection:
            for key, prepared in by_audience.items():
                audience_id = self._audience_for_key(
                    connection, integration, key, prepared[0][3], pass_through, now
                )
                connection.execute(
                    "UPDATE audiences SET pending = pending + ? WHERE id = ?", (len(prepared), audience_id)
                )
                rows.extend((audience_id, *row) for row in prepared)
            connection.executemany(
                "INSERT INTO mutations (audience_id, op, external_user_id, uuid, customer, platform, extra, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def _audience_for_key(self, connection, integration, key, customer, pass_through, now):
        for column in ("key", "dmp_id"):
            row = connection.execute(
                f"SELECT id FROM audiences WHERE integration = ? AND {column} = ?", (integration, key)
            ).fetchone()
            if row:
                return row[0]
        state, target_id = ("ready", key) if pass_through else ("creating", None)
        return connection.execute(
            "INSERT INTO audiences (integration, key, dmp_id, customer, target_id, state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (integration, key, key, customer, target_id, state, now, now),
        ).fetchone()[0]

    def audience(self, integration, dmp_id):
        rows = self.database.read(
            f"SELECT {AUDIENCE_COLUMNS} FROM audiences WHERE integration = ? AND dmp_id = ?", (integration, dmp_id)
        )
        return AudienceRecord(*rows[0]) if rows else None

    def record_created(self, integration, dmp_id, *, name, customer, target_id, key, now):
        """The platform has the audience: store the mapping; later mutations flow at once.

        `key` is what the DMP will send in mutations; an audience already known keeps its key,
        and a key taken by another audience falls back to the DMP's id.
        """
        with self.database.transaction() as connection:
            updated = connection.execute(
                "UPDATE audiences SET name = ?, customer = ?, target_id = ?, state = 'ready', attempts = 0,"
                " last_error = NULL, next_attempt_at = ?, updated_at = ? WHERE integration = ? AND dmp_id = ?",
                (name, customer, target_id, now, now, integration, dmp_id),
            ).rowcount
            if not updated:
                taken = connection.execute(
                    "SELECT 1 FROM audiences WHERE integration = ? AND key = ?", (integration, key)
                ).fetchone()
                connection.execute(
                    "INSERT INTO audiences (integration, key, dmp_id, name, customer, target_id, state,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'ready', ?, ?)",
                    (integration, dmp_id if taken else key, dmp_id, name, customer, target_id, now, now),
                )
            return self._audience_in(connection, integration, dmp_id)

    def record_creation_pending(self, integration, dmp_id, *, name, customer, error, retry_at, now):
        """The platform could not create the audience in time: the dispatcher tries again from
        `retry_at` (this first try counts as an attempt)."""
        with self.database.transaction() as connection:
            updated = connection.execute(
                "UPDATE audiences SET name = ?, customer = ?, last_error = ?, updated_at = ?,"
                " next_attempt_at = MAX(next_attempt_at, ?),"
                " state = CASE state WHEN 'failed' THEN 'creating' ELSE state END,"
                " attempts = CASE state WHEN 'failed' THEN 1 ELSE attempts + 1 END"
                " WHERE integration = ? AND dmp_id = ?",
                (name, customer, error, now, retry_at, integration, dmp_id),
            ).rowcount
            if not updated:
                connection.execute(
                    "INSERT INTO audiences (integration, key, dmp_id, name, customer, state, last_error, attempts,"
                    " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'creating', ?, 1, ?, ?, ?)",
                    (integration, dmp_id, dmp_id, name, customer, error, retry_at, now, now),
                )
            return self._audience_in(connection, integration, dmp_id)

    def _audience_in(self, connection, integration, dmp_id):
        row = connection.execute(
            f"SELECT {AUDIENCE_COLUMNS} FROM audiences WHERE integration = ? AND dmp_id = ?", (integration, dmp_id)
        ).fetchone()
        return AudienceRecord(*row)

    # The dispatcher's side.

    def claim(self, owner, *, now, lease, limit, batch_sizes):
        """Lease up to `limit` audiences with due work, oldest due first.

        `batch_sizes` maps each integration this dispatcher serves to its target's max batch;
        audiences of other integrations are left alone.
        """
        if limit <= 0 or not batch_sizes:
            return []
        integrations = list(batch_sizes)
        marks = ", ".join("?" * len(integrations))
        with self.database.transaction() as connection:
            audiences = [
                AudienceRecord(*row)
                for row in connection.execute(
                    f"SELECT {AUDIENCE_COLUMNS} FROM audiences"
                    " WHERE (pending > 0 OR state = 'creating') AND next_attempt_at <= ?"
                    " AND (lease_expires_at IS NULL OR lease_expires_at <= ?)"
                    f" AND integration IN ({marks}) ORDER BY next_attempt_at, id LIMIT ?",
                    (now, now, *integrations, limit),
                )
            ]
            leased = []
            for audience in audiences:
                rows = []
                if audience.state != "creating":
                    rows = connection.execute(
                        f"SELECT {MUTATION_COLUMNS}, received_at FROM mutations WHERE audience_id = ?"
                        " AND state = 'pending' ORDER BY id LIMIT ?",
                        (audience.id, batch_sizes[audience.integration]),
                    ).fetchall()
                    if not rows:
                        connection.execute("UPDATE audiences SET pending = 0 WHERE id = ?", (audience.id,))
                        continue
                token = secrets.token_hex(8)
                connection.execute(
                    "UPDATE audiences SET lease_token = ?, lease_owner = ?, lease_expires_at = ?, claimed_through = ?"
                    " WHERE id = ?",
                    (token, owner, now + lease, rows[-1][0] if rows else None, audience.id),
                )
                leased.append((audience, token, rows))
        return [
            Claim(audience, token, [decode_mutation(row[:-1]) for row in rows], [row[-1] for row in rows])
            for audience, token, rows in leased
        ]

    def settle(self, claim, *, dead=None, now):
        """The batch is done: every claimed mutation delivered, except `dead` (id -> reason).

        Returns False, changing nothing, when the lease was lost.
        """
        dead = dead or {}
        with self.database.transaction() as connection:
            if not self._holds(connection, claim):
                return False
            finished = self._dead_letter(connection, claim, dead.items(), now)
            finished += self._mark_delivered(connection, claim, now)
            connection.execute(
                f"UPDATE audiences SET {RELEASED}, pending = pending - ?, attempts = 0, last_error = ?,"
                " next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (finished, first_reason(dead), now, now, claim.audience.id),
            )
            return True

    def dead_letter(self, claim, reason, *, now):
        """Give up on the whole claimed batch with `reason` (kept for the operator)."""
        return self.settle(claim, dead={m.id: reason for m in claim.mutations}, now=now)

    def retry_later(self, claim, reason, *, at, now):
        """A transient failure: the audience (and everything queued behind) waits until `at`."""
        with self.database.transaction() as connection:
            if not self._holds(connection, claim):
                return False
            if claim.mutations:
                connection.execute(
                    "UPDATE mutations SET attempts = attempts + 1, last_error = ?"
                    " WHERE audience_id = ? AND state = 'pending' AND id <= ?",
                    (reason, claim.audience.id, claim.mutations[-1].id),
                )
            connection.execute(
                f"UPDATE audiences SET {RELEASED}, attempts = attempts + 1, last_error = ?, next_attempt_at = ?,"
                " updated_at = ? WHERE id = ?",
                (reason, at, now, claim.audience.id),
            )
            return True

    def postpone(self, claim, *, at, now):
        """Not tried (rate limit, open breaker): wait until `at`, counting no attempt."""
        return self._release_audience(claim, "", (), at=at, now=now)

    def recreate(self, claim, reason, *, now):
        """The platform lost the audience: forget its id and create it again before delivering."""
        return self._release_audience(claim, "state = 'creating', target_id = NULL, last_error = ?", (reason,), at=now, now=now)

    def created(self, claim, target_id, *, now):
        return self._release_audience(
            claim, "state = 'ready', target_id = ?, attempts = 0, last_error = NULL", (target_id,), at=now, now=now
        )

    def creation_failed(self, claim, reason, *, now):
        """The platform refused the audience: its mutations will be dead-lettered with `reason`."""
        return self._release_audience(claim, "state = 'failed', attempts = 0, last_error = ?", (reason,), at=now, now=now)

    def _release_audience(self, claim, assignments, parameters, *, at, now):
        """Settle a claim that moved no mutation: set `assignments`, give the lease back, and
        make the audience due at `at`. False, changing nothing, when the lease was lost."""
        with self.database.transaction() as connection:
            if not self._holds(connection, claim):
                return False
            connection.execute(
                f"UPDATE audiences SET {RELEASED}, {assignments + ', ' if assignments else ''}"
                "next_attempt_at = ?, updated_at = ? WHERE id = ?",
                (*parameters, at, now, claim.audience.id),
            )
            return True

    def release(self, owner):
        """Give back every lease `owner` holds (a graceful stop), so others need not wait them out."""
        with self.database.transaction() as connection:
            return connection.execute(f"UPDATE audiences SET {RELEASED} WHERE lease_owner = ?", (owner,)).rowcount

    def _holds(self, connection, claim):
        row = connection.execute("SELECT lease_token FROM audiences WHERE id = ?", (claim.audience.id,)).fetchone()
        return row is not None and row[0] == claim.token

    def _dead_letter(self, connection, claim, reasons, now):
        cursor = connection.executemany(
            "UPDATE mutations SET state = 'dead', last_error = ?, finished_at = ?"
            " WHERE id = ? AND audience_id = ? AND state = 'pending'",
            [(reason, now, mutation_id, claim.audience.id) for mutation_id, reason in reasons],
        )
        return max(cursor.rowcount, 0)

    def _mark_delivered(self, connection, claim, now):
        if not claim.mutations:
            return 0
        batch = (claim.audience.id, claim.mutations[-1].id)
        self._supersede_dead(connection, claim, now)
        if self.retention <= 0:
            sql, parameters = "DELETE FROM mutations WHERE audience_id = ? AND state = 'pending' AND id <= ?", batch
        else:
            sql = (
                "UPDATE mutations SET state = 'done', finished_at = ?"
                " WHERE audience_id = ? AND state = 'pending' AND id <= ?"
            )
            parameters = (now, *batch)
        return connection.execute(sql, parameters).rowcount

    def _supersede_dead(self, connection, claim, now):
        """Dead mutations of users this batch delivers are stale: replay must not resurrect them."""
        audience_id = claim.audience.id
        if not connection.execute(
            "SELECT 1 FROM mutations WHERE audience_id = ? AND state = 'dead' LIMIT 1", (audience_id,)
        ).fetchone():
            return
        connection.execute(
            "UPDATE mutations SET state = 'superseded', finished_at = ? WHERE audience_id = ? AND state = 'dead'"
            " AND id < ? AND external_user_id IN (SELECT external_user_id FROM mutations"
            " WHERE audience_id = ? AND state = 'pending' AND id <= ?)",
            (now, audience_id, claim.mutations[0].id, audience_id, claim.mutations[-1].id),
        )

    # Housekeeping.

    def purge(self, *, now, limit=5000):
        """Delete up to `limit` finished mutations (delivered, superseded, replayed) older than the
        retention; dead ones stay until an operator purges them. Returns how many."""
        with self.database.transaction() as connection:
            return connection.execute(
                "DELETE FROM mutations WHERE id IN (SELECT id FROM mutations"
                " WHERE state IN ('done', 'superseded', 'replayed') AND finished_at < ? LIMIT ?)",
                (now - self.retention, limit),
            ).rowcount

    def heartbeat(self, owner, *, now):
        """Record that dispatcher `owner` is alive (for readiness and status)."""
        with self.database.transaction() as connection:
            connection.execute(
                "INSERT INTO dispatchers (owner, started_at, seen_at) VALUES (?, ?, ?)"
                " ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at",
                (owner, now, now),
            )

    def retire(self, owner):
        with self.database.transaction() as connection:
            connection.execute("DELETE FROM dispatchers WHERE owner = ?", (owner,))

    def checkpoint(self):
        """Copy the WAL back into the database and truncate it, so it cannot grow without bound."""
        return self.database.read("PRAGMA wal_checkpoint(TRUNCATE)")[0]

    def counts(self, integration=None):
        """Mutations by state (pending, done, dead), for status and tests."""
        where, parameters = ("", ()) if integration is None else (" WHERE a.integration = ?", (integration,))
        rows = self.database.read(
            "SELECT m.state, COUNT(*) FROM mutations m JOIN audiences a ON a.id = m.audience_id"
            f"{where} GROUP BY m.state",
            parameters,
        )
        return {"pending": 0, "done": 0, "dead": 0, **dict(rows)}

    def dead_letters(self, integration=None, limit=100):
        where, parameters = ("", ()) if integration is None else (" AND a.integration = ?", (integration,))
        return self.database.read(
            "SELECT m.id, a.integration, a.key, m.op, m.external_user_id, m.last_error FROM mutations m"
            f" JOIN audiences a ON a.id = m.audience_id WHERE m.state = 'dead'{where} ORDER BY m.id LIMIT ?",
            (*parameters, limit),
        )


def encode_extra(extra):
    return json.dumps(extra, separators=(",", ":"), ensure_ascii=False) if extra else None


def decode_mutation(row):
    mutation_id, op, external_user_id, uuid, customer, platform, extra = row
    return Mutation(mutation_id, op, external_user_id, uuid, customer, platform, json.loads(extra) if extra else {})


def first_reason(dead):
    return next(iter(dead.values()), None)
