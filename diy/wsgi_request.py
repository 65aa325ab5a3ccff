"""Reading what a WSGI request carries, for diy_wsgi.py: its request id, its `?type=`, its Basic
Auth credentials and its body (the declared length checked against the limit before a byte is
read). Each problem is raised as the `HttpError` the client gets.
"""
import base64
import binascii
import hmac
import re
import secrets
from urllib.parse import parse_qs

from diy.http_errors import BadRequest, LengthRequired, PayloadTooLarge, Unauthorized

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_type_of(environ):
    values = parse_qs(environ.get("QUERY_STRING", "")).get("type")
    return values[0].strip().upper() if values else None


def request_id_of(environ):
    offered = environ.get("HTTP_X_REQUEST_ID", "")
    return offered if REQUEST_ID.fullmatch(offered) else secrets.token_hex(8)


def check_basic_auth(integration, environ):
    if integration.basic_auth is None:
        return
    challenge = [("WWW-Authenticate", f'Basic realm="diy-wsgi {integration.name}", charset="UTF-8"')]
    scheme, _, encoded = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    try:
        user, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        user = password = ""
    expected_user, expected_password = integration.basic_auth
    same_user = hmac.compare_digest(user.encode(), expected_user.encode())
    same_password = hmac.compare_digest(password.encode(), expected_password.encode())
    if scheme.lower() != "basic" or not (same_user and same_password):
        raise Unauthorized("Basic Auth credentials are missing or wrong", challenge)


def read_body(environ, limit):
    """At most `limit` bytes of body; the declared length is checked before anything is read."""
    declared = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if not declared:
        if environ.get("wsgi.input_terminated"):
            raw = read_from(stream, limit + 1)
            if len(raw) > limit:
                raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
            return raw
        if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            raise LengthRequired("send a Content-Length header")
        return b""
    try:
        length = int(declared)
    except ValueError:
        raise BadRequest("the Content-Length header is not a number") from None
    if length < 0:
        raise BadRequest("the Content-Length header is negative")
    if length > limit:
        raise PayloadTooLarge(f"the body of {length} bytes is larger than the limit of {limit} bytes")
    chunks, remaining = [], length
    while remaining:
        chunk = read_from(stream, remaining)
        if not chunk:
            raise BadRequest(f"the body ended after {length - remaining} of {length} bytes")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_from(stream, size):
    """The server's reader fails in its own ways on a malformed or cut-off body (gunicorn's
    InvalidChunkSize, NoMoreData): whichever it raises, the client sent a broken body."""
    try:
        return stream.read(size)
    except Exception as error:
        raise BadRequest(f"the body could not be read ({type(error).__name__})") from None
