"""The command line of the operator's commands (diy/admin.py): each command's arguments, help
and description, added to diy-wsgi's own parser by diy/cli.py.
"""
import argparse

from diy.admin import (run_audience_forget, run_audience_set, run_audience_show, run_audiences_list,
                       run_backup, run_check, run_dead_list, run_dead_purge, run_dead_replay,
                       run_dead_show, run_disk, run_migrate, run_purge, run_retry_now, run_status,
                       run_vacuum, run_verify)
from targets.settings import parse_duration


def add_commands(commands, add_config):
    def command(name, run, help, description=None):
        return command_in(commands, name, run, help, add_config, description)

    command("status", run_status, "pending, leased and dead mutations per integration; dispatchers; file sizes")

    dead = commands.add_parser("dead", help="list, show, replay or purge dead-lettered mutations",
                               description="Dead letters: mutations a platform refused or that ran out of "
                               "attempts, kept with the platform's reason until you replay or purge them.")
    dead_commands = dead.add_subparsers(dest="dead_command", metavar="ACTION", required=True)
    for name, run, help in (
        ("list", run_dead_list, "list dead letters, oldest first"),
        ("replay", run_dead_replay, "queue dead letters again, in order; stale ones (superseded by a later "
         "mutation of the same user) are never replayed"),
        ("purge", run_dead_purge, "delete dead letters for good"),
    ):
        parser = command_in(dead_commands, name, run, help, add_config)
        add_filters(parser)
        if name == "list":
            parser.add_argument("--limit", type=int, default=100, help="most rows to show (default 100)")
        if name == "purge":
            parser.add_argument("--all", action="store_true", help="needed to purge without a filter")
    show = command_in(dead_commands, "show", run_dead_show, "everything kept about one dead letter", add_config)
    show.add_argument("id", type=int, help="the mutation id (from dead list)")

    audiences = commands.add_parser("audiences", help="the DMP audience id -> platform id mapping",
                                    description="The mapping from the DMP's audience ids to the platform's ids.")
    audience_commands = audiences.add_subparsers(dest="audiences_command", metavar="ACTION", required=True)
    listing = command_in(audience_commands, "list", run_audiences_list, "list audiences with their state", add_config)
    listing.add_argument("--integration")
    listing.add_argument("--state", choices=("creating", "ready", "failed"))
    for name, run, help in (
        ("show", run_audience_show, "one audience and its mutations by state"),
        ("set", run_audience_set, "map a DMP audience id to a platform id by hand (it is then ready)"),
        ("forget", run_audience_forget, "delete an audience's mapping and its finished mutations"),
    ):
        parser = command_in(audience_commands, name, run, help, add_config)
        parser.add_argument("--integration", help="default: the integration that has this audience "
                            "(or the only one configured)")
        parser.add_argument("audience", help="the DMP's audience id (or the id the DMP sends)")
        if name == "set":
            parser.add_argument("target_id", help="the platform's id")

    retry = command("retry-now", run_retry_now, "the platform is back: make every audience waiting for a retry due now",
                    "Deliveries that failed wait for their next retry, up to [dispatcher] backoff_cap (10 "
                    "minutes by default) after a long outage. Once the platform is back, this makes every "
                    "audience waiting for a retry (or for its creation) due now; running dispatchers "
                    "deliver it within poll_interval. Attempts already counted stay counted. An account "
                    "whose circuit breaker is open still waits for the breaker's trial call (a process's "
                    "breaker lives in that process).")
    retry.add_argument("--integration", help="only this integration's audiences")
    retry.add_argument("--audience", help="only this audience (the DMP's id, or the id the DMP sends)")

    verifier = command("verify", run_verify, "check a body against an X-HMAC with the configured secrets",
                       "Tell whether X-HMAC SIGNATURE matches the body in FILE (or standard input) under "
                       "one of the integration's hmac_secrets; exit status 0 if it does, 1 if not.")
    verifier.add_argument("--integration", help="default: every integration")
    verifier.add_argument("--signature", required=True, help="the X-HMAC value the DMP sent")
    verifier.add_argument("file", nargs="?", help="the body, byte for byte (default: standard input)")

    check = command("check", run_check, "look for corruption in the database file (or a backup); exit 1 if any",
                    "Run SQLite's quick_check on the database (safe while the service runs: it only reads); "
                    "exit status 0 if the file is sound, 1 with what SQLite found if not. Run it after a "
                    "crash of the machine, and on each backup before you rely on it.")
    check.add_argument("--file", help="check this file instead, e.g. a backup (default: [diy] database)")
    check.add_argument("--full", action="store_true",
                       help="PRAGMA integrity_check: also every index against its table (slower on large files)")
    disk = command("disk", run_disk, "time the flushes of the disk under the database (what every 200 waits for)",
                   "Append 16 KiB to a file of its own in the database's folder and fsync it, every 20 ms "
                   "for --seconds, then print how long the flushes took. Every acknowledged request waits "
                   "for one (synchronous = full), and the requests behind a slow one wait with it, so p99 "
                   "and max here are the floor under the service's p99. Safe beside the running service.")
    disk.add_argument("--seconds", type=float, default=5.0, help="how long to measure (default 5)")
    command("purge", run_purge, "delete delivered mutations older than [diy] retention now (it also runs by itself)")
    command("vacuum", run_vacuum, "checkpoint and truncate the WAL, then VACUUM the database (blocks writers while it runs)")
    backup = command("backup", run_backup, "copy the live database to a new file (online, consistent)",
                     "Copy the database with SQLite's online backup API: the service keeps running and "
                     "the copy is consistent. Restore by stopping the service and putting the copy in place.")
    backup.add_argument("destination", help="a new file")
    migrate = command("migrate", run_migrate, "move this SQLite outbox into an empty PostgreSQL database",
                      "Copy the audiences (with their ids and platform ids), the undelivered mutations in "
                      "their order and the dead letters from [diy] database (an SQLite file) into the empty "
                      "PostgreSQL database at --to, in one transaction. Stop the service and every "
                      "`diy-wsgi dispatch` first: migrate refuses while a dispatcher is running, and holds "
                      "the file's write lock while it copies. Then set [diy] database to the URL and start "
                      "the service (on as many VMs as you like). The SQLite file is left as it was.")
    migrate.add_argument("--to", required=True, metavar="URL",
                         help="postgresql://USER@HOST:PORT/DBNAME (the password from the URL, PGPASSWORD or ~/.pgpass)")


def command_in(subparsers, name, run, help, add_config, description=None):
    """One command's parser, with --config and --json, that runs `run`."""
    parser = subparsers.add_parser(name, help=help, description=description or help)
    add_config(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.set_defaults(run=run)
    return parser


def add_filters(parser):
    parser.add_argument("--integration")
    parser.add_argument("--audience", help="a DMP audience id (or the id the DMP sends)")
    parser.add_argument("--customer", help="a DMP client id")
    parser.add_argument("--older-than", type=duration, metavar="AGE", help="died at least AGE ago (e.g. 1h, 7d)")
    parser.add_argument("--newer-than", type=duration, metavar="AGE", help="died at most AGE ago")


def duration(text):
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
