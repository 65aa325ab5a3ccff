"""A fake advertising platform on loopback: `diy-wsgi sandbox --port 9000`.

It speaks, closely enough for diy-wsgi's targets, the three platform APIs they call: a
Standard Webhooks receiver (`webhook.py`), The Trade Desk's
first-party data upload (`thetradedesk.py`) and Criteo's OAuth2 and contact-list segments
(`criteo.py`). Audiences and members live in memory (`state.py`); faults (errors, throttling,
latency, outages) are decided by `faults.py`; `server.py` routes, renders and serves; `launch.py` picks the server to start.

In tests:

    server = make_server(SandboxSettings(port=0), clock=clock, random=random.Random(1))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ... server.url, server.sandbox.state ...
    server.shutdown(); server.server_close()

Nothing on the request path of diy-wsgi imports this package.
"""
from diy.sandbox.launch import banner, make_server
from diy.sandbox.server import Sandbox, SandboxServer
from diy.sandbox.settings import (
    DEFAULT_CRITEO_CLIENT_ID,
    DEFAULT_CRITEO_CLIENT_SECRET,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_TTD_SECRET,
    DEFAULT_TTD_TOKEN,
    DEFAULT_WEBHOOK_SECRET,
    SandboxSettings,
    settings_from_flags,
)
from diy.sandbox.wire import SandboxConfigError

__all__ = [
    "DEFAULT_CRITEO_CLIENT_ID", "DEFAULT_CRITEO_CLIENT_SECRET", "DEFAULT_HOST", "DEFAULT_PORT",
    "DEFAULT_TTD_SECRET", "DEFAULT_TTD_TOKEN", "DEFAULT_WEBHOOK_SECRET", "Sandbox",
    "SandboxConfigError", "SandboxServer", "SandboxSettings", "banner", "make_server",
    "settings_from_flags",
]
