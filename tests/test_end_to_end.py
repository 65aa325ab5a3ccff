"""The real `diy-wsgi` processes, a webhook receiver, and signed requests over HTTP."""
import http.client
import os
import signal
import socket
import sqlite3
import struct


from tests.processes import Diy, dmp_post, free_port, wait_for_port, wait_until, write_config
from tests.sandboxed import hold_calls
from tests.support import mutation


def test_serve_answers_the_dmp_and_delivers_add_remove_add(receiver_for, tmp_path):
    receiver = receiver_for()
    config = write_config(tmp_path, receiver.url, integration={"return_target_id": "yes"})
    port = free_port()
    server = Diy(tmp_path, "serve", "--config", config, "--port", port)
    try:
        wait_for_port(port, server)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/dmp")
        assert connection.getresponse().status == 200

        assert dmp_post(port, "VALIDATE", {"Type": "VALIDATE"}) == (200, {})
        created = dmp_post(port, "CREATE_AUDIENCE", {"Type": "CREATE_AUDIENCE", "Name": "Buyers", "Customer": 1, "Audience": "dmp-1"})
        assert created == (200, {"id": receiver.created_ids()[0]})
        for kind in ("ADD_TO_AUDIENCE", "REMOVE_FROM_AUDIENCE", "ADD_TO_AUDIENCE"):
            assert dmp_post(port, kind, {"Type": kind, "Mutations": [mutation(created[1]["id"], "u1")]}) == (200, {"accepted": 1})

        database = sqlite3.connect(tmp_path / "outbox.sqlite3")
        wait_until(lambda: settled(database) == [("done", 3)], what="delivery", processes=[server])
    finally:
        assert server.kill(signal.SIGTERM) == 0, server.output()
    assert [e["type"] for e in receiver.events][0] == "audience.created"
    assert receiver.members == {"dmp-1": {"u1"}}


def settled(database):
    return database.execute("SELECT state, COUNT(*) FROM mutations GROUP BY state").fetchall()


def test_a_dispatcher_killed_mid_batch_loses_nothing_and_is_taken_over_before_its_lease_ends(receiver_for, tmp_path):
    """The lease is the default 5 minutes: only the heartbeat takeover can deliver within 30 s."""
    receiver = receiver_for()
    first_call, release = hold_calls(receiver.sandboxed)
    config = write_config(tmp_path, receiver.url, dispatcher={"embedded": "no", "takeover_after": "2s", "threads": "2"},
                          integration={"target.timeout": "0.5"})
    port = free_port()
    server = Diy(tmp_path, "serve", "--config", config, "--port", port, name="serve")
    dispatchers = []
    try:
        wait_for_port(port, server)
        users = [f"u{i}" for i in range(300)]
        for start in range(0, 300, 100):
            batch = [mutation(f"aud-{i % 3}", user) for i, user in enumerate(users[start:start + 100], start)]
            assert dmp_post(port, "ADD_TO_AUDIENCE", {"Mutations": batch})[0] == 200

        dispatchers.append(Diy(tmp_path, "dispatch", "--config", config, name="dispatch-1"))
        assert first_call.wait(20), dispatchers[0].output()
        assert dispatchers[0].kill(signal.SIGKILL) == -signal.SIGKILL
        release.set()

        dispatchers.append(Diy(tmp_path, "dispatch", "--config", config, name="dispatch-2"))
        expected = {f"aud-{a}": {u for i, u in enumerate(users) if i % 3 == a} for a in range(3)}
        wait_until(lambda: receiver.members == expected, timeout=30, what="every user delivered", processes=[server, *dispatchers])
        database = sqlite3.connect(tmp_path / "outbox.sqlite3")
        wait_until(lambda: settled(database) == [("done", 300)],
                   what="every mutation settled", processes=[server, *dispatchers])
    finally:
        release.set()
        for process in dispatchers:
            process.kill()
        server.kill()


def test_serve_keeps_its_open_files_flat_however_many_requests_touch_the_database(receiver_for, tmp_path):
    """The stdlib server starts a thread per request, and each thread opens its own database
    connection: those of ended threads must be closed, or every request leaks two descriptors
    (the file and its WAL) until the process runs out of them and answers every write 503.
    (/metrics reads the outbox on every call; /readyz asks the database once a second.)"""
    receiver = receiver_for()
    config = write_config(tmp_path, receiver.url)
    port = free_port()
    server = Diy(tmp_path, "serve", "--config", config, "--port", port)

    def probe(times):
        for _ in range(times):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/metrics")
            assert connection.getresponse().status == 200
            connection.close()

    def open_files():
        return len(os.listdir(f"/proc/{server.process.pid}/fd"))

    try:
        wait_for_port(port, server)
        probe(50)
        before = open_files()
        probe(2000)
        after = open_files()
        assert dmp_post(port, "ADD_TO_AUDIENCE", {"Mutations": [mutation("4711", "u1")]})[0] == 200
    finally:
        server.kill(signal.SIGTERM)

    assert after <= before + 10, f"{before} open files after 50 requests, {after} after 2050 more"


def test_serve_answers_metrics_only_to_requests_addressed_to_this_machine(receiver_for, tmp_path):
    """A page whose name an attacker points at 127.0.0.1 (DNS rebinding) reaches serve from
    loopback, with its own name as the Host: the client's address alone would let it read /metrics."""
    config = write_config(tmp_path, receiver_for().url, diy={"server_name": "dmp.example.com"})
    port = free_port()
    server = Diy(tmp_path, "serve", "--config", config, "--port", port)

    def metrics_status(host):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/metrics", headers={"Host": host})
            return connection.getresponse().status
        finally:
            connection.close()

    try:
        wait_for_port(port, server)
        statuses = {host: metrics_status(host) for host in
                    (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "dmp.example.com",
                     f"rebound.example:{port}", "127.0.0.1.rebound.example")}
    finally:
        server.kill(signal.SIGTERM)

    assert statuses == {f"127.0.0.1:{port}": 200, f"localhost:{port}": 200, f"[::1]:{port}": 200,
                        "dmp.example.com": 200, f"rebound.example:{port}": 403, "127.0.0.1.rebound.example": 403}


def test_serve_takes_a_client_that_hangs_up_mid_request_as_one_debug_line(receiver_for, tmp_path):
    """A DMP, a probe or a load balancer may reset a connection before its request is read."""
    config = write_config(tmp_path, receiver_for().url, diy={"log_level": "debug"})
    port = free_port()
    server = Diy(tmp_path, "serve", "--config", config, "--port", port)
    try:
        wait_for_port(port, server)
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(b"GET /metr")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        wait_until(lambda: "client hung up" in server.output(), what="the debug line", processes=[server])
        assert dmp_post(port, "VALIDATE", {"Type": "VALIDATE"}) == (200, {})
    finally:
        server.kill(signal.SIGTERM)

    assert "Traceback" not in server.output()
