"""Fault injection, the sandbox's one fault model: which platform call is delayed, refused,
throttled, held or never answered, for the command line, the tests and the reliability suites.

`decide(settings, random, now, call)` is pure: the same settings, the same random source
(anything with `random()` and `uniform(a, b)`, e.g. `random.Random(seed)`), the same `now` and
the same call give the same decision, so a seeded sandbox misbehaves the same way every run. In
order:

0. `audiences`, when set: a call for another audience (`Call.audience`) gets no fault at all;
1. `mode` "hang": no answer until the faults change ("hang"); the connection is then closed;
2. delay: `latency`, plus `uniform(0, latency_jitter)` when there is jitter;
3. `mode` "hold": a call that is not a creation waits until the faults change, then is applied
   and answered ("hold": a call in flight while something else happens);
4. an outage window covering `now`: 503 (kind "outage");
5. one draw `r = random()`: r < error_rate gives `error_status` (503 by default; kind "error");
   r < error_rate + rate_limit_rate gives 429 with `Retry-After: retry_after` ("rate_limit"; no
   Retry-After when it is None).

`mode` "down" is the server's: the platform port closes (connection refused) while the control
port stays up. Outage windows are absolute (Unix seconds); `Outage.window(origin)` places a
relative `--outage 30s:60s` (from 30 s after `origin`, for 60 s) on the clock.

`Faults` holds the current settings and the random source for the server's threads, applies
runtime changes (each change lets go of the calls held or hung under the one before), and keeps
a `Script` of answers a test scripts for the next calls (`fail_next`), which come before all of
the above and before the platform checks anything; under `mode` "hold" a scripted answer is held
first, like any other call (a platform slow to fail). A scripted answer may be for token
requests only, or for every call but them (`Call.token`), as a test of an OAuth2 client needs,
and likewise for creations only or for every call but them (`Call.creates`).
"""
import json
import math
import random as random_module
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, FrozenSet, Mapping, Optional, Tuple

from diy.sandbox.wire import SandboxConfigError
from targets.settings import parse_duration as duration_in

MAX_DELAY = 300.0
MAX_RETRY_AFTER = 86400
HANG_LIMIT = 120.0
"""A hung or held call gives up after this long whatever happens, so a stop never waits forever."""
MODES = (None, "hang", "hold", "down")
RUNTIME_FIELDS = ("error_rate", "error_status", "rate_limit_rate", "retry_after", "latency",
                  "latency_jitter", "outages", "seed", "mode", "audiences")


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
    error_status: int = 503
    rate_limit_rate: float = 0.0
    retry_after: Optional[int] = 1
    latency: float = 0.0
    latency_jitter: float = 0.0
    outages: Tuple[Window, ...] = field(default=())
    mode: Optional[str] = None
    """None, "hang", "hold" or "down" (see the module docstring)."""
    audiences: Optional[FrozenSet[str]] = None
    """Only calls for these audiences get faults (None: every call)."""

    def __post_init__(self):
        for name in ("error_rate", "rate_limit_rate"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise SandboxConfigError(f"{name} must be a fraction from 0 to 1")
        if self.error_rate + self.rate_limit_rate > 1.0:
            raise SandboxConfigError("error_rate + rate_limit_rate must not exceed 1")
        if self.retry_after is not None and not (
                isinstance(self.retry_after, int) and 0 <= self.retry_after <= MAX_RETRY_AFTER):
            raise SandboxConfigError(f"retry_after must be whole seconds from 0 to {MAX_RETRY_AFTER}, or null")
        if isinstance(self.error_status, bool) or not (isinstance(self.error_status, int)
                                                       and 400 <= self.error_status <= 599):
            raise SandboxConfigError("error_status must be an HTTP error status from 400 to 599")
        if self.mode not in MODES:
            raise SandboxConfigError("mode must be null, hang, hold or down")
        if not (0.0 <= self.latency and 0.0 <= self.latency_jitter
                and self.latency + self.latency_jitter <= MAX_DELAY):
            raise SandboxConfigError(f"latency + latency_jitter must be 0 to {MAX_DELAY:g} seconds")

    def describe(self) -> Dict[str, Any]:
        return {
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "rate_limit_rate": self.rate_limit_rate,
            "retry_after": self.retry_after,
            "latency": self.latency,
            "latency_jitter": self.latency_jitter,
            "outages": [{"start": window.start, "end": window.end} for window in self.outages],
            "mode": self.mode,
            "audiences": None if self.audiences is None else sorted(self.audiences),
        }


@dataclass(frozen=True)
class Call:
    """What the fault model needs to know of a platform call: whose audience it is (None: not
    known) and whether it creates one (a "hold" lets creations through)."""

    audience: Optional[str] = None
    creates: bool = False
    token: bool = False
    """An OAuth2 token request (Criteo's), which a scripted answer may be for or not."""


@dataclass(frozen=True)
class Decision:
    """Sleep `delay` seconds, then answer `status` (None: let the platform answer).

    `hang`: answer nothing until the faults change. `hold`: wait until they change, then let
    the platform answer. A scripted answer (`Script`) carries its `headers` and `body`.
    """

    delay: float = 0.0
    status: Optional[int] = None
    kind: Optional[str] = None
    """"outage", "error", "rate_limit", "scripted", "hang" or "hold" when a fault applies."""
    retry_after: Optional[int] = None
    headers: Tuple[Tuple[str, str], ...] = ()
    body: Optional["Scripted"] = None
    hang: bool = False
    hold: bool = False
    generation: int = 0
    """The fault settings' generation it was decided under: a change lets a hang or hold go."""


NO_CALL = Call()


def decide(settings: FaultSettings, random, now: float, call: Call = NO_CALL) -> Decision:
    """The fault for one platform call at `now`; see the module docstring for the order."""
    if settings.audiences is not None and call.audience not in settings.audiences:
        return Decision()
    if settings.mode == "hang":
        return Decision(kind="hang", hang=True)
    delay = settings.latency
    if settings.latency_jitter > 0:
        delay += random.uniform(0.0, settings.latency_jitter)
    if settings.mode == "hold" and not call.creates:
        return Decision(delay, kind="hold", hold=True)
    if any(window.covers(now) for window in settings.outages):
        return Decision(delay, 503, "outage")
    if settings.error_rate > 0 or settings.rate_limit_rate > 0:
        draw = random.random()
        if draw < settings.error_rate:
            return Decision(delay, settings.error_status, "error")
        if draw < settings.error_rate + settings.rate_limit_rate:
            return Decision(delay, 429, "rate_limit", settings.retry_after)
    return Decision(delay)


def parse_duration(text: Any, what: str) -> float:
    """Seconds from `50ms`, `1.5s`, `2m`, `1h` or a bare number of seconds (the one duration
    parser, targets/settings.py), for a fault flag or a fault posted to the API."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        try:
            seconds = duration_in(str(text))
        except ValueError:
            raise SandboxConfigError(f"{what} must be a duration such as 50ms, 1.5s, 2m or 1h") from None
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


def parse_retry_after(value: Any) -> Optional[int]:
    """Whole seconds (rounded up) from a duration; None (no Retry-After header) stays None."""
    return None if value is None else int(math.ceil(parse_duration(value, "retry_after")))


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
    if "error_status" in changes:
        fields["error_status"] = changes["error_status"]
    if "mode" in changes:
        fields["mode"] = changes["mode"]
    if "audiences" in changes:
        audiences = changes["audiences"]
        if audiences is not None and not (isinstance(audiences, list)
                                          and all(isinstance(a, str) for a in audiences)):
            raise SandboxConfigError("audiences must be a list of audience ids, or null for every one")
        fields["audiences"] = None if audiences is None else frozenset(audiences)
    if "outages" in changes:
        outages = changes["outages"]
        if not isinstance(outages, list):
            raise SandboxConfigError('outages must be a list such as ["0s:30s"] (from now)')
        fields["outages"] = tuple(parse_outage(outage).window(now) for outage in outages)
    return replace(current, **fields)


@dataclass(frozen=True)
class Scripted:
    """One scripted answer's body: the bytes and their content type."""

    body: bytes
    content_type: str


def render(body: Any, text_type: str = "text/plain; charset=utf-8") -> Scripted:
    """A dict or list as JSON; text or bytes as they are, of `text_type`."""
    if isinstance(body, (dict, list)):
        return Scripted(json.dumps(body).encode("utf-8"), "application/json")
    return Scripted(body if isinstance(body, bytes) else str(body).encode("utf-8"), text_type)


class Script:
    """Answers a test scripts for the next calls (`fail_next`), in the order they were added.

    Each is given `times` times, once `after` more calls have been answered normally; it holds
    no lock (`Faults` calls it under its own). A body is rendered when the answer is added; one
    without gets the platform's own error body for the status, made anew for each answer.
    """

    def __init__(self):
        self._queue = []
        self._normal_before_next = 0

    def __bool__(self):
        return bool(self._queue)

    def add(self, status: int, times: int = 1, headers: Optional[Mapping[str, str]] = None,
            body: Any = None, after: int = 0, text_type: str = "text/plain; charset=utf-8",
            token: Optional[bool] = None, creates: Optional[bool] = None) -> None:
        """`token` (`creates`): None for any call, True for token requests (creations) only,
        False for every call but them."""
        if times < 1:
            raise ValueError("times must be at least 1")
        rendered = None if body is None else render(body, text_type)
        self._queue.append([status, times, tuple((headers or {}).items()), rendered, (token, creates)])
        self._normal_before_next = after

    def take(self, call: Call = NO_CALL) -> Optional[Decision]:
        """The next scripted answer for `call` as a Decision, or None when it is answered normally."""
        if not self._queue:
            return None
        answer = self._queue[0]
        status, _, headers, rendered, (token, creates) = answer
        if (token is not None and token != call.token) or (creates is not None and creates != call.creates):
            return None
        if self._normal_before_next > 0:
            self._normal_before_next -= 1
            return None
        answer[1] -= 1
        if answer[1] <= 0:
            self._queue.pop(0)
        return Decision(status=status, kind="scripted", headers=headers, body=rendered)

    def clear(self) -> None:
        self._queue.clear()
        self._normal_before_next = 0


class Faults:
    """The current fault settings, random source and script, shared by the server's threads."""

    def __init__(self, settings: FaultSettings, seed: Optional[int] = None,
                 clock: Callable[[], float] = time.time, random=None):
        self.settings = settings
        self.clock = clock
        self.random = random if random is not None else random_module.Random(seed)
        self.script = Script()
        self.generation = 0
        """Counts changes: a call held or hung under one setting is let go by the next."""
        self.held = 0
        """Calls held under the current settings (0 again after each change)."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def decide(self, call: Call = NO_CALL) -> Decision:
        with self._lock:
            decision = self.script.take(call)
            if decision is not None:
                settings = self.settings
                held = (settings.mode == "hold" and not call.creates
                        and (settings.audiences is None or call.audience in settings.audiences))
                decision = replace(decision, hold=held)
            else:
                decision = decide(self.settings, self.random, self.clock(), call)
            return replace(decision, generation=self.generation) if decision.hang or decision.hold else decision

    def fail_next(self, status: int, times: int = 1, headers=None, body=None, *, after: int = 0,
                  text_type: str = "text/plain; charset=utf-8", token: Optional[bool] = None,
                  creates: Optional[bool] = None) -> None:
        """Answer the next `times` calls with `status` (and `headers`, `body`), unchecked, once
        `after` more calls have been answered normally. `body`: a dict or list (JSON), text or
        bytes; by default the platform's own error body for the status. `token`, `creates`:
        which calls it is for (see `Script.add`)."""
        with self._lock:
            self.script.add(status, times, headers, body, after, text_type, token, creates)

    def clear_script(self) -> None:
        """Forget the scripted answers not given yet."""
        with self._lock:
            self.script.clear()

    def change(self, changes: Mapping[str, Any],
               before: Callable[[Optional[str]], None] = lambda mode: None) -> FaultSettings:
        """Apply a POST /api/faults document; `seed` (an integer or null) reseeds the source.

        `before(mode)` runs first, outside the lock (the server takes its port down or up)."""
        with self._lock:
            settings = changed_settings(self.settings, changes, self.clock())
        before(settings.mode)
        with self._changed:
            settings = changed_settings(self.settings, changes, self.clock())
            if "seed" in changes:
                seed = changes["seed"]
                if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                    raise SandboxConfigError("seed must be an integer or null")
                self.random.seed(seed)
            self.settings = settings
            self.generation += 1
            self.held = 0
            self._changed.notify_all()
            return settings

    def hold(self, generation: int) -> None:
        """Hold a call until the settings change after `generation` (counted in `held`)."""
        with self._lock:
            if self.generation == generation:
                self.held += 1
        self.wait_for_change(generation)

    def wait_for_change(self, generation: int, limit: float = HANG_LIMIT) -> None:
        """Block until the faults change after `generation`, at most `limit` seconds."""
        deadline = time.monotonic() + limit
        with self._changed:
            while self.generation == generation and time.monotonic() < deadline:
                self._changed.wait(min(0.2, max(0.0, deadline - time.monotonic())))
