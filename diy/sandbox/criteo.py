"""Criteo Marketing Solutions: OAuth2 client credentials and contact-list audience segments.

Each behaviour names its source; "our assumption" marks what none confirms. Sources are
developers.criteo.com pages (host left out) and the official SDK criteo/criteo-api-python-sdk
(`sdks/marketingsolutions_2026-07/docs/AudienceApi.md`, "SDK").

    POST  /oauth2/token                                                    form-encoded
          client_id, client_secret, grant_type=client_credentials -> {"access_token",
          "token_type": "Bearer", "expires_in": 900} (marketing-solutions/docs authentication
          pages); not form-encoded or a field missing -> 400 {"error": "invalid_request"},
          another grant -> 400 "unsupported_grant_type", wrong credentials -> 401
          "invalid_client" (RFC 6749 section 5.2's shapes; Criteo's bodies our assumption)
    POST  /{version}/marketing-solutions/audience-segments/create          200 "Success or
          partial success" (SDK); names are unique per advertiser (marketing-solutions/docs/
          audience-segments): a duplicate is not created and is named under `warnings` with the
          code "name-must-be-unique", as Criteo's partial approvals list it (retail-media/docs/
          audience-segment-endpoints), or with `criteo_name_clash = "errors"` answered 400 with
          it under `errors` (the shape this project assumed first; no source); a malformed
          entry is named under `errors` (our assumption); an advertiser other than
          `criteo_advertiser_id` -> 403 "access-denied" (our assumption: the 403 body is not
          published)
    POST  /{version}/marketing-solutions/audience-segments/search?limit=&offset=
          body data.attributes with the lists of strings audienceSegmentTypes and advertiserIds
          (our assumption: required), audienceSegmentIds optional; limit 1..100 (the SDK's
          2026-07 AudienceApi; the 2026-01 OpenAPI file allowed 0) default 50, offset >= 0;
          meta.totalItems counts every match
    PATCH /{version}/marketing-solutions/audience-segments/{id}/contact-list
          type ContactlistAmendment, operation add|remove, identifierType, identifiers a
          non-empty list of strings (SDK); gumCallerId, an integer, with identifierType gum and
          only then (marketing-solutions/docs/contact-list; any caller id is taken: it names
          whoever synced the GUM ids); an unknown id -> 404 "segment-not-found" (the code from
          Criteo's partial-approval warnings, the 404 our assumption: no page documents it);
          identifiers that are not plausible (empty, over 256 characters, with spaces, or
          marked by `invalid(...)`) are not applied and are counted in nbInvalidIdentifiers;
          no limit on the number of identifiers (none is documented)

Every API call must send `Content-Type: application/json` (400 "invalid-request" otherwise,
its code our assumption), under a `{version}` shaped YYYY-MM or "preview" (404
"route-not-found" otherwise: our assumption). A version YYYY-MM is retired on the 27th of
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

What happens on Criteo's side without a call, the sandbox does as operations on its state:
`revoke_tokens()` (a rotated secret), `invalid(...)`, `use_up_rate_limit(until)` (other
accounts of the app used it), `create_segment(name)` and `delete_segment(id)` (by hand, in
Criteo's UI). The body checks are in `criteo_bodies.py`.
"""
import calendar
import email.utils
import hmac
import math
import secrets
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Tuple

from diy.sandbox.criteo_wire import (
    SAMPLE_INVALID_MAX, CriteoError, OAuthError, amendment, create_entries, create_problem, error_entry,
    json_body, plausible_identifier, search_filters, search_query, token_form,
)
from diy.sandbox.faults import Call
from diy.sandbox.settings import SandboxSettings
from diy.sandbox.state import CriteoSegment, SandboxState
from diy.sandbox.wire import Reply, Request, json_reply

TOKEN_PATH = "/oauth2/token"
SEGMENTS = r"/(?P<version>[^/]+)/marketing-solutions/audience-segments"
DEPRECATION_WINDOW = 92 * 24 * 3600.0
"""The last 3 months of a version's life, when its answers say `Deprecation: true`."""


class CriteoApi:
    """Tokens, the rate-limit window and the segment calls; safe to call from any thread."""

    def __init__(self, state: SandboxState, settings: SandboxSettings, clock: Callable[[], float]):
        self.state = state
        self.client_id = settings.criteo_client_id
        self.client_secret = settings.criteo_client_secret
        """The accepted client secret; set it (and `revoke_tokens()`) to rotate it."""
        self.advertiser_id = settings.criteo_advertiser_id
        self.name_clash = settings.criteo_name_clash
        self.clock = clock
        self.rate_limit = settings.criteo_rate_limit
        self.rate_window = settings.criteo_rate_window
        self.token_lifetime = settings.criteo_token_lifetime
        self._tokens: Dict[str, Tuple[str, float]] = {}
        self._windows: Dict[str, List[float]] = {}
        self._invalid = set()
        self._lock = threading.Lock()

    @staticmethod
    def call(request: Request) -> Call:
        """What the fault model knows of a call: whether it asks for a token (its audience
        filter is the webhook's)."""
        return Call(token=request.path == TOKEN_PATH)

    def routes(self):
        """(method, path pattern, handler) for the server's route table."""
        return [
            ("POST", TOKEN_PATH, self.token),
            ("POST", SEGMENTS + r"/create", self._api(self.create)),
            ("POST", SEGMENTS + r"/search", self._api(self.search)),
            ("PATCH", SEGMENTS + r"/(?P<segment_id>[^/]+)/contact-list", self._api(self.amend)),
        ]

    def reset(self) -> None:
        """Forget the rate-limit windows (tokens stay valid)."""
        with self._lock:
            self._windows.clear()

    # What happens at Criteo without a call.

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working (401 authorization-token-invalid)."""
        with self._lock:
            self._tokens.clear()

    def invalid(self, identifiers: Iterable[str]) -> None:
        """These identifiers are counted invalid, and not applied, whenever they are sent."""
        with self._lock:
            self._invalid.update(identifiers)

    def use_up_rate_limit(self, until: float) -> None:
        """The app's window has one call left and ends at `until` (other accounts used it)."""
        with self._lock:
            self._windows[self.client_id] = [until - self.rate_window, self.rate_limit - 1]

    def create_segment(self, name: str) -> str:
        """A contact list made by hand in Criteo's UI, for the sandbox's advertiser; its id."""
        return self.state.criteo_create(self.advertiser_id, name, "", _iso(self.clock())).id

    def delete_segment(self, segment_id: str) -> None:
        """The segment disappears, as when someone deletes it in Criteo's UI."""
        self.state.criteo_delete(segment_id)

    # OAuth2.

    def token(self, request: Request) -> Reply:
        form = token_form(request)
        client_id, client_secret = form["client_id"], form["client_secret"]
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
        """`Deprecation`/`Sunset` in a version's last months; a retired one raises 410, one not
        shaped like a version 404."""
        if version == "preview":
            return ()
        sunset = version_sunset(version)
        if sunset is None:
            raise CriteoError(404, "route-not-found", "Route not found", f"there is no API version {version!r}")
        now = self.clock()
        if now < sunset - DEPRECATION_WINDOW:
            return ()
        if now >= sunset:
            raise CriteoError(410, "version-decommissioned", "API version decommissioned",
                              f"version {version} is no longer served; call a supported version")
        return (("Deprecation", "true"), ("Sunset", email.utils.formatdate(sunset, usegmt=True)))

    def create(self, request: Request, version: str) -> Reply:
        entries = create_entries(json_body(request))
        problems = [create_problem(entry) for entry in entries]
        if any(p is None and e["attributes"]["advertiserId"] != self.advertiser_id
               for p, e in zip(problems, entries)):
            raise CriteoError(403, "access-denied", "Access denied", "the app has no access to this advertiser")
        created, errors, warnings = [], [], []
        for index, (entry, problem) in enumerate(zip(entries, problems)):
            if problem is not None:
                errors.append(error_entry(400, "invalid-attributes", "Invalid segment",
                                          f"data[{index}]: {problem}", request.path))
                continue
            attributes = entry["attributes"]
            segment = self.state.criteo_create(attributes["advertiserId"], attributes["name"],
                                               attributes.get("description") or "", _iso(self.clock()))
            if segment is None:
                clash = error_entry(400, "name-must-be-unique", "Segment name must be unique",
                                    f"data[{index}]: the advertiser has a segment of this name", request.path)
                if self.name_clash == "errors":
                    return json_reply(400, {"errors": [clash], "warnings": []})
                warnings.append(clash)
                continue
            created.append(_resource(segment))
        return json_reply(200, {"data": created, "errors": errors, "warnings": warnings})

    def search(self, request: Request, version: str) -> Reply:
        limit, offset = search_query(request)
        advertisers, segment_ids, types = search_filters(json_body(request))
        found = self.state.criteo_segments(advertisers, segment_ids) if "ContactList" in types else []
        return json_reply(200, {
            "data": [_resource(segment) for segment in found[offset:offset + limit]],
            "meta": {"totalItems": len(found), "limit": limit, "offset": offset},
            "errors": [], "warnings": [],
        })

    def amend(self, request: Request, version: str, segment_id: str) -> Reply:
        operation, identifier_type, identifiers = amendment(json_body(request))
        with self._lock:
            marked = set(self._invalid)
        valid = [i for i in identifiers if plausible_identifier(i) and i not in marked]
        refused = [i for i in identifiers if not plausible_identifier(i) or i in marked]
        if not self.state.criteo_amend(segment_id, operation == "add", valid):
            raise CriteoError(404, "segment-not-found", "Segment is not found",
                              "no audience segment has this id (it may have been deleted)")
        return json_reply(200, {"data": {"type": "ContactlistAmendment", "attributes": {
            "contactListId": int(segment_id), "operation": operation, "requestDate": _iso(self.clock()),
            "identifierType": identifier_type, "nbValidIdentifiers": len(valid),
            "nbInvalidIdentifiers": len(refused),
            "sampleInvalidIdentifiers": [i[:64] for i in refused[:SAMPLE_INVALID_MAX]],
        }}, "errors": [], "warnings": []})


def version_sunset(version: str):
    """When the sandbox retires `version` (Unix seconds); None for one not shaped YYYY-MM."""
    year, _, month = version.partition("-")
    if not (year.isdigit() and month.isdigit() and len(year) == 4 and len(month) == 2 and 1 <= int(month) <= 12):
        return None
    return float(calendar.timegm((int(year) + 1, int(month), 27, 0, 0, 0)))


def _resource(segment: CriteoSegment) -> Dict[str, Any]:
    return {"id": segment.id, "type": "AudienceSegment", "attributes": segment.attributes()}


def _iso(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
