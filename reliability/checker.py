"""The checker: what the DMP was told (200) against what the platform received.

    python -m reliability.checker load.jsonl platform.jsonl

Inputs are the load generator's journal (every request, every answer) and the receiving
platform's journal (every call, duplicates included). A request is *acknowledged* when one of
its attempts got a 200, *refused* when every attempt got a 4xx or a 503 (nothing of it may be
stored, and so nothing of it may arrive), and *unknown* otherwise: no answer, or a 500 (it may
or may not have been committed before the service died or failed).

Per audience and user, the mutations form a sequence (the thread's request order, then the
order within the request). Delivery may coalesce a user's mutations within a batch (only the
last is sent), so an acknowledged mutation counts as delivered when the platform received it
**or a later mutation of the same user in the same audience**. The checks:

- lost: acknowledged mutations not delivered in that sense (must be 0);
- membership: the platform's final members equal the last acknowledged operation of each user
  (or a later unknown one);
- order: per user, the platform sees mutations in non-decreasing sequence position;
- phantoms: mutations of refused requests that reached the platform (must be 0);
- duplicates: events whose webhook-id arrived before, and mutations (uuids) delivered again.
"""
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

ADD = "ADD_TO_AUDIENCE"
REMOVE = "REMOVE_FROM_AUDIENCE"


@dataclass
class Request:
    req: str
    thread: int
    seq: int
    type: str
    mutations: List[Tuple[str, str, str]]
    statuses: List[object] = field(default_factory=list)

    @property
    def acknowledged(self):
        return 200 in self.statuses

    @property
    def refused(self):
        """Every answer says nothing was stored: a 4xx, or a 503 (a 500 or no answer says nothing)."""
        return bool(self.statuses) and not self.acknowledged and all(
            status is not None and (400 <= status < 500 or status == 503) for status in self.statuses)

    @property
    def unknown(self):
        return not self.acknowledged and not self.refused


@dataclass
class Report:
    requests: int = 0
    acknowledged: int = 0
    refused: int = 0
    unknown: int = 0
    mutations_acknowledged: int = 0
    calls: int = 0
    events_delivered: int = 0
    members_delivered: int = 0
    lost: int = 0
    duplicate_events: int = 0
    duplicate_mutations: int = 0
    order_violations: int = 0
    membership_mismatches: int = 0
    phantoms: int = 0
    strangers: int = 0
    samples: Dict[str, list] = field(default_factory=lambda: defaultdict(list))

    @property
    def ok(self):
        return not (self.lost or self.order_violations or self.membership_mismatches or self.phantoms
                    or self.strangers)

    def note(self, kind, detail, limit=5):
        if len(self.samples[kind]) < limit:
            self.samples[kind].append(detail)

    def line(self):
        return (f"requests={self.requests} acknowledged={self.acknowledged} refused={self.refused} "
                f"unknown={self.unknown} mutations_acknowledged={self.mutations_acknowledged} "
                f"calls={self.calls} lost={self.lost} duplicate_events={self.duplicate_events} "
                f"duplicate_mutations={self.duplicate_mutations} order_violations={self.order_violations} "
                f"membership_mismatches={self.membership_mismatches} phantoms={self.phantoms} "
                f"strangers={self.strangers}")

    def explain(self):
        details = "".join(f"\n  {kind}: {examples}" for kind, examples in self.samples.items() if examples)
        return self.line() + details


def read_lines(path):
    """The complete JSON lines of a journal (none when it does not exist yet)."""
    try:
        stream = open(path, encoding="utf-8")
    except FileNotFoundError:
        return
    with stream:
        for text in stream:
            if text.endswith("\n"):  # a line still being written is read next time
                yield json.loads(text)


def load_requests(path):
    requests = {}
    for line in read_lines(path):
        if line.get("kind") == "request":
            requests[line["req"]] = Request(line["req"], line["thread"], line["seq"], line["type"],
                                            [tuple(m) for m in line["mutations"]])
        elif line.get("kind") == "attempt":
            requests[line["req"]].statuses.append(line["status"])
    return requests


def load_calls(path):
    return list(read_lines(path))


def check(requests, calls):
    """Compare the load generator's requests with the platform's calls; returns a Report."""
    report = Report()
    # Each mutation: its place in its audience's sequence, and what became of its request.
    where = {}  # uuid -> (audience, user, position, op, request)
    sequences = defaultdict(list)  # (audience, user) -> [(position, op, request, uuid)]
    for request in requests.values():
        report.requests += 1
        report.acknowledged += request.acknowledged
        report.refused += request.refused
        report.unknown += request.unknown
        if request.type not in (ADD, REMOVE):
            continue
        op = "add" if request.type == ADD else "remove"
        for index, (audience, user, uuid) in enumerate(request.mutations):
            position = (request.seq, index)
            where[uuid] = (audience, user, position, op, request)
            sequences[(audience, user)].append((position, op, request, uuid))
            if request.acknowledged:
                report.mutations_acknowledged += 1
    for sequence in sequences.values():
        sequence.sort(key=lambda item: item[0])

    delivered_at = defaultdict(list)  # (audience, user) -> positions delivered, in arrival order
    seen_ids, seen_uuids = set(), set()
    members = defaultdict(set)
    for call in sorted(calls, key=lambda c: c["seq"]):
        if call["type"] is None:  # no event: truncated by a dying sender, or refused as bad
            continue
        report.calls += 1
        if call["answer"] != 200:
            continue
        if call["id"] in seen_ids:
            report.duplicate_events += 1
        else:
            report.events_delivered += 1
        first_time = call["id"] not in seen_ids
        seen_ids.add(call["id"])
        for user, uuid in call["members"]:
            report.members_delivered += 1
            if uuid in seen_uuids:
                report.duplicate_mutations += 1
            seen_uuids.add(uuid)
            known = where.get(uuid)
            if known is None:
                report.strangers += 1
                report.note("strangers", uuid)
                continue
            audience, expected_user, position, op, request = known
            if request.refused:
                report.phantoms += 1
                report.note("phantoms", (uuid, request.statuses))
            delivered_at[(audience, user)].append(position)
            if first_time:
                (members[audience].add if call["type"] == "audience.members_added"
                 else members[audience].discard)(user)

    for key, sequence in sequences.items():
        audience, user = key
        arrived = delivered_at.get(key, [])
        latest = max(arrived) if arrived else None
        for previous, current in zip(arrived, arrived[1:]):
            if current < previous:
                report.order_violations += 1
                report.note("order", (audience, user, previous, current))
        last_acknowledged = None
        for position, op, request, uuid in sequence:
            if request.acknowledged:
                last_acknowledged = (position, op)
                if latest is None or latest < position:
                    report.lost += 1
                    report.note("lost", (audience, user, uuid))
        # The final state: the last acknowledged op, or any unknown op after it.
        allowed = {last_acknowledged[1]} if last_acknowledged else {"remove"}
        allowed |= {op for position, op, request, uuid in sequence
                    if request.unknown and (last_acknowledged is None or position > last_acknowledged[0])}
        actual = "add" if user in members.get(audience, ()) else "remove"
        if actual not in allowed:
            report.membership_mismatches += 1
            report.note("membership", (audience, user, actual, sorted(allowed)))
    return report


def expected_members(requests):
    """{audience: users} after the last acknowledged operation of each user (unknown ignored)."""
    last = {}
    for request in sorted(requests.values(), key=lambda r: (r.thread, r.seq)):
        if request.acknowledged and request.type in (ADD, REMOVE):
            for audience, user, _ in request.mutations:
                last[(audience, user)] = request.type
    members = defaultdict(set)
    for (audience, user), kind in last.items():
        if kind == ADD:
            members[audience].add(user)
    return dict(members)


def most_attempts_within(window, base, cap):
    """The most calls a retry policy (equal jitter: the k-th retry waits at least half of
    min(cap, base * 2**(k-1))) can make within `window` seconds, counting the first."""
    attempts, elapsed, k = 1, 0.0, 1
    while True:
        elapsed += min(cap, base * 2 ** (k - 1)) / 2
        if elapsed > window:
            return attempts
        attempts += 1
        k += 1


def backoff_violations(calls, base, cap, retry_after=0.0, slack=0.01):
    """Retries the platform saw sooner than the policy allows.

    Per audience, a streak is the failed calls (answer not 200) with no 200 in between; the
    i-th failure of a streak is at least the dispatcher's i-th consecutive failure, so the next
    call may not come before half of min(cap, base * 2**(i-1)), nor before the Retry-After the
    platform gave (itself capped at `cap`). Returns [(audience, streak index, gap, floor)].
    """
    violations = []
    by_audience = defaultdict(list)
    for call in sorted(calls, key=lambda c: c["seq"]):
        if call["type"] is not None:
            by_audience[call["dmp_id"]].append(call)
    for audience, sequence in by_audience.items():
        streak = 0
        for call, following in zip(sequence, sequence[1:]):
            if call["answer"] == 200:
                streak = 0
                continue
            streak += 1
            floor = max(min(cap, base * 2 ** (streak - 1)) / 2, min(retry_after, cap))
            gap = following["t"] - call["t"]
            if gap < floor - slack:
                violations.append((audience, streak, round(gap, 3), floor))
    return violations


def check_files(load_journal, platform_journal):
    return check(load_requests(load_journal), load_calls(platform_journal))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m reliability.checker LOAD_JOURNAL PLATFORM_JOURNAL", file=sys.stderr)
        return 2
    report = check_files(*argv)
    print(report.explain())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
