"""diy-wsgi delivering to its own sandbox: `diy-wsgi sandbox` and `diy-wsgi serve` as real
processes, one pair per target, the serve configured with the sandbox's default credentials and
talked to over HTTP as the DMP does (VALIDATE, CREATE_AUDIENCE, ADD, REMOVE)."""
import http.client
import json
import signal
import sqlite3

import pytest

from diy.sandbox import (
    DEFAULT_CRITEO_CLIENT_ID,
    DEFAULT_CRITEO_CLIENT_SECRET,
    DEFAULT_TTD_TOKEN,
    DEFAULT_WEBHOOK_SECRET,
)
from tests.processes import Diy, dmp_post, free_port, wait_for_port, wait_until
from tests.support import DMP_SECRET, mutation

DMP_ID = "a5940e473cea659.356693871497425011"
CUSTOMER = 123  # what tests.support.mutation puts in every mutation
USERS = [f"df2df528-e032-4851-b7c6-{n:012d}" for n in range(1, 5)]  # TTD takes only UUID TDIDs
REMOVED = USERS[1]


def webhook_settings(base_url):
    return {"target": "webhook", "target.url": f"{base_url}/webhook", "target.secret": DEFAULT_WEBHOOK_SECRET}


def ttd_settings(base_url):
    return {"target": "thetradedesk", "target.base_url": base_url, "target.advertiser_id": "adv1",
            "target.token": DEFAULT_TTD_TOKEN}


def criteo_settings(base_url):
    return {"target": "criteo", "target.base_url": base_url, "target.client_id": DEFAULT_CRITEO_CLIENT_ID,
            "target.client_secret": DEFAULT_CRITEO_CLIENT_SECRET, "target.advertiser_id": "12345",
            "target.gum_caller_id": "1"}


def webhook_members(audiences, audience_id):
    """The webhook side keeps audiences by DMP id; the id it handed out must be the one we got."""
    audience = audiences["webhook"].get(DMP_ID)
    return audience["members"] if audience and audience["id"] == audience_id else None


def segment_members(platform):
    def members(audiences, audience_id):
        segment = audiences[platform].get(audience_id)
        return segment["members"] if segment else None

    return members


PLATFORMS = [
    pytest.param(webhook_settings, webhook_members, id="webhook"),
    pytest.param(ttd_settings, segment_members("thetradedesk"), id="thetradedesk"),
    pytest.param(criteo_settings, segment_members("criteo"), id="criteo"),
]


def write_ini(tmp_path, target_settings):
    sections = {
        "diy": {"database": tmp_path / "outbox.sqlite3", "create_timeout": "5s"},
        "dispatcher": {"poll_interval": "0.1s", "backoff_base": "0.1s", "backoff_cap": "0.5s"},
        "integration:demo": {"path": "/dmp", "hmac_secrets": DMP_SECRET.decode(), "return_target_id": "yes",
                             **target_settings},
    }
    path = tmp_path / "diy.ini"
    path.write_text("".join(f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items()) + "\n"
                            for name, keys in sections.items()))
    return path


def sandbox_audiences(port):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/api/audiences")
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


def outbox_states(database):
    """{state: count} of the outbox's mutations, read from the serving process's database."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    try:
        return dict(connection.execute("SELECT state, COUNT(*) FROM mutations GROUP BY state").fetchall())
    finally:
        connection.close()


def stop(processes):
    """SIGTERM every process at once, then wait for each to exit; their exit codes."""
    for process in processes:
        if process.process.poll() is None:
            process.process.send_signal(signal.SIGTERM)
    codes = [process.process.wait(15) for process in processes]
    for process in processes:
        process.kill()  # closes its log; the group's leftovers, if any, go too
    return codes


@pytest.mark.parametrize("target_settings, members_at", PLATFORMS)
def test_the_dmps_requests_end_as_the_sandboxs_members(tmp_path, target_settings, members_at):
    sandbox_port, serve_port = free_port(), free_port()
    ini = write_ini(tmp_path, target_settings(f"http://127.0.0.1:{sandbox_port}"))
    sandbox = Diy(tmp_path, "sandbox", "--port", sandbox_port, name="sandbox")
    server = Diy(tmp_path, "serve", "--config", ini, "--port", serve_port, name="serve")
    processes = [sandbox, server]
    try:
        wait_for_port(sandbox_port, sandbox)
        wait_for_port(serve_port, server)

        assert dmp_post(serve_port, "VALIDATE", {"Type": "VALIDATE"}) == (200, {})
        status, created = dmp_post(serve_port, "CREATE_AUDIENCE", {
            "Type": "CREATE_AUDIENCE", "Name": "Summer buyers", "Customer": CUSTOMER, "Audience": DMP_ID})
        assert status == 200, server.output()
        audience_id = created["id"]
        added = dmp_post(serve_port, "ADD_TO_AUDIENCE", {
            "Type": "ADD_TO_AUDIENCE", "Mutations": [mutation(audience_id, user) for user in USERS]})
        removed = dmp_post(serve_port, "REMOVE_FROM_AUDIENCE", {
            "Type": "REMOVE_FROM_AUDIENCE", "Mutations": [mutation(audience_id, REMOVED)]})
        assert (added, removed) == ((200, {"accepted": len(USERS)}), (200, {"accepted": 1}))

        expected = sorted(set(USERS) - {REMOVED})
        wait_until(lambda: members_at(sandbox_audiences(sandbox_port), audience_id) == expected,
                   timeout=10, what="the sandbox to hold exactly the members left", processes=processes)
        wait_until(lambda: outbox_states(tmp_path / "outbox.sqlite3") == {"done": len(USERS) + 1},
                   timeout=10, what="every mutation settled as delivered", processes=processes)
    finally:
        codes = stop(processes)
    assert codes == [0, 0], server.output()
