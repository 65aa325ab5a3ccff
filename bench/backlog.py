"""Backlog scale: what `Outbox.claim` and `Outbox.settle` cost with 1k, 1M and 10M pending mutations.

Each outbox is a real file made by `outbox.db.Database` (so the schema and its indexes are the
project's), then filled by one INSERT ... SELECT over a recursive counter, which SQLite runs
without Python in the loop (journal off, synchronous off, for the build only): batch rows of 100
mutations, as a request of 100 mutations of one audience leaves them, spread round-robin over 10
ready audiences, as interleaved as real traffic would leave them.

Then the real `Database` (WAL, synchronous=FULL) and `Outbox` time rounds of: one `claim` of up
to 4 audiences (the dispatcher's default thread count) with batches of 100, and one `settle`
of each claim. Between rounds, outside the timers, the settled batches are put back to pending,
so every round sees the same backlog.
"""
import os
import statistics
import time
from pathlib import Path

import sqlite3

from outbox.db import Database
from outbox.store import Outbox, batch_of, encode_batch

AUDIENCES = 10
BATCH = 100
CLAIM_LIMIT = 4
MEMBERS = encode_batch([[f"{k:011d}", f"{k:08x}-3e55-4672-52f0-18887ea12345", 123, 113, None] for k in range(BATCH)])


def build(path, pending):
    """A new outbox file at `path` with `pending` mutations (a multiple of BATCH) waiting; returns
    the build seconds."""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.unlink(f"{path}{suffix}")
    started = time.perf_counter()
    database = Database(path, synchronous="full")
    now = time.time()
    batches = pending // BATCH
    with database.transaction() as connection:
        for number in range(AUDIENCES):
            key = f"backlog-{number}"
            connection.execute(
                "INSERT INTO audiences (integration, key, dmp_id, customer, target_id, state, pending,"
                " created_at, updated_at) VALUES ('bench', ?, ?, 123, ?, 'ready', ?, ?, ?)",
                (key, key, key, BATCH * (batches // AUDIENCES + (number < batches % AUDIENCES)), now, now),
            )
    database.close()
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA journal_mode=OFF")
    raw.execute("PRAGMA synchronous=OFF")
    raw.execute("PRAGMA cache_size=-1000000")
    first = raw.execute("SELECT MIN(id) FROM audiences").fetchone()[0]
    raw.execute(
        "WITH RECURSIVE counter(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM counter WHERE x + 1 < ?)"
        " INSERT INTO batches (audience_id, op, size, mutations, received_at)"
        " SELECT ? + x % ?, 'add', ?, ?, ? FROM counter",
        (batches, first, AUDIENCES, BATCH, MEMBERS, now),
    )
    raw.execute("PRAGMA journal_mode=WAL")
    raw.close()
    return time.perf_counter() - started


def time_rounds(path, rounds, warmup=10):
    database = Database(path, synchronous="full")
    outbox = Outbox(database)
    claims_ms, settles_ms, claimed_mutations = [], [], []
    for number in range(warmup + rounds):
        started = time.perf_counter()
        claims = outbox.claim("bench", now=time.time(), lease=300, limit=CLAIM_LIMIT, batch_sizes={"bench": BATCH})
        claimed = time.perf_counter()
        for claim in claims:
            assert outbox.settle(claim, now=time.time())
        settled = time.perf_counter()
        if number >= warmup:
            claims_ms.append((claimed - started) * 1000)
            settles_ms.append((settled - claimed) * 1000 / max(1, len(claims)))
            claimed_mutations.append(sum(len(c.mutations) for c in claims))
        with database.transaction() as connection:  # put the batches back, untimed
            for claim in claims:
                connection.execute(
                    "UPDATE batches SET state = 'pending', finished_at = NULL"
                    " WHERE audience_id = ? AND id BETWEEN ? AND ?",
                    (claim.audience.id, batch_of(claim.mutations[0].id), batch_of(claim.mutations[-1].id)),
                )
                connection.execute("UPDATE audiences SET pending = pending + ? WHERE id = ?",
                                   (len(claim.mutations), claim.audience.id))
    database.close()

    def summary(values):
        values = sorted(values)
        return {"p50": statistics.median(values), "p99": values[int(len(values) * 0.99)], "mean": statistics.fmean(values)}

    return {"claim_ms": summary(claims_ms), "settle_ms": summary(settles_ms),
            "mutations_per_claim": statistics.fmean(claimed_mutations)}


def measure(folder, sizes, rounds, keep=False):
    results = []
    for pending in sizes:
        path = Path(folder) / f"backlog-{pending}.sqlite3"
        print(f"bench: backlog of {pending:,} pending mutations: building", flush=True)
        build_seconds = build(path, pending)
        timing = time_rounds(path, rounds)
        size = sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal") if os.path.exists(f"{path}{s}"))
        results.append({"pending": pending, "build_s": build_seconds, "file_mib": size / 2**20, "rounds": rounds,
                        **timing})
        if not keep:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(f"{path}{suffix}"):
                    os.unlink(f"{path}{suffix}")
    return results
