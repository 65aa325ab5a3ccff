"""How each kind of configuration value is written: one parser per kind (durations, sizes, rates,
paths, database locations, secrets lists...), each taking the raw text of one key.

A parser returns the value or raises `Invalid` with what is wrong; diy/config.py adds the file,
section and key. Messages never repeat the value, since it may be a secret.
"""
import os
import re
from typing import Callable
from urllib.parse import urlsplit

from outbox.postgres import is_postgres_url
from targets.settings import parse_duration

SHORTEST_HMAC_SECRET = 16
"""Bytes. The DMP sends each body with its HMAC, so one captured request lets anyone try
secrets offline, as fast as they can compute HMAC-SHA1: 16 random bytes are out of reach."""
TARGET_FORMS = "a builtin target (webhook, thetradedesk, criteo) or package.module:Class for your own"
NAME = re.compile(r"[A-Za-z0-9_.-]+")
"""An integration's NAME and a customer section's ID."""
_BOOLEANS = {"yes": True, "true": True, "on": True, "1": True,
             "no": False, "false": False, "off": False, "0": False}
_SIZE = re.compile(r"([0-9]+)\s*([kKmM]?)")
_BYTES_PER_UNIT = {"": 1, "k": 1024, "m": 1024 * 1024}
_SERVER_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*)?")


class Invalid(Exception):
    """A value is wrong; the message says why and diy/config.py adds where."""


def rate(raw):
    """Calls a second: `10`, `10/s`, `250/m` (a minute) or `1000/h`."""
    number, slash, unit = raw.partition("/")
    per = {"": 1, "s": 1, "m": 60, "h": 3600}.get(unit.strip() if slash else "")
    try:
        calls = float(number)
    except ValueError:
        calls = None
    if per is None or calls is None or not 0 < calls < 1e6:
        raise Invalid("expected calls a second, e.g. 10, 10/s, 250/m or 1000/h")
    return calls / per


def boolean(raw):
    try:
        return _BOOLEANS[raw.lower()]
    except KeyError:
        raise Invalid("expected yes or no (or true/false, on/off, 1/0)") from None


def choice(*choices) -> Callable[[str], str]:
    def parse(raw):
        if raw.lower() not in choices:
            raise Invalid(f"expected one of {', '.join(choices)}")
        return raw.lower()
    return parse


def whole_number(low, high=None) -> Callable[[str], int]:
    def parse(raw):
        number = int(raw) if re.fullmatch("[0-9]+", raw) else None
        if number is None or number < low or (high is not None and number > high):
            raise Invalid(f"expected a whole number from {low} to {high}" if high is not None
                          else f"expected a whole number of at least {low}")
        return number
    return parse


def duration(allow_zero=False) -> Callable[[str], float]:
    def parse(raw):
        try:
            seconds = parse_duration(raw)
        except ValueError as error:
            raise Invalid(str(error)) from None
        if seconds == 0 and not allow_zero:
            raise Invalid("must be more than 0")
        return seconds
    return parse


def size(raw):
    match = _SIZE.fullmatch(raw)
    if not match:
        raise Invalid("expected a number of bytes, optionally with k or M, such as 512k")
    number = int(match.group(1)) * _BYTES_PER_UNIT[match.group(2).lower()]
    if number == 0:
        raise Invalid("must be more than 0")
    return number


def database(raw, base_dir):
    if not raw:
        raise Invalid("required: the path of the SQLite file or a postgresql:// URL")
    if is_postgres_url(raw):
        return postgres_url(raw)
    if "://" in raw:
        raise Invalid("expected the path of the SQLite file or a postgresql:// URL")
    return os.path.abspath(os.path.join(base_dir, raw))


def postgres_url(raw):
    """A libpq connection URL; its host, port and database name are checked here, the rest by
    libpq when it connects. Messages never repeat the URL (it may hold a password)."""
    try:
        parts = urlsplit(raw)
        parts.port
    except ValueError:
        raise Invalid("not a valid postgresql:// URL (check the port and any special characters, "
                      "which must be percent-encoded)") from None
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise Invalid("the postgresql:// URL must name a database: postgresql://USER@HOST:PORT/DBNAME")
    return raw


def server_name(raw):
    name = raw.strip().lower()
    if not _SERVER_NAME.fullmatch(name):
        raise Invalid("expected a host name such as dmp.example.com (the nginx site's server_name)")
    return name


def folder(raw, base_dir):
    if not raw:
        raise Invalid("expected the path of a folder")
    return os.path.abspath(os.path.join(base_dir, raw))


def normal_path(path):
    """A URL path without its trailing slash ("/" stays "/")."""
    return path.rstrip("/") or "/"


def integration_path(raw, reserved):
    """The path the DMP calls: plain, absolute, and none of the `reserved` ones."""
    if not raw.startswith("/"):
        raise Invalid('must start with "/"')
    if any(char in "?#" or char.isspace() for char in raw):
        raise Invalid("must be a plain path, without spaces, query or fragment")
    path = normal_path(raw)
    if path in reserved:
        raise Invalid(f"{path} is reserved for the service itself")
    return path


def target(raw):
    if not _TARGET.fullmatch(raw):
        raise Invalid(f"expected {TARGET_FORMS}")
    return raw


def hmac_secrets(raw, resolve, warn):
    """The comma-separated secrets, each resolved by `resolve` (env:, file:); `warn` takes the
    one line about secrets too short to be safe."""
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items:
        raise Invalid("at least one secret is required")
    # surrogateescape gives back the exact bytes of an environment variable that is not UTF-8
    secrets = tuple(resolve(item).encode("utf-8", "surrogateescape") for item in items)
    if not all(secrets):
        raise Invalid("a secret is empty, and anyone could sign with an empty secret")
    short = [f"#{number}" for number, secret in enumerate(secrets, 1) if len(secret) < SHORTEST_HMAC_SECRET]
    if short:
        warn(f"{'secrets' if len(short) > 1 else 'secret'} {', '.join(short)} "
             f"{'are' if len(short) > 1 else 'is'} shorter than {SHORTEST_HMAC_SECRET} bytes: whoever captures one "
             "signed request can guess a short secret offline and sign their own requests; use "
             f"{SHORTEST_HMAC_SECRET} random bytes or more (openssl rand -hex 32)")
    return secrets


def metrics_token(value):
    if not value.strip():
        raise Invalid("the token is empty, and /metrics would answer anyone who sends "
                      "'Authorization: Bearer'; set a token, or remove the key to keep /metrics loopback only")
    return value


def basic_auth(value):
    user, colon, password = value.partition(":")
    if not (colon and user and password):
        raise Invalid("expected USER:PASSWORD, neither empty")
    return user, password
