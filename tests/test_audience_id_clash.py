"""A platform that answers a new audience with an id another audience already has (a platform
that forgot its audiences, as a restarted test platform does) is named in one warning: both
audiences' users would otherwise reach one platform audience without a word."""
import logging

import pytest

from diy.service import Service
from diy_wsgi import make_app
from outbox.store import ReceivedMutation
from tests.support import DMP_SECRET, call, make_config

CLASH = "audience id clash"


def clash_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and CLASH in r.getMessage()]


@pytest.fixture
def app_on(tmp_path, database_location):
    """app_on(receiver): the app on each backend, answering CREATE_AUDIENCE with the platform's id."""
    apps = []

    def build(receiver):
        app = make_app(make_config(tmp_path, receiver.url, diy={"database": database_location},
                                   integration={"return_target_id": "yes"}))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.stop()


def answers_with(receiver, target_id, times=1):
    """The platform answers the next `times` creations with `target_id`, whichever audience
    they are for (a scripted answer of the sandbox: the forgetful platform)."""
    receiver.sandboxed.fail_next(200, times, body={"id": target_id}, creates=True)


def create(app, dmp_id):
    body = {"Type": "CREATE_AUDIENCE", "Name": f"Audience {dmp_id}", "Customer": 123, "Audience": dmp_id}
    return call(app, query="type=CREATE_AUDIENCE", body=body)


def test_a_create_answered_with_a_known_audiences_id_is_logged_naming_both(receiver_for, app_on, caplog):
    receiver = receiver_for()
    answers_with(receiver, "rcv-1", times=3)
    app = app_on(receiver)
    caplog.set_level(logging.INFO)
    assert create(app, "dmp-1").json() == {"id": "rcv-1"}
    assert create(app, "dmp-1").json() == {"id": "rcv-1"}, "a repeated CREATE is no clash"
    assert clash_lines(caplog) == []

    create(app, "dmp-2")

    (line,) = clash_lines(caplog)
    assert "integration=demo audience=dmp-2 known_audience=dmp-1 target_id=rcv-1" in line
    assert DMP_SECRET.decode() not in caplog.text


def test_a_creation_by_the_dispatcher_answered_with_a_known_id_is_logged(receiver_for, tmp_path, clock,
                                                                          database_location, caplog):
    receiver = receiver_for()
    answers_with(receiver, "rcv-1", times=2)
    service = Service(make_config(tmp_path, receiver.url, diy={"database": database_location}), clock=clock)
    caplog.set_level(logging.INFO)
    try:
        for dmp_id in ("dmp-1", "dmp-2"):
            service.outbox.enqueue("demo", "add", [ReceivedMutation(dmp_id, "u1")], pass_through=False, now=clock())
            service.dispatcher.run_once()
    finally:
        service.close()

    (line,) = clash_lines(caplog)
    assert "integration=demo audience=dmp-2 known_audience=dmp-1 target_id=rcv-1" in line


def test_audiences_with_their_own_platform_ids_are_no_clash(receiver_for, app_on, caplog):
    receiver = receiver_for()
    answers_with(receiver, "rcv-1")
    answers_with(receiver, "rcv-2")
    app = app_on(receiver)
    caplog.set_level(logging.INFO)
    create(app, "dmp-1")

    assert create(app, "dmp-2").json() == {"id": "rcv-2"}
    assert clash_lines(caplog) == []
