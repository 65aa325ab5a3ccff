"""The HTTP client every target shares, and the reading of platform answers into `targets.errors`.

`HttpClient` keeps idle keep-alive connections per (scheme, host, port) and lends each to one
thread at a time. It never follows redirects: a 3xx is returned like any other answer, and
`raise_for_status` turns it into a PermanentError, because a redirected POST would either lose
its body or carry a signed payload to a host nobody configured.

Failures to talk at all (refused, reset, DNS, timeout, TLS, an answer that is not valid HTTP or
is over `max_response_bytes`) raise TransientError naming host:port and the reason, never the
request's headers or body. The HTTP/1.1 itself is read and written by `targets.http_wire`.
"""
from __future__ import annotations

import email.utils
import functools
import json
import re
import socket
import ssl
import threading
import time
from datetime import timezone
from typing import Dict, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from targets import http_wire
from targets.errors import CredentialsRefused, PayloadTooLarge, PermanentError, TransientError

Origin = Tuple[str, str, int]

STALE_CONNECTION_ERRORS = (http_wire.ClosedWithoutAnswer, ConnectionResetError, BrokenPipeError)
"""What a reused idle connection raises when the server closed it while it sat in the pool."""

DEFAULT_PORTS = {"http": 80, "https": 443}
RETRYABLE_STATUSES = frozenset({408, 425, 429})
CREDENTIAL_STATUSES = frozenset({401, 403})
"""Who we are (401) or what we may do (403): our configuration, not the data."""
EXCERPT_CHARS = 200
_DELAY_SECONDS = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")


class HttpResponse:
    """A complete answer: `status`, `headers` (names lower-cased), `body` bytes."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes = b""):
        self.status = status
        self.headers = {name.lower(): value for name, value in headers.items()}
        self.body = body

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self.headers.get(name.lower(), default)

    def json(self):
        """The parsed body, or None when it is not valid UTF-8 JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None

    def __repr__(self):
        return f"<HttpResponse {self.status}, {len(self.body)} bytes>"


class HttpClient:
    """A thread-safe keep-alive client over `targets.http_wire`, shared by all targets and threads.

    `timeout` bounds the connect and every single read or write, not the whole exchange.
    """

    def __init__(
        self,
        timeout: float = 10.0,
        max_idle_per_origin: int = 8,
        max_response_bytes: int = 4 * 1024 * 1024,
        user_agent: str = "diy-wsgi",
        ssl_context: Optional[ssl.SSLContext] = None,
    ):
        self.timeout = timeout
        self.max_idle_per_origin = max_idle_per_origin
        self.max_response_bytes = max_response_bytes
        self.user_agent = user_agent
        self.ssl_context = ssl_context or ssl.create_default_context()
        self._idle: Dict[Origin, List[http_wire.Connection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def request(
        self,
        method: str,
        url: str,
        body: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> HttpResponse:
        """Send one request and read the whole answer; a 3xx is returned, not followed.

        A reused connection the server has meanwhile closed is replaced by a fresh one once;
        that may repeat a request the server half-read, which the targets' at-least-once
        contract already allows.
        """
        origin, path = _split_url(url)
        message = http_wire.request_message(
            method, path, _host_header(origin), headers or {}, body, self.user_agent
        )
        timeout = self.timeout if timeout is None else timeout
        connection, reused = self._checkout(origin, timeout)
        try:
            try:
                answer = connection.exchange(message, method, self.max_response_bytes)
            except STALE_CONNECTION_ERRORS:
                if not reused:
                    raise
                connection.close()
                connection = self._connect(origin, timeout)
                answer = connection.exchange(message, method, self.max_response_bytes)
        except http_wire.AnswerTooLarge:
            connection.close()
            raise self._too_large(origin) from None
        except (OSError, http_wire.InvalidAnswer) as error:
            connection.close()
            raise TransientError(f"{_host_port(origin)}: {_describe(error, timeout)}") from error
        except BaseException:
            connection.close()
            raise
        if answer.keep_alive:
            self._checkin(origin, connection)
        else:
            connection.close()
        return HttpResponse(answer.status, answer.headers, answer.body)

    def close(self) -> None:
        """Close the idle connections; those in use are closed when their request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _too_large(self, origin) -> TransientError:
        return TransientError(
            f"{_host_port(origin)}: the response is larger than {self.max_response_bytes} bytes;"
            " it was dropped with its connection and the request counts as failed"
        )

    def _checkout(self, origin: Origin, timeout: float):
        with self._lock:
            if self._closed:
                raise RuntimeError("the HttpClient is closed")
            idle = self._idle.get(origin)
            connection = idle.pop() if idle else None
        if connection is None:
            return self._connect(origin, timeout), False
        connection.set_timeout(timeout)
        return connection, True

    def _checkin(self, origin: Origin, connection: http_wire.Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if not self._closed and len(idle) < self.max_idle_per_origin:
                idle.append(connection)
                return
        connection.close()

    def _connect(self, origin: Origin, timeout: float) -> http_wire.Connection:
        scheme, host, port = origin
        context = self.ssl_context if scheme == "https" else None
        return http_wire.Connection(host, port, timeout, context)


def parse_retry_after(value: Optional[str], now: float) -> Optional[float]:
    """Seconds to wait from `now` (Unix seconds) per a Retry-After value; None if unusable.

    Takes delay-seconds (also with a fraction) or an HTTP-date; a date in the past gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, moment.timestamp() - now)


def raise_for_status(response: HttpResponse, what: str, now: Optional[float] = None) -> None:
    """Return on a 2xx; otherwise raise the error the shared table gives the status.

    `what` names the other side for the message, e.g. 'the webhook receiver'; `now` (Unix
    seconds, default the wall clock) is what an HTTP-date Retry-After is counted from.
    """
    status = response.status
    if 200 <= status < 300:
        return
    message = f"{what} answered {status_summary(response)}"
    if status in CREDENTIAL_STATUSES:
        raise CredentialsRefused(f"{what} refused our credentials ({status_summary(response)}); a configuration "
                                 "error on our side: check the target's credentials")
    if status == 413:
        raise PayloadTooLarge(message)
    if status in RETRYABLE_STATUSES or status >= 500:
        now = time.time() if now is None else now
        retry_after = parse_retry_after(response.header("retry-after"), now)
        raise TransientError(message, retry_after=retry_after)
    raise PermanentError(message)


def status_summary(response: HttpResponse) -> str:
    """`HTTP 400: <the platform's reason>`, for messages operators and marketers read."""
    if 300 <= response.status < 400:
        location = response.header("location")
        where = f" to {location}" if location else ""
        return f"HTTP {response.status}, a redirect{where} that was not followed"
    reason = _reason(response)
    return f"HTTP {response.status}: {reason}" if reason else f"HTTP {response.status}"


def _reason(response: HttpResponse) -> str:
    """The body's "error" or "message" string, else a short printable excerpt of the body."""
    document = response.json()
    if isinstance(document, dict):
        for key in ("error", "message"):
            value = document.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            if isinstance(value, str) and value.strip():
                return _excerpt(value)
    return _excerpt(response.body.decode("utf-8", "replace"))


def _excerpt(text: str) -> str:
    printable = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    if len(printable) > EXCERPT_CHARS:
        return printable[: EXCERPT_CHARS - 1] + "…"
    return printable


@functools.lru_cache(maxsize=256)
def _split_url(url: str) -> Tuple[Origin, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("only absolute http and https URLs can be requested")
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return (parts.scheme, parts.hostname, port), path


def _host_port(origin: Origin) -> str:
    _, host, port = origin
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@functools.lru_cache(maxsize=256)
def _host_header(origin: Origin) -> str:
    """The Host header's value: the port only when not the scheme's default."""
    scheme, host, port = origin
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    if port == DEFAULT_PORTS[scheme]:
        return f"[{host}]" if ":" in host else host
    return _host_port((scheme, host, port))


def _describe(error: Exception, timeout: float) -> str:
    if isinstance(error, socket.gaierror):
        return f"the host name could not be resolved ({error.strerror})"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} seconds"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, http_wire.ClosedWithoutAnswer):
        return "the server closed the connection without answering"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted ({error.verify_message})"
    if isinstance(error, http_wire.InvalidAnswer):
        return f"the answer was not valid HTTP ({error})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__
