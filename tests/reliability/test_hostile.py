"""Hostile input: nothing the DMP or an attacker sends breaks the service or stores a row.

Property-based (hypothesis) over methods, paths, query strings, headers and bodies, against the
WSGI app in-process through `wsgiref.validate` (tests/support.call), with a real SQLite outbox:

- never a 5xx, never an unhandled exception (the validator also checks every answer);
- every answer is JSON, and a 4xx is `{"error": "<text>"}`;
- an answer other than 200 leaves the database as it was; a 200 stores exactly what it says.

Then the signature check's constant-time comparison, raw hostile bytes against the real servers
(`diy-wsgi serve` and gunicorn), and the inputs these suites found to break the service, fixed
since and kept as regression tests (a bug still open is an xfail(strict=True) until it is
fixed). Slow bodies and huge headers behind gunicorn are nginx's job (client_body_timeout,
client_header_timeout, large_client_header_buffers, client_max_body_size:
deploy/nginx/diy-wsgi.conf).

CI form: 150 cases per property, derandomized (the same cases every run). Long form: 3,000 per
property, random.
"""
import base64
import hmac
import json
import socket
import string

import pytest

from diy.config import parse_config
from diy.signature import sign
from diy_wsgi import make_app
from reliability import LONG, pick
from reliability.harness import Diy, Gunicorn, config_text, dmp_post, free_port, wait_for_port
from tests.support import call

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = [pytest.mark.reliability, pytest.mark.filterwarnings("ignore::wsgiref.validate.WSGIWarning")]

SECRET = b"s3cr3t"
OTHER_SECRET = b"next-secret"
EXAMPLES = pick(150, 3000)
fuzz = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TYPES = ["VALIDATE", "CREATE_AUDIENCE", "ADD_TO_AUDIENCE", "REMOVE_FROM_AUDIENCE"]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    text = config_text(folder / "outbox.sqlite3", "http://127.0.0.1:9/events",
                       diy={"max_body": "64k", "create_timeout": "0.2s", "write_timeout": "2s"},
                       integration={"hmac_secrets": f"{SECRET.decode()}, {OTHER_SECRET.decode()}"})
    application = make_app(parse_config(text, source="hostile.ini", base_dir=folder, environ={}))
    yield application
    application.stop()


@pytest.fixture(scope="module")
def guarded_app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-basic")
    text = config_text(folder / "outbox.sqlite3", "http://127.0.0.1:9/events",
                       integration={"basic_auth": "dmp:open sesame"})
    application = make_app(parse_config(text, source="hostile.ini", base_dir=folder, environ={}))
    yield application
    application.stop()


@pytest.fixture(scope="module")
def cases(figures):
    counter = {"n": 0}
    yield counter
    figures.add(fuzz_cases=counter["n"])


def rows(app):
    return tuple(app.outbox.database.read(f"SELECT COUNT(*) FROM {table}")[0][0]
                 for table in ("mutations", "audiences"))


def check_answer(response, method):
    assert response.status < 500, (response.status, response.body)
    assert response.headers.get("Content-Type") == "application/json"
    if method == "HEAD":
        assert response.body == b""
        return None
    document = json.loads(response.body)
    if 400 <= response.status < 500:
        assert isinstance(document, dict) and isinstance(document.get("error"), str) and document["error"]
    return document


# Strategies. They include what once broke the service (see the regression tests at the end):
# integers beyond 64 bits, NaN and infinities (json.dumps writes NaN, Infinity), lone surrogates.

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
                      max_size=80)
safe_text = st.text(max_size=40)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | safe_text


def json_containers(inner):
    return st.lists(inner, max_size=4) | st.dictionaries(safe_text, inner, max_size=4)


json_values = st.recursive(json_scalars, json_containers, max_leaves=12)
ids = st.one_of(safe_text, st.integers(), st.sampled_from(["aud-1", "aud-2", " ", "", "x" * 600]))


@st.composite
def dmp_mutation(draw):
    fields = {
        "Audience": draw(ids | json_values),
        "External_user_id": draw(ids | json_values),
        "Uuid": draw(safe_text | json_values),
        "Customer": draw(json_scalars | json_values),
        "Platform": draw(json_scalars),
    }
    mutation = {key: value for key, value in fields.items() if draw(st.booleans()) or key in ("Audience",)}
    mutation.update(draw(st.dictionaries(safe_text, json_values, max_size=3)))
    return mutation


@st.composite
def dmp_body(draw):
    kind = draw(st.sampled_from(TYPES + ["OTHER", None]))
    body = {} if kind is None else {"Type": kind}
    shape = draw(st.sampled_from(["mutations", "audience", "anything"]))
    if shape == "mutations":
        body["Mutations"] = draw(st.lists(dmp_mutation(), max_size=6) | json_values)
    elif shape == "audience":
        body.update({"Audience": draw(ids | json_values), "Name": draw(safe_text | json_values),
                     "Customer": draw(json_scalars)})
    else:
        body.update(draw(st.dictionaries(safe_text, json_values, max_size=4)))
    return json.dumps(body).encode()


bodies = st.one_of(
    dmp_body(),
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.sampled_from([b"", b"{", b"[" * 5000 + b"]" * 5000, b"\xff\xfe{}", b'{"Mutations": [' + b"{}," * 200 + b"{}]}",
                     b"NaN", b'{"Type": "ADD_TO_AUDIENCE", "Mutations": null}', "{\"é\": 1}".encode("latin-1")]),
)
queries = st.one_of(
    st.sampled_from(TYPES).map(lambda t: f"type={t}"),
    st.sampled_from(TYPES).map(lambda t: f"type={t.lower()}&type=VALIDATE"),
    st.sampled_from(["", "type=", "type", "type=%00", "type=%ZZ", "type=VALIDATE;x", "type=%E9", "&&&=",
                     "type=" + "A" * 5000]),
    header_text,
)
methods = st.one_of(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]),
                    st.text(string.ascii_letters, min_size=1, max_size=10))
paths = st.one_of(st.sampled_from(["/dmp", "/dmp/", "/dmp//", "/DMP", "/", "/dmp/x", "/healthz", "/metrics",
                                   "/dmp/../dmp", "/dmp%00"]),
                  st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), max_size=30).map(lambda p: "/" + p))
signatures = st.sampled_from(["valid", "valid-upper", "valid-padded", "other-secret", "missing", "random",
                              "wrong-length", "non-hex", "non-ascii", "empty"])


def signature_for(mode, body, draw_text):
    correct = sign(SECRET, body)
    return {
        "valid": correct,
        "valid-upper": correct.upper(),
        "valid-padded": f"  {correct}\t",
        "other-secret": sign(OTHER_SECRET, body),
        "missing": None,
        "random": draw_text,
        "wrong-length": correct[:-1],
        "non-hex": "z" * len(correct),
        "non-ascii": "é" * len(correct),
        "empty": "",
    }[mode]


content_lengths = st.one_of(st.just("exact"), st.sampled_from(["0", "1", "65537", "999999999999", "-1", "abc", "",
                                                                 "1e3", " 12 ", "+5", "0x10"]))


@fuzz
@given(method=methods, path=paths, query=queries, body=bodies, signature=signatures, random_text=header_text,
       length=content_lengths, extra_headers=st.dictionaries(
           st.sampled_from(["Authorization", "X-Request-Id", "Content-Type", "Transfer-Encoding", "Cookie",
                            "X-Forwarded-For", "Expect"]), header_text, max_size=3))
def test_any_request_gets_json_below_500_and_stores_nothing_unless_200(
        app, cases, method, path, query, body, signature, random_text, length, extra_headers):
    cases["n"] += 1
    headers = dict(extra_headers)
    headers["X-HMAC"] = signature_for(signature, body, random_text)
    valid_length = True
    if length != "exact":
        headers["Content-Length"] = length
        valid_length = length.strip().lstrip("+").isdigit() or length == ""
    before = rows(app)
    response = call(app, method, path=path, query=query, body=body, headers=headers, signed=False,
                    validate=valid_length and length.strip() == length)
    document = check_answer(response, method)
    if response.status != 200:
        assert rows(app) == before, "a refused request stored something"
    elif isinstance(document, dict) and "accepted" in document:
        assert rows(app)[0] == before[0] + document["accepted"]


@fuzz
@given(body=bodies, query=queries, signature=signatures.filter(lambda s: not s.startswith("valid")),
       random_text=header_text)
def test_a_post_without_the_right_signature_is_401_and_stores_nothing(app, cases, body, query, signature,
                                                                      random_text):
    cases["n"] += 1
    before = rows(app)
    header = signature_for(signature, body, random_text)
    if signature == "other-secret":  # a configured secret is the right signature
        header = sign(b"not-a-configured-secret", body)
    response = call(app, "POST", query=query, body=body, headers={"X-HMAC": header}, signed=False)
    check_answer(response, "POST")
    assert response.status in (401, 413), response.body
    assert rows(app) == before


@fuzz
@given(body=dmp_body(), kind=st.sampled_from(TYPES))
def test_a_signed_dmp_shaped_body_is_taken_whole_or_refused_whole(app, cases, body, kind):
    cases["n"] += 1
    before = rows(app)
    response = call(app, "POST", query=f"type={kind}", body=body, secret=SECRET)
    document = check_answer(response, "POST")
    assert response.status in (200, 400, 413, 422), response.body
    if response.status == 200 and kind in ("ADD_TO_AUDIENCE", "REMOVE_FROM_AUDIENCE"):
        assert rows(app)[0] == before[0] + document["accepted"] == before[0] + len(json.loads(body)["Mutations"])
    if response.status != 200:
        assert rows(app) == before


@fuzz
@given(scheme=st.sampled_from(["Basic", "basic", "Bearer", "", "Basic  "]),
       credentials=st.one_of(header_text, st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
                             st.sampled_from(["dmp:open sesame", "dmp:open sesam", "dmp:", ":open sesame",
                                              "dmp:open sesame\x00", "DMP:open sesame"])
                             .map(lambda c: base64.b64encode(c.encode()).decode())))
def test_basic_auth_refuses_every_wrong_credential_with_a_challenge(guarded_app, cases, scheme, credentials):
    cases["n"] += 1
    before = rows(guarded_app)
    body = {"Type": "ADD_TO_AUDIENCE", "Mutations": [{"Audience": "a", "External_user_id": "u"}]}
    response = call(guarded_app, query="type=ADD_TO_AUDIENCE", body=body, secret=b"s3cr3t",
                    headers={"Authorization": f"{scheme} {credentials}"})
    check_answer(response, "POST")
    right = scheme.strip().lower() == "basic" and credentials == base64.b64encode(b"dmp:open sesame").decode()
    if right:
        assert response.status == 200
    else:
        assert response.status == 401 and "WWW-Authenticate" in response.headers
        assert rows(guarded_app) == before


# The signature check compares in constant time.

MALFORMED = {
    "wrong-length": lambda good: good[:-2],
    "too-long": lambda good: good + "00",
    "non-hex": lambda good: "g" * len(good),
    "non-ascii": lambda good: "é" * len(good),
    "empty-after-strip": lambda good: "   ",
    "binary-garbage": lambda good: "\x00\x01\x02",
}


@pytest.mark.parametrize("kind", list(MALFORMED), ids=list(MALFORMED))
def test_a_malformed_signature_gets_the_same_answer_as_a_wrong_one(app, kind):
    body = b'{"Type": "VALIDATE"}'
    wrong = call(app, query="type=VALIDATE", body=body, headers={"X-HMAC": sign(b"wrong", body)}, signed=False)
    malformed = call(app, query="type=VALIDATE", body=body,
                     headers={"X-HMAC": MALFORMED[kind](sign(SECRET, body))}, signed=False)
    assert (malformed.status, malformed.body) == (wrong.status, wrong.body) == (wrong.status, wrong.body)
    assert wrong.status == 401


@pytest.mark.parametrize("kind", ["right", "wrong", *MALFORMED], ids=["right", "wrong", *MALFORMED])
def test_every_configured_secret_is_compared_with_hmac_compare_digest(app, kind, monkeypatch):
    """Whatever the header, each of the two secrets goes through `hmac.compare_digest`."""
    import diy.signature

    compared = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(diy.signature.hmac, "compare_digest", spy)
    body = b'{"Type": "VALIDATE"}'
    good = sign(SECRET, body)
    header = {"right": good, "wrong": sign(b"wrong", body)}.get(kind) or MALFORMED[kind](good)
    call(app, query="type=VALIDATE", body=body, headers={"X-HMAC": header}, signed=False)
    assert compared == [(bytes, bytes), (bytes, bytes)]


# Raw bytes against the real servers.

RAW = [
    b"\x00\xff garbage \r\n\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /dmp?type=ADD_TO_AUDIENCE HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 300 + b"\r\n",
    b"POST /dmp?type=ADD_TO_AUDIENCE HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n",
    b"POST /dmp?type=ADD_TO_AUDIENCE HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /dmp?type=ADD_TO_AUDIENCE HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\n0123456789",
    b"POST /dmp?type=ADD_TO_AUDIENCE HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"half",
    b"GET /dmp HTTP/9.9\r\n\r\n",
    b"\r\n" * 1000,
]


def send_raw(port, payload):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        try:
            connection.sendall(payload)
            connection.shutdown(socket.SHUT_WR)
            connection.recv(65536)
        except OSError:
            pass


@pytest.mark.parametrize("server", ["serve", "gunicorn"])
def test_raw_hostile_bytes_leave_the_real_servers_answering(server, tmp_path, processes, figures):
    if server == "gunicorn":
        pytest.importorskip("gunicorn")
    config = tmp_path / "diy.ini"
    config.write_text(config_text(tmp_path / "outbox.sqlite3", "http://127.0.0.1:9/events"))
    port = free_port()
    process = (Gunicorn(tmp_path, config, port, workers=1) if server == "gunicorn"
               else Diy(tmp_path, "serve", "--config", config, "--port", port))
    processes.append(process)
    wait_for_port(port, process)
    for payload in RAW:
        send_raw(port, payload)
    assert process.running, process.output()
    body = {"Type": "ADD_TO_AUDIENCE", "Mutations": [{"Audience": "a", "External_user_id": "u"}]}
    assert dmp_post(port, "ADD_TO_AUDIENCE", body) == (200, {"accepted": 1})
    assert "Traceback" not in process.output(), process.output()
    figures.add(raw_payloads=len(RAW))


# Found by these suites and fixed since: regression tests.

CHUNKED = "POST /dmp?type=ADD_TO_AUDIENCE HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("payload", [CHUNKED + "zz\r\n", CHUNKED + "40\r\n{\"Mutations\": ["],
                         ids=["invalid-chunk-size", "cut-off-chunk"])
def test_a_malformed_chunked_body_under_gunicorn_is_answered_400(payload, tmp_path, processes):
    """Was a 500: gunicorn's chunked reader raises its own errors, which read_body let through."""
    pytest.importorskip("gunicorn")
    config = tmp_path / "diy.ini"
    config.write_text(config_text(tmp_path / "outbox.sqlite3", "http://127.0.0.1:9/events"))
    port = free_port()
    gunicorn = Gunicorn(tmp_path, config, port, workers=1)
    processes.append(gunicorn)
    wait_for_port(port, gunicorn)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(payload.encode())
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]

BIG = "9" * 30


@pytest.mark.parametrize("kind,body", [
    ("ADD_TO_AUDIENCE", f'{{"Mutations": [{{"Audience": "a", "External_user_id": "u", "Customer": {BIG}}}]}}'),
    ("REMOVE_FROM_AUDIENCE", f'{{"Mutations": [{{"Audience": "a", "External_user_id": "u", "Platform": {BIG}}}]}}'),
    ("CREATE_AUDIENCE", f'{{"Audience": "big", "Name": "n", "Customer": {BIG}}}'),
], ids=["add-customer", "remove-platform", "create-customer"])
def test_an_integer_beyond_64_bits_is_refused_with_400(app, kind, body):
    """Was a 500: SQLite's bind raised OverflowError, which is not a StoreError."""
    before = rows(app)
    response = call(app, query=f"type={kind}", body=body.encode(), secret=SECRET)
    assert response.status == 400, response.body
    assert rows(app) == before


@pytest.mark.parametrize("field", ["Audience", "External_user_id", "Uuid", "Extra_field"])
def test_a_lone_surrogate_in_a_string_is_refused_with_400(app, field):
    """Was a 500: json.loads made a str that UTF-8 cannot encode, and SQLite's bind refused it."""
    mutation = {"Audience": "a", "External_user_id": "u", field: "x\\udc80"}
    raw = json.dumps({"Mutations": [mutation]}).replace("\\\\udc80", "\\udc80").encode()
    before = rows(app)
    response = call(app, query="type=ADD_TO_AUDIENCE", body=raw, secret=SECRET)
    assert response.status == 400, response.body
    assert rows(app) == before


@pytest.mark.parametrize("value", ["1e999", "-1e999", "NaN", "Infinity"])
def test_a_non_finite_number_never_reaches_the_platform_as_invalid_json(app, value):
    """Was stored, and sent to the platform as the bare token Infinity or NaN, which is not JSON."""
    from outbox.store import decode_batches
    from targets.base import Audience
    from targets.webhook import members_body

    raw = f'{{"Mutations": [{{"Audience": "finite-{value}", "External_user_id": "u", "Customer": {value},' \
          f' "Score": {value}}}]}}'.encode()
    response = call(app, query="type=ADD_TO_AUDIENCE", body=raw, secret=SECRET)
    if response.status == 400:
        return
    assert response.status == 200
    stored = decode_batches(app.outbox.database.read(
        "SELECT id, op, size, mutations, received_at FROM batches WHERE audience_id ="
        " (SELECT id FROM audiences WHERE key = ?)", (f"finite-{value}",)))
    audience = Audience("demo", f"finite-{value}", None, stored[0].customer, f"finite-{value}")
    body = members_body(audience, "add", stored, 0)  # what the dispatcher sends

    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    json.loads(body, parse_constant=refuse)
