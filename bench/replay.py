"""Dead-letter replay: what `Admin.replay` costs when many batches were stored after the dead letters.

A real outbox (`outbox.db.Database`, WAL, synchronous=FULL) filled through the real `Outbox`:
first requests of 100 mutations whose deliveries the platform refused (dead-lettered), then
requests delivered after them; 4 audiences in turn, every user distinct, so nothing is
superseded and every dead letter is checked against every later mutation of its audience.

Then one `Admin.replay` of every dead letter, timed in all and between its chunks: each chunk is
one write transaction, so the longest gap bounds how long a request could wait for the write
lock meanwhile.
"""
import time
from pathlib import Path

from outbox.admin import Admin, DeadFilter
from outbox.db import Database
from outbox.store import Outbox, ReceivedMutation

AUDIENCES = 4
MUTATIONS = 100


def build(outbox, dead_requests, later_requests, now):
    def store(tag, number):
        audience = f"aud-{number % AUDIENCES}"
        users = [ReceivedMutation(audience, f"{tag}{number}-{k}") for k in range(MUTATIONS)]
        outbox.enqueue("bench", "add", users, pass_through=True, now=now)

    def drain(refuse):
        while True:
            claims = outbox.claim("bench", now=now, lease=60, limit=AUDIENCES, batch_sizes={"bench": 1000})
            if not claims:
                return
            for claim in claims:
                if refuse:
                    outbox.dead_letter(claim, "HTTP 400: refused", now=now)
                else:
                    outbox.settle(claim, now=now)

    for number in range(dead_requests):
        store("d", number)
    drain(refuse=True)
    for number in range(later_requests):
        store("l", number)
        if number % 50 == 49:
            drain(refuse=False)
    drain(refuse=False)


def run(folder, dead_requests, later_requests):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    database = Database(folder / "replay.sqlite3", synchronous="full")
    outbox, now = Outbox(database), time.time()
    started = time.perf_counter()
    build(outbox, dead_requests, later_requests, now)
    built = time.perf_counter() - started
    marks = [time.perf_counter()]
    replayed, superseded = Admin(outbox).replay(
        DeadFilter(), now=now, progress=lambda *_: marks.append(time.perf_counter())
    )
    database.close()
    chunks = [b - a for a, b in zip(marks[1:], marks[2:])]
    dead = dead_requests * MUTATIONS
    return {
        "dead_letters": dead, "later_mutations": later_requests * MUTATIONS, "build_s": built,
        "replayed": replayed, "superseded": superseded, "replay_s": marks[-1] - marks[0],
        "first_chunk_s": marks[1] - marks[0], "longest_later_chunk_ms": max(chunks, default=0) * 1000,
        "chunks": len(marks) - 1,
    }
