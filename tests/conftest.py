import pytest

from outbox.db import Database
from outbox.store import Outbox


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
def database(tmp_path):
    db = Database(tmp_path / "outbox.sqlite3", synchronous="full", write_timeout=0.5)
    yield db
    db.close()


@pytest.fixture
def outbox(database):
    return Outbox(database, retention=3600)
