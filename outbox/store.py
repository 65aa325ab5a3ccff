"""The outbox's rows: what the receiver commits and what the dispatcher claims and settles.

Storage only moves rows; when to retry and what to give up on is the dispatcher's call. Every
method is one transaction, and every settling method checks the lease token: a dispatcher
whose lease ran out (it was too slow, or presumed dead) changes nothing.

Only what a 200 or an audience id promised waits for the disk: `enqueue` (grouped with the
other requests' writes into one commit) and the audience mapping. The dispatcher's bookkeeping
(leases, delivered marks, retries) commits without an fsync: a power cut may undo the last of
it, which means a batch is delivered again (delivery is at least once anyway), never that a
mutation is lost.

Both backends run the statements here (outbox/db.py for SQLite, outbox/postgres.py for
PostgreSQL): portable SQL with `?` placeholders, and the backend's fragments where the two differ.

Delivery order: a claim takes the first pending batches of one audience by id, and no other
dispatcher may claim that audience while the lease is held: until it is settled, runs out, or
its holder stops beating its heart (`dispatchers.seen_at`), which frees a dead process's
audiences within seconds instead of a whole lease. New batches only ever
get higher ids than those claimed: on SQLite one writer at a time and AUTOINCREMENT; on
PostgreSQL, where ids are handed out before commit, every write that adds batches to an
audience first updates (locks) its row, so the batches of one audience commit in id order, and
a claim skips an audience whose row another transaction holds. Settling names the claimed batch
ids all the same. Writes lock audience rows in key order, so two requests never deadlock.
A mutation's id is `batch id << MUTATION_ID_BITS | index` (outbox/schema.py).

Why one module of this length: `Outbox`'s methods are the transactions that move a row from
stored to claimed to settled, and each settling method relies on what `claim` wrote (the lease
token, `claimed_through`); read side by side they show that contract whole.
"""
import collections
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Tuple

from outbox.schema import MUTATION_ID_BITS
from outbox.values import JsonValue
from targets.base import Audience, Mutation

AUDIENCE_COLUMNS = (
    "id, integration, key, dmp_id, name, customer, target_id, state, pending, attempts, "
    "last_error, claimed_through"
)
MAX_BATCH = 1 << MUTATION_ID_BITS
NO_EXTRA = Mutation._field_defaults["extra"]
_new_tuple = tuple.__new__
RELEASED = "lease_token = NULL, lease_owner = NULL, lease_expires_at = NULL, claimed_through = NULL"


class ReceivedMutation(NamedTuple):
    """A mutation as the DMP sent it, before it has a row (a tuple: a request makes hundreds)."""

    audience: str
    external_user_id: str
    uuid: Optional[str] = None
    customer: Optional[Any] = None
    platform: Optional[Any] = None
    extra: Optional[Mapping[str, Any]] = None
    """Fields diy-wsgi does not know, or None."""


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
    received: Mapping[int, Tuple[float, int]] = field(default_factory=dict)
    """Batch id -> (commit time, mutation count) of each claimed batch (for the delivery latency
    and the dead letters' received_at)."""


class Outbox:
    def __init__(self, database, *, retention=86400.0):
        self.database = database
        self.retention = retention

    # The receiver's side.

    def enqueue(self, integration, op, received, *, pass_through, now, batch_limit=MAX_BATCH):
        """`enqueue_members` for ReceivedMutation in the DMP's order; returns the count."""
        return self.enqueue_members(integration, op, members_by_audience(received), pass_through=pass_through,
                                    now=now, batch_limit=batch_limit)

    def enqueue_members(self, integration, op, members, *, pass_through, now, batch_limit=MAX_BATCH):
        """Commit `members` ({audience key: member rows in the DMP's order}, see `member_row`)
        durably; returns the count. Other threads' enqueues may share the commit
        (Database.write), so the rows are encoded first.

        The members of each audience become one batch row, or several of at most `batch_limit`
        (the target's batch size, so that a claim is one platform call). An audience first seen
        here is either taken as the platform's own id (`pass_through`: the DMP sends the id we
        handed back) or queued for creation on first use.
        """
        limit = min(batch_limit, MAX_BATCH)
        prepared = [
            (key, rows[0][2], len(rows), [(len(chunk), encode_batch(chunk)) for chunk in chunks(rows, limit)])
            for key, rows in sorted(members.items()) if rows
        ]
        database = self.database

        def store(connection):
            for key, customer, count, batches in prepared:
                row = connection.execute(
                    "UPDATE audiences SET pending = pending + ? WHERE integration = ? AND key = ? RETURNING id",
                    (count, integration, key),
                ).fetchone()
                if row:
                    audience_id = row[0]
                else:
                    audience_id = self._audience_for_key(connection, integration, key, customer, pass_through, now)
                    connection.execute("UPDATE audiences SET pending = pending + ? WHERE id = ?", (count, audience_id))
                connection.executemany(
                    "INSERT INTO batches (audience_id, op, size, mutations, received_at) VALUES (?, ?, ?, ?, ?)",
                    [(audience_id, op, size, text, now) for size, text in batches],
                )
            database.notify_work(connection)

        self.database.write(store)
        return sum(count for _, _, count, _ in prepared)

    def _audience_for_key(self, connection, integration, key, customer, pass_through, now):
        """The audience's id; a new audience's row is inserted, unless another transaction
        inserts it first (then that one's row is found the second time round)."""
        state, target_id = ("ready", key) if pass_through else ("creating", None)
        for _ in range(2):
            for column in ("key", "dmp_id"):
                row = connection.execute(
                    f"SELECT id FROM audiences WHERE integration = ? AND {column} = ?", (integration, key)
                ).fetchone()
                if row:
                    return row[0]
            row = connection.execute(
                "INSERT INTO audiences (integration, key, dmp_id, customer, target_id, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                (integration, key, key, JsonValue(customer), target_id, state, now, now),
            ).fetchone()
            if row:
                return row[0]
        raise LookupError(f"audience {key} of {integration} was neither found nor inserted")

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
            for _ in range(2):
                if connection.execute(
                    "UPDATE audiences SET name = ?, customer = ?, target_id = ?, state = 'ready', attempts = 0,"
                    " last_error = NULL, next_attempt_at = ?, updated_at = ? WHERE integration = ? AND dmp_id = ?",
                    (name, JsonValue(customer), target_id, now, now, integration, dmp_id),
                ).rowcount:
                    break
                taken = connection.execute(
                    "SELECT 1 FROM audiences WHERE integration = ? AND key = ?", (integration, key)
                ).fetchone()
                if connection.execute(
                    "INSERT INTO audiences (integration, key, dmp_id, name, customer, target_id, state,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'ready', ?, ?) ON CONFLICT DO NOTHING",
                    (integration, dmp_id if taken else key, dmp_id, name, JsonValue(customer), target_id, now, now),
                ).rowcount:
                    break
            return self._audience_in(connection, integration, dmp_id)

    def record_creation_pending(self, integration, dmp_id, *, name, customer, error, retry_at, now):
        """The platform could not create the audience in time: the dispatcher tries again from
        `retry_at` (this first try counts as an attempt)."""
        with self.database.transaction() as connection:
            for _ in range(2):
                if connection.execute(
                    "UPDATE audiences SET name = ?, customer = ?, last_error = ?, updated_at = ?,"
                    " next_attempt_at = CASE WHEN next_attempt_at > ? THEN next_attempt_at ELSE ? END,"
                    " state = CASE state WHEN 'failed' THEN 'creating' ELSE state END,"
                    " attempts = CASE state WHEN 'failed' THEN 1 ELSE attempts + 1 END"
                    " WHERE integration = ? AND dmp_id = ?",
                    (name, JsonValue(customer), error, now, retry_at, retry_at, integration, dmp_id),
                ).rowcount:
                    break
                if connection.execute(
                    "INSERT INTO audiences (integration, key, dmp_id, name, customer, state, last_error, attempts,"
                    " next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'creating', ?, 1, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING",
                    (integration, dmp_id, dmp_id, name, JsonValue(customer), error, retry_at, now, now),
                ).rowcount:
                    break
            return self._audience_in(connection, integration, dmp_id)

    def audiences_of_target(self, integration, target_id):
        """The DMP ids of the integration's audiences mapped to the platform's `target_id`."""
        rows = self.database.read(
            "SELECT dmp_id FROM audiences WHERE integration = ? AND target_id = ? ORDER BY id", (integration, target_id)
        )
        return [row[0] for row in rows]

    def _audience_in(self, connection, integration, dmp_id):
        row = connection.execute(
            f"SELECT {AUDIENCE_COLUMNS} FROM audiences WHERE integration = ? AND dmp_id = ?", (integration, dmp_id)
        ).fetchone()
        return AudienceRecord(*row)

    # The dispatcher's side.

    def claim(self, owner, *, now, lease, limit, batch_sizes, alive_since=None, beat=True):
        """Lease up to `limit` audiences with due work, oldest due first.

        `batch_sizes` maps each integration this dispatcher serves to its target's max batch;
        audiences of other integrations are left alone. A lease whose holder has not beaten its
        heart since `alive_since` is taken over as if it had run out (None: only when it runs
        out). Claiming beats `owner`'s heart in the same transaction (unless `beat` is False:
        the caller beat it a moment ago), so a fresh lease never looks abandoned.
        """
        if limit <= 0 or not batch_sizes:
            return []
        integrations = list(batch_sizes)
        free = "lease_expires_at IS NULL OR lease_expires_at <= ?"
        parameters = [now, now]
        if alive_since is not None:
            free += (" OR NOT EXISTS (SELECT 1 FROM dispatchers d WHERE d.owner = audiences.lease_owner"
                     " AND d.seen_at >= ?)")
            parameters.append(alive_since)
        due = (
            f"(pending > 0 OR state = 'creating') AND next_attempt_at <= ? AND ({free})"
            f" AND integration IN ({', '.join('?' * len(integrations))})"
        )
        parameters = (*parameters, *integrations)
        if not self.database.read(f"SELECT 1 FROM audiences WHERE {due} LIMIT 1", parameters):
            return []
        with self.database.transaction(durable=False) as connection:
            if beat:
                record_beat(connection, owner, now)
            audiences = [
                AudienceRecord(*row)
                for row in connection.execute(
                    f"SELECT {AUDIENCE_COLUMNS} FROM audiences WHERE {due} ORDER BY next_attempt_at, id LIMIT ?"
                    f"{self.database.LOCK_DUE_ROWS}",
                    (*parameters, limit),
                )
            ]
            leased = []
            for audience in audiences:
                batches = []
                if audience.state != "creating":
                    batches = take_batches(connection.execute(
                        "SELECT id, op, size, mutations, received_at FROM batches WHERE audience_id = ?"
                        " AND state = 'pending' ORDER BY id LIMIT ?",
                        (audience.id, batch_sizes[audience.integration]),
                    ), batch_sizes[audience.integration])
                    if not batches:
                        connection.execute("UPDATE audiences SET pending = 0 WHERE id = ?", (audience.id,))
                        continue
                token = secrets.token_hex(8)
                connection.execute(
                    "UPDATE audiences SET lease_token = ?, lease_owner = ?, lease_expires_at = ?, claimed_through = ?"
                    " WHERE id = ?",
                    (token, owner, now + lease, batches[-1][0] if batches else None, audience.id),
                )
                leased.append((audience, token, batches))
        return [
            Claim(audience, token, decode_batches(batches), {row[0]: (row[4], row[2]) for row in batches})
            for audience, token, batches in leased
        ]

    def settle(self, claim, *, dead=None, now):
        """The claim is done: every claimed mutation delivered, except `dead` (id -> reason).

        Returns False, changing nothing, when the lease was lost.
        """
        dead = dead or {}
        with self.database.transaction(durable=False) as connection:
            settled = len(claim.mutations)
            if not self._release(connection, claim,
                                 "pending = CASE WHEN pending > ? THEN pending - ? ELSE 0 END, attempts = 0, last_error = ?",
                                 (settled, settled, first_reason(dead)), at=now, now=now):
                return False
            self._dead_letter(connection, claim, dead, now)
            self._supersede_dead(connection, claim, dead, now)
            self._finish_batches(connection, claim, now)
            return True

    def dead_letter(self, claim, reason, *, now):
        """Give up on the whole claimed batch with `reason` (kept for the operator)."""
        return self.settle(claim, dead={m.id: reason for m in claim.mutations}, now=now)

    def retry_later(self, claim, reason, *, at, now):
        """A transient failure: the audience (and everything queued behind) waits until `at`."""
        with self.database.transaction(durable=False) as connection:
            if not self._release(connection, claim, "attempts = attempts + 1, last_error = ?", (reason,), at=at, now=now):
                return False
            if claim.received:
                claimed, ids = self.database.in_list("id", claim.received)
                connection.execute(
                    f"UPDATE batches SET attempts = attempts + 1, last_error = ? WHERE {claimed}", (reason, ids)
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
        """Settle a claim that moved no mutation. False, changing nothing, when the lease was lost."""
        with self.database.transaction(durable=False) as connection:
            return self._release(connection, claim, assignments, parameters, at=at, now=now)

    def _release(self, connection, claim, assignments, parameters, *, at, now):
        """Set `assignments` on the claimed audience, give its lease back and make it due at
        `at`, if the claim still holds the lease; whether it did (nothing changed if not)."""
        return connection.execute(
            f"UPDATE audiences SET {RELEASED}, {assignments + ', ' if assignments else ''}"
            "next_attempt_at = ?, updated_at = ? WHERE id = ? AND lease_token = ?",
            (*parameters, at, now, claim.audience.id, claim.token),
        ).rowcount == 1

    def release(self, owner):
        """Give back every lease `owner` holds (a graceful stop), so others need not wait them out."""
        with self.database.transaction(durable=False) as connection:
            return connection.execute(f"UPDATE audiences SET {RELEASED} WHERE lease_owner = ?", (owner,)).rowcount

    def _dead_letter(self, connection, claim, reasons, now):
        """Each dead mutation becomes a row of its own, under its id, for the operator."""
        if not reasons:
            return
        attempts = claim.audience.attempts + 1
        connection.executemany(
            "INSERT INTO dead_letters (id, audience_id, op, external_user_id, uuid, customer, platform, extra,"
            " state, attempts, received_at, finished_at, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'dead', ?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            [
                (m.id, claim.audience.id, m.op, m.external_user_id, m.uuid, JsonValue(m.customer), JsonValue(m.platform),
                 encode_extra(m.extra), attempts, claim.received.get(batch_of(m.id), (now,))[0], now, reasons[m.id])
                for m in claim.mutations
                if m.id in reasons
            ],
        )
        per_batch = collections.Counter(batch_of(mutation_id) for mutation_id in reasons)
        connection.executemany("UPDATE batches SET dead = dead + ? WHERE id = ?", [(n, b) for b, n in per_batch.items()])

    def _finish_batches(self, connection, claim, now):
        if not claim.received:
            return
        claimed, ids = self.database.in_list("id", claim.received)
        if self.retention <= 0:
            connection.execute(f"DELETE FROM batches WHERE {claimed}", (ids,))
        else:
            connection.execute(f"UPDATE batches SET state = 'done', finished_at = ? WHERE {claimed}", (now, ids))

    def _supersede_dead(self, connection, claim, dead, now):
        """Dead mutations of users this claim delivers are stale: replay must not resurrect them."""
        audience_id = claim.audience.id
        if not claim.mutations or not connection.execute(
            "SELECT 1 FROM dead_letters WHERE audience_id = ? AND state = 'dead' AND id < ? LIMIT 1",
            (audience_id, claim.mutations[0].id),
        ).fetchone():
            return
        users, delivered = self.database.in_list(
            "external_user_id", sorted({m.external_user_id for m in claim.mutations if m.id not in dead}))
        connection.execute(
            "UPDATE dead_letters SET state = 'superseded', finished_at = ? WHERE audience_id = ? AND state = 'dead'"
            f" AND id < ? AND {users}",
            (now, audience_id, claim.mutations[0].id, delivered),
        )

    # Housekeeping.

    def purge(self, *, now, limit=5000):
        """Delete up to `limit` finished rows (delivered batches; superseded and replayed
        mutations) older than the retention; dead ones stay until an operator purges them.
        Returns how many mutations that was."""
        before = now - self.retention
        with self.database.transaction(durable=False) as connection:
            delivered = connection.execute(
                "DELETE FROM batches WHERE id IN (SELECT id FROM batches WHERE state = 'done' AND finished_at < ?"
                " LIMIT ?) RETURNING size - dead",
                (before, limit),
            ).fetchall()
            return sum(size for size, in delivered) + connection.execute(
                "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters"
                " WHERE state IN ('superseded', 'replayed') AND finished_at < ? LIMIT ?)",
                (before, limit),
            ).rowcount

    def heartbeat(self, owner, *, now):
        """Record that dispatcher `owner` is alive: its leases stay its own (claim's
        `alive_since`), and readiness and status count it."""
        with self.database.transaction(durable=False) as connection:
            record_beat(connection, owner, now)

    def retire(self, owner):
        with self.database.transaction(durable=False) as connection:
            connection.execute("DELETE FROM dispatchers WHERE owner = ?", (owner,))

    def forget_dispatchers(self, *, seen_before):
        """Delete the heartbeats of dispatchers gone since `seen_before` (killed, so never
        retired); their leases were free long ago. Returns how many."""
        with self.database.transaction(durable=False) as connection:
            return connection.execute("DELETE FROM dispatchers WHERE seen_at < ?", (seen_before,)).rowcount

    def probe(self):
        """Raise StoreUnavailable unless the database would take a write now (readiness): on
        SQLite the write lock is free, on PostgreSQL the server is a writable primary."""
        with self.database.transaction() as connection:
            connection.execute("UPDATE dispatchers SET seen_at = seen_at WHERE owner IS NULL")

    def live_dispatchers(self, *, seen_since):
        """How many dispatchers have beaten their heart since `seen_since`."""
        return self.database.read("SELECT COUNT(*) FROM dispatchers WHERE seen_at >= ?", (seen_since,))[0][0]

    @property
    def location(self):
        """Where the outbox is, as logs may show it (a PostgreSQL URL without its password)."""
        return self.database.location

    @property
    def notifies(self):
        """Whether another process's commit can wake this one's dispatcher (`listen`)."""
        return self.database.listen is not None

    @property
    def listens_for_free(self):
        """Whether `listen` waits without polling (PostgreSQL's LISTEN; SQLite polls)."""
        return self.database.LISTENS_FOR_FREE

    def listen(self, wake, stopping):
        """Call `wake()` when work is committed anywhere, until `stopping` is set."""
        self.database.listen(wake, stopping)

    def checkpoint(self, *, truncate):
        """Copy the WAL back into the database; `truncate` also empties the file, so it cannot
        grow without bound (Database.checkpoint)."""
        return self.database.checkpoint(truncate=truncate)

    def trim_wal(self):
        """Empty the WAL if it has outgrown its limit (Database.trim_wal)."""
        return self.database.trim_wal()

    def counts(self, integration=None):
        """Mutations by state (pending, done, dead), for status and tests."""
        where, parameters = ("", ()) if integration is None else (" WHERE a.integration = ?", (integration,))
        batches = self.database.read(
            "SELECT b.state, SUM(b.size - b.dead) FROM batches b JOIN audiences a ON a.id = b.audience_id"
            f"{where} GROUP BY b.state",
            parameters,
        )
        dead = self.database.read(
            "SELECT COUNT(*) FROM dead_letters m JOIN audiences a ON a.id = m.audience_id"
            f" WHERE m.state = 'dead'{where.replace(' WHERE', ' AND')}",
            parameters,
        )
        return {"pending": 0, "done": 0, **dict(batches), "dead": dead[0][0]}

    def dead_letters(self, integration=None, limit=100):
        where, parameters = ("", ()) if integration is None else (" AND a.integration = ?", (integration,))
        return self.database.read(
            "SELECT m.id, a.integration, a.key, m.op, m.external_user_id, m.last_error FROM dead_letters m"
            f" JOIN audiences a ON a.id = m.audience_id WHERE m.state = 'dead'{where} ORDER BY m.id LIMIT ?",
            (*parameters, limit),
        )


def record_beat(connection, owner, now):
    connection.execute(
        "INSERT INTO dispatchers (owner, started_at, seen_at) VALUES (?, ?, ?)"
        " ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at",
        (owner, now, now),
    )


def chunks(items, size):
    return [items[start:start + size] for start in range(0, len(items), size)]


def member_row(mutation):
    """A ReceivedMutation as a stored batch holds it (`decode_batches` reads it back)."""
    return [mutation.external_user_id, mutation.uuid, mutation.customer, mutation.platform, mutation.extra or None]


def members_by_audience(received):
    """{audience key: member rows}, each audience's in the order of `received`."""
    members = {}
    for mutation in received:
        members.setdefault(mutation.audience, []).append(member_row(mutation))
    return members


def encode_batch(members):
    return json.dumps(members, separators=(",", ":"), ensure_ascii=False)


def take_batches(rows, limit):
    """The first pending batches, whole, up to `limit` mutations (always at least one)."""
    taken, total = [], 0
    for row in rows:
        if taken and total + row[2] > limit:
            break
        taken.append(row)
        total += row[2]
    return taken


def decode_batches(batches):
    """Mutation tuples of stored batch rows; built with tuple.__new__ (what namedtuple's own
    constructor calls, without its Python-level call per mutation)."""
    mutations = []
    for batch_id, op, _, members, _ in batches:
        mutations += [
            _new_tuple(Mutation, (mutation_id, op, user, uuid, customer, platform, extra or NO_EXTRA))
            for mutation_id, (user, uuid, customer, platform, extra)
            in enumerate(json.loads(members), batch_id << MUTATION_ID_BITS)
        ]
    return mutations


def batch_of(mutation_id):
    return mutation_id >> MUTATION_ID_BITS


def encode_extra(extra):
    return json.dumps(extra, separators=(",", ":"), ensure_ascii=False) if extra else None


def first_reason(dead):
    return next(iter(dead.values()), None)
