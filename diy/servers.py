"""What the stdlib HTTP servers diy-wsgi runs share (`diy-wsgi serve`, the sandbox).

A client that hangs up mid-request (a DMP or a dispatcher that gave up waiting, a probe that
resets) is ordinary: one debug line, not a traceback on stderr. Anything else that escapes a
connection's handler is logged with its traceback, through logging like every other line.
"""
import logging
import sys

log = logging.getLogger("diy.server")


class QuietDisconnects:
    """A `socketserver` mixin (put it first): `handle_error` as described above."""

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        client = client_address[0] if isinstance(client_address, tuple) else client_address
        if isinstance(error, ConnectionError):
            log.debug("client hung up client=%s reason=%s", client, type(error).__name__)
        else:
            log.exception("connection failed client=%s", client)
