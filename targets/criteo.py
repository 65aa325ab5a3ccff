"""The Criteo target: Marketing Solutions audience segments of type contact list.

Settings (the integration's `target.*` keys, prefix cut):

    client_id       the API app's client id (required)
    client_secret   the API app's client secret (required)
    advertiser_id   the Criteo advertiser that owns the segments (required, digits)
    identifier_type what External_user_id is: gum (default), email, madid, identityLink,
                    phoneNumber; sent as is, neither hashed nor normalised
    gum_caller_id   the GUM caller id of the party that synced the GUM ids the DMP sends (for
                    Mapp DMP's cookie sync: the DMP's caller id, which is not necessarily
                    the advertiser's own; ask Criteo). A whole number; required for gum only
    segment_prefix  first word of every segment name (default `mapp`; may be empty)
    base_url        default https://api.criteo.com (tests point it at a local fake)
    api_version     default 2026-07, Criteo's current stable version (see "API versions"
                    below): the first path segment of every API call
    timeout         per connect and per read (default 10s; 10, 10s, 500ms)
    max_batch       most identifiers one call carries (default 50000, 1..50000)

Segment names are `<segment_prefix> <audience name> (<dmp_id>)`, or `<segment_prefix>
(<dmp_id>)` for an audience first seen in a mutation (whitespace runs collapsed to one
space). The dmp_id makes the name unique per DMP audience and the name makes creation safe to
repeat: Criteo refuses a second segment of that name with the code `name-must-be-unique`,
under `warnings` of a 200 (its partial-approval model) or under `errors`, and the target then
finds the first one by searching the advertiser's contact lists and returns its id. A renamed
DMP audience keeps its segment.

What the platform answers, and what the target raises:

| Criteo answers                                    | raised                                   |
| ------------------------------------------------- | ---------------------------------------- |
| `name-must-be-unique` (errors or warnings)        | nothing: the existing segment's id       |
| create: 2xx without a segment id                  | PermanentError naming the first error or |
|                                                   | warning; TransientError if none          |
| 2xx with `errors` in the body                     | PermanentError with the first error      |
| 401 (any code)                                    | new token, call repeated once; then      |
|                                                   | CredentialsRefused                       |
| token endpoint 400/401                            | CredentialsRefused: check client         |
|                                                   | id/secret                                |
| 403                                               | CredentialsRefused (no access to the     |
|                                                   | advertiser)                              |
| 410 (the API version is retired)                  | VersionRetired (held like credentials,   |
|                                                   | nothing dead-lettered)                   |
| contact list: 404 (any code), or                  | AudienceGone: the dispatcher creates the |
| `segment-not-found`/`audience-invalid`            | segment again                            |
| other 4xx                                         | PermanentError                           |
| 413                                               | PayloadTooLarge                          |
| 429                                               | TransientError, retry_after from         |
|                                                   | `x-ratelimit-reset`, else Retry-After    |
| 408, 425, 5xx, no answer at all                   | TransientError                           |
| `sampleInvalidIdentifiers` naming our identifiers | PartialFailure for those mutations       |

API versions. Each Criteo version is supported 12 months; in the last 3 its answers carry
`Deprecation` and a `Sunset` date; after the sunset a call answers 410 Gone, unless its
endpoint has not changed since, in which case Criteo "falls forward" to the current version.
Every answer carrying `Deprecation` is counted (`on_api_deprecated`: /metrics and `diy-wsgi
status`) and logged once per version and date; a 410 is our configuration, never the data's
fault, so it holds the account's work until target.api_version names a supported version.

Rate limit: 250 calls a minute per API app, shared by every account using that app's
client_id (`calls_per_minute`; `application` lets the service give such accounts one
limiter, and `share_application` one token cache and one pause). When an answer says
`x-ratelimit-remaining: 0`, calls until its `x-ratelimit-reset` raise TransientError without
reaching Criteo; the pause is capped at `MAX_PAUSE` seconds.

Sources (developers.criteo.com and Criteo's SDKs, read 2026-12; nothing tried against a live
account):
- authentication: `POST /oauth2/token`, form-encoded client credentials, tokens valid 900 s, a
  401 means get a new one (marketing-solutions/docs, authentication pages).
- rate limits: "Client Credentials: 250 calls/min (default endpoints), Application level";
  headers x-ratelimit-limit/-remaining/-reset, the reset being "the timestamp at which a new
  call could be performed", e.g. 1628249355 (criteo-apis/docs/rate-limits).
- versions: criteo-apis/docs/versioning-policy (12 months, `Deprecation: true` and `Sunset`
  in months 9-12, then 410 Gone with fall-forward); the 2026-01 release note (supported until
  early 2027); 2026-07 is the current stable version and 2027-01 the next release candidate
  (marketing-solutions/v2026-preview/docs/audiences). 2026-01 ends on 2027-01-27 per the
  versioning tables (the release note says 2027-02-02; we warn on the earlier date).
- segments: the Marketing Solutions SDK's AudienceApi for 2026-07 (criteo/criteo-api-python-
  sdk, `sdks/marketingsolutions_2026-07/docs/AudienceApi.md`): create and search answer 200
  "Success or partial success", the contact-list PATCH 200; search takes `limit`/`offset` and
  answers `meta.totalItems`. The PATCH answer's `data.attributes` (contactListId,
  nbValidIdentifiers, nbInvalidIdentifiers, sampleInvalidIdentifiers "a sample of invalid
  identifiers") and a 200 carrying a `deprecated-field` warning: the 2026-01 reference page.
- `name-must-be-unique` and `segment-not-found` listed among the warnings of Criteo's partial
  approvals (retail-media/docs/audience-segment-endpoints); names unique per advertiser
  (marketing-solutions/docs/audience-segments).
- a missing segment: no Criteo page documents the PATCH's answer; RudderStack's
  criteo_audience tests script a 404 `audience-invalid` for the older contact-list path. Hence
  any 404 on the segment's path, or either code, means the segment is gone.
- `gumCallerId`: "reach out to your Criteo account team for the appropriate gumCallerId"
  (marketing-solutions/docs/contact-list); Tealium's Criteo connectors leave it unmapped when
  their own cookie-matching tag did the GUM sync: the id belongs to whoever synced.
- error bodies `{"errors": [{traceIdentifier or traceId, type, code, instance, title,
  detail}]}` (the same pages). Not confirmed by any source: a per-call identifier limit (50,000
  is what RudderStack's and Tealium's Criteo integrations send at most) and what the token
  endpoint's error body holds.

Known limitation: Criteo reports only a *sample* of the invalid identifiers. Mutations named
in the sample are reported as failed; invalid identifiers outside the sample cannot be told
apart from valid ones and count as delivered (a warning logs the counts).

This module is the target and its settings; this docstring, the configuration reference and
its sources, is why it runs past 400 lines. An app's token cache and rate-limit pause are in
`targets/criteo_access.py`, the request bodies and the reading of answers in
`targets/criteo_wire.py`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote, urlencode

from targets.base import ADD, REMOVE, Audience, Mutation, Target
from targets.errors import (
    AudienceGone,
    CredentialsRefused,
    PartialFailure,
    PayloadTooLarge,
    PermanentError,
    TargetConfigError,
    TransientError,
    VersionRetired,
)
from targets import settings as read
from targets.criteo_access import MAX_PAUSE, AccessTokens, RatePause, parse_token, rate_limit_pause, reset_time
from targets.criteo_wire import (
    NAME_TAKEN,
    SEGMENT_GONE,
    amendment_body,
    create_body,
    created_segment_id,
    criteo_summary,
    deprecation_notice,
    invalid_mutations,
    problem_codes,
    problems_under,
    resources_of,
    search_body,
    segment_description,
    segment_id_of,
    segment_name,
    token_error_summary,
    total_items_of,
)
from targets.http import RETRYABLE_STATUSES, parse_retry_after

log = logging.getLogger("diy.targets.criteo")

SETTINGS = (
    "client_id", "client_secret", "advertiser_id", "identifier_type", "gum_caller_id",
    "segment_prefix", "base_url", "api_version", "timeout", "max_batch",
)
IDENTIFIER_TYPES = ("email", "madid", "identityLink", "gum", "phoneNumber")
DEFAULT_BASE_URL = "https://api.criteo.com"
DEFAULT_API_VERSION = "2026-07"
MAX_BATCH_LIMIT = 50_000
SEARCH_PAGE = 100
_DIGITS = re.compile(r"[0-9]{1,18}")
_API_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}|preview")


class CriteoTarget(Target):
    """Creates contact-list segments for DMP audiences and adds and removes their users."""

    max_batch = MAX_BATCH_LIMIT
    calls_per_minute = 250
    """Criteo's documented limit for a client-credentials app, for the dispatcher's limiter."""

    def __init__(
        self, settings: Mapping[str, str], http, *, clock: Callable[[], float] = time.time
    ):
        super().__init__(settings, http)
        read.reject_unknown(settings, SETTINGS, "criteo")
        self.client_id = read.required(settings, "client_id")
        self.client_secret = read.required(settings, "client_secret")
        self.advertiser_id = _advertiser_id_setting(settings)
        self.identifier_type = _identifier_type_setting(settings)
        self.gum_caller_id = _gum_caller_id_setting(settings, self.identifier_type)
        self.segment_prefix = _prefix_setting(settings)
        self.base_url = read.http_url(settings, "base_url", default=DEFAULT_BASE_URL, bare=True).rstrip("/")
        self.api_version = _api_version_setting(settings)
        self.timeout = read.seconds(settings)
        self.max_batch = read.whole_number(settings, "max_batch", MAX_BATCH_LIMIT, 1, MAX_BATCH_LIMIT)
        self.clock = clock
        self.application = (self.base_url, self.client_id, _digest(self.client_secret))
        self.tokens = AccessTokens(self._fetch_token, clock)
        self.pause = RatePause()
        self._deprecations_logged: set = set()

    def share_application(self, first: "CriteoTarget") -> None:
        """Criteo counts calls per API app: every account of one app waits for the same reset,
        and one token serves them all."""
        self.tokens, self.pause = first.tokens, first.pause

    # The contract.

    def create_audience(self, audience: Audience) -> str:
        name = segment_name(self.segment_prefix, audience)
        action = f'creating segment "{name}"'
        body = create_body(self.advertiser_id, name, segment_description(audience))
        response = self._call("POST", "audience-segments/create", body, action)
        document = response.json()
        if response.status in (200, 400) and NAME_TAKEN in problem_codes(document):
            return self._find_segment(name)
        self._raise_for_status(response, action)
        self._raise_for_body_errors(response, action)
        segment_id = created_segment_id(document)
        if segment_id is not None:
            return segment_id
        if problems_under(document, "warnings"):
            raise PermanentError(f"Criteo did not create the segment while {action}"
                                 f" ({criteo_summary(response, 'warnings')})")
        raise TransientError(f"Criteo's answer to {action} named no segment id")

    def add_users(self, audience: Audience, mutations: Sequence[Mutation]) -> None:
        self._amend(audience, ADD, mutations)

    def remove_users(self, audience: Audience, mutations: Sequence[Mutation]) -> None:
        self._amend(audience, REMOVE, mutations)

    # Members.

    def _amend(self, audience: Audience, op: str, mutations: Sequence[Mutation]) -> None:
        segment_id = audience.target_id or ""
        if not _DIGITS.fullmatch(segment_id):
            raise PermanentError(
                f"audience {audience.dmp_id} has no Criteo segment id (a number) to send users to"
            )
        verb, preposition = ("adding", "to") if op == ADD else ("removing", "from")
        action = f"{verb} {len(mutations)} users {preposition} segment {segment_id}"
        identifiers = [mutation.external_user_id for mutation in mutations]
        body = amendment_body(op, self.identifier_type, self.gum_caller_id, identifiers)
        path = f"audience-segments/{quote(segment_id)}/contact-list"
        response = self._call("PATCH", path, body, action)
        if response.status == 404 or SEGMENT_GONE & set(problem_codes(response.json())):
            raise AudienceGone(
                f"the segment is gone at Criteo while {action} ({criteo_summary(response)})"
            )
        self._raise_for_status(response, action)
        self._raise_for_body_errors(response, action)
        failed = invalid_mutations(response.json(), mutations, self.identifier_type)
        if failed:
            raise PartialFailure(
                f"Criteo refused {len(failed)} of {len(mutations)} identifiers while {action}"
                f" as invalid {self.identifier_type} identifiers",
                failed,
            )

    # Segments.

    def _find_segment(self, name: str) -> str:
        """The id of the advertiser's contact list called `name`, searched page by page."""
        action = f'looking for the existing segment "{name}"'
        body = search_body(self.advertiser_id)
        offset = 0
        while True:
            path = f"audience-segments/search?{urlencode({'limit': SEARCH_PAGE, 'offset': offset})}"
            response = self._call("POST", path, body, action)
            self._raise_for_status(response, action)
            self._raise_for_body_errors(response, action)
            document = response.json()
            page = resources_of(document)
            for segment in page:
                attributes = segment.get("attributes")
                if isinstance(attributes, dict) and attributes.get("name") == name:
                    found = segment_id_of(segment)
                    if found is not None:
                        return found
            offset += len(page)
            total = total_items_of(document)
            if not page or (total is not None and offset >= total) or (
                total is None and len(page) < SEARCH_PAGE
            ):
                break
        raise TransientError(
            f'Criteo says a segment named "{name}" exists, but advertiser {self.advertiser_id}'
            " has no contact list of that name (yet); trying again later"
        )

    # Calls, tokens, rate limit.

    def _call(self, method: str, path: str, document: Any, action: str):
        """One API call with a bearer token; a 401 gets a new token and one more try."""
        wait = self.pause.wait(self.clock())
        if wait is not None:
            raise TransientError(
                f"Criteo's rate limit is used up; {action} is postponed by {wait:.0f} s"
                " without calling Criteo",
                retry_after=wait,
            )
        token = self.tokens.get()
        response = self._send(method, path, document, token)
        if response.status != 401:
            return response
        self.tokens.discard(token)
        response = self._send(method, path, document, self.tokens.get())
        if response.status == 401:
            raise CredentialsRefused(
                f"Criteo refused a freshly fetched access token while {action}"
                f" ({criteo_summary(response)}); check the app's credentials and its access"
                f" to advertiser {self.advertiser_id}"
            )
        return response

    def _send(self, method: str, path: str, document: Any, token: str):
        url = f"{self.base_url}/{self.api_version}/marketing-solutions/{path}"
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        response = self.http.request(method, url, body=body, headers=headers, timeout=self.timeout)
        resume_at = rate_limit_pause(response.headers, self.clock())
        if resume_at is not None:
            self.pause.extend(resume_at)
        self._heed_deprecation(response.headers)
        return response

    def _heed_deprecation(self, headers: Mapping[str, str]) -> None:
        """Count every answer announcing the end of our API version; log each date once."""
        notice = deprecation_notice(headers)
        if notice is None:
            return
        if self.on_api_deprecated is not None:
            self.on_api_deprecated(self.api_version, notice)
        if notice in self._deprecations_logged:
            return
        self._deprecations_logged.add(notice)
        log.warning(
            "criteo deprecates api_version=%s sunset=%s; calls answer 410 after the sunset:"
            " set target.api_version to the current version (see the README, The Criteo target)",
            self.api_version, notice or "unannounced",
        )

    def _fetch_token(self) -> Tuple[str, float]:
        """A new access token and its lifetime in seconds, from the client credentials."""
        form = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "grant_type": "client_credentials",
        }
        response = self.http.request(
            "POST",
            f"{self.base_url}/oauth2/token",
            body=urlencode(form).encode("ascii"),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            timeout=self.timeout,
        )
        status = response.status
        if status in (400, 401):
            raise CredentialsRefused(
                f"Criteo refused the client credentials ({token_error_summary(response)});"
                " check target.client_id and target.client_secret"
            )
        if not 200 <= status < 300:
            self._raise_for_status(response, "fetching an access token")
        return parse_token(response.json())

    def _raise_for_status(self, response, action: str) -> None:
        """Return on a 2xx; otherwise raise what the module docstring's table gives."""
        status = response.status
        if 200 <= status < 300:
            return
        summary = criteo_summary(response)
        if status == 403:
            raise CredentialsRefused(
                f"Criteo denied access while {action} ({summary}); check that the app may"
                f" manage advertiser {self.advertiser_id}"
            )
        if status == 410:
            raise VersionRetired(
                f"Criteo no longer serves API version {self.api_version} ({summary}) while"
                f" {action}: set target.api_version to a version Criteo supports, e.g."
                f" {DEFAULT_API_VERSION} or newer; the work waits, nothing is dead-lettered"
            )
        if status == 413:
            raise PayloadTooLarge(f"Criteo found the batch too large while {action} ({summary})")
        now = self.clock()
        if status == 429:
            raise TransientError(
                f"Criteo's rate limit was hit while {action} ({summary})",
                retry_after=self._rate_limited(response, now),
            )
        if status in RETRYABLE_STATUSES or status >= 500:
            raise TransientError(
                f"Criteo could not answer while {action} ({summary})",
                retry_after=parse_retry_after(response.header("retry-after"), now),
            )
        raise PermanentError(f"Criteo refused {action} ({summary})")

    def _rate_limited(self, response, now: float) -> Optional[float]:
        """Seconds until a call may pass after a 429, also pausing every later call."""
        reset = response.header("x-ratelimit-reset")
        resume_at = reset_time(reset, now) if reset is not None else None
        if resume_at is None:
            wait = parse_retry_after(response.header("retry-after"), now)
            if wait is None:
                return None
            resume_at = now + min(wait, MAX_PAUSE)
        self.pause.extend(resume_at)
        return resume_at - now

    def _raise_for_body_errors(self, response, action: str) -> None:
        """A 2xx can still carry `errors`: the call failed for what they name."""
        if problems_under(response.json(), "errors"):
            raise PermanentError(f"Criteo refused {action} ({criteo_summary(response)})")


def _digest(secret: str) -> str:
    """Tells apps apart without keeping the secret in a value that might be printed."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# Settings.


def _advertiser_id_setting(settings: Mapping[str, str]) -> str:
    value = (settings.get("advertiser_id") or "").strip()
    if not value:
        raise TargetConfigError("advertiser_id", "is required")
    if not _DIGITS.fullmatch(value):
        raise TargetConfigError("advertiser_id", "must be the advertiser's number")
    return value


def _identifier_type_setting(settings: Mapping[str, str]) -> str:
    value = (settings.get("identifier_type") or "").strip()
    if not value:
        return "gum"
    if value not in IDENTIFIER_TYPES:
        raise TargetConfigError("identifier_type", f"must be one of {', '.join(IDENTIFIER_TYPES)}")
    return value


def _gum_caller_id_setting(settings: Mapping[str, str], identifier_type: str) -> Optional[int]:
    value = (settings.get("gum_caller_id") or "").strip()
    if identifier_type != "gum":
        if value:
            raise TargetConfigError("gum_caller_id", "is only used with identifier_type = gum")
        return None
    if not value:
        raise TargetConfigError("gum_caller_id", "is required with identifier_type = gum")
    if not _DIGITS.fullmatch(value) or not 0 < int(value) < 2**31:
        raise TargetConfigError("gum_caller_id", "must be a whole number above 0 (ask Criteo)")
    return int(value)


def _prefix_setting(settings: Mapping[str, str]) -> str:
    value = settings.get("segment_prefix")
    if value is None:
        return "mapp"
    if any(not c.isprintable() for c in value):
        raise TargetConfigError("segment_prefix", "must be one line of printable text")
    return " ".join(value.split())


def _api_version_setting(settings: Mapping[str, str]) -> str:
    value = (settings.get("api_version") or "").strip() or DEFAULT_API_VERSION
    if not _API_VERSION.fullmatch(value):
        raise TargetConfigError("api_version", "must look like 2026-01 (or be preview)")
    return value
