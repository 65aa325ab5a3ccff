"""The answers a test scripts for a fake to give before it checks anything (its `fail_next`)."""
import json

from werkzeug import Response


class ScriptedFaults:
    """A queue of scripted answers, each given `times` times, in the order they were added.

    It holds no lock: the fake calls it under its own, the one that also orders its requests.
    A body is rendered when the fault is added; a fault without one gets `default_body(status)`,
    made anew for each answer.
    """

    def __init__(self, default_body, text_type="text/plain; charset=utf-8"):
        self._default_body = default_body
        self._text_type = text_type
        self._queue = []

    def __bool__(self):
        return bool(self._queue)

    def add(self, status, times, headers, body):
        rendered = None if body is None else self._render(body)
        self._queue.append([status, times, dict(headers or {}), rendered])

    def take(self):
        """The next scripted answer, as a Response."""
        fault = self._queue[0]
        status, _, headers, rendered = fault
        fault[1] -= 1
        if fault[1] <= 0:
            self._queue.pop(0)
        text, content_type = rendered or self._render(self._default_body(status))
        return Response(text, status=status, headers=headers, content_type=content_type)

    def _render(self, body):
        if isinstance(body, (dict, list)):
            return json.dumps(body), "application/json"
        return body, self._text_type
