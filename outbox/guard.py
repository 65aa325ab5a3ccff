"""Per-account admission: a rate limit, a cap on calls in flight, and a circuit breaker.

Pure logic on an injected clock. The dispatcher asks `admit()` before a platform call; a
refusal says how long to wait, and the dispatcher postpones the audience that long without
counting an attempt, so a platform that is down or saturated, or that refuses our credentials,
burns no retries and holds no delivery thread that another platform could use.
"""
import threading

TRIAL_RECHECK = 1.0
"""Seconds the account's other calls wait while a half-open breaker's trial is in flight: they
ask again this soon, so a trial that succeeds lets the work flow within a second, not a
cooldown later."""
CREDENTIALS_REFUSED = "credentials refused"
CREDENTIALS_ACCEPTED = "credentials accepted"
"""What `Guard.release` returns when a call changed whether an account's credentials are refused."""


class TokenBucket:
    """`rate` calls a second on average, bursts of up to `burst`."""

    def __init__(self, rate, burst, clock):
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.updated = clock()

    def wait(self):
        """Seconds until a call may be made (0: take it now; the token is then spent)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class CircuitBreaker:
    """Opens after `failures` consecutive transient failures that span at least two audiences;
    after `cooldown` lets one trial call through (half-open) while the others ask again every
    TRIAL_RECHECK; the trial's success closes it, its failure reopens it for twice as long, up
    to `max_cooldown`.

    One audience failing again and again is that audience's problem, held back by its own
    backoff: it must not open the breaker and stall the account's healthy audiences.

    A platform refusing our credentials (`refused`) opens it at once: that is the account's
    problem whichever audience the call was for. `credentials_refused` stays true until a call
    succeeds.
    """

    def __init__(self, failures, cooldown, clock, max_cooldown=600.0):
        self.threshold = failures
        self.base_cooldown = cooldown
        self.max_cooldown = max(cooldown, max_cooldown)
        self.clock = clock
        self.failures = 0
        self.failing = set()
        self.cooldown = cooldown
        self.open_until = None
        self.trial_in_flight = False
        self.credentials_refused = False

    @property
    def state(self):
        if self.open_until is None:
            return "closed"
        return "open" if self.clock() < self.open_until or self.trial_in_flight else "half-open"

    def wait(self):
        """Seconds until a call may be made; 0 lets it through (a half-open breaker's trial)."""
        if self.open_until is None:
            return 0.0
        now = self.clock()
        if now < self.open_until:
            return self.open_until - now
        if self.trial_in_flight:
            return min(self.cooldown, TRIAL_RECHECK)
        self.trial_in_flight = True
        return 0.0

    def succeeded(self):
        self.failures = 0
        self.failing.clear()
        self.cooldown = self.base_cooldown
        self.open_until = None
        self.trial_in_flight = False
        self.credentials_refused = False

    def refused(self):
        """The platform refused our credentials: open now, for twice as long after a trial."""
        if self.trial_in_flight:
            self.cooldown = min(self.max_cooldown, self.cooldown * 2)
        self.open_until = self.clock() + self.cooldown
        self.trial_in_flight = False
        self.credentials_refused = True

    @property
    def held_for(self):
        """Seconds until the breaker lets a trial through (0 when it is not open)."""
        return 0.0 if self.open_until is None else max(0.0, self.open_until - self.clock())

    def failed(self, audience=None):
        self.failures += 1
        self.failing.add(audience)
        if self.trial_in_flight:
            self.cooldown = min(self.max_cooldown, self.cooldown * 2)
        if self.trial_in_flight or (self.failures >= self.threshold and len(self.failing) >= 2):
            self.open_until = self.clock() + self.cooldown
        self.trial_in_flight = False

    def settled(self):
        """The call ended without telling anything about the platform (e.g. a refusal)."""
        self.trial_in_flight = False


class Guard:
    """The admission of one account: breaker first, then calls in flight, then the rate."""

    def __init__(self, clock, *, calls_per_second=None, concurrent_calls=None, breaker_failures=5, breaker_cooldown=30.0):
        self.bucket = TokenBucket(calls_per_second, max(1.0, calls_per_second), clock) if calls_per_second else None
        self.concurrent_calls = concurrent_calls
        self.breaker = CircuitBreaker(breaker_failures, breaker_cooldown, clock)
        self.in_flight = 0
        self._lock = threading.Lock()

    def admit(self, busy_wait=0.25):
        """0 when the call may go (it then counts as in flight until `release`), else seconds to wait."""
        with self._lock:
            wait = self.breaker.wait()
            if wait:
                return wait
            if self.concurrent_calls is not None and self.in_flight >= self.concurrent_calls:
                self.breaker.settled()
                return busy_wait
            if self.bucket is not None:
                wait = self.bucket.wait()
                if wait:
                    self.breaker.settled()
                    return wait
            self.in_flight += 1
            return 0.0

    def release(self, outcome, audience=None):
        """`outcome`: "ok", "transient" (counts toward the breaker), "unauthorized" (the platform
        refused our credentials) or "other". Returns CREDENTIALS_REFUSED or CREDENTIALS_ACCEPTED
        when the call changed whether the account's credentials are refused, else None."""
        with self._lock:
            self.in_flight -= 1
            return self._record(outcome, audience)

    def record(self, outcome, audience=None):
        """The outcome of a call made without `admit` (a CREATE_AUDIENCE answered within its
        request), as `release` takes and returns it."""
        with self._lock:
            return self._record(outcome, audience)

    def _record(self, outcome, audience):
        breaker = self.breaker
        refused_before = breaker.credentials_refused
        if outcome == "ok":
            breaker.succeeded()
        elif outcome == "transient":
            breaker.failed(audience)
        elif outcome == "unauthorized":
            breaker.refused()
        else:
            breaker.settled()
        if breaker.credentials_refused == refused_before:
            return None
        return CREDENTIALS_REFUSED if breaker.credentials_refused else CREDENTIALS_ACCEPTED
