"""The `diy-wsgi` command: serve the endpoint, run the dispatcher alone, sign a body."""
import argparse
import logging
import os
import signal
import socketserver
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from diy.config import ConfigError, load_config
from diy.signature import sign
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
        print(f"diy-wsgi: {error}", file=sys.stderr)
        return 2


def build_parser():
    from diy_wsgi import __version__

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
    return parser


def add_config(parser):
    parser.add_argument(
        "--config",
        required="DIY_CONFIG" not in os.environ,
        default=os.environ.get("DIY_CONFIG"),
        help="the INI configuration file (default: $DIY_CONFIG; see the README)",
    )


def run_serve(args):
    from diy_wsgi import make_app

    config = load_config(args.config)
    configure_logging(config.log_level)
    app = make_app(config)
    app.service.database.connection()
    server = make_server(args.host, args.port, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler)
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


def run_dispatch(args):
    from diy.service import Service

    config = load_config(args.config)
    configure_logging(config.log_level)
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
        secret = resolve_secret(args.secret)
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


def resolve_secret(value):
    kind, _, rest = value.partition(":")
    if kind == "env":
        if rest not in os.environ:
            raise ConfigError(f"--secret: the environment variable {rest} is not set")
        value = os.environ[rest]
    elif kind == "file":
        with open(rest, encoding="utf-8") as stream:
            value = stream.read().rstrip("\r\n")
    return value.encode()


def configure_logging(level):
    logging.basicConfig(
        level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )


def stop_on_signals(stop):
    """SIGTERM and SIGINT stop the loop from another thread (shutdown() waits for the loop)."""

    def handler(signum, frame):
        log.info("stopping signal=%s", signal.Signals(signum).name)
        threading.Thread(target=stop, daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    """The app logs every request itself, with its request id."""

    def log_message(self, format, *args):
        pass
