"""What The Trade Desk's Data API takes and answers, as pure functions: segment names, request
bodies and their signatures, and reading answers into `targets.errors`. No I/O:
targets/thetradedesk.py calls the platform.

Requests. `POST {base_url}/data/advertiser` with compact ASCII JSON, one item per user:

    {"AdvertiserId":"adv1","Items":[{"TDID":"df2df528-e032-4851-b7c6-99287c7d6bce",
      "Data":[{"Name":"mapp_42_4711","TtlInMinutes":43200}]}]}

removal is the same with `"TtlInMinutes":0`. The TDID is sent exactly as the DMP gave it, not
hashed and not checked: TTD expects a 36-character UUID and answers a malformed one per item.
A body over `max_bytes` is cut into several requests, each signed on its own; when one of them
fails transiently, the whole batch is retried (repeating an add or a remove does no harm).

Answers, read into `targets.errors`:

    200 `{}`                                   every item accepted
    200 or 400 with `FailedLines`              PartialFailure naming the mutations of those items.
                                               A line names its item by `ItemNumber` (1-based
                                               within the request, a string or an integer), else
                                               by the `item #N` its `Message` ends with (the
                                               shape recorded in production), else by its `TDID`.
                                               A line naming no item is logged and fails nothing:
                                               TTD applied the other items, so dead-lettering the
                                               request for it would drop accepted users.
    400 without `FailedLines`                  PermanentError for the request's items
    401                                        CredentialsRefused: target.token or target.secret
                                               is wrong
    403                                        CredentialsRefused naming TTD's own `ErrorCode`
                                               and `Message` (IncorrectPermissions,
                                               AdvertiserMisconfigured, DataProviderMisconfigured,
                                               TargetingDataLimitReached): all are the account's
                                               problem, never the data's, so the account is held
                                               and nothing is dead-lettered
    410                                        VersionRetired: TTD retired the endpoint or a
                                               property we send; our code, never the data's, so
                                               the account is held until diy-wsgi is updated
    413                                        PayloadTooLarge: the dispatcher halves the batch
    408, 429, 5xx, no answer                   TransientError, `retry_after` from Retry-After
    anything else                              `targets.http.raise_for_status`

What each fact rests on (nothing was tried against a live endpoint; tests use
the sandbox's `diy/sandbox/thetradedesk.py`, which enforces all of it):
- path, `TTD-Auth` header, request and response schemas (`AdvertiserId`, `DataProviderId`,
  `Items[].TDID`, `Data[].Name`/`TtlInMinutes`, `FailedLines[].ErrorCode`/`Message`/
  `ItemNumber` as a string, `TDID` on a failed line), the statuses 200/400/401/403/413/429/
  500/503 and that a 400 may carry `FailedLines`: the official SDK's OpenAPI file,
  github.com/thetradedesk/ttd-data-python `.speakeasy/out.openapi.yaml`, which links
  open.thetradedesk.com/advertiser/docsApp/GuidesAdvertiser/data/doc/post-data-advertiser-firstparty.
- `TtdSignature` = base64(HMAC-SHA1(advertiser secret key, body)) and `TtdSignature-dp` with the
  data-provider secret; the data-centre hosts; 10,000 items and 2,500,000 bytes a request; a
  200 that carries `FailedLines` (`{"FailedLines":[{"ErrorCode":"MissingUserId",...}]}`):
  RudderStack's rudder-transformer, `src/cdk/v2/destinations/the_trade_desk/utils.js`,
  `config.js` and `src/v0/destinations/the_trade_desk/networkHandler.js`.
- a failed line without `ItemNumber` and `TDID`, e.g. `{"ErrorCode":"MissingUserId","Message":
  "Invalid DAID, item #1"}`: recorded as TTD's answer in RudderStack's
  `src/v0/destinations/the_trade_desk/networkHandler.js`.
- 403 codes IncorrectPermissions, AdvertiserMisconfigured, DataProviderMisconfigured,
  TargetingDataLimitReached ("the maximum allowed targeting data elements limit ... has been
  reached"), 413 MaxRequestSizeExceeded, in an `{"ErrorCode", "Message"}` envelope: TTD's Data
  API return codes (open.thetradedesk.com .../post-data-advertiser-firstparty and
  .../Foundations/resources/doc/ReturnCodes, as summarised in api-evangelist/trade-desk
  `errors/trade-desk-error-codes.yml`); a 403 body in plain text is read as well. 410 "The
  request uses a deprecated endpoint or property" (ReturnCodes, same summary,
  `errors/trade-desk-problem-types.yml`): TTD's deprecation signal, sent instead of headers.
- TTL default 30 days, at most 180 days: RudderStack's "The Trade Desk Audience" setup guide
  (rudderstack.com/docs/destinations/audience-list-destinations/trade-desk-audience/setup-guide/).
- The key is spelled `TtlInMinutes` as in the SDK's schema; RudderStack sends `TTLInMinutes`,
  which suggests TTD reads keys case-insensitively, but we do not rely on it.
- TtdSignature being the older scheme, TTD-Auth the current one: the SDK above sends only
  TTD-Auth; TTD's "Data API calls" page (via api-evangelist/trade-desk's summary) marks the
  signature legacy.
- A segment coming into being with its first upload (no create call), and adds/removes being
  safe to repeat: the project's platform notes, not found in a primary source here.
- The accepted characters of a segment name are not published; [A-Za-z0-9._-] is a guess on
  the safe side, not a documented rule.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from targets.base import Mutation
from targets.errors import CredentialsRefused, PartialFailure, PermanentError, VersionRetired
from targets import settings as read
from targets.http import _excerpt, raise_for_status, status_summary

log = logging.getLogger("diy.targets.thetradedesk")

PLATFORM = "The Trade Desk"
PATH = "/data/advertiser"
DEFAULT_MAX_BYTES = 2_500_000
NOT_NAME_CHARACTER = re.compile(r"[^A-Za-z0-9._-]")
"""What a segment name may not hold (a guess on the safe side; see the end of the docstring above)."""
_ITEM_IN_MESSAGE = re.compile(r"\bitem\s*#\s*([0-9]{1,9})\b", re.IGNORECASE)
ACCOUNT_REFUSALS = {
    "TargetingDataLimitReached": "the advertiser has as many segments (targeting data) as TTD allows;"
                                 " ask TTD to raise the limit or retire unused segments",
    "AdvertiserMisconfigured": "TTD has not set this advertiser up to send first-party data; ask TTD",
    "DataProviderMisconfigured": "TTD has not set target.data_provider_id up for this advertiser",
}
"""What an operator does about each 403 code that is not about our credentials."""


def segment_name(prefix: str, customer: Any, dmp_id: str) -> str:
    """`<prefix>_<customer>_<dmp_id>`, or `<prefix>_<dmp_id>` without a customer; see "Segments"
    in targets/thetradedesk.py."""
    parts = [prefix] if customer is None else [prefix, str(customer)]
    return NOT_NAME_CHARACTER.sub("_", "_".join([*parts, str(dmp_id)]))


def sign(secret: str, body: bytes) -> str:
    """The `TtdSignature` (or `TtdSignature-dp`) value: base64 of HMAC-SHA1 over the body."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def build_requests(
    advertiser_id: str,
    segment: str,
    mutations: Sequence[Mutation],
    ttl: int,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    data_provider_id: Optional[str] = None,
) -> List[Tuple[bytes, Sequence[Mutation]]]:
    """(body, its mutations) per request: compact JSON, in order, each at most `max_bytes`.

    Item N of a body (1-based) is the body's mutation N-1. A single item larger than
    `max_bytes` with its envelope still goes out alone: TTD's 413 then decides.
    """
    head = '{"AdvertiserId":' + json.dumps(advertiser_id)
    if data_provider_id is not None:
        head += ',"DataProviderId":' + json.dumps(data_provider_id)
    head, tail = (head + ',"Items":[').encode("ascii"), b"]}"
    data = json.dumps([{"Name": segment, "TtlInMinutes": ttl}], separators=(",", ":"))
    items = [
        ('{"TDID":' + json.dumps(mutation.external_user_id) + ',"Data":' + data + "}").encode("ascii")
        for mutation in mutations
    ]
    requests, start, size = [], 0, len(head) + len(tail)
    for index, item in enumerate(items):
        added = len(item) + (1 if index > start else 0)
        if index > start and size + added > max_bytes:
            requests.append((head + b",".join(items[start:index]) + tail, mutations[start:index]))
            start, size, added = index, len(head) + len(tail), len(item)
        size += added
    requests.append((head + b",".join(items[start:]) + tail, mutations[start:]))
    return requests


def read_answer(response, batch: Sequence[Mutation], *, advertiser_id: str, now: float) -> None:
    """Return when TTD took every item of `batch`; raise the `targets.errors` class otherwise."""
    status = response.status
    failed_lines = _failed_lines(response) if status in (200, 400) else None
    if failed_lines:
        failed, unattributed = failed_by_mutation(failed_lines, batch)
        for reason in unattributed:
            log.warning("ttd failed line names no item advertiser=%s items=%d reason=%r;"
                        " nothing dead-lettered for it", advertiser_id, len(batch), reason)
        if failed:
            raise PartialFailure(f"{PLATFORM} refused {len(failed)} of {len(batch)} users", failed)
        return
    if status == 401:
        raise CredentialsRefused(
            f"{PLATFORM} refused the credentials for advertiser {advertiser_id}"
            f" ({status_summary(response)}); a configuration error: check target.token or"
            " target.secret"
        )
    if status == 403:
        raise CredentialsRefused(refusal_message(response, advertiser_id))
    if status == 410:
        raise VersionRetired(
            f"{PLATFORM} no longer serves {PATH} as diy-wsgi calls it ({status_summary(response)}):"
            " the endpoint or a property we send is retired; update diy-wsgi. The work waits,"
            " nothing is dead-lettered"
        )
    if status == 400:
        raise PermanentError(f"{PLATFORM} refused the request: {status_summary(response)}")
    raise_for_status(response, PLATFORM, now)


def refusal_message(response, advertiser_id: str) -> str:
    """A 403 in TTD's words: its `ErrorCode` and `Message`, and what the operator can do."""
    document = response.json()
    code = message = None
    if isinstance(document, dict):
        code, message = document.get("ErrorCode"), document.get("Message")
    code = _excerpt(code) if isinstance(code, str) and code.strip() else None
    said = f"{code}: {_excerpt(str(message))}" if code and message else code or status_summary(response)
    advice = ACCOUNT_REFUSALS.get(code, "check target.token or target.secret and target.advertiser_id")
    return (f"{PLATFORM} refused advertiser {advertiser_id} (HTTP 403, {said}); an account problem,"
            f" not the data's: {advice}")


def failed_by_mutation(
    lines: Sequence[Any], batch: Sequence[Mutation]
) -> Tuple[Dict[int, str], List[str]]:
    """({mutation id: "<ErrorCode>: <Message>"}, [reasons of lines naming no item]) for the
    FailedLines of one request; see the module docstring for how a line names its item."""
    failed: Dict[int, str] = {}
    unattributed: List[str] = []
    for line in lines:
        line = line if isinstance(line, dict) else {}
        reason = _line_reason(line)
        matched = _match_line(line, batch)
        if not matched:
            unattributed.append(reason)
        for mutation in matched:
            failed.setdefault(mutation.id, reason)
    return failed, unattributed


def _failed_lines(response) -> Optional[list]:
    document = response.json()
    lines = document.get("FailedLines") if isinstance(document, dict) else None
    return lines if isinstance(lines, list) and lines else None


def _match_line(line: Mapping[str, Any], batch: Sequence[Mutation]) -> List[Mutation]:
    for number in (_item_number(line), _item_in_message(line)):
        if number is not None and 1 <= number <= len(batch):
            return [batch[number - 1]]
    tdid = line.get("TDID")
    if isinstance(tdid, str) and tdid:
        return [mutation for mutation in batch if mutation.external_user_id.lower() == tdid.lower()]
    return []


def _item_number(line: Mapping[str, Any]) -> Optional[int]:
    number = line.get("ItemNumber")
    if isinstance(number, str) and read.WHOLE_NUMBER.fullmatch(number.strip()):
        return int(number.strip())
    return number if isinstance(number, int) and not isinstance(number, bool) else None


def _item_in_message(line: Mapping[str, Any]) -> Optional[int]:
    """N from a Message like "Invalid DAID, item #1" (the last such mention)."""
    message = line.get("Message")
    found = _ITEM_IN_MESSAGE.findall(message) if isinstance(message, str) else []
    return int(found[-1]) if found else None


def _line_reason(line: Mapping[str, Any]) -> str:
    code, message = line.get("ErrorCode"), line.get("Message")
    code = _excerpt(str(code)) if code not in (None, "") else "Unknown"
    return f"{code}: {_excerpt(str(message))}" if message not in (None, "") else code
