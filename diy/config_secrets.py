"""Where the configuration's secrets come from, and the warnings about keeping them.

A secret (each item of `hmac_secrets`, `basic_auth`, `database_password`, `metrics_token` and every
`target.*` key) is written inline, `env:NAME` or `file:PATH`. A secret file, or a configuration
file holding secrets inline, that every user of the machine may read or change is logged as an
`unsafe configuration` warning by logger `diy.config`, as are the other settings that work but
are unsafe.
"""
import logging
import os
import re
import stat
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from diy.config_values import Invalid
from outbox.postgres import is_postgres_url

CREDENTIAL_KEY = re.compile(r"hmac_secrets|basic_auth|metrics_token|target\.(header\..+|.*(secret|token|password).*)")
"""The keys whose value is a credential when written inline (besides database_password)."""

log = logging.getLogger("diy.config")


def warn(where, why):
    """A setting that works but is unsafe: one line in the log (on stderr before logging is set up)."""
    log.warning("unsafe configuration at=%s problem=%s", where, why)


def secret_resolver(base_dir, environ, source) -> Callable[[str], str]:
    """Return a function giving the value a secret's text stands for.

    `env:NAME` is the variable NAME of `environ`; `file:PATH` is the content of the file
    (relative to `base_dir`) without trailing newlines, with a warning when every user of the
    machine may read or change it; anything else is the secret itself.
    """
    def resolve(raw):
        if raw.startswith("env:"):
            name = raw[len("env:"):].strip()
            if not name:
                raise Invalid("env: needs the name of an environment variable")
            if name not in environ:
                raise Invalid(f"environment variable {name} is not set")
            return environ[name]
        if raw.startswith("file:"):
            path = os.path.join(base_dir, raw[len("file:"):].strip())
            try:
                secret = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
                warn_if_open_to_everyone(source, path)
                return secret
            except OSError as error:
                raise Invalid(f"cannot read {path} "
                              f"({error.strerror or type(error).__name__})") from None
            except UnicodeDecodeError:
                raise Invalid(f"{path} is not UTF-8 text") from None
        return raw
    return resolve


def warn_if_open_to_everyone(source, path, what=None):
    """One `unsafe configuration` line when every user of the machine may read or change the
    secret file `path` (`what` names it otherwise: "the secret file PATH")."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        what = what or f"the secret file {path}"
        warn(source, f"{what} can be read or changed by every user of this machine "
                     f"(mode {stat.S_IMODE(mode):o}); chmod 600 it")


def inline_secrets(ini):
    """`[section] key` of every credential written inline (neither env: nor file:), a
    PostgreSQL URL's password included."""
    found = []
    for section in ini.sections():
        for key, value in ini.items(section):
            inline = [item for item in value.split(",") if item.strip() and not item.strip().startswith(("env:", "file:"))]
            credential = CREDENTIAL_KEY.fullmatch(key) or key == "database_password"
            if (credential and inline) or (key == "database" and _url_password(value)):
                found.append(f"[{section}] {key}")
    return found


def _url_password(value):
    try:
        return is_postgres_url(value) and urlsplit(value.strip()).password is not None
    except ValueError:
        return False


def warn_if_inline_secrets_are_open_to_everyone(source, inline):
    """A configuration file holding secrets written inline is itself a secret file."""
    if inline:
        warn_if_open_to_everyone(source, source, what=f"the configuration file {source}, which holds "
                                 f"secrets written inline ({', '.join(inline)}),")
