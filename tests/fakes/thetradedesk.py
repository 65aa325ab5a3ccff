"""A fake The Trade Desk Data API (`POST /data/advertiser`) on a pytest-httpserver instance.

Each behaviour names its source; "our assumption" marks what no source confirms. "SDK" is the
official OpenAPI file of github.com/thetradedesk/ttd-data-python (`.speakeasy/out.openapi.yaml`);
"codes" is TTD's Data API return-code list (open.thetradedesk.com .../post-data-advertiser-
firstparty, summarised in api-evangelist/trade-desk `errors/trade-desk-error-codes.yml`);
"RudderStack" is rudder-transformer's Trade Desk destination, which runs in production.

- a scripted fault (`fail_next`, optionally `after` some requests answered normally) comes
  first, before anything is checked;
- a body over `max_bytes` (2,500,000) -> 413: the status is in "codes" (MaxRequestSizeExceeded),
  the figure is RudderStack's config; that TTD cuts at exactly this size is our assumption. No
  item limit is enforced: no source documents a 413 at 10,000 items;
- token mode (`secret=None`): `TTD-Auth` must equal `token` (SDK), else 401; signature mode:
  `TtdSignature` must be base64(HMAC-SHA1(secret, the exact body bytes)) (RudderStack), else
  401; with a data provider, `DataProviderId` must match and `TtdSignature-dp` verify with its
  secret. The 401 body in plain text is our assumption;
- not `application/json`, not JSON, or not the documented shape (unknown keys refused, as the
  SDK says `additionalProperties: false`) -> 400 plain text with a code from "codes"
  (SerializationFailed, MissingData, IncorrectContent);
- 403 `{"ErrorCode", "Message"}` ("codes"; the JSON envelope is the v2 one, the v1 body is our
  assumption): another `AdvertiserId` -> AdvertiserMisconfigured; a `DataProviderId` it was
  not given -> DataProviderMisconfigured; a new segment name once the advertiser has
  `segment_limit` segments -> TargetingDataLimitReached;
- per item: a TDID in `refuse(...)`, a TDID that is not a 36-character UUID (MissingUserId,
  "Invalid TDID"), or `TtlInMinutes` outside 0..259200 (InvalidTtlInMinutes, a code of the
  SDK's AdvertiserDataResponseErrorCode) is answered in `FailedLines`; the other items are
  applied. A line's shape is `failed_lines`: "recorded" (the default) is what RudderStack
  recorded from TTD, `{"ErrorCode", "Message": "..., item #N"}` without `ItemNumber` or `TDID`;
  "schema" adds the SDK's optional `ItemNumber` (a 1-based string) and `TDID`. Some failed:
  200 (RudderStack: "Trade desk returns 200 with an error"); all: 400 (the SDK lets a 400
  carry FailedLines; answering so when all failed is our assumption).

State: `members` {segment name: set of TDIDs} (TtlInMinutes 0 removes; a segment without
members is dropped), `requests` (the parsed JSON body of every request received, None when it
was not JSON, in order, faulted and refused ones included), `rejections` ((status, reason) of
every request refused whole).
"""
import base64
import hashlib
import hmac
import re
import threading

from werkzeug import Response

from diy.sandbox.faults import Script
from tests.fakes import json_or_none, json_response, scripted_answer

PATH = "/data/advertiser"
MAX_TTL_MINUTES = 259_200
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
REQUEST_KEYS = {"AdvertiserId", "DataProviderId", "Items", "DataLoadTraceId", "DataOrigins"}
ITEM_KEYS = {"TDID", "DAID", "UID2", "UID2Token", "RampID", "CoreID", "EUID", "EUIDToken", "ID5",
             "NetID", "FirstID", "UtiqID", "MerkuryID", "RealID", "IqviaPPID", "Data",
             "CookieMappingPartnerId"}
DATA_KEYS = {"Name", "TimestampUtc", "TtlInMinutes", "BaseBidCPM", "BaseBidCPMMetadata", "BidFactor"}


class _Refused(Exception):
    def __init__(self, status, reason, code=None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code

    def response(self):
        """With a `code`: TTD's `{"ErrorCode", "Message"}` envelope; else plain text."""
        if self.code is None:
            return Response(self.reason, status=self.status, content_type="text/plain")
        return json_response(self.status, {"ErrorCode": self.code, "Message": self.reason})


class FakeTheTradeDesk:
    """The TTD advertiser data endpoint; `settings()` points a TheTradeDeskTarget at it."""

    def __init__(self, httpserver, *, advertiser_id="adv1", token="ttd-token", secret=None,
                 data_provider_id=None, data_provider_secret=None, max_bytes=2_500_000,
                 segment_limit=None):
        if (data_provider_id is None) != (data_provider_secret is None):
            raise ValueError("give data_provider_id and data_provider_secret together")
        if data_provider_id is not None and secret is None:
            raise ValueError("a data provider signs only in signature mode: give secret too")
        self.httpserver = httpserver
        self.advertiser_id = advertiser_id
        self.token = token
        self.secret = secret
        self.data_provider_id = data_provider_id
        self.data_provider_secret = data_provider_secret
        self.max_bytes = max_bytes
        self.segment_limit = segment_limit
        self.failed_lines = "recorded"
        self.segments = set()
        """Every segment name that came into being, members or not (what TargetingDataLimitReached counts)."""
        self.members = {}
        self.requests = []
        self.rejections = []
        self._faults = Script()
        self._refused = {}
        self._lock = threading.Lock()
        httpserver.expect_request(PATH, method="POST").respond_with_handler(self._handle)

    def settings(self):
        """The `target.*` settings (prefix cut) of a TheTradeDeskTarget talking to this fake."""
        settings = {"base_url": self.httpserver.url_for("/").rstrip("/"),
                    "advertiser_id": self.advertiser_id, "timeout": "5"}
        if self.secret is None:
            return {**settings, "token": self.token}
        settings.update(auth="signature", secret=self.secret)
        if self.data_provider_id is not None:
            settings.update(data_provider_id=self.data_provider_id,
                            data_provider_secret=self.data_provider_secret)
        return settings

    def fail_next(self, status, times=1, headers=None, body=None, *, after=0):
        """Answer `times` requests with `status` (and `headers`, `body`) unchecked, once `after`
        more requests have been answered normally.

        `body` may be a dict or list (sent as JSON), text or bytes; by default a short text.
        """
        with self._lock:
            self._faults.add(status, times, headers, body, after=after)

    def refuse(self, tdids, code="MissingUserId"):
        """From now on answer each of `tdids` (one string or several) in FailedLines with `code`."""
        with self._lock:
            for tdid in [tdids] if isinstance(tdids, str) else tdids:
                self._refused[tdid] = code

    def _handle(self, request):
        raw = request.get_data()
        with self._lock:
            self.requests.append(json_or_none(raw))
            scripted = scripted_answer(self._faults, lambda status: f"scripted HTTP {status}")
            if scripted is not None:
                return scripted
            try:
                document = self._check_request(request.headers, raw)
            except _Refused as refusal:
                self.rejections.append((refusal.status, refusal.reason))
                return refusal.response()
            failed_lines = self._apply(document)
        if not failed_lines:
            return json_response(200, {})
        status = 400 if len(failed_lines) == len(document["Items"]) else 200
        return json_response(status, {"FailedLines": failed_lines})

    def _check_request(self, headers, raw):
        """The parsed body of a request the platform would process; _Refused otherwise."""
        if len(raw) > self.max_bytes:
            raise _Refused(413, "Request Entity Too Large")
        self._check_auth(headers, raw)
        if not (headers.get("Content-Type") or "").startswith("application/json"):
            raise _Refused(400, "the Content-Type must be application/json")
        document = json_or_none(raw)
        _check_shape(document)
        if document["AdvertiserId"] != self.advertiser_id:
            raise _Refused(403, "The provided AdvertiserId is not configured to send data", "AdvertiserMisconfigured")
        if document.get("DataProviderId") != self.data_provider_id:
            raise _Refused(403, "The provided DataProviderId is not configured to send data",
                           "DataProviderMisconfigured")
        names = {data["Name"] for item in document["Items"] for data in item["Data"]}
        if self.segment_limit is not None and len(self.segments | names) > self.segment_limit:
            raise _Refused(403, "The maximum allowed targeting data elements limit has been reached",
                           "TargetingDataLimitReached")
        return document

    def _check_auth(self, headers, raw):
        if self.secret is None:
            if headers.get("TTD-Auth") != self.token:
                raise _Refused(401, "Unauthorized: missing or invalid TTD-Auth token")
            return
        if not _signature_valid(headers.get("TtdSignature"), self.secret, raw):
            raise _Refused(401, "Unauthorized: TtdSignature does not match the body")
        if self.data_provider_secret is not None and not _signature_valid(
                headers.get("TtdSignature-dp"), self.data_provider_secret, raw):
            raise _Refused(401, "Unauthorized: TtdSignature-dp does not match the body")

    def _apply(self, document):
        failed_lines = []
        for number, item in enumerate(document["Items"], start=1):
            tdid = item.get("TDID")
            reason = self._item_error(tdid, item["Data"])
            if reason:
                code, message = reason
                line = {"ErrorCode": code, "Message": f"{message}, item #{number}"}
                if self.failed_lines == "schema":
                    line.update(ItemNumber=str(number), TDID=tdid)
                failed_lines.append(line)
                continue
            for data in item["Data"]:
                self.segments.add(data["Name"])
                segment = self.members.setdefault(data["Name"], set())
                if data["TtlInMinutes"] == 0:
                    segment.discard(tdid)
                    if not segment:
                        del self.members[data["Name"]]
                else:
                    segment.add(tdid)
        return failed_lines

    def _item_error(self, tdid, data):
        if tdid in self._refused:
            return self._refused[tdid], "Refused by the fake"
        if not isinstance(tdid, str) or not _UUID.fullmatch(tdid):
            return "MissingUserId", "Invalid TDID"
        for entry in data:
            ttl = entry.get("TtlInMinutes")
            if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL_MINUTES:
                return "InvalidTtlInMinutes", "TtlInMinutes must be from 0 to 259200"
        return None


def _check_shape(document):
    if not isinstance(document, dict):
        raise _Refused(400, "SerializationFailed: the body is not a JSON object")
    unknown = set(document) - REQUEST_KEYS
    if unknown:
        raise _Refused(400, f"SerializationFailed: unknown keys {sorted(unknown)}")
    if not isinstance(document.get("AdvertiserId"), str) or not document["AdvertiserId"]:
        raise _Refused(400, "MissingData: AdvertiserId")
    if "DataProviderId" in document and not isinstance(document["DataProviderId"], str):
        raise _Refused(400, "IncorrectContent: DataProviderId must be a string")
    items = document.get("Items")
    if not isinstance(items, list) or not items:
        raise _Refused(400, "MissingData: Items")
    for item in items:
        if not isinstance(item, dict) or set(item) - ITEM_KEYS:
            raise _Refused(400, "SerializationFailed: an item is not an object of known keys")
        data = item.get("Data")
        if not isinstance(data, list) or not data:
            raise _Refused(400, "MissingData: Items[].Data")
        for entry in data:
            if not isinstance(entry, dict) or set(entry) - DATA_KEYS:
                raise _Refused(400, "SerializationFailed: a Data entry is not an object of known keys")
            if not isinstance(entry.get("Name"), str) or not entry["Name"]:
                raise _Refused(400, "MissingData: Items[].Data[].Name")


def _signature_valid(received, secret, raw):
    expected = base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha1).digest())
    return isinstance(received, str) and hmac.compare_digest(received.encode("utf-8", "replace"), expected)
