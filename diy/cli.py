"""The `diy-wsgi` command: serve the endpoint, run the dispatcher alone, sign a body."""
import argparse
import errno
import logging
import os
import signal
import socketserver
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from diy import logs
from diy.admin_arguments import add_commands as add_admin_commands
from diy.config import ConfigError, load_config, load_secret
from diy.servers import QuietDisconnects
from diy.service import Service
from diy.signature import sign
from diy_wsgi import __version__, make_app
from outbox.errors import StoreError

log = logging.getLogger("diy.cli")

DESCRIPTION = """\
diy-wsgi receives the Mapp DMP's DIY-integration webhooks, commits every mutation to an SQLite
outbox before answering 200, and delivers them to the configured platform in the background.
"""

EXAMPLES = """\
examples:
  diy-wsgi serve --config examples/quickstart.ini          endpoint + dispatcher on 127.0.0.1:8000
  diy-wsgi dispatch --config /etc/diy-wsgi/diy.ini          deliver only (beside gunicorn workers)
  echo -n '{"Type":"VALIDATE"}' | diy-wsgi sign --secret env:DIY_SECRET
  diy-wsgi sign --config examples/quickstart.ini body.json  X-HMAC of a file, with the configured secret

Under gunicorn:  DIY_CONFIG=/etc/diy-wsgi/diy.ini gunicorn -c gunicorn.conf.py diy_wsgi:app
"""


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except (ConfigError, StoreError) as error:
        return fail(error)
    except BrokenPipeError:  # whoever read our output stopped (| head): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:  # a file named on the command line (verify, sign, backup)
        return fail(f"{error.filename}: {error.strerror}" if error.filename and error.strerror else
                    error.strerror or error)
    except KeyboardInterrupt:  # Ctrl-C of a long command (disk, replay, backup): no traceback
        return 130


def fail(error):
    """Every failure of a command: one line on stderr, never a traceback; exit status 2."""
    print(f"diy-wsgi: {error}", file=sys.stderr)
    return 2


def build_parser():
    parser = argparse.ArgumentParser(
        prog="diy-wsgi", description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"diy-wsgi {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the HTTP endpoint and the dispatcher in one process",
        description="Serve the DMP endpoint (a threaded stdlib HTTP server) and, unless [dispatcher] "
        "embedded = no, deliver in the same process. Put nginx with TLS in front of it; for several "
        "workers run gunicorn instead (see the README).",
    )
    add_config(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.set_defaults(run=run_serve)

    dispatch = commands.add_parser(
        "dispatch",
        help="run only the dispatcher (delivers what any process stored)",
        description="Deliver the outbox to the platforms until SIGTERM or Ctrl-C. Safe beside other "
        "dispatchers and embedded ones: each audience is leased to one of them at a time.",
    )
    add_config(dispatch)
    dispatch.set_defaults(run=run_dispatch)

    signer = commands.add_parser(
        "sign",
        help="print the X-HMAC of a request body, to try the endpoint with curl",
        description="Print the hex HMAC-SHA1 of a body exactly as the DMP computes X-HMAC. The body is "
        "read from FILE or standard input, byte for byte (mind the trailing newline of echo).",
    )
    source = signer.add_mutually_exclusive_group(required=True)
    source.add_argument("--secret", help="the shared secret, or env:NAME / file:PATH to keep it out of the shell history")
    source.add_argument("--config", help="take the first hmac_secrets entry of an integration in this file")
    signer.add_argument("--integration", help="which integration's secret (default: the first)")
    signer.add_argument("file", nargs="?", help="the body (default: standard input)")
    signer.set_defaults(run=run_sign)
    add_admin_commands(commands, add_config)
    add_sandbox_command(commands)
    return parser


def add_config(parser):
    parser.add_argument(
        "--config",
        required="DIY_CONFIG" not in os.environ,
        default=os.environ.get("DIY_CONFIG"),
        help="the INI configuration file (default: $DIY_CONFIG; see the README)",
    )


def run_serve(args):
    config = load_config(args.config)
    configure_logging(config)
    server = listen(lambda: ThreadingWSGIServer((args.host, args.port), QuietHandler), args.host, args.port)
    try:
        app = make_app(config)
        app.service.database.connection()
    except BaseException:
        server.server_close()
        raise
    server.set_app(app)
    stop_on_signals(server.shutdown)
    app.start()
    host, port = server.server_address[:2]
    for integration in config.integrations:
        log.info("listening url=http://%s:%d%s integration=%s target=%s", host, port, integration.path, integration.name, integration.target)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        app.stop()
        log.info("stopped")
    return 0


def listen(bind, host, port):
    """The server `bind()` makes, listening; a port already taken is one line, before anything
    (a database, a metrics folder) is created."""
    try:
        return bind()
    except OSError as error:
        hint = ("; another process listens there (another diy-wsgi?): stop it or choose another --port"
                if error.errno == errno.EADDRINUSE else "")
        raise ConfigError(f"cannot listen on {host}:{port} ({error.strerror or error}){hint}") from None


def run_dispatch(args):
    config = load_config(args.config)
    configure_logging(config)
    service = Service(config)
    service.database.connection()
    stopped = threading.Event()
    stop_on_signals(stopped.set)
    service.dispatcher.start()
    stopped.wait()
    service.close()
    return 0


def run_sign(args):
    if args.secret:
        secret = load_secret(args.secret, "--secret").encode()
    else:
        config = load_config(args.config)
        integrations = [i for i in config.integrations if args.integration in (None, i.name)]
        if not integrations:
            raise ConfigError(f"{config.source}: no [integration:{args.integration}]")
        secret = integrations[0].hmac_secrets[0]
    if args.file:
        with open(args.file, "rb") as stream:
            body = stream.read()
    else:
        body = sys.stdin.buffer.read()
    print(sign(secret, body))
    return 0


def configure_logging(config):
    logs.configure(config.log_level, config.log_format)


def stop_on_signals(stop):
    """SIGTERM and SIGINT stop the loop from another thread (shutdown() waits for the loop); a
    second one exits at once: what was acknowledged is committed, and other dispatchers take the
    audiences of calls still in flight over once this process's heartbeat is old."""
    stopping = threading.Event()

    def handler(signum, frame):
        if stopping.is_set():
            log.warning("stopping now signal=%s; calls in flight are abandoned and delivered again", signal.Signals(signum).name)
            logging.shutdown()
            os._exit(128 + signum)
        stopping.set()
        log.info("stopping signal=%s; send it again to stop at once", signal.Signals(signum).name)
        threading.Thread(target=stop, daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class ThreadingWSGIServer(QuietDisconnects, socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    """The app logs every request itself, with its request id."""

    def log_message(self, format, *args):
        pass


SANDBOX_DESCRIPTION = """\
Run a fake advertising platform on this machine, to watch diy-wsgi deliver without a real
account. It speaks the three APIs diy-wsgi's targets call, keeps audiences and members in
memory (gone when it stops) and can misbehave on purpose (errors, throttling, latency,
outages) so retries can be seen and tested. It listens on loopback only.

endpoints (platform calls; faults apply to these):
  POST /webhook                 Standard Webhooks receiver: 401 on a bad signature, 400 on an
                                event not of the documented shape, a repeated webhook-id is
                                applied once, audience.created -> {"id": "sbx-<n>"}
  POST /data/advertiser         The Trade Desk first-party data: TTD-Auth or TtdSignature,
                                advertiser adv1 only (403 otherwise), TtlInMinutes 0 removes,
                                FailedLines for bad TDIDs, 413 over 2.5 MB
  POST /oauth2/token            Criteo client credentials, tokens valid 900 s
  POST|PATCH /<version>/marketing-solutions/audience-segments/create, /search,
                                /<id>/contact-list   Criteo contact lists: Bearer token,
                                advertiser 12345 only (403 otherwise), unique names, 250 calls
                                a minute (x-ratelimit-* headers, 429)
views (never faulted):
  GET /                         HTML: platforms, audiences, member counts
  GET /api/audiences            JSON: every audience with its members
  GET /api/stats                JSON: platform calls by API and status, faults injected
  GET|POST /api/faults          JSON: the faults in force / change them, e.g.
                                {"error_rate": 0.2, "outages": ["0s:30s"], "seed": 7}
  POST /api/reset               forget every audience, member, count and rate window

default credentials (public on purpose; change them with the flags below):
  webhook secret        whsec_cXVpY2tzdGFydC13ZWJob29rLWtleQ==   (the quick start's)
  The Trade Desk        token sandbox-ttd-token, secret sandbox-ttd-secret
  Criteo                client id sandbox-criteo-client, secret sandbox-criteo-secret
"""

SANDBOX_EPILOG = """\
point an integration at it (with the default port and credentials):

  [integration:webhook-demo]
  target = webhook
  target.url = http://127.0.0.1:9000/webhook
  target.secret = whsec_cXVpY2tzdGFydC13ZWJob29rLWtleQ==

  [integration:ttd-demo]
  target = thetradedesk
  target.base_url = http://127.0.0.1:9000
  target.advertiser_id = adv1
  target.token = sandbox-ttd-token
  ; or: target.auth = signature, target.secret = sandbox-ttd-secret

  [integration:criteo-demo]
  target = criteo
  target.base_url = http://127.0.0.1:9000
  target.client_id = sandbox-criteo-client
  target.client_secret = sandbox-criteo-secret
  target.advertiser_id = 12345
  target.gum_caller_id = 1

examples:
  diy-wsgi sandbox                                   all three platforms on 127.0.0.1:9000
  diy-wsgi sandbox --error-rate 0.1 --latency 50ms --seed 1
  diy-wsgi sandbox --outage 30s:60s --outage 5m:10s  down from 30 s to 90 s, and 5 min to 5m10s
  curl -s http://127.0.0.1:9000/api/audiences
  curl -s -X POST http://127.0.0.1:9000/api/faults -d '{"rate_limit_rate": 0.5, "retry_after": 2}'
"""


def add_sandbox_command(commands):
    sandbox = commands.add_parser(
        "sandbox", help="run a fake advertising platform to deliver to (webhook, The Trade Desk, Criteo)",
        description=SANDBOX_DESCRIPTION, epilog=SANDBOX_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=9000, help="port to listen on (default 9000; 0 picks a free one)")
    sandbox.add_argument("--control-port", type=int, help="serve the views and /api/* here, the platforms on --port")
    sandbox.add_argument("--journal", metavar="FILE", help="record every webhook call in FILE (JSON lines)")
    sandbox.add_argument("--counting", action="store_true", help="for load tests: count what arrives, check nothing")
    sandbox.add_argument("--trace", metavar="REGEX", help="with --counting: note when matches of REGEX's group arrive")
    credentials = sandbox.add_argument_group("credentials the sandbox accepts (defaults above)")
    credentials.add_argument("--webhook-secret", metavar="whsec_...", help="the webhook target's target.secret")
    credentials.add_argument("--ttd-token", help="The Trade Desk TTD-Auth token")
    credentials.add_argument("--ttd-secret", help="The Trade Desk key for TtdSignature")
    credentials.add_argument("--ttd-advertiser-id",
                             help="the one advertiser The Trade Desk takes data for (default adv1)")
    credentials.add_argument("--criteo-client-id", help="Criteo OAuth2 client id")
    credentials.add_argument("--criteo-client-secret", help="Criteo OAuth2 client secret")
    credentials.add_argument("--criteo-advertiser-id",
                             help="the one advertiser Criteo makes segments for (default 12345)")
    faults = sandbox.add_argument_group("faults, on platform calls only (also settable at runtime: POST /api/faults)")
    faults.add_argument("--error-rate", default="0", metavar="FRACTION", help="share of calls answered 503 (e.g. 0.1)")
    faults.add_argument("--rate-limit-rate", default="0", metavar="FRACTION", help="share answered 429 with Retry-After")
    faults.add_argument("--retry-after", default="1", metavar="SECONDS", help="Retry-After of those 429s (default 1)")
    faults.add_argument("--latency", default="0", metavar="DURATION", help="delay before every answer, e.g. 50ms")
    faults.add_argument("--latency-jitter", default="0", metavar="DURATION", help="plus a random 0..DURATION more")
    faults.add_argument("--outage", action="append", default=[], metavar="AFTER:FOR",
                        help="answer 503 from AFTER past start for FOR, e.g. 30s:60s; repeatable")
    faults.add_argument("--seed", type=int, help="seed of the random faults, for reproducible runs")
    sandbox.set_defaults(run=run_sandbox)


def run_sandbox(args):
    """Imported here, not at the top: a service's process never loads the sandbox (a test
    holds it to that), only `diy-wsgi sandbox` does."""
    from diy import sandbox

    try:
        settings = sandbox.settings_from_flags(
            host=args.host, port=args.port, webhook_secret=args.webhook_secret, ttd_token=args.ttd_token,
            ttd_secret=args.ttd_secret, ttd_advertiser_id=args.ttd_advertiser_id,
            criteo_client_id=args.criteo_client_id, criteo_client_secret=args.criteo_client_secret,
            criteo_advertiser_id=args.criteo_advertiser_id,
            error_rate=args.error_rate, rate_limit_rate=args.rate_limit_rate, retry_after=args.retry_after,
            latency=args.latency,
            latency_jitter=args.latency_jitter, outages=args.outage, seed=args.seed,
            control_port=args.control_port, journal=args.journal, counting=args.counting, trace=args.trace,
        )
        server = listen(lambda: sandbox.make_server(settings), args.host, args.port)
    except sandbox.SandboxConfigError as error:
        raise ConfigError(f"sandbox: {error}") from None
    logs.configure("info")
    stop_on_signals(server.shutdown)
    print(sandbox.banner(server), flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
