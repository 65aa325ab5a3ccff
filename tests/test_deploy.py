"""The deployment files in deploy/: what a production machine runs, checked here.

- The files agree with each other and with the code: every secret diy.ini.example names is a
  credential of every unit, nginx's body limit is [diy] max_body, stop timeouts exceed graceful ones.
- deploy/diy.ini.example parses, read as the units read it: from a credentials-style directory.
- nginx accepts the site (`nginx -t`), and a running nginx with it redirects, refuses, forwards
  and limits as its comments say (everything on 127.0.0.1, certificates made with openssl).
- systemd accepts the units (`systemd-analyze verify`), and rates their sandbox as "OK" or better.
- The example configuration runs as deployed: gunicorn with embedded = no beside a separate
  dispatcher, with the kernel's equivalent of MemoryDenyWriteExecute= where it has one.

Checks that need nginx, openssl, systemd-analyze or gunicorn skip when the tool is missing.
"""
import http.client
import json
import os
import re
import runpy
import shutil
import signal
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from diy.config import parse_config
from diy.signature import sign
from targets import load_target_class
from targets.http import HttpClient
from tests.processes import ROOT, Spawned, dmp_post, free_port, python, wait_for_port, wait_until
from tests.support import DMP_SECRET, WEBHOOK_SECRET, mutation

DEPLOY = ROOT / "deploy"
SITE = DEPLOY / "nginx" / "diy-wsgi.conf"
EXAMPLE = DEPLOY / "diy.ini.example"
UNITS = DEPLOY / "systemd"
SERVICES = ("diy-wsgi.service", "diy-wsgi-dispatch.service", "diy-wsgi-backup.service")
HOST = "dmp.example.com"
SECRET_FILES = {"dmp-hmac": DMP_SECRET.decode(), "webhook-secret": WEBHOOK_SECRET}


# --- reading the files -----------------------------------------------------------------------

def unit_values(name, key):
    """Every value of `key` in a unit file (systemd allows comments on their own lines only)."""
    values = []
    for line in (UNITS / name).read_text().splitlines():
        left, equals, right = line.partition("=")
        if equals and left.strip() == key:
            values.append(right.strip())
    return values


def unit_environment(name):
    return dict(item.split("=", 1) for value in unit_values(name, "Environment") for item in value.split())


def seconds(span):
    """A systemd time span such as 40s, 2min or 90 (seconds)."""
    match = re.fullmatch(r"([0-9]+)\s*(s|sec|min|m)?", span)
    assert match, f"unexpected time span {span!r}"
    return int(match.group(1)) * (60 if match.group(2) in ("min", "m") else 1)


def nginx_size(text):
    match = re.fullmatch(r"([0-9]+)([kKmM]?)", text)
    assert match, f"unexpected nginx size {text!r}"
    return int(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]


def site_directive(name):
    values = re.findall(rf"^\s*{name}\s+([^;]+);", SITE.read_text(), re.MULTILINE)
    assert values, f"{name} is missing from {SITE.name}"
    return values


def example_secret_names():
    """The NAMEs of the `file:NAME` secrets in the example's active (uncommented) lines."""
    names = set()
    for line in EXAMPLE.read_text().splitlines():
        if not line.lstrip().startswith((";", "#")):
            names.update(re.findall(r"file:([A-Za-z0-9._-]+)", line))
    return names


def example_settings():
    """The example's settings, each `file:NAME` secret taken as the text NAME (no files needed)."""
    return parse_config(EXAMPLE.read_text().replace("file:", ""), source=EXAMPLE.name, environ={})


def credentials_directory(tmp_path, **replacements):
    """A folder laid out like /run/credentials/<unit>/: diy.ini and one file per secret."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    text = EXAMPLE.read_text()
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in {EXAMPLE.name}"
        text = text.replace(old, new)
    (folder / "diy.ini").write_text(text)
    for name, value in SECRET_FILES.items():
        (folder / name).write_text(value + "\n")
    return folder


# --- the files agree with each other and with the code ---------------------------------------

def test_example_config_parses_with_secrets_from_the_credentials_directory(tmp_path):
    folder = credentials_directory(tmp_path)
    config = parse_config((folder / "diy.ini").read_text(), source=str(folder / "diy.ini"),
                          base_dir=folder, environ={})

    assert config.database == "/var/lib/diy-wsgi/diy.sqlite3"
    assert config.dispatcher.embedded is False
    [integration] = config.integrations
    assert integration.path == "/dmp"
    assert integration.hmac_secrets == (DMP_SECRET,)
    assert integration.target_settings["secret"] == WEBHOOK_SECRET
    # The target accepts its settings (the webhook target checks the URL and the whsec_ secret).
    load_target_class(integration.target)(integration.target_settings, HttpClient())


def test_example_config_names_only_secrets_the_tests_provide():
    assert example_secret_names() == set(SECRET_FILES)


@pytest.mark.parametrize("unit", SERVICES)
def test_every_unit_loads_the_config_and_each_secret_it_names_as_credentials(unit):
    expected = {name: f"/etc/diy-wsgi/{name}" for name in {"diy.ini", *example_secret_names()}}
    loaded = dict(value.split(":", 1) for value in unit_values(unit, "LoadCredential"))
    assert loaded == expected
    # ... and reads diy.ini from its credentials directory (%d), so `file:NAME` is found beside it.
    command = " ".join(unit_values(unit, "ExecStart"))
    assert unit_environment(unit).get("DIY_CONFIG") == "%d/diy.ini" or "--config %d/diy.ini" in command


@pytest.mark.parametrize("unit", SERVICES)
def test_every_unit_runs_as_the_service_user_in_the_database_folder(unit):
    assert unit_values(unit, "User") == ["diy-wsgi"]
    assert unit_values(unit, "StateDirectory") == ["diy-wsgi"]
    assert unit_values(unit, "UMask") == ["0077"]
    assert Path(example_settings().database).parent == Path("/var/lib/diy-wsgi")


def test_the_backup_unit_copies_the_database_and_reads_the_copy_back(tmp_path):
    """The unit's ExecStart as systemd runs it (its %d, %% and $$ expanded), with the program and
    the backup folder moved into tmp_path: a timestamped copy, then `diy-wsgi check` on it."""
    from outbox.db import Database
    from outbox.store import Outbox, ReceivedMutation
    from tests.processes import write_config

    credentials, backups = tmp_path / "credentials", tmp_path / "backups"
    credentials.mkdir()
    backups.mkdir()
    config = write_config(tmp_path, "http://127.0.0.1:9/events")
    (credentials / "diy.ini").write_text(config.read_text())
    database = Database(parse_config(config.read_text(), base_dir=tmp_path, environ={}).database)
    Outbox(database).enqueue("demo", "add", [ReceivedMutation("aud", "u1")], pass_through=True, now=time.time())
    database.close()
    program = tmp_path / "diy-wsgi"
    program.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -c "
                       "'import sys; from diy.cli import main; sys.exit(main(sys.argv[1:]))' \"$@\"\n")
    program.chmod(0o755)
    (command,) = unit_values("diy-wsgi-backup.service", "ExecStart")
    command = re.sub(r"%([%d])", lambda m: "%" if m.group(1) == "%" else str(credentials), command)
    command = (command.replace("$$", "$").replace("/opt/diy-wsgi/bin/diy-wsgi", str(program))
               .replace("/var/backups/diy-wsgi", str(backups)))
    shell, flag, script = command.split(" ", 2)

    result = subprocess.run([shell, flag, script.strip("'")], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    (copy,) = backups.iterdir()
    assert re.fullmatch(r"diy-\d{8}T\d{6}Z\.sqlite3", copy.name)
    assert f"{copy}: sound" in result.stdout


def test_nginx_refuses_exactly_the_bodies_the_app_refuses():
    config = example_settings()
    assert [nginx_size(value) for value in site_directive("client_max_body_size")] == [config.max_body]
    # nginx holds a whole allowed body in memory, never in a temp file.
    assert nginx_size(site_directive("client_body_buffer_size")[0]) >= config.max_body


def test_the_app_knows_the_name_nginx_passes_as_host():
    """nginx sends `Host: $server_name`; /metrics, answered to loopback, refuses other names."""
    assert example_settings().server_name in {value.strip() for value in site_directive("server_name")}


def test_nginx_has_a_location_for_every_integration_path():
    config = example_settings()
    locations = set(re.findall(r"location = (\S+)", SITE.read_text()))
    assert {integration.path for integration in config.integrations} <= locations
    assert {"/healthz", "/readyz", "/metrics"} <= locations
    # Each passes its own path on, not the client's raw one (a bare `proxy_pass http://diy_wsgi;` would).
    proxied = re.findall(r"location = (\S+) \{[^}]*?proxy_pass http://diy_wsgi(\S*);", SITE.read_text())
    assert proxied and all(location == passed for location, passed in proxied), proxied


def test_gunicorn_settings_in_the_unit_are_gunicorn_conf_defaults(monkeypatch):
    shown = unit_environment("diy-wsgi.service")
    for name in ("DIY_BIND", "DIY_WORKERS", "DIY_THREADS", "DIY_GRACEFUL_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert shown["DIY_BIND"] == settings["bind"]
    assert int(shown["DIY_WORKERS"]) == settings["workers"]
    assert int(shown["DIY_THREADS"]) == settings["threads"]
    assert int(shown["DIY_GRACEFUL_TIMEOUT"]) == settings["graceful_timeout"]
    # nginx proxies to that address.
    assert re.search(rf"^\s*server {re.escape(settings['bind'])};", SITE.read_text(), re.MULTILINE)


def test_systemd_waits_longer_than_a_graceful_stop_takes():
    config = example_settings()
    graceful = int(unit_environment("diy-wsgi.service")["DIY_GRACEFUL_TIMEOUT"])
    [gunicorn_stop] = unit_values("diy-wsgi.service", "TimeoutStopSec")
    [dispatcher_stop] = unit_values("diy-wsgi-dispatch.service", "TimeoutStopSec")
    # A worker's dispatcher stops within stop_timeout, inside gunicorn's graceful window.
    assert config.dispatcher.stop_timeout < graceful < seconds(gunicorn_stop)
    assert config.dispatcher.stop_timeout < seconds(dispatcher_stop)


# --- nginx -----------------------------------------------------------------------------------

def nginx_binary():
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return found


def replace(text, pattern, replacement, count_at_least=1):
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count >= count_at_least, f"{pattern!r} is no longer in {SITE.name}"
    return new


def site_for_test(folder, certificate, key, *, http_port=None, https_port=None, upstreams=None):
    """The site with the certificate, logs (and, to run it, ports and upstreams) moved to `folder`."""
    text = SITE.read_text()
    text = replace(text, r"/etc/letsencrypt/live/[^/\s]+/fullchain\.pem", str(certificate))
    text = replace(text, r"/etc/letsencrypt/live/[^/\s]+/privkey\.pem", str(key))
    text = replace(text, r"/var/log/nginx/", f"{folder}/")
    if https_port is not None:
        text = replace(text, r"^(\s*)listen \[::\]:\d+[^;]*;\n", "", count_at_least=2)
        text = replace(text, r"listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
        text = replace(text, r"listen 80;", f"listen 127.0.0.1:{http_port};")
        servers = "".join(f"server 127.0.0.1:{port};\n    " for port in upstreams)
        text = replace(text, r"server 127\.0\.0\.1:8000;\n\s*", servers)
    path = folder / "site.conf"
    path.write_text(text)
    return path


def nginx_conf(folder, http_block):
    """A minimal nginx.conf around `http_block`, every file it writes inside `folder`."""
    path = folder / "nginx.conf"
    path.write_text(
        f"daemon off;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log;\nevents {{}}\n"
        f"http {{\n    access_log {folder}/access.log;\n    client_body_temp_path {folder}/body;\n"
        f"    proxy_temp_path {folder}/proxy;\n{http_block}\n}}\n")
    return path


def nginx_test(conf, folder):
    return subprocess.run([nginx_binary(), "-t", "-p", f"{folder}/", "-e", f"{folder}/error.log", "-c", str(conf)],
                          capture_output=True, text=True)


def test_nginx_accepts_the_site(tmp_path, certificate):
    site = site_for_test(tmp_path, *certificate)
    result = nginx_test(nginx_conf(tmp_path, f"    include {site};"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_accepts_the_site_inside_debians_nginx_conf(tmp_path, certificate):
    """The site as installed: included by Debian's own http { } block, beside its settings."""
    debian = Path("/etc/nginx/nginx.conf")
    if not debian.exists() or "sites-enabled" not in debian.read_text():
        pytest.skip("no Debian nginx.conf here")
    nginx_binary()
    site = site_for_test(tmp_path, *certificate)
    text = debian.read_text()
    text = re.sub(r"include /etc/nginx/sites-enabled/\*;", f"include {site};", text)
    text = re.sub(r"^pid [^;]+;", f"pid {tmp_path}/nginx.pid;", text, flags=re.MULTILINE)
    text = text.replace("/var/log/nginx/", f"{tmp_path}/")
    conf = tmp_path / "debian-nginx.conf"
    conf.write_text(text)
    result = nginx_test(conf, tmp_path)
    assert result.returncode == 0, result.stderr


class Upstream(ThreadingHTTPServer):
    """Stands in for gunicorn: records each request and answers 200 {}."""

    daemon_threads = True

    def __init__(self):
        self.requests = []
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self):
        return self.server_address[1]


class RecordingHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.record(b"")

    def do_POST(self):
        self.record(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    def record(self, body):
        self.server.requests.append({"method": self.command, "path": self.path, "headers": self.headers, "body": body})
        answer = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format, *args):
        pass


class DeadUpstream(socketserver.ThreadingTCPServer):
    """Reads a request and hangs up without answering; counts the requests it was sent."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.requests = 0
        super().__init__(("127.0.0.1", 0), HangUp)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self):
        return self.server_address[1]


class HangUp(socketserver.BaseRequestHandler):
    def handle(self):
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = self.request.recv(65536)
            if not chunk:
                return
            received += chunk
        self.server.requests += 1


class RunningNginx(Spawned):
    """nginx running the site in `folder` in front of `upstreams`, listening once constructed."""

    def __init__(self, folder, certificate, key, upstreams):
        self.folder = folder
        self.certificate = certificate
        self.http_port, self.https_port = free_port(), free_port()
        site = site_for_test(folder, certificate, key, http_port=self.http_port, https_port=self.https_port,
                             upstreams=[upstream.port for upstream in upstreams])
        conf = nginx_conf(folder, f"    include {site};")
        super().__init__(folder, [nginx_binary(), "-p", f"{folder}/", "-e", f"{folder}/error.log", "-c", str(conf)],
                         "nginx")
        try:
            wait_for_port(self.https_port, process=self)
        except AssertionError:
            self.kill()
            raise

    def output(self):
        return super().output() + (self.folder / "error.log").read_text(errors="replace")

    def stop(self):
        """SIGQUIT, nginx's graceful stop; SIGKILL if it is not done within 15 s."""
        self.kill(signal.SIGQUIT, timeout=15)

    def request(self, method, path, body=None, headers=None, *, tls=True, source="127.0.0.1"):
        """(status, headers, body) of one request to the site, from `source`."""
        if tls:
            context = ssl.create_default_context(cafile=str(self.certificate))
            connection = http.client.HTTPSConnection("127.0.0.1", self.https_port, timeout=15, context=context,
                                                     source_address=(source, 0))
        else:
            connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=15, source_address=(source, 0))
        try:
            connection.request(method, path, body=body, headers={"Host": HOST, **(headers or {})})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()


@pytest.fixture
def nginx_site(tmp_path, certificate):
    """nginx running the site on 127.0.0.1 in front of a recording stand-in for gunicorn."""
    nginx_binary()
    upstream = Upstream()
    nginx = RunningNginx(tmp_path, *certificate, upstreams=[upstream])
    nginx.upstream = upstream
    yield nginx
    nginx.stop()
    upstream.shutdown()
    upstream.server_close()


def test_plain_http_get_is_redirected_to_https(nginx_site):
    status, headers, _ = nginx_site.request("GET", "/dmp?type=VALIDATE", tls=False)
    assert (status, headers["Location"]) == (301, f"https://{HOST}/dmp?type=VALIDATE")
    assert nginx_site.upstream.requests == []


def test_the_redirect_goes_to_the_configured_name_whatever_the_host_header(nginx_site):
    status, headers, _ = nginx_site.request("GET", "/dmp", tls=False, headers={"Host": "evil.example"})
    assert (status, headers["Location"]) == (301, f"https://{HOST}/dmp")


def test_the_app_is_sent_the_configured_name_as_host_whatever_the_client_sent(nginx_site):
    status, _, _ = nginx_site.request("GET", "/dmp", headers={"Host": "evil.example"})
    assert status == 200
    assert [r["headers"]["Host"] for r in nginx_site.upstream.requests] == [HOST]


def test_plain_http_post_is_refused_not_redirected(nginx_site):
    status, headers, body = nginx_site.request("POST", "/dmp?type=ADD_TO_AUDIENCE", b"{}", tls=False)
    assert status == 403 and "Location" not in headers
    assert "https" in json.loads(body)["error"]
    assert nginx_site.upstream.requests == []


def test_a_dmp_post_reaches_gunicorn_whole_with_forwarded_headers(nginx_site):
    body = json.dumps({"Type": "ADD_TO_AUDIENCE", "Mutations": [mutation("aud", "u1")]}).encode()
    status, _, answer = nginx_site.request("POST", "/dmp?type=ADD_TO_AUDIENCE", body, {
        "Content-Type": "application/json", "X-HMAC": sign(DMP_SECRET, body),
        "X-Forwarded-For": "203.0.113.9"})
    assert (status, answer) == (200, b"{}")
    [request] = nginx_site.upstream.requests
    assert (request["method"], request["path"], request["body"]) == ("POST", "/dmp?type=ADD_TO_AUDIENCE", body)
    headers = request["headers"]
    assert headers["X-HMAC"] == sign(DMP_SECRET, body)
    assert headers["Host"] == HOST
    assert headers["X-Forwarded-Proto"] == "https"
    # The client's own X-Forwarded-For is replaced, never passed on.
    assert headers.get_all("X-Forwarded-For") == ["127.0.0.1"]
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-Id"])


def test_a_body_of_max_body_passes_and_one_byte_more_is_refused_by_nginx(nginx_site):
    limit = example_settings().max_body
    status, _, _ = nginx_site.request("POST", "/dmp?type=ADD_TO_AUDIENCE", b"x" * limit)
    assert status == 200
    status, headers, body = nginx_site.request("POST", "/dmp?type=ADD_TO_AUDIENCE", b"x" * (limit + 1))
    assert status == 413
    assert headers["Content-Type"] == "application/json"
    assert "1 MiB" in json.loads(body)["error"]
    assert len(nginx_site.upstream.requests) == 1


@pytest.mark.parametrize("path", ["/dmp", "/healthz", "/readyz", "/metrics"])
def test_the_app_gets_the_normalised_path_not_the_raw_one(nginx_site, path):
    """nginx matches `/x%0a<forged line>/../dmp` to /dmp: the app must get /dmp, since the raw
    path would carry a newline and any text into the app's log and its own path matching."""
    status, _, _ = nginx_site.request("GET", f"/x%0a2026-11-27%20forged%20status=200/..{path}?type=VALIDATE")
    assert status == 200
    assert [r["path"] for r in nginx_site.upstream.requests] == [f"{path}?type=VALIDATE"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_checks_are_proxied(nginx_site, path):
    assert nginx_site.request("GET", path)[0] == 200
    assert [r["path"] for r in nginx_site.upstream.requests] == [path]


def test_metrics_are_served_to_localhost(nginx_site):
    assert nginx_site.request("GET", "/metrics")[0] == 200
    assert [r["path"] for r in nginx_site.upstream.requests] == ["/metrics"]


def test_metrics_are_refused_to_other_addresses(nginx_site):
    try:
        status, _, _ = nginx_site.request("GET", "/metrics", source="127.0.0.2")
    except OSError as error:
        pytest.skip(f"cannot connect from 127.0.0.2 here: {error}")
    assert status == 403
    assert nginx_site.upstream.requests == []


def test_other_paths_are_answered_by_nginx(nginx_site):
    status, headers, body = nginx_site.request("GET", "/wp-login.php")
    assert (status, headers["Content-Type"]) == (404, "application/json")
    assert json.loads(body)["error"]
    assert nginx_site.upstream.requests == []


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_failed_request_is_never_sent_to_another_upstream(tmp_path, certificate, method):
    """proxy_next_upstream off: with two upstreams that hang up, only one ever sees the request."""
    nginx_binary()
    upstreams = [DeadUpstream(), DeadUpstream()]
    nginx = RunningNginx(tmp_path, *certificate, upstreams=upstreams)
    try:
        status, _, _ = nginx.request(method, "/dmp?type=VALIDATE", b"{}" if method == "POST" else None)
    finally:
        nginx.stop()
        for upstream in upstreams:
            upstream.shutdown()
            upstream.server_close()
    assert status == 502
    assert sum(upstream.requests for upstream in upstreams) == 1


# --- systemd ---------------------------------------------------------------------------------

def systemd_analyze():
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return found


def analyze_environment():
    # Warnings ("Unknown key ...") go to stderr, not to a journal that may not run in a container.
    return {**os.environ, "SYSTEMD_LOG_TARGET": "console", "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""}


@pytest.fixture
def unit_copies(tmp_path):
    """The units with /opt/diy-wsgi/bin/ pointed at stub executables in a temp folder.

    `systemd-analyze verify` refuses an ExecStart= whose program does not exist, and this
    machine has no /opt/diy-wsgi; every other path is kept as written.
    """
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    for program in ("gunicorn", "diy-wsgi"):
        (bin_folder / program).write_text("#!/bin/sh\nexit 0\n")
        (bin_folder / program).chmod(0o755)
    folder = tmp_path / "units"
    folder.mkdir()
    for unit in sorted(UNITS.iterdir()):
        (folder / unit.name).write_text(unit.read_text().replace("/opt/diy-wsgi/bin/", f"{bin_folder}/"))
    return folder


@pytest.fixture
def working_verify(tmp_path):
    """Skip when `systemd-analyze verify` cannot judge even a trivial unit in this environment."""
    probe = tmp_path / "probe.service"
    probe.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    result = subprocess.run([systemd_analyze(), "verify", str(probe)], capture_output=True, text=True,
                            env=analyze_environment())
    if result.returncode != 0 or result.stdout.strip() or result.stderr.strip():
        pytest.skip(f"systemd-analyze verify does not work here: {result.stderr.strip()[:300]}")


def test_systemd_accepts_the_units(unit_copies, working_verify):
    units = sorted(str(path) for path in unit_copies.iterdir())
    assert {Path(unit).name for unit in units} >= {*SERVICES, "diy-wsgi-backup.timer"}
    result = subprocess.run([systemd_analyze(), "verify", *units], capture_output=True, text=True,
                            env=analyze_environment())
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # An unknown key or a bad value is only a warning for systemd: none may name our units.
    assert not [line for line in output.splitlines() if "diy-wsgi" in line], output


@pytest.mark.parametrize("unit", SERVICES)
def test_systemd_rates_the_sandbox_ok(unit_copies, unit):
    """`systemd-analyze security` scores exposure from 0.0 (locked down) to 10.0; "OK" is below 4.0."""
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit_copies / unit)],
        capture_output=True, text=True, env=analyze_environment())
    if result.returncode != 0 and "offline" in result.stderr:
        pytest.skip(f"this systemd-analyze has no --offline (systemd 250+): {result.stderr.strip()[:200]}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout[-3000:] + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout[-3000:]


# --- the example configuration runs as deployed ----------------------------------------------

LAUNCHER = """\
import ctypes, os, sys
if sys.argv[1] == "mdwe":
    # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN: no mapping may be (or become) writable and executable,
    # as with systemd's MemoryDenyWriteExecute=; inherited by children and kept across exec.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0 or libc.prctl(66, 0, 0, 0, 0) != 1:
        sys.exit(77)
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


def memory_deny_write_execute_works():
    result = subprocess.run([sys.executable, "-c", LAUNCHER, "mdwe", "-c",
                             "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"],
                            capture_output=True, text=True)
    return result.returncode != 77 and "Permission denied" in result.stderr


def answers(port, path):
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False


@pytest.mark.parametrize("mode", ["plain", "mdwe"], ids=["plain", "memory-deny-write-execute"])
def test_the_example_config_serves_and_delivers_with_gunicorn_and_a_separate_dispatcher(tmp_path, receiver_for, mode):
    pytest.importorskip("gunicorn")
    if mode == "mdwe" and not memory_deny_write_execute_works():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    receiver = receiver_for()
    folder = credentials_directory(tmp_path, **{
        "/var/lib/diy-wsgi/diy.sqlite3": str(tmp_path / "diy.sqlite3"),
        "https://hooks.example.com/dmp": receiver.url,
    })
    port = free_port()
    env = {"DIY_CONFIG": str(folder / "diy.ini"), "DIY_BIND": f"127.0.0.1:{port}", "DIY_WORKERS": "2",
           "XDG_RUNTIME_DIR": str(tmp_path)}
    launched = python("-c", LAUNCHER, mode)
    gunicorn = Spawned(tmp_path, [*launched, "-m", "gunicorn", "-c", ROOT / "gunicorn.conf.py", "diy_wsgi:app"],
                       "gunicorn", env=env)
    dispatcher = Spawned(tmp_path, [*launched, "-m", "diy", "dispatch", "--config", folder / "diy.ini"], "dispatcher",
                         env=env)
    processes = (gunicorn, dispatcher)
    try:
        wait_until(lambda: answers(port, "/dmp"), what="gunicorn answering", processes=processes)
        wait_until(lambda: "dispatcher started" in dispatcher.output(), what="the dispatcher", processes=processes)
        for i in range(10):
            status, _ = dmp_post(port, "ADD_TO_AUDIENCE", {"Type": "ADD_TO_AUDIENCE", "Mutations": [mutation("aud", f"u{i}")]})
            assert status == 200
        wait_until(lambda: receiver.members.get("aud") == {f"u{i}" for i in range(10)}, what="delivery",
                   processes=processes)
    finally:
        codes = [process.stop(timeout=40) for process in processes]
    outputs = {process.name: process.output() for process in processes}
    assert codes == [0, 0], outputs
    # embedded = no: only the separate dispatcher delivered.
    assert "dispatcher started" not in outputs["gunicorn"], outputs
    assert "Traceback" not in "".join(outputs.values()), outputs
