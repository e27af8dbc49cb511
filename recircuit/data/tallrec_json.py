"""Read TALLRec-format JSON files (movie, BookCrossing, or your own).

Usage::

    from recircuit.data.tallrec_json import load_tallrec_json
    test = load_tallrec_json("TALLRec/data/movie/test.json")   # list[Sample]

A TALLRec file is a JSON list of ``{"instruction", "input", "output"}`` records with output
``"Yes."`` or ``"No."``. Samples loaded this way carry no user or item ids; their uid is
``"<file stem>:<index>"``.
"""

from __future__ import annotations

import json
from pathlib import Path

from recircuit.data.movielens import DataFormatError
from recircuit.data.prompts import Sample


def load_tallrec_json(path: str | Path) -> list[Sample]:
    """Load a TALLRec JSON file as samples.

    Raises:
        DataFormatError: not JSON, not a list, empty, a record missing a key, or an output
            other than ``"Yes."``/``"No."`` (the message names the file and record).
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise DataFormatError(f"{p} is empty; expected a JSON list of TALLRec records.")
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{p}, line {err.lineno}: invalid JSON ({err.msg}).") from None
    if not isinstance(records, list) or not records:
        raise DataFormatError(f"{p}: expected a non-empty JSON list of records.")
    out = []
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not {"instruction", "input", "output"} <= set(r):
            raise DataFormatError(f"{p}, record {i}: needs keys 'instruction', 'input', 'output'.")
        if r["output"].strip() not in ("Yes.", "No."):
            raise DataFormatError(f"{p}, record {i}: output {r['output']!r} is not 'Yes.' or 'No.'.")
        out.append(Sample(r["instruction"], r["input"], r["output"].strip(), uid=f"{p.stem}:{i}"))
    return out
