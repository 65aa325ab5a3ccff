"""The configuration: one INI file, read once at start into frozen dataclasses.

Every problem is one `ConfigError` naming the file, the section and the key, e.g.
`diy.ini: [integration:demo] hmac_secrets: at least one secret is required`. Messages never
repeat a value, so a secret written on the wrong line does not end up in a log.

The file is plain INI with these choices: keys are case-sensitive; a line starting with `;` or
`#` is a comment, and so is ` ;` (after whitespace) at the end of a value, except after a
credential written inline, where it is refused as ambiguous; `%` is an ordinary character (no
interpolation); there is no `[DEFAULT]` section. Secrets (each item of `hmac_secrets`,
`basic_auth`, `database_password` and every `target.*` key) may be written `env:NAME` or
`file:PATH`. Settings that work but are unsafe (a short HMAC secret, a secret file every user
can read) are logged as warnings by logger `diy.config`.
"""
import configparser
import hashlib
import logging
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Optional
from urllib.parse import urlsplit

from outbox.postgres import is_postgres_url, without_password
from targets.settings import parse_duration

RESERVED_PATHS = ("/healthz", "/readyz", "/metrics")
"""Paths the service answers itself (diy/health.py); no integration may take them."""
MIN_TAKEOVER_AFTER = 1.0
SHORTEST_HMAC_SECRET = 16
"""Bytes. The DMP sends each body with its HMAC, so one captured request lets anyone try
secrets offline, as fast as they can compute HMAC-SHA1: 16 random bytes are out of reach."""

log = logging.getLogger("diy.config")


class ConfigError(Exception):
    """The configuration is wrong; the message says where and why, and never holds a secret."""


@dataclass(frozen=True)
class Integration:
    """One `[integration:NAME]`: where the DMP calls, how it proves itself, where audiences go."""

    name: str
    path: str
    """Normalised: starts with "/" and has no trailing slash (unless it is "/")."""
    hmac_secrets: tuple[bytes, ...] = field(repr=False)
    """Every secret a signature may be made with; more than one while a secret rotates."""
    target: str
    """A builtin target's name, or `package.module:Class` naming a `targets.base.Target` class (the
    older dotted form `package.module.Class` is taken too)."""
    basic_auth: Optional[tuple[str, str]] = field(default=None, repr=False)
    target_settings: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False)
    """The `target.*` keys without the prefix, secrets resolved; may hold credentials."""
    return_target_id: bool = False
    accounts: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False)
    """Per DMP client (`Customer`, as text): its own target settings, the integration's
    `target.*` keys overridden by its `[integration:NAME:customer:ID]` section. When any is
    given, customers without one have no account; when none is, every customer shares one."""
    calls_per_second: Optional[float] = None
    """Most platform calls a second, per account and process; None takes the target's default."""
    concurrent_calls: Optional[int] = None
    """Most platform calls in flight at once, per account and process; None: the target's."""
    breaker_failures: int = 5
    """Consecutive transient failures of an account that open its circuit breaker."""
    breaker_cooldown: float = 30.0
    """How long an open breaker holds the account's work back before one trial call."""


@dataclass(frozen=True)
class DispatcherSettings:
    """The `[dispatcher]` section: how mutations in the outbox reach the platforms."""

    embedded: bool = True
    threads: int = 4
    poll_interval: float = 1.0
    lease: float = 300.0
    takeover_after: float = 5.0
    """A dispatcher not heard from this long is presumed dead: its leases are taken over."""
    max_attempts: int = 50
    backoff_base: float = 2.0
    backoff_cap: float = 600.0
    stop_timeout: float = 10.0


@dataclass(frozen=True)
class Config:
    """The whole configuration; durations are float seconds, sizes int bytes."""

    database: str = field(repr=False)
    """Absolute path of the SQLite file, or a PostgreSQL URL (`postgresql://...`, which may hold a
    password: never printed)."""
    metrics_dir: str = ""
    """Where each process writes its metrics for /metrics to merge (one folder per machine)."""
    database_password: Optional[str] = field(default=None, repr=False)
    """PostgreSQL's password, when it is not in the URL, PGPASSWORD or ~/.pgpass."""
    synchronous: str = "full"
    write_timeout: float = 3.0
    max_body: int = 1048576
    create_timeout: float = 2.5
    retention: float = 86400.0
    log_level: str = "info"
    log_format: str = "text"
    """`text` (key=value lines) or `json` (one object a line)."""
    metrics_token: Optional[str] = field(default=None, repr=False)
    """When set, /metrics needs `Authorization: Bearer <token>`; else it answers loopback only."""
    server_name: Optional[str] = None
    """The name nginx passes as Host (its `server_name`): /metrics's loopback-only answer takes it
    besides localhost, 127.0.0.1 and [::1]."""
    dispatcher: DispatcherSettings = field(default_factory=DispatcherSettings)
    integrations: tuple[Integration, ...] = ()
    source: str = "<string>"
    """Where the configuration came from, as messages name it."""

    def integration_for_path(self, path: str) -> Optional[Integration]:
        """The integration the DMP reaches at `path` (a PATH_INFO; a trailing slash is ignored)."""
        path = _normal_path(path)
        for integration in self.integrations:
            if integration.path == path:
                return integration
        return None


def load_config(path, environ: Optional[Mapping[str, str]] = None) -> Config:
    """Read the configuration file at `path`; `environ` (default `os.environ`) serves `env:`."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8-sig")
    except OSError as error:
        raise ConfigError(f"{source}: cannot read the configuration file "
                          f"({error.strerror or type(error).__name__})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: the configuration file is not UTF-8 text") from None
    config = parse_config(
        text, source=source, base_dir=os.path.dirname(os.path.abspath(source)),
        environ=os.environ if environ is None else environ)
    _warn_if_inline_secrets_are_open_to_everyone(source, _inline_secrets(_read_ini(text, source)))
    return config


def parse_config(text: str, *, source: str = "<string>", base_dir=".",
                 environ: Optional[Mapping[str, str]] = None) -> Config:
    """Parse configuration `text`; relative paths are taken from `base_dir`.

    Reads nothing but the files named by `file:` secrets: `env:` secrets are looked up in
    `environ` only, which defaults to an empty mapping (`load_config` passes `os.environ`).
    """
    ini = _read_ini(text, source)
    _refuse_comments_after_inline_secrets(source, ini, _read_ini(text, source, inline_comments=False))
    base_dir = os.path.abspath(base_dir)
    resolve = _secret_resolver(base_dir, {} if environ is None else environ, source)
    for section in ini.sections():
        if section not in ("diy", "dispatcher") and not section.startswith("integration:"):
            raise _error(source, section, None, "unknown section; expected [diy], [dispatcher], "
                         "[integration:NAME] or [integration:NAME:customer:ID]")

    def items(section):
        return dict(ini.items(section)) if ini.has_section(section) else {}

    settings = _diy_settings(source, items("diy"), base_dir, resolve)
    dispatcher = _dispatcher_settings(source, items("dispatcher"))
    accounts = _accounts(source, ini.sections(), items, resolve)
    integrations = tuple(
        _integration(source, section, items(section), resolve, accounts.pop(section, {}))
        for section in ini.sections()
        if section.startswith("integration:") and ":customer:" not in section)
    for section, customers in accounts.items():
        raise _error(source, next(iter(customers.values()))[0], None,
                     f"there is no [{section}] for this customer section")
    if not integrations:
        raise ConfigError(f"{source}: at least one [integration:NAME] section is required")
    _check_paths_unique(source, integrations)
    return Config(**settings, dispatcher=dispatcher, integrations=integrations, source=source)


def _read_ini(text, source, inline_comments=True):
    ini = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";",) if inline_comments else None, default_section="")
    ini.optionxform = str
    if not inline_comments:
        ini.SECTCRE = _SECTION_BEFORE_ANY_COMMENT
    # configparser's messages quote the offending line, which may hold a secret: only the
    # line number is passed on, and `from None` keeps the original out of tracebacks.
    try:
        ini.read_string(text, source=source)
    except configparser.DuplicateOptionError as error:
        raise _error(source, error.section, error.option,
                     f"line {error.lineno}: the key appears twice") from None
    except configparser.DuplicateSectionError as error:
        raise _error(source, error.section, None,
                     f"line {error.lineno}: the section appears twice") from None
    except configparser.MissingSectionHeaderError as error:
        raise ConfigError(f"{source}: line {error.lineno}: "
                          "a key before the first [section]") from None
    except configparser.ParsingError as error:
        lines = ", ".join(str(lineno) for lineno, _ in error.errors)
        raise ConfigError(f"{source}: line {lines}: expected [section], key = value "
                          "or a comment") from None
    except configparser.Error:
        raise ConfigError(f"{source}: not a valid INI file") from None
    return ini


def _refuse_comments_after_inline_secrets(source, ini, uncut):
    """`secret = abc ;def` is the secret `abc` and a comment, or the secret `abc ;def`: refused
    rather than guessed wherever a credential is written inline (env: and file: are unambiguous)."""
    for section in ini.sections():
        for key, value in ini.items(section):
            inline = [item for item in value.split(",") if not item.strip().startswith(("env:", "file:"))]
            if _CREDENTIAL_KEY.fullmatch(key) and inline and value != uncut.get(section, key, fallback=value):
                raise _error(source, section, key, "' ;' after a secret written inline is ambiguous (a comment, "
                             "or part of the secret?); put the comment on a line of its own, or the "
                             "secret in env: or file:")


def _diy_settings(source, items, base_dir, resolve):
    settings = _parse_section(source, "diy", items, {
        "database": lambda raw: _database(raw, base_dir),
        "database_password": resolve,
        "metrics_dir": lambda raw: _folder(raw, base_dir),
        "synchronous": _choice("full", "normal"),
        "write_timeout": _duration(),
        "max_body": _size,
        "create_timeout": _duration(),
        "retention": _duration(allow_zero=True),
        "log_level": _choice("debug", "info", "warning", "error"),
        "log_format": _choice("text", "json"),
        "metrics_token": lambda raw: _metrics_token(resolve(raw)),
        "server_name": _server_name,
    })
    if "database" not in settings:
        raise _error(source, "diy", "database", "required: the path of the SQLite file or a postgresql:// URL")
    postgres = is_postgres_url(settings["database"])
    if "database_password" in settings and not postgres:
        raise _error(source, "diy", "database_password", "only for a PostgreSQL database (postgresql://...)")
    if "metrics_dir" not in settings:
        settings["metrics_dir"] = default_metrics_dir(settings["database"])
    return settings


def _dispatcher_settings(source, items):
    settings = DispatcherSettings(**_parse_section(source, "dispatcher", items, {
        "embedded": _boolean,
        "threads": _whole_number(1, 256),
        "poll_interval": _duration(),
        "lease": _duration(),
        "takeover_after": _duration(),
        "max_attempts": _whole_number(1),
        "backoff_base": _duration(),
        "backoff_cap": _duration(),
        "stop_timeout": _duration(allow_zero=True),
    }))
    if settings.backoff_cap < settings.backoff_base:
        raise _error(source, "dispatcher", "backoff_cap", "must be at least backoff_base")
    if settings.takeover_after < MIN_TAKEOVER_AFTER:
        raise _error(source, "dispatcher", "takeover_after",
                     f"must be at least {MIN_TAKEOVER_AFTER:g}s: a dispatcher beats its heart "
                     "5 times in that time, and one that waits a moment for the database must not look dead")
    return settings


def _accounts(source, sections, items, resolve):
    """{integration section: {customer id: (customer section, its target.* overrides)}}."""
    accounts = {}
    for section in sections:
        integration, marker, customer = section.partition(":customer:")
        if not marker:
            continue
        if not _NAME.fullmatch(customer):
            raise _error(source, section, None, "ID must match [A-Za-z0-9_.-]+")
        overrides = _parse_section(source, section, items(section), {"target.*": resolve})
        accounts.setdefault(integration, {})[customer] = (section, {
            key[len("target."):]: value for key, value in overrides.items()})
    return accounts


def _integration(source, section, items, resolve, customers):
    name = section[len("integration:"):]
    if not _NAME.fullmatch(name):
        raise _error(source, section, None, "NAME must match [A-Za-z0-9_.-]+")
    values = _parse_section(source, section, items, {
        "path": _path,
        "hmac_secrets": lambda raw: _hmac_secrets(
            raw, resolve, lambda why: _warn(f"{source}: [{section}] hmac_secrets", why)),
        "basic_auth": lambda raw: _basic_auth(resolve(raw)),
        "target": _target,
        "return_target_id": _boolean,
        "calls_per_second": _rate,
        "concurrent_calls": _whole_number(1, 1024),
        "breaker_failures": _whole_number(1),
        "breaker_cooldown": _duration(),
        "target.*": resolve,
    })
    for key, why in (("path", 'required: the URL path the DMP calls, e.g. "/dmp"'),
                     ("hmac_secrets", "at least one secret is required"),
                     ("target", f"required: {TARGET_FORMS}")):
        if key not in values:
            raise _error(source, section, key, why)
    target_settings = {key[len("target."):]: values.pop(key)
                       for key in list(values) if key.startswith("target.")}
    accounts = {customer: MappingProxyType({**target_settings, **overrides})
                for customer, (_, overrides) in customers.items()}
    return Integration(name=name, target_settings=MappingProxyType(target_settings),
                       accounts=MappingProxyType(accounts), **values)


def _check_paths_unique(source, integrations):
    owners = {}
    for integration in integrations:
        owner = owners.setdefault(integration.path, integration.name)
        if owner != integration.name:
            raise _error(source, f"integration:{integration.name}", "path",
                         f"{integration.path} is already the path of [integration:{owner}]")


def _parse_section(source, section, items, parsers):
    """Parse each key of `section` with its parser; a key without one is an error, not ignored.

    A parser named `prefix.*` takes every key `prefix.SOMETHING`.
    """
    values = {}
    for key, raw in items.items():
        prefix, dot, rest = key.partition(".")
        parser = parsers.get(key) or (parsers.get(f"{prefix}.*") if dot and rest else None)
        if parser is None:
            raise _error(source, section, key,
                         f"unknown key; expected one of {', '.join(parsers)}")
        try:
            values[key] = parser(raw)
        except _Invalid as invalid:
            raise _error(source, section, key, str(invalid)) from None
    return values


def _error(source, section, key, why):
    where = f"[{section}] {key}" if key else f"[{section}]"
    return ConfigError(f"{source}: {where}: {why}")


def _warn(where, why):
    """A setting that works but is unsafe: one line in the log (on stderr before logging is set up)."""
    log.warning("unsafe configuration at=%s problem=%s", where, why)


class _Invalid(Exception):
    """A value is wrong; the message says why and `_parse_section` adds where."""


_BOOLEANS = {"yes": True, "true": True, "on": True, "1": True,
             "no": False, "false": False, "off": False, "0": False}
"""Ten years: longer is a typo, and far longer overflows the waits of `threading`."""
_SIZE = re.compile(r"([0-9]+)\s*([kKmM]?)")
_BYTES_PER_UNIT = {"": 1, "k": 1024, "m": 1024 * 1024}
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SERVER_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
_SECTION_BEFORE_ANY_COMMENT = re.compile(r"\[(?P<header>[^]]+)\]")
_CREDENTIAL_KEY = re.compile(r"hmac_secrets|basic_auth|metrics_token|target\.(header\..+|.*(secret|token|password).*)")
_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*(:[A-Za-z_][A-Za-z0-9_]*)?")
TARGET_FORMS = "a builtin target (webhook, thetradedesk, criteo) or package.module:Class for your own"


def _rate(raw):
    """Calls a second: `10`, `10/s`, `250/m` (a minute) or `1000/h`."""
    number, slash, unit = raw.partition("/")
    per = {"": 1, "s": 1, "m": 60, "h": 3600}.get(unit.strip() if slash else "")
    try:
        rate = float(number)
    except ValueError:
        rate = None
    if per is None or rate is None or not 0 < rate < 1e6:
        raise _Invalid("expected calls a second, e.g. 10, 10/s, 250/m or 1000/h")
    return rate / per


def _boolean(raw):
    try:
        return _BOOLEANS[raw.lower()]
    except KeyError:
        raise _Invalid("expected yes or no (or true/false, on/off, 1/0)") from None


def _choice(*choices) -> Callable[[str], str]:
    def parse(raw):
        if raw.lower() not in choices:
            raise _Invalid(f"expected one of {', '.join(choices)}")
        return raw.lower()
    return parse


def _whole_number(low, high=None) -> Callable[[str], int]:
    def parse(raw):
        number = int(raw) if re.fullmatch("[0-9]+", raw) else None
        if number is None or number < low or (high is not None and number > high):
            raise _Invalid(f"expected a whole number from {low} to {high}" if high is not None
                           else f"expected a whole number of at least {low}")
        return number
    return parse


def _duration(allow_zero=False) -> Callable[[str], float]:
    def parse(raw):
        try:
            seconds = parse_duration(raw)
        except ValueError as error:
            raise _Invalid(str(error)) from None
        if seconds == 0 and not allow_zero:
            raise _Invalid("must be more than 0")
        return seconds
    return parse


def _size(raw):
    match = _SIZE.fullmatch(raw)
    if not match:
        raise _Invalid("expected a number of bytes, optionally with k or M, such as 512k")
    size = int(match.group(1)) * _BYTES_PER_UNIT[match.group(2).lower()]
    if size == 0:
        raise _Invalid("must be more than 0")
    return size


def _database(raw, base_dir):
    if not raw:
        raise _Invalid("required: the path of the SQLite file or a postgresql:// URL")
    if is_postgres_url(raw):
        return _postgres_url(raw)
    if "://" in raw:
        raise _Invalid("expected the path of the SQLite file or a postgresql:// URL")
    return os.path.abspath(os.path.join(base_dir, raw))


def _postgres_url(raw):
    """A libpq connection URL; its host, port and database name are checked here, the rest by
    libpq when it connects. Messages never repeat the URL (it may hold a password)."""
    try:
        parts = urlsplit(raw)
        parts.port
    except ValueError:
        raise _Invalid("not a valid postgresql:// URL (check the port and any special characters, "
                       "which must be percent-encoded)") from None
    if not parts.path.strip("/") and "dbname=" not in parts.query:
        raise _Invalid("the postgresql:// URL must name a database: postgresql://USER@HOST:PORT/DBNAME")
    return raw


def _server_name(raw):
    name = raw.strip().lower()
    if not _SERVER_NAME.fullmatch(name):
        raise _Invalid("expected a host name such as dmp.example.com (the nginx site's server_name)")
    return name


def _folder(raw, base_dir):
    if not raw:
        raise _Invalid("expected the path of a folder")
    return os.path.abspath(os.path.join(base_dir, raw))


def default_metrics_dir(database):
    """Beside the SQLite file; for PostgreSQL, a folder of this machine's temporary directory
    named after the database (set `metrics_dir` where processes do not share /tmp)."""
    if not is_postgres_url(database):
        return database + ".metrics"
    digest = hashlib.sha256(without_password(database).encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"diy-wsgi-metrics-{digest}")


def _normal_path(path):
    return path.rstrip("/") or "/"


def _path(raw):
    if not raw.startswith("/"):
        raise _Invalid('must start with "/"')
    if any(char in "?#" or char.isspace() for char in raw):
        raise _Invalid("must be a plain path, without spaces, query or fragment")
    path = _normal_path(raw)
    if path in RESERVED_PATHS:
        raise _Invalid(f"{path} is reserved for the service itself")
    return path


def _target(raw):
    if not _TARGET.fullmatch(raw):
        raise _Invalid(f"expected {TARGET_FORMS}")
    return raw


def _hmac_secrets(raw, resolve, warn):
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items:
        raise _Invalid("at least one secret is required")
    # surrogateescape gives back the exact bytes of an environment variable that is not UTF-8
    secrets = tuple(resolve(item).encode("utf-8", "surrogateescape") for item in items)
    if not all(secrets):
        raise _Invalid("a secret is empty, and anyone could sign with an empty secret")
    short = [f"#{number}" for number, secret in enumerate(secrets, 1) if len(secret) < SHORTEST_HMAC_SECRET]
    if short:
        warn(f"{'secrets' if len(short) > 1 else 'secret'} {', '.join(short)} "
             f"{'are' if len(short) > 1 else 'is'} shorter than {SHORTEST_HMAC_SECRET} bytes: whoever captures one "
             "signed request can guess a short secret offline and sign their own requests; use "
             f"{SHORTEST_HMAC_SECRET} random bytes or more (openssl rand -hex 32)")
    return secrets


def _metrics_token(value):
    if not value.strip():
        raise _Invalid("the token is empty, and /metrics would answer anyone who sends "
                       "'Authorization: Bearer'; set a token, or remove the key to keep /metrics loopback only")
    return value


def _basic_auth(value):
    user, colon, password = value.partition(":")
    if not (colon and user and password):
        raise _Invalid("expected USER:PASSWORD, neither empty")
    return user, password


def load_secret(raw, where, environ=None):
    """One secret given outside a configuration file (`diy-wsgi sign --secret`): written inline,
    `env:NAME` or `file:PATH` (relative to the working directory), read and checked as the
    configuration's own secrets are; a problem is a ConfigError naming `where`."""
    resolve = _secret_resolver(os.getcwd(), os.environ if environ is None else environ, where)
    try:
        return resolve(raw)
    except _Invalid as error:
        raise ConfigError(f"{where}: {error}") from None


def _secret_resolver(base_dir, environ, source) -> Callable[[str], str]:
    """Return a function giving the value a secret's text stands for.

    `env:NAME` is the variable NAME of `environ`; `file:PATH` is the content of the file
    (relative to `base_dir`) without trailing newlines, with a warning when every user of the
    machine may read or change it; anything else is the secret itself.
    """
    def resolve(raw):
        if raw.startswith("env:"):
            name = raw[len("env:"):].strip()
            if not name:
                raise _Invalid("env: needs the name of an environment variable")
            if name not in environ:
                raise _Invalid(f"environment variable {name} is not set")
            return environ[name]
        if raw.startswith("file:"):
            path = os.path.join(base_dir, raw[len("file:"):].strip())
            try:
                secret = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
                _warn_if_open_to_everyone(source, path)
                return secret
            except OSError as error:
                raise _Invalid(f"cannot read {path} "
                               f"({error.strerror or type(error).__name__})") from None
            except UnicodeDecodeError:
                raise _Invalid(f"{path} is not UTF-8 text") from None
        return raw
    return resolve


def _warn_if_open_to_everyone(source, path, what=None):
    """One `unsafe configuration` line when every user of the machine may read or change the
    secret file `path` (`what` names it otherwise: "the secret file PATH")."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        what = what or f"the secret file {path}"
        _warn(source, f"{what} can be read or changed by every user of this machine "
                      f"(mode {stat.S_IMODE(mode):o}); chmod 600 it")


def _inline_secrets(ini):
    """`[section] key` of every credential written inline (neither env: nor file:), a
    PostgreSQL URL's password included."""
    found = []
    for section in ini.sections():
        for key, value in ini.items(section):
            inline = [item for item in value.split(",") if item.strip() and not item.strip().startswith(("env:", "file:"))]
            credential = _CREDENTIAL_KEY.fullmatch(key) or key == "database_password"
            if (credential and inline) or (key == "database" and _url_password(value)):
                found.append(f"[{section}] {key}")
    return found


def _url_password(value):
    try:
        return is_postgres_url(value) and urlsplit(value.strip()).password is not None
    except ValueError:
        return False


def _warn_if_inline_secrets_are_open_to_everyone(source, inline):
    """A configuration file holding secrets written inline is itself a secret file."""
    if inline:
        _warn_if_open_to_everyone(source, source, what=f"the configuration file {source}, which holds "
                                  f"secrets written inline ({', '.join(inline)}),")
