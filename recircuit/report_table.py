"""Plain-text tables for the command line.

Usage::

    from recircuit.report_table import format_table
    print(format_table([{"metric": "auc", "value": 0.51}]))
"""

from __future__ import annotations

from collections.abc import Sequence


def _fmt(v: object, digits: int) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """Render dict rows as an aligned text table (numbers right-aligned)."""
    if not rows:
        return "(empty)"
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(c, ""), digits) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    numeric = [all(isinstance(r.get(c), int | float) for r in rows if c in r) for c in cols]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(vals, widths, numeric)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cols), sep, *(line(r) for r in cells)])
