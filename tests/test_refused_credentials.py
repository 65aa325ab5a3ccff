"""A platform refusing diy-wsgi's own credentials: the integration's work is held, never blamed on
the data or the marketer, said loudly once, shown in /readyz, /metrics and `diy-wsgi status`, and
resumed by itself once the platform accepts them again. The app runs with its dispatcher against
the sandbox's webhook (in process), whose secret is rotated and then put back."""
import json
import logging
import time

import pytest

from diy.cli import main as cli_main
from diy.config import load_config
from diy_wsgi import make_app
from tests.processes import wait_until, write_config
from tests.sandboxed import webhook_members, webhook_settings
from tests.support import WEBHOOK_SECRET, call, mutation, mutations_body, parse_metrics

ROTATED = "whsec_cm90YXRlZC1ieS10aGUtcmVjZWl2ZXItd2l0aG91dC11cw=="
"""The receiver's secret after it rotated it without telling us."""
REFUSED = ("diy_account_credentials_refused", (("integration", "demo"), ("account", "demo")))
LOOPBACK = {"REMOTE_ADDR": "127.0.0.1"}


@pytest.fixture
def receiver(sandboxed):
    return sandboxed(webhook_secret=ROTATED)


@pytest.fixture
def config_path(tmp_path, receiver):
    return write_config(tmp_path, webhook_settings(receiver)["url"],
                        integration={"return_target_id": "yes", "breaker_cooldown": "0.2s"})


@pytest.fixture
def app(config_path):
    application = make_app(load_config(config_path))
    yield application
    application.stop()


def metrics(app):
    return parse_metrics(call(app, "GET", path="/metrics", environ=LOOPBACK).body.decode())


def status(config_path, capsys):
    capsys.readouterr()
    assert cli_main(["status", "--config", str(config_path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def credential_lines(caplog):
    return [(r.levelname, r.getMessage().split(" account=")[0]) for r in caplog.records
            if r.name == "diy.dispatcher" and r.getMessage().startswith("credentials ")]


def test_create_audience_is_queued_not_refused_to_the_marketer(app, caplog):
    body = {"Type": "CREATE_AUDIENCE", "Name": "Buyers", "Customer": 123, "Audience": "dmp-1"}

    response = call(app, query="type=CREATE_AUDIENCE", body=body)

    assert (response.status, response.json()) == (200, {"id": "dmp-1"})
    assert app.outbox.audience("demo", "dmp-1").state == "creating"
    assert credential_lines(caplog) == [("ERROR", "credentials refused")]


def test_held_work_is_shown_then_delivered_by_itself_once_the_credentials_are_accepted(
        app, receiver, config_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    app.start()
    users = [f"u{n}" for n in range(3)]
    for user in users:
        body = mutations_body("ADD_TO_AUDIENCE", mutation("4711", user))
        assert call(app, query="type=ADD_TO_AUDIENCE", body=body).status == 200
    wait_until(lambda: metrics(app).get(REFUSED) == 1, what="the account to be held")
    time.sleep(1.0)  # /readyz reuses its last look for a second

    ready = call(app, "GET", path="/readyz")
    held = status(config_path, capsys)
    receiver.sandbox.webhook.secret = WEBHOOK_SECRET
    wait_until(lambda: webhook_members(receiver, "4711") == set(users), what="delivery after the fix")
    wait_until(lambda: metrics(app).get(REFUSED) == 0, what="the account to be released")
    time.sleep(1.0)
    ready_again = call(app, "GET", path="/readyz")

    assert ready.status == 200 and set(ready.json()["held"]) == {"demo"}, "stored, so still ready"
    assert "credentials" in ready.json()["held"]["demo"] and WEBHOOK_SECRET not in ready.body.decode()
    assert [(h["integration"], h["account"]) for h in held["held_accounts"]] == [("demo", "demo")]
    assert held["integrations"]["demo"]["dead"] == 0
    assert app.outbox.counts("demo") == {"pending": 0, "done": 3, "dead": 0}
    assert metrics(app)[("diy_deliveries_total", (("integration", "demo"), ("result", "unauthorized")))] >= 1
    assert ready_again.json() == {"status": "ready"}
    assert credential_lines(caplog) == [("ERROR", "credentials refused"), ("WARNING", "credentials accepted again")]
    assert WEBHOOK_SECRET not in caplog.text and ROTATED not in caplog.text
