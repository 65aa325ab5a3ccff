"""The sandbox (`diy-wsgi sandbox`): a fake webhook receiver, Trade Desk and Criteo on loopback.

Each test starts a real sandbox server in a thread on port 0 and talks to it over HTTP, with
http.client or with our real targets; clocks, random sources and sleeps are injected, so
nothing here waits for time to pass.
"""
import calendar
import http.client
import json
import logging
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from urllib.parse import urlencode

import pytest

from diy.sandbox import (
    DEFAULT_CRITEO_CLIENT_ID,
    DEFAULT_CRITEO_CLIENT_SECRET,
    DEFAULT_TTD_SECRET,
    DEFAULT_TTD_TOKEN,
    DEFAULT_WEBHOOK_SECRET,
    SandboxConfigError,
    settings_from_flags,
)
from diy.sandbox.faults import Decision, FaultSettings, Outage, Window, decide, parse_duration
from diy.sandbox.thetradedesk import sign as ttd_sign
from targets.base import ADD, REMOVE, Audience, Mutation
from targets.errors import PartialFailure
from targets.http import HttpClient
from targets.webhook import WebhookTarget, sign
from tests.processes import ROOT, Diy, free_port, wait_for_port, wait_until

OTHER_SECRET = "whsec_b3RoZXIta2V5LW5vdC10aGUtc2FuZGJveGVz"
TDID_1 = "df2df528-e032-4851-b7c6-99287c7d6bce"
TDID_2 = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
SEGMENTS = "/2026-07/marketing-solutions/audience-segments"
SEARCH = {"data": {"attributes": {"audienceSegmentTypes": ["ContactList"], "advertiserIds": ["12345"]}}}


# Starting sandboxes and talking to them.

@pytest.fixture
def sandbox(start_sandbox):
    return start_sandbox()


@pytest.fixture
def http_client():
    client = HttpClient(timeout=5)
    yield client
    client.close()


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def call(server, method, path, body=None, headers=None):
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def audiences(server):
    return call(server, "GET", "/api/audiences").json()


def post_event(server, event, message_id, secret=DEFAULT_WEBHOOK_SECRET):
    body = json.dumps(event).encode()
    timestamp = int(time.time())
    return call(server, "POST", "/webhook", body, {
        "content-type": "application/json", "webhook-id": message_id,
        "webhook-timestamp": str(timestamp), "webhook-signature": sign(secret, message_id, timestamp, body)})


def members_event(kind, dmp_id, *users):
    return {"type": f"audience.members_{kind}", "timestamp": "2026-11-27T05:34:21Z", "data": {
        "integration": "shop", "audience": {"id": None, "dmp_id": dmp_id, "name": None, "customer": 1},
        "members": [{"external_user_id": user} for user in users]}}


def ttd_upload(*items, advertiser="adv1"):
    return {"AdvertiserId": advertiser, "Items": [
        {"TDID": tdid, "Data": [{"Name": segment, "TtlInMinutes": ttl}]} for tdid, segment, ttl in items]}


def criteo_token(server):
    form = urlencode({"grant_type": "client_credentials", "client_id": DEFAULT_CRITEO_CLIENT_ID,
                      "client_secret": DEFAULT_CRITEO_CLIENT_SECRET}).encode()
    answer = call(server, "POST", "/oauth2/token", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status == 200, answer.body
    return answer.json()["access_token"]


def criteo(server, method, path, body, token):
    return call(server, method, path, body, {"Authorization": f"Bearer {token}"})


def criteo_create(server, token, name, advertiser="12345"):
    return criteo(server, "POST", f"{SEGMENTS}/create", {"data": [{"type": "AudienceSegment", "attributes": {
        "advertiserId": advertiser, "name": name, "description": "", "contactList": {}}}]}, token)


def criteo_amend(server, token, segment_id, operation, *identifiers):
    return criteo(server, "PATCH", f"{SEGMENTS}/{segment_id}/contact-list", {"data": {
        "type": "ContactlistAmendment", "attributes": {
            "operation": operation, "identifierType": "gum", "gumCallerId": 1,
            "identifiers": list(identifiers)}}}, token)


def mutations(op, *users, first_id=1):
    return [Mutation(id=first_id + index, op=op, external_user_id=user) for index, user in enumerate(users)]


SUMMER = Audience(integration="shop", dmp_id="a5940e473cea659.356693871497425011", name="Summer buyers", customer=123)


# The webhook receiver.

def test_the_webhook_target_creates_an_audience_and_moves_its_members(sandbox, http_client):
    target = WebhookTarget({"url": f"{sandbox.url}/webhook", "secret": DEFAULT_WEBHOOK_SECRET}, http_client)

    receiver_id = target.create_audience(SUMMER)
    audience = Audience(**{**SUMMER.__dict__, "target_id": receiver_id})
    target.add_users(audience, mutations(ADD, "u1", "u2", "u3"))
    target.remove_users(audience, mutations(REMOVE, "u2", first_id=4))

    assert re.fullmatch(r"sbx-\d+", receiver_id)
    assert audiences(sandbox)["webhook"] == {
        SUMMER.dmp_id: {"id": receiver_id, "name": "Summer buyers", "members": ["u1", "u3"]}}


def created_ids(server):
    """The ids of one new webhook audience and one new Criteo segment."""
    answer = post_event(server, {"type": "audience.created", "timestamp": "2026-11-27T05:34:21Z",
                                 "data": {"integration": "shop", "audience": {"dmp_id": "a1", "name": "A"}}},
                        f"msg_{time.monotonic_ns()}")
    segment = criteo_create(server, criteo_token(server), "seg").json()["data"][0]["id"]
    return [answer.json()["id"], segment]


def test_ids_are_never_handed_out_again_after_a_reset(sandbox):
    before = created_ids(sandbox)

    call(sandbox, "POST", "/api/reset")

    assert set(created_ids(sandbox)).isdisjoint(before)


def test_ids_are_never_handed_out_again_after_a_restart(start_sandbox):
    """A restarted sandbox that answered `sbx-1` again would have diy-wsgi, which still maps
    sbx-1 to the old audience, send both audiences' users to the new one."""
    before = created_ids(start_sandbox())

    assert set(created_ids(start_sandbox())).isdisjoint(before)


def test_a_webhook_with_a_wrong_signature_is_refused_and_not_applied(sandbox):
    answer = post_event(sandbox, members_event("added", "a1", "u1"), "msg_1", secret=OTHER_SECRET)

    assert answer.status == 401
    assert audiences(sandbox)["webhook"] == {}


def test_a_repeated_webhook_id_is_applied_once(sandbox):
    post_event(sandbox, members_event("added", "a1", "u1"), "msg_add")
    post_event(sandbox, members_event("removed", "a1", "u1"), "msg_remove")

    again = post_event(sandbox, members_event("added", "a1", "u1"), "msg_add")

    assert again.status == 200
    assert audiences(sandbox)["webhook"]["a1"]["members"] == []


def signed_headers(body, message_id, secret=DEFAULT_WEBHOOK_SECRET):
    timestamp = int(time.time())
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, message_id, timestamp, body)}


@pytest.mark.parametrize("event, content_type", [
    ({k: v for k, v in members_event("added", "a1", "u1").items() if k != "timestamp"}, "application/json"),
    ({**members_event("added", "a1", "u1"), "data": {"audience": {"dmp_id": "a1"}, "members": []}},
     "application/json"),
    (members_event("added", "a1", "u1"), "text/plain"),
], ids=["no-timestamp", "no-integration", "not-json-content-type"])
def test_the_webhook_refuses_an_event_not_of_the_documented_shape(sandbox, event, content_type):
    body = json.dumps(event).encode()

    answer = call(sandbox, "POST", "/webhook", body, {"content-type": content_type, **signed_headers(body, "m1")})

    assert answer.status == 400
    assert audiences(sandbox)["webhook"] == {}


def test_the_webhook_refuses_members_sent_under_another_id_than_it_gave(sandbox):
    created = {"type": "audience.created", "timestamp": "2026-11-27T05:34:21Z",
               "data": {"integration": "shop", "audience": {"id": None, "dmp_id": "a1", "name": None}}}
    given = post_event(sandbox, created, "m1").json()["id"]
    wrong = members_event("added", "a1", "u1")
    wrong["data"]["audience"]["id"] = "sbx-elsewhere"
    right = members_event("added", "a1", "u2")
    right["data"]["audience"]["id"] = given

    assert post_event(sandbox, wrong, "m2").status == 400
    assert post_event(sandbox, right, "m3").status == 200
    assert audiences(sandbox)["webhook"]["a1"]["members"] == ["u2"]


def test_the_webhook_answers_413_over_its_member_limit(start_sandbox):
    server = start_sandbox(webhook_max_members=2)

    over = post_event(server, members_event("added", "a1", "u1", "u2", "u3"), "m1")
    within = post_event(server, members_event("added", "a1", "u1", "u2"), "m2")

    assert (over.status, within.status) == (413, 200)
    assert audiences(server)["webhook"]["a1"]["members"] == ["u1", "u2"]


# The Trade Desk.

def test_the_trade_desk_names_a_malformed_tdid_in_failed_lines_and_applies_the_rest(sandbox):
    upload = ttd_upload((TDID_1, "mapp_1_a1", 43200), ("not-a-uuid", "mapp_1_a1", 43200))

    answer = call(sandbox, "POST", "/data/advertiser", upload, {"TTD-Auth": DEFAULT_TTD_TOKEN})

    assert answer.status == 200
    assert answer.json() == {"FailedLines": [{"ErrorCode": "MissingUserId", "Message": "Invalid TDID, item #2"}]}
    assert audiences(sandbox)["thetradedesk"] == {"mapp_1_a1": {"advertiser_ids": ["adv1"], "members": [TDID_1]}}


def test_the_trade_desk_removes_a_tdid_uploaded_with_ttl_zero(sandbox):
    headers = {"TTD-Auth": DEFAULT_TTD_TOKEN}
    call(sandbox, "POST", "/data/advertiser", ttd_upload((TDID_1, "seg", 60), (TDID_2, "seg", 60)), headers)

    answer = call(sandbox, "POST", "/data/advertiser", ttd_upload((TDID_1, "seg", 0)), headers)

    assert (answer.status, answer.json()) == (200, {})
    assert audiences(sandbox)["thetradedesk"]["seg"]["members"] == [TDID_2]


@pytest.mark.parametrize("headers, status", [
    (lambda body: {"TTD-Auth": DEFAULT_TTD_TOKEN}, 200),
    (lambda body: {"TtdSignature": ttd_sign(DEFAULT_TTD_SECRET, body)}, 200),
    (lambda body: {"TTD-Auth": "wrong-token"}, 401),
    (lambda body: {"TtdSignature": ttd_sign("wrong-secret", body)}, 401),
    (lambda body: {}, 401),
], ids=["token", "signature", "wrong-token", "wrong-signature", "no-credentials"])
def test_the_trade_desk_takes_its_token_or_a_body_signature(sandbox, headers, status):
    body = json.dumps(ttd_upload((TDID_1, "seg", 60))).encode()

    answer = call(sandbox, "POST", "/data/advertiser", body, {"Content-Type": "application/json", **headers(body)})

    assert answer.status == status


def test_the_trade_desk_refuses_a_body_over_2_5_mb_with_413_whatever_its_item_count(sandbox):
    headers = {"TTD-Auth": DEFAULT_TTD_TOKEN}
    many = call(sandbox, "POST", "/data/advertiser", ttd_upload(*[(TDID_1, "seg", 60)] * 10_001), headers)
    large = call(sandbox, "POST", "/data/advertiser", ttd_upload((TDID_2, "s" * 2_500_000, 60)), headers)

    assert (many.status, large.status) == (200, 413)
    assert audiences(sandbox)["thetradedesk"] == {"seg": {"advertiser_ids": ["adv1"], "members": [TDID_1]}}


TTD_JSON = {"TTD-Auth": DEFAULT_TTD_TOKEN, "Content-Type": "application/json"}


@pytest.mark.parametrize("upload, headers, status, said", [
    (ttd_upload((TDID_1, "seg", 60)), {"TTD-Auth": DEFAULT_TTD_TOKEN, "Content-Type": "text/plain"}, 400,
     "SerializationFailed"),
    ({**ttd_upload((TDID_1, "seg", 60)), "Extra": 1}, TTD_JSON, 400, "SerializationFailed"),
    ({"AdvertiserId": "adv1", "Items": []}, TTD_JSON, 400, "MissingData"),
    ({**ttd_upload((TDID_1, "seg", 60)), "DataProviderId": 7}, TTD_JSON, 400, "IncorrectContent"),
    (ttd_upload((TDID_1, "seg", 60), advertiser="adv2"), TTD_JSON, 403, "AdvertiserMisconfigured"),
    ({**ttd_upload((TDID_1, "seg", 60)), "DataProviderId": "dp"}, TTD_JSON, 403, "DataProviderMisconfigured"),
], ids=["content-type", "unknown-key", "no-items", "data-provider-not-a-string", "other-advertiser",
        "unknown-data-provider"])
def test_the_trade_desk_refuses_an_upload_it_would_not_process(sandbox, upload, headers, status, said):
    answer = call(sandbox, "POST", "/data/advertiser", json.dumps(upload).encode(), headers)

    assert (answer.status, said in answer.body.decode()) == (status, True)
    assert audiences(sandbox)["thetradedesk"] == {}


def test_the_trade_desk_fails_an_item_of_unknown_keys_alone(sandbox):
    upload = ttd_upload((TDID_1, "seg", 60), (TDID_2, "seg", 60))
    upload["Items"][1]["Cookie"] = "x"

    answer = call(sandbox, "POST", "/data/advertiser", upload, {"TTD-Auth": DEFAULT_TTD_TOKEN})

    assert answer.json() == {"FailedLines": [
        {"ErrorCode": "ItemDeserializationError", "Message": "an item must be a JSON object of known keys, item #2"}]}
    assert audiences(sandbox)["thetradedesk"]["seg"]["members"] == [TDID_1]


def test_the_trade_desk_refuses_a_new_segment_over_its_limit(start_sandbox):
    server = start_sandbox(ttd_segment_limit=1)
    headers = {"TTD-Auth": DEFAULT_TTD_TOKEN}

    first = call(server, "POST", "/data/advertiser", ttd_upload((TDID_1, "seg", 60)), headers)
    again = call(server, "POST", "/data/advertiser", ttd_upload((TDID_2, "seg", 60)), headers)
    second = call(server, "POST", "/data/advertiser", ttd_upload((TDID_1, "other", 60)), headers)

    assert (first.status, again.status, second.status) == (200, 200, 403)
    assert second.json()["ErrorCode"] == "TargetingDataLimitReached"


def test_the_trade_desk_target_adds_and_reports_a_malformed_tdid(sandbox, http_client):
    thetradedesk = pytest.importorskip("targets.thetradedesk")
    target = thetradedesk.TheTradeDeskTarget(
        {"base_url": sandbox.url, "advertiser_id": "adv1", "token": DEFAULT_TTD_TOKEN}, http_client)
    segment = target.create_audience(SUMMER)
    audience = Audience(**{**SUMMER.__dict__, "target_id": segment})

    with pytest.raises(PartialFailure) as failure:
        target.add_users(audience, mutations(ADD, TDID_1, "not-a-uuid", TDID_2))

    assert set(failure.value.failed) == {2}
    assert audiences(sandbox)["thetradedesk"][segment]["members"] == sorted([TDID_1, TDID_2])


# Criteo.

def test_criteo_creates_a_segment_and_warns_of_a_second_of_the_same_name(sandbox):
    token = criteo_token(sandbox)

    first = criteo_create(sandbox, token, "mapp Summer buyers (a1)")
    second = criteo_create(sandbox, token, "mapp Summer buyers (a1)")

    assert first.status == 200 and first.json()["data"][0]["id"].isdigit()
    assert (second.status, second.json()["data"], second.json()["errors"]) == (200, [], [])
    assert second.json()["warnings"][0]["code"] == "name-must-be-unique"


def test_criteo_search_pages_with_limit_offset_and_total_items(sandbox):
    token = criteo_token(sandbox)
    for name in ("one", "two", "three"):
        criteo_create(sandbox, token, name)
    criteo_create(sandbox, token, "another advertiser's", advertiser="999")
    query = {"data": {"attributes": {"audienceSegmentTypes": ["ContactList"], "advertiserIds": ["12345"]}}}

    page = criteo(sandbox, "POST", f"{SEGMENTS}/search?limit=2&offset=2", query, token).json()

    assert [segment["attributes"]["name"] for segment in page["data"]] == ["three"]
    assert page["meta"] == {"totalItems": 3, "limit": 2, "offset": 2}


def test_criteo_adds_and_removes_contact_list_identifiers(sandbox):
    token = criteo_token(sandbox)
    segment_id = criteo_create(sandbox, token, "seg").json()["data"][0]["id"]
    criteo_amend(sandbox, token, segment_id, "add", "111", "222", "")

    answer = criteo_amend(sandbox, token, segment_id, "remove", "111")

    assert answer.json()["data"]["attributes"]["nbValidIdentifiers"] == 1
    assert audiences(sandbox)["criteo"] == {segment_id: {"name": "seg", "advertiser_id": "12345", "members": ["222"]}}


def test_criteo_reports_invalid_identifiers(sandbox):
    token = criteo_token(sandbox)
    segment_id = criteo_create(sandbox, token, "seg").json()["data"][0]["id"]

    attributes = criteo_amend(sandbox, token, segment_id, "add", "111", "has space").json()["data"]["attributes"]

    assert (attributes["nbValidIdentifiers"], attributes["nbInvalidIdentifiers"]) == (1, 1)
    assert attributes["sampleInvalidIdentifiers"] == ["has space"]


def test_criteo_answers_404_segment_not_found_for_an_unknown_segment(sandbox):
    answer = criteo_amend(sandbox, criteo_token(sandbox), "4711", "add", "111")

    assert answer.status == 404
    assert answer.json()["errors"][0]["code"] == "segment-not-found"


def test_criteo_takes_more_than_50000_identifiers(sandbox):
    token = criteo_token(sandbox)
    segment_id = criteo_create(sandbox, token, "seg").json()["data"][0]["id"]

    answer = criteo_amend(sandbox, token, segment_id, "add", *(str(n) for n in range(50_001)))

    assert answer.status == 200


@pytest.mark.parametrize(
    "today, status, headers",
    [
        ("2026-10-01", 200, {}),
        ("2026-12-03", 200, {"deprecation": "true", "sunset": "Wed, 27 Jan 2027 00:00:00 GMT"}),
        ("2027-01-27", 410, {}),
    ],
    ids=["before-its-last-3-months", "in-its-last-3-months", "after-its-sunset"],
)
def test_criteo_announces_then_retires_an_api_version(start_sandbox, clock, today, status, headers):
    clock.now = calendar.timegm(time.strptime(today, "%Y-%m-%d"))
    sandbox = start_sandbox(clock=clock)

    answer = criteo(sandbox, "POST", "/2026-01/marketing-solutions/audience-segments/search", SEARCH,
                    criteo_token(sandbox))

    assert answer.status == status
    assert {k: v for k, v in answer.headers.items() if k in ("deprecation", "sunset")} == headers


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}], ids=["none", "unknown"])
def test_criteo_refuses_a_call_without_a_valid_token(sandbox, headers):
    answer = call(sandbox, "POST", f"{SEGMENTS}/search", SEARCH, headers)

    assert answer.status == 401
    assert answer.json()["errors"][0]["code"] == "authorization-token-invalid"


FORM = "application/x-www-form-urlencoded"
GRANT = {"grant_type": "client_credentials", "client_id": DEFAULT_CRITEO_CLIENT_ID,
         "client_secret": DEFAULT_CRITEO_CLIENT_SECRET}


@pytest.mark.parametrize("fields, content_type, status, error", [
    ({**GRANT, "client_secret": "wrong"}, FORM, 401, "invalid_client"),
    ({**GRANT, "grant_type": "password"}, FORM, 400, "unsupported_grant_type"),
    ({k: v for k, v in GRANT.items() if k != "client_secret"}, FORM, 400, "invalid_request"),
    (GRANT, "application/json", 400, "invalid_request"),
], ids=["wrong-secret", "another-grant", "missing-field", "not-form-encoded"])
def test_criteo_refuses_a_token_request_it_would_not_grant(sandbox, fields, content_type, status, error):
    answer = call(sandbox, "POST", "/oauth2/token", urlencode(fields).encode(), {"Content-Type": content_type})

    assert (answer.status, answer.json()["error"]) == (status, error)


def criteo_call(sandbox, path, body, content_type="application/json", method="POST"):
    headers = {"Authorization": f"Bearer {criteo_token(sandbox)}", "Content-Type": content_type}
    return call(sandbox, method, path, json.dumps(body).encode(), headers)


AMENDMENT = {"operation": "add", "identifierType": "gum", "gumCallerId": 1, "identifiers": ["g1"]}


@pytest.mark.parametrize("path, body, content_type, status, code", [
    (f"{SEGMENTS}/search", SEARCH, "text/plain", 400, "invalid-request"),
    ("/v1/marketing-solutions/audience-segments/search", SEARCH, "application/json", 404, "route-not-found"),
    (f"{SEGMENTS}/search?limit=0", SEARCH, "application/json", 400, "invalid-request"),
    (f"{SEGMENTS}/search", {"data": {"attributes": {"advertiserIds": ["12345"]}}}, "application/json", 400,
     "invalid-request"),
    (f"{SEGMENTS}/create", {"data": [{"type": "AudienceSegment", "attributes": {
        "advertiserId": "999", "name": "n", "contactList": {}}}]}, "application/json", 403, "access-denied"),
], ids=["not-json", "not-a-version", "search-limit-0", "search-without-segment-types", "another-advertiser"])
def test_criteo_refuses_a_call_it_would_not_serve(sandbox, path, body, content_type, status, code):
    answer = criteo_call(sandbox, path, body, content_type)

    assert (answer.status, answer.json()["errors"][0]["code"]) == (status, code)


@pytest.mark.parametrize("change", [
    {"type": "Amendment"},
    {"attributes": {**AMENDMENT, "identifierType": "email"}},
    {"attributes": {**AMENDMENT, "identifiers": []}},
    {"attributes": {**AMENDMENT, "identifiers": [7]}},
], ids=["not-an-amendment", "gum-caller-id-without-gum", "no-identifiers", "an-identifier-not-a-string"])
def test_criteo_refuses_a_malformed_contact_list_change(sandbox, change):
    token = criteo_token(sandbox)
    segment = criteo_create(sandbox, token, "seg").json()["data"][0]["id"]
    body = {"data": {"type": "ContactlistAmendment", "attributes": AMENDMENT, **change}}

    answer = criteo_call(sandbox, f"{SEGMENTS}/{segment}/contact-list", body, method="PATCH")

    assert (answer.status, answer.json()["errors"][0]["code"]) == (400, "invalid-request")


def test_a_criteo_token_expires_after_900_seconds(start_sandbox, clock):
    sandbox = start_sandbox(clock=clock)
    token = criteo_token(sandbox)
    clock.advance(900)

    answer = criteo(sandbox, "POST", f"{SEGMENTS}/search", SEARCH, token)

    assert answer.status == 401
    assert answer.json()["errors"][0]["code"] == "authorization-token-expired"


def test_criteo_answers_429_once_the_window_is_used_up_until_it_resets(start_sandbox, clock):
    sandbox = start_sandbox(clock=clock, criteo_rate_limit=2)
    token = criteo_token(sandbox)
    search = lambda: criteo(sandbox, "POST", f"{SEGMENTS}/search", SEARCH, token)  # noqa: E731

    answers = [search(), search(), search()]
    clock.advance(60)
    after_reset = search()

    assert [answer.status for answer in answers] == [200, 200, 429]
    assert [answer.headers["x-ratelimit-remaining"] for answer in answers] == ["1", "0", "0"]
    assert answers[2].headers["x-ratelimit-limit"] == "2"
    assert answers[2].headers["x-ratelimit-reset"] == str(int(clock.now))
    assert answers[2].json()["errors"][0]["code"] == "too-many-requests"
    assert after_reset.status == 200


def test_the_criteo_target_creates_once_and_moves_members(sandbox, http_client):
    criteo_module = pytest.importorskip("targets.criteo")
    settings = {"base_url": sandbox.url, "client_id": DEFAULT_CRITEO_CLIENT_ID,
                "client_secret": DEFAULT_CRITEO_CLIENT_SECRET, "advertiser_id": "12345", "gum_caller_id": "1"}

    segment_id = criteo_module.CriteoTarget(settings, http_client).create_audience(SUMMER)
    again = criteo_module.CriteoTarget(settings, http_client).create_audience(SUMMER)
    target = criteo_module.CriteoTarget(settings, http_client)
    audience = Audience(**{**SUMMER.__dict__, "target_id": segment_id})
    target.add_users(audience, mutations(ADD, "111", "222"))
    target.remove_users(audience, mutations(REMOVE, "111", first_id=3))

    assert again == segment_id
    assert audiences(sandbox)["criteo"][segment_id]["members"] == ["222"]


# Faults.

class ScriptedRandom:
    """A random source that returns the given draws in order."""

    def __init__(self, *draws):
        self.draws = list(draws)

    def random(self):
        return self.draws.pop(0)

    def uniform(self, low, high):
        return low + (high - low) * self.draws.pop(0)


@pytest.mark.parametrize("draw, expected", [
    (0.05, Decision(0.0, 503, "error")),
    (0.15, Decision(0.0, 429, "rate_limit", 7)),
    (0.25, Decision(0.0)),
], ids=["below-error-rate", "within-rate-limit-rate", "above-both"])
def test_one_draw_decides_between_error_throttling_and_success(draw, expected):
    settings = FaultSettings(error_rate=0.1, rate_limit_rate=0.1, retry_after=7)

    assert decide(settings, ScriptedRandom(draw), now=0) == expected


def test_faults_are_the_same_for_the_same_seed():
    settings = FaultSettings(error_rate=0.2, rate_limit_rate=0.2, latency=0.05, latency_jitter=0.05)

    def run(seed):
        source = random.Random(seed)
        return [decide(settings, source, now=0) for _ in range(50)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_latency_jitter_adds_a_random_part_to_the_latency():
    settings = FaultSettings(latency=0.05, latency_jitter=0.1)

    assert decide(settings, ScriptedRandom(0.5), now=0).delay == pytest.approx(0.1)


@pytest.mark.parametrize("now, status", [(1029.9, None), (1030, 503), (1089.9, 503), (1090, None)],
                         ids=["before", "start", "last-moment", "end"])
def test_an_outage_window_refuses_from_its_start_until_its_end(now, status):
    settings = FaultSettings(outages=(Outage(after=30, duration=60).window(origin=1000),))

    assert decide(settings, ScriptedRandom(), now).status == status


def test_an_outage_from_the_flags_counts_from_the_sandbox_start(start_sandbox, clock):
    sandbox = start_sandbox(clock=clock, outages=(Outage(after=30, duration=60),))
    token_before = criteo_token(sandbox)
    clock.advance(30)

    during = call(sandbox, "POST", "/oauth2/token", b"grant_type=client_credentials")
    view = call(sandbox, "GET", "/api/audiences")
    clock.advance(60)

    assert token_before
    assert during.status == 503
    assert view.status == 200
    assert criteo_token(sandbox)


def test_faults_set_at_runtime_apply_to_platform_calls_and_are_counted(sandbox):
    changed = call(sandbox, "POST", "/api/faults", {"rate_limit_rate": 1, "retry_after": "3s"})

    answer = post_event(sandbox, members_event("added", "a1", "u1"), "msg_1")

    assert changed.json()["rate_limit_rate"] == 1.0
    assert (answer.status, answer.headers["retry-after"]) == (429, "3")
    stats = call(sandbox, "GET", "/api/stats").json()
    assert stats["requests"]["webhook"] == {"429": 1}
    assert stats["faults"]["rate_limit"] == 1


def test_an_unknown_fault_field_is_refused(sandbox):
    answer = call(sandbox, "POST", "/api/faults", {"error_rte": 0.5})

    assert answer.status == 400
    assert "error_rte" in answer.json()["error"]


def test_latency_is_slept_before_the_platform_answers(start_sandbox):
    slept = []
    sandbox = start_sandbox(sleep=slept.append, faults=FaultSettings(latency=0.05))

    call(sandbox, "POST", "/data/advertiser", ttd_upload(), {"TTD-Auth": DEFAULT_TTD_TOKEN})
    call(sandbox, "GET", "/api/stats")

    assert slept == [0.05]


def hang_up(url, request):
    """Send `request` and reset the connection without waiting for the answer."""
    host, port = url.rsplit("/", 1)[-1].rsplit(":", 1)
    client = socket.create_connection((host, int(port)), timeout=10)
    client.sendall(request)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def test_a_client_that_gives_up_during_the_latency_is_one_debug_line_not_a_traceback(start_sandbox, capfd, caplog):
    hung_up = threading.Event()
    sandbox = start_sandbox(sleep=lambda seconds: hung_up.wait(10), faults=FaultSettings(latency=5))
    caplog.set_level(logging.DEBUG, logger="diy")

    hang_up(sandbox.url, b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}")
    hung_up.set()
    wait_until(lambda: any("client hung up" in r.getMessage() for r in caplog.records), what="the debug line")

    assert "Traceback" not in capfd.readouterr().err + caplog.text
    assert call(sandbox, "GET", "/api/stats").status == 200


def test_the_advertisers_the_platforms_take_are_flags():
    settings = settings_from_flags(ttd_advertiser_id="adv9", criteo_advertiser_id="777")

    assert (settings.ttd_advertiser_id, settings.criteo_advertiser_id) == ("adv9", "777")


@pytest.mark.parametrize("text, seconds", [("50ms", 0.05), ("1.5s", 1.5), ("2m", 120), ("1h", 3600), ("30", 30)],
                         ids=["ms", "s", "m", "h", "bare"])
def test_durations_are_read_with_units(text, seconds):
    assert parse_duration(text, "--latency") == pytest.approx(seconds)


@pytest.mark.parametrize("flags", [
    {"host": "0.0.0.0"}, {"webhook_secret": "not-whsec"}, {"error_rate": "1.5"},
    {"error_rate": "0.6", "rate_limit_rate": "0.6"}, {"latency": "soon"}, {"outages": ["30s"]},
    {"ttd_advertiser_id": " "}, {"criteo_advertiser_id": ""},
], ids=["not-loopback", "webhook-secret", "rate-above-1", "rates-above-1", "latency", "outage",
        "ttd-advertiser", "criteo-advertiser"])
def test_wrong_flags_are_refused_with_one_error(flags):
    with pytest.raises(SandboxConfigError):
        settings_from_flags(**flags)


def test_a_window_covers_its_start_but_not_its_end():
    assert Window(10, 20).covers(10) and not Window(10, 20).covers(20)


# The views.

def test_the_page_escapes_audience_names(sandbox):
    created = {"type": "audience.created", "timestamp": "2026-11-27T05:34:21Z", "data": {"integration": "shop", "audience": {
        "dmp_id": "a1", "name": "<script>alert(1)</script>", "customer": 1}}}
    post_event(sandbox, created, "msg_created")

    page = call(sandbox, "GET", "/")

    assert page.headers["content-type"].startswith("text/html")
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in page.body
    assert b"<script>" not in page.body


def test_reset_forgets_every_audience_and_count(sandbox):
    post_event(sandbox, members_event("added", "a1", "u1"), "msg_1")
    call(sandbox, "POST", "/data/advertiser", ttd_upload((TDID_1, "seg", 60)), {"TTD-Auth": DEFAULT_TTD_TOKEN})
    criteo_create(sandbox, criteo_token(sandbox), "seg")

    reset = call(sandbox, "POST", "/api/reset")

    assert reset.status == 200
    assert audiences(sandbox) == {"webhook": {}, "thetradedesk": {}, "criteo": {}}
    assert call(sandbox, "GET", "/api/stats").json()["requests"] == {"webhook": {}, "thetradedesk": {}, "criteo": {}}


def test_an_unknown_path_is_404_and_a_wrong_method_405(sandbox):
    assert call(sandbox, "GET", "/nothing").status == 404
    wrong_method = call(sandbox, "GET", "/webhook")
    assert (wrong_method.status, wrong_method.headers["allow"]) == (405, "POST")


# The command line.

def test_the_sandbox_command_starts_and_answers(tmp_path):
    port = free_port()
    process = Diy(tmp_path, "sandbox", "--port", port, name="sandbox")
    try:
        wait_for_port(port, process)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/api/audiences")
        response = connection.getresponse()
        document = json.loads(response.read())
        connection.close()
    finally:
        code = process.kill(signal.SIGTERM)

    assert (response.status, document) == (200, {"webhook": {}, "thetradedesk": {}, "criteo": {}})
    assert code == 0
    assert f"http://127.0.0.1:{port}/webhook" in process.output()


def test_the_sandbox_help_teaches_the_default_credentials_and_target_settings(capsys):
    from diy.cli import main

    with pytest.raises(SystemExit):
        main(["sandbox", "--help"])

    text = capsys.readouterr().out
    for default in (DEFAULT_WEBHOOK_SECRET, DEFAULT_TTD_TOKEN, DEFAULT_TTD_SECRET,
                    DEFAULT_CRITEO_CLIENT_ID, DEFAULT_CRITEO_CLIENT_SECRET):
        assert default in text
    assert "target.url = http://127.0.0.1:9000/webhook" in text


def test_the_service_never_imports_the_sandbox():
    code = ("import sys, diy_wsgi, diy.cli, diy.service, outbox.dispatcher, targets, targets.webhook\n"
            "diy.cli.build_parser()\n"
            "print('diy.sandbox' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert result.stdout.strip() == "False", result.stderr


# Browsers on this machine reach loopback too: other origins must not drive the sandbox.

def own_origin(server):
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example", "Content-Type": "text/plain"},
    {"Origin": "null", "Content-Type": "text/plain"},
    {"Origin": "http://localhost:3000", "Content-Type": "text/plain"},
    {"Host": "evil.example:9000", "Content-Type": "text/plain"},
    {"Host": "[::1", "Content-Type": "text/plain"},
], ids=["other-site", "opaque-origin", "other-local-port", "rebound-name", "malformed-host"])
def test_a_request_from_another_origin_is_refused_and_changes_nothing(sandbox, headers):
    """A `text/plain` POST is a "simple" request: a page of any site can send it without asking."""
    changed = call(sandbox, "POST", "/api/faults", b'{"error_rate": 1}', headers)
    reset = call(sandbox, "POST", "/api/reset", b"", headers)
    read = call(sandbox, "GET", "/api/audiences", None, headers)

    assert [answer.status for answer in (changed, reset, read)] == [403, 403, 403]
    assert "error" in changed.json()
    assert call(sandbox, "GET", "/api/faults").json()["error_rate"] == 0


@pytest.mark.parametrize("headers_for", [
    lambda server: {},
    lambda server: {"Host": f"localhost:{server.server_address[1]}"},
    lambda server: {"Origin": own_origin(server)},
], ids=["no-origin", "localhost", "same-origin"])
def test_requests_from_this_machine_and_the_sandboxs_own_page_are_served(sandbox, headers_for):
    answer = call(sandbox, "POST", "/api/faults", {"error_rate": 0.5}, headers_for(sandbox))

    assert answer.status == 200
    assert answer.json()["error_rate"] == 0.5
