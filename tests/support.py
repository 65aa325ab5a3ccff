"""Building configurations and signed DMP requests for the tests."""
import base64
import functools
import io
import json
import re
import sys
import wsgiref.util
import wsgiref.validate

from diy.config import parse_config
from diy.signature import sign
from reliability import processes

DMP_SECRET = b"s3cr3t"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"webhook-signing-key-for-tests-0").decode()
TEST_SETTINGS = {
    "diy": {"write_timeout": "0.5s", "create_timeout": "1s"},
    "dispatcher": {"poll_interval": "0.1s", "backoff_base": "0.1s", "backoff_cap": "0.5s"},
    "integration": {"hmac_secrets": DMP_SECRET.decode(), "target.secret": WEBHOOK_SECRET, "target.timeout": "2"},
}
"""The tests' secrets and timings, under every `config_text` of theirs."""

config_text = functools.partial(processes.config_text, defaults=TEST_SETTINGS)
"""An INI text; each keyword's {key: value} overrides or adds keys of that section; `sections`
adds whole sections ({name: {key: value}})."""


def make_config(tmp_path, receiver_url, **sections):
    text = config_text(tmp_path / "outbox.sqlite3", receiver_url, **sections)
    return parse_config(text, source="test.ini", base_dir=tmp_path, environ={})


def mode_of(path):
    """The permission bits of a file or folder (0o600: its owner's alone)."""
    return path.stat().st_mode & 0o777


def body_of(payload):
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def mutation(audience, user, **extra):
    return {"Uuid": f"uuid-{user}", "Audience": audience, "Customer": 123, "Platform": 113,
            "External_user_id": user, **extra}


def mutations_body(kind, *mutations):
    return {"Type": kind, "Mutations": list(mutations)}


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = dict(headers)
        self.body = body

    def json(self):
        return json.loads(self.body)


def call(app, method="POST", path="/dmp", query="", body=b"", headers=None, signed=True, secret=DMP_SECRET,
         validate=True, environ=None):
    """Call the WSGI app in-process through wsgiref.validate, as a WSGI server would.

    `validate=False` skips the validator, for environs it refuses but a sloppy server may send;
    `environ` adds CGI variables (e.g. REMOTE_ADDR).
    """
    raw = body_of(body)
    environ = {
        **(environ or {}),
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_TYPE": "application/json",
        "wsgi.input": io.BytesIO(raw),
        "wsgi.errors": sys.stderr,
    }
    if method == "POST":
        environ["CONTENT_LENGTH"] = str(len(raw))
    if signed and method == "POST":
        environ["HTTP_X_HMAC"] = sign(secret, raw)
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_LENGTH", "CONTENT_TYPE") else f"HTTP_{key}"] = value
    for name in [k for k, v in environ.items() if v is None]:
        del environ[name]
    wsgiref.util.setup_testing_defaults(environ)
    captured = {}

    def start_response(status, response_headers, exc_info=None):
        captured["status"] = int(status.split()[0])
        captured["headers"] = response_headers

    result = (wsgiref.validate.validator(app) if validate else app)(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return Response(captured["status"], captured["headers"], body)


class WebhookReceiver:
    """A webhook receiver on pytest-httpserver: verifies each signature, keeps the membership.

    `script` lists statuses to answer (in order) before answering 200; a 200 from the script
    (or after it) is applied. `members[dmp_id]` is the set of external user ids in the audience.
    """

    def __init__(self, httpserver, path="/events", script=(), retry_after=None, created_id=None):
        import threading

        self.url = httpserver.url_for(path)
        self.script = list(script)
        self.retry_after = retry_after
        self.created_id = created_id
        self.events = []
        self.ids = []
        self.members = {}
        self.calls = 0
        self.lock = threading.Lock()
        httpserver.expect_request(path, method="POST").respond_with_handler(self.handle)

    def handle(self, request):
        import time

        from werkzeug import Response as WerkzeugResponse

        from targets.webhook import verify

        verify(WEBHOOK_SECRET, dict(request.headers), request.get_data(), now=time.time())
        with self.lock:
            self.calls += 1
            status = self.script.pop(0) if self.script else 200
            if status != 200:
                headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
                return WerkzeugResponse('{"error": "scripted failure"}', status=status, headers=headers)
            event = json.loads(request.get_data())
            self.events.append(event)
            self.ids.append(request.headers["webhook-id"])
            audience = event["data"]["audience"]
            members = self.members.setdefault(audience["dmp_id"], set())
            users = {member["external_user_id"] for member in event["data"].get("members", [])}
            if event["type"] == "audience.members_added":
                members |= users
            elif event["type"] == "audience.members_removed":
                members -= users
            answer = {"id": self.created_id} if event["type"] == "audience.created" and self.created_id else {}
            return WerkzeugResponse(json.dumps(answer), status=200, content_type="application/json")

    def delivered(self, event_type):
        return [event for event in self.events if event["type"] == event_type]


SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')


def parse_metrics(text):
    """{(name, ((label, value), ...)): float} from the Prometheus text format; checks every line."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        pairs = tuple(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


def hold_calls(httpserver, path="/events", *, status=200, after_first_delivery=None, wait=60):
    """A platform that holds its calls to `path` until `release` is set, then answers `status`;
    returns (held, release), `held` set once a call is held. With `after_first_delivery` (a
    WebhookReceiver) only the first members delivery is held and every other call goes to it.
    pytest-httpserver answers one request at a time: nothing else is answered meanwhile."""
    import threading

    from werkzeug import Response as WerkzeugResponse

    held, release = threading.Event(), threading.Event()

    def handle(request):
        if after_first_delivery is not None and (held.is_set() or b"members_added" not in request.get_data()):
            return after_first_delivery.handle(request)
        held.set()
        release.wait(wait)
        return WerkzeugResponse("{}", status=status)

    httpserver.clear_all_handlers()
    httpserver.expect_request(path).respond_with_handler(handle)
    return held, release
