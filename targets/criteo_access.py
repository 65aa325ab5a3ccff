"""A Criteo app's access, shared by every account that uses the app (one client_id): its cached
OAuth token, and the pause after Criteo says the app's calls are used up.

Criteo counts its rate limit (250 calls a minute) and hands out tokens per API application, not
per advertiser: https://developers.criteo.com/marketing-solutions/docs/rate-limits.
"""
from __future__ import annotations

import math
import threading
from typing import Any, Callable, Mapping, Optional, Tuple

from targets.errors import PartialFailure, PermanentError, TargetError, TransientError

REFRESH_MARGIN = 60.0
"""Seconds before its expiry that a token is replaced (at most half its lifetime)."""
DEFAULT_TOKEN_LIFETIME = 900.0
RATE_LIMIT_WINDOW = 60.0
MAX_PAUSE = 300.0
"""Longest pause a rate-limit reset can impose, so a bogus reset cannot stop a target."""


class RatePause:
    """Until when an app's calls wait because Criteo said none are left (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._until: Optional[float] = None

    def extend(self, resume_at: float) -> None:
        with self._lock:
            self._until = max(resume_at, self._until or 0.0)

    def wait(self, now: float) -> Optional[float]:
        """Seconds a call must still wait; None when it may go."""
        with self._lock:
            wait = postponement(self._until, now)
            if wait is None:
                self._until = None
            return wait


class AccessTokens:
    """The cached bearer token of one app, shared by all threads.

    `fetch()` returns (token, lifetime in seconds). At most one fetch runs at a time; threads
    that need a token meanwhile wait for it (`waiting` counts them) and, should it fail, raise
    an error of the same class. A token is replaced `REFRESH_MARGIN` seconds (at most half its
    lifetime) before it expires.
    """

    def __init__(self, fetch: Callable[[], Tuple[str, float]], clock: Callable[[], float]):
        self._fetch = fetch
        self._clock = clock
        self._condition = threading.Condition()
        self._token: Optional[str] = None
        self._refresh_at = 0.0
        self._fetching = False
        self._generation = 0
        self._failure: Optional[BaseException] = None
        self.waiting = 0

    def get(self) -> str:
        with self._condition:
            while True:
                if self._token is not None and self._clock() < self._refresh_at:
                    return self._token
                if not self._fetching:
                    self._fetching = True
                    break
                generation = self._generation
                self.waiting += 1
                try:
                    while self._fetching and self._generation == generation:
                        self._condition.wait()
                finally:
                    self.waiting -= 1
                if self._failure is not None and self._generation == generation + 1:
                    raise same_failure(self._failure)
        started = self._clock()
        token, lifetime, failure = None, 0.0, None
        try:
            token, lifetime = self._fetch()
        except BaseException as error:
            failure = error
            raise
        finally:
            with self._condition:
                self._fetching = False
                self._generation += 1
                self._failure = failure
                if failure is None:
                    self._token = token
                    self._refresh_at = started + max(lifetime - REFRESH_MARGIN, lifetime / 2)
                self._condition.notify_all()
        return token

    def discard(self, token: str) -> None:
        """Forget `token` (Criteo refused it) unless another thread has replaced it already."""
        with self._condition:
            if self._token == token:
                self._token = None


def same_failure(error: BaseException) -> TargetError:
    """An error like the one a token fetch ended with, for the threads that waited for it."""
    message = error.message if isinstance(error, TargetError) else type(error).__name__
    message = f"the access token fetch this call waited for failed: {message}"
    if isinstance(error, TransientError):
        return TransientError(message, retry_after=error.retry_after)
    if isinstance(error, TargetError) and not isinstance(error, PartialFailure):
        return type(error)(message)
    return TransientError(message)


def parse_token(document: Any) -> Tuple[str, float]:
    """(access token, lifetime in seconds) from the token endpoint's JSON answer."""
    if not isinstance(document, dict):
        raise TransientError("Criteo's token endpoint answered without a JSON object")
    token = document.get("access_token")
    if not isinstance(token, str) or not token or any(c in token for c in "\r\n\0"):
        raise TransientError("Criteo's token endpoint answered without a usable access_token")
    token_type = document.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise PermanentError("Criteo's token endpoint handed out a token that is not Bearer")
    lifetime = document.get("expires_in", DEFAULT_TOKEN_LIFETIME)
    if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or not (
        math.isfinite(lifetime) and lifetime > 0
    ):
        lifetime = DEFAULT_TOKEN_LIFETIME
    return token, float(lifetime)


def rate_limit_pause(headers: Mapping[str, str], now: float) -> Optional[float]:
    """When calls may resume (Unix seconds) if `headers` say none are left; else None.

    `headers` have lower-case names. Without a usable `x-ratelimit-reset` the pause is one
    rate-limit window from `now`.
    """
    remaining = headers.get("x-ratelimit-remaining")
    if remaining is None or remaining.strip() != "0":
        return None
    reset = headers.get("x-ratelimit-reset")
    resume_at = reset_time(reset, now) if reset is not None else None
    return now + RATE_LIMIT_WINDOW if resume_at is None else resume_at


def postponement(paused_until: Optional[float], now: float) -> Optional[float]:
    """Seconds a call must still wait for the rate limit to reset; None when it may go."""
    if paused_until is None or paused_until <= now:
        return None
    return paused_until - now


def reset_time(value: str, now: float) -> Optional[float]:
    """`x-ratelimit-reset` (Unix seconds) as a time from now to at most MAX_PAUSE later."""
    try:
        reset = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(reset):
        return None
    return min(max(reset, now), now + MAX_PAUSE)
