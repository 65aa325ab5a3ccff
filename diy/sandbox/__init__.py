"""A fake advertising platform on loopback: `diy-wsgi sandbox --port 9000`.

It speaks the three platform APIs diy-wsgi's targets call, as strictly as the platforms'
sources say the platforms are (each module names them, and labels what is our assumption): a
Standard Webhooks receiver (`webhook.py`), The Trade Desk's first-party data upload
(`thetradedesk.py`) and Criteo's OAuth2 and contact-list segments (`criteo.py`, its error
shapes and body checks in `criteo_wire.py`). Audiences and members live in memory
(`state.py`); faults (errors, throttling, latency, outages, holds, scripted answers) are
decided by `faults.py`, the one fault model; `server.py` routes, renders and serves;
`launch.py` picks the server to start.

In tests (tests/conftest.py's `start_sandbox` and `sandboxed` fixtures do this):

    server = make_server(SandboxSettings(port=0), clock=clock, random=random.Random(1))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.sandbox.listeners.append(calls.append)    # every platform call and its answer
    ... server.url, server.sandbox.state, server.sandbox.faults.fail_next(503) ...
    server.shutdown(); server.server_close()

What happens on a platform without a call is an operation of its API object:
`sandbox.webhook.secret = ...` (a rotated key), `sandbox.thetradedesk.refuse(tdids)`,
`sandbox.criteo.revoke_tokens()`, `.invalid(ids)`, `.use_up_rate_limit(until)`,
`.create_segment(name)`, `.delete_segment(id)`.

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
