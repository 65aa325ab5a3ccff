"""What every target must do, checked against each platform in the sandbox (targets/base.py).

Each case runs once per target (ids webhook, thetradedesk, criteo) through the adapters in
conftest.py; a case that needs a capability a target lacks is skipped with the reason. Cases
that say "the dispatcher" drive the real Outbox and Dispatcher with the clock moved by hand.
"""
import dataclasses

import pytest

from targets.base import ADD, REMOVE
from targets.errors import CredentialsRefused, PartialFailure, PayloadTooLarge, PermanentError, TransientError
from tests.contract.conftest import AUDIENCE, created, mutations

RETRY_AFTER = 30


# Audiences.

def test_create_audience_returns_a_string_id_that_is_stable_when_repeated(platform):
    target = platform.target()

    first = target.create_audience(AUDIENCE)
    again = target.create_audience(AUDIENCE)

    assert isinstance(first, str) and first
    assert again == first
    assert platform.violations() == []


def test_different_audiences_get_different_ids(platform):
    target = platform.target()
    other = dataclasses.replace(AUDIENCE, dmp_id="b0000000000000.1", name="Winter buyers")

    assert target.create_audience(AUDIENCE) != target.create_audience(other)


# Members.

def test_add_then_remove_leaves_no_member(platform):
    target = platform.target()
    audience = created(target)
    users = [platform.user(1), platform.user(2)]

    target.add_users(audience, mutations(ADD, *users))
    assert platform.members(audience.target_id) == set(users)
    target.remove_users(audience, mutations(REMOVE, *users, first_id=3))

    assert platform.members(audience.target_id) == set()


def test_adding_the_same_users_twice_keeps_each_once(platform):
    target = platform.target()
    audience = created(target)
    users = [platform.user(1), platform.user(2)]

    target.add_users(audience, mutations(ADD, *users))
    target.add_users(audience, mutations(ADD, *users))

    assert platform.members(audience.target_id) == set(users)


def test_removing_a_user_who_is_no_member_does_no_harm(platform):
    target = platform.target()
    audience = created(target)
    target.add_users(audience, mutations(ADD, platform.user(1)))

    target.remove_users(audience, mutations(REMOVE, platform.user(2), first_id=2))

    assert platform.members(audience.target_id) == {platform.user(1)}


# What goes over the wire.

def test_requests_have_the_shape_and_credentials_the_platform_requires(platform):
    target = platform.target()

    audience = created(target)
    target.add_users(audience, mutations(ADD, platform.user(1), platform.user(2)))
    target.remove_users(audience, mutations(REMOVE, platform.user(2), first_id=3))

    assert platform.violations() == [], "the fake refused a request the platform would refuse"
    assert platform.members(audience.target_id) == {platform.user(1)}


def test_wrong_credentials_are_a_credentials_refusal_never_named_in_the_message(platform):
    audience = created(platform.target())
    target = platform.target(**platform.wrong_credentials)

    with pytest.raises(CredentialsRefused) as raised:
        target.add_users(audience, mutations(ADD, platform.user(1)))

    assert platform.members(audience.target_id) == set()
    assert not [secret for secret in platform.credentials() if secret in raised.value.message]


def test_a_403_is_a_credentials_refusal(platform):
    audience = created(platform.target())
    platform.fail_next(403, body=platform.refusal_body("this account may not manage the advertiser"))

    with pytest.raises(CredentialsRefused) as raised:
        platform.target().add_users(audience, mutations(ADD, platform.user(1)))

    assert "403" in raised.value.message


def test_the_dispatcher_holds_an_account_whose_credentials_are_refused_and_resumes_when_they_are_accepted(
        platform, pipeline, clock):
    deliver = pipeline(platform.target())
    target_id = deliver.ready()
    users = [platform.user(1), platform.user(2)]
    deliver.enqueue(ADD, users[:1])
    platform.refuse_credentials()

    deliver.run_once()
    calls = platform.calls()
    deliver.enqueue(ADD, users[1:])
    clock.advance(10)
    deliver.run_once()

    assert platform.calls() == calls, "held: no call until the breaker's cooldown is over"
    assert deliver.counts() == {"pending": 2, "done": 0, "dead": 0}, "nothing dead-lettered"
    assert deliver.audience().attempts == 0, "no attempt burnt"
    platform.accept_credentials()
    clock.advance(30)
    deliver.drain()

    assert platform.members(target_id) == set(users)
    assert deliver.counts() == {"pending": 0, "done": 2, "dead": 0}


def test_while_credentials_are_refused_creating_an_audience_never_ends_the_hold(platform, pipeline, clock, caplog):
    deliver = pipeline(platform.target())
    deliver.ready()
    platform.refuse_credentials()
    deliver.enqueue(ADD, [platform.user(1)])
    deliver.run_once()
    deliver.enqueue(ADD, [platform.user(2)], audience=dataclasses.replace(AUDIENCE, dmp_id="b0000000000000.1"))

    for _ in range(3):
        clock.advance(700)
        deliver.run_once()

    said = [record.getMessage().split(" account=")[0] for record in caplog.records
            if record.getMessage().startswith("credentials ")]
    assert said == ["credentials refused"], "one line, and no 'accepted' while the platform still refuses"
    assert deliver.counts() == {"pending": 2, "done": 0, "dead": 0}


def test_a_full_batch_goes_in_one_call_and_one_more_is_cut_by_the_dispatcher(platform, pipeline):
    target = platform.target()
    assert target.max_batch == platform.max_batch, "the target declares what the platform takes"
    deliver = pipeline(target)
    target_id = deliver.ready()
    users = [platform.user(n) for n in range(platform.max_batch + 1)]

    deliver.enqueue(ADD, users)
    deliver.drain()

    assert platform.member_batches() == [platform.max_batch, 1]
    assert platform.members(target_id) == set(users)
    assert platform.violations() == []
    assert deliver.counts() == {"pending": 0, "done": len(users), "dead": 0}


# How answers become errors.

def test_a_413_is_payload_too_large(platform):
    target = platform.target()
    audience = created(target)
    platform.fail_next(413)

    with pytest.raises(PayloadTooLarge):
        target.add_users(audience, mutations(ADD, platform.user(1), platform.user(2)))


def test_after_a_413_the_dispatcher_splits_the_batch_and_everything_arrives(platform, pipeline):
    deliver = pipeline(platform.target())
    target_id = deliver.ready()
    users = [platform.user(n) for n in range(4)]
    platform.fail_next(413)

    deliver.enqueue(ADD, users)
    deliver.drain()

    assert platform.member_batches() == [4, 2, 2]
    assert platform.members(target_id) == set(users)
    assert deliver.counts() == {"pending": 0, "done": 4, "dead": 0}


def test_a_429_is_transient_with_the_platforms_retry_after(platform):
    target = platform.target()
    audience = created(target)
    platform.fail_next(429, headers=platform.throttle_headers(RETRY_AFTER))

    with pytest.raises(TransientError) as raised:
        target.add_users(audience, mutations(ADD, platform.user(1)))

    assert raised.value.retry_after == RETRY_AFTER


def test_the_dispatcher_retries_a_429_no_sooner_than_its_retry_after(platform, pipeline, clock):
    deliver = pipeline(platform.target())
    target_id = deliver.ready()
    platform.fail_next(429, headers=platform.throttle_headers(RETRY_AFTER))
    deliver.enqueue(ADD, [platform.user(1)])

    assert deliver.run_once() == 1
    calls = platform.calls()
    clock.advance(RETRY_AFTER - 1)
    assert deliver.run_once() == 0, "nothing is retried before the platform's Retry-After"
    assert platform.calls() == calls
    clock.advance(1)
    assert deliver.run_once() == 1

    assert platform.members(target_id) == {platform.user(1)}
    assert deliver.counts() == {"pending": 0, "done": 1, "dead": 0}


def test_a_503_is_transient_and_the_repeated_call_delivers(platform):
    target = platform.target()
    audience = created(target)
    batch = mutations(ADD, platform.user(1))
    platform.fail_next(503)

    with pytest.raises(TransientError):
        target.add_users(audience, batch)
    target.add_users(audience, batch)

    assert platform.members(audience.target_id) == {platform.user(1)}


@pytest.mark.parametrize("status", [400, 422])
def test_a_permanent_4xx_is_permanent_and_names_the_platforms_reason(platform, status):
    target = platform.target()
    audience = created(target)
    calls = platform.calls()
    platform.fail_next(status, body=platform.refusal_body("segment 4711 is archived"))

    with pytest.raises(PermanentError) as raised:
        target.add_users(audience, mutations(ADD, platform.user(1)))

    assert "segment 4711 is archived" in raised.value.message
    assert str(status) in raised.value.message
    assert platform.calls() == calls + 1, "a permanent refusal is not repeated"


# Partial failures.

def test_a_partial_failure_names_exactly_the_refused_mutations(platform):
    platform.require("partial_failures")
    target = platform.target()
    audience = created(target)
    users = [platform.user(n) for n in range(1, 5)]
    platform.refuse([users[1], users[3]])

    with pytest.raises(PartialFailure) as raised:
        target.add_users(audience, mutations(ADD, *users, first_id=11))

    assert set(raised.value.failed) == {12, 14}
    assert all(reason for reason in raised.value.failed.values())
    assert platform.members(audience.target_id) == {users[0], users[2]}


def test_the_dispatcher_dead_letters_exactly_the_refused_mutations_and_delivers_the_rest(platform, pipeline):
    platform.require("partial_failures")
    deliver = pipeline(platform.target())
    target_id = deliver.ready()
    users = [platform.user(n) for n in range(1, 5)]
    platform.refuse([users[1], users[3]])

    deliver.enqueue(ADD, users)
    deliver.drain()

    ids = deliver.mutation_ids()
    assert set(deliver.dead_letters()) == {ids[users[1]], ids[users[3]]}
    assert platform.members(target_id) == {users[0], users[2]}
    assert deliver.counts() == {"pending": 0, "done": 2, "dead": 2}


# Credentials that expire.

def test_a_refused_token_is_replaced_once_and_the_call_repeated_once(platform):
    platform.require("token_refresh")
    target = platform.target()
    audience = created(target)
    calls, tokens = platform.calls(), platform.token_requests()
    platform.revoke_tokens()

    target.add_users(audience, mutations(ADD, platform.user(1)))

    assert platform.token_requests() == tokens + 1
    assert platform.calls() == calls + 2, "the refused call and its one repetition"
    assert platform.members(audience.target_id) == {platform.user(1)}
    assert platform.violations() == []
