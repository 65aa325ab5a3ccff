"""diy_wsgi:app under gunicorn with two workers and the project's gunicorn.conf.py."""
import http.client
import subprocess

import pytest

from tests.processes import ROOT, Spawned, dmp_post, environment, free_port, python, wait_until, write_config
from tests.support import mutation, parse_metrics

pytest.importorskip("gunicorn")

GUNICORN = python("-m", "gunicorn", "-c", "gunicorn.conf.py", "diy_wsgi:app")


def test_two_gunicorn_workers_store_and_deliver(receiver_for, tmp_path):
    receiver = receiver_for()
    config = write_config(tmp_path, receiver.url)
    port = free_port()
    gunicorn = Spawned(tmp_path, GUNICORN, "gunicorn", env={
        "DIY_CONFIG": str(config), "DIY_BIND": f"127.0.0.1:{port}", "DIY_WORKERS": "2"})
    try:
        wait_until(lambda: gunicorn.output().count("dispatcher started") == 2, what="two workers booted")
        for i in range(20):
            status, _ = dmp_post(port, "ADD_TO_AUDIENCE", {"Mutations": [mutation("aud", f"u{i}")]})
            assert status == 200

        wait_until(lambda: receiver.members.get("aud") == {f"u{i}" for i in range(20)}, what="delivery")
        wait_until(lambda: acknowledged_adds(port) == 20, what="both workers' counts in /metrics")
        assert all(acknowledged_adds(port) == 20 for _ in range(10)), "every worker shows the whole service"
    finally:
        code = gunicorn.stop(30)
    output = gunicorn.output()
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
    config = None if sections is None else str(write_config(tmp_path, "http://127.0.0.1:9/events", **sections))
    env = environment({"DIY_BIND": f"127.0.0.1:{free_port()}", "DIY_CONFIG": config})

    result = subprocess.run(GUNICORN, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    ours = [line for line in result.stderr.splitlines() if "diy-wsgi:" in line]
    assert result.returncode != 0
    assert len(ours) == 1 and message in ours[0], result.stderr
    assert "Traceback" not in result.stderr and "Booting worker" not in result.stderr, result.stderr
