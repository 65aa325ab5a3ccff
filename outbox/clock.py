"""The database's clock, for leases and retry times that several machines compare.

A lease written by one VM is judged expired by another: if each used its own wall clock, a
VM whose clock runs ahead would take over a live dispatcher's audiences. So on PostgreSQL every
time the outbox stores comes from the server's clock, read once a minute and carried forward on
this machine's monotonic clock (which no clock adjustment moves). Its error is half a round trip
plus a minute's drift of the monotonic clock: milliseconds. On SQLite every process shares one
machine's clock, and the plain `time.time` is the database's.
"""
import threading
import time

RESYNC_SECONDS = 60.0
RETRY_SECONDS = 1.0
"""After a failed reading (the database away), try again this soon, meanwhile carrying the last
offset forward (or, before any reading, this machine's clock, since nothing can be stored)."""


class DatabaseClock:
    def __init__(self, read_database_time, *, resync=RESYNC_SECONDS, monotonic=time.monotonic, fallback=time.time):
        self.read_database_time = read_database_time
        self.resync = resync
        self.monotonic = monotonic
        self.fallback = fallback
        self.offset = None
        """Database time minus this machine's monotonic time, once read."""
        self._next_reading = 0.0
        self._reading = threading.Lock()

    def __call__(self):
        now = self.monotonic()
        if now >= self._next_reading and self._reading.acquire(blocking=self.offset is None):
            try:
                if now >= self._next_reading:
                    self._read(now)
            finally:
                self._reading.release()
        offset = self.offset
        return self.fallback() if offset is None else self.monotonic() + offset

    def _read(self, now):
        try:
            before = self.monotonic()
            database_time = self.read_database_time()
            after = self.monotonic()
        except Exception:
            self._next_reading = now + RETRY_SECONDS
            return
        self.offset = database_time - (before + after) / 2
        self._next_reading = after + self.resync


def clock_of(database):
    """SQLite's clock is this machine's; PostgreSQL's is the server's, which every VM shares."""
    return time.time if database.kind == "sqlite" else DatabaseClock(database.now)
