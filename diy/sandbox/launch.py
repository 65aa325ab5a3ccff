"""Which sandbox server `diy-wsgi sandbox` starts (plain, with a control port, or counting),
and the lines it prints when it does."""
from diy.sandbox.control import ControlledSandbox
from diy.sandbox.counting import CountingServer
from diy.sandbox.server import SandboxServer
from diy.sandbox.settings import SandboxSettings


def make_server(settings: SandboxSettings, **sandbox_options):
    """A bound, not yet serving, sandbox server; options (clock, random, sleep) go to `Sandbox`.

    With `settings.control_port`, a `ControlledSandbox`: the same face (`url`, `sandbox`,
    `serve_forever`, `shutdown`, `server_close`), its views on a port of their own."""
    if settings.counting:
        return CountingServer(settings)
    if settings.control_port is not None:
        return ControlledSandbox(settings, **sandbox_options)
    return SandboxServer(settings, **sandbox_options)


def banner(server: SandboxServer) -> str:
    """The startup lines: where each platform listens."""
    url = server.url
    if getattr(server, "counting", False):
        return (f"diy-wsgi sandbox counting on {url}/: every POST answered 200 at once, nothing checked; "
                f"GET {url}/api/stats")
    views = getattr(server, "control_url", url)
    return "\n".join([
        f"diy-wsgi sandbox listening on {url}/ (state in memory; Ctrl-C stops)",
        f"  webhook        POST {url}/webhook",
        f"  The Trade Desk POST {url}/data/advertiser",
        f"  Criteo         POST {url}/oauth2/token, {url}/<version>/marketing-solutions/audience-segments/...",
        f"  views          {views}/  {views}/api/audiences  {views}/api/stats  {views}/api/faults",
    ])
