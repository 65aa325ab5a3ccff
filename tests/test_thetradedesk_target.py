"""TheTradeDeskTarget against the sandbox's Trade Desk (diy/sandbox, in process on 127.0.0.1);
payloads, answers, settings."""
import base64
import hashlib
import hmac
import json

import pytest

from diy.service import Service
from outbox.store import ReceivedMutation
from targets import BUILTIN, load_target_class
from targets.base import ADD, REMOVE, Audience, Mutation
from targets.errors import (
    CredentialsRefused, PartialFailure, PayloadTooLarge, PermanentError, TargetConfigError, TransientError,
    VersionRetired,
)
from targets.http import HttpClient
from targets.thetradedesk import TheTradeDeskTarget
from targets.thetradedesk_wire import build_requests, segment_name
from tests.sandboxed import ttd_members, ttd_settings
from tests.support import make_config

NOW = 1_795_757_661.0  # 2026-11-27T05:34:21Z
SECRET = "advertiser-secret-key"
DP_SECRET = "data-provider-secret-key"
AUDIENCE = Audience("ttd", "4711", "Summer buyers", 42, target_id="mapp_42_4711")
TDIDS = [f"df2df528-e032-4851-b7c6-{n:012d}" for n in range(1, 31)]


def mutations(*tdids, op=ADD, first_id=101):
    return [Mutation(first_id + n, op, tdid) for n, tdid in enumerate(tdids)]


@pytest.fixture
def http():
    client = HttpClient(timeout=5.0)
    yield client
    client.close()


DATA_PROVIDER = {"ttd_data_provider_id": "mapp", "ttd_data_provider_secret": DP_SECRET}


@pytest.fixture
def start_ttd(sandboxed):
    """A sandbox taking the token "ttd-token" and the secret SECRET; `options` are more of its
    settings (e.g. DATA_PROVIDER)."""
    return lambda **options: sandboxed(ttd_token="ttd-token", ttd_secret=SECRET, **options)


@pytest.fixture
def fake(start_ttd):
    return start_ttd()


@pytest.fixture
def signing_fake(start_ttd):
    return start_ttd(**DATA_PROVIDER)


def ttd(fake, http, signature=None, **settings):
    """The target on `fake`, signing when `signature` (by default when it has a data provider)."""
    if signature is None:
        signature = fake.sandbox.thetradedesk.data_provider_id is not None
    return TheTradeDeskTarget({**ttd_settings(fake, signature), **settings}, http, clock=lambda: NOW)


def received(fake):
    """(headers with lower-case names, body bytes) of each request the platform got, in order."""
    return [(exchange.request.headers, exchange.request.body) for exchange in fake.calls("thetradedesk")]


def requests(fake):
    return fake.bodies("thetradedesk")


def rejections(fake):
    return fake.refusals("thetradedesk")


# Authentication

@pytest.mark.parametrize(
    "fake_options, signature",
    [
        pytest.param({}, False, id="token"),
        pytest.param({}, True, id="signature"),
        pytest.param(DATA_PROVIDER, True, id="signature-with-data-provider"),
    ],
)
def test_each_auth_mode_is_accepted_by_the_platform(start_ttd, http, fake_options, signature):
    fake = start_ttd(**fake_options)

    ttd(fake, http, signature).add_users(AUDIENCE, mutations(*TDIDS[:2]))

    assert rejections(fake) == []
    assert ttd_members(fake) == {"mapp_42_4711": set(TDIDS[:2])}


def test_signatures_match_an_independent_hmac_sha1_of_the_exact_body(signing_fake, http):
    ttd(signing_fake, http).add_users(AUDIENCE, mutations(TDIDS[0]))

    [(headers, body)] = received(signing_fake)
    for header, key in (("ttdsignature", SECRET), ("ttdsignature-dp", DP_SECRET)):
        mac = hmac.new(key.encode(), body, hashlib.sha1).digest()
        assert headers[header] == base64.b64encode(mac).decode()
    assert "ttd-auth" not in headers
    assert json.loads(body)["DataProviderId"] == "mapp"


def test_token_mode_sends_the_token_and_no_signature(fake, http):
    ttd(fake, http).add_users(AUDIENCE, mutations(TDIDS[0]))

    [(headers, _)] = received(fake)
    assert headers["ttd-auth"] == "ttd-token"
    assert "ttdsignature" not in headers and "ttdsignature-dp" not in headers


@pytest.mark.parametrize(
    "fake_options, signature, wrong",
    [
        pytest.param({}, False, {"token": "stale-token"}, id="wrong-token"),
        pytest.param({}, True, {"secret": "other-secret"}, id="wrong-secret"),
        pytest.param(DATA_PROVIDER, True, {"data_provider_secret": "other-dp-secret"}, id="wrong-data-provider-secret"),
    ],
)
def test_refused_credentials_are_a_configuration_error_not_the_datas(start_ttd, http, fake_options, signature, wrong):
    fake = start_ttd(**fake_options)

    with pytest.raises(CredentialsRefused) as raised:
        ttd(fake, http, signature, **wrong).add_users(AUDIENCE, mutations(TDIDS[0]))

    assert not isinstance(raised.value, PermanentError), "nothing to dead-letter: the data is fine"
    assert "configuration error" in raised.value.message
    assert rejections(fake)[0][0] == 401
    assert not any(secret in raised.value.message for secret in wrong.values())


@pytest.mark.parametrize(
    "fake_options, settings, said, advice",
    [
        pytest.param({}, {"advertiser_id": "adv2"}, "AdvertiserMisconfigured: The provided AdvertiserId is not"
                     " configured to send data", "ask TTD", id="advertiser-misconfigured"),
        pytest.param({"ttd_segment_limit": 0}, {}, "TargetingDataLimitReached: The maximum allowed targeting data"
                     " elements limit has been reached", "raise the limit", id="targeting-data-limit-reached"),
    ],
)
def test_a_403_says_the_platforms_own_code_and_message_and_holds_the_account(
        start_ttd, http, fake_options, settings, said, advice):
    fake = start_ttd(**fake_options)

    with pytest.raises(CredentialsRefused) as raised:
        ttd(fake, http, **settings).add_users(AUDIENCE, mutations(TDIDS[0]))

    assert f"HTTP 403, {said}" in raised.value.message
    assert "not the data's" in raised.value.message and advice in raised.value.message
    assert ttd_members(fake) == {}


def test_a_410_is_a_retired_endpoint_that_holds_the_account(fake, http):
    fake.fail_next(410, body="Gone")

    with pytest.raises(VersionRetired) as raised:
        ttd(fake, http).add_users(AUDIENCE, mutations(TDIDS[0]))

    assert "nothing is dead-lettered" in raised.value.message


def test_a_403_in_plain_text_is_reported_as_it_came(fake, http):
    fake.fail_next(403, body="Forbidden")

    with pytest.raises(CredentialsRefused) as raised:
        ttd(fake, http).add_users(AUDIENCE, mutations(TDIDS[0]))

    assert "HTTP 403, HTTP 403: Forbidden" in raised.value.message
    assert "target.advertiser_id" in raised.value.message


# Payloads and membership

def test_add_then_remove_leaves_no_member(fake, http):
    target = ttd(fake, http)

    target.add_users(AUDIENCE, mutations(*TDIDS[:3]))
    target.remove_users(AUDIENCE, mutations(*TDIDS[:3], op=REMOVE))

    assert ttd_members(fake) == {}
    assert [item["Data"][0]["TtlInMinutes"] for item in requests(fake)[1]["Items"]] == [0, 0, 0]


@pytest.mark.parametrize(
    "settings, expected",
    [
        pytest.param({}, 43200, id="default-30-days"),
        pytest.param({"ttl_minutes": "1"}, 1, id="one-minute"),
        pytest.param({"ttl_minutes": "259200"}, 259200, id="cap-180-days"),
    ],
)
def test_ttl_of_an_add_is_configurable(fake, http, settings, expected):
    ttd(fake, http, **settings).add_users(AUDIENCE, mutations(TDIDS[0]))

    assert requests(fake)[0]["Items"][0]["Data"] == [{"Name": "mapp_42_4711", "TtlInMinutes": expected}]


@pytest.mark.parametrize(
    "fake_fixture, expected_head",
    [
        pytest.param("fake", '{"AdvertiserId":"adv1","Items":[', id="token"),
        pytest.param("signing_fake", '{"AdvertiserId":"adv1","DataProviderId":"mapp","Items":[',
                     id="data-provider"),
    ],
)
def test_body_is_compact_json_of_exactly_this_shape(request, http, fake_fixture, expected_head):
    fake = request.getfixturevalue(fake_fixture)

    ttd(fake, http).add_users(AUDIENCE, mutations(*TDIDS[:2]))

    item = '{{"TDID":"{}","Data":[{{"Name":"mapp_42_4711","TtlInMinutes":43200}}]}}'
    expected = expected_head + ",".join(item.format(tdid) for tdid in TDIDS[:2]) + "]}"
    [(headers, body)] = received(fake)
    assert body == expected.encode()
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "audience, segment",
    [
        pytest.param(AUDIENCE, "mapp_42_4711", id="recorded-target-id"),
        pytest.param(Audience("ttd", "9", None, None, target_id="dmp-sent-id"), "dmp-sent-id",
                     id="never-announced-audience-uses-the-outbox-id"),
        pytest.param(Audience("ttd", "4711", "x", 42), "mapp_42_4711", id="no-target-id-derives"),
    ],
)
def test_users_go_to_the_recorded_target_id_else_the_derived_name(fake, http, audience, segment):
    ttd(fake, http).add_users(audience, mutations(TDIDS[0]))

    assert ttd_members(fake) == {segment: {TDIDS[0]}}


def test_an_empty_batch_sends_nothing(fake, http):
    ttd(fake, http).remove_users(AUDIENCE, [])

    assert requests(fake) == []


# Partial failures

@pytest.mark.parametrize("failed_lines", ["recorded", "schema"], ids=["recorded-shape", "sdk-schema-shape"])
def test_failed_lines_name_exactly_the_refused_mutations(start_ttd, http, failed_lines):
    fake = start_ttd(ttd_failed_lines=failed_lines)
    fake.sandbox.thetradedesk.refuse([TDIDS[1], TDIDS[3]], code="UserNotMapped")
    batch = mutations(*TDIDS[:5])

    with pytest.raises(PartialFailure) as raised:
        ttd(fake, http).add_users(AUDIENCE, batch)

    assert raised.value.failed == {
        batch[1].id: "UserNotMapped: Refused by the sandbox, item #2",
        batch[3].id: "UserNotMapped: Refused by the sandbox, item #4",
    }
    assert ttd_members(fake) == {"mapp_42_4711": {TDIDS[0], TDIDS[2], TDIDS[4]}}


def test_a_malformed_tdid_is_sent_as_given_and_refused_by_the_platform(fake, http):
    batch = mutations(TDIDS[0], "12478286329")

    with pytest.raises(PartialFailure) as raised:
        ttd(fake, http).add_users(AUDIENCE, batch)

    assert requests(fake)[0]["Items"][1]["TDID"] == "12478286329"
    assert raised.value.failed == {batch[1].id: "MissingUserId: Invalid TDID, item #2"}


def test_every_item_failing_is_still_a_partial_failure_naming_all(fake, http):
    fake.sandbox.thetradedesk.refuse(TDIDS[:2])
    batch = mutations(*TDIDS[:2])

    with pytest.raises(PartialFailure) as raised:
        ttd(fake, http).add_users(AUDIENCE, batch)

    assert set(raised.value.failed) == {m.id for m in batch}
    assert rejections(fake) == []  # answered 400 with FailedLines, not refused whole


@pytest.mark.parametrize(
    "status, line",
    [
        pytest.param(200, {"ItemNumber": "2"}, id="200-string-item-number"),
        pytest.param(200, {"ItemNumber": 2}, id="200-integer-item-number"),
        pytest.param(400, {"ItemNumber": " 2 "}, id="400-padded-item-number"),
        pytest.param(200, {"TDID": TDIDS[1].upper()}, id="no-item-number-matched-by-tdid"),
        pytest.param(200, {"Message": "Invalid DAID, item #2"}, id="recorded-item-in-the-message"),
        pytest.param(200, {"ItemNumber": "7", "Message": "Invalid DAID, item #2"}, id="number-out-of-range-then-message"),
        pytest.param(200, {"Message": "bad, item #9", "TDID": TDIDS[1]}, id="message-out-of-range-then-tdid"),
    ],
)
def test_failed_lines_are_numbered_from_one(fake, http, status, line):
    fake.fail_next(status, body={"FailedLines": [{"ErrorCode": "MissingUserId", "Message": "bad", **line}]})
    batch = mutations(*TDIDS[:3])

    with pytest.raises(PartialFailure) as raised:
        ttd(fake, http).add_users(AUDIENCE, batch)

    assert list(raised.value.failed) == [batch[1].id]
    assert raised.value.failed[batch[1].id].startswith("MissingUserId: ")


def test_the_recorded_answer_fails_only_its_item(fake, http):
    fake.fail_next(200, body={"FailedLines": [{"ErrorCode": "MissingUserId", "Message": "Invalid DAID, item #1"}]})
    batch = mutations(*TDIDS[:3])

    with pytest.raises(PartialFailure) as raised:
        ttd(fake, http).add_users(AUDIENCE, batch)

    assert raised.value.failed == {batch[0].id: "MissingUserId: Invalid DAID, item #1"}


@pytest.mark.parametrize("status", [200, 400])
def test_a_failed_line_naming_no_item_is_logged_and_fails_nothing(fake, http, caplog, status):
    fake.fail_next(status, body={"FailedLines": [{"ErrorCode": "Unknown", "ItemNumber": "7", "Message": "odd"}]})

    ttd(fake, http).add_users(AUDIENCE, mutations(*TDIDS[:2]))

    [record] = [r for r in caplog.records if "names no item" in r.getMessage()]
    assert record.levelname == "WARNING" and "Unknown: odd" in record.getMessage()


@pytest.mark.parametrize(
    "body, error, reason",
    [
        pytest.param({"FailedLines": [{"ErrorCode": "InvalidTtlInMinutes", "ItemNumber": "1"}]},
                     PartialFailure, "InvalidTtlInMinutes", id="with-failed-lines"),
        pytest.param("Invalid JSON", PermanentError, "HTTP 400: Invalid JSON", id="plain-text"),
        pytest.param({"FailedLines": []}, PermanentError, "HTTP 400", id="empty-failed-lines"),
    ],
)
def test_a_400_is_partial_with_failed_lines_and_permanent_without(fake, http, body, error, reason):
    fake.fail_next(400, body=body)

    with pytest.raises(error) as raised:
        ttd(fake, http).add_users(AUDIENCE, mutations(TDIDS[0]))

    assert type(raised.value) is error
    assert reason in raised.value.message


# Transport answers

@pytest.mark.parametrize(
    "fake_options, target_settings",
    [
        pytest.param({}, {}, id="scripted-413"),
        pytest.param({"ttd_max_bytes": 300}, {"max_bytes": "100000"}, id="over-the-platforms-byte-limit"),
    ],
)
def test_a_413_is_payload_too_large(start_ttd, http, fake_options, target_settings):
    fake = start_ttd(**fake_options)
    if not fake_options:
        fake.fail_next(413)

    with pytest.raises(PayloadTooLarge):
        ttd(fake, http, **target_settings).add_users(AUDIENCE, mutations(*TDIDS[:3]))


@pytest.mark.parametrize(
    "headers, retry_after",
    [
        pytest.param({"Retry-After": "30"}, 30.0, id="seconds"),
        pytest.param({"Retry-After": "Fri, 27 Nov 2026 05:35:21 GMT"}, 60.0, id="http-date"),
        pytest.param({}, None, id="none"),
    ],
)
def test_a_429_is_transient_with_retry_after(fake, http, headers, retry_after):
    fake.fail_next(429, headers=headers)

    with pytest.raises(TransientError) as raised:
        ttd(fake, http).add_users(AUDIENCE, mutations(TDIDS[0]))

    assert raised.value.retry_after == retry_after


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_is_transient_and_the_retry_succeeds(fake, http, status):
    fake.fail_next(status)
    target = ttd(fake, http)

    with pytest.raises(TransientError):
        target.add_users(AUDIENCE, mutations(TDIDS[0]))
    target.add_users(AUDIENCE, mutations(TDIDS[0]))

    assert ttd_members(fake) == {"mapp_42_4711": {TDIDS[0]}}


# Splitting by bytes

def test_a_body_over_max_bytes_is_sent_as_several_signed_requests(signing_fake, http):
    ttd(signing_fake, http, max_bytes="1000").add_users(AUDIENCE, mutations(*TDIDS))

    bodies = [body for _, body in received(signing_fake)]
    assert len(bodies) > 1 and all(len(body) <= 1000 for body in bodies)
    assert [i["TDID"] for r in requests(signing_fake) for i in r["Items"]] == TDIDS
    assert rejections(signing_fake) == []
    assert ttd_members(signing_fake) == {"mapp_42_4711": set(TDIDS)}


def test_failed_lines_of_a_later_request_map_to_its_own_items(fake, http):
    batch = mutations(*TDIDS)
    bodies = build_requests("adv1", "mapp_42_4711", batch, 43200, max_bytes=1000)
    second = bodies[1][1]
    fake.sandbox.thetradedesk.refuse([second[0].external_user_id])

    with pytest.raises(PartialFailure) as raised:
        ttd(fake, http, max_bytes="1000").add_users(AUDIENCE, batch)

    assert raised.value.failed == {second[0].id: "MissingUserId: Refused by the sandbox, item #1"}


def test_a_403_between_the_requests_of_a_batch_holds_it_and_dead_letters_nothing(
        fake, tmp_path, clock):
    service = ttd_service(fake, tmp_path, clock, max_bytes="1000")
    try:
        batch = [ReceivedMutation("4711", tdid) for tdid in TDIDS]
        fake.fail_next(403, body={"ErrorCode": "TargetingDataLimitReached", "Message": "limit"}, after=1)
        service.outbox.enqueue("ttd", ADD, batch, pass_through=False, now=clock())
        for _ in range(5):
            service.dispatcher.run_once()

        assert service.outbox.counts("ttd") == {"pending": len(TDIDS), "done": 0, "dead": 0}
        assert 0 < len(ttd_members(fake)["mapp_4711"]) < len(TDIDS), "the first request was applied"
        clock.advance(3600)
        for _ in range(5):
            service.dispatcher.run_once()
        assert service.outbox.counts("ttd") == {"pending": 0, "done": len(TDIDS), "dead": 0}
        assert ttd_members(fake) == {"mapp_4711": set(TDIDS)}
    finally:
        service.close()


def test_a_request_refused_whole_fails_only_its_items_when_others_passed(fake, http):
    batch = mutations(*TDIDS)
    first = build_requests("adv1", "mapp_42_4711", batch, 43200, max_bytes=1000)[0][1]
    fake.fail_next(400, body="Bad Request")

    with pytest.raises(PartialFailure) as raised:
        ttd(fake, http, max_bytes="1000").add_users(AUDIENCE, batch)

    assert set(raised.value.failed) == {m.id for m in first}
    assert ttd_members(fake) == {"mapp_42_4711": set(TDIDS) - {m.external_user_id for m in first}}


@pytest.mark.parametrize("max_bytes", [256, 300, 1000, 2_500_000])
def test_build_requests_keeps_order_and_every_body_within_max_bytes(max_bytes):
    batch = mutations(*TDIDS)

    requests = build_requests("adv1", "mapp_42_4711", batch, 43200, max_bytes=max_bytes)

    assert [m for _, chunk in requests for m in chunk] == batch
    for body, chunk in requests:
        assert len(body) <= max_bytes
        assert [i["TDID"] for i in json.loads(body)["Items"]] == [m.external_user_id for m in chunk]


def test_build_requests_fills_a_body_to_exactly_max_bytes():
    batch = mutations(*TDIDS[:2])
    [(whole, _)] = build_requests("adv1", "s", batch, 1)

    assert len(build_requests("adv1", "s", batch, 1, max_bytes=len(whole))) == 1
    assert len(build_requests("adv1", "s", batch, 1, max_bytes=len(whole) - 1)) == 2


# Audiences and settings

class NoHttp:
    def request(self, *args, **kwargs):
        raise AssertionError("create_audience must not make a request")


@pytest.mark.parametrize(
    "prefix, customer, dmp_id, expected",
    [
        pytest.param(None, 42, "4711", "mapp_42_4711", id="plain"),
        pytest.param(None, None, "4711", "mapp_4711", id="no-customer"),
        pytest.param("acme", 42, "a5940e473cea659.356693871497425011", "acme_42_a5940e473cea659.356693871497425011",
                     id="dotted-dmp-id"),
        pytest.param(None, 42, "Sommer käufer/2", "mapp_42_Sommer_k_ufer_2", id="unsafe-characters"),
    ],
)
def test_create_audience_is_a_deterministic_name_without_http(prefix, customer, dmp_id, expected):
    settings = {"base_url": "https://use-data.adsrvr.org", "advertiser_id": "adv1", "token": "t"}
    if prefix:
        settings["segment_prefix"] = prefix
    target = TheTradeDeskTarget(settings, NoHttp())
    audience = Audience("ttd", dmp_id, "Summer buyers", customer)

    assert target.create_audience(audience) == target.create_audience(audience) == expected
    assert segment_name(prefix or "mapp", customer, dmp_id) == expected


VALID = {"base_url": "https://use-data.adsrvr.org", "advertiser_id": "adv1", "token": "tok-SECRET-1"}
SIGNED = {"base_url": "https://use-data.adsrvr.org", "advertiser_id": "adv1", "auth": "signature",
          "secret": "sec-SECRET-2"}


@pytest.mark.parametrize(
    "settings, key",
    [
        pytest.param({**VALID, "url": "https://x"}, "url", id="unknown-key"),
        pytest.param({**VALID, "base_url": ""}, "base_url", id="base-url-missing"),
        pytest.param({**VALID, "base_url": "ftp://use-data.adsrvr.org"}, "base_url", id="base-url-scheme"),
        pytest.param({**VALID, "base_url": "https://u:tok-SECRET-1@h"}, "base_url", id="base-url-credentials"),
        pytest.param({k: v for k, v in VALID.items() if k != "advertiser_id"}, "advertiser_id",
                     id="advertiser-missing"),
        pytest.param({**VALID, "auth": "oauth"}, "auth", id="auth-unknown"),
        pytest.param({**VALID, "token": ""}, "token", id="token-missing"),
        pytest.param({**VALID, "token": "tok SECRET\n1"}, "token", id="token-not-one-word"),
        pytest.param({**VALID, "secret": "sec-SECRET-2"}, "secret", id="secret-with-token-auth"),
        pytest.param({**SIGNED, "token": "tok-SECRET-1"}, "token", id="token-with-signature-auth"),
        pytest.param({**SIGNED, "secret": ""}, "secret", id="secret-missing"),
        pytest.param({**SIGNED, "data_provider_id": "mapp"}, "data_provider_secret", id="dp-secret-missing"),
        pytest.param({**SIGNED, "data_provider_secret": "dp-SECRET-3"}, "data_provider_id", id="dp-id-missing"),
        pytest.param({**VALID, "ttl_minutes": "0"}, "ttl_minutes", id="ttl-zero"),
        pytest.param({**VALID, "ttl_minutes": "259201"}, "ttl_minutes", id="ttl-over-180-days"),
        pytest.param({**VALID, "max_batch": "10001"}, "max_batch", id="max-batch-over-10000"),
        pytest.param({**VALID, "max_bytes": "100"}, "max_bytes", id="max-bytes-too-small"),
        pytest.param({**VALID, "timeout": "-1"}, "timeout", id="timeout-negative"),
        pytest.param({**VALID, "segment_prefix": "my prefix"}, "segment_prefix", id="prefix-unsafe"),
    ],
)
def test_bad_settings_name_the_key_and_never_a_secret(settings, key):
    with pytest.raises(TargetConfigError) as raised:
        TheTradeDeskTarget(settings, NoHttp())

    assert raised.value.key == key
    assert f"target.{key}" in str(raised.value)
    assert "SECRET" not in str(raised.value)


def test_defaults_and_the_builtin_name():
    target = TheTradeDeskTarget(VALID, NoHttp())

    assert load_target_class("thetradedesk") is TheTradeDeskTarget
    assert "thetradedesk" in BUILTIN
    assert (target.url, target.ttl_minutes, target.max_batch, target.max_bytes, target.timeout) == (
        "https://use-data.adsrvr.org/data/advertiser", 43200, 10000, 2_500_000, 10.0)


# Through the real dispatcher

def ttd_service(fake, tmp_path, clock, **settings):
    integration = {"path": "/ttd", "hmac_secrets": "s3cr3t", "target": "thetradedesk",
                   **{f"target.{key}": value for key, value in {**ttd_settings(fake), **settings}.items()}}
    config = make_config(tmp_path, fake.url, sections={"integration:ttd": integration})
    return Service(config, clock=clock)


def test_the_dispatcher_dead_letters_exactly_the_refused_mutations(fake, tmp_path, clock):
    fake.sandbox.thetradedesk.refuse([TDIDS[2]])
    service = ttd_service(fake, tmp_path, clock)
    try:
        users = [*TDIDS[:4], "not-a-uuid"]
        service.outbox.enqueue("ttd", ADD, [ReceivedMutation("4711", user) for user in users],
                               pass_through=False, now=clock())
        for _ in range(5):  # create the audience (no HTTP), then deliver the batch
            service.dispatcher.run_once()

        dead = {row[4]: row[5] for row in service.outbox.dead_letters("ttd")}
        assert dead == {TDIDS[2]: "MissingUserId: Refused by the sandbox, item #3",
                        "not-a-uuid": "MissingUserId: Invalid TDID, item #5"}
        assert service.outbox.counts("ttd") == {"pending": 0, "done": 3, "dead": 2}
        assert service.outbox.audience("ttd", "4711").target_id == "mapp_4711"
        assert ttd_members(fake) == {"mapp_4711": {TDIDS[0], TDIDS[1], TDIDS[3]}}
        assert len(requests(fake)) == 1
    finally:
        service.close()
