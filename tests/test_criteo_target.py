"""CriteoTarget against the sandbox's Criteo (diy/sandbox, in process on 127.0.0.1), clock moved by hand."""
import calendar
import dataclasses
import json
import threading
import time

import pytest

from diy.cli import main as cli_main
from diy.config import load_config
from diy.service import Service
from outbox.dispatcher import Dispatcher
from outbox.store import ReceivedMutation
from targets import load_target_class
from targets.base import ADD, REMOVE, Audience, Mutation
from targets.criteo import CriteoTarget
from targets.criteo_access import MAX_PAUSE, postponement, rate_limit_pause
from targets.criteo_wire import deprecation_notice, segment_name
from targets.errors import (
    AudienceGone,
    CredentialsRefused,
    PartialFailure,
    PayloadTooLarge,
    PermanentError,
    TargetConfigError,
    TransientError,
    VersionRetired,
)
from targets.http import HttpClient
from tests.sandboxed import (
    TOKEN_PATH, criteo_api_calls, criteo_members, criteo_segments, criteo_settings, criteo_token_requests,
    criteo_violations,
)
from tests.support import config_text

NOW = 1_000_000.0  # the `clock` fixture's start
DMP_ID = "a5940e473cea659.356693871497425011"
AUDIENCE = Audience("shop", DMP_ID, "Summer buyers", 123)
NAME = f"mapp Summer buyers ({DMP_ID})"


@pytest.fixture
def http():
    client = HttpClient(timeout=5.0)
    yield client
    client.close()


@pytest.fixture
def start_criteo(sandboxed, clock):
    """A sandbox on the test's clock whose Criteo app is cid/csecret; `options` are more of its
    settings. Each is checked at the end for a request Criteo would refuse as malformed."""
    started = []

    def start(**options):
        started.append(sandboxed(clock=clock, criteo_client_id="cid", criteo_client_secret="csecret", **options))
        return started[-1]

    yield start
    for fake in started:
        assert criteo_violations(fake) == [], "the target sent a request Criteo would refuse as malformed"


@pytest.fixture
def fake(start_criteo):
    return start_criteo()


def criteo(fake, http, clock, **overrides):
    """A CriteoTarget on the sandbox; an override of None drops that setting."""
    settings = {**criteo_settings(fake), **overrides}
    return CriteoTarget({k: v for k, v in settings.items() if v is not None}, http, clock=clock)


def fail_next(fake, status, times=1, headers=None, body=None, token=False):
    """Script the next API calls (with `token`, the next token requests) of the sandbox."""
    fake.fail_next(status, times, headers, body, token=token)


def hold_token_requests(fake):
    """Calls wait (token requests are the only ones here) until the returned function is called."""
    fake.sandbox.faults.change({"mode": "hold"})
    return lambda: fake.sandbox.faults.change({"mode": None})


def issued_tokens(fake):
    return [json.loads(e.reply.body)["access_token"] for e in fake.calls("criteo")
            if e.request.path == TOKEN_PATH and e.reply.status == 200]


def users(*identifiers, op=ADD, first_id=1):
    return [Mutation(first_id + i, op, identifier) for i, identifier in enumerate(identifiers)]


def on(segment_id):
    return dataclasses.replace(AUDIENCE, target_id=segment_id)


def criteo_error(code, title="Refused", detail="scripted"):
    return {"errors": [{"traceIdentifier": "t-1", "type": "validation", "code": code,
                        "instance": "/x", "title": title, "detail": detail}]}


def wait_for(condition, seconds=10.0):
    """Poll `condition` until it holds; False if it never did (a bound, not a timed check)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# Tokens.


def test_a_token_is_fetched_once_and_reused(fake, http, clock):
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")

    target.add_users(on(segment), users("g1"))
    target.add_users(on(segment), users("g2"))

    assert criteo_token_requests(fake) == 1
    [token_request] = [r for r in fake.recorded("criteo") if r.path == TOKEN_PATH]
    assert token_request.body == {"client_id": "cid", "client_secret": "***",
                                  "grant_type": "client_credentials"}


@pytest.mark.parametrize(
    "seconds_later, token_requests",
    [(839, 1), (840, 2)],
    ids=["still-cached-61s-before-expiry", "replaced-60s-before-expiry"],
)
def test_a_token_is_replaced_shortly_before_it_expires(fake, http, clock, seconds_later, token_requests):
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")
    target.add_users(on(segment), users("g1"))

    clock.advance(seconds_later)
    target.add_users(on(segment), users("g2"))

    assert criteo_token_requests(fake) == token_requests
    assert len(criteo_api_calls(fake)) == 2, "never a call with an expired token"


def test_threads_needing_a_token_at_once_share_one_fetch(fake, http, clock):
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")
    release = hold_token_requests(fake)
    failures = []

    def add(n):
        try:
            target.add_users(on(segment), users(f"g{n}", first_id=n))
        except Exception as error:  # reported below, not lost in the thread
            failures.append(error)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: fake.sandbox.faults.held == 1 and target.tokens.waiting == 4)
    finally:
        release()
        for thread in threads:
            thread.join(10)

    assert failures == []
    assert criteo_token_requests(fake) == 1
    assert criteo_members(fake)[segment] == {f"g{n}" for n in range(5)}


def test_threads_that_waited_for_a_failed_token_fetch_fail_alike_without_fetching(fake, http, clock):
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")
    fail_next(fake, 503, token=True)
    release = hold_token_requests(fake)
    failures = []

    def add(n):
        try:
            target.add_users(on(segment), users(f"g{n}", first_id=n))
        except Exception as error:
            failures.append(error)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: fake.sandbox.faults.held == 1 and target.tokens.waiting == 2)
    finally:
        release()
        for thread in threads:
            thread.join(10)

    assert [type(error) for error in failures] == [TransientError] * 3
    assert criteo_token_requests(fake) == 1
    assert criteo_api_calls(fake) == []


@pytest.mark.parametrize(
    "refuse",
    [
        lambda fake: fake.sandbox.criteo.revoke_tokens(),
        lambda fake: fail_next(fake, 401, body=criteo_error("authorization-token-expired")),
        lambda fake: fail_next(fake, 401, body=""),
    ],
    ids=["revoked-token", "token-expired-code", "bare-401"],
)
def test_a_refused_token_is_replaced_and_the_call_repeated_once(fake, http, clock, refuse):
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")
    target.add_users(on(segment), users("g1"))
    refuse(fake)

    target.add_users(on(segment), users("g2"))

    assert criteo_token_requests(fake) == 2
    assert len(criteo_api_calls(fake)) == 3
    assert criteo_members(fake)[segment] == {"g1", "g2"}


def test_a_second_401_in_a_row_is_a_credentials_refusal(fake, http, clock):
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")
    fail_next(fake, 401, times=2)

    with pytest.raises(CredentialsRefused) as raised:
        target.add_users(on(segment), users("g1"))

    assert "freshly fetched access token" in raised.value.message
    assert not [token for token in issued_tokens(fake) if token in raised.value.message], "never the token"
    assert criteo_token_requests(fake) == 2
    assert len(criteo_api_calls(fake)) == 2


@pytest.mark.parametrize(
    "settings, script",
    [
        ({"client_secret": "wrong-secret-value"}, None),
        ({"client_id": "other-app"}, None),
        ({}, {"status": 400, "body": {"error": "invalid_request"}}),
    ],
    ids=["wrong-secret-401", "wrong-client-id-401", "token-endpoint-400"],
)
def test_refused_client_credentials_are_a_credentials_refusal_naming_the_settings(fake, http, clock, settings, script):
    target = criteo(fake, http, clock, **settings)
    if script:
        fail_next(fake, script["status"], body=script["body"], token=True)

    with pytest.raises(CredentialsRefused) as raised:
        target.create_audience(AUDIENCE)

    message = raised.value.message
    assert "target.client_id" in message and "target.client_secret" in message
    assert "wrong-secret-value" not in message and "csecret" not in message
    assert criteo_api_calls(fake) == []


# Creating segments.


def test_create_returns_the_new_segments_id_and_sends_the_documented_body(fake, http, clock):
    segment = criteo(fake, http, clock).create_audience(AUDIENCE)

    assert criteo_segments(fake) == {segment: NAME}
    [request] = criteo_api_calls(fake)
    assert (request.method, request.path) == ("POST", "/2026-07/marketing-solutions/audience-segments/create")
    assert request.body == {"data": [{"type": "AudienceSegment", "attributes": {
        "advertiserId": "12345",
        "name": NAME,
        "description": f"Mapp DMP audience {DMP_ID}, customer 123, integration shop; kept by diy-wsgi",
        "contactList": {},
    }}]}


@pytest.mark.parametrize(
    "prefix, name, expected",
    [
        ("mapp", "Summer buyers", "mapp Summer buyers (d-1)"),
        ("mapp", None, "mapp (d-1)"),
        ("", "Summer buyers", "Summer buyers (d-1)"),
        ("mapp", "  Summer \n buyers ", "mapp Summer buyers (d-1)"),
    ],
    ids=["named", "first-seen-in-a-mutation", "no-prefix", "whitespace-collapsed"],
)
def test_segment_names_are_deterministic_and_carry_the_dmp_id(prefix, name, expected):
    assert segment_name(prefix, Audience("shop", "d-1", name, 123)) == expected


@pytest.mark.parametrize(
    "call",
    [
        lambda target, segment: target.create_audience(AUDIENCE),
        lambda target, segment: target.add_users(on(segment), users("g1")),
    ],
    ids=["create", "add"],
)
def test_a_200_carrying_errors_is_refused_with_criteos_reason(fake, http, clock, call):
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")
    fail_next(fake, 200, body={"data": [], "warnings": [],
                              **criteo_error("invalid-segment-name", "Invalid name", "too long")})

    with pytest.raises(PermanentError) as raised:
        call(target, segment)

    assert "HTTP 200 invalid-segment-name: Invalid name: too long" in raised.value.message


def test_a_taken_name_is_resolved_by_searching_every_page(fake, http, clock):
    for n in range(150):
        fake.sandbox.criteo.create_segment(f"other {n}")
    existing = fake.sandbox.criteo.create_segment(NAME)

    segment = criteo(fake, http, clock).create_audience(AUDIENCE)

    assert segment == existing
    assert len(criteo_segments(fake)) == 151
    searches = [r for r in criteo_api_calls(fake) if r.path.endswith("/search")]
    assert [r.query for r in searches] == [{"limit": "100", "offset": "0"}, {"limit": "100", "offset": "100"}]
    assert searches[0].body == {"data": {"attributes": {"audienceSegmentTypes": ["ContactList"],
                                                        "advertiserIds": ["12345"]}}}


@pytest.mark.parametrize("name_clash", ["warnings", "errors"], ids=["clash-in-warnings-of-a-200", "clash-in-errors-of-a-400"])
def test_creating_an_audience_twice_gives_one_segment(start_criteo, http, clock, name_clash):
    fake = start_criteo(criteo_name_clash=name_clash)
    target = criteo(fake, http, clock)

    first = target.create_audience(AUDIENCE)
    second = target.create_audience(AUDIENCE)

    assert first == second
    assert criteo_segments(fake) == {first: NAME}


def test_a_taken_name_that_search_cannot_find_is_retried_later(fake, http, clock):
    fail_next(fake, 400, body=criteo_error("name-must-be-unique"))

    with pytest.raises(TransientError):
        criteo(fake, http, clock).create_audience(AUDIENCE)


def test_a_200_that_creates_nothing_and_warns_is_refused_with_the_warning(fake, http, clock):
    warning = criteo_error("name-must-not-be-empty", "Segment name must not be empty")["errors"]
    fail_next(fake, 200, body={"data": [], "errors": [], "warnings": warning})

    with pytest.raises(PermanentError) as raised:
        criteo(fake, http, clock).create_audience(AUDIENCE)

    assert "HTTP 200 name-must-not-be-empty: Segment name must not be empty" in raised.value.message


# Adding and removing users.


@pytest.mark.parametrize(
    "settings, op, attributes",
    [
        ({}, ADD, {"operation": "add", "identifierType": "gum", "gumCallerId": 123}),
        ({}, REMOVE, {"operation": "remove", "identifierType": "gum", "gumCallerId": 123}),
        ({"identifier_type": "email", "gum_caller_id": None}, ADD,
         {"operation": "add", "identifierType": "email"}),
    ],
    ids=["gum-add", "gum-remove", "email-add-without-gum-caller-id"],
)
def test_member_calls_send_exactly_the_documented_body(fake, http, clock, settings, op, attributes):
    target = criteo(fake, http, clock, **settings)
    segment = fake.sandbox.criteo.create_segment("s")

    (target.add_users if op == ADD else target.remove_users)(on(segment), users("g1", "g2", op=op))

    [request] = criteo_api_calls(fake)
    assert (request.method, request.path) == (
        "PATCH", f"/2026-07/marketing-solutions/audience-segments/{segment}/contact-list")
    assert request.body == {"data": {"type": "ContactlistAmendment",
                                     "attributes": {**attributes, "identifiers": ["g1", "g2"]}}}


def test_add_then_remove_changes_the_membership(fake, http, clock):
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")

    target.add_users(on(segment), users("g1", "g2"))
    target.remove_users(on(segment), users("g1", op=REMOVE, first_id=3))

    assert criteo_members(fake)[segment] == {"g2"}


def test_identifiers_in_criteos_invalid_sample_fail_alone(fake, http, clock):
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")
    fake.sandbox.criteo.invalid(["bad"])

    with pytest.raises(PartialFailure) as raised:
        target.add_users(on(segment), users("g1", "bad", "g2"))

    assert raised.value.failed == {2: "Criteo: not a valid gum identifier"}
    assert criteo_members(fake)[segment] == {"g1", "g2"}


@pytest.mark.parametrize(
    "missing_segment, scripted",
    [((404, "segment-not-found"), False), ((404, "audience-invalid"), True), ((404, "not-found"), True),
     ((400, "segment-not-found"), True)],
    ids=["404-segment-not-found", "404-audience-invalid", "404-any-code", "400-segment-not-found"],
)
def test_a_deleted_segment_raises_audience_gone(fake, http, clock, missing_segment, scripted):
    """The sandbox answers 404 segment-not-found; the other answers no source rules out are scripted."""
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")
    fake.sandbox.criteo.delete_segment(segment)
    if scripted:
        fail_next(fake, missing_segment[0], body=criteo_error(missing_segment[1], "Segment is not found"))

    with pytest.raises(AudienceGone) as raised:
        target.add_users(on(segment), users("g1"))

    assert f"HTTP {missing_segment[0]} {missing_segment[1]}" in raised.value.message


def test_segment_not_found_among_the_warnings_of_a_200_raises_audience_gone(fake, http, clock):
    target = criteo(fake, http, clock)
    warning = criteo_error("segment-not-found", "Segment is not found")["errors"]
    fail_next(fake, 200, body={"data": None, "errors": [], "warnings": warning})

    with pytest.raises(AudienceGone):
        target.add_users(on(fake.sandbox.criteo.create_segment("s")), users("g1"))


def test_a_deprecation_warning_of_a_200_is_not_an_error(fake, http, clock):
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")
    warning = criteo_error("deprecated-field", "'nbValidIds' is deprecated")["errors"]
    fail_next(fake, 200, body={"data": {"type": "ContactlistAmendment", "attributes": {}},
                              "errors": [], "warnings": warning})

    target.add_users(on(segment), users("g1"))


def test_any_gum_caller_id_is_sent_as_configured(fake, http, clock):
    target = criteo(fake, http, clock, gum_caller_id="987")
    segment = fake.sandbox.criteo.create_segment("s")

    target.add_users(on(segment), users("g1"))

    assert criteo_api_calls(fake)[-1].body["data"]["attributes"]["gumCallerId"] == 987
    assert criteo_members(fake)[segment] == {"g1"}


@pytest.mark.parametrize(
    "status, code, error",
    [
        (400, "invalid-request", PermanentError),
        (403, "access-denied", CredentialsRefused),
        (404, "not-found", AudienceGone),
        (410, "gone", VersionRetired),
        (413, "payload-too-large", PayloadTooLarge),
        (429, "too-many-requests", TransientError),
        (500, "internal-error", TransientError),
        (502, "bad-gateway", TransientError),
        (503, "service-unavailable", TransientError),
        (504, "gateway-timeout", TransientError),
    ],
    ids=["400", "403", "404-on-the-segment", "410", "413", "429-no-headers", "500", "502", "503", "504"],
)
def test_statuses_raise_the_shared_error_classes_with_criteos_code(fake, http, clock, status, code, error):
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")
    fail_next(fake, status, body=criteo_error(code, "Scripted title"))

    with pytest.raises(error) as raised:
        target.add_users(on(segment), users("g1"))

    assert type(raised.value) is error
    assert f"HTTP {status} {code}: Scripted title" in raised.value.message


def test_a_segment_id_that_is_not_a_number_is_refused_without_a_call(fake, http, clock):
    with pytest.raises(PermanentError):
        criteo(fake, http, clock).add_users(on("../oauth2"), users("g1"))

    assert fake.calls("criteo") == []


# Rate limit.


@pytest.mark.parametrize(
    "headers, retry_after",
    [
        ({"x-ratelimit-reset": str(int(NOW) + 42)}, 42),
        ({"Retry-After": "17"}, 17),
        ({"x-ratelimit-reset": str(int(NOW) + 42), "Retry-After": "17"}, 42),
        ({"x-ratelimit-reset": str(int(NOW) + 86_400)}, MAX_PAUSE),
    ],
    ids=["reset-header", "retry-after-without-reset", "reset-wins", "far-reset-capped"],
)
def test_a_429_retries_when_the_rate_limit_resets(fake, http, clock, headers, retry_after):
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")
    fail_next(fake, 429, headers=headers)

    with pytest.raises(TransientError) as raised:
        target.add_users(on(segment), users("g1"))

    assert raised.value.retry_after == retry_after


def test_a_used_up_rate_limit_postpones_the_next_call_without_calling(fake, http, clock):
    target = criteo(fake, http, clock)
    segment = fake.sandbox.criteo.create_segment("s")
    fake.sandbox.criteo.use_up_rate_limit(until=NOW + 30)
    target.add_users(on(segment), users("g1"))
    calls = len(fake.calls("criteo"))

    clock.advance(10)
    with pytest.raises(TransientError) as raised:
        target.add_users(on(segment), users("g2"))
    assert raised.value.retry_after == 20
    assert len(fake.calls("criteo")) == calls

    clock.advance(20)
    target.add_users(on(segment), users("g2"))
    assert criteo_members(fake)[segment] == {"g1", "g2"}


@pytest.mark.parametrize(
    "headers, resume_at",
    [
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1000030"}, 1_000_030.0),
        ({"x-ratelimit-remaining": "3", "x-ratelimit-reset": "1000030"}, None),
        ({}, None),
        ({"x-ratelimit-remaining": "0"}, 1_000_060.0),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "soon"}, 1_000_060.0),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "999990"}, 1_000_000.0),
        ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "9999999999"}, 1_000_000.0 + MAX_PAUSE),
    ],
    ids=["used-up", "calls-left", "no-headers", "no-reset-one-window", "reset-not-a-number",
         "reset-in-the-past", "reset-too-far-capped"],
)
def test_rate_limit_pause_reads_the_headers(headers, resume_at):
    assert rate_limit_pause(headers, now=NOW) == resume_at


@pytest.mark.parametrize(
    "paused_until, wait",
    [(None, None), (NOW - 1, None), (NOW, None), (NOW + 12.5, 12.5)],
    ids=["never-paused", "pause-over", "pause-ends-now", "paused"],
)
def test_postponement_is_the_time_left_until_the_reset(paused_until, wait):
    assert postponement(paused_until, NOW) == wait


# Settings and registration.

SETTINGS = {"client_id": "cid", "client_secret": "s3cr3t-value", "advertiser_id": "12345",
            "gum_caller_id": "123"}


@pytest.mark.parametrize(
    "change, key",
    [
        ({"client_id": None}, "client_id"),
        ({"client_secret": None}, "client_secret"),
        ({"client_secret": "two\nlines"}, "client_secret"),
        ({"advertiser_id": None}, "advertiser_id"),
        ({"advertiser_id": "adv-1"}, "advertiser_id"),
        ({"identifier_type": "cookie"}, "identifier_type"),
        ({"gum_caller_id": None}, "gum_caller_id"),
        ({"gum_caller_id": "12a"}, "gum_caller_id"),
        ({"identifier_type": "email"}, "gum_caller_id"),
        ({"max_batch": "0"}, "max_batch"),
        ({"max_batch": "50001"}, "max_batch"),
        ({"timeout": "-1"}, "timeout"),
        ({"base_url": "ftp://api.criteo.com"}, "base_url"),
        ({"base_url": "https://cid:s3cr3t-value@api.criteo.com"}, "base_url"),
        ({"api_version": "v1"}, "api_version"),
        ({"client_secert": "s3cr3t-value"}, "client_secert"),
    ],
    ids=["no-client-id", "no-client-secret", "secret-two-lines", "no-advertiser", "advertiser-not-a-number",
         "unknown-identifier-type", "gum-without-caller-id", "caller-id-not-a-number",
         "caller-id-without-gum", "max-batch-0", "max-batch-over-50000", "timeout-negative",
         "base-url-not-http", "base-url-with-credentials", "api-version-malformed", "unknown-key"],
)
def test_a_bad_setting_names_its_key_and_never_the_secret(change, key):
    settings = {k: v for k, v in {**SETTINGS, **change}.items() if v is not None}

    with pytest.raises(TargetConfigError) as raised:
        CriteoTarget(settings, http=None)

    assert raised.value.key == key
    assert "s3cr3t-value" not in str(raised.value)


def test_defaults_and_registration():
    target = CriteoTarget(SETTINGS, http=None)

    assert load_target_class("criteo") is CriteoTarget
    assert (target.base_url, target.api_version, target.identifier_type, target.gum_caller_id,
            target.segment_prefix, target.timeout, target.max_batch) == (
        "https://api.criteo.com", "2026-07", "gum", 123, "mapp", 10.0, 50_000)
    assert CriteoTarget.calls_per_minute == 250


# The dispatcher, end to end.


def drain(dispatcher, clock, rounds=50):
    for _ in range(rounds):
        if not dispatcher.run_once():
            clock.advance(1.0)
            if not dispatcher.run_once():
                return


def test_the_dispatcher_creates_the_segment_then_keeps_its_members(fake, http, clock, outbox):
    target = criteo(fake, http, clock)
    dispatcher = Dispatcher(outbox, {"shop": target}, clock=clock, rand=lambda: 0.0)
    fake.sandbox.criteo.invalid(["bad"])
    fail_next(fake, 429, headers={"x-ratelimit-reset": str(int(NOW) + 30)})
    enqueue = lambda op, *ids: outbox.enqueue(  # noqa: E731
        "shop", op, [ReceivedMutation(DMP_ID, i) for i in ids], pass_through=False, now=clock())
    enqueue("add", "g1", "g2", "bad")

    dispatcher.run_once()
    clock.advance(29)
    assert dispatcher.run_once() == 0, "waits for the rate limit's reset"
    clock.advance(1)
    drain(dispatcher, clock)
    enqueue("remove", "g1")
    drain(dispatcher, clock)

    segment = outbox.audience("shop", DMP_ID).target_id
    assert criteo_segments(fake) == {segment: f"mapp ({DMP_ID})"}
    assert criteo_members(fake)[segment] == {"g2"}
    assert outbox.counts() == {"pending": 0, "done": 3, "dead": 1}
    [dead] = outbox.dead_letters()
    assert "not a valid gum identifier" in dead[-1]


# API versions.

SUNSET = "Wed, 27 Jan 2027 00:00:00 GMT"
"""2026-01's sunset: the sandbox retires a version on the 27th of its month a year later."""
DEPRECATED = calendar.timegm((2026, 12, 1, 0, 0, 0))
"""A day in 2026-01's last 3 months, when Criteo's answers announce its sunset."""
RETIRED = calendar.timegm((2027, 2, 1, 0, 0, 0))
"""A day after 2026-01's sunset (and 2026-07's current)."""


def test_answers_announcing_a_sunset_are_counted_each_and_logged_once(fake, http, clock, caplog):
    clock.now = DEPRECATED
    target = criteo(fake, http, clock, api_version="2026-01")
    notices = []
    target.on_api_deprecated = lambda version, sunset: notices.append((version, sunset))
    segment = fake.sandbox.criteo.create_segment("s")

    target.add_users(on(segment), users("g1"))
    target.add_users(on(segment), users("g2"))

    assert notices == [("2026-01", "2027-01-27")] * 2
    logged = [r.getMessage() for r in caplog.records if "deprecates" in r.getMessage()]
    assert logged == ["criteo deprecates api_version=2026-01 sunset=2027-01-27; calls answer 410 after the"
                      " sunset: set target.api_version to the current version (see the README, The Criteo"
                      " target)"]


def test_the_default_version_is_not_the_one_being_retired(fake, http, clock):
    clock.now = DEPRECATED
    target = criteo(fake, http, clock)
    notices = []
    target.on_api_deprecated = lambda version, sunset: notices.append(version)

    target.add_users(on(fake.sandbox.criteo.create_segment("s")), users("g1"))

    assert notices == []


@pytest.mark.parametrize(
    "headers, notice",
    [
        ({}, None),
        ({"deprecation": "true", "sunset": SUNSET}, "2027-01-27"),
        ({"deprecation": "@1798761600"}, ""),
        ({"deprecation": "true", "sunset": "soon"}, ""),
        ({"deprecation": "false", "sunset": SUNSET}, None),
    ],
    ids=["not-deprecated", "criteos-headers", "rfc9745-date-no-sunset", "sunset-unreadable", "deprecation-false"],
)
def test_deprecation_notice_reads_the_headers(headers, notice):
    assert deprecation_notice(headers) == notice


def test_a_retired_version_holds_the_work_until_the_version_is_changed(fake, http, clock, outbox):
    clock.now = RETIRED
    target = criteo(fake, http, clock, api_version="2026-01")
    dispatcher = Dispatcher(outbox, {"shop": target}, clock=clock, rand=lambda: 0.0)
    outbox.enqueue("shop", "add", [ReceivedMutation(DMP_ID, "g1")], pass_through=False, now=clock())

    drain(dispatcher, clock)
    assert outbox.counts() == {"pending": 1, "done": 0, "dead": 0}
    assert outbox.audience("shop", DMP_ID).state == "creating"

    target.api_version = "2026-07"  # what the operator's new setting does after a restart
    clock.advance(3600)
    drain(dispatcher, clock)

    assert outbox.counts() == {"pending": 0, "done": 1, "dead": 0}
    assert criteo_members(fake)[outbox.audience("shop", DMP_ID).target_id] == {"g1"}


# One API app, several accounts.


def test_accounts_of_one_app_share_its_token_and_its_rate_limit_pause(fake, http, clock):
    first = criteo(fake, http, clock)
    second = criteo(fake, http, clock, advertiser_id="777")
    assert first.application == second.application
    second.share_application(first)
    segment = fake.sandbox.criteo.create_segment("s")
    fake.sandbox.criteo.use_up_rate_limit(until=NOW + 30)

    first.add_users(on(segment), users("g1"))
    with pytest.raises(TransientError) as raised:
        second.add_users(on(segment), users("g2"))

    assert raised.value.retry_after == 30
    assert criteo_token_requests(fake) == 1


def test_another_client_id_or_secret_is_another_application(fake, http, clock):
    target = criteo(fake, http, clock)

    assert criteo(fake, http, clock, client_id="other").application != target.application
    assert criteo(fake, http, clock, client_secret="other").application != target.application
    assert "csecret" not in repr(target.application)


# The service: accounts of one app, and what status shows.


def criteo_service(tmp_path, fake, clock, accounts):
    """A Service whose integration `demo` is Criteo, one account per {customer: settings}."""
    settings = criteo_settings(fake)
    base = {"target": "criteo", **{f"target.{key}": value for key, value in settings.items()}}
    text = config_text(tmp_path / "outbox.sqlite3", "http://unused.invalid", integration=base, sections={
        f"integration:demo:customer:{customer}": {f"target.{key}": value for key, value in more.items()}
        for customer, more in accounts.items()})
    for key in ("target.url", "target.secret"):
        text = text.replace(f"{key} = ", f"; {key} = ")
    path = tmp_path / "diy.ini"
    path.write_text(text)
    path.chmod(0o600)
    service = Service(load_config(path), clock=clock)
    service.dispatcher.rand = lambda: 0.0
    return path, service


def test_accounts_sharing_a_client_id_share_one_rate_limit_and_one_token(tmp_path, fake, clock):
    _, service = criteo_service(tmp_path, fake, clock, {1: {}, 2: {}})
    try:
        first, second = (service.accounts["demo"].for_customer(c) for c in (1, 2))
        while first.guard.admit() == 0:
            first.guard.release("ok")

        assert second.guard.admit() > 0, "the app's 250 calls a minute are used up for both"
        segment = fake.sandbox.criteo.create_segment("s")
        first.target.add_users(on(segment), users("g1"))
        second.target.add_users(on(segment), users("g2"))
        assert criteo_token_requests(fake) == 1
    finally:
        service.close()


def test_accounts_of_different_apps_keep_their_own_rate_limits(tmp_path, fake, clock):
    _, service = criteo_service(tmp_path, fake, clock, {1: {}, 2: {"client_id": "another-app"}})
    try:
        first, second = (service.accounts["demo"].for_customer(c) for c in (1, 2))
        while first.guard.admit() == 0:
            first.guard.release("ok")

        assert second.guard.admit() == 0
    finally:
        service.close()


def test_status_shows_a_deprecated_api_version_with_its_sunset(tmp_path, fake, clock, capsys):
    clock.now = DEPRECATED
    path, service = criteo_service(tmp_path, fake, clock, {1: {"api_version": "2026-01"}})
    try:
        service.outbox.enqueue("demo", "add", [ReceivedMutation(DMP_ID, "g1", customer=1)],
                               pass_through=False, now=clock())
        drain(service.dispatcher, clock)
        service.metrics.flush()

        capsys.readouterr()
        assert cli_main(["status", "--config", str(path), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)["deprecated_api_versions"]
        assert cli_main(["status", "--config", str(path)]) == 0
        table = capsys.readouterr().out
    finally:
        service.close()

    assert shown == [{"integration": "demo", "account": "demo/customer:1", "api_version": "2026-01",
                      "sunset": "2027-01-27"}]
    assert "2026-01" in table and "2027-01-27" in table
