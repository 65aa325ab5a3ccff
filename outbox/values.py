"""Values the DMP sends whose type the outbox keeps as it came (`Customer`, `Platform`).

SQLite stores them as they are (a column without a type); PostgreSQL as jsonb. The outbox wraps
such a parameter in `JsonValue` and each backend stores it its way, so the statements stay one.
"""
import sqlite3


class JsonValue:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return f"JsonValue({self.value!r})"


sqlite3.register_adapter(JsonValue, lambda wrapped: wrapped.value)
