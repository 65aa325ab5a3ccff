"""What only the PostgreSQL backend has to show, on a real server (reliability/postgres.py): order per
audience while ids are handed out before commit, row locks, a server that restarts or turns
read-only, secrets kept out of messages. The behaviour both backends share is tested once for
each in test_outbox.py, test_dispatcher.py and the contract suite."""
import subprocess
import sys
import threading
import time

import pytest

from outbox.admin import Admin, DeadFilter
from outbox.errors import StoreError, StoreUnavailable
from outbox.postgres import PostgresDatabase, without_password
from outbox.store import Outbox, ReceivedMutation
from diy.service import Service
from diy_wsgi import make_app
from tests.support import call, make_config, mutation, mutations_body

SIZES = {"demo": 1000}


@pytest.fixture
def url(postgres_server):
    return postgres_server.create_database()


@pytest.fixture
def pg(url):
    database = PostgresDatabase(url, write_timeout=0.5)
    yield database
    database.close()


@pytest.fixture
def pg_outbox(pg):
    return Outbox(pg, retention=3600)


def add(outbox, audience, *users, now=1000.0):
    outbox.enqueue("demo", "add", [ReceivedMutation(audience, user) for user in users], pass_through=True, now=now)


def test_concurrent_writers_and_claims_deliver_each_audience_in_commit_order(url):
    """PostgreSQL hands out batch ids before commit: a claim must never take batch 12 while 11 of
    the same audience is still being written, or 11 would be delivered after it."""
    writers, requests = 4, 60
    databases = [PostgresDatabase(url, write_timeout=5) for _ in range(writers + 1)]
    claimed, stop = [], threading.Event()

    def write(database, writer):
        outbox = Outbox(database)
        for n in range(requests):
            add(outbox, "aud", f"w{writer}-{n:03d}")

    def claim(database):
        outbox = Outbox(database)
        while True:
            done = stop.is_set()
            for c in outbox.claim("d", now=1000.0, lease=60, limit=1, batch_sizes=SIZES):
                claimed.extend(m.id for m in c.mutations)
                assert outbox.settle(c, now=1000.0)
            if done:
                return

    claimer = threading.Thread(target=claim, args=(databases[-1],))
    claimer.start()
    threads = [threading.Thread(target=write, args=(databases[w], w)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    claimer.join()
    for database in databases:
        database.close()

    assert len(claimed) == writers * requests
    assert claimed == sorted(claimed), "a later batch was claimed before an earlier one of the same audience"


def test_a_batch_whose_commit_is_slow_is_never_overtaken_by_a_later_one(url, pg_outbox):
    """The first request's batch takes its id, then its insert is slowed down (a trigger of the
    test's, standing in for a slow commit); a second request for the same audience meanwhile
    must not commit ahead of it, or a claim would deliver the second before the first."""
    import psycopg

    pg_outbox.counts()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.mutations LIKE '%slow%' THEN PERFORM pg_sleep(1); END IF; RETURN NEW; END $$")
        connection.execute("CREATE TRIGGER slow_insert BEFORE INSERT ON batches FOR EACH ROW"
                           " EXECUTE FUNCTION slow_insert()")
    second_writer, claimer = Outbox(PostgresDatabase(url)), Outbox(PostgresDatabase(url))
    claimed = []

    def claim():
        for c in claimer.claim("d", now=1000.0, lease=60, limit=1, batch_sizes=SIZES):
            claimed.extend(m.external_user_id for m in c.mutations)
            assert claimer.settle(c, now=1000.0)

    add(pg_outbox, "aud", "first")
    claim()
    slow = threading.Thread(target=add, args=(pg_outbox, "aud", "slow"))
    slow.start()
    threading.Event().wait(0.3)
    fast = threading.Thread(target=add, args=(second_writer, "aud", "fast"))
    fast.start()
    fast.join(5)
    claim()
    slow.join(5)
    claim()
    second_writer.database.close()
    claimer.database.close()

    assert claimed == ["first", "slow", "fast"]


def test_dispatchers_claiming_at_once_never_lease_one_audience_twice(url):
    """Each claimer reads the due audiences and then leases them: without row locks, two could read
    the same audience and both lease it."""
    setup = Outbox(PostgresDatabase(url))
    for n in range(40):
        add(setup, f"aud-{n}", "u1")
    setup.database.close()
    claimers = 6
    databases = [PostgresDatabase(url, write_timeout=5) for _ in range(claimers)]
    leased, start = [], threading.Barrier(claimers)

    def claim(database, owner):
        outbox = Outbox(database)
        start.wait()
        for _ in range(20):
            leased.extend(c.audience.key for c in outbox.claim(owner, now=1000.0, lease=600, limit=2,
                                                                batch_sizes=SIZES))

    threads = [threading.Thread(target=claim, args=(databases[n], f"d{n}")) for n in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for database in databases:
        database.close()

    assert sorted(leased) == sorted(f"aud-{n}" for n in range(40))


def test_a_row_held_by_another_transaction_past_the_budget_is_unavailable_and_nothing_is_stored(url, pg_outbox):
    import psycopg

    add(pg_outbox, "aud", "u1")
    with psycopg.connect(url) as blocker:
        blocker.execute("SELECT 1 FROM audiences WHERE key = 'aud' FOR UPDATE")
        with pytest.raises(StoreUnavailable, match="locked by another transaction"):
            add(pg_outbox, "aud", "u2")
    assert pg_outbox.counts()["pending"] == 1


def test_after_a_server_restart_the_next_use_reconnects_by_itself(postgres_server, pg_outbox):
    add(pg_outbox, "aud", "u1")
    postgres_server.restart()

    outcomes = []
    for user in ("u2", "u3"):
        try:
            add(pg_outbox, "aud", user)
            outcomes.append("stored")
        except StoreUnavailable as error:
            outcomes.append(f"unavailable: {error}")

    assert outcomes[-1] == "stored", outcomes
    assert all(o == "stored" or "is unavailable" in o for o in outcomes), outcomes
    assert pg_outbox.counts()["pending"] == outcomes.count("stored") + 1


def test_after_the_server_was_away_no_live_dispatchers_lease_is_taken_over(postgres_server, url, tmp_path, receiver_for):
    """While PostgreSQL is away every heartbeat goes stale, the live dispatchers' too. When it is
    back, a dispatcher must not take over a live one's lease (its call still running) before that
    one had a chance to beat again: it waits until it has itself beaten for takeover_after."""
    import psycopg

    from tests.sandboxed import hold_calls

    receiver = receiver_for()
    held, release = hold_calls(receiver.sandboxed)
    config = make_config(tmp_path, receiver.url, diy={"database": url},
                         dispatcher={"takeover_after": "2s"}, integration={"target.timeout": "60"})
    holder, other = Service(config), Service(config)
    owners = []
    try:
        add(holder.outbox, "4711", "u1", now=time.time())
        holder.dispatcher.start()
        assert held.wait(10)
        other.dispatcher.start()
        time.sleep(2.5)
        for _ in range(2):
            postgres_server.stop()
            time.sleep(3.0)
            postgres_server.start()
            time.sleep(3.0)
            with psycopg.connect(url) as connection:
                owners.append(connection.execute("SELECT lease_owner FROM audiences").fetchone()[0])
    finally:
        release.set()
        holder.close()
        other.close()

    assert owners == [holder.dispatcher.owner] * 2


def test_a_read_only_server_is_not_ready_and_takes_no_write(url, pg_outbox):
    import psycopg

    pg_outbox.probe()
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    fresh = Outbox(PostgresDatabase(url, write_timeout=0.5))
    try:
        with pytest.raises(StoreUnavailable, match="read-only"):
            fresh.probe()
        with pytest.raises(StoreUnavailable, match="read-only"):
            add(fresh, "aud", "u1")
    finally:
        fresh.database.close()


def test_readyz_says_a_read_only_server_cannot_take_requests_without_naming_it(url, tmp_path):
    name = url.rsplit("/", 1)[1]
    app = make_app(make_config(tmp_path, "http://127.0.0.1:9/events", diy={"database": url}))
    app.start()
    assert call(app, method="GET", path="/readyz").status == 200
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    app.stop()
    app = make_app(make_config(tmp_path, "http://127.0.0.1:9/events", diy={"database": url}))
    app.start()
    try:
        ready = call(app, method="GET", path="/readyz")
    finally:
        app.stop()

    assert ready.status == 503 and "read-only" in ready.json()["error"]
    assert name not in ready.body.decode()


def test_the_password_never_appears_in_messages(postgres_server):
    url = postgres_server.url("no_such_database").replace("@", ":hunter2-secret@")
    database = PostgresDatabase(url, write_timeout=0.5)

    with pytest.raises(StoreUnavailable) as caught:
        database.read("SELECT 1")

    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(database)
    assert "no_such_database" in str(caught.value)
    assert without_password("postgresql://u:p%40ss@db.example:5433/x?sslmode=require") == \
        "postgresql://u@db.example:5433/x?sslmode=require"


def test_a_database_holding_tables_named_like_ours_is_refused(url):
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE audiences (id integer)")
    with pytest.raises(StoreError, match="not a diy-wsgi outbox"):
        PostgresDatabase(url).read("SELECT 1")


def test_several_processes_starting_at_once_migrate_once(url):
    script = (
        "import sys; from outbox.postgres import PostgresDatabase;"
        "print(PostgresDatabase(sys.argv[1]).read('SELECT version FROM schema_version')[0][0])"
    )
    starts = [subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, text=True)
              for _ in range(4)]
    assert [p.communicate(timeout=60)[0].strip() for p in starts] == ["1"] * 4


def test_without_psycopg_a_postgresql_url_fails_in_one_line_naming_the_extra(tmp_path):
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from outbox.backends import open_database\n"
        "open_database('postgresql://u@127.0.0.1:1/db')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode != 0
    assert "pip install 'diy-wsgi[postgres]'" in run.stderr


def test_a_commit_on_another_machine_wakes_the_dispatcher_at_once(url, tmp_path, receiver_for):
    """LISTEN/NOTIFY: the dispatcher polls every 30 s here, yet delivers within seconds what
    another process (standing in for another VM) commits."""
    receiver = receiver_for()
    config = make_config(tmp_path, receiver.url, diy={"database": url}, dispatcher={"poll_interval": "30s"})
    listening, elsewhere = Service(config), Outbox(PostgresDatabase(url))
    listening.dispatcher.start()
    try:
        time.sleep(1.0)
        add(elsewhere, "4711", "u1", now=time.time())
        deadline = time.monotonic() + 10
        while not receiver.events and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        listening.close()
        elsewhere.database.close()

    assert receiver.members == {"4711": {"u1"}}


def test_what_a_200_promises_commits_with_the_servers_own_synchronous_commit(url):
    """Bookkeeping commits with synchronous_commit off, set once per session; a durable commit
    on the same connection afterwards must get the server's setting back (here the database's
    remote_write, as a deployment with a synchronous standby would have), not a plain `on`."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET synchronous_commit = 'remote_write'")
    database = PostgresDatabase(url)
    seen = []
    try:
        for durable in (False, True, False, True):
            with database.transaction(durable=durable) as connection:
                seen.append(connection.execute("SHOW synchronous_commit").fetchone()[0])
    finally:
        database.close()

    assert seen == ["off", "remote_write", "off", "remote_write"]


def dead_lettered(outbox, audience, user):
    add(outbox, audience, user)
    for claim in outbox.claim("test", now=1000.0, lease=60, limit=10, batch_sizes={"demo": 100}):
        outbox.dead_letter(claim, "refused", now=1000.0)


def waiting_for_retry(outbox, audience, user):
    add(outbox, audience, user, now=time.time())
    now = time.time()
    for claim in outbox.claim("test", now=now, lease=60, limit=10, batch_sizes={"demo": 100}):
        outbox.retry_later(claim, "connection refused", at=now + 600, now=now)


ADMIN_COMMANDS = {
    "replay": (dead_lettered, lambda admin: admin.replay(DeadFilter(), now=1001.0), (2, 0)),
    "retry-now": (waiting_for_retry, lambda admin: admin.retry_now(now=time.time()), (2, 2)),
}


@pytest.mark.parametrize("command", ADMIN_COMMANDS)
def test_an_admin_command_and_a_request_touching_the_same_audiences_never_deadlock(url, command):
    """The command updates b's row (its work was stored first), then a's, while a request locks
    its audiences by key (a, then b): the command must take its audiences in the request's
    order first, or each waits for the other and PostgreSQL aborts one (a 503 for the DMP, or a
    failed command)."""
    import psycopg

    prepare, run, expected = ADMIN_COMMANDS[command]
    outbox = Outbox(PostgresDatabase(url, write_timeout=10.0))
    prepare(outbox, "b", "u1")
    prepare(outbox, "a", "u2")
    results = {}

    def run_command():
        try:
            results["command"] = run(Admin(outbox))
        except Exception as error:
            results["command"] = error

    with psycopg.connect(url) as request:
        request.execute("UPDATE audiences SET pending = pending WHERE key = 'a'")
        commanding = threading.Thread(target=run_command)
        commanding.start()
        time.sleep(1.0)
        try:
            request.execute("UPDATE audiences SET pending = pending WHERE key = 'b'")
            request.commit()
            results["request"] = "committed"
        except psycopg.Error as error:
            results["request"] = error
        commanding.join(30)
    outbox.database.close()

    assert results == {"request": "committed", "command": expected}


def test_a_listener_skips_its_own_processs_notifications_and_wakes_for_anyone_elses(url, pg_outbox):
    """The process that commits wakes its own dispatcher directly; the echo of its own NOTIFY
    would only cost every one of its dispatchers another claim."""
    wakes, stopping = [], threading.Event()
    listener = threading.Thread(target=pg_outbox.listen, args=(lambda: wakes.append(time.monotonic()), stopping))
    other = Outbox(PostgresDatabase(url))
    listener.start()
    try:
        time.sleep(1.0)
        add(pg_outbox, "4711", "u1")
        time.sleep(1.5)
        echoes = len(wakes)
        add(other, "4711", "u2")
        deadline = time.monotonic() + 10
        while len(wakes) == echoes and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stopping.set()
        listener.join(5)
        other.database.close()

    assert echoes == 0
    assert len(wakes) == 1


def test_while_the_server_is_down_the_dmp_gets_503_and_everything_resumes_when_it_is_back(
        postgres_server, url, tmp_path, receiver_for, caplog):
    receiver = receiver_for()
    app = make_app(make_config(tmp_path, receiver.url, diy={"database": url}))
    app.start()
    try:
        body = mutations_body("ADD_TO_AUDIENCE", mutation("4711", "before"))
        assert call(app, query="type=ADD_TO_AUDIENCE", body=body).status == 200
        postgres_server.stop()
        try:
            down = [call(app, query="type=ADD_TO_AUDIENCE", body=mutations_body("ADD_TO_AUDIENCE", mutation("4711", f"down{n}")))
                    for n in range(3)]
            ready = call(app, method="GET", path="/readyz")
        finally:
            postgres_server.start()
        after = call(app, query="type=ADD_TO_AUDIENCE", body=mutations_body("ADD_TO_AUDIENCE", mutation("4711", "after")))
        deadline = time.monotonic() + 15
        while receiver.members.get("4711") != {"before", "after"} and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        app.stop()

    assert [r.status for r in down] == [503, 503, 503]
    assert all("nothing was stored" in r.json()["error"] for r in down)
    assert ready.status == 503 and "database: PostgreSQL is unavailable" in ready.json()["error"]
    assert url.split("@")[1] not in ready.body.decode(), "no host, port or database name in a public answer"
    assert after.status == 200
    assert receiver.members == {"4711": {"before", "after"}}
    assert not [r for r in caplog.records if r.exc_info and r.name == "diy.receiver"], "no traceback per request"


def test_the_urls_own_options_are_kept_beside_ours(url):
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE SCHEMA elsewhere")
    database = PostgresDatabase(url + "?options=-csearch_path%3Delsewhere", write_timeout=0.75)
    try:
        add(Outbox(database), "aud", "u1")
        settings = database.read("SELECT current_setting('search_path'), current_setting('lock_timeout')")[0]
        assert settings == ("elsewhere", "750ms")
        assert database.read("SELECT COUNT(*) FROM elsewhere.batches")[0][0] == 1
    finally:
        database.close()
