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

Here: the configuration's shape (the dataclasses, their defaults) and reading the file into it,
section by section. How each kind of value is written is in diy/config_values.py; where secrets
come from, and the warnings about them, in diy/config_secrets.py.
"""
import configparser
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Optional

from diy import config_values as value
from diy.config_secrets import (CREDENTIAL_KEY, inline_secrets, secret_resolver, warn,
                                warn_if_inline_secrets_are_open_to_everyone)
from outbox.postgres import is_postgres_url, without_password

RESERVED_PATHS = ("/healthz", "/readyz", "/metrics")
"""Paths the service answers itself (diy/health.py); no integration may take them."""
MIN_TAKEOVER_AFTER = 1.0
_SECTION_BEFORE_ANY_COMMENT = re.compile(r"\[(?P<header>[^]]+)\]")


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
        path = value.normal_path(path)
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
    warn_if_inline_secrets_are_open_to_everyone(source, inline_secrets(_read_ini(text, source)))
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
    resolve = secret_resolver(base_dir, {} if environ is None else environ, source)
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
        for key, text in ini.items(section):
            inline = [item for item in text.split(",") if not item.strip().startswith(("env:", "file:"))]
            if CREDENTIAL_KEY.fullmatch(key) and inline and text != uncut.get(section, key, fallback=text):
                raise _error(source, section, key, "' ;' after a secret written inline is ambiguous (a comment, "
                             "or part of the secret?); put the comment on a line of its own, or the "
                             "secret in env: or file:")


def _diy_settings(source, items, base_dir, resolve):
    settings = _parse_section(source, "diy", items, {
        "database": lambda raw: value.database(raw, base_dir),
        "database_password": resolve,
        "metrics_dir": lambda raw: value.folder(raw, base_dir),
        "synchronous": value.choice("full", "normal"),
        "write_timeout": value.duration(),
        "max_body": value.size,
        "create_timeout": value.duration(),
        "retention": value.duration(allow_zero=True),
        "log_level": value.choice("debug", "info", "warning", "error"),
        "log_format": value.choice("text", "json"),
        "metrics_token": lambda raw: value.metrics_token(resolve(raw)),
        "server_name": value.server_name,
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
        "embedded": value.boolean,
        "threads": value.whole_number(1, 256),
        "poll_interval": value.duration(),
        "lease": value.duration(),
        "takeover_after": value.duration(),
        "max_attempts": value.whole_number(1),
        "backoff_base": value.duration(),
        "backoff_cap": value.duration(),
        "stop_timeout": value.duration(allow_zero=True),
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
        if not value.NAME.fullmatch(customer):
            raise _error(source, section, None, "ID must match [A-Za-z0-9_.-]+")
        overrides = _parse_section(source, section, items(section), {"target.*": resolve})
        accounts.setdefault(integration, {})[customer] = (section, {
            key[len("target."):]: setting for key, setting in overrides.items()})
    return accounts


def _integration(source, section, items, resolve, customers):
    name = section[len("integration:"):]
    if not value.NAME.fullmatch(name):
        raise _error(source, section, None, "NAME must match [A-Za-z0-9_.-]+")
    values = _parse_section(source, section, items, {
        "path": lambda raw: value.integration_path(raw, RESERVED_PATHS),
        "hmac_secrets": lambda raw: value.hmac_secrets(
            raw, resolve, lambda why: warn(f"{source}: [{section}] hmac_secrets", why)),
        "basic_auth": lambda raw: value.basic_auth(resolve(raw)),
        "target": value.target,
        "return_target_id": value.boolean,
        "calls_per_second": value.rate,
        "concurrent_calls": value.whole_number(1, 1024),
        "breaker_failures": value.whole_number(1),
        "breaker_cooldown": value.duration(),
        "target.*": resolve,
    })
    for key, why in (("path", 'required: the URL path the DMP calls, e.g. "/dmp"'),
                     ("hmac_secrets", "at least one secret is required"),
                     ("target", f"required: {value.TARGET_FORMS}")):
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
        except value.Invalid as invalid:
            raise _error(source, section, key, str(invalid)) from None
    return values


def _error(source, section, key, why):
    where = f"[{section}] {key}" if key else f"[{section}]"
    return ConfigError(f"{source}: {where}: {why}")


def default_metrics_dir(database):
    """Beside the SQLite file; for PostgreSQL, a folder of this machine's temporary directory
    named after the database (set `metrics_dir` where processes do not share /tmp)."""
    if not is_postgres_url(database):
        return database + ".metrics"
    digest = hashlib.sha256(without_password(database).encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"diy-wsgi-metrics-{digest}")


def load_secret(raw, where, environ=None):
    """One secret given outside a configuration file (`diy-wsgi sign --secret`): written inline,
    `env:NAME` or `file:PATH` (relative to the working directory), read and checked as the
    configuration's own secrets are; a problem is a ConfigError naming `where`."""
    resolve = secret_resolver(os.getcwd(), os.environ if environ is None else environ, where)
    try:
        return resolve(raw)
    except value.Invalid as error:
        raise ConfigError(f"{where}: {error}") from None
