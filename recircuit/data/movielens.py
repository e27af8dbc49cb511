"""MovieLens-100K loading: GroupLens ``u.*`` files or recbole ``ml-100k.*`` files, one table.

Usage::

    from recircuit.data.movielens import load_movielens
    ml = load_movielens()                      # from the asset cache (fetching if needed)
    ml = load_movielens("/data/ml-100k")       # a directory with GroupLens u.data/u.item/u.user
    ml.interactions.head()                     # user, item, rating, timestamp, title

Both sources give the same table. recbole keeps the year in its own column, so titles are
rebuilt as ``"Title (Year)"`` (no year where it is missing). Interactions keep the file order,
which the ``tallrec`` split preset relies on.

Titles end up verbatim in prompts, so a file that would garble one is refused, naming the file
and line: GroupLens ``u.item`` is Latin-1, and a line holding control characters (C0, DEL or the
C1 range 0x80-0x9F, never text in Latin-1) or a UTF-8 sequence (a file re-saved as UTF-8, which
Latin-1 would decode as ``"Ã©"``) is refused; recbole files and ``u.data`` are UTF-8, and bytes
that are not UTF-8, control characters or U+FFFD replacement characters are refused too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recircuit._io import decode_text
from recircuit.data.ratings import DataFileMissing, DataFormatError, RatingData

__all__ = ["DataFileMissing", "DataFormatError", "MovieLens", "load_movielens", "read_grouplens", "read_recbole"]


#: Bytes that are never text in Latin-1 (tab allowed): C0 controls, DEL and the C1 range.
_LATIN1_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
#: A multi-byte UTF-8 sequence: in a Latin-1 file, the sign of text re-saved as UTF-8.
_UTF8_SEQ = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
#: Characters that do not belong in a decoded text line (tab allowed).
_TEXT_BAD = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ufffd]")


@dataclass
class MovieLens(RatingData):
    """Interactions plus item titles: a :class:`~recircuit.data.ratings.RatingData` in the movie
    domain, liked when ``rating > 3``, ordered by timestamp.

    Attributes:
        interactions: columns ``user, item, rating, timestamp, title``, in file order.
        titles: item id -> title with year.
        source: ``"grouplens"`` or ``"recbole"``.
        path: the directory read.
    """


def _int(value: str, path: Path, lineno: int, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataFormatError(
            f"{what} {value!r} is not an integer", path=path, line=lineno,
            fix="fix or remove that line (GroupLens u.data is 'user<TAB>item<TAB>rating<TAB>timestamp')",
        ) from None


def _float(value: str, path: Path, lineno: int, what: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if not math.isfinite(x):
        raise DataFormatError(f"{what} {value!r} is not a finite number", path=path, line=lineno,
                              fix="fix or remove that line")
    return x


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataFileMissing(
            "file is missing", path=path,
            fix="point --data-dir at a directory holding GroupLens ml-100k files (u.data, u.item, u.user) "
                "or run `recircuit assets fetch movielens-100k`",
        )
    data = path.read_bytes()
    if not data.strip():
        raise DataFormatError("file is empty", path=path, fix="re-download it with `recircuit assets fetch`")
    return data


def _check_text_line(line: str, path: Path, lineno: int) -> str:
    bad = _TEXT_BAD.search(line)
    if bad:
        what = "a U+FFFD replacement character" if bad.group() == "\ufffd" else f"control character {bad.group()!r}"
        raise DataFormatError(f"{what} at column {bad.start() + 1}", path=path, line=lineno,
                              fix="the file is damaged: fix that line or fetch a clean copy (`recircuit assets fetch`)")
    return line


def _read_lines(path: Path, encoding: str) -> list[str]:
    """The file's lines, decoded; bytes that would garble text raise with the file and line."""
    data = _read_bytes(path)
    if encoding != "latin-1":
        return [_check_text_line(line, path, k) for k, line in enumerate(decode_text(data, path, encoding).split("\n"), 1)]
    lines = []
    for k, raw in enumerate(data.split(b"\n"), 1):
        raw = raw.removesuffix(b"\r")
        bad = _LATIN1_BAD.search(raw)
        if bad:
            raise DataFormatError(
                f"byte 0x{bad.group()[0]:02x} at column {bad.start() + 1} is a control character, not Latin-1 text",
                path=path, line=k, fix="the file is damaged: fix that line or fetch a clean copy (`recircuit assets fetch`)",
            )
        seq = _UTF8_SEQ.search(raw)
        if seq:
            raise DataFormatError(
                f"bytes {seq.group().hex(' ')} at column {seq.start() + 1} are UTF-8 ({seq.group().decode('utf-8')!r}), "
                "but GroupLens u.item is Latin-1 (ISO-8859-1)", path=path, line=k,
                fix=f"convert the file back to Latin-1 (iconv -f utf-8 -t latin1 {path.name}) or fetch a clean copy",
            )
        lines.append(raw.decode("latin-1"))
    return lines


def _add_title(titles: dict[int, str], item: int, title: str, path: Path, lineno: int) -> None:
    if not title.strip():
        raise DataFormatError(f"item {item} has an empty title", path=path, line=lineno, fix="fix that line")
    if item in titles:
        raise DataFormatError(f"item id {item} is listed twice", path=path, line=lineno,
                              fix="keep one line per item id")
    titles[item] = title


def _parse_ratings(rows: list[tuple[int, list[str]]], path: Path) -> tuple[pd.DataFrame, list[int]]:
    """``rows``: (1-based line number, fields) pairs; returns the table and each row's line number."""
    users, items, ratings, stamps, linenos = [], [], [], [], []
    for lineno, f in rows:
        linenos.append(lineno)
        if len(f) < 4:
            raise DataFormatError(f"expected 4 fields (user, item, rating, timestamp), got {len(f)}", path=path,
                                  line=lineno, fix="fix or remove that line")
        users.append(_int(f[0], path, lineno, "user id"))
        items.append(_int(f[1], path, lineno, "item id"))
        ratings.append(_float(f[2], path, lineno, "rating"))
        stamps.append(int(_float(f[3], path, lineno, "timestamp")))
    df = pd.DataFrame({"user": users, "item": items, "rating": ratings, "timestamp": stamps})
    return df, linenos


def _attach_titles(df: pd.DataFrame, titles: dict[int, str], data_path: Path, linenos: list[int]) -> pd.DataFrame:
    unknown = sorted(set(df["item"]) - set(titles))
    if unknown:
        row = int(df.index[df["item"] == unknown[0]][0])
        raise DataFormatError(
            f"item id {unknown[0]} has no title in the item file ({len(unknown)} unknown item ids in all)",
            path=data_path, line=linenos[row], fix="use matching interaction and item files",
        )
    df["title"] = df["item"].map(titles)
    return df


def read_grouplens(directory: str | Path) -> MovieLens:
    """Read GroupLens ``u.data`` (tab-separated) and ``u.item`` (``|``-separated, Latin-1)."""
    d = Path(directory)
    titles: dict[int, str] = {}
    item_path = d / "u.item"
    for lineno, line in enumerate(_read_lines(item_path, "latin-1"), 1):
        if not line.strip():
            continue
        f = line.split("|")
        if len(f) < 2:
            raise DataFormatError("expected '|'-separated fields 'id|title|...'", path=item_path, line=lineno,
                                  fix="fix or remove that line")
        _add_title(titles, _int(f[0], item_path, lineno, "item id"), f[1], item_path, lineno)
    data_path = d / "u.data"
    lines = _read_lines(data_path, "utf-8")
    # keep the file's line numbers: blank lines are skipped, not renumbered
    numbered = [(k, line.split("\t")) for k, line in enumerate(lines, 1) if line.strip()]
    df, linenos = _parse_ratings(numbered, data_path)
    return MovieLens(_attach_titles(df, titles, data_path, linenos), titles, "grouplens", d)


def _recbole_title(title: str, year: str) -> str:
    year = year.strip()
    return f"{title} ({year})" if year.isdigit() else title


def read_recbole(directory: str | Path) -> MovieLens:
    """Read recbole atomic files ``ml-100k.inter`` and ``ml-100k.item`` (tab-separated, with headers)."""
    d = Path(directory)
    item_path = d / "ml-100k.item"
    lines = _read_lines(item_path, "utf-8")
    header = lines[0].split("\t")
    try:
        i_id, i_title, i_year = (header.index(c) for c in ("item_id:token", "movie_title:token_seq", "release_year:token"))
    except ValueError:
        raise DataFormatError(f"header {header} lacks item_id/movie_title/release_year", path=item_path, line=1,
                              fix="use recbole's ml-100k.item") from None
    titles: dict[int, str] = {}
    for lineno, line in enumerate(lines[1:], 2):
        if line.strip():
            f = line.split("\t")
            if len(f) <= max(i_id, i_title):
                raise DataFormatError(f"expected at least {max(i_id, i_title) + 1} tab-separated fields, got {len(f)}",
                                      path=item_path, line=lineno, fix="fix or remove that line")
            title = _recbole_title(f[i_title], f[i_year] if len(f) > i_year else "")
            _add_title(titles, _int(f[i_id], item_path, lineno, "item id"), title, item_path, lineno)
    inter_path = d / "ml-100k.inter"
    lines = _read_lines(inter_path, "utf-8")
    header = lines[0].split("\t")
    cols = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
    if not all(c in header for c in cols):
        raise DataFormatError(f"header {header} lacks one of {cols}", path=inter_path, line=1,
                              fix="use recbole's ml-100k.inter")
    idx = [header.index(c) for c in cols]
    rows = [(k, [f[i] if i < len(f) else "" for i in idx])
            for k, f in ((k, line.split("\t")) for k, line in enumerate(lines[1:], 2) if line.strip())]
    df, linenos = _parse_ratings(rows, inter_path)
    return MovieLens(_attach_titles(df, titles, inter_path, linenos), titles, "recbole", d)


def load_movielens(data_dir: str | Path | None = None) -> MovieLens:
    """Load MovieLens-100K from ``data_dir`` (GroupLens or recbole files) or the asset cache.

    Raises:
        DataFileMissing: (a ``FileNotFoundError``) the directory holds neither format, or a file
            is missing.
        DataFormatError: a file is malformed or holds bytes that would garble a title (the
            message names the file and line, and the fix).
        recircuit.assets.ChecksumError: with no ``data_dir``, a cached file was changed.
    """
    if data_dir is None:
        from recircuit.assets import fetch_asset

        data_dir = fetch_asset("movielens-100k")
    d = Path(data_dir).expanduser()
    if (d / "u.data").exists():
        return read_grouplens(d)
    if (d / "ml-100k.inter").exists():
        return read_recbole(d)
    if (d / "ml-100k" / "u.data").exists():
        return read_grouplens(d / "ml-100k")
    raise DataFileMissing(
        "holds neither GroupLens files (u.data, u.item) nor recbole files (ml-100k.inter, ml-100k.item)",
        path=d, fix="unzip ml-100k.zip there, or omit --data-dir to use the asset cache",
    )
