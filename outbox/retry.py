"""When to try a failed delivery again: exponential backoff with jitter, a cap, `Retry-After`."""
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 2.0
    cap: float = 600.0
    max_attempts: int = 50

    def delay(self, attempts, retry_after=None, rand=random.random):
        """Seconds to wait after the `attempts`-th consecutive failure (1 for the first).

        Equal jitter: half the exponential step is fixed, half random, so retries of many
        audiences spread out yet never come back sooner than half the step. A platform's
        `Retry-After` is a floor, itself capped so a bogus value cannot park work for days.
        """
        step = min(self.cap, self.base * 2 ** min(attempts - 1, 62))
        delay = step / 2 + rand() * step / 2
        if retry_after is not None:
            delay = max(delay, min(float(retry_after), self.cap))
        return delay

    def exhausted(self, attempts):
        return attempts >= self.max_attempts
