"""A fake Standard Webhooks receiver for `targets.webhook` on a pytest-httpserver instance.

It is strict where the webhook target documents the receiver's side, like the other fakes:

- a scripted fault (`fail_next`) comes first, before anything is checked;
- the signature is checked on the raw body with `targets.webhook.verify` at `clock()` (a
  missing, stale or wrong one -> 401 and a note in `violations`);
- not `application/json`, not JSON, or not an event of the documented shape (type, data,
  data.audience.dmp_id, data.members[].external_user_id) -> 400 and a note in `violations`;
- more than `max_members` members in one event (when given) -> 413, like a receiver's body limit;
- a `webhook-id` already applied is answered as it was the first time and not applied again,
  as Standard Webhooks asks of receivers;
- audience.created -> 200 `{"id": "rcv-<n>"}`, the same id when the audience is created again.

State: `members` {audience id as the receiver knows it (the `data.audience.id` of member events,
else the dmp_id): set of external user ids}, `audiences` {receiver id: dmp_id}, `requests` (the
parsed JSON body of every request, None when not JSON, in order, faulted and refused ones
included), `violations` (what a request got wrong).
"""
import threading
import time

from targets.webhook import SignatureError, verify
from diy.sandbox.faults import Script
from tests.fakes import json_or_none, json_response, scripted_answer
from tests.support import WEBHOOK_SECRET

PATH = "/events"
CREATED = "audience.created"
MEMBER_EVENTS = {"audience.members_added": True, "audience.members_removed": False}


class _Refused(Exception):
    def __init__(self, status, reason, violation=True):
        super().__init__(reason)
        self.status, self.reason, self.violation = status, reason, violation


class FakeWebhook:
    """A webhook receiver; `settings()` points a WebhookTarget at it."""

    def __init__(self, httpserver, *, secret=WEBHOOK_SECRET, path=PATH, clock=time.time,
                 max_members=None):
        self.httpserver = httpserver
        self.secret = secret
        self.path = path
        self.clock = clock
        self.max_members = max_members
        self.members = {}
        self.audiences = {}
        self.requests = []
        self.violations = []
        self._answers = {}
        self._created = {}
        self._faults = Script()
        self._lock = threading.Lock()
        httpserver.expect_request(path, method="POST").respond_with_handler(self._handle)

    def settings(self):
        """The `target.*` settings (prefix cut) of a WebhookTarget talking to this fake."""
        return {"url": self.httpserver.url_for(self.path), "secret": self.secret, "timeout": "5"}

    def fail_next(self, status, times=1, headers=None, body=None):
        """Answer the next `times` requests with `status` (and `headers`, `body`) unchecked.

        `body` may be a dict or list (sent as JSON), text or bytes; by default a short JSON error.
        """
        with self._lock:
            self._faults.add(status, times, headers, body)

    def _handle(self, request):
        raw = request.get_data()
        with self._lock:
            self.requests.append(json_or_none(raw))
            scripted = scripted_answer(self._faults, lambda status: {"error": f"scripted HTTP {status}"})
            if scripted is not None:
                return scripted
            try:
                event = self._check(request, raw)
            except _Refused as refusal:
                if refusal.violation:
                    self.violations.append(refusal.reason)
                return json_response(refusal.status, {"error": refusal.reason})
            message_id = request.headers["webhook-id"].strip()
            if message_id not in self._answers:
                self._answers[message_id] = self._apply(event)
            return json_response(200, self._answers[message_id])

    def _check(self, request, raw):
        """The parsed event of a request a receiver would apply; _Refused otherwise."""
        try:
            verify(self.secret, dict(request.headers), raw, now=self.clock())
        except SignatureError as error:
            raise _Refused(401, f"signature: {error}") from None
        if request.mimetype != "application/json":
            raise _Refused(400, "the content-type must be application/json")
        event = json_or_none(raw)
        _check_shape(event)
        members = event["data"].get("members", [])
        if self.max_members is not None and len(members) > self.max_members:
            raise _Refused(413, f"more than {self.max_members} members in one event", violation=False)
        return event

    def _apply(self, event):
        audience = event["data"]["audience"]
        if event["type"] == CREATED:
            key = (event["data"]["integration"], audience["dmp_id"])
            if key not in self._created:
                self._created[key] = f"rcv-{len(self._created) + 1}"
                self.audiences[self._created[key]] = audience["dmp_id"]
            return {"id": self._created[key]}
        audience_id = audience.get("id")
        audience_id = audience["dmp_id"] if audience_id is None else str(audience_id)
        users = {member["external_user_id"] for member in event["data"]["members"]}
        members = self.members.setdefault(audience_id, set())
        if MEMBER_EVENTS[event["type"]]:
            members |= users
        else:
            members -= users
        return {}


def _check_shape(event):
    if not isinstance(event, dict):
        raise _Refused(400, "the body is not a JSON object")
    if event.get("type") != CREATED and event.get("type") not in MEMBER_EVENTS:
        raise _Refused(400, f"unknown event type {event.get('type')!r}")
    if not isinstance(event.get("timestamp"), str):
        raise _Refused(400, "timestamp must be a string")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("integration"), str):
        raise _Refused(400, "data.integration must be a string")
    audience = data.get("audience")
    if not isinstance(audience, dict) or not isinstance(audience.get("dmp_id"), str) or not audience["dmp_id"]:
        raise _Refused(400, "data.audience.dmp_id must be a non-empty string")
    audience_id = audience.get("id")
    if isinstance(audience_id, bool) or not isinstance(audience_id, (str, int, type(None))):
        raise _Refused(400, "data.audience.id must be a string, an integer or null")
    if event["type"] == CREATED:
        return
    members = data.get("members")
    if not isinstance(members, list):
        raise _Refused(400, "data.members must be a list")
    for member in members:
        user = member.get("external_user_id") if isinstance(member, dict) else None
        if not isinstance(user, str) or not user:
            raise _Refused(400, "data.members[].external_user_id must be a non-empty string")
