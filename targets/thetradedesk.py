"""The Trade Desk target: DMP audiences become advertiser first-party data segments (TDIDs).

Settings (the integration's `target.*` keys, prefix cut):

    base_url              the data centre, e.g. https://use-data.adsrvr.org (also usw-, euw-,
                          sin-, tok-data.adsrvr.org, data-cn2.adsrvr.cn); required
    advertiser_id         the advertiser the segments belong to; required
    auth                  `token` (default) or `signature`
    token                 with auth = token: the Data API token, sent as `TTD-Auth`; required
    secret                with auth = signature: the advertiser secret key; required
    data_provider_id      with auth = signature, optional: sent as `DataProviderId` ...
    data_provider_secret  ... and signs the body once more, into `TtdSignature-dp`
    ttl_minutes           how long an added user stays in the segment (default 43200 = 30
                          days, 1..259200 = 180 days); an add repeated in time refreshes it
    segment_prefix        first part of every segment name (default `mapp`; [A-Za-z0-9._-]+)
    timeout               per connect and per read (default 10s; 10, 10s, 500ms)
    max_batch             most users one call of the dispatcher carries (default 10000, 1..10000)
    max_bytes             largest request body (default 2500000, at least 256); a batch whose
                          body would be larger is sent as several requests

Segments. TTD has no call that creates a segment: one exists once a new `Data[].Name` is first
uploaded. `create_audience` makes no request and returns `segment_name(prefix, customer,
dmp_id)`: `<prefix>_<customer>_<dmp_id>` (`<prefix>_<dmp_id>` when the customer is unknown),
each character outside [A-Za-z0-9._-] replaced by `_` one for one. The name depends on nothing
else, so it is stable across restarts and versions; the outbox stores it as the audience's
`target_id`, and add/remove use `audience.target_id` whenever it is set (also for an audience
the DMP never announced: then it is whatever id the DMP sent), else the derived name. TTD's
length limit for names is not published; a name it finds too long comes back per item as
`DataNameTooLong`.

When a batch went out as several requests and some of them were refused whole (400), their
items are named in one PartialFailure; only when every request was refused is it a
PermanentError. A 401 or 403 in the middle of such a batch holds the whole batch (no item is
dead-lettered; the parts already accepted are sent again later, which does no harm).

Requests and answers: targets/thetradedesk_wire.py, which builds the bodies and reads TTD's
answers as pure functions, and says what each fact about the API rests on.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from targets.base import Audience, Mutation, Target
from targets.errors import PartialFailure, PermanentError, TargetConfigError
from targets import settings as read
from targets.thetradedesk_wire import (DEFAULT_MAX_BYTES, NOT_NAME_CHARACTER, PATH, PLATFORM, build_requests,
                                       read_answer, segment_name, sign)

MAX_ITEMS = 10_000
MAX_TTL_MINUTES = 259_200
DEFAULT_TTL_MINUTES = 43_200
MIN_MAX_BYTES = 256
DEFAULT_PREFIX = "mapp"
SETTINGS = (
    "base_url", "advertiser_id", "auth", "token", "secret", "data_provider_id",
    "data_provider_secret", "ttl_minutes", "segment_prefix", "timeout", "max_batch", "max_bytes",
)
SIGNATURE_ONLY = ("secret", "data_provider_id", "data_provider_secret")


class TheTradeDeskTarget(Target):
    """Adds and removes TDIDs in TTD advertiser first-party data segments."""

    max_batch = MAX_ITEMS
    creates_on_the_platform = False

    def __init__(
        self, settings: Mapping[str, str], http, *, clock: Callable[[], float] = time.time
    ):
        super().__init__(settings, http)
        read.reject_unknown(settings, SETTINGS, "thetradedesk")
        self.url = read.http_url(
            settings, "base_url", bare=True, example=", e.g. https://use-data.adsrvr.org"
        ).rstrip("/") + PATH
        self.advertiser_id = read.required(settings, "advertiser_id")
        self.auth = _auth_setting(settings)
        self.token = _token_setting(settings) if self.auth == "token" else None
        self.secret = read.required(settings, "secret") if self.auth == "signature" else None
        self.data_provider_id, self.data_provider_secret = _data_provider_settings(settings)
        self.ttl_minutes = read.whole_number(
            settings, "ttl_minutes", DEFAULT_TTL_MINUTES, 1, MAX_TTL_MINUTES
        )
        self.segment_prefix = _prefix_setting(settings)
        self.timeout = read.seconds(settings)
        self.max_batch = read.whole_number(settings, "max_batch", MAX_ITEMS, 1, MAX_ITEMS)
        self.max_bytes = read.whole_number(
            settings, "max_bytes", DEFAULT_MAX_BYTES, MIN_MAX_BYTES, None
        )
        self.clock = clock

    def create_audience(self, audience: Audience) -> str:
        return segment_name(self.segment_prefix, audience.customer, audience.dmp_id)

    def add_users(self, audience: Audience, mutations: Sequence[Mutation]) -> None:
        self._upload(audience, mutations, self.ttl_minutes)

    def remove_users(self, audience: Audience, mutations: Sequence[Mutation]) -> None:
        self._upload(audience, mutations, 0)

    def segment_of(self, audience: Audience) -> str:
        """The segment an audience's users go to: its recorded id, else the derived name."""
        return audience.target_id or self.create_audience(audience)

    def _upload(self, audience: Audience, mutations: Sequence[Mutation], ttl: int) -> None:
        if not mutations:
            return
        requests = build_requests(
            self.advertiser_id, self.segment_of(audience), mutations, ttl,
            max_bytes=self.max_bytes, data_provider_id=self.data_provider_id,
        )
        failed: Dict[int, str] = {}
        refused: List[str] = []
        for body, batch in requests:
            try:
                self._send(body, batch)
            except PartialFailure as error:
                failed.update(error.failed)
            except PermanentError as error:
                if len(requests) == 1:
                    raise
                refused.append(error.message)
                failed.update({mutation.id: error.message for mutation in batch})
        if len(refused) == len(requests):
            raise PermanentError(refused[0])
        if failed:
            first = next(iter(failed.values()))
            raise PartialFailure(
                f"{PLATFORM} refused {len(failed)} of {len(mutations)} users, e.g. {first}", failed
            )

    def _send(self, body: bytes, batch: Sequence[Mutation]) -> None:
        now = self.clock()
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["TTD-Auth"] = self.token
        else:
            headers["TtdSignature"] = sign(self.secret, body)
            if self.data_provider_secret is not None:
                headers["TtdSignature-dp"] = sign(self.data_provider_secret, body)
        response = self.http.request("POST", self.url, body=body, headers=headers, timeout=self.timeout)
        read_answer(response, batch, advertiser_id=self.advertiser_id, now=now)


def _auth_setting(settings: Mapping[str, str]) -> str:
    auth = read.text(settings, "auth") or "token"
    if auth not in ("token", "signature"):
        raise TargetConfigError("auth", "must be token or signature")
    ignored = [key for key in SIGNATURE_ONLY if key in settings] if auth == "token" else []
    if auth == "signature" and "token" in settings:
        ignored = ["token"]
    if ignored:
        other = "signature" if auth == "token" else "token"
        raise TargetConfigError(ignored[0], f"is only used with auth = {other} (auth is {auth})")
    return auth


def _token_setting(settings: Mapping[str, str]) -> str:
    token = read.required(settings, "token")
    if not read.VISIBLE_ASCII.fullmatch(token):
        raise TargetConfigError("token", "must be printable ASCII without spaces")
    return token


def _data_provider_settings(settings: Mapping[str, str]) -> Tuple[Optional[str], Optional[str]]:
    provider, secret = read.text(settings, "data_provider_id"), read.text(settings, "data_provider_secret")
    if provider and not secret:
        raise TargetConfigError("data_provider_secret", "is required with data_provider_id")
    if secret and not provider:
        raise TargetConfigError("data_provider_id", "is required with data_provider_secret")
    return (provider, secret) if provider else (None, None)


def _prefix_setting(settings: Mapping[str, str]) -> str:
    prefix = read.text(settings, "segment_prefix") if "segment_prefix" in settings else DEFAULT_PREFIX
    if not prefix or NOT_NAME_CHARACTER.search(prefix):
        raise TargetConfigError("segment_prefix", "must be letters, digits, '.', '_' or '-'")
    return prefix
