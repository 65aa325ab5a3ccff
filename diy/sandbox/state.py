"""The sandbox's memory: audiences and their members per platform, and request counts.

Everything lives in memory behind one lock and is gone when the sandbox stops; `reset()` empties
it (POST /api/reset). The ids it hands out never repeat, across resets and restarts: a platform
that gave a new audience the id of an old one would have diy-wsgi send both audiences' users to
one place. So they count up from a random starting point drawn by each process (not from the
faults' seeded random source, or `--seed 7` would repeat them), and `reset()` keeps counting.
Members are the ids the platform takes: the webhook's
`external_user_id`, The Trade Desk's TDID, Criteo's identifiers. Adding a member twice or
removing a non-member does nothing, as on the platforms.
"""
import itertools
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

PLATFORMS = ("webhook", "thetradedesk", "criteo")
FAULT_KINDS = ("outage", "error", "rate_limit", "scripted", "hang", "hold")
FIRST_IDS = (10**8, 10**9)
"""Where a process's ids start: a nine-digit number, drawn at random (Criteo's ids are numbers).
Two runs hand out the same id only if their starting points are closer than the ids they used."""


@dataclass
class WebhookAudience:
    id: Optional[str]
    name: Optional[str]
    members: Set[str] = field(default_factory=set)


@dataclass
class TtdSegment:
    """A Trade Desk segment, by name: it exists once a member is first uploaded to it."""

    advertiser_ids: Set[str] = field(default_factory=set)
    members: Set[str] = field(default_factory=set)


@dataclass
class CriteoSegment:
    id: str
    advertiser_id: str
    name: str
    description: str
    created_at: str
    members: Set[str] = field(default_factory=set)

    def attributes(self) -> Dict[str, Any]:
        return {
            "advertiserId": self.advertiser_id,
            "name": self.name,
            "description": self.description,
            "type": "ContactList",
            "createdAt": self.created_at,
            "updatedAt": self.created_at,
            "contactList": {"isReadOnly": False},
        }


class SandboxState:
    """Audiences of all three platforms; every method is safe to call from any thread."""

    def __init__(self):
        self._lock = threading.RLock()
        low, high = FIRST_IDS
        self._ids = itertools.count(low + secrets.randbelow(high - low))
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._webhook: Dict[str, WebhookAudience] = {}
            self._webhook_answers: Dict[str, Any] = {}
            self._ttd: Dict[str, TtdSegment] = {}
            self._criteo: Dict[str, CriteoSegment] = {}

    # The webhook receiver.

    def webhook_once(self, message_id: str, apply: Callable[[], Any]) -> Any:
        """`apply()`'s answer the first time `message_id` is seen; the same answer afterwards.

        An `apply` that raises is not remembered, so a corrected retry is applied.
        """
        with self._lock:
            if message_id not in self._webhook_answers:
                self._webhook_answers[message_id] = apply()
            return self._webhook_answers[message_id]

    def webhook_create(self, dmp_id: str, name: Optional[str]) -> str:
        """The sandbox id of the audience, `sbx-<n>`; the same one when it is created again."""
        with self._lock:
            audience = self._webhook.get(dmp_id)
            if audience is None or audience.id is None:
                new_id = f"sbx-{next(self._ids)}"
                if audience is None:
                    audience = self._webhook[dmp_id] = WebhookAudience(new_id, name)
                audience.id = new_id
            if name is not None:
                audience.name = name
            return audience.id

    def webhook_members(self, dmp_id: str, audience_id: Optional[str], name: Optional[str],
                        add: bool, users: Iterable[str]) -> bool:
        """Add or remove members; an audience first seen here is kept under the id it names.
        False (nothing applied) when it names another id than the audience has."""
        with self._lock:
            audience = self._webhook.setdefault(dmp_id, WebhookAudience(audience_id, name))
            if audience_id is not None and audience.id not in (None, audience_id):
                return False
            audience.id = audience.id or audience_id
            if name is not None:
                audience.name = name
            _apply(audience.members, add, users)
            return True

    # The Trade Desk.

    def ttd_member(self, advertiser_id: str, segment: str, tdid: str, add: bool) -> None:
        with self._lock:
            if not add and segment not in self._ttd:
                return
            entry = self._ttd.setdefault(segment, TtdSegment())
            entry.advertiser_ids.add(advertiser_id)
            _apply(entry.members, add, [tdid])

    def ttd_segment_names(self) -> Set[str]:
        """Every segment that came into being, members or not (what a segment limit counts)."""
        with self._lock:
            return set(self._ttd)

    # Criteo.

    def criteo_create(self, advertiser_id: str, name: str, description: str,
                      created_at: str) -> Optional[CriteoSegment]:
        """The new segment, or None when the advertiser already has one of that name."""
        with self._lock:
            if any(s.advertiser_id == advertiser_id and s.name == name for s in self._criteo.values()):
                return None
            segment = CriteoSegment(str(next(self._ids)), advertiser_id, name, description, created_at)
            self._criteo[segment.id] = segment
            return segment

    def criteo_segments(self, advertiser_ids: Optional[Set[str]] = None,
                        segment_ids: Optional[Set[str]] = None) -> List[CriteoSegment]:
        """Segments matching both filters (None: any), oldest first."""
        with self._lock:
            return [
                segment for segment in sorted(self._criteo.values(), key=lambda s: int(s.id))
                if (advertiser_ids is None or segment.advertiser_id in advertiser_ids)
                and (segment_ids is None or segment.id in segment_ids)
            ]

    def criteo_delete(self, segment_id: str) -> None:
        with self._lock:
            self._criteo.pop(segment_id, None)

    def criteo_amend(self, segment_id: str, add: bool, identifiers: Iterable[str]) -> bool:
        """Add or remove identifiers; False when there is no such segment."""
        with self._lock:
            segment = self._criteo.get(segment_id)
            if segment is None:
                return False
            _apply(segment.members, add, identifiers)
            return True

    # Views.

    def snapshot(self) -> Dict[str, Dict[str, Dict[str, Any]]]:
        """Every audience and its sorted members, as GET /api/audiences shows them."""
        with self._lock:
            return {
                "webhook": {
                    dmp_id: {"id": a.id, "name": a.name, "members": sorted(a.members)}
                    for dmp_id, a in self._webhook.items()
                },
                "thetradedesk": {
                    name: {"advertiser_ids": sorted(s.advertiser_ids), "members": sorted(s.members)}
                    for name, s in self._ttd.items()
                },
                "criteo": {
                    s.id: {"name": s.name, "advertiser_id": s.advertiser_id, "members": sorted(s.members)}
                    for s in self._criteo.values()
                },
            }


def _apply(members: Set[str], add: bool, users: Iterable[str]) -> None:
    if add:
        members.update(users)
    else:
        members.difference_update(users)


class RequestStats:
    """Platform calls counted by API and status, and the faults injected, by kind."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._requests = {platform: Counter() for platform in PLATFORMS}
            self._faults: Counter = Counter()

    def count(self, api: str, status: Optional[int], fault: Optional[str] = None) -> None:
        """One call's answer; `status` None for a call that got none (it hung)."""
        with self._lock:
            self._requests[api]["none" if status is None else str(status)] += 1
            if fault:
                self._faults[fault] += 1

    def snapshot(self) -> Dict[str, Any]:
        with self._lock:
            return {
                "requests": {api: dict(sorted(counts.items())) for api, counts in self._requests.items()},
                "faults": {kind: self._faults[kind] for kind in FAULT_KINDS},
            }
