"""The WSGI receiver in-process through wsgiref.validate, with a real SQLite outbox."""
import base64
import io
import json
import re
import sqlite3
import threading

import pytest
from werkzeug import Response as WerkzeugResponse

from diy.signature import sign
from diy_wsgi import make_app
from tests.processes import wait_until
from tests.support import DMP_SECRET, call, make_config, mutation, mutations_body

ADD = "ADD_TO_AUDIENCE"
REMOVE = "REMOVE_FROM_AUDIENCE"
CREATE = "CREATE_AUDIENCE"
UNREACHABLE = "http://127.0.0.1:9/events"


@pytest.fixture
def build(tmp_path):
    apps = []

    def build(receiver_url=UNREACHABLE, **sections):
        app = make_app(make_config(tmp_path, receiver_url, **sections))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.stop()


@pytest.fixture
def app(build):
    return build()


def stored(app):
    return app.outbox.counts()["pending"]


# Validation requests.

@pytest.mark.parametrize("method,query", [("GET", ""), ("GET", "type=VALIDATE"), ("HEAD", "")], ids=["get", "get-validate", "head"])
def test_the_dmp_validation_get_answers_200(app, method, query):
    assert call(app, method, query=query).status == 200


def test_a_signed_validate_post_answers_200(app):
    response = call(app, query="type=VALIDATE", body={"Type": "VALIDATE"})

    assert response.status == 200


def test_an_empty_signed_validate_post_answers_200(app):
    assert call(app, query="type=VALIDATE", body=b"").status == 200


# Authenticity.

def test_the_protocols_worked_example_signature(app):
    body = b'{"Type":"VALIDATE"}'

    response = call(app, query="type=VALIDATE", body=body, signed=False,
                    headers={"X-HMAC": "4e67ba9655c029730245a3aed6f5251dcea3aab8"})

    assert sign(b"s3cr3t", body) == "4e67ba9655c029730245a3aed6f5251dcea3aab8"
    assert response.status == 200


@pytest.mark.parametrize(
    "header",
    [None, "", "0" * 40, "not-hex-at-all", "abc", sign(b"other", b"{}"), "é" * 40],
    ids=["missing", "empty", "zeros", "not-hex", "too-short", "other-secret", "non-ascii"],
)
def test_a_missing_or_wrong_signature_is_401_with_the_same_json_error(app, header):
    body = json.dumps(mutations_body(ADD, mutation("4711", "u1"))).encode()

    response = call(app, query=f"type={ADD}", body=body, signed=False, headers={"X-HMAC": header})

    assert response.status == 401
    assert response.json() == {"error": "the X-HMAC header is missing or does not match the body; check the shared secret"}
    assert stored(app) == 0


def test_the_signature_is_compared_case_insensitively(app):
    body = json.dumps({"Type": "VALIDATE"}).encode()

    response = call(app, query="type=VALIDATE", body=body, signed=False, headers={"X-HMAC": sign(DMP_SECRET, body).upper()})

    assert response.status == 200


def test_every_active_secret_is_accepted_during_a_rotation(build):
    app = build(integration={"hmac_secrets": "old-secret, new-secret"})

    for secret in (b"old-secret", b"new-secret"):
        assert call(app, query="type=VALIDATE", body={"Type": "VALIDATE"}, secret=secret).status == 200
    assert call(app, query="type=VALIDATE", body={"Type": "VALIDATE"}, secret=DMP_SECRET).status == 401


def test_the_signature_covers_the_exact_bytes_received(app):
    body = b'{"Type": "VALIDATE"}'
    respaced = b'{"Type":"VALIDATE"}'

    response = call(app, query="type=VALIDATE", body=body, signed=False, headers={"X-HMAC": sign(DMP_SECRET, respaced)})

    assert response.status == 401


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "authorization",
    [None, basic("dmp", "wrong"), basic("other", "pa:ss"), "Bearer x", "Basic !!!"],
    ids=["missing", "wrong-password", "wrong-user", "other-scheme", "not-base64"],
)
def test_basic_auth_when_configured_is_required(build, authorization):
    app = build(integration={"basic_auth": "dmp:pa:ss"})

    response = call(app, query="type=VALIDATE", body={"Type": "VALIDATE"}, headers={"Authorization": authorization})

    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert "error" in response.json()


def test_basic_auth_with_the_right_credentials_passes(build):
    app = build(integration={"basic_auth": "dmp:pa:ss"})

    response = call(app, query="type=VALIDATE", body={"Type": "VALIDATE"}, headers={"Authorization": basic("dmp", "pa:ss")})

    assert response.status == 200


# Bad input: always a 4xx with a JSON error, never a stored row.

DEEP = b'{"Type":"ADD_TO_AUDIENCE","Mutations":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
BAD_BODIES = [
    ("malformed-json", ADD, b'{"Type": "ADD_TO_AUDIENCE", "Mutations": [', 400, "not valid JSON"),
    ("not-an-object", ADD, b"[1, 2, 3]", 400, "must be a JSON object"),
    ("string-body", ADD, b'"hello"', 400, "must be a JSON object"),
    ("missing-mutations", ADD, {"Type": ADD}, 400, "Mutations must be a list"),
    ("mutations-not-a-list", ADD, {"Type": ADD, "Mutations": {"a": 1}}, 400, "Mutations must be a list"),
    ("mutation-not-an-object", ADD, {"Type": ADD, "Mutations": [mutation("a", "u"), 7]}, 400, r"Mutations\[1\] must be an object"),
    ("missing-audience", ADD, {"Type": ADD, "Mutations": [{"External_user_id": "u1"}]}, 400, r"Mutations\[0\].Audience"),
    ("empty-user-id", ADD, {"Type": ADD, "Mutations": [mutation("a", "")]}, 400, r"Mutations\[0\].External_user_id"),
    ("nested-customer", ADD, {"Type": ADD, "Mutations": [mutation("a", "u", Customer={"x": 1})]}, 400, "Customer"),
    ("type-contradicts-query", ADD, {"Type": REMOVE, "Mutations": [mutation("a", "u")]}, 400, "contradicts"),
    ("non-utf8", ADD, b'{"Type": "ADD_TO_AUDIENCE", "x": "\xff\xfe"}', 400, "UTF-8"),
    ("deeply-nested", ADD, DEEP, 400, "nested too deeply"),
    ("create-without-audience", CREATE, {"Type": CREATE, "Name": "x"}, 400, "Audience"),
    ("create-without-name", CREATE, {"Type": CREATE, "Audience": "a"}, 400, "Name"),
    ("unknown-type", "DELETE_EVERYTHING", {"Type": "DELETE_EVERYTHING"}, 400, "unknown type"),
    ("customer-beyond-64-bits", ADD, {"Type": ADD, "Mutations": [mutation("a", "u", Customer=2**70)]}, 400, "too large"),
    ("nan", ADD, b'{"Type": "ADD_TO_AUDIENCE", "Mutations": [], "Score": NaN}', 400, "NaN is not a JSON number"),
    ("infinite-number", ADD, b'{"Type": "ADD_TO_AUDIENCE", "Mutations": [], "Score": 1e999}', 400, "too large"),
    ("nul-in-user-id", ADD, {"Type": ADD, "Mutations": [mutation("a", "u\x001")]}, 400,
     r"Mutations\[0\].External_user_id holds a NUL"),
    ("nul-in-audience", ADD, {"Type": ADD, "Mutations": [mutation("a\x00", "u")]}, 400, r"Mutations\[0\].Audience holds a NUL"),
    ("nul-in-a-later-user-id", ADD, {"Type": ADD, "Mutations": [mutation("a", "u1"), mutation("a", "u\x002")]}, 400,
     r"Mutations\[1\].External_user_id holds a NUL"),
    ("blank-later-audience", ADD, {"Type": ADD, "Mutations": [mutation("a", "u1"), mutation(" ", "u2")]}, 400,
     r"Mutations\[1\].Audience must be a non-empty string"),
    ("platform-below-64-bits", ADD, {"Type": ADD, "Mutations": [mutation("a", "u1"), mutation("a", "u2", Platform=-2**63 - 1)]},
     400, r"Mutations\[1\].Platform is too large"),
    ("nul-in-uuid", ADD, {"Type": ADD, "Mutations": [mutation("a", "u", Uuid="x\x00")]}, 400, "Uuid holds a NUL"),
    ("nul-in-customer", ADD, {"Type": ADD, "Mutations": [mutation("a", "u", Customer="c\x00")]}, 400, "Customer holds a NUL"),
    ("nul-in-name", CREATE, {"Type": CREATE, "Name": "Buy\x00ers", "Audience": "a"}, 400, "Name holds a NUL"),
    ("lone-surrogate", ADD, b'{"Type": "ADD_TO_AUDIENCE", "Mutations": [{"Audience": "a", "External_user_id": "\\udc80"}]}',
     400, "surrogate"),
]


@pytest.mark.parametrize("request_type,body,status,message", [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_a_bad_body_gets_a_4xx_json_error_and_stores_nothing(build, request_type, body, status, message):
    app = build(diy={"max_body": "1M"})

    response = call(app, query=f"type={request_type}", body=body)

    assert response.status == status
    assert response.headers["Content-Type"] == "application/json"
    assert re.search(message, response.json()["error"])
    assert stored(app) == 0


def test_a_post_without_a_type_is_400(app):
    response = call(app, query="", body={"Type": ADD})

    assert response.status == 400
    assert "?type=" in response.json()["error"]


class Unreadable(io.RawIOBase):
    def read(self, size=-1):
        raise AssertionError("the body must not be read")


def test_a_body_over_the_limit_is_413_before_it_is_read(build):
    app = build(diy={"max_body": "1k"})

    response = call(app, query=f"type={ADD}", headers={"Content-Length": "2048"}, body=b"", signed=False)

    assert response.status == 413
    assert "1024" in response.json()["error"]


def test_a_body_shorter_than_its_content_length_is_400(app):
    response = call(app, query=f"type={ADD}", body=b"{}", headers={"Content-Length": "10"})

    assert response.status == 400
    assert "ended after 2 of 10 bytes" in response.json()["error"]


def test_a_content_length_that_is_not_a_number_is_400(app):
    response = call(app, query=f"type={ADD}", body=b"{}", headers={"Content-Length": "ten"}, validate=False)

    assert response.status == 400


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_a_wrong_method_is_405_with_allow(app, method):
    response = call(app, method, query=f"type={ADD}")

    assert response.status == 405
    assert response.headers["Allow"] == "GET, HEAD, POST"
    assert "error" in response.json()


def test_a_get_for_a_mutation_type_is_405(app):
    response = call(app, "GET", query=f"type={ADD}")

    assert (response.status, response.headers["Allow"]) == (405, "POST")


def test_an_unknown_path_is_404(app):
    response = call(app, path="/elsewhere", query="type=VALIDATE", body={"Type": "VALIDATE"})

    assert response.status == 404
    assert "error" in response.json()


def test_the_path_matches_with_a_trailing_slash(app):
    assert call(app, path="/dmp/", query="type=VALIDATE", body={"Type": "VALIDATE"}).status == 200


# Mutations.

def test_mutations_are_committed_before_the_200(app):
    body = mutations_body(ADD, mutation("4711", "u1"), mutation("4711", "u2"), mutation("4712", "u1"))

    response = call(app, query=f"type={ADD}", body=body)

    assert (response.status, response.json()) == (200, {"accepted": 3})
    assert stored(app) == 3


def test_one_request_may_span_many_audiences_and_each_keeps_its_order(app):
    body = mutations_body(ADD, *(mutation(f"aud-{i % 5}", f"u{i}") for i in range(100)))
    call(app, query=f"type={ADD}", body=body)

    rows = sqlite3.connect(app.config.database).execute(
        "SELECT a.key, m.external_user_id FROM mutations m JOIN audiences a ON a.id = m.audience_id ORDER BY m.id"
    ).fetchall()

    for audience in range(5):
        users = [user for key, user in rows if key == f"aud-{audience}"]
        assert users == [f"u{i}" for i in range(100) if i % 5 == audience]


def test_an_integer_audience_is_the_same_audience_as_its_decimal_text(app):
    body = mutations_body(ADD, mutation(4711, "u1"), mutation("4711", "u2"), mutation(4711, "u3"))

    assert call(app, query=f"type={ADD}", body=body).json() == {"accepted": 3}

    rows = sqlite3.connect(app.config.database).execute(
        "SELECT a.key, m.external_user_id FROM mutations m JOIN audiences a ON a.id = m.audience_id ORDER BY m.id"
    ).fetchall()
    assert rows == [("4711", "u1"), ("4711", "u2"), ("4711", "u3")]


def test_unknown_fields_are_kept_with_the_mutation(app):
    body = mutations_body(REMOVE, mutation("4711", "u1", Segment_type="lookalike", Weights=[1, 2]))
    body["Batch_id"] = "ignored at the top level"

    call(app, query=f"type={REMOVE}", body=body)

    extra, op = sqlite3.connect(app.config.database).execute("SELECT extra, op FROM mutations").fetchone()
    assert op == "remove"
    assert json.loads(extra) == {"Segment_type": "lookalike", "Weights": [1, 2]}


def test_an_empty_batch_is_accepted_and_stores_nothing(app):
    response = call(app, query=f"type={ADD}", body=mutations_body(ADD))

    assert (response.status, response.json()) == (200, {"accepted": 0})


def test_a_database_locked_past_the_budget_answers_503_and_stores_nothing(app):
    app.outbox.counts()
    blocker = sqlite3.connect(app.config.database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        response = call(app, query=f"type={ADD}", body=mutations_body(ADD, mutation("4711", "u1")))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    assert response.status == 503
    assert "nothing was stored" in response.json()["error"]
    assert stored(app) == 0


# Audience creation.

def create_body(audience="dmp-aud-1", name="Summer buyers", customer=123):
    return {"Type": CREATE, "Name": name, "Customer": customer, "Audience": audience}


def test_create_audience_maps_the_platform_id_and_hands_it_back(build, httpserver):
    httpserver.expect_oneshot_request("/events", method="POST").respond_with_json({"id": "T-1"})
    app = build(httpserver.url_for("/events"), integration={"return_target_id": "yes"})

    response = call(app, query=f"type={CREATE}", body=create_body())

    assert (response.status, response.json()) == (200, {"id": "T-1"})
    record = app.outbox.audience("demo", "dmp-aud-1")
    assert (record.target_id, record.state, record.name, record.customer) == ("T-1", "ready", "Summer buyers", 123)
    httpserver.check_assertions()


def test_create_audience_without_return_target_id_answers_an_empty_200(build, httpserver):
    httpserver.expect_oneshot_request("/events").respond_with_json({"id": "T-1"})
    app = build(httpserver.url_for("/events"))

    response = call(app, query=f"type={CREATE}", body=create_body())

    assert (response.status, response.json()) == (200, {})
    assert app.outbox.audience("demo", "dmp-aud-1").target_id == "T-1"


def test_a_repeated_create_audience_does_not_call_the_platform_again(build, httpserver):
    httpserver.expect_oneshot_request("/events").respond_with_json({"id": "T-1"})
    app = build(httpserver.url_for("/events"), integration={"return_target_id": "yes"})

    first = call(app, query=f"type={CREATE}", body=create_body())
    second = call(app, query=f"type={CREATE}", body=create_body())

    assert first.json() == second.json() == {"id": "T-1"}
    assert len(httpserver.log) == 1


def test_a_refused_audience_gives_the_marketer_the_platforms_reason(build, httpserver):
    httpserver.expect_request("/events").respond_with_json({"error": "name taken"}, status=400)
    app = build(httpserver.url_for("/events"))

    response = call(app, query=f"type={CREATE}", body=create_body())

    assert response.status == 422
    assert "name taken" in response.json()["error"]
    assert app.outbox.audience("demo", "dmp-aud-1") is None


def test_a_platform_that_is_down_does_not_fail_creation(build, httpserver):
    httpserver.expect_request("/events").respond_with_data("busy", status=503)
    app = build(httpserver.url_for("/events"), integration={"return_target_id": "yes"})

    response = call(app, query=f"type={CREATE}", body=create_body())

    assert (response.status, response.json()) == (200, {"id": "dmp-aud-1"})
    assert app.outbox.audience("demo", "dmp-aud-1").state == "creating"


def test_a_slow_platform_does_not_hold_creation_past_the_budget(build, httpserver):
    may_answer, answered = threading.Event(), threading.Event()

    def slow(request):
        may_answer.wait(10)
        answered.set()
        return WerkzeugResponse(json.dumps({"id": "T-late"}), content_type="application/json")

    httpserver.expect_request("/events").respond_with_handler(slow)
    app = build(httpserver.url_for("/events"), diy={"create_timeout": "0.2s"})

    response = call(app, query=f"type={CREATE}", body=create_body())

    assert response.status == 200
    assert not answered.is_set(), "the DMP was answered while the platform still worked"
    assert app.outbox.audience("demo", "dmp-aud-1").state == "creating"
    may_answer.set()
    wait_until(lambda: app.outbox.audience("demo", "dmp-aud-1").state == "ready", what="the late creation recorded")
    assert app.outbox.audience("demo", "dmp-aud-1").target_id == "T-late"


def test_mutations_with_the_returned_id_reach_the_mapped_audience(build, httpserver):
    httpserver.expect_oneshot_request("/events").respond_with_json({"id": "T-1"})
    app = build(httpserver.url_for("/events"), integration={"return_target_id": "yes"})
    call(app, query=f"type={CREATE}", body=create_body())

    call(app, query=f"type={ADD}", body=mutations_body(ADD, mutation("T-1", "u1")))

    assert app.outbox.audience("demo", "dmp-aud-1").pending == 1


def test_creating_an_audience_for_a_client_without_an_account_is_refused(build, httpserver):
    app = build(httpserver.url_for("/events"), sections={"integration:demo:customer:1": {}})

    response = call(app, query=f"type={CREATE}", body=create_body(customer=2))

    assert response.status == 422
    assert "no platform account" in response.json()["error"]
    assert len(httpserver.log) == 0


def test_an_escaped_surrogate_pair_is_ordinary_text(app):
    body = b'{"Type": "ADD_TO_AUDIENCE", "Mutations": [{"Audience": "a", "External_user_id": "u\\ud83d\\ude00"}]}'

    response = call(app, query=f"type={ADD}", body=body)

    assert (response.status, stored(app)) == (200, 1)


def test_stored_mutations_wake_the_dispatcher_once_the_answer_is_sent(app):
    raw = json.dumps(mutations_body(ADD, mutation("4711", "u1"))).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/dmp", "QUERY_STRING": f"type={ADD}",
               "CONTENT_LENGTH": str(len(raw)), "wsgi.input": io.BytesIO(raw), "HTTP_X_HMAC": sign(DMP_SECRET, raw)}
    wake = app.service.dispatcher._wake
    wake.clear()

    result = app(environ, lambda status, headers, exc_info=None: None)
    body = b"".join(result)

    assert json.loads(body) == {"accepted": 1} and stored(app) == 1
    assert not wake.is_set(), "the dispatcher must not compete with the answer still being sent"
    result.close()
    assert wake.is_set()


# One nesting limit for every body, checked before anything is stored.

def nested_field(levels):
    """JSON text of `levels` lists, one inside the other."""
    return "[" * levels + "1" + "]" * levels


def body_with_extra(levels):
    """An ADD whose one mutation carries an unknown field `Deep` of `levels` lists (the mutation's
    fields sit at level 4 of the body, so 29 levels reach dmp.MAX_DEPTH = 32)."""
    return ('{"Type": "ADD_TO_AUDIENCE", "Mutations": [{"Audience": "a", "External_user_id": "u", "Deep": '
            + nested_field(levels) + "}]}").encode()


def test_an_unknown_field_nested_up_to_the_limit_is_kept(app):
    response = call(app, query=f"type={ADD}", body=body_with_extra(29))

    assert response.status == 200
    assert stored(app) == 1


@pytest.mark.parametrize("levels", [30, 976, 979, 982, 5000])
def test_an_unknown_field_nested_beyond_the_limit_is_400_and_stores_nothing(app, levels):
    response = call(app, query=f"type={ADD}", body=body_with_extra(levels))

    assert response.status == 400
    # Named when the field is found; a body too deep for the JSON decoder itself is refused whole.
    assert re.fullmatch(r"(Mutations\[0\]\.Deep|the body) is nested too deeply: a body may nest at most 32 levels",
                        response.json()["error"])
    assert stored(app) == 0


@pytest.mark.parametrize("request_type", [ADD, CREATE])
def test_any_other_field_nested_beyond_the_limit_is_400(app, request_type):
    body = (f'{{"Type": "{request_type}", "Audience": "a", "Name": "n", "Mutations": [], "Note": '
            + nested_field(32) + "}").encode()

    response = call(app, query=f"type={request_type}", body=body)

    assert response.status == 400
    assert response.json()["error"].startswith("Note is nested too deeply")
    assert stored(app) == 0
