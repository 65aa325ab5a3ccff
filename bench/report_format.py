"""Formatting numbers and tables for RESULTS.md."""
import math


def ms(value, digits=1):
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "never answered"
    return f"{value:,.{digits}f}"


def num(value, digits=0):
    return "n/a" if value is None else f"{value:,.{digits}f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
