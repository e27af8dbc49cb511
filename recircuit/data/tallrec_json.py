"""Read TALLRec-format JSON files (movie, BookCrossing, or your own).

Usage::

    from recircuit.data.tallrec_json import load_tallrec_json
    test = load_tallrec_json("TALLRec/data/movie/test.json")   # list[Sample]

A TALLRec file is a UTF-8 JSON list of ``{"instruction", "input", "output"}`` records: the first
two are strings, ``output`` is ``"Yes."`` or ``"No."``; an optional integer ``"user_id"`` names the
record's user; other keys are ignored. Samples loaded this way carry no item ids; their uid is
``"<file stem>:<index>"``. Their items (titles, and authors for books) are parsed from the input
and the domain (movie, book...) detected from it (:mod:`recircuit.data.domains`). A file that breaks
these rules is refused with one line naming the file, the line or record and field, and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from recircuit._io import read_text
from recircuit.data.prompts import Sample
from recircuit.data.ratings import DataFileMissing, DataFormatError
from recircuit.errors import InputError

#: The answers a TALLRec record may hold.
OUTPUTS = ("Yes.", "No.")
#: The keys every record needs.
KEYS = ("instruction", "input", "output")


def _type_name(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", list: "a list", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)


def load_tallrec_json(path: str | Path) -> list[Sample]:
    """Load a TALLRec JSON file as samples.

    Args:
        path: the JSON file.

    Returns:
        One :class:`Sample` per record, in file order, output stripped of surrounding space.

    Raises:
        DataFileMissing: the file does not exist (also a ``FileNotFoundError``).
        DataFormatError: bytes that are not UTF-8 or invalid JSON (file and line named); not a
            non-empty list; a record that is not an object, lacks a key, has a non-string
            ``instruction``/``input``, or an ``output`` other than ``"Yes."``/``"No."`` (file,
            record index and field named, with the allowed values).
    """
    p = Path(path)
    if not p.is_file():
        raise DataFileMissing("file is missing", path=p, fix="pass the path of a TALLRec JSON file (train/valid/test.json)")
    try:
        text = read_text(p, "utf-8")
    except InputError as err:  # not UTF-8: same message (file and line), as a DataFormatError
        raise DataFormatError(str(err)) from None
    if not text.strip():
        raise DataFormatError("file is empty", path=p, fix="expected a JSON list of TALLRec records")
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"invalid JSON at column {err.colno} ({err.msg})", path=p, line=err.lineno,
                              fix="fix the JSON syntax") from None
    if not isinstance(records, list) or not records:
        got = "[]" if isinstance(records, list) else _type_name(records)
        raise DataFormatError(f"expected a non-empty JSON list of records, got {got}", path=p,
                              fix='write [{"instruction": ..., "input": ..., "output": "Yes."}, ...]')
    out = []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise DataFormatError(f"record {i} is {_type_name(r)}, not an object", path=p, field=f"[{i}]",
                                  fix=f"each record is an object with keys {', '.join(map(repr, KEYS))}")
        missing = [k for k in KEYS if k not in r]
        if missing:
            raise DataFormatError(f"record {i}: needs keys 'instruction', 'input', 'output' (missing {missing})",
                                  path=p, field=f"[{i}]", fix="add the missing keys")
        for key in ("instruction", "input"):
            if not isinstance(r[key], str):
                raise DataFormatError(f"record {i}: {key} is {_type_name(r[key])}, not a string", path=p,
                                      field=f"[{i}].{key}", fix=f"write the {key} as a JSON string")
        output = r["output"]
        if not isinstance(output, str) or output.strip() not in OUTPUTS:
            shown = f"{_type_name(output)} {json.dumps(output)}" if not isinstance(output, str) else repr(output)
            raise DataFormatError(f"record {i}: output is {shown}", path=p, field=f"[{i}].output",
                                  fix='allowed values are the strings "Yes." and "No."')
        user = r.get("user_id")
        if user is not None and (isinstance(user, bool) or not isinstance(user, int)):
            raise DataFormatError(f"record {i}: user_id is {_type_name(user)} {json.dumps(user)}", path=p,
                                  field=f"[{i}].user_id", fix="write the user id as a JSON integer, or leave it out")
        out.append(Sample(r["instruction"], r["input"], output.strip(), user_id=user, uid=f"{p.stem}:{i}"))
    return out
