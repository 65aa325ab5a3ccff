"""Fixtures of the reliability suites: real processes, cleaned up by their own ids, and each
suite's one-line figures, printed at the end of the run (and appended to the runner's file)."""
import pytest

from reliability import LONG, Figures
from reliability.harness import Receiver

_FIGURES = {}


@pytest.fixture(autouse=True)
def _long_form_only(request):
    if request.node.get_closest_marker("slow") and not LONG:
        pytest.skip("long form only: python -m reliability --long")


@pytest.fixture(scope="module")
def figures(request):
    """The figures of this module's suite (`test_crash.py` -> `crash`)."""
    suite = request.module.__name__.rsplit(".", 1)[-1].replace("test_", "", 1)
    return _FIGURES.setdefault(suite, Figures(suite))


@pytest.fixture
def processes():
    """Register every process a test starts; whatever still runs at the end is killed."""
    started = []
    yield started
    for process in reversed(started):
        process.kill()


@pytest.fixture
def receiver(tmp_path, processes):
    platform = Receiver(tmp_path)
    processes.append(platform)
    return platform


def pytest_terminal_summary(terminalreporter):
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for figures in _FIGURES.values():
        if not figures.values:
            continue
        terminalreporter.write_line(figures.line())
        figures.publish()
