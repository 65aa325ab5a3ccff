"""The fake Criteo on pytest-httpserver, for its target tests and the contract suite (the webhook
and The Trade Desk are the sandbox's: tests/sandboxed.py).

Their scripted answers (`fail_next`) are the sandbox's fault model (`diy.sandbox.faults.Script`);
`scripted_answer` takes the next one due and renders it the way the fake's platform words an
error.
"""
from werkzeug import Response

from diy.sandbox.faults import render


def scripted_answer(script, default_body, text_type="text/plain; charset=utf-8"):
    """The `Script`'s answer due now as a Response (without a scripted body, `default_body(status)`),
    or None when this request is answered normally."""
    decision = script.take()
    if decision is None:
        return None
    body = decision.body or render(default_body(decision.status), text_type)
    return Response(body.body, status=decision.status, headers=dict(decision.headers),
                    content_type=body.content_type)
