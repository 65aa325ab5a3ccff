"""A fake Criteo Marketing Solutions API (OAuth2 token, contact-list segments) on pytest-httpserver.

Each behaviour names its source; "our assumption" marks what no source confirms. Sources are
developers.criteo.com pages (written here without the host) and the official SDK
criteo/criteo-api-python-sdk (`sdks/marketingsolutions_2026-07/docs/AudienceApi.md`, "SDK").

- `POST /oauth2/token` (marketing-solutions/docs authentication pages): form-encoded
  `client_id`, `client_secret`, `grant_type=client_credentials` -> `{"access_token",
  "token_type": "Bearer", "expires_in"}`; a token is valid `token_ttl` seconds (900 there) and
  several may be valid at once. The refusals' OAuth2 shape (400 `invalid_request` or
  `unsupported_grant_type`, 401 `invalid_client`) is RFC 6749's: Criteo's body is our assumption.
- API calls, `/{version}/marketing-solutions/...`: a scripted fault (`fail_next`) comes first,
  before anything is checked. Then `Authorization: Bearer <token>`: unknown or revoked -> 401
  `authorization-token-invalid`, expired -> `authorization-token-expired` (the codes
  RudderStack's criteo_audience networkHandler reads). A version in `retired` -> 410 Gone
  (criteo-apis/docs/versioning-policy: "Decommissioned: Returns 410 Gone"; the error body is
  our assumption). A version in `deprecated` -> its answers carry `Deprecation: true` and
  `Sunset: <HTTP-date>` (same page: months 9-12 of a version's life). While an exhausted rate
  limit lasts -> 429 with `x-ratelimit-limit/-remaining/-reset` (criteo-apis/docs/rate-limits).
  Then `application/json`, the version and the body shape (the SDK's models) are checked; a
  malformed request -> 400 `invalid-request` (code: our assumption) and a note in `violations`.
- create (SDK: 200 "Success or partial success"): another advertiser -> 403 `access-denied`
  (our assumption, as Criteo's 403 body is not published); a name the advertiser already has
  (names are "unique per advertiser", marketing-solutions/docs/audience-segments) -> with
  `name_clash = "warnings"` (the default) 200 with no data and the code
  `name-must-be-unique` under `warnings`, as Criteo's partial approvals list it
  (retail-media/docs/audience-segment-endpoints); with `"errors"` a 400 with it under `errors`
  (the shape this project assumed first; no source); else 200 with the id in `data[0].id`.
- search (SDK): `limit` 1..100 (0..100 in the 2026-01 OpenAPI file; 0 is refused here, our
  assumption), `offset` >= 0; the advertiser's contact lists by id, `meta.totalItems`.
- contact-list PATCH (SDK: 200 "Summary of created request"; attributes from the 2026-01
  reference): `gumCallerId`, an integer, exactly with `identifierType` gum; any caller id is
  taken (it names whoever synced the GUM ids: marketing-solutions/docs/contact-list). An unknown
  segment -> `missing_segment` (status, code), by default 404 `segment-not-found`: the code is
  in Criteo's partial-approval warnings, the 404 our assumption (RudderStack's tests use 404
  `audience-invalid` on the older path). Identifiers in `invalid(...)` are not applied and are
  counted in `nbInvalidIdentifiers`, the first `sample_size` named in
  `sampleInvalidIdentifiers`. No limit on the number of identifiers is enforced: no source
  documents one (integrations send at most 50,000).

State: `segments` {id: name}, `members` {segment id: set of identifiers}, `token_requests`
(how many token requests arrived), `requests` (a `Recorded` per request, in order, faulted and
refused ones included; the client secret is masked), `violations` (what a request got wrong).
"""
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional
from urllib.parse import parse_qsl

from werkzeug import Response

from diy.sandbox.faults import Script
from tests.fakes import scripted_answer

TOKEN_PATH = "/oauth2/token"
API_PATH = re.compile(r"^/[^/]+/marketing-solutions/.*$")
_ROUTE = re.compile(r"^/(?P<version>[^/]+)/marketing-solutions/(?P<rest>.*)$")
_CONTACT_LIST = re.compile(r"^audience-segments/(?P<id>[^/]+)/contact-list$")
_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}|preview")
IDENTIFIER_TYPES = {"email", "madid", "identityLink", "gum", "phoneNumber"}
MAX_SEARCH_LIMIT = 100
DEFAULT_CODES = {
    400: "invalid-request", 401: "authorization-token-invalid", 403: "access-denied",
    404: "not-found", 409: "conflict", 410: "gone", 413: "payload-too-large", 429: "too-many-requests",
    500: "internal-error", 502: "bad-gateway", 503: "service-unavailable", 504: "gateway-timeout",
}


@dataclass
class Recorded:
    """One request the fake received: `body` is the parsed JSON, or the form for a token."""

    method: str
    path: str
    query: Dict[str, str]
    headers: Dict[str, str]
    body: Any


class _Refused(Exception):
    def __init__(self, status, code, detail, violation=False, headers=None):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.violation = violation
        self.headers = headers or {}


class FakeCriteo:
    """Criteo's token endpoint and audience-segment API; `settings()` points a CriteoTarget here."""

    def __init__(self, httpserver, *, client_id="cid", client_secret="csecret",
                 advertiser_id="12345", gum_caller_id=123, token_ttl=900, clock=time.time):
        self.httpserver = httpserver
        self.client_id = client_id
        self.client_secret = client_secret
        self.advertiser_id = advertiser_id
        self.gum_caller_id = gum_caller_id
        self.token_ttl = token_ttl
        self.clock = clock
        self.sample_size = 10
        self.name_clash = "warnings"
        self.missing_segment = (404, "segment-not-found")
        self.deprecated: Dict[str, str] = {}
        """{version: Sunset HTTP-date} of versions whose answers say they are deprecated."""
        self.retired = set()
        """Versions that answer 410 Gone."""
        self.segments: Dict[str, str] = {}
        self.members: Dict[str, set] = {}
        self.token_requests = 0
        self.requests = []
        self.violations = []
        self._tokens: Dict[str, float] = {}
        self._invalid = set()
        self._faults = Script()
        self._token_faults = Script()
        self._next_id = 5678
        self._token_gate: Optional[threading.Event] = None
        self._limit_exhausting_at: Optional[float] = None
        self._limit_reset: Optional[float] = None
        self._lock = threading.RLock()
        httpserver.expect_request(TOKEN_PATH).respond_with_handler(self._token_endpoint)
        httpserver.expect_request(API_PATH).respond_with_handler(self._api)

    # What tests use.

    def settings(self):
        """The `target.*` settings (prefix cut) of a CriteoTarget talking to this fake."""
        return {
            "base_url": self.httpserver.url_for("/").rstrip("/"),
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "advertiser_id": self.advertiser_id,
            "identifier_type": "gum",
            "gum_caller_id": str(self.gum_caller_id),
        }

    def fail_next(self, status, times=1, headers=None, body=None, *, token=False):
        """Answer the next `times` API calls (token requests with `token=True`) with `status`.

        `body` is a dict (sent as JSON) or text; by default a Criteo error with a code that
        fits the status. A 200 needs a body.
        """
        if status == 200 and body is None:
            raise ValueError("a scripted 200 needs a body")
        with self._lock:
            (self._token_faults if token else self._faults).add(status, times, headers, body, text_type="text/plain")

    def revoke_token(self):
        """Every token issued so far stops working: the next API call gets a 401."""
        with self._lock:
            self._tokens.clear()

    def invalid(self, identifiers):
        """These identifiers are refused as invalid whenever they are added or removed."""
        with self._lock:
            self._invalid.update(identifiers)

    def create_segment(self, name):
        """A contact list made outside the target (e.g. by hand); returns its id."""
        with self._lock:
            return self._new_segment(name)

    def delete_segment(self, segment_id):
        """The segment disappears, as when someone deletes it in Criteo's UI."""
        with self._lock:
            self.segments.pop(segment_id, None)
            self.members.pop(segment_id, None)

    def exhaust_rate_limit(self, reset_at):
        """The next API call uses up the rate limit: its answer says `x-ratelimit-remaining: 0`
        and `x-ratelimit-reset: reset_at`; calls before `reset_at` (by `clock`) get 429."""
        with self._lock:
            self._limit_exhausting_at = float(reset_at)

    def hold_token_requests(self):
        """Token requests wait (at most 10 s) until the returned function is called."""
        gate = threading.Event()
        self._token_gate = gate
        return gate.set

    # The token endpoint.

    def _token_endpoint(self, request):
        form = dict(parse_qsl(request.get_data(as_text=True), keep_blank_values=True))
        masked = {**form, **({"client_secret": "***"} if "client_secret" in form else {})}
        with self._lock:
            self.token_requests += 1
            self.requests.append(_recorded(request, masked))
        gate = self._token_gate
        if gate is not None:
            gate.wait(10)
        with self._lock:
            scripted = scripted_answer(self._token_faults, lambda status: {"error": "server_error"}, "text/plain")
            if scripted is not None:
                return scripted
            if request.method != "POST":
                return self._oauth_refusal(405, "invalid_request", f"{request.method} is not allowed")
            if request.mimetype != "application/x-www-form-urlencoded":
                return self._oauth_refusal(400, "invalid_request", "the body must be form-encoded")
            missing = [key for key in ("client_id", "client_secret", "grant_type") if not form.get(key)]
            if missing:
                return self._oauth_refusal(400, "invalid_request", f"missing {', '.join(missing)}")
            if form["grant_type"] != "client_credentials":
                return self._oauth_refusal(400, "unsupported_grant_type", "use client_credentials")
            if form["client_id"] != self.client_id or form["client_secret"] != self.client_secret:
                return _respond(401, {"error": "invalid_client"})
            token = f"tok-{secrets.token_hex(8)}"
            self._tokens[token] = self.clock() + self.token_ttl
            return _respond(200, {"access_token": token, "token_type": "Bearer",
                                  "expires_in": self.token_ttl})

    def _oauth_refusal(self, status, error, why):
        self.violations.append(f"token request: {why}")
        return _respond(status, {"error": error})

    # The API.

    def _api(self, request):
        body = _json_or_none(request)
        with self._lock:
            self.requests.append(_recorded(request, body))
            scripted = scripted_answer(self._faults, _scripted_error_body, "text/plain")
            if scripted is not None:
                return scripted
            try:
                self._authorize(request)
                self._check_version(request.path)
                limit_headers = self._rate_limit()
                status, answer = self._route(request, body)
            except _Refused as refusal:
                if refusal.violation:
                    self.violations.append(f"{request.method} {request.path}: {refusal.detail}")
                return _respond(refusal.status, _error_body(refusal.code, "Refused", refusal.detail),
                                {**refusal.headers, **self._deprecation_headers(request.path)})
            return _respond(status, answer, {**limit_headers, **self._deprecation_headers(request.path)})

    def _authorize(self, request):
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise _Refused(401, "authorization-token-invalid", "no Bearer token", violation=True)
        expires_at = self._tokens.get(header[len("Bearer "):])
        if expires_at is None:
            raise _Refused(401, "authorization-token-invalid", "the token is not valid")
        if self.clock() >= expires_at:
            raise _Refused(401, "authorization-token-expired", "the token has expired")

    def _check_version(self, path):
        if _ROUTE.match(path)["version"] in self.retired:
            raise _Refused(410, "gone", "this API version is decommissioned")

    def _deprecation_headers(self, path):
        sunset = self.deprecated.get(_ROUTE.match(path)["version"])
        return {} if sunset is None else {"Deprecation": "true", "Sunset": sunset}

    def _rate_limit(self):
        now = self.clock()
        if self._limit_reset is not None:
            if now < self._limit_reset:
                raise _Refused(429, "too-many-requests", "rate limit exceeded",
                               headers=_limit_headers(self._limit_reset))
            self._limit_reset = None
        if self._limit_exhausting_at is not None:
            self._limit_reset, self._limit_exhausting_at = self._limit_exhausting_at, None
            return _limit_headers(self._limit_reset)
        return {}

    def _route(self, request, body):
        match = _ROUTE.match(request.path)
        if not _VERSION.fullmatch(match["version"]):
            raise _Refused(404, "route-not-found", f"no API version {match['version']!r}", True)
        if request.mimetype != "application/json" or body is None:
            raise _Refused(400, "invalid-request", "the body must be application/json", True)
        rest, method = match["rest"], request.method
        if rest == "audience-segments/create" and method == "POST":
            return self._create(body)
        if rest == "audience-segments/search" and method == "POST":
            return self._search(request.args, body)
        contact_list = _CONTACT_LIST.match(rest)
        if contact_list and method == "PATCH":
            return self._amend(contact_list["id"], body)
        raise _Refused(404, "route-not-found", f"no route {method} {rest}", True)

    def _create(self, body):
        items = _need(body, "data", list)
        if not items:
            raise _Refused(400, "invalid-request", "data is empty", True)
        names = []
        for item in items:
            if not isinstance(item, dict) or item.get("type") != "AudienceSegment":
                raise _Refused(400, "invalid-request", "each data item needs type AudienceSegment", True)
            attributes = _need(item, "attributes", dict)
            advertiser = _need(attributes, "advertiserId", str)
            name = _need(attributes, "name", str)
            if not name.strip():
                raise _Refused(400, "invalid-request", "name is empty", True)
            if "description" in attributes and not isinstance(attributes["description"], str):
                raise _Refused(400, "invalid-request", "description must be a string", True)
            if attributes.get("contactList") != {}:
                raise _Refused(400, "invalid-request", "contactList must be {} for a contact list", True)
            if advertiser != self.advertiser_id:
                raise _Refused(403, "access-denied", "the app has no access to this advertiser")
            names.append(name)
        taken = [name for name in names if name in self.segments.values()]
        if taken and self.name_clash == "errors":
            raise _Refused(400, "name-must-be-unique", "Segment name must be unique")
        created = [(self._new_segment(name), name) for name in names if name not in taken]
        warnings = [_error_entry("name-must-be-unique", "Segment name must be unique", name) for name in taken]
        return 200, {
            "data": [_resource(segment_id, self.advertiser_id, name) for segment_id, name in created],
            "errors": [], "warnings": warnings,
        }

    def _search(self, args, body):
        limit, offset = _int_arg(args, "limit", 50), _int_arg(args, "offset", 0)
        if not 1 <= limit <= MAX_SEARCH_LIMIT or offset < 0:
            raise _Refused(400, "invalid-request", "limit must be 1..100 and offset >= 0", True)
        attributes = _need(_need(body, "data", dict), "attributes", dict)
        types = _need(attributes, "audienceSegmentTypes", list)
        advertisers = _need(attributes, "advertiserIds", list)
        if not all(isinstance(value, str) for value in types + advertisers):
            raise _Refused(400, "invalid-request", "filters are lists of strings", True)
        found = []
        if "ContactList" in types and self.advertiser_id in advertisers:
            found = sorted(self.segments.items(), key=lambda item: int(item[0]))
        page = found[offset:offset + limit]
        return 200, {
            "data": [_resource(segment_id, self.advertiser_id, name) for segment_id, name in page],
            "meta": {"totalItems": len(found), "limit": limit, "offset": offset},
            "errors": [], "warnings": [],
        }

    def _amend(self, segment_id, body):
        data = _need(body, "data", dict)
        if data.get("type") != "ContactlistAmendment":
            raise _Refused(400, "invalid-request", "type must be ContactlistAmendment", True)
        attributes = _need(data, "attributes", dict)
        operation = _need(attributes, "operation", str)
        identifier_type = _need(attributes, "identifierType", str)
        identifiers = _need(attributes, "identifiers", list)
        if operation not in ("add", "remove") or identifier_type not in IDENTIFIER_TYPES:
            raise _Refused(400, "invalid-request", "unknown operation or identifierType", True)
        if identifier_type == "gum":
            caller = attributes.get("gumCallerId")
            if not isinstance(caller, int) or isinstance(caller, bool):
                raise _Refused(400, "invalid-request", "gum needs an integer gumCallerId", True)
        elif "gumCallerId" in attributes:
            raise _Refused(400, "invalid-request", "gumCallerId is only for identifierType gum", True)
        if not identifiers or not all(isinstance(value, str) for value in identifiers):
            raise _Refused(400, "invalid-request", "identifiers must be a non-empty list of strings", True)
        if segment_id not in self.segments:
            status, code = self.missing_segment
            raise _Refused(status, code, "Segment is not found")
        invalid = [value for value in identifiers if value in self._invalid]
        valid = {value for value in identifiers if value not in self._invalid}
        members = self.members.setdefault(segment_id, set())
        if operation == "add":
            members |= valid
        else:
            members -= valid
        return 200, {
            "data": {
                "type": "ContactlistAmendment",
                "attributes": {
                    "contactListId": int(segment_id),
                    "operation": operation,
                    "requestDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock())),
                    "identifierType": identifier_type,
                    "nbValidIdentifiers": len(identifiers) - len(invalid),
                    "nbInvalidIdentifiers": len(invalid),
                    "sampleInvalidIdentifiers": invalid[: self.sample_size],
                },
            },
            "errors": [], "warnings": [],
        }

    def _new_segment(self, name):
        segment_id = str(self._next_id)
        self._next_id += 1
        self.segments[segment_id] = name
        self.members[segment_id] = set()
        return segment_id


def _recorded(request, body):
    return Recorded(request.method, request.path, dict(request.args), dict(request.headers), body)


def _json_or_none(request):
    try:
        return json.loads(request.get_data())
    except ValueError:
        return None


def _need(document, key, kind):
    value = document.get(key) if isinstance(document, dict) else None
    if not isinstance(value, kind):
        raise _Refused(400, "invalid-request", f"{key} must be a {kind.__name__}", True)
    return value


def _int_arg(args, key, default):
    text = args.get(key)
    if text is None:
        return default
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise _Refused(400, "invalid-request", f"{key} must be a whole number", True)
    return int(text)


def _resource(segment_id, advertiser_id, name):
    return {
        "id": segment_id,
        "type": "AudienceSegment",
        "attributes": {"advertiserId": advertiser_id, "name": name, "type": "ContactList",
                       "contactList": {"isReadOnly": False}},
    }


def _scripted_error_body(status):
    return _error_body(DEFAULT_CODES.get(status, "scripted"), "Scripted failure", "fail_next")


def _error_body(code, title, detail):
    return {"errors": [_error_entry(code, title, detail)], "warnings": []}


def _error_entry(code, title, detail):
    return {"traceIdentifier": secrets.token_hex(8), "type": "validation", "code": code,
            "instance": "/fake", "title": title, "detail": detail}


def _limit_headers(reset_at):
    return {"x-ratelimit-limit": "250", "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": str(int(reset_at))}


def _respond(status, body, headers=None):
    if isinstance(body, (dict, list)):
        return Response(json.dumps(body), status=status, headers=headers or {},
                        content_type="application/json")
    return Response(body, status=status, headers=headers or {}, content_type="text/plain")
