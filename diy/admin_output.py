"""How the operator's commands (diy/admin.py) show what they found: aligned tables, `name  value`
listings, ages and local times, one JSON document with `--json`, and a progress count on a
terminal. Every cell is made printable, since names and reasons come from the DMP and the
platforms.
"""
import contextlib
import datetime
import json
import sys

from diy.logs import escape_unprintable as printable


@contextlib.contextmanager
def progress(label):
    """A count rewritten in place on stderr while a long command runs, when stderr is a terminal
    (never in a pipe or a log, where it would only be noise)."""
    shown = sys.stderr.isatty()

    def report(*numbers):
        if shown:
            print(f"\r{label}: " + " ".join(str(n) for n in numbers) + "\033[K", end="", file=sys.stderr, flush=True)

    try:
        yield report
    finally:
        if shown:
            print(file=sys.stderr)


def emit(document):
    print(json.dumps(document, indent=2, default=str))
    return 0


def age(seconds):
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def table(headers, rows):
    """Rows under aligned headers; every cell made printable, since names and reasons come from
    the DMP and the platforms and could otherwise clear the screen or forge a row."""
    rows = [tuple(shown(cell) for cell in row) for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    for row in [headers] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    if not rows:
        print("(none)")


def listing(fields):
    """One `name  value` line per field, values as `table` shows them."""
    width = max(map(len, fields))
    for key, value in fields.items():
        print(f"{key:>{width}}  {shown(value)}")


def shown(value):
    """A value as a person reads it: `-` for none, JSON for a structure, printable always."""
    if value is None or value == "":
        return "-"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    return printable(str(value))


def local_time(epoch):
    """An epoch time as this machine's local time, e.g. 2026-12-03 07:12:05+00:00."""
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch).astimezone().isoformat(" ", "seconds")
