"""Reading a target's settings (its `target.*` keys): shared checks, one error type.

Every failure is a `TargetConfigError` naming the key; no message repeats a value, since
settings hold credentials.
"""
import math
import re
from typing import Iterable, Mapping, Optional
from urllib.parse import urlsplit

from targets.errors import TargetConfigError

VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
DURATION = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ms|s|m|h|d)?")
SECONDS_PER_UNIT = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
LONGEST_DURATION = 3650 * 86400
WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")


def reject_unknown(settings: Mapping[str, str], known: Iterable[str], target: str, prefix: Optional[str] = None):
    """A key the target does not take is a typo: refuse it rather than ignore it."""
    known = tuple(known)
    for key in settings:
        if key not in known and not (prefix and key.startswith(prefix)):
            also = f" and {prefix}<Name>" if prefix else ""
            raise TargetConfigError(key, f"unknown setting; the {target} target takes {', '.join(known)}{also}")


def text(settings: Mapping[str, str], key: str) -> str:
    value = settings.get(key)
    return value.strip() if isinstance(value, str) else ""


def required(settings: Mapping[str, str], key: str) -> str:
    """A non-empty, single-line value."""
    value = text(settings, key)
    if not value:
        raise TargetConfigError(key, "is required")
    if any(c in value for c in "\r\n\0"):
        raise TargetConfigError(key, "must be one line of text")
    return value


def http_url(settings: Mapping[str, str], key: str, *, default: Optional[str] = None, bare: bool = False,
             example: str = "") -> str:
    """An http(s) URL with a host and no credentials; `bare` also forbids a query or fragment."""
    url = text(settings, key) or default
    if not url:
        raise TargetConfigError(key, "is required")
    if not VISIBLE_ASCII.fullmatch(url):
        raise TargetConfigError(key, "must be printable ASCII without spaces (percent-encode)")
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        raise TargetConfigError(key, "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetConfigError(key, f"must be an http:// or https:// URL with a host{example}")
    if parts.username or parts.password:
        raise TargetConfigError(key, "must not hold credentials")
    if bare and (parts.query or parts.fragment):
        raise TargetConfigError(key, "must hold no query or fragment")
    return url


def seconds(settings: Mapping[str, str], key: str = "timeout", default: float = 10.0) -> float:
    """A duration above 0, written as every other duration is (`10`, `10s`, `500ms`)."""
    value = text(settings, key)
    if not value:
        return default
    try:
        number = parse_duration(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise TargetConfigError(key, "must be a duration above 0, such as 10s or 500ms")
    return number


def parse_duration(text: str) -> float:
    """Seconds in `text`: `90` (seconds), `300ms`, `2.5s`, `5m`, `1h` or `1d`; a ValueError
    says the expected form. Every duration of the configuration, the commands and the targets
    is read here."""
    match = DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError("expected a duration such as 300ms, 2.5s, 5m, 1h or 1d")
    number, unit = match.groups()
    seconds = float(number) / 1000 if unit == "ms" else float(number) * SECONDS_PER_UNIT[unit]
    if seconds > LONGEST_DURATION:
        raise ValueError("must be at most 3650d")
    return seconds


def whole_number(settings: Mapping[str, str], key: str, default: int, low: int, high: Optional[int] = None) -> int:
    value = text(settings, key)
    if not value:
        return default
    if not WHOLE_NUMBER.fullmatch(value) or int(value) < low or (high is not None and int(value) > high):
        limits = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise TargetConfigError(key, f"must be a whole number {limits}")
    return int(value)
