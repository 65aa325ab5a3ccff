"""Criteo Marketing Solutions: OAuth2 client credentials and contact-list audience segments.

Each behaviour names its source; "our assumption" marks what none confirms. Sources are
developers.criteo.com pages (host left out) and the official SDK criteo/criteo-api-python-sdk
(`sdks/marketingsolutions_2026-07/docs/AudienceApi.md`, "SDK").

    POST  /oauth2/token                                                    form client_id,
          client_secret, grant_type=client_credentials -> {"access_token", "token_type":
          "Bearer", "expires_in": 900} (marketing-solutions/docs authentication pages); 401
          {"error": "invalid_client"} for wrong credentials (RFC 6749's shape; our assumption)
    POST  /{version}/marketing-solutions/audience-segments/create          200 "Success or
          partial success" (SDK); names are unique per advertiser (marketing-solutions/docs/
          audience-segments): a duplicate is not created and is named under `warnings` with the
          code "name-must-be-unique", as Criteo's partial approvals list it (retail-media/docs/
          audience-segment-endpoints); a malformed entry is named under `errors` (our assumption)
    POST  /{version}/marketing-solutions/audience-segments/search?limit=&offset=
          filters advertiserIds, audienceSegmentIds, audienceSegmentTypes; limit 0..100
          (default 50, as the 2026-01 OpenAPI file says); meta.totalItems counts every match
    PATCH /{version}/marketing-solutions/audience-segments/{id}/contact-list
          operation add|remove (SDK); an unknown id -> 404 "segment-not-found" (the code from
          Criteo's partial-approval warnings, the 404 our assumption: no page documents it);
          no limit on the number of identifiers (none is documented)

`{version}` is any path segment (e.g. 2026-07). A version YYYY-MM is retired on the 27th of
its month a year later (Criteo's tables: 2026-01 until 2027-01-27; other days are our
assumption): in its last 3 months its answers carry `Deprecation: true` and `Sunset`, and
from then on every call answers 410 Gone (criteo-apis/docs/versioning-policy; the sandbox
has no fall-forward). Every call but the token one needs `Authorization: Bearer <token>`
(401 "authorization-token-invalid", or "-expired"), counts against a fixed window per client
(250 calls a minute by default, per app: criteo-apis/docs/rate-limits) and carries
`x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset` (Unix seconds when the
window ends); a call over the limit is answered 429 "too-many-requests" (its code our
assumption). Errors are `{"errors": [{"traceIdentifier", "type", "code", "instance",
"title", "detail"}]}`.
"""
import calendar
import email.utils
import hmac
import json
import math
import secrets
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs

from diy.sandbox.faults import NO_CALL, Call
from diy.sandbox.state import CriteoSegment, SandboxState
from diy.sandbox.wire import Reply, Request, SandboxError, json_reply

TOKEN_LIFETIME = 900
RATE_LIMIT = 250
RATE_WINDOW = 60.0
MAX_IDENTIFIER_CHARS = 256
SAMPLE_INVALID = 5
SEARCH_LIMIT_DEFAULT, SEARCH_LIMIT_MAX = 50, 100
IDENTIFIER_TYPES = ("email", "madid", "identityLink", "gum", "phoneNumber")
SEGMENTS = r"/(?P<version>[^/]+)/marketing-solutions/audience-segments"
ERROR_TYPES = {400: "validation", 401: "authorization", 404: "not-found", 410: "deprecation", 429: "quota"}
DEPRECATION_WINDOW = 92 * 24 * 3600.0
"""The last 3 months of a version's life, when its answers say `Deprecation: true`."""


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


class CriteoApi:
    """Tokens, the rate-limit window and the segment calls; safe to call from any thread."""

    def __init__(self, state: SandboxState, client_id: str, client_secret: str,
                 clock: Callable[[], float], rate_limit: int = RATE_LIMIT,
                 rate_window: float = RATE_WINDOW, token_lifetime: int = TOKEN_LIFETIME):
        self.state = state
        self.client_id = client_id
        self.client_secret = client_secret
        self.clock = clock
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.token_lifetime = token_lifetime
        self._tokens: Dict[str, Tuple[str, float]] = {}
        self._windows: Dict[str, List[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def call(request: Request) -> Call:
        """What the fault model knows of a call: nothing (its audience filter is the webhook's)."""
        return NO_CALL

    def routes(self):
        """(method, path pattern, handler) for the server's route table."""
        return [
            ("POST", r"/oauth2/token", self.token),
            ("POST", SEGMENTS + r"/create", self._api(self.create)),
            ("POST", SEGMENTS + r"/search", self._api(self.search)),
            ("PATCH", SEGMENTS + r"/(?P<segment_id>[^/]+)/contact-list", self._api(self.amend)),
        ]

    def reset(self) -> None:
        """Forget the rate-limit windows (tokens stay valid)."""
        with self._lock:
            self._windows.clear()

    # OAuth2.

    def token(self, request: Request) -> Reply:
        form = {name: values[0] for name, values in parse_qs(request.body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type", "grant_type must be client_credentials")
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        if not (hmac.compare_digest(client_id.encode(), self.client_id.encode())
                and hmac.compare_digest(client_secret.encode(), self.client_secret.encode())):
            raise OAuthError(401, "invalid_client", "unknown client_id or wrong client_secret")
        access_token = secrets.token_urlsafe(24)
        with self._lock:
            now = self.clock()
            self._tokens = {t: entry for t, entry in self._tokens.items() if entry[1] > now}
            self._tokens[access_token] = (client_id, now + self.token_lifetime)
        return json_reply(200, {"access_token": access_token, "token_type": "Bearer",
                                "expires_in": self.token_lifetime})

    # The calls behind the token and the window.

    def _api(self, handler):
        def call(request: Request, **params: str) -> Reply:
            try:
                client_id = self._authorize(request)
                headers = self._count_call(client_id) + self._version_headers(params["version"])
                try:
                    return handler(request, **params).with_headers(*headers)
                except CriteoError as error:
                    error.headers += tuple(headers)
                    raise
            except CriteoError as error:
                error.instance = request.path
                raise
        return call

    def _authorize(self, request: Request) -> str:
        scheme, _, token = (request.header("authorization") or "").strip().partition(" ")
        with self._lock:
            entry = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if entry is None:
            raise CriteoError(401, "authorization-token-invalid", "Authorization token is invalid",
                              "send Authorization: Bearer <access_token from POST /oauth2/token>")
        client_id, expires = entry
        if self.clock() >= expires:
            raise CriteoError(401, "authorization-token-expired", "Authorization token has expired",
                              "fetch a new token from POST /oauth2/token")
        return client_id

    def _count_call(self, client_id: str) -> Tuple[Tuple[str, str], ...]:
        with self._lock:
            now = self.clock()
            window = self._windows.get(client_id)
            if window is None or now >= window[0] + self.rate_window:
                window = self._windows[client_id] = [now, 0]
            over = window[1] >= self.rate_limit
            if not over:
                window[1] += 1
            headers = (("x-ratelimit-limit", str(self.rate_limit)),
                       ("x-ratelimit-remaining", str(self.rate_limit - int(window[1]))),
                       ("x-ratelimit-reset", str(math.ceil(window[0] + self.rate_window))))
        if over:
            raise CriteoError(429, "too-many-requests", "Too many requests",
                              f"at most {self.rate_limit} calls per {self.rate_window:g} seconds",
                              headers)
        return headers

    def _version_headers(self, version: str) -> Tuple[Tuple[str, str], ...]:
        """`Deprecation`/`Sunset` in a version's last months; a retired one raises 410."""
        sunset = version_sunset(version)
        now = self.clock()
        if sunset is None or now < sunset - DEPRECATION_WINDOW:
            return ()
        if now >= sunset:
            raise CriteoError(410, "version-decommissioned", "API version decommissioned",
                              f"version {version} is no longer served; call a supported version")
        return (("Deprecation", "true"), ("Sunset", email.utils.formatdate(sunset, usegmt=True)))

    def create(self, request: Request, version: str) -> Reply:
        entries = _body(request).get("data")
        if not isinstance(entries, list) or not entries:
            raise _invalid("data must be a non-empty list of AudienceSegment entries")
        created, errors, warnings = [], [], []
        for index, entry in enumerate(entries):
            attributes = entry.get("attributes") if isinstance(entry, dict) else None
            problem = _create_problem(attributes)
            if problem is not None:
                errors.append(error_entry(400, "invalid-attributes", "Invalid segment",
                                          f"data[{index}]: {problem}", request.path))
                continue
            segment = self.state.criteo_create(str(attributes["advertiserId"]), attributes["name"],
                                               attributes.get("description") or "", _iso(self.clock()))
            if segment is None:
                warnings.append(error_entry(400, "name-must-be-unique", "Segment name must be unique",
                                            f"data[{index}]: the advertiser has a segment of this name",
                                            request.path))
                continue
            created.append(_resource(segment))
        return json_reply(200, {"data": created, "errors": errors, "warnings": warnings})

    def search(self, request: Request, version: str) -> Reply:
        limit = _query_int(request, "limit", SEARCH_LIMIT_DEFAULT, SEARCH_LIMIT_MAX)
        offset = _query_int(request, "offset", 0, None)
        document = _body(request) if request.body.strip() else {}
        data = document.get("data") or {}
        attributes = (data.get("attributes") if isinstance(data, dict) else None) or {}
        if not isinstance(attributes, dict):
            raise _invalid("data.attributes must be an object")
        advertisers = _id_filter(attributes, "advertiserIds")
        segment_ids = _id_filter(attributes, "audienceSegmentIds")
        types = _id_filter(attributes, "audienceSegmentTypes")
        found = [] if types is not None and "ContactList" not in types else \
            self.state.criteo_segments(advertisers, segment_ids)
        return json_reply(200, {
            "data": [_resource(segment) for segment in found[offset:offset + limit]],
            "meta": {"totalItems": len(found), "limit": limit, "offset": offset},
            "errors": [], "warnings": [],
        })

    def amend(self, request: Request, version: str, segment_id: str) -> Reply:
        data = _body(request).get("data")
        attributes = data.get("attributes") if isinstance(data, dict) else None
        if not isinstance(attributes, dict):
            raise _invalid("data.attributes must be an object")
        operation = attributes.get("operation")
        if operation not in ("add", "remove"):
            raise _invalid("operation must be add or remove")
        identifier_type = attributes.get("identifierType")
        if identifier_type not in IDENTIFIER_TYPES:
            raise _invalid(f"identifierType must be one of {', '.join(IDENTIFIER_TYPES)}")
        caller = attributes.get("gumCallerId")
        if identifier_type == "gum" and (isinstance(caller, bool) or not isinstance(caller, int)):
            raise _invalid("identifierType gum needs gumCallerId, an integer")
        identifiers = attributes.get("identifiers")
        if not isinstance(identifiers, list):
            raise _invalid("identifiers must be a list")
        valid = [i for i in identifiers if _valid_identifier(i)]
        invalid = [i for i in identifiers if not _valid_identifier(i)]
        if not self.state.criteo_amend(segment_id, operation == "add", valid):
            raise CriteoError(404, "segment-not-found", "Segment is not found",
                              "no audience segment has this id (it may have been deleted)")
        return json_reply(200, {"data": {"type": "ContactlistAmendment", "attributes": {
            "contactListId": segment_id, "operation": operation, "requestDate": _iso(self.clock()),
            "identifierType": identifier_type, "nbValidIdentifiers": len(valid),
            "nbInvalidIdentifiers": len(invalid),
            "sampleInvalidIdentifiers": [str(i)[:64] for i in invalid[:SAMPLE_INVALID]],
        }}, "errors": [], "warnings": []})


def version_sunset(version: str) -> Optional[float]:
    """When the sandbox retires `version` (Unix seconds); None for one not shaped YYYY-MM."""
    year, _, month = version.partition("-")
    if not (year.isdigit() and month.isdigit() and len(year) == 4 and 1 <= int(month) <= 12):
        return None
    return float(calendar.timegm((int(year) + 1, int(month), 27, 0, 0, 0)))


def _invalid(detail: str) -> CriteoError:
    return CriteoError(400, "invalid-request", "Invalid request", detail)


def _body(request: Request) -> Dict[str, Any]:
    try:
        document = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _invalid("the body is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise _invalid("the body must be a JSON object")
    return document


def _create_problem(attributes: Any) -> Optional[str]:
    if not isinstance(attributes, dict):
        return "attributes must be an object"
    advertiser = attributes.get("advertiserId")
    if isinstance(advertiser, bool) or not isinstance(advertiser, (str, int)) or advertiser == "":
        return "advertiserId is required"
    if not isinstance(attributes.get("name"), str) or not attributes["name"].strip():
        return "name is required"
    if not isinstance(attributes.get("description", ""), (str, type(None))):
        return "description must be a string"
    if not isinstance(attributes.get("contactList"), dict):
        return "contactList must be an object (the sandbox makes contact-list segments only)"
    return None


def _valid_identifier(identifier: Any) -> bool:
    return (isinstance(identifier, str) and 0 < len(identifier) <= MAX_IDENTIFIER_CHARS
            and not any(c.isspace() for c in identifier))


def _query_int(request: Request, name: str, default: int, maximum: Optional[int]) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit() or (maximum is not None and int(text) > maximum):
        top = f" to {maximum}" if maximum is not None else " or more"
        raise _invalid(f"{name} must be a whole number from 0{top}")
    return int(text)


def _id_filter(attributes: Dict[str, Any], name: str):
    values = attributes.get(name)
    if values is None or values == []:
        return None
    if not isinstance(values, list):
        raise _invalid(f"{name} must be a list")
    return {str(value) for value in values}


def _resource(segment: CriteoSegment) -> Dict[str, Any]:
    return {"id": segment.id, "type": "AudienceSegment", "attributes": segment.attributes()}


def _iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
