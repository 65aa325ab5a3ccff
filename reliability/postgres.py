"""A throwaway PostgreSQL server for the tests and the bench: its own cluster in a temporary
folder, on a free loopback port, started and stopped by whoever uses it.

As root, `initdb` and `pg_ctl` run as the `postgres` user (PostgreSQL refuses to run as root).
Where no server can be started (no binaries, no psycopg), `unavailable()` says why in one line
and the PostgreSQL tests skip with it.
"""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from reliability.processes import free_port

SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/usr/pgsql-*/bin")


def find_binaries():
    """The folder holding initdb and pg_ctl, newest version first, or None."""
    on_path = shutil.which("pg_ctl")
    candidates = sorted((d for pattern in SEARCH for d in glob.glob(pattern)), reverse=True)
    if on_path:
        candidates.insert(0, os.path.dirname(os.path.realpath(on_path)))
    for folder in candidates:
        if all(os.access(os.path.join(folder, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return folder
    return None


def unavailable():
    """Why no PostgreSQL server can be started here, or None when one can."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'diy-wsgi[postgres]')"
    if find_binaries() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl) found; apt-get install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a postgres user to run the server as"
    return None


class PostgresServer:
    """One cluster; `create_database()` hands each test a fresh database on it.

    The tests' cluster skips every flush (`fsync = off`, `full_page_writes = off`) for speed.
    `durable=True` keeps PostgreSQL's durable defaults instead (fsync, full-page writes,
    `synchronous_commit = on`), as the benchmark needs to compare durable commits with SQLite's
    `synchronous = full`."""

    def __init__(self, durable=False):
        self.durable = durable
        self.bin = find_binaries()
        self.folder = Path(tempfile.mkdtemp(prefix="diy-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._count = 0
        self._lock = threading.Lock()
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", self.data, "-U", self.user, "--auth=trust", "-E", "UTF8",
                  *([] if durable else ["--no-sync"]), "--locale=C")
        flushes = ("fsync = on\nfull_page_writes = on\nsynchronous_commit = on\n" if durable
                   else "fsync = off\nfull_page_writes = off\n")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.folder}'\n"
                "max_connections = 200\n" + flushes
            )
        self.start()

    def _run(self, tool, *args, check=True):
        command = [os.path.join(self.bin, tool), *map(str, args)]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def start(self):
        self._run("pg_ctl", "-D", self.data, "-l", self.folder / "server.log", "-w", "-t", "60", "start")

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self, mode="fast"):
        self.stop(mode)
        self.start()

    def url(self, database="postgres"):
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self):
        import psycopg

        with self._lock:
            self._count += 1
            name = f"diy_test_{os.getpid()}_{self._count}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def log(self):
        try:
            return (self.folder / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self):
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def wait_until_accepting(server, timeout=30):
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(server.url(), connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
