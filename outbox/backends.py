"""Which backend a `[diy] database` value selects: a postgresql:// URL is PostgreSQL, anything
else the SQLite file it names."""
from outbox.db import Database
from outbox.postgres import PostgresDatabase, is_postgres_url


def open_database(location, *, synchronous="full", write_timeout=3.0, password=None):
    """The backend for `location`; nothing is opened until first use (after any fork).

    `synchronous` is SQLite's (on PostgreSQL the server's `synchronous_commit` decides, and a
    synchronous standby where one is configured); `password` is PostgreSQL's, when the URL,
    PGPASSWORD and ~/.pgpass do not give it.
    """
    if is_postgres_url(location):
        return PostgresDatabase(location, password=password, write_timeout=write_timeout)
    return Database(location, synchronous=synchronous, write_timeout=write_timeout)
