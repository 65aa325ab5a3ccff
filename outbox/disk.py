"""How long the disk under the database takes to flush a write: what every acknowledged request
waits for.

A 200 is sent after its COMMIT's fsync (synchronous = full), so the disk's flush time is the
floor under the answer time. Its slow flushes show in the service's p99: the request waits for
its own, and the requests queued behind it for the write lock wait too.
"""
import math
import os
import threading
import time
from pathlib import Path

BLOCK = 16 * 1024
"""About what one request of 100 mutations appends to the WAL."""


def flush_times(folder, *, seconds, interval=0.02, block=BLOCK, stop=None):
    """Milliseconds that each fsync of a `block` just appended took, in a file of its own in
    `folder` (removed after): one every `interval`, for `seconds` or until `stop` is set."""
    stop = stop or threading.Event()
    path = Path(folder) / f".diy-wsgi-flush-probe-{os.getpid()}-{threading.get_ident()}"
    data, times = b"\0" * block, []
    deadline = time.monotonic() + seconds
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while time.monotonic() < deadline and not stop.is_set():
            os.write(fd, data)
            started = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - started) * 1000)
            stop.wait(interval)
    finally:
        os.close(fd)
        path.unlink()
    return times


def summary(times):
    """p50, p99 and max (nearest rank) of `times`, and how many."""
    ordered = sorted(times)
    if not ordered:
        return {"flushes": 0}

    def at(fraction):
        return ordered[max(0, math.ceil(len(ordered) * fraction) - 1)]

    return {"flushes": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": ordered[-1]}
