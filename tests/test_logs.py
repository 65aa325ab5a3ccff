"""Log lines cannot be forged: every value from outside stays one value on one line.

A path, an audience id or a platform's reason may hold newlines, terminal escapes, NUL bytes or
` status=200`-like text. The text format quotes and escapes such a value, the JSON format takes
each field from the value itself, and a traceback's lines are indented.
"""
import io
import json
import logging
import re
import socket

import pytest

from diy import logs
from diy_wsgi import make_app
from tests.processes import Diy, free_port, wait_for_port, wait_until, write_config
from tests.support import call, make_config

FORGED = "2026-11-27 05:34:21,000 INFO diy.receiver request method=POST path=/dmp status=200 request_id=forged"
HOSTILE = {
    "newline": f"/x\n{FORGED}",
    "carriage-return": f"/x\r{FORGED}",
    "unicode-line-separators": "/x\u2028a\u2029b\x85c",
    "escape-and-nul": "/x\x1b[2J\x1b]0;owned\x07\x00",
    "bidi-override": "/x\u202egnp.exe",
    "field-injection": "/x status=200 request_id=forged",
    "quotes-and-backslashes": '/x" status="200\\" y=\\',
    "empty": "",
}
LOGFMT_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^ "]*)')


def unquote(token):
    """A text-format value back to the original: what a logfmt reader would do."""
    if not token.startswith('"'):
        return token
    return json.loads(re.sub(r"\\x([0-9a-f]{2})", r"\\u00\1", token))


@pytest.fixture
def captured():
    """diy-wsgi's logs, configured as the service does, into a string: captured(style) -> stream."""
    def configure(style="text"):
        stream = io.StringIO()
        logs.configure("debug", style, stream)
        return stream

    yield configure
    logger = logging.getLogger("diy")
    logger.handlers.clear()
    logger.propagate, logger.level = True, logging.NOTSET


@pytest.fixture
def app(tmp_path):
    app = make_app(make_config(tmp_path, "http://127.0.0.1:9/events"))
    yield app
    app.stop()


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_value_is_one_quoted_token_on_one_line_in_text(captured, value):
    stream = captured("text")

    logging.getLogger("diy.receiver").info("request path=%s status=%d request_id=%s", value, 404, "real")

    (line,) = stream.getvalue().splitlines()
    assert line.isprintable()
    message = line.split(" diy.receiver ", 1)[1]
    assert message.startswith("request path=")
    assert [(key, unquote(token)) for key, token in LOGFMT_FIELD.findall(message)] == [
        ("path", value), ("status", "404"), ("request_id", "real")]


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_value_is_exactly_its_field_in_json(captured, value):
    stream = captured("json")

    logging.getLogger("diy.receiver").info("request path=%s status=%d request_id=%s", value, 404, "real")

    (line,) = stream.getvalue().splitlines()
    assert line.isascii() and line.isprintable()
    record = json.loads(line)
    assert (record["event"], record["path"], record["status"], record["request_id"]) == ("request", value, "404", "real")


def test_a_path_cannot_override_the_request_fields_in_json(captured, app):
    stream = captured("json")

    call(app, "GET", path="/x status=200 type=ADD_TO_AUDIENCE request_id=forged", headers={"X-Request-Id": "req-7"})

    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert (record["status"], record["type"], record["request_id"]) == ("404", "-", "req-7")
    assert record["path"] == "/x status=200 type=ADD_TO_AUDIENCE request_id=forged"


def test_a_traceback_is_indented_and_escaped_under_its_record(captured):
    stream = captured("text")

    try:
        raise ValueError(f"bad id\n{FORGED}\x1b[2J")
    except ValueError:
        logging.getLogger("diy.receiver").exception("request failed request_id=%s", "real")

    first, *traceback = stream.getvalue().splitlines()
    assert first.endswith("ERROR diy.receiver request failed request_id=real")
    assert traceback and all(line.startswith("    ") and line.isprintable() for line in traceback)


def test_a_request_through_serve_cannot_forge_a_log_line(tmp_path):
    """The issue's attack on the real server: a percent-encoded newline, ESC and NUL in the path."""
    port = free_port()
    server = Diy(tmp_path, "serve", "--config", write_config(tmp_path, "http://127.0.0.1:9/events"),
                     "--port", port, name="serve")
    try:
        wait_for_port(port, server)
        path = "/x%0a" + FORGED.replace(" ", "%20") + "%1b[2J%00/../dmp"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            answer = b"".join(iter(lambda: connection.recv(65536), b""))
        assert answer.startswith(b"HTTP/1.0 404") or answer.startswith(b"HTTP/1.1 404")
        wait_until(lambda: "request method=GET" in server.output(), what="the request's log line", processes=[server])
    finally:
        server.kill()
    output = server.output()
    assert "\x1b" not in output and "\x00" not in output
    assert not any(line.startswith("2026-11-27") for line in output.splitlines()), output
    (line,) = [line for line in output.splitlines() if "request method=GET" in line]
    assert 'path="/x\\n2026-11-27' in line and "status=404" in line
