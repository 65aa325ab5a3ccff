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
    database = tmp_path / "outbox.sqlite3"
    text = config_text(database, receiver_url, **processes.metrics_within(tmp_path, database, sections))
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
