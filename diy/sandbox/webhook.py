"""The generic webhook receiver: `POST /webhook`, Standard Webhooks 1.0 signatures.

The format is our own (`targets.webhook` documents the sender's side; the signature is the
Standard Webhooks spec's), so a receiver's checks beyond the signature are our assumption,
strict where that module documents the event:

- the signature is checked on the raw body before it is parsed (`targets.webhook.verify`, with
  its 300-second timestamp tolerance); a missing, stale or wrong one is answered 401;
- a body that is not `application/json`, not JSON, or not an event of the documented shape
  (`type`, `timestamp` a string, `data.integration` a string, `data.audience.dmp_id`,
  `data.members[].external_user_id`) is answered 400 naming the first wrong field;
- a member event whose `data.audience.id` is not the id this receiver gave the audience is
  answered 400 (a receiver files members under its own id);
- with `max_members` (`SandboxSettings.webhook_max_members`), an event of more members is
  answered 413, as a receiver's body limit would;
- an event whose `webhook-id` was already applied is answered as it was the first time and not
  applied again, as Standard Webhooks asks of receivers.

The events:

    audience.created          -> 200 {"id": "sbx-<n>"} (the same id when created again)
    audience.members_added    -> 200 {}, each member's `external_user_id` added
    audience.members_removed  -> 200 {}, removed
"""
import json
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

from diy.sandbox.faults import NO_CALL, Call
from diy.sandbox.state import SandboxState
from diy.sandbox.wire import (
    BadRequest, PayloadTooLarge, Reply, Request, Unauthorized, as_object, json_reply, read_json,
)
from targets.webhook import SignatureError, verify

CREATED = "audience.created"
MEMBER_EVENTS = {"audience.members_added": True, "audience.members_removed": False}


@dataclass(frozen=True)
class Event:
    type: str
    dmp_id: str
    audience_id: Optional[str]
    name: Optional[str]
    users: Tuple[str, ...] = ()


class WebhookApi:
    """Verifies, deduplicates and applies webhook events to the sandbox's state."""

    def __init__(self, state: SandboxState, secret: str, clock: Callable[[], float],
                 max_members: Optional[int] = None):
        self.state = state
        self.secret = secret
        """The receiver's signing secret; set it to rotate the key (callers then get 401)."""
        self.clock = clock
        self.max_members = max_members

    def routes(self):
        """(method, path pattern, handler) for the server's route table."""
        return [("POST", r"/webhook", self.handle)]

    def call(self, request: Request) -> Call:
        """The audience an event is for and whether it creates one, for the fault model."""
        try:
            document = json.loads(request.body)
            audience = document["data"]["audience"]["dmp_id"]
            return Call(audience if isinstance(audience, str) else None, document.get("type") == CREATED)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return NO_CALL

    def handle(self, request: Request) -> Reply:
        try:
            verify(self.secret, request.headers, request.body, now=self.clock())
        except SignatureError as error:
            raise Unauthorized(f"{error}; sign with the sandbox's --webhook-secret") from None
        if (request.header("content-type") or "").split(";")[0].strip().lower() != "application/json":
            raise BadRequest("the content-type must be application/json")
        event = parse_event(read_json(request, "the event"))
        if self.max_members is not None and len(event.users) > self.max_members:
            raise PayloadTooLarge(f"more than {self.max_members} members in one event")
        answer = self.state.webhook_once(request.header("webhook-id").strip(), lambda: self._apply(event))
        return json_reply(200, answer)

    def _apply(self, event: Event) -> Any:
        if event.type == CREATED:
            return {"id": self.state.webhook_create(event.dmp_id, event.name)}
        if not self.state.webhook_members(
                event.dmp_id, event.audience_id, event.name, MEMBER_EVENTS[event.type], event.users):
            raise BadRequest(f"data.audience.id is not the id this receiver gave audience {event.dmp_id!r}")
        return {}


def parse_event(document: Any) -> Event:
    """The parts of an event the sandbox applies; BadRequest naming the first wrong field."""
    document = as_object(document, "the event")
    event_type = document.get("type")
    if event_type != CREATED and event_type not in MEMBER_EVENTS:
        known = ", ".join([CREATED, *MEMBER_EVENTS])
        raise BadRequest(f"type must be one of {known}")
    if not isinstance(document.get("timestamp"), str):
        raise BadRequest("timestamp must be a string")
    data = as_object(document.get("data"), "data")
    if not isinstance(data.get("integration"), str):
        raise BadRequest("data.integration must be a string")
    audience = as_object(data.get("audience"), "data.audience")
    dmp_id = audience.get("dmp_id")
    if not isinstance(dmp_id, str) or not dmp_id:
        raise BadRequest("data.audience.dmp_id must be a non-empty string")
    name = audience.get("name")
    if name is not None and not isinstance(name, str):
        raise BadRequest("data.audience.name must be a string or null")
    audience_id = audience.get("id")
    if isinstance(audience_id, bool) or not isinstance(audience_id, (str, int, type(None))):
        raise BadRequest("data.audience.id must be a string, an integer or null")
    if event_type == CREATED:
        return Event(event_type, dmp_id, None, name)
    members = data.get("members")
    if not isinstance(members, list):
        raise BadRequest("data.members must be a list")
    users = []
    for index, member in enumerate(members):
        user = member.get("external_user_id") if isinstance(member, dict) else None
        if not isinstance(user, str) or not user:
            raise BadRequest(f"data.members[{index}].external_user_id must be a non-empty string")
        users.append(user)
    audience_id = None if audience_id is None else str(audience_id)
    return Event(event_type, dmp_id, audience_id, name, tuple(users))
