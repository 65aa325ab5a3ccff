"""diy-wsgi: the WSGI endpoint the Mapp DMP calls for a DIY integration.

    make_app(config)    a WSGI callable for embedding in existing hosting
    app                 the same for gunicorn (`diy_wsgi:app`), configured from the file named
                        by the DIY_CONFIG environment variable on first use

A request is authenticated (`X-HMAC`, optional Basic Auth) before its body is parsed, its
mutations are committed to the SQLite outbox in one transaction, and only then is it answered
200; the dispatcher forwards them to the platform in the background. `__call__` is the one place
that calls `start_response`: everything below raises an `HttpError` and it renders the answer.
What a request carries (its id, type, Basic Auth and body) is read by diy/wsgi_request.py.
"""
import concurrent.futures
import json
import logging
import os
import threading
import time

from diy import dmp
from diy.http_errors import (
    AudienceRefused,
    BadRequest,
    HttpError,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from diy.config import RESERVED_PATHS, ConfigError, load_config
from diy.health import Probes, Reply, public_reason
from diy.metrics import request_labels
from diy.service import Service
from diy.signature import verify
from diy.wsgi_request import check_basic_auth, read_body, request_id_of, request_type_of
from outbox.errors import StoreError
from targets.base import Audience
from targets.errors import CredentialsRefused, PermanentError, TargetError

__version__ = "0.1.0"

log = logging.getLogger("diy.receiver")
CREATION_THREADS = 8


class DiyApp:
    """The WSGI callable for one configuration; `start()`/`stop()` run its dispatcher."""

    def __init__(self, config, *, service=None, clock=None):
        """`clock` (default: the database's, outbox/clock.py) dates what is stored."""
        self.config = config
        self.service = service or Service(config, clock=clock)
        self.clock = self.service.clock
        self.outbox = self.service.outbox
        self.metrics = self.service.metrics
        self.probes = Probes(self.config, self.service)
        self._creations = None
        self._creating = {}
        """A creation call running in the pool -> (integration, monotonic time it times out, or None)."""
        self._started_in = None
        self._lock = threading.Lock()

    # Lifecycle.

    def start(self):
        """Start this process's dispatcher if the configuration embeds it (idempotent)."""
        with self._lock:
            if self._started_in == os.getpid() or not self.config.dispatcher.embedded:
                return
            self._started_in = os.getpid()
        self.service.dispatcher.start(beside_requests=True)

    def stop(self):
        """Stop the dispatcher, and say so when creation calls still run: the interpreter waits for
        them at exit (their audiences are queued, and the dispatcher creates them)."""
        with self._lock:
            creating = list(self._creating.values())
        if creating:
            ends = [ends_at for _, ends_at in creating if ends_at is not None]
            left = f"{max(0.0, max(ends) - time.monotonic()):.1f}s" if len(ends) == len(creating) else "unknown"
            log.info("audience creations still running count=%d integrations=%s longest_call_left=%s; exit waits for "
                     "them, and the dispatcher creates their audiences", len(creating),
                     ",".join(sorted({name for name, _ in creating})), left)
        self.service.close()

    # Requests.

    def __call__(self, environ, start_response):
        started = time.monotonic()
        request_id = request_id_of(environ)
        path = environ.get("PATH_INFO") or "/"
        request_type = request_type_of(environ)
        try:
            status, reason, headers = 200, "OK", []
            reply = self.probes.answer(path, environ) if path in RESERVED_PATHS else self.handle(environ, request_type)
        except HttpError as error:
            status, reason, headers = error.status, error.reason, error.headers
            reply = {"error": error.message}
            if status >= 500:
                log.warning("unavailable request_id=%s reason=%r", request_id, error.detail or error.message)
        except Exception:
            log.exception("request failed request_id=%s", request_id)
            status, reason, headers = 500, "Internal Server Error", []
            reply = {"error": f"internal error; the service log has the details (request id {request_id})"}
        if not isinstance(reply, Reply):
            reply = Reply(json.dumps(reply).encode())
        elapsed = time.monotonic() - started
        self.record(environ, path, request_type, status, elapsed)
        log.info(
            "request method=%s path=%s type=%s status=%d ms=%.1f request_id=%s",
            environ.get("REQUEST_METHOD"), path, request_type or "-", status, elapsed * 1000, request_id,
        )
        start_response(
            f"{status} {reason}",
            headers
            + [
                ("Content-Type", reply.content_type),
                ("Content-Length", str(len(reply.body))),
                ("X-Request-Id", request_id),
            ],
        )
        body = b"" if environ.get("REQUEST_METHOD") == "HEAD" else reply.body
        if status == 200 and request_type in dmp.OPERATIONS:
            return SentThen(body, self.service.dispatcher.wake)
        return [body]

    def record(self, environ, path, request_type, status, elapsed):
        """Count the request with bounded labels (unknown paths and types are not labels)."""
        if path in RESERVED_PATHS:
            return
        integration = self.config.integration_for_path(path)
        request = request_labels(request_type, environ.get("REQUEST_METHOD"))
        labels = (("integration", integration.name if integration else "-"),) + request
        self.metrics.count("diy_requests_total", labels + (("status", str(status)),))
        self.metrics.observe("diy_request_duration_seconds", request, elapsed)

    def handle(self, environ, request_type):
        integration = self.config.integration_for_path(environ.get("PATH_INFO") or "/")
        if integration is None:
            raise NotFound("no integration is configured at this path")
        method = environ.get("REQUEST_METHOD")
        if method in ("GET", "HEAD"):
            if request_type in (None, dmp.VALIDATE):
                return {}
            raise MethodNotAllowed(f"type={request_type} must be sent with POST", "POST")
        if method != "POST":
            raise MethodNotAllowed(f"{method} is not supported; the DMP sends GET and POST", "GET, HEAD, POST")
        check_basic_auth(integration, environ)
        raw = read_body(environ, self.config.max_body)
        if not verify(integration.hmac_secrets, raw, environ.get("HTTP_X_HMAC")):
            raise Unauthorized("the X-HMAC header is missing or does not match the body; check the shared secret")
        if request_type is None:
            raise BadRequest(f"the query string must name the request: ?type= one of {', '.join(dmp.REQUEST_TYPES)}")
        if request_type not in dmp.REQUEST_TYPES:
            raise BadRequest(f"unknown type {request_type[:40]!r}; expected one of {', '.join(dmp.REQUEST_TYPES)}")
        if request_type == dmp.VALIDATE:
            return {}
        body = dmp.decode_body(raw, request_type)
        try:
            if request_type == dmp.CREATE_AUDIENCE:
                return self.create_audience(integration, dmp.parse_new_audience(body))
            return self.enqueue(integration, request_type, dmp.parse_mutations(body))
        except StoreError as error:
            reason = public_reason(error, self.outbox.location)
            raise ServiceUnavailable(f"the outbox cannot store the request now ({reason}); nothing was stored, send it again",
                                     detail=str(error)) from None

    def enqueue(self, integration, request_type, members):
        count = self.outbox.enqueue_members(
            integration.name,
            dmp.OPERATIONS[request_type],
            members,
            pass_through=integration.return_target_id,
            now=self.clock(),
            batch_limit=self.service.accounts[integration.name].max_batch,
        )
        return {"accepted": count}

    def create_audience(self, integration, new):
        """Create the audience on the platform within the budget, or queue its creation.

        A known, created audience is answered from the database (idempotent). A platform that is
        slow or down, or that refuses our own credentials, does not fail the request: the
        creation is queued and the dispatcher makes it (for refused credentials, once they are
        accepted again); later mutations wait for it. Only a refusal of the audience itself is
        passed back to the marketer, who can do nothing about our credentials.
        """
        known = self.outbox.audience(integration.name, new.dmp_id)
        if known is None or known.state != "ready":
            known = self._create_now_or_later(integration, new)
        return {"id": known.key} if integration.return_target_id else {}

    def _create_now_or_later(self, integration, new):
        accounts = self.service.accounts[integration.name]
        account = accounts.for_customer(new.customer)
        if account is None:
            log.warning("audience refused integration=%s audience=%s reason=%s", integration.name, new.dmp_id, "no account")
            raise AudienceRefused(f"this DMP client ({new.customer}) has no platform account in this integration; "
                                  "ask the integrator to add one")
        breaker = account.guard.breaker
        if breaker.state == "open":
            held = "refuses our credentials" if breaker.credentials_refused else "is failing"
            reason = f"the platform {held} ({account.label} circuit open)"
            return self._queue_creation(integration, new, reason, breaker.held_for)
        future = self._creation_pool().submit(account.target.create_audience, dmp_audience(integration, new))
        timeout = getattr(account.target, "timeout", None)
        with self._lock:
            self._creating[future] = (integration.name, time.monotonic() + timeout if timeout else None)
        future.add_done_callback(self._creation_ended)
        try:
            target_id = str(future.result(timeout=self.config.create_timeout))
        except concurrent.futures.TimeoutError:
            future.add_done_callback(lambda done: self._record_late_creation(integration, new, done))
            reason = f"the platform did not answer within {self.config.create_timeout:g}s"
            retry_after = None
        except CredentialsRefused as error:
            self._credentials_changed(integration, account, account.guard.record("unauthorized"), error)
            reason, retry_after = error.message, breaker.held_for
        except PermanentError as error:
            log.warning("audience refused integration=%s audience=%s reason=%r", integration.name, new.dmp_id, error.message)
            raise AudienceRefused(error.message) from None
        except TargetError as error:
            reason, retry_after = error.message, getattr(error, "retry_after", None)
        except Exception as error:
            log.exception("create_audience crashed integration=%s audience=%s", integration.name, new.dmp_id)
            reason, retry_after = f"{type(error).__name__} in the target", None
        else:
            if account.target.creates_on_the_platform:
                self._credentials_changed(integration, account, account.guard.record("ok"))
            return self._record_created(integration, new, target_id)
        return self._queue_creation(integration, new, reason, retry_after)

    def _credentials_changed(self, integration, account, change, refusal=None):
        self.service.dispatcher.credentials_changed(integration.name, account, change, refusal)

    def _queue_creation(self, integration, new, reason, retry_after):
        """The dispatcher creates the audience later: after the platform's `Retry-After`, or
        after the first backoff step (a timed-out call may still be under way)."""
        log.warning("audience creation queued integration=%s audience=%s reason=%r", integration.name, new.dmp_id, reason)
        now = self.clock()
        delay = self.service.dispatcher.policy.delay(1, retry_after)
        record = self.outbox.record_creation_pending(
            integration.name, new.dmp_id, name=new.name, customer=new.customer, error=reason,
            retry_at=now + delay, now=now,
        )
        self.service.dispatcher.wake()
        return record

    def _record_created(self, integration, new, target_id):
        log.info("audience created integration=%s audience=%s target_id=%s", integration.name, new.dmp_id, target_id)
        key = target_id if integration.return_target_id else new.dmp_id
        record = self.outbox.record_created(
            integration.name, new.dmp_id, name=new.name, customer=new.customer, target_id=target_id, key=key, now=self.clock()
        )
        self.service.dispatcher.check_target_id(integration.name, new.dmp_id, target_id)
        self.service.dispatcher.wake()
        return record

    def _record_late_creation(self, integration, new, future):
        """A creation that outran the budget still finished: keep its result, if it has one."""
        if future.exception() is not None:
            return
        target_id = str(future.result())
        try:
            self.outbox.record_created(
                integration.name, new.dmp_id, name=new.name, customer=new.customer,
                target_id=target_id, key=new.dmp_id, now=self.clock(),
            )
            self.service.dispatcher.check_target_id(integration.name, new.dmp_id, target_id)
            self.service.dispatcher.wake()
        except StoreError:
            log.warning("late audience creation not recorded integration=%s audience=%s; the dispatcher creates it", integration.name, new.dmp_id)

    def _creation_ended(self, future):
        with self._lock:
            self._creating.pop(future, None)

    def _creation_pool(self):
        with self._lock:
            if self._creations is None:
                self._creations = concurrent.futures.ThreadPoolExecutor(CREATION_THREADS, thread_name_prefix="diy-create")
            return self._creations


def make_app(config, *, clock=None):
    """A WSGI callable for `config` (a `diy.config.Config`).

    Call `.start()` after any fork to run the embedded dispatcher in this process, and `.stop()`
    before exit; without `start()` the app only stores, and `diy-wsgi dispatch` delivers.
    """
    return DiyApp(config, clock=clock)


def dmp_audience(integration, new):
    return Audience(integration.name, new.dmp_id, new.name, new.customer)


class SentThen:
    """A response body that calls `after` once the server has sent it (WSGI's close()).

    Stored mutations wake the dispatcher only then: woken earlier, its claim and platform call
    compete for the interpreter with the answer still being written, and the DMP waits for it.
    """

    def __init__(self, body, after):
        self.body = body
        self.after = after

    def __iter__(self):
        yield self.body

    def close(self):
        self.after()


class LazyApp:
    """`diy_wsgi:app`: builds the real app from `$DIY_CONFIG` on first use, never at import."""

    def __init__(self):
        self._app = None
        self._lock = threading.Lock()

    def load(self):
        with self._lock:
            if self._app is None:
                self._app = make_app(load_configured())
            return self._app

    def __call__(self, environ, start_response):
        return self.load()(environ, start_response)

    def start(self):
        self.load().start()

    def stop(self):
        if self._app is not None:
            self._app.stop()


def load_configured():
    """The configuration the file `$DIY_CONFIG` holds; ConfigError, one line, if it is unset or wrong."""
    path = os.environ.get("DIY_CONFIG")
    if not path:
        raise ConfigError("set DIY_CONFIG to the path of the diy-wsgi configuration file")
    return load_config(path)


app = LazyApp()
