"""Errors of the outbox."""


class StoreError(Exception):
    """The database cannot be used at all (wrong file, too old SQLite, newer schema)."""


class StoreUnavailable(StoreError):
    """The database cannot take this write now (locked past the budget, disk full, read-only).

    The receiver answers 503: nothing was stored, the DMP may send it again.
    """
