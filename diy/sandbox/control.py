"""The sandbox with a control port: `diy-wsgi sandbox --port P --control-port C`.

The views (`/`, `/api/*`, among them `POST /api/faults`) answer on the control port only, and
the platforms on the platform port, so that the fault mode "down" can close the platform port
(connection refused, every open connection cut) while the control port still takes the change
that brings it up again, on the same port, with the same state.
"""
import threading
from typing import Optional

from diy.sandbox.server import SandboxServer
from diy.sandbox.settings import SandboxSettings


class ControlledSandbox:
    """A control server and a platform server around one `Sandbox`; `serve_forever` serves the
    control port in the calling thread and the platform port in a thread of its own."""

    def __init__(self, settings: SandboxSettings, **sandbox_options):
        self.settings = settings
        self.control = SandboxServer(settings, port=settings.control_port, views_only=True, **sandbox_options)
        self.sandbox = self.control.sandbox
        self.control_url = self.control.url
        self._port = settings.port
        self._platform: Optional[SandboxServer] = None
        self._lock = threading.Lock()
        try:
            self.up()
        except OSError:
            self.control.server_close()
            raise
        self.url = self._platform.url
        self.sandbox.base_url = self.url
        self.sandbox.on_mode = self._follow_mode

    def _follow_mode(self, mode: Optional[str]) -> None:
        if mode == "down":
            self.down()
        else:
            self.up()

    def up(self) -> None:
        """Listen on the platform port (the one it had before, once it has had one)."""
        with self._lock:
            if self._platform is not None:
                return
            server = SandboxServer(self.settings, sandbox=self.sandbox, port=self._port)
            self._port = server.server_address[1]
            threading.Thread(target=server.serve_forever, name="sandbox-platform", daemon=True).start()
            self._platform = server

    def down(self) -> None:
        """Close the platform port and cut its open connections."""
        with self._lock:
            server, self._platform = self._platform, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.drop_connections()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self.control.serve_forever(poll_interval)

    def shutdown(self) -> None:
        self.control.shutdown()

    def server_close(self) -> None:
        self.down()
        self.control.server_close()
