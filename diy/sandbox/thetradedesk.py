"""The Trade Desk's advertiser first-party data upload: `POST /data/advertiser`.

Each behaviour names its source; "our assumption" marks what none confirms. "SDK" is the
official OpenAPI file of github.com/thetradedesk/ttd-data-python; "codes" TTD's Data API
return codes (open.thetradedesk.com .../post-data-advertiser-firstparty, summarised in
api-evangelist/trade-desk `errors/trade-desk-error-codes.yml`); "RudderStack" the
rudder-transformer Trade Desk destination, which runs against TTD in production.

Authenticated by either header (SDK; RudderStack signs):

    TTD-Auth: <API token>                                   the sandbox's --ttd-token
    TtdSignature: base64(HMAC-SHA1(secret, exact body))     keyed with --ttd-secret

Body `{"AdvertiserId": "...", "Items": [{"TDID": "<36-char UUID>", "Data": [{"Name": "<segment>",
"TtlInMinutes": 43200}]}]}` (SDK). A segment exists once a member is first uploaded to it;
`TtlInMinutes` 0 removes the TDID from the segment (TTLs are not otherwise enforced: members
never expire here). Answers:

    200 {}                                  every item applied (RudderStack)
    200 {"FailedLines": [...]}              the listed items failed, every other one applied
                                            (RudderStack: TTD "returns 200 with an error")
    400 {"FailedLines": [...]}              every item failed (the SDK lets a 400 carry
                                            FailedLines; when: our assumption)
    400 plain text                          not JSON or not an upload (text: our assumption)
    401 plain text                          wrong credentials (text: our assumption)
    413 plain text                          over 2,500,000 body bytes (413 is in "codes"; the
                                            figure RudderStack's; exactly there: our assumption)

No item limit: no source documents a 413 at 10,000 items. A failed line has the shape
recorded in production (RudderStack's networkHandler): `{"ErrorCode", "Message": "<why>,
item #N"}`, no `ItemNumber`, no `TDID`. Codes are those of the SDK's
AdvertiserDataResponseErrorCode: MissingUserId for a missing or malformed TDID (as recorded:
"Invalid DAID, item #1"), InvalidTtlInMinutes, and ItemDeserializationError for an item or
Data entry that is not the documented shape (which code TTD uses there is our assumption).
An item is applied whole or not at all.
"""
import base64
import hashlib
import hmac
import json
import re
from typing import Any, List, Optional, Tuple

from diy.sandbox.faults import NO_CALL, Call
from diy.sandbox.state import SandboxState
from diy.sandbox.wire import Reply, Request, SandboxError, json_reply, text_reply

MAX_BODY = 2_500_000
MAX_TTL_MINUTES = 180 * 24 * 60
TDID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class TtdError(SandboxError):
    """A refusal The Trade Desk words in plain text."""

    status = 400

    def reply(self) -> Reply:
        return text_reply(self.status, self.message, self.headers)


class TtdUnauthorized(TtdError):
    """Neither the TTD-Auth token nor the TtdSignature is right."""

    status = 401


class TtdTooLarge(TtdError):
    """Over 2.5 MB."""

    status = 413


class TheTradeDeskApi:
    """Applies uploads to the sandbox's Trade Desk segments."""

    def __init__(self, state: SandboxState, token: str, secret: str):
        self.state = state
        self.token = token.encode("utf-8")
        self.secret = secret

    @staticmethod
    def call(request: Request) -> Call:
        """What the fault model knows of a call: nothing (its audience filter is the webhook's)."""
        return NO_CALL

    def routes(self):
        """(method, path pattern, handler) for the server's route table."""
        return [("POST", r"/data/advertiser", self.handle)]

    def handle(self, request: Request) -> Reply:
        if len(request.body) > MAX_BODY:
            raise TtdTooLarge(f"the body is over {MAX_BODY} bytes; send fewer items")
        self._authenticate(request)
        advertiser_id, items = parse_upload(request.body)
        failed = []
        for number, item in enumerate(items, 1):
            problem = item_problem(item)
            if problem is not None:
                code, message = problem
                failed.append({"ErrorCode": code, "Message": f"{message}, item #{number}"})
                continue
            for data in item["Data"]:
                self.state.ttd_member(advertiser_id, data["Name"], item["TDID"], data["TtlInMinutes"] > 0)
        if not failed:
            return json_reply(200, {})
        return json_reply(400 if len(failed) == len(items) else 200, {"FailedLines": failed})

    def _authenticate(self, request: Request) -> None:
        token = request.header("ttd-auth")
        if token is not None and hmac.compare_digest(token.strip().encode("utf-8"), self.token):
            return
        signature = request.header("ttdsignature")
        if signature is not None:
            expected = sign(self.secret, request.body).encode("ascii")
            if hmac.compare_digest(signature.strip().encode("utf-8"), expected):
                return
        raise TtdUnauthorized("Unauthorized: send the sandbox's TTD-Auth token or a TtdSignature "
                              "made with its secret over the exact body")


def parse_upload(body: bytes) -> Tuple[str, List[Any]]:
    """The advertiser and the items of an upload; TtdError when the body is not one."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TtdError("the body is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise TtdError("the body must be a JSON object")
    advertiser_id = document.get("AdvertiserId")
    if not isinstance(advertiser_id, str) or not advertiser_id:
        raise TtdError("AdvertiserId must be a non-empty string")
    items = document.get("Items")
    if not isinstance(items, list):
        raise TtdError("Items must be a list")
    return advertiser_id, items


def item_problem(item: Any) -> Optional[Tuple[str, str]]:
    """(ErrorCode, Message) for an item that cannot be applied; None for a good one."""
    if not isinstance(item, dict):
        return "ItemDeserializationError", "an item must be a JSON object"
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
    if not isinstance(entry, dict):
        return "ItemDeserializationError", "each Data entry must be a JSON object"
    name = entry.get("Name")
    if not isinstance(name, str) or not name:
        return "ItemDeserializationError", "each Data entry needs a Name"
    ttl = entry.get("TtlInMinutes")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL_MINUTES:
        return "InvalidTtlInMinutes", f"TtlInMinutes must be a whole number from 0 to {MAX_TTL_MINUTES}"
    return None


def sign(secret: str, body: bytes) -> str:
    """The TtdSignature header value for `body`, for tests and curl users."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha1).digest()).decode("ascii")

