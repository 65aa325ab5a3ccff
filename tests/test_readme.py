"""The README's code, run as it is written."""
import re
import subprocess
import sys

from tests.processes import ROOT, write_config

README = (ROOT / "README.md").read_text()


def code_under(heading, language):
    """The first `language` block after the heading line `heading`."""
    section = README[README.index(f"\n{heading}\n"):]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_the_embedding_snippet_runs_as_written_and_logs_what_the_service_does(tmp_path):
    config = write_config(tmp_path, "http://127.0.0.1:9/events")
    snippet = code_under("### Embedding in your own WSGI hosting", "python").replace("/etc/diy-wsgi/diy.ini", str(config))

    result = subprocess.run([sys.executable, "-c", snippet], cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert "dispatcher started" in result.stderr and "dispatcher stopped" in result.stderr, result.stderr
