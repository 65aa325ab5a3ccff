"""Admission per account: token bucket, circuit breaker, calls in flight (pure, clock by hand)."""
import pytest

from outbox.guard import CREDENTIALS_ACCEPTED, CREDENTIALS_REFUSED, TRIAL_RECHECK, CircuitBreaker, Guard, TokenBucket


def test_a_token_bucket_allows_a_burst_then_paces_calls(clock):
    bucket = TokenBucket(rate=2, burst=2, clock=clock)

    assert [bucket.wait(), bucket.wait()] == [0, 0]
    assert bucket.wait() == pytest.approx(0.5)
    clock.advance(0.5)
    assert bucket.wait() == 0


def test_a_breaker_opens_after_the_threshold_of_consecutive_failures(clock):
    breaker = CircuitBreaker(failures=3, cooldown=30, clock=clock)
    for audience in ("a", "b"):
        breaker.failed(audience)
    assert breaker.wait() == 0

    breaker.failed("a")

    assert breaker.state == "open"
    assert breaker.wait() == 30


def test_one_audience_failing_again_and_again_never_opens_it(clock):
    breaker = CircuitBreaker(failures=3, cooldown=30, clock=clock)
    for _ in range(10):
        breaker.failed("poisoned")

    assert breaker.state == "closed"


def test_a_success_resets_the_count(clock):
    breaker = CircuitBreaker(failures=2, cooldown=30, clock=clock)
    breaker.failed("a")
    breaker.succeeded()
    breaker.failed("b")

    assert breaker.state == "closed"


def open_breaker(clock, cooldown=30):
    breaker = CircuitBreaker(failures=2, cooldown=cooldown, clock=clock)
    breaker.failed("a")
    breaker.failed("b")
    return breaker


def test_after_the_cooldown_one_trial_call_goes_through(clock):
    breaker = open_breaker(clock)
    clock.advance(30)

    assert breaker.wait() == 0, "the trial"
    assert breaker.wait() > 0, "only one trial at a time"
    breaker.succeeded()
    assert breaker.wait() == 0
    assert breaker.state == "closed"


def test_while_the_trial_is_in_flight_the_others_ask_again_within_a_second(clock):
    """Held back for a whole cooldown instead, the account's other audiences would lag a
    recovered platform by up to that cooldown (30 s by default, doubling up to 10 min)."""
    breaker = open_breaker(clock, cooldown=600)
    clock.advance(600)
    assert breaker.wait() == 0, "the trial"

    assert breaker.wait() == TRIAL_RECHECK
    clock.advance(0.4)
    breaker.succeeded()
    clock.advance(TRIAL_RECHECK - 0.4)

    assert breaker.wait() == 0
    assert breaker.state == "closed"


def test_a_failed_trial_reopens_for_twice_as_long(clock):
    breaker = open_breaker(clock)
    clock.advance(30)
    breaker.wait()

    breaker.failed("a")

    assert breaker.wait() == 60


def test_a_guard_caps_the_calls_in_flight(clock):
    guard = Guard(clock, concurrent_calls=2)

    assert [guard.admit(), guard.admit()] == [0, 0]
    assert guard.admit() > 0
    guard.release("ok")
    assert guard.admit() == 0


def test_a_guard_applies_the_rate_limit(clock):
    guard = Guard(clock, calls_per_second=1)

    assert guard.admit() == 0
    guard.release("ok")
    assert guard.admit() == pytest.approx(1.0)


def test_a_guard_holds_everything_back_while_the_breaker_is_open(clock):
    guard = Guard(clock, breaker_failures=2, breaker_cooldown=10)
    for audience in ("a", "b"):
        guard.admit()
        guard.release("transient", audience)

    assert guard.admit() == 10
    assert guard.in_flight == 0


def test_refusals_do_not_count_toward_the_breaker(clock):
    guard = Guard(clock, breaker_failures=1)
    guard.admit()

    guard.release("other", "a")

    assert guard.breaker.state == "closed"


def test_one_refusal_of_the_credentials_holds_the_whole_account_at_once(clock):
    guard = Guard(clock, breaker_failures=5, breaker_cooldown=30)
    guard.admit()

    assert guard.release("unauthorized", "any audience") == CREDENTIALS_REFUSED
    assert guard.admit() == 30
    assert guard.breaker.held_for == 30


def test_refused_credentials_are_reported_once_until_a_call_passes(clock):
    guard = Guard(clock, breaker_cooldown=30)
    changes = []
    for _ in range(2):
        guard.admit()
    changes += [guard.release("unauthorized", "a"), guard.release("unauthorized", "b")]
    clock.advance(30)
    assert guard.admit() == 0, "the trial"
    changes.append(guard.release("unauthorized", "a"))
    assert guard.breaker.held_for == 60, "a refused trial waits twice as long"
    clock.advance(60)
    guard.admit()
    changes.append(guard.release("ok", "a"))

    assert changes == [CREDENTIALS_REFUSED, None, None, CREDENTIALS_ACCEPTED]
    assert guard.breaker.state == "closed" and not guard.breaker.credentials_refused


def test_a_call_made_outside_admission_is_recorded_the_same_way(clock):
    guard = Guard(clock, breaker_cooldown=30)

    assert guard.record("unauthorized") == CREDENTIALS_REFUSED
    assert guard.in_flight == 0 and guard.breaker.state == "open"
    assert guard.record("ok") == CREDENTIALS_ACCEPTED
