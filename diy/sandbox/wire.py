"""What the sandbox's handlers take and give: a `Request`, a `Reply`, and errors raised deep.

Handlers never touch the socket: they take a complete `Request` and return a `Reply`, or raise
a `SandboxError`, which the server renders once (`error.reply()`). Each platform renders its
errors the way that platform does (The Trade Desk in plain text, Criteo as an `errors` array).
"""
import json
from typing import Any, Dict, Mapping, Optional, Tuple


class Request:
    """One complete HTTP request: `headers` has lower-cased names, `query` maps name to value."""

    def __init__(self, method: str, path: str, query: Mapping[str, str] = None,
                 headers: Mapping[str, str] = None, body: bytes = b""):
        self.method = method
        self.path = path
        self.query = dict(query or {})
        self.headers = {name.lower(): value for name, value in (headers or {}).items()}
        self.body = body

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self.headers.get(name.lower(), default)


class Reply:
    """One complete answer; `headers` are extra ones (Content-Type and -Length are set here)."""

    def __init__(self, status: int, body: bytes = b"", content_type: str = "application/json",
                 headers: Tuple[Tuple[str, str], ...] = ()):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = tuple(headers)

    def with_headers(self, *headers: Tuple[str, str]) -> "Reply":
        return Reply(self.status, self.body, self.content_type, self.headers + tuple(headers))


class Exchange:
    """One platform call as the sandbox answered it, for `Sandbox.listeners`: `api`, the
    `request`, the `reply`, the fault kind that replaced or delayed it (None: none), and the
    `refusal` (the SandboxError) when the platform refused the request itself."""

    def __init__(self, api: str, request: Request, reply: Reply, fault: Optional[str],
                 refusal: Optional["SandboxError"]):
        self.api, self.request, self.reply, self.fault, self.refusal = api, request, reply, fault, refusal


def json_reply(status: int, document: Any, headers=()) -> Reply:
    return Reply(status, json.dumps(document).encode("utf-8"), "application/json", headers)


def text_reply(status: int, text: str, headers=()) -> Reply:
    return Reply(status, text.encode("utf-8"), "text/plain; charset=utf-8", headers)


def read_json(request: Request, what: str = "the body") -> Any:
    """The parsed UTF-8 JSON body; BadRequest (without the body) when it is not strict JSON
    (NaN and Infinity are not JSON: RFC 8259)."""
    try:
        return json.loads(request.body.decode("utf-8"), parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest(f"{what} is not UTF-8 JSON") from None


def _not_json(token: str):
    raise ValueError(f"{token} is not JSON")


def as_object(value: Any, what: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


class SandboxError(Exception):
    """A request the sandbox refuses; rendered once by the server as `{"error": message}`."""

    status = 500

    def __init__(self, message: str, headers=()):
        super().__init__(message)
        self.message = message
        self.headers = tuple(headers)

    def reply(self) -> Reply:
        return json_reply(self.status, {"error": self.message}, self.headers)


class BadRequest(SandboxError):
    """The request is malformed; the message says what is wrong."""

    status = 400


class Unauthorized(SandboxError):
    """The credentials or the signature are missing or wrong."""

    status = 401


class Forbidden(SandboxError):
    """A browser page of another origin, or a Host that is not this machine (DNS rebinding)."""

    status = 403


class NotFound(SandboxError):
    """Nothing is served at this path."""

    status = 404


class MethodNotAllowed(SandboxError):
    """The path exists but not for this method; `Allow` names the ones it takes."""

    status = 405

    def __init__(self, message: str, allow: str):
        super().__init__(message, [("Allow", allow)])


class LengthRequired(SandboxError):
    """A body was sent without Content-Length."""

    status = 411


class PayloadTooLarge(SandboxError):
    """The body (or its item count) is over the platform's limit."""

    status = 413


class SandboxConfigError(ValueError):
    """A sandbox setting (a command-line flag or a POST /api/faults field) is wrong."""
