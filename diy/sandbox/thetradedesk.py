"""The Trade Desk's advertiser first-party data upload: `POST /data/advertiser`.

Each behaviour names its source; "our assumption" marks what none confirms. "SDK" is the
official OpenAPI file of github.com/thetradedesk/ttd-data-python (`.speakeasy/out.openapi.yaml`);
"codes" TTD's Data API return codes (open.thetradedesk.com .../post-data-advertiser-firstparty,
summarised in api-evangelist/trade-desk `errors/trade-desk-error-codes.yml`); "RudderStack" the
rudder-transformer Trade Desk destination, which runs against TTD in production.

Authenticated by either header (SDK; RudderStack signs):

    TTD-Auth: <API token>                                   the sandbox's --ttd-token
    TtdSignature: base64(HMAC-SHA1(secret, exact body))     keyed with --ttd-secret
    TtdSignature-dp: the same keyed with the data provider's secret, when the upload names a
                     DataProviderId (platform facts: "with a DataProviderId, also TtdSignature-dp")

Body `{"AdvertiserId": "...", "DataProviderId"?: "...", "Items": [{"TDID": "<36-char UUID>",
"Data": [{"Name": "<segment>", "TtlInMinutes": 43200}]}]}` (SDK). A segment exists once a member
is first uploaded to it; `TtlInMinutes` 0 removes the TDID from the segment (TTLs are not
otherwise enforced: members never expire here). In the order checked:

    413 plain text      over `ttd_max_bytes` (2,500,000) body bytes (413 is in "codes"
                        (MaxRequestSizeExceeded); the figure RudderStack's; exactly there: our
                        assumption). No item limit: no source documents a 413 at 10,000 items
    401 plain text      wrong credentials (text: our assumption)
    400 plain text      not `application/json`, not JSON, or not an upload: unknown top-level
                        keys (the SDK's `additionalProperties: false`), no AdvertiserId, no
                        Items; worded with a code of "codes" (SerializationFailed, MissingData,
                        IncorrectContent; the plain text is our assumption)
    403 {"ErrorCode", "Message"}  ("codes"; the JSON envelope is the v2 one: our assumption)
                        AdvertiserMisconfigured for another AdvertiserId than
                        `ttd_advertiser_id`; DataProviderMisconfigured for a DataProviderId the
                        sandbox was not given (or none while it has one); TargetingDataLimitReached
                        for a new segment beyond `ttd_segment_limit`
    200 {}                                  every item applied (RudderStack)
    200 {"FailedLines": [...]}              the listed items failed, every other one applied
                                            (RudderStack: TTD "returns 200 with an error")
    400 {"FailedLines": [...]}              every item failed (the SDK lets a 400 carry
                                            FailedLines; when: our assumption)

A failed line has the shape recorded in production (RudderStack's networkHandler):
`{"ErrorCode", "Message": "<why>, item #N"}`, no `ItemNumber`, no `TDID`; with
`ttd_failed_lines = "schema"` it adds the SDK's optional `ItemNumber` (a 1-based string) and
`TDID`. Codes are those of the SDK's AdvertiserDataResponseErrorCode: MissingUserId for a
missing or malformed TDID (as recorded: "Invalid DAID, item #1"), InvalidTtlInMinutes, and
ItemDeserializationError for an item or Data entry that is not the documented shape, unknown
keys included (which code TTD uses there is our assumption). `refuse(tdids, code)` makes the
platform refuse those TDIDs with `code` (e.g. UserNotMapped). An item is applied whole or not
at all.
"""
import base64
import hashlib
import hmac
import json
import re
import threading
from typing import Any, Dict, Iterable, Optional, Tuple

from diy.sandbox.faults import NO_CALL, Call
from diy.sandbox.settings import SandboxSettings
from diy.sandbox.state import SandboxState
from diy.sandbox.wire import Reply, Request, SandboxError, json_reply, text_reply

MAX_TTL_MINUTES = 180 * 24 * 60
TDID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
REQUEST_KEYS = {"AdvertiserId", "DataProviderId", "Items", "DataLoadTraceId", "DataOrigins"}
ITEM_KEYS = {"TDID", "DAID", "UID2", "UID2Token", "RampID", "CoreID", "EUID", "EUIDToken", "ID5",
             "NetID", "FirstID", "UtiqID", "MerkuryID", "RealID", "IqviaPPID", "Data",
             "CookieMappingPartnerId"}
DATA_KEYS = {"Name", "TimestampUtc", "TtlInMinutes", "BaseBidCPM", "BaseBidCPMMetadata", "BidFactor"}
"""The keys the SDK's schemas name (each with `additionalProperties: false`)."""


class TtdError(SandboxError):
    """A refusal The Trade Desk words in plain text."""

    status = 400

    def reply(self) -> Reply:
        return text_reply(self.status, self.message, self.headers)


class TtdUnauthorized(TtdError):
    """Neither the TTD-Auth token nor the TtdSignature is right."""

    status = 401


class TtdTooLarge(TtdError):
    """Over the byte limit."""

    status = 413


class TtdForbidden(SandboxError):
    """A 403 in TTD's `{"ErrorCode", "Message"}` envelope."""

    status = 403

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code

    def reply(self) -> Reply:
        return json_reply(403, {"ErrorCode": self.code, "Message": self.message}, self.headers)


class TheTradeDeskApi:
    """Applies uploads to the sandbox's Trade Desk segments; safe to call from any thread."""

    def __init__(self, state: SandboxState, settings: SandboxSettings):
        self.state = state
        self.token = settings.ttd_token
        """The accepted TTD-Auth token; set it to revoke the old one (callers then get 401)."""
        self.secret = settings.ttd_secret
        self.advertiser_id = settings.ttd_advertiser_id
        self.data_provider_id = settings.ttd_data_provider_id
        self.data_provider_secret = settings.ttd_data_provider_secret
        self.max_bytes = settings.ttd_max_bytes
        self.segment_limit = settings.ttd_segment_limit
        self.schema_lines = settings.ttd_failed_lines == "schema"
        self._refused: Dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def call(request: Request) -> Call:
        """What the fault model knows of a call: nothing (its audience filter is the webhook's)."""
        return NO_CALL

    def routes(self):
        """(method, path pattern, handler) for the server's route table."""
        return [("POST", r"/data/advertiser", self.handle)]

    def refuse(self, tdids: Iterable[str], code: str = "MissingUserId") -> None:
        """From now on answer each of `tdids` in FailedLines with `code`, applying the rest."""
        with self._lock:
            self._refused.update(dict.fromkeys(tdids, code))

    def handle(self, request: Request) -> Reply:
        if len(request.body) > self.max_bytes:
            raise TtdTooLarge(f"MaxRequestSizeExceeded: the body is over {self.max_bytes} bytes; send fewer items")
        self._authenticate(request)
        if (request.header("content-type") or "").split(";")[0].strip().lower() != "application/json":
            raise TtdError("SerializationFailed: the Content-Type must be application/json")
        document = parse_upload(request.body)
        self._authorize(document)
        with self._lock:
            refused = dict(self._refused)
        failed = []
        for number, item in enumerate(document["Items"], 1):
            problem = item_problem(item)
            if problem is None and item["TDID"] in refused:
                problem = refused[item["TDID"]], "Refused by the sandbox"
            if problem is not None:
                code, message = problem
                line = {"ErrorCode": code, "Message": f"{message}, item #{number}"}
                if self.schema_lines:
                    line.update(ItemNumber=str(number), TDID=item.get("TDID") if isinstance(item, dict) else None)
                failed.append(line)
                continue
            for data in item["Data"]:
                self.state.ttd_member(document["AdvertiserId"], data["Name"], item["TDID"], data["TtlInMinutes"] > 0)
        if not failed:
            return json_reply(200, {})
        return json_reply(400 if len(failed) == len(document["Items"]) else 200, {"FailedLines": failed})

    def _authenticate(self, request: Request) -> None:
        token = request.header("ttd-auth")
        if token is not None and hmac.compare_digest(token.strip().encode("utf-8"), self.token.encode("utf-8")):
            return
        if not _signed(request.header("ttdsignature"), self.secret, request.body):
            raise TtdUnauthorized("Unauthorized: send the sandbox's TTD-Auth token or a TtdSignature "
                                  "made with its secret over the exact body")
        if self.data_provider_secret is not None and not _signed(
                request.header("ttdsignature-dp"), self.data_provider_secret, request.body):
            raise TtdUnauthorized("Unauthorized: TtdSignature-dp does not match the body")

    def _authorize(self, document: Dict[str, Any]) -> None:
        if document["AdvertiserId"] != self.advertiser_id:
            raise TtdForbidden("AdvertiserMisconfigured", "The provided AdvertiserId is not configured to send data")
        if document.get("DataProviderId") != self.data_provider_id:
            raise TtdForbidden("DataProviderMisconfigured",
                               "The provided DataProviderId is not configured to send data")
        if self.segment_limit is None:
            return
        names = {entry.get("Name") for item in document["Items"] if isinstance(item, dict)
                 for entry in item.get("Data") or () if isinstance(entry, dict)}
        if len(self.state.ttd_segment_names() | names) > self.segment_limit:
            raise TtdForbidden("TargetingDataLimitReached",
                               "The maximum allowed targeting data elements limit has been reached")


def parse_upload(body: bytes) -> Dict[str, Any]:
    """The upload's document; TtdError naming the first thing that makes it none."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TtdError("SerializationFailed: the body is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise TtdError("SerializationFailed: the body must be a JSON object")
    unknown = sorted(set(document) - REQUEST_KEYS)
    if unknown:
        raise TtdError(f"SerializationFailed: unknown keys {unknown}")
    advertiser_id = document.get("AdvertiserId")
    if not isinstance(advertiser_id, str) or not advertiser_id:
        raise TtdError("MissingData: AdvertiserId must be a non-empty string")
    if "DataProviderId" in document and not isinstance(document["DataProviderId"], str):
        raise TtdError("IncorrectContent: DataProviderId must be a string")
    items = document.get("Items")
    if not isinstance(items, list) or not items:
        raise TtdError("MissingData: Items must be a non-empty list")
    return document


def item_problem(item: Any) -> Optional[Tuple[str, str]]:
    """(ErrorCode, Message) for an item that cannot be applied; None for a good one."""
    if not isinstance(item, dict) or set(item) - ITEM_KEYS:
        return "ItemDeserializationError", "an item must be a JSON object of known keys"
    tdid = item.get("TDID")
    if not isinstance(tdid, str) or not TDID.fullmatch(tdid):
        return "MissingUserId", "Invalid TDID"
    data = item.get("Data")
    if not isinstance(data, list) or not data:
        return "ItemDeserializationError", "Data must be a non-empty list of segments"
    for entry in data:
        problem = _data_problem(entry)
        if problem is not None:
            return problem
    return None


def _data_problem(entry: Any) -> Optional[Tuple[str, str]]:
    if not isinstance(entry, dict) or set(entry) - DATA_KEYS:
        return "ItemDeserializationError", "each Data entry must be a JSON object of known keys"
    name = entry.get("Name")
    if not isinstance(name, str) or not name:
        return "ItemDeserializationError", "each Data entry needs a Name"
    ttl = entry.get("TtlInMinutes")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL_MINUTES:
        return "InvalidTtlInMinutes", f"TtlInMinutes must be a whole number from 0 to {MAX_TTL_MINUTES}"
    return None


def _signed(received: Optional[str], secret: str, body: bytes) -> bool:
    return received is not None and hmac.compare_digest(
        received.strip().encode("utf-8"), sign(secret, body).encode("ascii"))


def sign(secret: str, body: bytes) -> str:
    """The TtdSignature header value for `body`, for tests and curl users."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha1).digest()).decode("ascii")
