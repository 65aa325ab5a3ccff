"""RESULTS.md from the results dict: the command, the machine, the targets, the findings, then
every table behind them. Every figure is computed from the run; no prose."""
import payloads
from phases import HEAVY_LOAD, SUSTAINABLE, TARGET_LOAD
from report_format import median_by_p99, ms, num, p99_list, table
from report_postgres import postgres_section

SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def at_load(entry, load):
    return next((run for run in entry.get("open_loop", []) if abs(run["load"] - load) < 1e-9
                 and "rate_of" not in run), None)


def runs_at(entry, load):
    """The contender's own runs at `load`: the first, then its repeats."""
    repeats = [run for run in entry.get("target_repeats", []) if abs(run["load"] - load) < 1e-9]
    return [run for run in [at_load(entry, load)] + repeats if run]


def saturation(ingest, key):
    entry = ingest.get(key)
    return entry["saturation"]["requests_per_s"] if entry and entry.get("saturation") else None


def sustainable(ingest, key):
    entry = ingest.get(key)
    return entry["sustainable"]["rate"] if entry and entry.get("sustainable") else None


def sustained_step(entry):
    """The passing step at the sustainable rate, or None."""
    found = entry.get("sustainable") or {}
    return next((step for step in found.get("steps", []) if step["verdict"] == "ok"
                 and step["rate"] == found.get("rate")), None)


def cpu_ms(run):
    """Server CPU ms per request: the server processes' core seconds (/proc) over the requests."""
    rate = run.get("requests_per_s") or run.get("rate")
    return run["cpu"]["server_cores"] / rate * 1000 if rate else None


def verdict(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def ratio_row(name, top, bottom, goal, detail=""):
    if not (top and bottom):
        return [name, "not measured", f">= {goal}", "n/a"]
    return [name, f"{top / bottom:.2f}x ({top:,.0f} / {bottom:,.0f}){detail}", f">= {goal}x",
            verdict(top / bottom >= goal)]


def targets(results):
    ingest = results.get("ingest", {})
    rows = []
    standalone = saturation(ingest, "diy_standalone")
    ingest_rate = saturation(ingest, "diy_ingest")
    rows.append(ratio_row("1. delivery nearly free: whole service / request path alone, requests/s at saturation",
                          saturation(ingest, "diy"), ingest_rate, 0.7,
                          f"; standalone dispatcher {standalone / ingest_rate:.2f}x" if standalone and ingest_rate
                          else ""))
    rows.append(ratio_row("2. group commit pays: request path alone / durable minimum, requests/s at saturation",
                          ingest_rate, saturation(ingest, "floor"), 1.5))
    diy = ingest.get("diy", {})
    heavy = runs_at(diy, HEAVY_LOAD)
    most = median_by_p99(heavy)
    if most:
        p99, late = most["latency_ms"]["p99"], most.get("delivery_ms", {}).get("p99")
        rows.append(["3. saturation usable: at 75% of diy-wsgi's saturation, request p99 / delivery p99 (median run)",
                     f"{ms(p99)} / {ms(late)} ms at {most['rate']:,.0f}/s (request p99 of the runs: {p99_list(heavy)} ms)",
                     "<= 50 / < 100 ms",
                     verdict(p99 <= 50 and late is not None and late < 100)])
    else:
        rows.append(["3. saturation usable", "not measured", "<= 50 / < 100 ms", "n/a"])
    standalone = sustainable(ingest, "diy_standalone")
    huey = sustainable(ingest, "flask_huey")
    rows.append(ratio_row("4. sustainable rate: diy-wsgi / Flask + huey, requests/s", sustainable(ingest, "diy"), huey,
                          2, f"; standalone dispatcher {standalone / huey:.2f}x" if standalone and huey else ""))
    half, control = median_by_p99(runs_at(diy, TARGET_LOAD)), median_by_p99(ingest.get("floor", {}).get("open_loop", []))
    if half and control:
        share = half["latency_ms"]["p99"] / control["latency_ms"]["p99"]
        rows.append(["5a. request p99 at 50% / the durable minimum's at the same rate (medians of runs)",
                     f"{share:.2f}x ({p99_list(runs_at(diy, TARGET_LOAD))} vs {p99_list(ingest['floor']['open_loop'])} ms)",
                     "<= 1.25x", verdict(share <= 1.25)])
    if heavy:
        over, count = sum(run["over_1s"] for run in heavy), sum(run["count"] for run in heavy)
        rows.append(["5b. requests over 1 s at 75% (every run)", f"{over} of {count} (max "
                     f"{ms(max(run['latency_ms']['max'] for run in heavy))} ms)", "0", verdict(over == 0)])
    if half and half.get("delivery_ms", {}).get("p50") is not None:
        p50 = half["delivery_ms"]["p50"]
        rows.append(["5c. delivery p50 at 50%", f"{ms(p50)} ms", "< 50 ms", verdict(p50 < 50)])
    sizes = results.get("backlog")
    if sizes:
        small, large = sizes[0], sizes[-1]
        share = large["claim_ms"]["p50"] / small["claim_ms"]["p50"]
        rows.append([f"5d. claim p50 at {large['pending']:,} pending / at {small['pending']:,}",
                     f"{share:.2f}x ({large['claim_ms']['p50']:.2f} vs {small['claim_ms']['p50']:.2f} ms)", "<= 2x",
                     verdict(share <= 2)])
    if ingest:
        missing = [entry["label"] for entry in ingest.values() if not entry.get("rss_mib")]
        rows.append(["5e. RSS per process reported", "missing for " + ", ".join(missing) if missing else "yes "
                     "(Memory below)", "every process", verdict(not missing)])
    return table(["target", "measured", "target", "verdict"], rows)


def findings(results):
    ingest = results.get("ingest", {})
    lines = []
    costs = {entry["label"]: cpu_ms(entry["saturation"]) for entry in ingest.values() if entry.get("saturation")}
    if costs:
        lines.append("Server CPU ms per request at saturation: " + "; ".join(f"{label} {ms(cost, 2)}"
                                                                            for label, cost in costs.items()) + ".")
    alone = cpu_ms(ingest["diy_ingest"]["saturation"]) if "diy_ingest" in ingest else None
    extra = [f"{ingest[key]['label']} {cpu_ms(ingest[key]['saturation']) - alone:.2f} ms"
             for key in ("diy", "diy_standalone") if key in ingest and alone]
    if extra:
        lines.append(f"Delivering a request's {payloads.MUTATIONS} mutations, server CPU beyond the request path "
                     "alone: " + "; ".join(extra) + ".")
    rates = {key: (saturation(ingest, key), sustainable(ingest, key)) for key in ("diy", "diy_standalone")}
    if all(sat for sat, _ in rates.values()) and len(rates) == 2 and rates["diy"][1]:
        (sat_e, sus_e), (sat_s, sus_s) = rates["diy"], rates["diy_standalone"]
        lines.append(f"Standalone dispatcher / embedded: {sat_s / sat_e:.2f}x at saturation, {sus_s / sus_e:.2f}x "
                     "sustainable.")
    at_sustainable = [f"{ingest[key]['label']} {ms(step.get('delivery_p50_ms'))} / {ms(step['delivery_p99_ms'])} ms at "
                      f"{step['rate']:,.0f}/s" for key in ("diy", "diy_standalone")
                      for step in [sustained_step(ingest.get(key, {}))] if step]
    if at_sustainable:
        lines.append("Delivery p50 / p99 at the sustainable rate: " + "; ".join(at_sustainable) + ".")
    bound = [f"{entry['label']} ({ms(step['send_lag_p99_ms'], 0)} ms at {step['rate']:,.0f}/s)"
             for entry in ingest.values() for step in (entry.get("sustainable") or {}).get("steps", [])
             if step["verdict"] != "ok" and (step["send_lag_p99_ms"] or 0) > 100]
    if bound:
        lines.append("The load generator fell behind (late p99) in failed steps of: " + "; ".join(bound)
                     + ": those limits are partly the generator's.")
    kept = [f"{ingest[key]['label']} {k['delivered_per_s']:,.0f} / {k['ingested_per_s']:,.0f}"
            for key in ("diy", "diy_standalone", "flask_huey")
            for k in [ingest.get(key, {}).get("saturation", {}).get("keeping_up")] if k]
    if kept:
        lines.append("Mutations/s delivered / taken in at saturation: " + "; ".join(kept) + ".")
    d = results.get("dispatch")
    if d:
        lines.append(f"`diy-wsgi dispatch` alone drains {d['overall_per_s']:,.0f} mutations/s "
                     f"({d['cpu']['server_cores']:.2f} cores).")
    return "\n".join(f"- {line}" for line in lines) if lines else "- None: no ingest phase in this run."


def machine_lines(results):
    m, s = results["machine"], results["settings"]
    tools = ", ".join(f"{name} {version}" for name, version in m["versions"].items())
    pin = s.get("pinning")
    probes = [r["cpu_probe_ms"] for e in results.get("ingest", {}).values() for r in e.get("rounds", [])
              if r.get("cpu_probe_ms")]
    foreign = foreign_cores(results)
    return [
        f"- {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB; Linux {m['kernel']}; Python {m['python']}; "
        f"SQLite {m['sqlite']}",
        f"- disk {m['disk']}: fsync of an appended block (`diy-wsgi disk`'s probe) p50 {m['fsync_ms']['p50']:.2f} ms, p99 {m['fsync_ms']['p99']:.2f} ms",
        f"- bench tools (their own venv): {tools}",
        f"- pinning: servers on CPU {pin['server']}, load side on CPU {pin['client']}" if pin else "- no pinning",
        f"- every contender: gunicorn, {s['workers']} workers x {s['threads']} gthread threads; wrk "
        f"-c{s['connections']}; Flask + huey's consumer: see Contenders",
        f"- the platform (`diy-wsgi sandbox --counting`) answers each call in {s.get('platform_latency_ms', 0):g} ms "
        "(our assumption: no platform publishes its latency); delivery latency is counted to the call's arrival",
        f"- measured: {results['code']['head']}" + (" (runtime files modified)" if results["code"]["runtime_modified"]
                                                     else ""),
        f"- disturbance: other programs used {foreign[0]:.2f} cores on average in the measured windows (max "
        f"{foreign[1]:.2f}); CPU probe {min(probes):.1f}-{max(probes):.1f} ms (a fixed piece of Python on the server "
        "core before each run)" if foreign and probes else "- disturbance: not measured",
    ]


def foreign_cores(results):
    values = [run["cpu"]["foreign_cores"] for entry in results.get("ingest", {}).values()
              for run in entry.get("rounds", []) + entry.get("open_loop", [])]
    values += [step["foreign_cores"] for entry in results.get("ingest", {}).values()
               for step in entry.get("sustainable", {}).get("steps", [])]
    return (sum(values) / len(values), max(values)) if values else None


def contenders_table(results):
    ingest = results["ingest"]
    rows = [[entry["label"], entry["description"]] for entry in ingest.values()]
    sync = results.get("huey_synchronous")
    note = (f"SqliteHuey's connection runs with `PRAGMA synchronous` = {SYNCHRONOUS.get(sync, sync)}; its consumer "
            "deletes a task when it dequeues it.")
    return table(["contender", "what runs"], rows) + "\n\n" + note


def saturation_table(results):
    ingest = results["ingest"]
    hello = saturation(ingest, "hello")
    rows = []
    for entry in ingest.values():
        sat = entry["saturation"]
        rate = sat["requests_per_s"]
        rows.append([entry["label"], num(rate), f"{rate / hello:.1%}" if hello else "", f"{sat['cpu']['server_cores']:.2f}",
                     ms(cpu_ms(sat), 2), ms(sat["latency_ms"].get("p99")), sum(r["non_2xx"] for r in entry["rounds"]),
                     " / ".join(num(r["requests_per_s"]) for r in sat["rounds"]),
                     " / ".join(f"{r['foreign_cores']:.2f}" for r in sat["rounds"]),
                     " / ".join(ms(r["cpu_probe_ms"]) for r in sat["rounds"])])
    s = results["settings"]
    return (f"wrk -t1 -c{s['connections']} -d{s['saturation']}s, closed loop, {s['rounds']} round(s) taking turns; the "
            "median round.\n\n" + table(["contender", "requests/s", "of hello world", "server cores", "CPU ms/request",
                                         "p99 ms (closed loop)", "non-2xx", "rounds: requests/s",
                                         "rounds: foreign cores", "rounds: CPU probe ms"], rows))


def open_loop_table(results):
    rows = []
    for entry in results["ingest"].values():
        runs = [(f"diy-wsgi's {run['load']:.0%}" if run.get("rate_of") else f"{run['load']:.0%}", run)
                for run in entry.get("open_loop", [])]
        runs += [(f"{run['load']:.0%} again", run) for run in entry.get("target_repeats", [])]
        for load, run in runs:
            latency, delivery = run["latency_ms"], run.get("delivery_ms", {})
            rows.append([entry["label"], load, num(run["rate"]), ms(latency["p50"]), ms(latency["p99"]),
                         ms(latency["max"]), run["over_1s"], run["count"] - run["statuses"].get("200", 0),
                         ms(delivery.get("p50")), ms(delivery.get("p99")), delivery.get("undelivered", ""),
                         ms(run["send_lag_ms"].get("p99")), f"{run['cpu']['server_cores']:.2f}",
                         f"{run['cpu']['foreign_cores']:.2f}"])
    return (f"`bench/loadgen.py`, {results['settings']['open']} s per run; latency from each request's intended send "
            "time (coordinated omission corrected); delivery from the 200 to the receiver's receipt.\n\n"
            + table(["contender", "load", "offered/s", "p50 ms", "p99 ms", "max ms", "> 1 s", "not 200",
                     "delivery p50 ms", "delivery p99 ms", "undelivered", "generator late p99 ms", "server cores",
                     "foreign cores"], rows))


def sustainable_tables(results):
    s = results["settings"]
    summary, steps = [], []
    for entry in results["ingest"].values():
        found = entry.get("sustainable")
        if not found:
            continue
        sat = entry["saturation"]["requests_per_s"]
        summary.append([entry["label"], f"**{num(found['rate'])}**", f"{found['rate'] / sat:.0%}" if sat else "",
                        " -> ".join(f"{step['rate']:,.0f}{'' if step['verdict'] == 'ok' else 'x'}"
                                    for step in found["steps"])])
        for number, step in enumerate(found["steps"], 1):
            steps.append([entry["label"], number, num(step["rate"]), ms(step["request_p99_ms"]),
                          ms(step["delivery_p99_ms"]) if step["delivery_p99_ms"] is not None else "",
                          step["not_200"], ms(step["send_lag_p99_ms"]), f"{step['server_cores']:.2f}",
                          f"{step['foreign_cores']:.2f}",
                          step["verdict"] + ("; run again" if "again" in step else "")])
    return "\n".join([
        f"The highest open-loop rate with request p99 < {SUSTAINABLE['request_p99_ms']:.0f} ms, delivery p99 < "
        f"{SUSTAINABLE['delivery_p99_ms']:.0f} ms (200s not delivered within {s['delivery_window']} s after the run "
        f"count as later) and only 200s: {s['steps']} steps of {s['step']} s, each after the previous one's backlog "
        "drained, from 70% of saturation up by 25% until one fails, then bisecting; the contenders take turns step by "
        "step. x marks a step that failed; a rate that fails is run once more, and that second run decides (one stall "
        "of the machine must not end a search).", "",
        table(["contender", "sustainable requests/s", "of saturation", "steps"], summary), "",
        table(["contender", "step", "offered/s", "request p99 ms", "delivery p99 ms", "not 200",
               "generator late p99 ms", "server cores", "foreign cores", "verdict"], steps)])


def keeping_up_table(results):
    rows = []
    for key in ("diy", "diy_standalone", "flask_huey"):
        entry = results["ingest"].get(key)
        for number, run in enumerate(entry.get("rounds", []) if entry else [], 1):
            k = run.get("keeping_up")
            if k:
                rows.append([entry["label"], number, num(k["ingested_per_s"]), num(k["delivered_per_s"]),
                             f"{k['backlog_slope_per_s']:+,.0f}", num(k["backlog_max"]), ms(run.get("drain_s"))])
    return table(["contender", "round", "mutations/s taken in", "delivered/s (receiver)", "backlog growth /s",
                  "backlog max", "drained after in s"], rows)


def dispatch_section(results):
    parts = ["## Delivery at saturation and dispatch drain", ""]
    if results.get("ingest"):
        parts += ["While wrk saturated each delivering contender (slopes over the round less its first 2 s):", "",
                  keeping_up_table(results), ""]
    d = results.get("dispatch")
    if d:
        parts += [f"One `diy-wsgi dispatch` alone on the server core, draining {d['mutations']:,} mutations stored "
                  "through `Outbox.enqueue_members`:", "",
                  table(["drained", "seconds", "mutations/s overall", "mutations/s steady (10-90%)",
                         "members received", "server cores", "peak RSS MiB"],
                        [["yes" if d["drained"] else "no", f"{d['seconds']:.1f}", num(d["overall_per_s"]),
                          num(d["steady_per_s"]), f"{d['members_received']:,}", f"{d['cpu']['server_cores']:.2f}",
                          ms(d["rss_mib"])]]), ""]
    return "\n".join(parts)


def log_events_table(results):
    rows = []
    for entry in results.get("ingest", {}).values():
        for name, events in entry.get("log_events", {}).items():
            seen = [f"{label}: {count}" for label, count in events.items() if count]
            rows.append([entry["label"], name, ", ".join(seen) or "none"])
    for entry in results.get("postgres", {}).get("contenders", {}).values():
        for name, events in entry.get("log_events", {}).items():
            rows.append([entry.get("label", "postgres phase"), name,
                         ", ".join(f"{label}: {count}" for label, count in events.items() if count) or "none"])
    if results.get("dispatch"):
        seen = [f"{label}: {count}" for label, count in results["dispatch"]["log_events"].items() if count]
        rows.append(["dispatch drain", "diy-wsgi dispatch", ", ".join(seen) or "none"])
    return table(["contender", "process log", "events counted"], rows)


def backlog_section(results):
    b = results.get("backlog")
    if not b:
        return ""
    rows = [[f"{s['pending']:,}", num(s["file_mib"]), f"{s['build_s']:.1f}", f"{s['claim_ms']['p50']:.2f}",
             f"{s['claim_ms']['p99']:.2f}", f"{s['settle_ms']['p50']:.2f}", f"{s['settle_ms']['p99']:.2f}",
             num(s["mutations_per_claim"])] for s in b]
    return "\n".join(["## Backlog scale: claim and settle", "",
                      f"`bench/backlog.py`: {b[0]['rounds']} rounds of `Outbox.claim` + `Outbox.settle` per size.", "",
                      table(["pending mutations", "file MiB", "build s", "claim p50 ms", "claim p99 ms",
                             "settle p50 ms", "settle p99 ms", "mutations per claim"], rows), ""])


def replay_section(results):
    r = results.get("replay")
    if not r:
        return ""
    return "\n".join(["## Dead-letter replay", "",
                      table(["dead letters", "later mutations", "replayed", "superseded", "replay s",
                             "longest later chunk ms"],
                            [[f"{r['dead_letters']:,}", f"{r['later_mutations']:,}", f"{r['replayed']:,}",
                              f"{r['superseded']:,}", f"{r['replay_s']:.1f}", num(r["longest_later_chunk_ms"])]]), ""])


def memory_section(results):
    rows = [[entry["label"], name, ms(value)] for entry in results.get("ingest", {}).values()
            for name, value in entry.get("rss_mib", {}).items()]
    if results.get("dispatch"):
        rows.append(["dispatch drain", "diy-wsgi dispatch", ms(results["dispatch"]["rss_mib"])])
    return "\n".join(["## Memory: peak RSS (VmHWM) per process, MiB", "", table(["contender", "process", "MiB"], rows),
                      ""]) if rows else ""


def render(results):
    s = results["settings"]
    head = [
        "# diy-wsgi benchmarks", "",
        "Reproduce: `python3 bench/run.py` (as root, from the repository root; about 25 minutes).", "",
        f"This report: `{results['command']}`, a {results['mode']} run, {results['started']} to {results['finished']} "
        f"({results['elapsed_s'] / 60:.1f} min), raw results in `{results['workdir']}`.",
    ]
    if results["mode"] == "quick":
        head += ["", f"**A quick smoke run ({s['saturation']} s saturation, {s['rounds']} round, {s['steps']} steps of "
                     f"{s['step']} s): its numbers check that the bench works, not how fast anything is.**"]
    parts = head + ["", "## Machine", "", *machine_lines(results), ""]
    ingest = results.get("ingest")
    parts += ["## Targets", "", targets(results), "", "## Findings", "", findings(results), ""]
    if ingest:
        parts += ["## Contenders", "", contenders_table(results), "", "## Saturation", "", saturation_table(results), "",
                  "## Sustainable rate", "", sustainable_tables(results), "",
                  "## Open-loop latency at fixed loads", "", open_loop_table(results), ""]
    parts += [dispatch_section(results), backlog_section(results), replay_section(results),
              postgres_section(results), memory_section(results)]
    if ingest or results.get("dispatch") or results.get("postgres"):
        parts += ["## What the processes logged", "", log_events_table(results), ""]
    return "\n".join(part for part in parts if part is not None).rstrip() + "\n"

