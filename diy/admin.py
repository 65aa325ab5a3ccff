"""The operator's commands: `diy-wsgi status | dead | audiences | retry-now | verify | check | disk |
purge | vacuum | backup | migrate`.

Each reads the configuration for the database path and secrets, works on the live database
(safe while the service runs), prints a table or, with `--json`, one JSON document. None but
`audiences set` creates the SQLite file when it is missing: the others say so in one line
(`status` shows the configured integrations with nothing in them).

Here: what each command does. Their arguments and help are in diy/admin_arguments.py, how
they print in diy/admin_output.py, and their statements in outbox/admin.py.
"""
import os
import sys

from diy.admin_output import age, emit, listing, local_time, progress, table
from diy.config import ConfigError, load_config
from diy.logs import escape_unprintable as printable
from diy.metrics import API_DEPRECATED_GAUGE, live_gauges, read_all
from diy.signature import verify
from outbox import disk
from outbox.admin import Admin, DeadFilter
from outbox.backends import open_database
from outbox.dispatcher import CREDENTIALS_GAUGE
from outbox.clock import clock_of
from outbox.errors import StoreError
from outbox.move import move
from outbox.postgres import is_postgres_url
from outbox.store import Outbox

FILE_LABELS = {"database_bytes": "size", "wal_bytes": "WAL"}
HELD_REASON = ("the platform refuses its credentials; fix them and it resumes by itself "
               "(the log's 'credentials refused' line has the platform's answer)")
NOTHING_YET = {"pending": 0, "leased": 0, "dead": 0, "oldest_pending_age": None, "audiences": 0,
               "audiences_creating": 0, "audiences_failed": 0, "last_error": None}


def open_admin(args, *, must_exist=True):
    """The configuration and an Admin on its database. A missing SQLite file is an error unless
    the command may create it (`must_exist=False`): looking must not leave an empty outbox behind."""
    config = load_config(args.config)
    if must_exist:
        require_database(config)
    return config, admin_of(config)


def admin_of(config):
    database = open_database(config.database, synchronous=config.synchronous, write_timeout=config.write_timeout,
                             password=config.database_password)
    return Admin(Outbox(database, retention=config.retention), clock=clock_of(database))


def require_database(config):
    if not database_exists(config):
        raise StoreError(f"no database at {config.database} yet: the service creates it when it first starts "
                         f"(is [diy] database in {config.source} the service's?)")


def database_exists(config):
    """Whether the SQLite file is there (a PostgreSQL database is the server's to have)."""
    return is_postgres_url(config.database) or os.path.exists(config.database)


def filters(args):
    return DeadFilter(args.integration, args.audience, args.customer, args.older_than, args.newer_than)


def pick_integration(config, name):
    if name is not None:
        if not any(i.name == name for i in config.integrations):
            raise ConfigError(f"{config.source}: no [integration:{name}]")
        return name
    if len(config.integrations) > 1:
        raise ConfigError(f"{config.source}: several integrations ({names(config.integrations)}); name one with --integration")
    return config.integrations[0].name


def integration_of(config, admin, name, audience, *, new=False):
    """The integration `--integration` names, else the one configured integration, else the one
    that has `audience`: a one-line error when several have it, or none does (a `new` audience
    then needs --integration)."""
    if name is not None or len(config.integrations) == 1:
        return pick_integration(config, name)
    having = [i for i in config.integrations if admin.audience(i.name, audience) is not None]
    if len(having) == 1:
        return having[0].name
    if having:
        raise ConfigError(printable(f"audience {audience} is in several integrations ({names(having)}); "
                                    "name one with --integration"))
    if new:
        return pick_integration(config, None)
    raise StoreError(printable(f"no audience {audience} in any integration ({names(config.integrations)})"))


def names(integrations):
    return ", ".join(i.name for i in integrations)


def run_status(args):
    config = load_config(args.config)
    if database_exists(config):
        admin = admin_of(config)
        status = admin.status(now=admin.clock())
    else:
        status = {"integrations": {}, "dispatchers": [], "files": None}
    status["integrations"] = {**{i.name: dict(NOTHING_YET) for i in config.integrations}, **status["integrations"]}
    status["held_accounts"] = held_accounts(config)
    status["deprecated_api_versions"] = deprecated_api_versions(config)
    if args.json:
        return emit(status)
    rows = [
        (name, s["pending"], s["leased"], s["dead"], age(s["oldest_pending_age"]), s["audiences"],
         s["audiences_creating"], s["audiences_failed"], s["last_error"])
        for name, s in status["integrations"].items()
    ]
    table(("integration", "pending", "leased", "dead", "oldest", "audiences", "creating", "failed", "last error"), rows)
    print()
    if status["held_accounts"]:
        table(("held account", "integration", "why"),
              [(held["account"], held["integration"], held["reason"]) for held in status["held_accounts"]])
        print()
    if status["deprecated_api_versions"]:
        table(("deprecated api version", "account", "sunset"),
              [(d["api_version"], d["account"], d["sunset"] or "not announced")
               for d in status["deprecated_api_versions"]])
        print()
    table(("dispatcher", "last seen"), [(d["owner"], age(d["seen_age"]) + " ago") for d in status["dispatchers"]])
    files = status["files"]
    print()
    if files is None:
        print(printable(f"no database at {config.database} yet (the service creates it when it first starts)"))
    else:
        print("database " + ", ".join(f"{FILE_LABELS[key]} {size:,} bytes" for key, size in files.items()))
    return 0


def held_accounts(config):
    """The accounts whose work this machine's dispatchers hold because the platform refuses their
    credentials (the gauge each process keeps in the metrics folder while it lives)."""
    refused = live_gauges(read_all(config.metrics_dir), CREDENTIALS_GAUGE)
    return [
        {"integration": labels["integration"], "account": labels["account"], "reason": HELD_REASON}
        for labels in sorted((dict(key) for key, value in refused.items() if value),
                             key=lambda labels: (labels["integration"], labels["account"]))
    ]


def deprecated_api_versions(config):
    """The API versions a platform says it will retire, per account, as this machine's live
    processes last heard it (targets/criteo.py, "API versions")."""
    gauges = live_gauges(read_all(config.metrics_dir), API_DEPRECATED_GAUGE)
    return sorted((dict(labels) for labels, value in gauges.items() if value),
                  key=lambda d: (d["integration"], d["account"], d["api_version"]))


def run_dead_list(args):
    _, admin = open_admin(args)
    now = admin.clock()
    letters = admin.dead(filters(args), now=now, limit=args.limit)
    if args.json:
        return emit([letter.as_dict() for letter in letters])
    table(("id", "integration", "audience", "op", "user", "died", "reason"),
          [(d.id, d.integration, d.audience, d.op, d.external_user_id, age(now - d.died_at) + " ago", d.reason) for d in letters])
    return 0


DEAD_LETTER_TIMES = ("received_at", "died_at")


def run_dead_show(args):
    _, admin = open_admin(args)
    letter = admin.dead_letter(args.id)
    if letter is None:
        raise StoreError(f"no mutation {args.id}")
    if args.json:
        return emit(letter.as_dict())
    listing({key: local_time(value) if key in DEAD_LETTER_TIMES else value for key, value in letter.as_dict().items()})
    return 0


def run_dead_replay(args):
    _, admin = open_admin(args)
    with progress("replayed, superseded") as report:
        replayed, superseded = admin.replay(filters(args), now=admin.clock(), progress=report)
    result = {"replayed": replayed, "superseded": superseded}
    return emit(result) if args.json else print(f"replayed {replayed}; {superseded} stale ones marked superseded") or 0


def run_dead_purge(args):
    where = filters(args)
    if where == DeadFilter() and not args.all:
        raise ConfigError("dead purge: give a filter (--integration, --audience, --customer, --older-than, --newer-than) or --all")
    _, admin = open_admin(args)
    with progress("purged") as report:
        deleted = admin.purge_dead(where, now=admin.clock(), progress=report)
    return emit({"purged": deleted}) if args.json else print(f"purged {deleted} dead letters") or 0


def run_audiences_list(args):
    _, admin = open_admin(args)
    audiences = admin.audiences(integration=args.integration, state=args.state)
    if args.json:
        return emit(audiences)
    table(("integration", "dmp id", "dmp sends", "platform id", "state", "pending", "name", "last error"),
          [(a["integration"], a["dmp_id"], a["key"], a["target_id"], a["state"], a["pending"], a["name"], a["last_error"])
           for a in audiences])
    return 0


def run_audience_show(args):
    config, admin = open_admin(args)
    found = admin.audience(integration_of(config, admin, args.integration, args.audience), args.audience)
    if found is None:
        raise StoreError(printable(f"no audience {args.audience}"))
    if args.json:
        return emit(found)
    listing({**found, "mutations": ", ".join(f"{count} {state}" for state, count in sorted(found["mutations"].items()))})
    return 0


def run_audience_set(args):
    config, admin = open_admin(args, must_exist=False)
    integration = integration_of(config, admin, args.integration, args.audience, new=True)
    admin.set_audience(integration, args.audience, args.target_id, now=admin.clock())
    return emit(admin.audience(integration, args.audience)) if args.json else print(
        printable(f"{args.audience} -> {args.target_id} (ready)")) or 0


def run_audience_forget(args):
    config, admin = open_admin(args)
    admin.forget_audience(integration_of(config, admin, args.integration, args.audience), args.audience)
    return emit({"forgotten": args.audience}) if args.json else print(printable(f"forgot {args.audience}")) or 0


def run_retry_now(args):
    config, admin = open_admin(args)
    integration = None if args.integration is None else pick_integration(config, args.integration)
    audiences, mutations = admin.retry_now(integration=integration, audience=args.audience, now=admin.clock())
    if args.json:
        return emit({"audiences": audiences, "mutations": mutations})
    if not audiences:
        print("nothing was waiting for a retry")
    else:
        print(f"{audiences} audience(s) with {mutations} undelivered mutation(s) due now; running dispatchers "
              f"deliver them within {config.dispatcher.poll_interval:g} s")
    return 0


def run_verify(args):
    config = load_config(args.config)
    body = open(args.file, "rb").read() if args.file else sys.stdin.buffer.read()
    matches = [
        f"{integration.name} secret #{number}"
        for integration in config.integrations if args.integration in (None, integration.name)
        for number, secret in enumerate(integration.hmac_secrets, 1)
        if verify([secret], body, args.signature)
    ]
    if args.json:
        emit({"valid": bool(matches), "matches": matches, "bytes": len(body)})
    elif matches:
        print(f"valid: matches {', '.join(matches)} ({len(body)} bytes)")
    else:
        print(printable(f"invalid: no configured secret signs these {len(body)} bytes as {args.signature.strip()[:64]}"))
        if body.endswith(b"\n"):
            print("hint: the body ends with a newline; the DMP signs the exact bytes it sends")
    return 0 if matches else 1


def run_check(args):
    _, admin = open_admin(args, must_exist=args.file is None)
    if args.file is None:
        admin.require_sqlite("check")
    path = args.file or admin.database.location
    problems = admin.check(args.file, full=args.full)
    if args.json:
        emit({"file": path, "sound": not problems, "problems": problems})
    elif problems:
        print(printable(f"{path}: {len(problems)} problem(s) found"), *map(printable, problems), sep="\n")
    else:
        print(printable(f"{path}: sound ({'integrity_check' if args.full else 'quick_check'} found nothing)"))
    return 1 if problems else 0


def run_disk(args):
    config = load_config(args.config)
    if is_postgres_url(config.database):
        raise StoreError("disk times the flushes of the SQLite file's disk; on PostgreSQL run it (or "
                         "pg_test_fsync) on the database server")
    folder = os.path.dirname(os.path.abspath(config.database))
    try:
        measured = disk.summary(disk.flush_times(folder, seconds=args.seconds))
    except OSError as error:
        raise StoreError(f"cannot write a test file in {folder}: {error.strerror or error}") from None
    if args.json:
        return emit({"folder": folder, "block_bytes": disk.BLOCK, **{k: round(v, 3) for k, v in measured.items()}}) or 0
    if not measured["flushes"]:
        print(printable(f"{folder}: no flush measured in {args.seconds:g} s"))
        return 0
    print(printable(f"{folder}: {measured['flushes']} flushes of {disk.BLOCK // 1024} KiB in {args.seconds:g} s: "
                    f"p50 {measured['p50_ms']:.2f} ms, p99 {measured['p99_ms']:.2f} ms, max {measured['max_ms']:.1f} ms"))
    return 0


def run_purge(args):
    _, admin = open_admin(args)
    with progress("purged") as report:
        purged = admin.purge_delivered(now=admin.clock(), progress=report)
    return emit({"purged": purged}) if args.json else print(f"purged {purged} finished mutations") or 0


def run_vacuum(args):
    _, admin = open_admin(args)
    before, after = admin.vacuum()
    if args.json:
        return emit({"before": before, "after": after})
    print(f"database {before['database_bytes']:,} -> {after['database_bytes']:,} bytes, "
          f"WAL {before['wal_bytes']:,} -> {after['wal_bytes']:,} bytes")
    return 0


def run_backup(args):
    _, admin = open_admin(args)
    with progress("pages copied") as report:
        size = admin.backup(args.destination, progress=report)
    return emit({"backup": args.destination, "bytes": size}) if args.json else print(
        printable(f"backed up to {args.destination} ({size:,} bytes)")) or 0


def run_migrate(args):
    config = load_config(args.config)
    if is_postgres_url(config.database):
        raise StoreError("[diy] database is already a PostgreSQL URL; migrate moves an SQLite outbox into one")
    if not is_postgres_url(args.to):
        raise StoreError("--to must be a postgresql:// URL naming an empty database")
    require_database(config)
    source = open_database(config.database, write_timeout=MIGRATE_LOCK_WAIT)
    target = open_database(args.to, write_timeout=MIGRATE_LOCK_WAIT)
    try:
        with progress("copied") as report:
            moved = move(source, target, progress=lambda table, count: report(table, count))
    finally:
        source.close()
        target.close()
    if args.json:
        return emit({**moved, "to": target.location})
    print(f"moved {moved['audiences']} audiences, {moved['pending']} undelivered mutations "
          f"({moved['batches']} batches) and {moved['dead_letters']} dead letters into {target.location}")
    print(f"next: set [diy] database = {target.location} in {config.source} and start the service")
    return 0


MIGRATE_LOCK_WAIT = 30.0
"""Seconds migrate waits for the SQLite file's write lock and PostgreSQL's rows."""
