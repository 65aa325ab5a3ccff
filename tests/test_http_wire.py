"""HttpClient's HTTP/1.1 on the wire: framings, interim answers, limits, malformed answers, TLS.

Unusual answers come from RawServer, which sends scripted bytes over a plain socket.
"""
import socket
import ssl
import threading

import pytest

from targets.errors import TransientError
from targets.http import HttpClient, _host_header
from targets.http_wire import MAX_HEADER_LINES, MAX_LINE_BYTES

CLOSE = object()
"""In a RawServer script: close the connection here."""

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class RawServer:
    """Answers each request with the script's next bytes; records (connection number, request)."""

    def __init__(self, *script, tls=None):
        self.script = list(script)
        self.requests = []
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def url(self, path="/"):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def stop(self):
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()

    def _serve(self):
        number = 0
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except socket.timeout:
                continue
            number += 1
            try:
                connection.settimeout(5)
                if self.tls:
                    connection = self.tls.wrap_socket(connection, server_side=True)
                self._answer(connection, number)
            except OSError:
                pass
            finally:
                connection.close()

    def _answer(self, connection, number):
        reader = connection.makefile("rb")
        while self.script:
            request = _read_request(reader)
            if not request:
                return
            self.requests.append((number, request))
            answer = self.script.pop(0)
            closing = bool(self.script) and self.script[0] is CLOSE
            if closing:
                self.script.pop(0)
            connection.sendall(answer)
            if closing:
                return


def _read_request(reader):
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline()
        if not line:
            return head
        head += line
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + reader.read(length)


@pytest.fixture
def raw_server():
    started = []

    def start(*script, tls=None):
        started.append(RawServer(*script, tls=tls))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def client():
    http = HttpClient(timeout=5.0)
    yield http
    http.close()


def connection_numbers(server):
    return [number for number, _ in server.requests]


def test_request_is_one_message_with_host_length_and_the_callers_headers(raw_server, client):
    server = raw_server(OK)

    client.request("POST", server.url("/hook?x=1"), body=b"abc", headers={"X-Signature": "v1,s"})

    assert server.requests == [(1, (
        f"POST /hook?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Length: 3\r\n"
        "X-Signature: v1,s\r\nUser-Agent: diy-wsgi\r\n\r\nabc"
    ).encode())]


def test_post_without_body_says_content_length_0(raw_server, client):
    server = raw_server(OK)

    client.request("POST", server.url("/token"))

    assert b"\r\nContent-Length: 0\r\n" in server.requests[0][1]


@pytest.mark.parametrize(
    "origin, host",
    [(("https", "api.example", 443), "api.example"), (("http", "api.example", 8080), "api.example:8080"),
     (("http", "::1", 80), "[::1]"), (("https", "::1", 8443), "[::1]:8443")],
    ids=["default-port", "other-port", "ipv6", "ipv6-other-port"],
)
def test_host_header(origin, host):
    assert _host_header(origin) == host


@pytest.mark.parametrize(
    "headers",
    [{"X-Evil": "a\r\nInjected: yes"}, {"X-Evil\r\nInjected": "yes"}, {"X-Evil": "a\nb"}],
    ids=["crlf-in-value", "crlf-in-name", "lf-in-value"],
)
def test_header_injection_is_refused_before_anything_is_sent(raw_server, client, headers):
    server = raw_server(OK)

    with pytest.raises(ValueError):
        client.request("GET", server.url(), headers=headers)

    assert server.requests == []


def test_content_length_body_over_a_kept_connection(httpserver, client):
    httpserver.expect_request("/data").respond_with_data(b"x" * 20000)

    bodies = [client.request("GET", httpserver.url_for("/data")).body for _ in range(2)]

    assert bodies == [b"x" * 20000] * 2


def test_repeated_headers_are_joined_and_names_are_case_insensitive(raw_server, client):
    server = raw_server(b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-CASE: v\r\nset-cookie: b=2\r\n"
                        b"Content-Length: 0\r\n\r\n")

    response = client.request("GET", server.url())

    assert (response.header("Set-Cookie"), response.header("x-case")) == ("a=1, b=2", "v")


def test_chunked_body_with_extensions_and_trailers(raw_server, client):
    server = raw_server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n1\r\n \r\nA \r\nworld, hi!\r\n0\r\nX-Checksum: 1\r\n\r\n",
        OK,
    )

    first = client.request("GET", server.url())
    second = client.request("GET", server.url())

    assert (first.body, second.body) == (b"hello world, hi!", b"ok")
    assert connection_numbers(server) == [1, 1]


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.0 200 OK\r\n\r\nuntil the end", b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"],
    ids=["http-1.0", "connection-close"],
)
def test_body_delimited_by_close_is_read_whole_and_not_reused(raw_server, client, answer):
    server = raw_server(answer, CLOSE, OK)

    first = client.request("GET", server.url())
    second = client.request("GET", server.url())

    assert (first.body, second.body) == (b"until the end", b"ok")
    assert connection_numbers(server) == [1, 2]


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
    ids=["http-1.0", "connection-close"],
)
def test_a_connection_the_server_closes_is_not_reused(raw_server, client, answer):
    server = raw_server(answer, CLOSE, OK)

    client.request("GET", server.url())
    client.request("GET", server.url())

    assert connection_numbers(server) == [1, 2]


def test_interim_answers_are_skipped(raw_server, client):
    server = raw_server(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
                        + OK)

    response = client.request("GET", server.url())

    assert (response.status, response.body, response.header("link")) == (200, b"ok", None)


@pytest.mark.parametrize(
    "method, status_line",
    [("GET", b"HTTP/1.1 204 No Content"), ("GET", b"HTTP/1.1 304 Not Modified"), ("HEAD", b"HTTP/1.1 200 OK")],
    ids=["204", "304", "head"],
)
def test_answers_without_a_body_leave_the_connection_reusable(raw_server, client, method, status_line):
    server = raw_server(status_line + b"\r\nContent-Length: 5\r\n\r\n", OK)

    first = client.request(method, server.url())
    second = client.request("GET", server.url())

    assert (first.body, second.body) == (b"", b"ok")
    assert connection_numbers(server) == [1, 1]


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: two\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
        b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok",
        b"HTTP/1.1 200 " + b"K" * MAX_LINE_BYTES + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"v" * MAX_LINE_BYTES + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Many: v\r\n" * (MAX_HEADER_LINES + 1) + b"\r\n",
    ],
    ids=["status-not-a-number", "not-http", "bad-chunk-size", "negative-length", "non-numeric-length",
         "conflicting-lengths", "header-without-colon", "body-shorter-than-length", "status-line-too-long",
         "header-line-too-long", "too-many-headers"],
)
def test_invalid_answer_is_transient_and_drops_the_connection(raw_server, client, answer):
    server = raw_server(answer, CLOSE, OK)

    with pytest.raises(TransientError, match=f"127.0.0.1:{server.port}: the answer was not valid HTTP"):
        client.request("GET", server.url())
    assert client.request("GET", server.url()).body == b"ok"

    assert connection_numbers(server) == [1, 2]


def test_the_most_headers_allowed_are_read(raw_server, client):
    server = raw_server(b"HTTP/1.1 200 OK\r\n" + b"X-Many: v\r\n" * (MAX_HEADER_LINES - 1)
                        + b"Content-Length: 2\r\n\r\nok")

    assert client.request("GET", server.url()).body == b"ok"


def test_oversize_body_delimited_by_close_is_transient(raw_server):
    server = raw_server(b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 51, CLOSE)
    client = HttpClient(max_response_bytes=50)
    try:
        with pytest.raises(TransientError, match="larger than 50 bytes"):
            client.request("GET", server.url())
    finally:
        client.close()


def server_tls(certificate):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def test_https_with_a_trusted_certificate(raw_server, certificate):
    server = raw_server(OK, OK, tls=server_tls(certificate))
    client = HttpClient(timeout=5.0, ssl_context=ssl.create_default_context(cafile=str(certificate[0])))
    try:
        bodies = [client.request("GET", server.url()).body for _ in range(2)]
    finally:
        client.close()

    assert bodies == [b"ok", b"ok"]
    assert connection_numbers(server) == [1, 1]


def test_https_with_an_untrusted_certificate_is_transient(raw_server, certificate, client):
    server = raw_server(OK, tls=server_tls(certificate))

    with pytest.raises(TransientError, match="TLS certificate not accepted"):
        client.request("GET", server.url())

    assert server.requests == []
