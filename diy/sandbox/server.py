"""The sandbox's HTTP side: `Sandbox` routes requests and renders every answer in one place;
`SandboxServer` is a `ThreadingHTTPServer` that feeds it complete requests.

Platform calls (the webhook, The Trade Desk, Criteo, including Criteo's token call) pass through
the fault injector and are counted by API and status; the views never are:

    GET  /               HTML: platforms, audiences, member counts
    GET  /api/audiences  JSON: {"webhook": {dmp_id: {"id", "name", "members"}},
                                "thetradedesk": {segment: {"advertiser_ids", "members"}},
                                "criteo": {segment_id: {"name", "advertiser_id", "members"}}}
    GET  /api/stats      JSON: {"requests": {api: {status: count}}, "faults": {kind: count}}
    GET  /api/faults     JSON: the fault settings now in force
    POST /api/faults     JSON fields to change: error_rate, rate_limit_rate, retry_after,
                         latency, latency_jitter (seconds or "50ms"), outages (["0s:30s"],
                         counted from now; [] ends them), seed (reseeds the random source)
    POST /api/reset      forget every audience, member, webhook-id, count and rate window

Every request must be addressed to this machine and, when a browser names its origin, come from
the sandbox's own page (`refuse_other_origins`).
"""
import logging
import re
import socket
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

from diy.sandbox.criteo import CriteoApi
from diy.sandbox.faults import Decision, Faults
from diy.sandbox.journal import Journal
from diy.hosts import host_name, is_loopback
from diy.servers import QuietDisconnects
from diy.sandbox.settings import SandboxSettings
from diy.sandbox.state import RequestStats, SandboxState
from diy.sandbox.thetradedesk import TheTradeDeskApi
from diy.sandbox.views import home_page
from diy.sandbox.webhook import WebhookApi
from diy.sandbox.wire import (
    BadRequest,
    Exchange,
    Forbidden,
    LengthRequired,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Reply,
    Request,
    SandboxConfigError,
    SandboxError,
    json_reply,
    read_json,
)

log = logging.getLogger("diy.sandbox")
MAX_BODY = 32 * 1024 * 1024
"""Bodies above this are refused before any platform sees them (platforms have lower limits)."""


class Sandbox:
    """The fake platform without a socket: `serve(Request) -> Reply`, from any thread."""

    def __init__(self, settings: SandboxSettings, *, clock: Callable[[], float] = time.time,
                 random=None, sleep: Callable[[float], None] = time.sleep, base_url: str = ""):
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.base_url = base_url
        self.journal = Journal(settings.journal, clock) if settings.journal else None
        """Every webhook call, as the reliability suites' checker reads them (`--journal`)."""
        self.listeners: List[Callable[[Exchange], None]] = []
        """Called with each answered platform call (`Exchange`), in the serving thread: what a
        test in the same process reads the calls from (the sandbox keeps no bodies itself)."""
        self.state = SandboxState()
        self.stats = RequestStats()
        started = clock()
        windows = tuple(outage.window(started) for outage in settings.outages)
        self.faults = Faults(replace(settings.faults, outages=windows), settings.seed, clock, random)
        self.on_mode: Callable[[Optional[str]], None] = refuse_down
        """Called with the new `mode` before a fault change applies; the control port's server
        takes the platform port down and up, and without one "down" is refused."""
        self.criteo = CriteoApi(self.state, settings, clock)
        self.webhook = WebhookApi(self.state, settings.webhook_secret, clock, settings.webhook_max_members)
        self.thetradedesk = TheTradeDeskApi(self.state, settings)
        self.platforms = {"webhook": self.webhook, "thetradedesk": self.thetradedesk, "criteo": self.criteo}
        views = [("GET", r"/", self.home), ("GET", r"/api/audiences", self.audiences),
                 ("GET", r"/api/stats", self.statistics), ("GET", r"/api/faults", self.fault_settings),
                 ("POST", r"/api/faults", self.change_faults), ("POST", r"/api/reset", self.reset)]
        self.routes = [(method, re.compile(pattern), api, handler)
                       for api, platform in self.platforms.items()
                       for method, pattern, handler in platform.routes()]
        self.routes += [(method, re.compile(pattern), None, handler) for method, pattern, handler in views]

    def serve(self, request: Request, views_only: bool = False) -> Reply:
        """The one place a request becomes an answer: errors raised below are rendered here.

        `views_only`: the control port's request, which reaches no platform."""
        api, fault, refusal = None, None, None
        try:
            refuse_other_origins(request)
            api, handler, params = self.route(request.method, request.path)
            if api is None:
                reply = handler(request)
            elif views_only:
                api = None
                raise NotFound(f"the platforms are on {self.base_url}, not on the control port")
            else:
                decision = self.faults.decide(self.platforms[api].call(request))
                fault = decision.kind
                reply = self.platform_call(api, decision, request, handler, params)
        except SandboxError as error:
            reply, refusal = error.reply(), error
        except Exception:
            log.exception("request failed method=%s path=%s", request.method, request.path)
            reply = json_reply(500, {"error": "the sandbox failed; its log has the traceback"})
        if api is not None and reply is not NO_ANSWER:
            self.stats.count(api, reply.status, fault)
            if self.journal is not None and api == "webhook":
                self.journal.record(request, reply.status, fault)
            for listener in self.listeners:
                listener(Exchange(api, request, reply, fault, refusal))
        return reply

    def platform_call(self, api: str, decision: Decision, request: Request, handler, params) -> Reply:
        """A platform's answer under a fault: hung, delayed, held, replaced, or as it is."""
        if decision.hang:
            self.stats.count(api, None, "hang")
            if self.journal is not None and api == "webhook":
                self.journal.record(request, None, "hang")
            self.faults.wait_for_change(decision.generation)
            return NO_ANSWER
        if decision.delay > 0:
            self.sleep(decision.delay)
        if decision.hold:
            self.faults.hold(decision.generation)
        if decision.status:
            return fault_reply(decision)
        return handler(request, **params)

    def truncated(self, reason: str) -> None:
        """A body cut short by a sender that died: nothing arrived, so nothing is answered."""
        log.info("request body cut short reason=%s", reason)
        if self.journal is not None:
            self.journal.reject("truncated", reason)

    def route(self, method: str, path: str) -> Tuple[Optional[str], Callable, Dict[str, str]]:
        """(api or None for a view, handler, path parameters); NotFound or MethodNotAllowed."""
        allowed = []
        for route_method, pattern, api, handler in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method == method:
                return api, handler, match.groupdict()
            allowed.append(route_method)
        if allowed:
            raise MethodNotAllowed(f"{path} takes {', '.join(allowed)}", ", ".join(allowed))
        raise NotFound(f"nothing is served at {path}; GET / lists the endpoints")

    # The views.

    def home(self, request: Request) -> Reply:
        page = home_page(self.state.snapshot(), self.base_url)
        return Reply(200, page.encode("utf-8"), "text/html; charset=utf-8")

    def audiences(self, request: Request) -> Reply:
        return json_reply(200, self.state.snapshot())

    def statistics(self, request: Request) -> Reply:
        stats = {**self.stats.snapshot(), "held": self.faults.held}
        if self.journal is not None:
            stats["journal"] = self.journal.counts()
        return json_reply(200, stats)

    def fault_settings(self, request: Request) -> Reply:
        return json_reply(200, self.faults.settings.describe())

    def change_faults(self, request: Request) -> Reply:
        changes = read_json(request, "the fault settings")
        if not isinstance(changes, dict):
            raise BadRequest("the body must be a JSON object of fault settings")
        try:
            settings = self.faults.change(changes, before=self.on_mode)
        except SandboxConfigError as error:
            raise BadRequest(str(error)) from None
        log.info("faults changed error_rate=%s error_status=%s rate_limit_rate=%s retry_after=%s latency=%s "
                 "latency_jitter=%s outages=%d mode=%s audiences=%s", settings.error_rate, settings.error_status,
                 settings.rate_limit_rate, settings.retry_after, settings.latency, settings.latency_jitter,
                 len(settings.outages), settings.mode, "all" if settings.audiences is None else len(settings.audiences))
        return json_reply(200, settings.describe())

    def reset(self, request: Request) -> Reply:
        self.state.reset()
        self.stats.reset()
        self.criteo.reset()
        return json_reply(200, {})


def refuse_other_origins(request: Request) -> None:
    """Forbidden for what only a browser page of another origin would send.

    The sandbox listens on loopback, but a browser on the same machine reaches loopback too: a
    page elsewhere could POST /api/faults or /api/reset as a "simple" cross-site request, or
    point its own name at 127.0.0.1 (DNS rebinding) and read the answers. So the Host must name
    this machine, and an Origin, when a browser sends one, must be this sandbox's own.
    """
    host = request.header("host")
    if host is not None and not is_loopback(host_name(host)):
        raise Forbidden("the sandbox answers only requests addressed to this machine "
                        "(Host localhost, 127.0.0.1 or [::1])")
    origin = request.header("origin")
    if origin is not None and (host is None or origin.lower() != f"http://{host.lower()}"):
        raise Forbidden("cross-origin requests are refused: a page of another site must not drive the sandbox")


def refuse_down(mode: Optional[str]) -> None:
    if mode == "down":
        raise SandboxConfigError("mode down needs the sandbox started with --control-port: "
                                 "it closes the port this request came in on")


NO_ANSWER = Reply(0)
"""A hung call's: the connection is closed without an answer."""


def fault_reply(decision: Decision) -> Reply:
    if decision.body is not None:
        return Reply(decision.status, decision.body.body, decision.body.content_type, decision.headers)
    if decision.status == 429:
        retry_after = () if decision.retry_after is None else [("Retry-After", str(decision.retry_after))]
        return json_reply(429, {"error": "sandbox fault: too many requests"}, (*retry_after, *decision.headers))
    return json_reply(decision.status, {"error": f"sandbox fault: unavailable ({decision.kind})"}, decision.headers)


class SandboxServer(QuietDisconnects, ThreadingHTTPServer):
    """A threaded HTTP server around one `Sandbox`; `url` is where it listens. A client that
    gives up (during a latency fault, say) is one debug line, not a traceback.

    `sandbox` serves an existing sandbox (a platform port brought up again); `views_only` makes
    this the control port, which serves the views and no platform."""

    daemon_threads = True

    def __init__(self, settings: SandboxSettings, *, sandbox: Optional[Sandbox] = None,
                 port: Optional[int] = None, views_only: bool = False, **sandbox_options):
        if ":" in settings.host:
            self.address_family = socket.AF_INET6
        super().__init__((settings.host, settings.port if port is None else port), SandboxHandler)
        host, port = self.server_address[:2]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self.views_only = views_only
        self.connections = set()
        self.connections_lock = threading.Lock()
        self._owns_sandbox = sandbox is None
        self.sandbox = sandbox or Sandbox(settings, base_url=self.url, **sandbox_options)

    def drop_connections(self) -> None:
        """Cut every open connection (the port going down): their clients see a reset."""
        with self.connections_lock:
            connections, self.connections = self.connections, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def server_close(self) -> None:
        super().server_close()
        if self._owns_sandbox and self.sandbox.journal is not None:
            self.sandbox.journal.close()


class SandboxHandler(BaseHTTPRequestHandler):
    """Reads one whole request, hands it to the sandbox, writes its answer."""

    protocol_version = "HTTP/1.1"
    server_version = "diy-wsgi-sandbox"

    def setup(self):
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self):
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self):
        try:
            request = self._request()
        except SandboxError as error:
            self.close_connection = True
            reply = error.reply()
        else:
            if request is None:
                return
            reply = self.server.sandbox.serve(request, views_only=self.server.views_only)
        if reply is NO_ANSWER:
            self.close_connection = True
            return
        self._send(reply)
        log.info("request method=%s path=%s status=%d", self.command, urlsplit(self.path).path, reply.status)

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def _request(self) -> Optional[Request]:
        """The whole request; None for a body cut short (its sender died), which gets no answer."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise LengthRequired("send the body with a Content-Length")
        text = self.headers.get("Content-Length") or "0"
        if not text.isdigit():
            raise BadRequest("Content-Length must be a whole number")
        length = int(text)
        if length > MAX_BODY:
            raise PayloadTooLarge(f"the body is over {MAX_BODY} bytes")
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.server.sandbox.truncated(f"{len(body)} of {length} bytes")
            self.close_connection = True
            return None
        parts = urlsplit(self.path)
        return Request(self.command, parts.path, dict(parse_qsl(parts.query)), dict(self.headers.items()), body)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format, *args):
        """Requests are logged once, with their status, by do_GET."""
