"""Criteo's side of the wire for the sandbox: its error shapes and the checks of its request
bodies (the sources of each check are in criteo.py's docstring). Each check raises a
`CriteoError` (or an `OAuthError` at the token endpoint) naming what is wrong."""
import json
import uuid
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import parse_qs

from diy.sandbox.wire import Reply, Request, SandboxError, json_reply

MAX_IDENTIFIER_CHARS = 256
SAMPLE_INVALID_MAX = 5
SEARCH_LIMIT_DEFAULT, SEARCH_LIMIT_MAX = 50, 100
IDENTIFIER_TYPES = ("email", "madid", "identityLink", "gum", "phoneNumber")
ERROR_TYPES = {400: "validation", 401: "authorization", 403: "authorization", 404: "not-found",
               410: "deprecation", 429: "quota"}


class CriteoError(SandboxError):
    """A refusal in Criteo's `errors` array shape."""

    def __init__(self, status: int, code: str, title: str, detail: str = "", headers=()):
        super().__init__(title, headers)
        self.status = status
        self.code = code
        self.detail = detail
        self.instance = ""

    def reply(self) -> Reply:
        entry = error_entry(self.status, self.code, self.message, self.detail, self.instance)
        return json_reply(self.status, {"errors": [entry]}, self.headers)


class OAuthError(SandboxError):
    """A token request refused the OAuth2 way: `{"error": code, "error_description": ...}`."""

    def __init__(self, status: int, code: str, description: str):
        super().__init__(description)
        self.status = status
        self.code = code

    def reply(self) -> Reply:
        return json_reply(self.status, {"error": self.code, "error_description": self.message})


def error_entry(status: int, code: str, title: str, detail: str = "", instance: str = "") -> Dict[str, str]:
    return {"traceIdentifier": str(uuid.uuid4()), "type": ERROR_TYPES.get(status, "unknown"),
            "code": code, "instance": instance, "title": title, "detail": detail}


def invalid(detail: str) -> CriteoError:
    return CriteoError(400, "invalid-request", "Invalid request", detail)


def token_form(request: Request) -> Dict[str, str]:
    """The token request's form fields; OAuthError when it is not a client-credentials grant."""
    if _media_type(request) != "application/x-www-form-urlencoded":
        raise OAuthError(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
    form = {name: values[0] for name, values in parse_qs(request.body.decode("utf-8", "replace")).items()}
    missing = [name for name in ("client_id", "client_secret", "grant_type") if not form.get(name)]
    if missing:
        raise OAuthError(400, "invalid_request", f"missing {', '.join(missing)}")
    if form["grant_type"] != "client_credentials":
        raise OAuthError(400, "unsupported_grant_type", "grant_type must be client_credentials")
    return form


def json_body(request: Request) -> Dict[str, Any]:
    """The JSON object an API call sends as `application/json`."""
    if _media_type(request) != "application/json":
        raise invalid("the Content-Type must be application/json")
    try:
        document = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise invalid("the body is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise invalid("the body must be a JSON object")
    return document


def create_entries(document: Dict[str, Any]) -> List[Any]:
    entries = document.get("data")
    if not isinstance(entries, list) or not entries:
        raise invalid("data must be a non-empty list of AudienceSegment entries")
    return entries


def create_problem(entry: Any) -> Optional[str]:
    """What makes one create entry malformed; None for a good one."""
    if not isinstance(entry, dict) or entry.get("type") != "AudienceSegment":
        return "each entry needs type AudienceSegment"
    attributes = entry.get("attributes")
    if not isinstance(attributes, dict):
        return "attributes must be an object"
    if not isinstance(attributes.get("advertiserId"), str) or not attributes["advertiserId"]:
        return "advertiserId is required, a string"
    if not isinstance(attributes.get("name"), str) or not attributes["name"].strip():
        return "name is required"
    if not isinstance(attributes.get("description", ""), (str, type(None))):
        return "description must be a string"
    if attributes.get("contactList") != {}:
        return "contactList must be {} (the sandbox makes contact-list segments only)"
    return None


def search_query(request: Request) -> Tuple[int, int]:
    """(limit, offset) of a search."""
    limit = _query_int(request, "limit", SEARCH_LIMIT_DEFAULT)
    offset = _query_int(request, "offset", 0)
    if not 1 <= limit <= SEARCH_LIMIT_MAX:
        raise invalid(f"limit must be a whole number from 1 to {SEARCH_LIMIT_MAX}")
    return limit, offset


def search_filters(document: Dict[str, Any]) -> Tuple[Set[str], Optional[Set[str]], Set[str]]:
    """(advertiser ids, segment ids or None for any, segment types) of a search body."""
    data = document.get("data")
    attributes = data.get("attributes") if isinstance(data, dict) else None
    if not isinstance(attributes, dict):
        raise invalid("data.attributes must be an object")
    advertisers = _strings(attributes, "advertiserIds", required=True)
    types = _strings(attributes, "audienceSegmentTypes", required=True)
    return advertisers, _strings(attributes, "audienceSegmentIds", required=False) or None, types


def amendment(document: Dict[str, Any]) -> Tuple[str, str, List[str]]:
    """(operation, identifierType, identifiers) of a contact-list PATCH."""
    data = document.get("data")
    if not isinstance(data, dict) or data.get("type") != "ContactlistAmendment":
        raise invalid("data.type must be ContactlistAmendment")
    attributes = data.get("attributes")
    if not isinstance(attributes, dict):
        raise invalid("data.attributes must be an object")
    operation = attributes.get("operation")
    if operation not in ("add", "remove"):
        raise invalid("operation must be add or remove")
    identifier_type = attributes.get("identifierType")
    if identifier_type not in IDENTIFIER_TYPES:
        raise invalid(f"identifierType must be one of {', '.join(IDENTIFIER_TYPES)}")
    caller = attributes.get("gumCallerId")
    if identifier_type == "gum" and (isinstance(caller, bool) or not isinstance(caller, int)):
        raise invalid("identifierType gum needs gumCallerId, an integer")
    if identifier_type != "gum" and "gumCallerId" in attributes:
        raise invalid("gumCallerId is only for identifierType gum")
    identifiers = attributes.get("identifiers")
    if not isinstance(identifiers, list) or not identifiers or not all(isinstance(i, str) for i in identifiers):
        raise invalid("identifiers must be a non-empty list of strings")
    return operation, identifier_type, identifiers


def plausible_identifier(identifier: str) -> bool:
    return 0 < len(identifier) <= MAX_IDENTIFIER_CHARS and not any(c.isspace() for c in identifier)


def _media_type(request: Request) -> str:
    return (request.header("content-type") or "").split(";")[0].strip().lower()


def _query_int(request: Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or len(text) > 9:
        raise invalid(f"{name} must be a whole number")
    return int(text)


def _strings(attributes: Dict[str, Any], name: str, required: bool) -> Optional[Set[str]]:
    values = attributes.get(name)
    if values is None and not required:
        return None
    if not isinstance(values, list) or not all(isinstance(value, str) for value in values):
        raise invalid(f"{name} must be a list of strings")
    return set(values)
