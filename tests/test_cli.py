"""How `diy-wsgi` fails: one line on stderr, a non-zero exit, no traceback, nothing created."""
import os
import signal
import socket
import subprocess
import sys
import time

from diy.cli import main
from tests.processes import ROOT
from tests.support import config_text

LONG_SECRET = "a-long-enough-secret-for-no-warning"


def quiet_config(tmp_path):
    """A configuration that draws no warning, so that stderr holds only what a failure says."""
    path = tmp_path / "diy.ini"
    path.write_text(config_text(tmp_path / "outbox.sqlite3", "http://127.0.0.1:9/events",
                                integration={"hmac_secrets": LONG_SECRET}))
    path.chmod(0o600)
    return path


def diy_wsgi(*args):
    return subprocess.run([sys.executable, "-m", "diy", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_serve_on_a_port_already_taken_says_so_in_one_line_and_creates_nothing(tmp_path):
    config = quiet_config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = diy_wsgi("serve", "--config", config, "--port", port)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"diy-wsgi: cannot listen on 127.0.0.1:{port} (Address already in use); another process listens there "
        "(another diy-wsgi?): stop it or choose another --port"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diy.ini"], "no database, no metrics folder"


def test_a_file_named_on_the_command_line_that_is_missing_is_one_line(tmp_path, capsys):
    code = main(["verify", "--config", str(quiet_config(tmp_path)), "--signature", "00", str(tmp_path / "body.json")])

    assert code == 2
    assert capsys.readouterr().err == f"diy-wsgi: {tmp_path / 'body.json'}: No such file or directory\n"


def test_ctrl_c_of_a_long_command_ends_it_quietly(tmp_path):
    command = subprocess.Popen([sys.executable, "-m", "diy", "disk", "--seconds", "30", "--config",
                                str(quiet_config(tmp_path))], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    time.sleep(1.5)
    command.send_signal(signal.SIGINT)
    out, err = command.communicate(timeout=30)

    assert (command.returncode, out, err) == (130, "", "")


def test_output_read_by_a_reader_that_stopped_early_ends_quietly(tmp_path):
    """As `diy-wsgi status | head -1` does: the reader is gone before the table is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "diy", "status", "--config", str(quiet_config(tmp_path))],
                                cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=30,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(write_end)

    assert (result.returncode, result.stderr) == (1, "")
