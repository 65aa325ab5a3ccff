import os
import shutil
import subprocess
import threading

import pytest

from diy.sandbox import SandboxSettings, make_server

from outbox.backends import open_database
from outbox.db import Database
from outbox.store import Outbox
from reliability import postgres
from tests.sandboxed import Receiver, Sandboxed
from tests.support import WEBHOOK_SECRET

BACKENDS = ("sqlite", "postgresql")
CERTIFICATE_HOST = "dmp.example.com"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def start_sandbox():
    """Start a sandbox in a thread on port 0: start_sandbox(settings fields..., clock=, random=,
    sleep=); each is shut down at the end of the test."""
    started = []

    def start(clock=None, random=None, sleep=None, **fields):
        options = {name: value for name, value in
                   (("clock", clock), ("random", random), ("sleep", sleep)) if value is not None}
        server = make_server(SandboxSettings(port=0, **fields), **options)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def sandboxed(start_sandbox):
    """sandboxed(settings fields..., clock=...): a sandbox in a thread, with every platform call
    it answers kept (tests/sandboxed.py)."""
    return lambda **options: Sandboxed(start_sandbox(**options))


@pytest.fixture
def receiver_for(sandboxed):
    """receiver_for(script=(), retry_after=None): the sandbox's webhook taking the tests' secret,
    as the service tests read it (tests/sandboxed.py's Receiver)."""
    return lambda **options: Receiver(sandboxed(webhook_secret=WEBHOOK_SECRET), **options)


@pytest.fixture
def permissive_umask():
    """The umask of a shell or a container (0022): files would be readable by every user."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server of the test run's own (reliability/postgres.py), or a skip saying why
    there is none; with DIY_REQUIRE_POSTGRES=1 (CI) a missing server fails instead."""
    reason = postgres.unavailable()
    if reason:
        if os.environ.get("DIY_REQUIRE_POSTGRES"):
            pytest.fail(f"DIY_REQUIRE_POSTGRES is set but {reason}")
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    server = postgres.PostgresServer()
    yield server
    server.close()


@pytest.fixture(params=BACKENDS)
def database_location(request, tmp_path):
    """A fresh outbox on each backend: an SQLite file, or a new database on the test server."""
    if request.param == "sqlite":
        return str(tmp_path / "outbox.sqlite3")
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def database(database_location):
    db = open_database(database_location, synchronous="full", write_timeout=0.5)
    yield db
    db.close()


@pytest.fixture
def outbox(database):
    return Outbox(database, retention=3600)


@pytest.fixture
def sqlite_database(tmp_path):
    """For what only SQLite has: its file lock, group commit, checkpoints."""
    db = Database(tmp_path / "outbox.sqlite3", synchronous="full", write_timeout=0.5)
    yield db
    db.close()


@pytest.fixture
def sqlite_outbox(sqlite_database):
    return Outbox(sqlite_database, retention=3600)


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for CERTIFICATE_HOST and 127.0.0.1: (certificate, key) paths."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(certificate), "-days", "2", "-subj", f"/CN={CERTIFICATE_HOST}",
         "-addext", f"subjectAltName=DNS:{CERTIFICATE_HOST},IP:127.0.0.1"],
        check=True, capture_output=True)
    return certificate, key
