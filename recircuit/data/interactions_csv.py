"""Ratings from a generic interactions CSV plus an items CSV, with named columns.

Usage::

    from recircuit.data.interactions_csv import load_interactions_csv
    data = load_interactions_csv("ratings.csv", "items.csv", domain="game",
                                 columns={"user": "player", "item": "game_id", "rating": "stars"})
    data.interactions.head()              # user, item, rating, timestamp, title
    # then: recircuit.data.splits.tallrec_split(data, history_len=10)

**Columns** (``columns`` maps these names to the file's header names; each defaults to itself):

* interactions file: ``user``, ``item``, ``rating`` (required); ``timestamp`` (Unix seconds or
  ISO 8601 dates, UTC unless they name a zone) or ``order`` (a number), optional: each user's history is sorted by it. With
  neither, the file order is the order (and the sample uids carry the file line);
* items file: ``item_id`` (default column ``item``), ``title`` (required) and ``author``
  (optional; shown by the ``book`` domain).

Ids that are all integers are kept; other ids (ISBNs, names) are numbered 1, 2, ... in order of
first appearance and kept as they are in the sample uids. Files are UTF-8 (a byte-order mark is
allowed) or, failing that, Latin-1; the delimiter is ``,``, ``;`` or tab, taken from the header
line unless given. A bad file is refused with one line naming the file, line, column and fix:
a missing column, a rating that is not a number, an interaction whose item is not in the items
file, an item listed twice, an empty title.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from recircuit.data.domains import get_domain
from recircuit.data.ratings import DataFileMissing, DataFormatError, RatingData, like_threshold_for

__all__ = ["COLUMNS", "Table", "assemble", "load_interactions_csv", "parse_number", "read_items", "read_table"]

#: Logical column -> default header name.
COLUMNS = {"user": "user", "item": "item", "rating": "rating", "timestamp": "timestamp", "order": "order",
           "item_id": "item", "title": "title", "author": "author"}


@dataclass
class Table:
    """A CSV file: its header and its rows, each with its 1-based line number."""

    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]

    def column(self, name: str, logical: str, required: bool = True) -> int | None:
        """Index of header ``name``; ``None`` if absent and optional.

        Raises:
            DataFormatError: a required column is missing (the header is listed).
        """
        if name in self.header:
            return self.header.index(name)
        if not required:
            return None
        raise DataFormatError(f"has no column {name!r} (the {logical} column); its header is {self.header}",
                              path=self.path, line=1, field=logical,
                              fix=f"rename the column or name it: --columns {logical}=<header name>")


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_table(path: str | Path, delimiter: str | None = None) -> Table:
    """Read a delimited text file with a header line.

    Raises:
        DataFileMissing: no such file.
        DataFormatError: an empty file, or a row with fewer fields than the header.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataFileMissing("file is missing", path=p, fix="pass the path of an existing CSV file")
    text = _decode(p.read_bytes(), p)
    if not text.strip():
        raise DataFormatError("file is empty", path=p, fix="expected a header line and one row per line")
    first = text.split("\n", 1)[0]
    if delimiter is None:
        counts = {d: len(next(csv.reader([first], delimiter=d))) for d in (";", ",", "\t")}
        delimiter = max(counts, key=lambda d: counts[d])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    start = 1
    for fields in reader:
        line = start
        start = reader.line_num + 1
        if not any(f.strip() for f in fields):
            continue
        if header is None:
            header = [f.strip() for f in fields]
            continue
        if len(fields) < len(header):
            raise DataFormatError(f"has {len(fields)} fields, the header {len(header)} (delimiter {delimiter!r})",
                                  path=p, line=line, fix="fix or remove that line (quote fields that hold the delimiter)")
        rows.append((line, fields))
    if header is None:
        raise DataFormatError("file is empty", path=p, fix="expected a header line and one row per line")
    return Table(p, header, rows)


def parse_number(value: str, table: Table, line: int, column: str) -> float:
    """``value`` as a finite float; else a :class:`DataFormatError` naming the file, line and column."""
    try:
        x = float(value.strip())
    except ValueError:
        x = math.nan
    if not math.isfinite(x):
        raise DataFormatError(f"{column} {value!r} is not a finite number", path=table.path, line=line, field=column,
                              fix="fix or remove that line")
    return x


def _time(value: str, table: Table, line: int, column: str) -> float:
    """Unix seconds of a number or an ISO 8601 date."""
    try:
        return parse_number(value, table, line, column)
    except DataFormatError:
        try:
            t = datetime.fromisoformat(value.strip())
            return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()
        except ValueError:
            raise DataFormatError(f"timestamp {value!r} is neither a number nor an ISO 8601 date", path=table.path,
                                  line=line, field=column, fix="write Unix seconds or e.g. 2024-05-01T12:00:00") from None


class _Ids:
    """External ids -> integers: kept when every id is an integer written canonically (no sign, no
    leading zero, so ``"007"`` and ``"7"`` never merge and ISBNs keep their digits), else numbered
    in order with the original ids kept."""

    def __init__(self, raw: Sequence[str]) -> None:
        keys = list(dict.fromkeys(r.strip() for r in raw))
        try:
            ints = [int(k) for k in keys]
            if any(str(i) != k or i < 0 for i, k in zip(ints, keys)):
                raise ValueError("not canonical integers")
            self.to_int = dict(zip(keys, ints))
            self.keys: dict[int, str] | None = None
        except ValueError:
            self.to_int = {k: n for n, k in enumerate(keys, 1)}
            self.keys = {n: k for k, n in self.to_int.items()}


def assemble(
    ratings: Table,
    users: Sequence[str],
    items: Sequence[str],
    values: Sequence[float],
    order: Sequence[float] | None,
    catalogue: Mapping[str, tuple[str, str | None]],
    *,
    source: str,
    path: Path,
    domain: str,
    like_threshold: float | None,
    rating_scale: str | None,
    uid_tag: str,
    unknown: str = "refuse",
    item_table: Table | None = None,
) -> RatingData:
    """Build a :class:`RatingData` from parsed columns (shared by the CSV readers).

    ``catalogue`` maps the raw item id to ``(title, author)``; ``unknown="refuse"`` raises on an
    interaction whose item is not in it, ``"drop"`` drops it.
    """
    spec = get_domain(domain)
    lines = [line for line, _ in ratings.rows]
    keep = []
    for k, item in enumerate(items):
        if item.strip() in catalogue:
            keep.append(k)
        elif unknown == "refuse":
            where = f" ({item_table.path.name})" if item_table is not None else ""
            raise DataFormatError(f"item {item.strip()!r} is not in the items file{where}", path=ratings.path,
                                  line=lines[k], field="item", fix="use matching interaction and item files")
    if not keep:
        raise DataFormatError("no interaction is left with a known item", path=ratings.path,
                              fix="use matching interaction and item files")
    item_ids = _Ids(list(catalogue))
    user_ids = _Ids([users[k] for k in keep])
    df = pd.DataFrame({
        "user": [user_ids.to_int[users[k].strip()] for k in keep],
        "item": [item_ids.to_int[items[k].strip()] for k in keep],
        "rating": [float(values[k]) for k in keep],
        "timestamp": [order[k] if order is not None else lines[k] for k in keep],
    })
    if order is not None and all(float(v).is_integer() for v in df["timestamp"]):
        df["timestamp"] = df["timestamp"].astype("int64")
    titles = {item_ids.to_int[raw]: t for raw, (t, _) in catalogue.items()}
    authors = {item_ids.to_int[raw]: a for raw, (_, a) in catalogue.items()} if spec.has_author else None
    df["title"] = df["item"].map(titles)
    threshold = like_threshold_for(df["rating"], like_threshold, rating_scale)
    return RatingData(df, titles, source, path, domain=spec.name, authors=authors, like_threshold=threshold,
                      uid_tag=uid_tag, user_keys=user_ids.keys, item_keys=item_ids.keys)


def read_items(table: Table, id_col: str, title_col: str, author_col: str | None,
               logical: tuple[str, str, str] = ("item_id", "title", "author")) -> dict[str, tuple[str, str | None]]:
    """raw item id -> ``(title, author)`` of an items table.

    Raises:
        DataFormatError: a missing column, an item listed twice, an empty title.
    """
    i = table.column(id_col, logical[0])
    t = table.column(title_col, logical[1])
    a = table.column(author_col, logical[2], required=False) if author_col else None
    out: dict[str, tuple[str, str | None]] = {}
    for line, f in table.rows:
        key = f[i].strip()  # type: ignore[index]
        title = f[t].strip()  # type: ignore[index]
        if not key:
            raise DataFormatError("empty item id", path=table.path, line=line, field=id_col, fix="fix or remove that line")
        if not title:
            raise DataFormatError(f"item {key!r} has an empty title", path=table.path, line=line, field=title_col,
                                  fix="fix or remove that line")
        if key in out:
            raise DataFormatError(f"item id {key!r} is listed twice", path=table.path, line=line, field=id_col,
                                  fix="keep one line per item id")
        author = f[a].strip() if a is not None else ""
        out[key] = (title, author or None)
    return out


def load_interactions_csv(
    interactions: str | Path,
    items: str | Path,
    columns: Mapping[str, str] | None = None,
    domain: str = "movie",
    like_threshold: float | None = None,
    rating_scale: str | None = None,
    delimiter: str | None = None,
) -> RatingData:
    """Read an interactions CSV and an items CSV (see the module docstring).

    Args:
        interactions: one row per rating: user, item, rating[, timestamp | order].
        items: one row per item: id, title[, author].
        columns: logical name -> header name (keys of :data:`COLUMNS`).
        domain: a registered domain (``movie``, ``book``, ``game``...).
        like_threshold: ratings strictly above it are liked; default from ``rating_scale`` or the
            ratings (:func:`recircuit.data.ratings.like_threshold_for`).
        rating_scale: ``"1-5"``, ``"1-10"``... (see :data:`recircuit.data.ratings.RATING_SCALES`).
        delimiter: default: detected from each file's header line.

    Raises:
        DataFileMissing: a file is missing.
        DataFormatError: a malformed file (file, line, column and fix named).
        InputError: an unknown column name, domain or rating scale.
    """
    from recircuit.errors import InputError

    cols = dict(COLUMNS)
    for k, v in (columns or {}).items():
        if k not in COLUMNS:
            raise InputError(f"unknown column name {k!r}", field="columns", fix=f"name columns among {', '.join(COLUMNS)}")
        cols[k] = v
    get_domain(domain)
    table = read_table(interactions, delimiter)
    item_table = read_table(items, delimiter)
    catalogue = read_items(item_table, cols["item_id"], cols["title"], cols["author"])
    u, i, r = (table.column(cols[c], c) for c in ("user", "item", "rating"))
    ts = table.column(cols["timestamp"], "timestamp", required=bool(columns and "timestamp" in columns))
    od = table.column(cols["order"], "order", required=bool(columns and "order" in columns)) if ts is None else None
    users, its, values, order = [], [], [], []
    for line, f in table.rows:
        users.append(f[u])  # type: ignore[index]
        its.append(f[i])  # type: ignore[index]
        values.append(parse_number(f[r], table, line, cols["rating"]))  # type: ignore[index]
        if ts is not None:
            order.append(_time(f[ts], table, line, cols["timestamp"]))
        elif od is not None:
            order.append(parse_number(f[od], table, line, cols["order"]))
    tag = "t" if ts is not None else "o" if od is not None else "n"
    return assemble(table, users, its, values, order if (ts is not None or od is not None) else None, catalogue,
                    source="csv", path=table.path, domain=domain, like_threshold=like_threshold,
                    rating_scale=rating_scale, uid_tag=tag, item_table=item_table)
