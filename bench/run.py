#!/usr/bin/env python3
"""diy-wsgi's benchmarks, in one command; writes bench/RESULTS.md.

    python3 bench/run.py            the full run (about 25 minutes)
    python3 bench/run.py --quick    a smoke run (about 4 minutes); its report goes to the work folder

It makes its own virtualenv outside the repository (gunicorn, Flask, huey, uvloop, psycopg),
installs Debian's wrk if it is missing and we are root, then re-runs itself in that venv.
Everything listens on 127.0.0.1. Databases, logs and raw results go to a fresh work folder on
a real disk (/var/tmp by default, never tmpfs; the databases are deleted at the end unless
--keep-data); only the report lands in the repository.
"""
import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

import env  # noqa: E402

SETTINGS = {
    "full": {"warmup": 3, "saturation": 10, "rounds": 3, "open": 12, "steps": 7, "step": 8, "drain_mutations": 300_000,
             "backlog_sizes": [1_000, 1_000_000, 10_000_000], "backlog_rounds": 100, "quiet_wait": 3,
             "drain_wait": 60, "delivery_window": 10, "replay_requests": (200, 20_000), "target_runs": 3},
    "quick": {"warmup": 1, "saturation": 3, "rounds": 1, "open": 3, "steps": 3, "step": 3, "drain_mutations": 20_000,
              "backlog_sizes": [1_000, 100_000], "backlog_rounds": 50, "quiet_wait": 0,
              "drain_wait": 15, "delivery_window": 5, "replay_requests": (10, 500), "target_runs": 1},
}
"""Seconds ("warmup", "saturation", "open", "step", waits), counts and sizes per mode."""
PHASES = ("ingest", "dispatch", "backlog", "replay", "postgres")
"""In the order they run."""
PLATFORM_LATENCY_MS = 50.0
"""How long the bench's platform takes to answer each call. No platform publishes its latency
(../shared/platforms.md): 50 ms is our assumption for an advertising API across the internet
from a VM, and the same stub latency the "forward in request" contender always had."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--out", help="where to write the report (default: bench/RESULTS.md, or the work folder "
                                      "with --quick)")
    parser.add_argument("--workdir", help="a folder on a real disk for the work folder (default /var/tmp)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers, every contender (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="gthread threads per worker (default 4)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections at saturation (default 16)")
    parser.add_argument("--platform-latency", type=float, default=PLATFORM_LATENCY_MS, metavar="MS",
                        help=f"how long the platform takes to answer a call, in ms (default {PLATFORM_LATENCY_MS:g}: "
                             "our assumption of a platform API across the internet; 0 makes delivery CPU-bound)")
    parser.add_argument("--server-cpus", default="0", help="taskset CPUs of the servers (default 0)")
    parser.add_argument("--client-cpus", default="1", help="taskset CPUs of the load side (default 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin anything with taskset")
    parser.add_argument("--only", help="comma-separated phases: " + ",".join(PHASES) + " (default all)")
    parser.add_argument("--report-from", metavar="RESULTS_JSON", help="run nothing: render the report from a saved "
                                                                       "run's results.json")
    parser.add_argument("--keep-data", action="store_true", help="keep the databases in the work folder (the logs, "
                                                                  "raw results and report are always kept)")
    return parser.parse_args(argv)


def reexec_in_venv():
    python = env.ensure_venv()
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


def render_saved(args):
    import report

    out = Path(args.out) if args.out else BENCH / "RESULTS.md"
    out.write_text(report.render(json.loads(Path(args.report_from).read_text())))
    print(f"bench: report {out} from {args.report_from}")


def main():
    args = parse_args()
    if args.report_from:
        return render_saved(args)
    if not env.in_bench_venv():
        reexec_in_venv()
    import contenders
    import measure
    import report
    from phases import Bench

    mode = "quick" if args.quick else "full"
    wrk = env.ensure_wrk()
    if not wrk:
        raise SystemExit("bench: needs wrk (Debian's package; installed automatically when run as root)")
    pinning = None if args.no_pin else {"server": args.server_cpus, "client": args.client_cpus}
    if pinning:
        os.sched_setaffinity(0, {int(c) for c in args.client_cpus.split(",")})
    workdir = env.make_workdir(args.workdir)
    command = "python3 bench/run.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    print(f"bench: {mode} run, work folder {workdir}", flush=True)
    settings = {**SETTINGS[mode], "platform_latency_ms": args.platform_latency}
    results = {
        "command": command,
        "mode": mode,
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "workdir": str(workdir),
        "settings": {**settings, "workers": args.workers, "threads": args.threads,
                     "connections": args.connections, "pinning": pinning, "wrk": wrk},
        "machine": env.machine(workdir),
        "code": env.code_version(),
    }
    phases = set(args.only.split(",") if args.only else PHASES)
    unknown = phases - set(PHASES)
    if unknown:
        raise SystemExit(f"bench: unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")
    results["phases"] = [phase for phase in PHASES if phase in phases]
    procs = contenders.Processes(workdir, pinning)
    bench = Bench(results, procs, measure.Driver(workdir, sys.executable, wrk, pinning, args.connections),
                  workdir, settings, args.workers, args.threads)
    started = time.monotonic()
    try:
        bench.start_platforms()
        if "ingest" in phases:
            bench.ingest()
        if "dispatch" in phases:
            bench.dispatch_drain()
        if "backlog" in phases:
            bench.backlog()
        if "replay" in phases:
            bench.replay()
        if "postgres" in phases:
            bench.postgres()
        results["receiver_stats"] = bench.receiver.stats()
    finally:
        procs.stop_all()
        results["elapsed_s"] = time.monotonic() - started
        results["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        (workdir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if not args.keep_data:
        for path in workdir.rglob("*"):
            if path.is_file() and (".sqlite3" in path.name or path.name.startswith("pool-")):
                path.unlink()
    out = Path(args.out) if args.out else (workdir / "RESULTS.md" if args.quick else BENCH / "RESULTS.md")
    out.write_text(report.render(results))
    print(f"bench: done in {results['elapsed_s'] / 60:.1f} min; report {out}; raw results {workdir / 'results.json'}")


if __name__ == "__main__":
    main()
