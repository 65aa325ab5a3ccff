"""The webhook's journal: every call the sandbox's webhook received, one JSON line each, for the
reliability suites' checker (`diy-wsgi sandbox --journal FILE`).

Duplicates, faulted and refused calls are all recorded, each as it is answered:

    {"seq": 7, "t": 1764221661.2, "id": "msg_...", "type": "audience.members_added",
     "dmp_id": "aud-1", "answer": 200, "fault": "ok", "dup": false,
     "members": [["u3", "uuid-..."], ...]}

`answer` is the status sent (null for a call that hung: none); `fault` the fault model's kind
("ok" when none applied). A call the webhook refused (a bad signature, a body that is not strict
JSON or not an event) and a body cut short because its sender died carry no event: `type` is
null, `fault` is "bad_requests" or "truncated", and `reason` says why. `dup` is true for an
event whose `webhook-id` was applied before (the sandbox applies it once, as a receiver should).
"""
import json
import threading
import time
from typing import Any, Callable, Dict, Optional

from diy.sandbox.wire import Request

COUNTS = ("calls", "delivered", "duplicates", "refused", "bad_requests", "truncated", "hung")


class Journal:
    """An append-only JSON-lines file and its counters; safe to call from any thread."""

    def __init__(self, path, clock: Callable[[], float] = time.time):
        self._file = open(path, "a", encoding="utf-8")
        self.clock = clock
        self._lock = threading.Lock()
        self._seq = 0
        self._applied = set()
        self._counts = dict.fromkeys(COUNTS, 0)
        self._calls_by_audience: Dict[Optional[str], int] = {}

    def record(self, request: Request, answer: Optional[int], fault: Optional[str]) -> None:
        """One call and its answer. A 4xx the webhook gave itself is a refused request."""
        if fault is None and answer is not None and answer != 200:
            return self.reject("bad_requests", f"the webhook answered {answer}")
        event = _event(request.body)
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        audience = data.get("audience") if isinstance(data.get("audience"), dict) else {}
        members = [[m.get("external_user_id"), m.get("uuid")] for m in data.get("members") or []
                   if isinstance(m, dict)]
        message_id = request.header("webhook-id")
        applied = answer == 200 and fault in (None, "hold")
        with self._lock:
            self._counts["calls"] += 1
            dmp_id = audience.get("dmp_id")
            self._calls_by_audience[dmp_id] = self._calls_by_audience.get(dmp_id, 0) + 1
            duplicate = applied and message_id in self._applied
            if applied:
                self._counts["duplicates" if duplicate else "delivered"] += 1
                self._applied.add(message_id)
            elif fault == "hang":
                self._counts["hung"] += 1
            else:
                self._counts["refused"] += 1
            self._write({"id": message_id, "type": event.get("type"), "dmp_id": dmp_id, "answer": answer,
                         "fault": fault or "ok", "dup": duplicate, "members": members})

    def reject(self, kind: str, reason: str) -> None:
        """A call that carried no event: `truncated` or `bad_requests`."""
        with self._lock:
            self._counts[kind] += 1
            self._write({"id": None, "type": None, "dmp_id": None, "answer": None, "fault": kind,
                         "dup": False, "members": [], "reason": reason})

    def counts(self) -> Dict[str, Any]:
        with self._lock:
            return {**self._counts, "calls_by_audience": dict(self._calls_by_audience)}

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _write(self, line: Dict[str, Any]) -> None:
        self._seq += 1
        self._file.write(json.dumps({"seq": self._seq, "t": self.clock(), **line}) + "\n")
        self._file.flush()


def _event(body: bytes) -> Dict[str, Any]:
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return event if isinstance(event, dict) else {}
