"""Fake advertising platforms on pytest-httpserver, for the target tests and the contract suite.

Their scripted answers (`fail_next`) are the sandbox's fault model (`diy.sandbox.faults.Script`);
`scripted_answer` takes the next one due and renders it the way the fake's platform words an
error.
"""
import json

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


def json_or_none(raw):
    """The parsed JSON body, None when it is not JSON (a fake records what it received)."""
    try:
        return json.loads(raw)
    except ValueError:
        return None


def json_response(status, document):
    return Response(json.dumps(document), status=status, content_type="application/json")
