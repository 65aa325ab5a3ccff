"""The durable outbox: audiences and their mutations, and the dispatcher draining them.

    store.py      Outbox: the one storage interface the receiver, dispatcher, admin commands,
                  probes and metrics use (with admin.py's Admin for the operators' commands)
    db.py         the SQLite backend (the default: one file, no dependency)
    postgres.py   the PostgreSQL backend (several VMs on one database; psycopg 3, an extra)
    backends.py   which backend a `[diy] database` value selects
    schema.py, postgres_schema.py   each backend's migrations
    dispatcher.py, guard.py, retry.py, accounts.py   delivery: leases, admission, backoff
    clock.py      the database's clock, for leases that several machines compare
    move.py       an SQLite outbox moved into PostgreSQL (`diy-wsgi migrate`)
    replay.py     dead letters queued again (`diy-wsgi dead replay`, through admin.py's Admin)

SQL lives in the storage modules alone (store.py, admin.py, replay.py, move.py, the backends and their
schemas): the receiver, the dispatcher, the commands, the probes and the metrics call methods.
"""
