"""Fault injection: which platform call is delayed, refused with 503 or throttled with 429.

`decide(settings, random, now)` is pure: the same settings, the same random source (anything
with `random()` and `uniform(a, b)`, e.g. `random.Random(seed)`) and the same `now` give the same
decision, so a seeded sandbox misbehaves the same way every run. In order:

1. delay: `latency`, plus `uniform(0, latency_jitter)` when there is jitter;
2. an outage window covering `now`: 503 (kind "outage");
3. one draw `r = random()`: r < error_rate gives 503 ("error"); r < error_rate +
   rate_limit_rate gives 429 with `Retry-After: retry_after` ("rate_limit").

Outage windows are absolute (Unix seconds); `Outage.window(origin)` places a relative
`--outage 30s:60s` (from 30 s after `origin`, for 60 s) on the clock. `Faults` holds the current
settings and the random source for the server's threads and applies runtime changes.
"""
import math
import random as random_module
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from diy.sandbox.wire import SandboxConfigError

MAX_DELAY = 300.0
MAX_RETRY_AFTER = 86400
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
RUNTIME_FIELDS = ("error_rate", "rate_limit_rate", "retry_after", "latency", "latency_jitter",
                  "outages", "seed")


@dataclass(frozen=True)
class Window:
    """An outage from `start` (inclusive) to `end` (exclusive), Unix seconds."""

    start: float
    end: float

    def covers(self, now: float) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True)
class Outage:
    """`--outage AFTER:DURATION`: from `after` seconds past an origin, for `duration` seconds."""

    after: float
    duration: float

    def window(self, origin: float) -> Window:
        return Window(origin + self.after, origin + self.after + self.duration)


@dataclass(frozen=True)
class FaultSettings:
    """What to inject; rates are fractions of platform calls, durations seconds."""

    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: int = 1
    latency: float = 0.0
    latency_jitter: float = 0.0
    outages: Tuple[Window, ...] = field(default=())

    def __post_init__(self):
        for name in ("error_rate", "rate_limit_rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise SandboxConfigError(f"{name} must be a fraction from 0 to 1")
        if self.error_rate + self.rate_limit_rate > 1.0:
            raise SandboxConfigError("error_rate + rate_limit_rate must not exceed 1")
        if not (isinstance(self.retry_after, int) and 0 <= self.retry_after <= MAX_RETRY_AFTER):
            raise SandboxConfigError(f"retry_after must be whole seconds from 0 to {MAX_RETRY_AFTER}")
        if not (0.0 <= self.latency and 0.0 <= self.latency_jitter
                and self.latency + self.latency_jitter <= MAX_DELAY):
            raise SandboxConfigError(f"latency + latency_jitter must be 0 to {MAX_DELAY:g} seconds")

    def describe(self) -> Dict[str, Any]:
        return {
            "error_rate": self.error_rate,
            "rate_limit_rate": self.rate_limit_rate,
            "retry_after": self.retry_after,
            "latency": self.latency,
            "latency_jitter": self.latency_jitter,
            "outages": [{"start": window.start, "end": window.end} for window in self.outages],
        }


@dataclass(frozen=True)
class Decision:
    """Sleep `delay` seconds, then answer `status` (None: let the platform answer)."""

    delay: float = 0.0
    status: Optional[int] = None
    kind: Optional[str] = None
    """"outage", "error" or "rate_limit" when a status is injected."""
    retry_after: Optional[int] = None


def decide(settings: FaultSettings, random, now: float) -> Decision:
    """The fault for one platform call at `now`; see the module docstring for the order."""
    delay = settings.latency
    if settings.latency_jitter > 0:
        delay += random.uniform(0.0, settings.latency_jitter)
    if any(window.covers(now) for window in settings.outages):
        return Decision(delay, 503, "outage")
    if settings.error_rate > 0 or settings.rate_limit_rate > 0:
        draw = random.random()
        if draw < settings.error_rate:
            return Decision(delay, 503, "error")
        if draw < settings.error_rate + settings.rate_limit_rate:
            return Decision(delay, 429, "rate_limit", settings.retry_after)
    return Decision(delay)


def parse_duration(text: Any, what: str) -> float:
    """Seconds from `50ms`, `1.5s`, `2m`, `1h` or a bare number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.fullmatch(str(text).strip())
        if match is None:
            raise SandboxConfigError(f"{what} must be a duration such as 50ms, 1.5s, 2m or 1h")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise SandboxConfigError(f"{what} must be a duration of 0 or more")
    return seconds


def parse_outage(text: Any) -> Outage:
    """`30s:60s`: from 30 s after the origin, for 60 s."""
    after, colon, duration = str(text).partition(":")
    if not colon:
        raise SandboxConfigError("an outage must be written AFTER:DURATION, e.g. 30s:60s")
    return Outage(parse_duration(after, "an outage's start"),
                  parse_duration(duration, "an outage's duration"))


def parse_rate(value: Any, what: str) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = math.nan
    if isinstance(value, bool) or not 0.0 <= rate <= 1.0:
        raise SandboxConfigError(f"{what} must be a fraction from 0 to 1")
    return rate


def parse_retry_after(value: Any) -> int:
    return int(math.ceil(parse_duration(value, "retry_after")))


def changed_settings(current: FaultSettings, changes: Mapping[str, Any], now: float) -> FaultSettings:
    """`current` with the fields of a POST /api/faults document; outages count from `now`."""
    unknown = sorted(set(changes) - set(RUNTIME_FIELDS))
    if unknown:
        raise SandboxConfigError(f"unknown field {unknown[0]!r}; the fields are {', '.join(RUNTIME_FIELDS)}")
    fields: Dict[str, Any] = {}
    for name in ("error_rate", "rate_limit_rate"):
        if name in changes:
            fields[name] = parse_rate(changes[name], name)
    for name in ("latency", "latency_jitter"):
        if name in changes:
            fields[name] = parse_duration(changes[name], name)
    if "retry_after" in changes:
        fields["retry_after"] = parse_retry_after(changes["retry_after"])
    if "outages" in changes:
        outages = changes["outages"]
        if not isinstance(outages, list):
            raise SandboxConfigError('outages must be a list such as ["0s:30s"] (from now)')
        fields["outages"] = tuple(parse_outage(outage).window(now) for outage in outages)
    return replace(current, **fields)


class Faults:
    """The current fault settings and random source, shared by the server's threads."""

    def __init__(self, settings: FaultSettings, seed: Optional[int] = None,
                 clock: Callable[[], float] = time.time, random=None):
        self.settings = settings
        self.clock = clock
        self.random = random if random is not None else random_module.Random(seed)
        self._lock = threading.Lock()

    def decide(self) -> Decision:
        with self._lock:
            return decide(self.settings, self.random, self.clock())

    def change(self, changes: Mapping[str, Any]) -> FaultSettings:
        """Apply a POST /api/faults document; `seed` (an integer or null) reseeds the source."""
        with self._lock:
            settings = changed_settings(self.settings, changes, self.clock())
            if "seed" in changes:
                seed = changes["seed"]
                if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                    raise SandboxConfigError("seed must be an integer or null")
                self.random.seed(seed)
            self.settings = settings
            return settings
