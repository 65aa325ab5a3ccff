"""The bench's own environment: its virtualenv, wrk, a work folder on a real disk, the machine.

The virtualenv lives outside the repository (DIY_BENCH_VENV, default: the system temp folder)
and holds only the bench's tools and the other contenders' frameworks; diy-wsgi itself runs
from the repository checkout with no dependency installed.
"""
import hashlib
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
REQUIREMENTS = ("gunicorn==27.0.1", "flask==3.1.3", "huey==3.5.4", "uvloop==0.23.0",
                'psycopg==3.3.9; python_version >= "3.10"', 'psycopg==3.2.13; python_version < "3.10"')
"""psycopg (pure Python, on the system's libpq) is diy-wsgi's optional `postgres` extra: the
postgres phase runs diy-wsgi on PostgreSQL from the checkout with it. 3.3 needs Python 3.10."""
TOOLS = ("gunicorn", "flask", "huey", "uvloop", "psycopg")


def venv_path():
    key = hashlib.sha256(" ".join(REQUIREMENTS).encode()).hexdigest()[:10]
    default = Path(tempfile.gettempdir()) / f"diy-wsgi-bench-py{sys.version_info[0]}{sys.version_info[1]}-{key}"
    return Path(os.environ.get("DIY_BENCH_VENV") or default)


def in_bench_venv():
    return Path(sys.prefix).resolve() == venv_path().resolve()


def ensure_venv():
    """Create the bench virtualenv once (reused while REQUIREMENTS are unchanged); its python."""
    path = venv_path()
    python = path / "bin" / "python"
    marker = path / "bench-requirements.txt"
    if not (marker.exists() and marker.read_text() == "\n".join(REQUIREMENTS)):
        print(f"bench: creating {path} with {', '.join(REQUIREMENTS)}", flush=True)
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
                       check=True)
        marker.write_text("\n".join(REQUIREMENTS))
    return python


def ensure_wrk():
    """wrk's path, installing Debian's package when we are root; None when it cannot be had."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("bench: installing wrk (apt-get install -y wrk)", flush=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet).returncode != 0:
        subprocess.run(["apt-get", "update"], **quiet)
        subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet)
    return shutil.which("wrk")


def filesystem_of(path):
    """(mount point, device, type) of the filesystem holding `path`."""
    path = os.path.realpath(path)
    best = ("/", "?", "?")
    with open("/proc/mounts") as mounts:
        for line in mounts:
            device, mount, kind = line.split()[:3]
            if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best[0]):
                best = (mount, device, kind)
    return best


def make_workdir(base=None):
    """A fresh folder for databases, logs and raw results, refusing memory-backed filesystems."""
    for candidate in ([base] if base else ["/var/tmp", tempfile.gettempdir()]):
        if candidate and os.path.isdir(candidate) and filesystem_of(candidate)[2] not in ("tmpfs", "ramfs"):
            return Path(tempfile.mkdtemp(prefix="diy-wsgi-bench-", dir=candidate))
    raise SystemExit(f"bench: no disk-backed folder among {base or '/var/tmp, $TMPDIR'}; pass --workdir")


def fsync_latency_ms(folder):
    """p50 and p99 of an appended block's fsync on `folder`'s disk for 1 s (what `diy-wsgi disk` measures)."""
    from outbox.disk import flush_times

    times = sorted(flush_times(folder, seconds=1.0, interval=0))
    return {"p50": times[len(times) // 2], "p99": times[int(len(times) * 0.99)]}


def versions():
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in TOOLS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    wrk = shutil.which("wrk")
    if wrk:
        text = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout
        found["wrk"] = text.split(" [")[0].strip() or "wrk"
    return found


def code_version():
    """The checkout measured: HEAD, and whether the runtime files differ from it (read-only git)."""
    def git(*args):
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("log", "-1", "--format=%h %s")
    changed = git("status", "--porcelain", "--", "diy_wsgi.py", "diy", "outbox", "targets", "gunicorn.conf.py")
    return {"head": head or "unknown (not a git checkout)", "runtime_modified": bool(changed)}


def machine(workdir):
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        ram_kib = int(next(line for line in info if line.startswith("MemTotal")).split()[1])
    mount, device, kind = filesystem_of(workdir)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "os": platform.platform(),
        "disk": f"{device} ({kind}) mounted at {mount}",
        "fsync_ms": fsync_latency_ms(workdir),
        "versions": versions(),
    }
