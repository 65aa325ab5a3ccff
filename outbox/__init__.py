"""The durable outbox: mutations and audiences in one SQLite file, and the dispatcher draining it."""
