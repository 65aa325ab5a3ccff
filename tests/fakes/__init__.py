"""Fake advertising platforms on pytest-httpserver, for the target tests and the contract suite.

Their scripted answers (`fail_next`) are the sandbox's fault model (`diy.sandbox.faults.Script`);
`scripted_response` renders one the way each fake's platform words an error.
"""
from werkzeug import Response

from diy.sandbox.faults import render


def scripted_response(decision, default_body, text_type="text/plain; charset=utf-8"):
    """A `Script` answer as a Response; without a scripted body, `default_body(status)`."""
    body = decision.body or render(default_body(decision.status), text_type)
    return Response(body.body, status=decision.status, headers=dict(decision.headers),
                    content_type=body.content_type)
