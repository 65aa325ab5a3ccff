"""HttpClient against real local servers, and the pure reading of answers into errors."""
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from targets.errors import CredentialsRefused, PayloadTooLarge, PermanentError, TransientError
from targets.http import HttpClient, HttpResponse, parse_retry_after, raise_for_status

NOW = 1_795_757_661.0  # 2026-11-27T05:34:21Z


class ScriptedHandler(BaseHTTPRequestHandler):
    """Answers each path with one scripted behaviour; records (connection, path) per request."""

    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.connection_number = self.server.open_connection()
        self.answered = 0

    def do_GET(self):
        self.server.requests.append((self.connection_number, self.path))
        getattr(self, "answer_" + self.path.strip("/"))()
        self.answered += 1

    def answer_ok(self):
        self.reply(200, b"ok")

    def answer_closing(self):
        self.reply(200, b"ok", Connection="close")
        self.close_connection = True

    def answer_drop_reused(self):
        """Like a server whose keep-alive timer fired: a second request on a connection is cut."""
        if self.answered:
            self.close_connection = True
        else:
            self.reply(200, b"ok")

    def answer_drop(self):
        self.close_connection = True

    def answer_redirect(self):
        self.reply(302, b"", Location="/elsewhere")

    def answer_big(self):
        self.reply(200, b"x" * 100)

    def answer_big_chunked(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for _ in range(10):
            self.wfile.write(b"a\r\n" + b"x" * 10 + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def reply(self, status, body, **headers):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.requests = []
        self.connections = 0
        self.errors = []
        self._lock = threading.Lock()

    def open_connection(self):
        with self._lock:
            self.connections += 1
            return self.connections

    def handle_error(self, request, client_address):
        """Keep a handler's failure for the test to report; clients here hang up on purpose."""
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            self.errors.append(error)

    def url(self, path):
        return f"http://127.0.0.1:{self.server_port}{path}"


@pytest.fixture
def server():
    scripted = ScriptedServer()
    thread = threading.Thread(target=scripted.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield scripted
    scripted.shutdown()
    scripted.server_close()
    thread.join()
    assert scripted.errors == []


@pytest.fixture
def client():
    http = HttpClient(timeout=5.0)
    yield http
    http.close()


def test_keep_alive_reuses_one_connection_for_several_requests(server, client):
    statuses = [client.request("GET", server.url("/ok")).status for _ in range(5)]

    assert statuses == [200] * 5
    assert server.connections == 1


def test_connections_beyond_max_idle_are_closed(server):
    client = HttpClient(max_idle_per_origin=0)
    try:
        for _ in range(3):
            client.request("GET", server.url("/ok"))
    finally:
        client.close()

    assert server.requests == [(1, "/ok"), (2, "/ok"), (3, "/ok")]


def test_closed_client_refuses_new_requests(server):
    client = HttpClient()
    client.close()

    with pytest.raises(RuntimeError, match="closed"):
        client.request("GET", server.url("/ok"))

    assert server.requests == []


def test_connection_close_from_the_server_is_honoured(server, client):
    client.request("GET", server.url("/closing"))
    client.request("GET", server.url("/closing"))

    assert server.requests == [(1, "/closing"), (2, "/closing")]


def test_stale_reused_connection_is_retried_once_on_a_fresh_one(server, client):
    first = client.request("GET", server.url("/drop_reused"))
    second = client.request("GET", server.url("/drop_reused"))

    assert (first.status, second.status) == (200, 200)
    assert server.requests == [(1, "/drop_reused"), (1, "/drop_reused"), (2, "/drop_reused")]


def test_fresh_connection_closed_without_answer_is_transient_and_not_retried(server, client):
    with pytest.raises(TransientError, match="closed the connection without answering"):
        client.request("GET", server.url("/drop"))

    assert server.requests == [(1, "/drop")]


def test_concurrent_threads_share_the_pool_safely(server, client):
    statuses = []

    def five_requests():
        statuses.extend(client.request("GET", server.url("/ok")).status for _ in range(5))

    threads = [threading.Thread(target=five_requests) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * 20
    assert server.connections <= 4


def test_redirect_is_returned_not_followed(server, client):
    response = client.request("GET", server.url("/redirect"))

    assert response.status == 302
    assert response.header("Location") == "/elsewhere"
    assert server.requests == [(1, "/redirect")]


@pytest.mark.parametrize("path", ["/big", "/big_chunked"], ids=["content-length", "chunked"])
def test_oversize_response_is_transient_and_drops_the_connection(server, path):
    client = HttpClient(max_response_bytes=50)
    try:
        with pytest.raises(TransientError, match="larger than 50 bytes"):
            client.request("GET", server.url(path))
        client.request("GET", server.url("/ok"))
    finally:
        client.close()

    assert server.requests == [(1, path), (2, "/ok")]


def test_connection_refused_is_transient_and_names_host_and_port(client):
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]

        with pytest.raises(TransientError, match=f"127.0.0.1:{port}: connection refused"):
            client.request("POST", f"http://127.0.0.1:{port}/hook", body=b'{"secret":"s3cr3t"}')


def test_server_that_never_answers_times_out_as_transient(client):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]

        with pytest.raises(TransientError, match=f"127.0.0.1:{port}: no answer within 0.2 seconds"):
            client.request("GET", f"http://127.0.0.1:{port}/", timeout=0.2)


def test_transport_errors_never_carry_the_request(client):
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]

        with pytest.raises(TransientError) as raised:
            client.request(
                "POST", f"http://127.0.0.1:{port}/", body=b"member-12478286329",
                headers={"Authorization": "Bearer token-42"},
            )

    assert "12478286329" not in str(raised.value)
    assert "token-42" not in str(raised.value)


def test_response_headers_are_case_insensitive_and_json_is_lenient():
    response = HttpResponse(200, {"Content-Type": "application/json"}, b"not json")

    assert response.header("content-type") == response.headers["content-type"] == "application/json"
    assert response.json() is None
    assert HttpResponse(200, {}, b'{"id": 7}').json() == {"id": 7}


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("120", 120),
        (" 7 ", 7),
        ("1.5", 1.5),
        ("Fri, 27 Nov 2026 05:35:21 GMT", 60),
        ("Fri, 27 Nov 2026 05:00:00 GMT", 0),
        ("-5", None),
        ("soon", None),
        ("", None),
        ("nan", None),
        ("9" * 40, None),
    ],
    ids=["absent", "seconds", "padded", "fraction", "http-date", "date-in-the-past",
         "negative", "junk", "empty", "nan", "absurdly-long"],
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    "status, error",
    [
        (200, None), (201, None), (204, None),
        (413, PayloadTooLarge),
        (408, TransientError), (425, TransientError), (429, TransientError),
        (500, TransientError), (502, TransientError), (503, TransientError), (504, TransientError),
        (301, PermanentError), (400, PermanentError), (401, CredentialsRefused), (403, CredentialsRefused),
        (404, PermanentError), (410, PermanentError), (422, PermanentError),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)) if value else "returns",
)
def test_raise_for_status_table(status, error):
    response = HttpResponse(status, {}, b"")
    if error is None:
        raise_for_status(response, "the receiver", NOW)
    else:
        with pytest.raises(error) as raised:
            raise_for_status(response, "the receiver", NOW)
        assert type(raised.value) is error


@pytest.mark.parametrize(
    "retry_after, expected",
    [("30", 30), ("Fri, 27 Nov 2026 05:36:21 GMT", 120), (None, None)],
    ids=["seconds", "http-date", "absent"],
)
def test_transient_status_carries_retry_after(retry_after, expected):
    headers = {"Retry-After": retry_after} if retry_after else {}

    with pytest.raises(TransientError) as raised:
        raise_for_status(HttpResponse(429, headers, b""), "the receiver", NOW)

    assert raised.value.retry_after == expected


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"error": "name taken"}', "the receiver answered HTTP 400: name taken"),
        (b'{"message": "bad audience"}', "the receiver answered HTTP 400: bad audience"),
        (b'{"error": {"message": "nested"}}', "the receiver answered HTTP 400: nested"),
        (b"Bad\r\nRequest\x00", "the receiver answered HTTP 400: Bad Request"),
        (b"", "the receiver answered HTTP 400"),
        (b"y" * 500, "the receiver answered HTTP 400: " + "y" * 199 + "…"),
    ],
    ids=["json-error", "json-message", "nested-error", "text-made-printable", "empty", "long-text"],
)
def test_refusal_message_quotes_the_reason(body, message):
    with pytest.raises(PermanentError) as raised:
        raise_for_status(HttpResponse(400, {}, body), "the receiver", NOW)

    assert str(raised.value) == message


def test_redirect_refusal_names_the_location():
    response = HttpResponse(307, {"Location": "https://elsewhere.example/hook"}, b"")

    with pytest.raises(PermanentError) as raised:
        raise_for_status(response, "the receiver", NOW)

    assert str(raised.value) == (
        "the receiver answered HTTP 307, a redirect to https://elsewhere.example/hook"
        " that was not followed"
    )
