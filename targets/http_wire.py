"""HTTP/1.1 on one socket for `targets.http.HttpClient`: writing a request, reading its answer.

It exists because `http.client` made each delivery expensive: a keep-alive POST of 12 KB cost
0.21-0.30 ms of CPU through it against 0.05 ms over a raw socket, spent on a `putheader` call per
header, two sends (head, then body), a new socket file object per answer and the email package
parsing the answer's headers. Here a request is one `sendall`, and each connection keeps one
buffered reader for its whole life.

Only what a client of platform APIs needs: Content-Length, chunked and close-delimited bodies,
1xx interim answers skipped, keep-alive unless the server says otherwise. Lines, header counts
and bodies are bounded so a hostile server cannot exhaust memory.
"""
from __future__ import annotations

import re
import socket
import ssl
from typing import Dict, Mapping, NamedTuple, Optional

MAX_LINE_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
MAX_INTERIM_ANSWERS = 10
METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n]*)?\r?\n")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,19}")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_NAME = re.compile(r"[^:\s][^:\r\n]*")
_REQUEST_TARGET = re.compile(r"[^\x00-\x20\x7f]+")


class InvalidAnswer(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


class AnswerTooLarge(Exception):
    """The answer's body is larger than the caller's limit."""


class ClosedWithoutAnswer(ConnectionResetError):
    """The server closed the connection before the status line."""


class Answer(NamedTuple):
    status: int
    headers: Dict[str, str]
    body: bytes
    keep_alive: bool


class Connection:
    """One socket to one origin and the one buffered reader over it, opened at the first use."""

    def __init__(self, host: str, port: int, timeout: float, ssl_context: Optional[ssl.SSLContext]):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.sock = None
        self.reader = None

    def set_timeout(self, timeout: float) -> None:
        self.timeout = timeout
        if self.sock is not None:
            self.sock.settimeout(timeout)

    def exchange(self, message: bytes, method: str, max_body: int) -> Answer:
        """Send the request `message` and read the whole answer to it."""
        if self.sock is None:
            self._open()
        self.sock.sendall(message)
        return read_answer(self.reader, method, max_body)

    def close(self) -> None:
        if self.sock is not None:
            self.reader.close()
            self.sock.close()
            self.sock = self.reader = None

    def _open(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.reader = sock.makefile("rb")


def request_message(method: str, target: str, host: str, headers: Mapping[str, str],
                    body: Optional[bytes], user_agent: str) -> bytes:
    """The request's head and body as one message; ValueError on a header that would split it.

    Host, Content-Length and User-Agent are added unless `headers` has them.
    """
    if not _TOKEN.fullmatch(method) or not _REQUEST_TARGET.fullmatch(target):
        raise ValueError("the method or the URL's path contains characters HTTP does not allow")
    lines = [f"{method} {target} HTTP/1.1"]
    given = {name.lower() for name in headers}
    if "host" not in given:
        lines.append(f"Host: {host}")
    if "content-length" not in given and "transfer-encoding" not in given:
        if body is not None or method.upper() in METHODS_WITH_BODY:
            lines.append(f"Content-Length: {len(body or b'')}")
    for name, value in headers.items():
        value = str(value)
        if not _HEADER_NAME.fullmatch(name) or "\r" in value or "\n" in value:
            raise ValueError(f"invalid header name or value (header {name[:40]!r})")
        lines.append(f"{name}: {value}")
    if "user-agent" not in given:
        lines.append(f"User-Agent: {user_agent}")
    lines.append("\r\n")
    head = "\r\n".join(lines).encode("latin-1")
    return head + body if body else head


def read_answer(reader, method: str, max_body: int) -> Answer:
    """Read one final answer from `reader`, skipping 1xx interim ones; the body at most `max_body`."""
    version, status, headers = _read_head(reader)
    for _ in range(MAX_INTERIM_ANSWERS):
        if not 100 <= status < 200:
            break
        version, status, headers = _read_head(reader)
    else:
        raise InvalidAnswer(f"more than {MAX_INTERIM_ANSWERS} interim answers")
    keep_alive = _keeps_alive(version, headers)
    if method.upper() == "HEAD" or status in (204, 304):
        return Answer(status, headers, b"", keep_alive)
    if "transfer-encoding" in headers:
        return _transfer_encoded(reader, status, headers, max_body, keep_alive)
    length = _content_length(headers)
    if length is None:
        return Answer(status, headers, _read_to_close(reader, max_body), False)
    if length > max_body:
        raise AnswerTooLarge()
    return Answer(status, headers, _read_exactly(reader, length), keep_alive)


def _read_head(reader):
    """(minor version, status, headers) of one answer."""
    line = reader.readline(MAX_LINE_BYTES + 1)
    if not line:
        raise ClosedWithoutAnswer("the server closed the connection without answering")
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise InvalidAnswer("a malformed status line")
    return int(match.group(1)), int(match.group(2)), _read_fields(reader)


def _read_fields(reader) -> Dict[str, str]:
    """Header (or trailer) fields up to the empty line; names lower-cased, repeats joined by ', '."""
    fields: Dict[str, str] = {}
    name = None
    for _ in range(MAX_HEADER_LINES + 1):
        line = _read_line(reader)
        if line in ("\r\n", "\n"):
            return fields
        if line[0] in " \t" and name is not None:
            fields[name] = f"{fields[name]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        name = name.lower()
        if not colon or not _TOKEN.fullmatch(name):
            raise InvalidAnswer("a malformed header line")
        value = value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    raise InvalidAnswer(f"more than {MAX_HEADER_LINES} header lines")


def _read_line(reader) -> str:
    line = reader.readline(MAX_LINE_BYTES + 1)
    if len(line) > MAX_LINE_BYTES:
        raise InvalidAnswer(f"a line longer than {MAX_LINE_BYTES} bytes")
    if not line.endswith(b"\n"):
        raise InvalidAnswer("the answer ended in its head")
    return line.decode("latin-1")


def _keeps_alive(version: int, headers: Mapping[str, str]) -> bool:
    """HTTP/1.1 keeps the connection unless told to close it, HTTP/1.0 only when told to keep it."""
    value = headers.get("connection")
    if value is None:
        return version == 1
    tokens = {token.strip().lower() for token in value.split(",")}
    return "keep-alive" in tokens if version == 0 else "close" not in tokens


def _content_length(headers: Mapping[str, str]) -> Optional[int]:
    """The one Content-Length, None when absent; repeated values must agree."""
    value = headers.get("content-length")
    if value is None:
        return None
    lengths = {length.strip() for length in value.split(",")}
    if len(lengths) != 1 or not _DIGITS.fullmatch(next(iter(lengths))):
        raise InvalidAnswer("an invalid Content-Length")
    return int(lengths.pop())


def _transfer_encoded(reader, status, headers, max_body, keep_alive) -> Answer:
    """Chunked when chunked is the last coding, else delimited by the connection's close.

    With a Content-Length too the connection is dropped afterwards: the two framings disagree.
    """
    if headers["transfer-encoding"].split(",")[-1].strip().lower() != "chunked":
        return Answer(status, headers, _read_to_close(reader, max_body), False)
    keep_alive = keep_alive and "content-length" not in headers
    return Answer(status, headers, _read_chunked(reader, max_body), keep_alive)


def _read_chunked(reader, max_body: int) -> bytes:
    chunks = []
    total = 0
    while True:
        size = _chunk_size(reader)
        if size == 0:
            _read_fields(reader)
            return b"".join(chunks)
        total += size
        if total > max_body:
            raise AnswerTooLarge()
        chunks.append(_read_exactly(reader, size))
        if _read_line(reader) not in ("\r\n", "\n"):
            raise InvalidAnswer("a chunk longer than its size")


def _chunk_size(reader) -> int:
    size = _read_line(reader).partition(";")[0].strip().encode("latin-1")
    if not _CHUNK_SIZE.fullmatch(size):
        raise InvalidAnswer("an invalid chunk size")
    return int(size, 16)


def _read_exactly(reader, length: int) -> bytes:
    data = reader.read(length)
    if len(data) < length:
        raise InvalidAnswer("the answer ended in its body")
    return data


def _read_to_close(reader, max_body: int) -> bytes:
    data = reader.read(max_body + 1)
    if len(data) > max_body:
        raise AnswerTooLarge()
    return data
