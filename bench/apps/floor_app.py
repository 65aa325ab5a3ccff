"""The durable minimum: the least an app can do that answers 200 only once the request is on disk.

A plain WSGI function with the Flask + huey contender's checks (dmp_checks: HMAC before parsing,
JSON, an audience and a user in each mutation), then one INSERT of the raw body into SQLite (WAL,
synchronous=FULL) and its COMMIT. SQLite's write lock is taken as diy-wsgi takes it, retrying
BEGIN IMMEDIATE every 0.5 ms, so the two wait for the disk alike. Nothing is grouped per
audience, nothing is delivered, no commit is shared: what is left is the cost of the HTTP
server, the checks and a durable write, for the throughput and p99 targets to be read against.
"""
import json
import os
import sqlite3
import threading
import time

from dmp_checks import Refused, checked_mutations

DATABASE = os.environ.get("BENCH_FLOOR_DB", "floor.sqlite3")
BUSY_POLL = 0.0005
_local = threading.local()


def connection():
    """This thread's connection (gthread runs each request on one of a fixed set of threads)."""
    if not hasattr(_local, "connection"):
        db = sqlite3.connect(DATABASE, timeout=10, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
        db.execute("PRAGMA busy_timeout=0")  # from here on store() polls for the lock, as diy-wsgi does
        _local.connection = db
    return _local.connection


def store(raw):
    db = connection()
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            time.sleep(BUSY_POLL)
    try:
        db.execute("INSERT INTO requests (body) VALUES (?)", (raw,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def answer(start_response, status, document):
    body = json.dumps(document).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    request_type = environ.get("QUERY_STRING", "").partition("type=")[2].partition("&")[0].upper()
    try:
        mutations = checked_mutations(raw, environ.get("HTTP_X_HMAC"), request_type)
    except Refused as refused:
        return answer(start_response, f"{refused.status} Refused", {"error": str(refused)})
    store(raw)
    return answer(start_response, "200 OK", {"accepted": len(mutations)})
