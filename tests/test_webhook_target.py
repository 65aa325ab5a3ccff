"""WebhookTarget against a pytest-httpserver receiver on 127.0.0.1; signing; the registry."""
import base64
import hashlib
import hmac
import json

import pytest

from targets import BUILTIN, load_target_class
from targets.base import ADD, REMOVE, Audience, Mutation
from targets.errors import PayloadTooLarge, PermanentError, TargetConfigError, TransientError
from targets.http import HttpClient
from targets.webhook import SignatureError, WebhookTarget, sign, verify

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ROTATED_OUT = "whsec_c2VjcmV0LW9mLWEtcm90YXRlZC1lbmRwb2ludA=="
NOW = 1_795_757_661.0  # 2026-11-27T05:34:21Z
DMP_ID = "a5940e473cea659.356693871497425011"
AUDIENCE = Audience("shop", DMP_ID, "Sommerkäufer", 123, target_id="rcv-7")
MUTATIONS = (
    Mutation(11, ADD, "12478286329", uuid="ab043529-3e55-4672-52f0-18887ea12345",
             customer=123, platform=113, extra={"Segment_score": 0.9}),
    Mutation(12, ADD, "555", uuid="cd043529-3e55-4672-52f0-18887ea12345",
             customer=123, platform=113),
)


@pytest.fixture
def receiver(httpserver_ipv4):
    return httpserver_ipv4


@pytest.fixture
def http():
    client = HttpClient(timeout=5.0)
    yield client
    client.close()


def webhook(receiver, http, **extra_settings):
    settings = {"url": receiver.url_for("/hook"), "secret": SECRET, **extra_settings}
    return WebhookTarget(settings, http, clock=lambda: NOW)


def received(receiver):
    """(headers, body) of each request the receiver got, in order."""
    return [(request.headers, request.get_data()) for request, _ in receiver.log]


def accept(receiver):
    receiver.expect_request("/hook", method="POST").respond_with_data("", status=204)


def test_signature_verifies_and_matches_an_independent_computation(receiver, http):
    accept(receiver)

    webhook(receiver, http).add_users(AUDIENCE, MUTATIONS)

    [(headers, body)] = received(receiver)
    verify([SECRET], dict(headers), body, now=NOW)
    key = base64.b64decode(SECRET[len("whsec_"):])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    mac = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{mac}"


def test_sign_matches_the_standard_webhooks_reference_vector():
    signature = sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')

    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def signed_headers(body=b"{}", secret=SECRET, timestamp=int(NOW)):
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, "msg_1", timestamp, body),
    }


def test_verify_accepts_any_signature_under_any_rotated_secret():
    headers = signed_headers()
    headers["webhook-signature"] = "v1a,ignored v1,bm90IGl0 " + headers["webhook-signature"]

    verify([ROTATED_OUT, SECRET], headers, b"{}", now=NOW)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda h: h.pop("webhook-id"), id="missing-id"),
        pytest.param(lambda h: h.pop("webhook-timestamp"), id="missing-timestamp"),
        pytest.param(lambda h: h.pop("webhook-signature"), id="missing-signature"),
        pytest.param(lambda h: h.update({"webhook-signature": None}), id="header-not-text"),
        pytest.param(lambda h: h.update({"webhook-timestamp": "1e9"}), id="timestamp-not-digits"),
        pytest.param(lambda h: h.update({"webhook-timestamp": "-1"}), id="timestamp-negative"),
        pytest.param(lambda h: h.update({"webhook-timestamp": "٣٣٣"}), id="timestamp-not-ascii"),
        pytest.param(lambda h: h.update(signed_headers(timestamp=int(NOW) - 301)), id="too-old"),
        pytest.param(lambda h: h.update(signed_headers(timestamp=int(NOW) + 301)), id="in-future"),
        pytest.param(lambda h: h.update({"webhook-signature": "v1,AAAA"}), id="wrong-mac"),
        pytest.param(lambda h: h.update({"webhook-signature": "v1,not base64!"}), id="not-base64"),
        pytest.param(lambda h: h.update({"webhook-signature": "v1,ünïcödé"}), id="not-ascii"),
        pytest.param(lambda h: h.update({"webhook-signature": "no-comma"}), id="no-version"),
        pytest.param(lambda h: h.update({"webhook-signature": "   "}), id="blank-signature"),
        pytest.param(
            lambda h: h.update({"webhook-signature": h["webhook-signature"].replace("v1,", "v2,")}),
            id="unknown-version-only",
        ),
        pytest.param(lambda h: h.update({"webhook-id": "msg_2"}), id="other-id"),
        pytest.param(lambda h: h.update(signed_headers(secret=ROTATED_OUT)), id="other-secret"),
        pytest.param(lambda h: h.update(signed_headers(body=b'{"tampered":1}')), id="other-body"),
    ],
)
def test_verify_raises_signature_error_for_every_bad_request(change):
    headers = signed_headers()
    change(headers)

    with pytest.raises(SignatureError):
        verify([SECRET], headers, b"{}", now=NOW)


def test_webhook_id_is_identical_across_retries_of_one_batch(receiver, http):
    accept(receiver)
    target = webhook(receiver, http)

    target.add_users(AUDIENCE, MUTATIONS)
    target.add_users(AUDIENCE, MUTATIONS)

    [(first, _), (retry, _)] = received(receiver)
    expected = hashlib.sha256(f"shop\0add\0{DMP_ID}\x0011,12".encode()).hexdigest()[:32]
    assert first["webhook-id"] == retry["webhook-id"] == f"msg_{expected}"


def test_webhook_id_of_audience_created_derives_from_integration_and_dmp_id(receiver, http):
    accept(receiver)

    webhook(receiver, http).create_audience(AUDIENCE)

    [(headers, _)] = received(receiver)
    expected = hashlib.sha256(f"shop\0created\0{DMP_ID}".encode()).hexdigest()[:32]
    assert headers["webhook-id"] == f"msg_{expected}"


@pytest.mark.parametrize(
    "deliver",
    [
        lambda target: target.add_users(AUDIENCE, MUTATIONS[:1]),
        lambda target: target.remove_users(AUDIENCE, MUTATIONS),
        lambda target: target.add_users(Audience("shop", "other", None, 123, "rcv-8"), MUTATIONS),
        lambda target: target.create_audience(AUDIENCE),
    ],
    ids=["other-mutations", "remove-instead-of-add", "other-audience", "audience-created"],
)
def test_webhook_id_differs_for_a_different_delivery(receiver, http, deliver):
    accept(receiver)
    target = webhook(receiver, http)

    target.add_users(AUDIENCE, MUTATIONS)
    deliver(target)

    [(batch, _), (other, _)] = received(receiver)
    assert batch["webhook-id"] != other["webhook-id"]


def test_audience_created_body_is_exactly_the_documented_event(receiver, http):
    accept(receiver)

    webhook(receiver, http).create_audience(AUDIENCE)

    [(_, body)] = received(receiver)
    assert body == (
        '{"type":"audience.created","timestamp":"2026-11-27T05:34:21Z",'
        '"data":{"integration":"shop","audience":'
        '{"dmp_id":"a5940e473cea659.356693871497425011","name":"Sommerkäufer","customer":123}}}'
    ).encode("utf-8")


@pytest.mark.parametrize(
    "op, event_type", [(ADD, "audience.members_added"), (REMOVE, "audience.members_removed")],
    ids=["add", "remove"],
)
def test_members_body_is_exactly_the_documented_event(receiver, http, op, event_type):
    accept(receiver)
    target = webhook(receiver, http)

    (target.add_users if op == ADD else target.remove_users)(AUDIENCE, MUTATIONS)

    [(_, body)] = received(receiver)
    assert body == (
        '{"type":"%s","timestamp":"2026-11-27T05:34:21Z",'
        '"data":{"integration":"shop","audience":{"id":"rcv-7",'
        '"dmp_id":"a5940e473cea659.356693871497425011","name":"Sommerkäufer","customer":123},'
        '"members":['
        '{"external_user_id":"12478286329","uuid":"ab043529-3e55-4672-52f0-18887ea12345",'
        '"customer":123,"platform":113,"extra":{"Segment_score":0.9}},'
        '{"external_user_id":"555","uuid":"cd043529-3e55-4672-52f0-18887ea12345",'
        '"customer":123,"platform":113,"extra":{}}]}}' % event_type
    ).encode("utf-8")


AWKWARD = (
    Mutation(21, ADD, 'quote " back \\ slash', uuid=None, customer="c-\u00e4\n\t\x01", platform=None),
    Mutation(22, ADD, "\u2028 \U0001F600 ü", uuid="u", customer=2 ** 63 - 1, platform=-7,
             extra={"nested": {"list": [1, 2.5, None, True]}, "ü": "\"x\""}),
    Mutation(23, ADD, "float", customer=1.0, platform=True),
    Mutation(24, ADD, "small", customer=-0.0, platform=1e-7, extra={"false": False}),
)


def test_members_body_writes_awkward_values_as_json_encodes_them(receiver, http):
    """The members are written as text by hand (it is the delivery's hot path): every kind of
    value the intake lets through comes out as the json module encodes the documented dict."""
    accept(receiver)

    webhook(receiver, http).add_users(AUDIENCE, AWKWARD)

    [(_, body)] = received(receiver)
    members = [{"external_user_id": m.external_user_id, "uuid": m.uuid, "customer": m.customer,
                "platform": m.platform, "extra": dict(m.extra)} for m in AWKWARD]
    assert body == json.dumps({
        "type": "audience.members_added", "timestamp": "2026-11-27T05:34:21Z",
        "data": {"integration": "shop", "audience": {"id": "rcv-7", "dmp_id": DMP_ID, "name": "Sommerkäufer",
                                                     "customer": 123}, "members": members},
    }, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert json.loads(body)["data"]["members"] == members


def test_every_request_carries_json_signing_and_extra_headers(receiver, http):
    accept(receiver)
    extra_headers = {"header.Authorization": "Bearer t0k", "header.X-Tenant": "acme"}
    target = webhook(receiver, http, **extra_headers)

    target.add_users(AUDIENCE, MUTATIONS)

    [(headers, _)] = received(receiver)
    assert headers["content-type"] == "application/json"
    assert headers["webhook-timestamp"] == "1795757661"
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["authorization"] == "Bearer t0k"
    assert headers["x-tenant"] == "acme"


@pytest.mark.parametrize(
    "answer, platform_id",
    [
        (lambda r: r.respond_with_json({"id": "rcv-9"}), "rcv-9"),
        (lambda r: r.respond_with_json({"id": 42}), "42"),
        (lambda r: r.respond_with_json({"id": ""}), DMP_ID),
        (lambda r: r.respond_with_json({"id": True}), DMP_ID),
        (lambda r: r.respond_with_json({"ok": True}), DMP_ID),
        (lambda r: r.respond_with_json(["rcv-9"]), DMP_ID),
        (lambda r: r.respond_with_data("OK"), DMP_ID),
        (lambda r: r.respond_with_data("", status=204), DMP_ID),
    ],
    ids=["string-id", "integer-id", "empty-id", "boolean-id", "no-id", "json-list", "text",
         "no-content"],
)
def test_create_returns_the_receivers_id_or_falls_back_to_dmp_id(
    receiver, http, answer, platform_id
):
    answer(receiver.expect_request("/hook", method="POST"))

    assert webhook(receiver, http).create_audience(AUDIENCE) == platform_id


def test_create_refused_gives_a_message_a_marketer_can_act_on(receiver, http):
    receiver.expect_request("/hook").respond_with_json({"error": "name taken"}, status=400)
    audience = Audience("shop", DMP_ID, "Summer buyers", 123)

    with pytest.raises(PermanentError) as raised:
        webhook(receiver, http).create_audience(audience)

    assert str(raised.value) == (
        'the webhook receiver refused audience "Summer buyers": HTTP 400: name taken'
    )


@pytest.mark.parametrize(
    "deliver",
    [
        lambda target: target.create_audience(AUDIENCE),
        lambda target: target.add_users(AUDIENCE, MUTATIONS),
        lambda target: target.remove_users(AUDIENCE, MUTATIONS),
    ],
    ids=["create", "add", "remove"],
)
def test_gone_receiver_is_permanent(receiver, http, deliver):
    receiver.expect_request("/hook").respond_with_data("", status=410)

    with pytest.raises(PermanentError, match="the webhook receiver is gone"):
        deliver(webhook(receiver, http))


def test_too_many_requests_is_transient_with_retry_after(receiver, http):
    receiver.expect_request("/hook").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "30"}
    )

    with pytest.raises(TransientError) as raised:
        webhook(receiver, http).add_users(AUDIENCE, MUTATIONS)

    assert raised.value.retry_after == 30


def test_unavailable_receiver_is_transient(receiver, http):
    receiver.expect_request("/hook").respond_with_data("maintenance", status=503)

    with pytest.raises(TransientError, match="the webhook receiver answered HTTP 503: maintenance"):
        webhook(receiver, http).remove_users(AUDIENCE, MUTATIONS)


def test_payload_too_large_lets_the_dispatcher_split(receiver, http):
    receiver.expect_request("/hook").respond_with_data("", status=413)

    with pytest.raises(PayloadTooLarge):
        webhook(receiver, http).add_users(AUDIENCE, MUTATIONS)


def test_redirect_is_permanent_and_not_followed(receiver, http):
    receiver.expect_request("/hook").respond_with_data(
        "", status=308, headers={"Location": "/moved"}
    )

    with pytest.raises(PermanentError, match="redirect to /moved that was not followed"):
        webhook(receiver, http).add_users(AUDIENCE, MUTATIONS)

    assert len(receiver.log) == 1


def test_settings_default_and_are_read(http):
    settings = {"url": "https://hooks.example/dmp", "secret": SECRET}

    default = WebhookTarget(settings, http)
    tuned = WebhookTarget({**settings, "timeout": "2.5", "max_batch": "250"}, http)

    assert (default.timeout, default.max_batch) == (10.0, 1000)
    assert (tuned.timeout, tuned.max_batch) == (2.5, 250)


@pytest.mark.parametrize("written, seconds", [("10", 10.0), ("10s", 10.0), ("500ms", 0.5), ("1m", 60.0)])
def test_a_timeout_is_written_as_every_other_duration(http, written, seconds):
    target = WebhookTarget({"url": "https://hooks.example/dmp", "secret": SECRET, "timeout": written}, http)

    assert target.timeout == seconds


LEAKY_SECRET = "s3cr3t-do-not-echo"


@pytest.mark.parametrize(
    "change, key",
    [
        pytest.param({"url": None}, "url", id="url-missing"),
        pytest.param({"url": "ftp://hooks.example/dmp"}, "url", id="url-not-http"),
        pytest.param({"url": "hooks.example/dmp"}, "url", id="url-relative"),
        pytest.param({"url": "https://hooks.example:99999/"}, "url", id="url-bad-port"),
        pytest.param({"url": "https://hooks.example/a b"}, "url", id="url-with-space"),
        pytest.param({"url": "https://hooks.example/käufer"}, "url", id="url-not-ascii"),
        pytest.param({"url": "https://user:pw@hooks.example/"}, "url", id="url-with-credentials"),
        pytest.param({"secret": None}, "secret", id="secret-missing"),
        pytest.param({"secret": LEAKY_SECRET}, "secret", id="secret-without-prefix"),
        pytest.param({"secret": f"whsec_{LEAKY_SECRET}!"}, "secret", id="secret-not-base64"),
        pytest.param({"secret": "whsec_"}, "secret", id="secret-empty"),
        pytest.param({"timeout": "0"}, "timeout", id="timeout-zero"),
        pytest.param({"timeout": "ten"}, "timeout", id="timeout-not-number"),
        pytest.param({"timeout": "nan"}, "timeout", id="timeout-nan"),
        pytest.param({"max_batch": "0"}, "max_batch", id="max-batch-zero"),
        pytest.param({"max_batch": "100001"}, "max_batch", id="max-batch-too-big"),
        pytest.param({"max_batch": "1.5"}, "max_batch", id="max-batch-fraction"),
        pytest.param({"header.Content-Type": "text/plain"}, "header.Content-Type",
                     id="header-reserved"),
        pytest.param({"header.webhook-signature": "v1,x"}, "header.webhook-signature",
                     id="header-signing"),
        pytest.param({"header.Bad Name": "x"}, "header.Bad Name", id="header-bad-name"),
        pytest.param({"header.X-Token": f"{LEAKY_SECRET}\r\nX-Injected: 1"}, "header.X-Token",
                     id="header-two-lines"),
        pytest.param({"timout": "5"}, "timout", id="unknown-setting"),
    ],
)
def test_bad_setting_names_the_key_and_never_the_secret(http, change, key):
    settings = {"url": "https://hooks.example/dmp", "secret": SECRET, **change}
    settings = {name: value for name, value in settings.items() if value is not None}

    with pytest.raises(TargetConfigError) as raised:
        WebhookTarget(settings, http)

    assert raised.value.key == key
    assert str(raised.value).startswith(f"target.{key}: ")
    assert LEAKY_SECRET not in str(raised.value)
    assert SECRET[len("whsec_"):] not in str(raised.value)


@pytest.mark.parametrize(
    "spec",
    ["webhook", " webhook ", "targets.webhook:WebhookTarget", "targets.webhook.WebhookTarget"],
    ids=["builtin", "builtin-padded", "colon-path", "dotted-path"],
)
def test_registry_loads_a_target_class(spec):
    assert load_target_class(spec) is WebhookTarget
    assert BUILTIN["webhook"] == "targets.webhook:WebhookTarget"


@pytest.mark.parametrize(
    "spec, says",
    [
        ("nope", "unknown target 'nope'"),
        ("", "unknown target ''"),
        ("no_such_module:Target", "cannot import module 'no_such_module'"),
        ("targets.webhook:Nope", "has no 'Nope'"),
        ("targets.webhook", "is not a target class"),
        ("targets.errors:TransientError", "is not a target class"),
        ("targets.base:ADD", "is not a target class"),
        ("targets.webhook:sign", "is not a target class"),
    ],
    ids=["unknown-name", "empty", "missing-module", "missing-class", "module-only",
         "class-without-methods", "constant", "function"],
)
def test_registry_rejects_what_is_not_a_target(spec, says):
    with pytest.raises(LookupError, match=r"builtin targets: .*webhook") as raised:
        load_target_class(spec)

    assert says in str(raised.value)
