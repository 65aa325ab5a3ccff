"""Reliability suites of diy-wsgi: the helpers they share, and the long-form runner.

The suites live in `tests/reliability/` and run in their short (CI) form with the rest of the
tests (`python -m pytest`). `python -m reliability --long` runs the same suites at length and
writes `reliability/RESULTS.md`. The receiving platform is the sandbox (`diy-wsgi sandbox
--control-port --journal`: its webhook, faults switched on the control port, every call
journaled). Here:

    loadgen.py    a signed load generator process that journals every answer
    checker.py    acknowledged against delivered: lost, duplicates, order, final membership
    processes.py  the one process harness (tests and bench use it too): spawning and killing
                  processes, free ports, waiting, the INI text, signed DMP requests
    harness.py    gunicorn, the sandbox and the load as processes; the outbox read from outside
    __main__.py   the runner

Environment: `DIY_RELIABILITY=long` selects the long form; `DIY_RELIABILITY_RESULTS=FILE`
makes each suite append its figures to FILE as JSON lines (the runner sets both).
"""
import json
import os
import threading

LONG = os.environ.get("DIY_RELIABILITY", "").lower() == "long"
FORM = "long" if LONG else "ci"


def pick(ci, long):
    """The value for the form being run."""
    return long if LONG else ci


class Figures:
    """One suite's figures, summed over its tests and printed as one line."""

    def __init__(self, suite):
        self.suite = suite
        self.values = {}
        self.notes = []
        self.lock = threading.Lock()

    def add(self, **amounts):
        with self.lock:
            for name, amount in amounts.items():
                self.values[name] = self.values.get(name, 0) + amount

    def most(self, **amounts):
        with self.lock:
            for name, amount in amounts.items():
                self.values[name] = max(self.values.get(name, amount), amount)

    def note(self, text):
        with self.lock:
            self.notes.append(text)

    def line(self):
        figures = " ".join(f"{name}={_show(value)}" for name, value in self.values.items())
        return f"reliability {self.suite} ({FORM} form): {figures}"

    def publish(self):
        path = os.environ.get("DIY_RELIABILITY_RESULTS")
        if path and self.values:
            with open(path, "a", encoding="utf-8") as stream:
                stream.write(json.dumps({"suite": self.suite, "form": FORM, "figures": self.values,
                                         "notes": self.notes}) + "\n")


def _show(value):
    return f"{value:.2f}" if isinstance(value, float) else str(value)
