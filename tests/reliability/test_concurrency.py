"""Concurrency: several gunicorn workers and a separate dispatcher on one outbox file, under load.

Three gunicorn workers (each with its embedded dispatcher) and one `diy-wsgi dispatch`, four
dispatchers in all, compete for the audiences of one SQLite file while a load generator sends
signed requests. With a lease far longer than any call (5 min) and no kills:

- no mutation reaches the platform twice (same webhook-id, or same mutation uuid, twice);
- the DMP never sees a 503: `write_timeout` (3 s, the default) is never exhausted;
- each audience's members arrive in the order the DMP sent them, and nothing is lost.

The rated load: 100 requests a second of 1 to 20 mutations (about 1,000 mutations a second)
from 4 concurrent senders over 12 audiences, on the 2-core machine that also runs the senders
and the platform. The long form adds a run flat out with 12 senders (as fast as they go).
"""
import pytest

from reliability import pick
from reliability.checker import check_files, expected_members, load_requests
from reliability.harness import (
    Diy,
    Gunicorn,
    LoadGenerator,
    free_port,
    outbox_counts,
    wait_for_port,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.reliability
pytest.importorskip("gunicorn")

LOADS = {
    "rated": {"rate": 100, "threads": 4, "duration": pick(8, 90)},
    "flat-out": {"rate": 0, "threads": 12, "duration": pick(5, 60)},
}


@pytest.mark.parametrize("load_name", [
    "rated",
    pytest.param("flat-out", marks=pytest.mark.slow),
])
def test_workers_and_a_dispatcher_on_one_file_deliver_once_in_order_without_503(
        load_name, tmp_path, processes, receiver, figures):
    config = write_config(tmp_path, receiver.url, dispatcher={"lease": "5m"})
    port = free_port()
    gunicorn = Gunicorn(tmp_path, config, port, workers=3)
    dispatcher = Diy(tmp_path, "dispatch", "--config", config)
    processes.extend([gunicorn, dispatcher])
    wait_for_port(port, gunicorn)
    options = LOADS[load_name]
    load = LoadGenerator(tmp_path, port, audiences=12, users=50, max_mutations=20, prefix=load_name, **options)
    processes.append(load)
    load.process.wait(options["duration"] + 120)
    summary = load.summary()
    database = tmp_path / "outbox.sqlite3"
    wait_until(lambda: outbox_counts(database)["pending"] == 0, timeout=120, what="the outbox to drain",
               processes=[gunicorn, dispatcher])
    wait_until(lambda: check_files(load.journal, receiver.journal).lost == 0, timeout=30,
               what="every acknowledged mutation to arrive", processes=[gunicorn, dispatcher])
    report = check_files(load.journal, receiver.journal)

    figures.add(requests_sent=summary["requests"], acknowledged=summary["acknowledged"],
                mutations_acknowledged=summary["mutations_acknowledged"], answered_503=summary["unavailable_503"],
                mutations_lost=report.lost, duplicate_events=report.duplicate_events,
                duplicate_mutations=report.duplicate_mutations, order_violations=report.order_violations,
                platform_calls=report.calls)
    figures.most(dispatchers=4, **{f"{load_name.replace('-', '_')}_requests_per_s": summary["rate"]})
    assert summary["statuses"] == {"200": summary["requests"]}, summary
    assert report.ok, report.explain()
    assert report.duplicate_events == 0 and report.duplicate_mutations == 0, report.explain()
    assert outbox_counts(database) == {"pending": 0, "done": summary["mutations_acknowledged"], "dead": 0}
    expected = expected_members(load_requests(load.journal))
    state = receiver.state()
    assert state["bad_requests"] == 0, "every event was signed and strict JSON"
    members = state["members"]
    assert {a: set(u) for a, u in members.items() if u} == {a: u for a, u in expected.items() if u}
    assert "database is locked" not in gunicorn.output() + dispatcher.output()
