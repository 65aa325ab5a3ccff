"""diy_wsgi:app under gunicorn with two workers and the project's gunicorn.conf.py."""
import http.client
import os
import signal
import subprocess
import sys

import pytest

from tests.processes import ROOT, dmp_post, free_port, wait_until, write_config
from tests.support import mutation, parse_metrics

pytest.importorskip("gunicorn")


def test_two_gunicorn_workers_store_and_deliver(receiver_for, tmp_path):
    receiver = receiver_for()
    config = write_config(tmp_path, receiver.url)
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "diy_wsgi:app"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "DIY_CONFIG": str(config), "DIY_BIND": f"127.0.0.1:{port}",
                 "DIY_WORKERS": "2"},
        )
    try:
        wait_until(lambda: log_path.read_text().count("dispatcher started") == 2, what="two workers booted")
        for i in range(20):
            status, _ = dmp_post(port, "ADD_TO_AUDIENCE", {"Mutations": [mutation("aud", f"u{i}")]})
            assert status == 200

        wait_until(lambda: receiver.members.get("aud") == {f"u{i}" for i in range(20)}, what="delivery")
        wait_until(lambda: acknowledged_adds(port) == 20, what="both workers' counts in /metrics")
        assert all(acknowledged_adds(port) == 20 for _ in range(10)), "every worker shows the whole service"
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        code = gunicorn.wait(30)
    output = log_path.read_text()
    assert code == 0, output
    assert output.count("dispatcher stopped") == 2, output
    assert "Traceback" not in output, output


def scrape(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        return parse_metrics(response.read().decode()), response.getheader("X-Request-Id")
    finally:
        connection.close()


def acknowledged_adds(port):
    samples, _ = scrape(port)
    return sum(value for (name, labels), value in samples.items()
               if name == "diy_requests_total" and ("type", "ADD_TO_AUDIENCE") in labels and ("status", "200") in labels)


BAD_CONFIGURATIONS = {
    "unknown key": ({"diy": {"bogus": "1"}}, "[diy] bogus: unknown key"),
    "target setting unknown": ({"integration": {"target.urll": "x"}}, "[integration:demo] target.urll: unknown setting"),
    "DIY_CONFIG unset": (None, "set DIY_CONFIG to the path of the diy-wsgi configuration file"),
}


@pytest.mark.parametrize("sections, message", BAD_CONFIGURATIONS.values(), ids=BAD_CONFIGURATIONS.keys())
def test_a_bad_configuration_under_gunicorn_is_one_line_before_any_worker_starts(tmp_path, sections, message):
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "DIY_BIND": f"127.0.0.1:{free_port()}"}
    environment.pop("DIY_CONFIG", None)
    if sections is not None:
        environment["DIY_CONFIG"] = str(write_config(tmp_path, "http://127.0.0.1:9/events", **sections))

    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "diy_wsgi:app"], cwd=ROOT,
                            env=environment, capture_output=True, text=True, timeout=60)

    ours = [line for line in result.stderr.splitlines() if "diy-wsgi:" in line]
    assert result.returncode != 0
    assert len(ours) == 1 and message in ours[0], result.stderr
    assert "Traceback" not in result.stderr and "Booting worker" not in result.stderr, result.stderr
