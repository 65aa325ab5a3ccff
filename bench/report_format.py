"""Formatting numbers and tables for RESULTS.md, and picking the run a figure is quoted from."""
import math


def ms(value, digits=1):
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "never answered"
    return f"{value:,.{digits}f}"


def num(value, digits=0):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def median_by_p99(runs):
    return sorted(runs, key=lambda run: run["latency_ms"]["p99"])[(len(runs) - 1) // 2] if runs else None


def p99_list(runs):
    return ", ".join(ms(run["latency_ms"]["p99"]) for run in runs)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
