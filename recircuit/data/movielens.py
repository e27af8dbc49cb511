"""MovieLens-100K loading: GroupLens ``u.*`` files or recbole ``ml-100k.*`` files, one table.

Usage::

    from recircuit.data.movielens import load_movielens
    ml = load_movielens()                      # from the asset cache (fetching if needed)
    ml = load_movielens("/data/ml-100k")       # a directory with GroupLens u.data/u.item/u.user
    ml.interactions.head()                     # user, item, rating, timestamp, title

Both sources give the same table. recbole keeps the year in its own column, so titles are
rebuilt as ``"Title (Year)"`` (no year where it is missing). Interactions keep the file order,
which the ``tallrec`` split preset relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class DataFormatError(ValueError):
    """A data file is malformed; the message names the file and line."""


@dataclass
class MovieLens:
    """Interactions plus item titles.

    Attributes:
        interactions: columns ``user, item, rating, timestamp, title``, in file order.
        titles: item id -> title with year.
        source: ``"grouplens"`` or ``"recbole"``.
        path: the directory read.
    """

    interactions: pd.DataFrame
    titles: dict[int, str]
    source: str
    path: Path


def _int(value: str, path: Path, lineno: int, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataFormatError(
            f"{path}, line {lineno}: {what} {value!r} is not an integer. Fix or remove that line "
            "(GroupLens u.data is 'user<TAB>item<TAB>rating<TAB>timestamp')."
        ) from None


def _float(value: str, path: Path, lineno: int, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataFormatError(
            f"{path}, line {lineno}: {what} {value!r} is not numeric. Fix or remove that line."
        ) from None


def _read_lines(path: Path, encoding: str) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing. Point --data-dir at a directory holding GroupLens ml-100k files "
            "(u.data, u.item, u.user) or run `recircuit assets fetch movielens-100k`."
        )
    lines = path.read_text(encoding=encoding).splitlines()
    if not any(line.strip() for line in lines):
        raise DataFormatError(f"{path} is empty. Re-download it with `recircuit assets fetch`.")
    return lines


def _parse_ratings(rows: list[list[str]], path: Path, first_line: int) -> pd.DataFrame:
    users, items, ratings, stamps = [], [], [], []
    for k, f in enumerate(rows):
        lineno = first_line + k
        if len(f) < 4:
            raise DataFormatError(
                f"{path}, line {lineno}: expected 4 fields (user, item, rating, timestamp), got "
                f"{len(f)}. Fix or remove that line."
            )
        users.append(_int(f[0], path, lineno, "user id"))
        items.append(_int(f[1], path, lineno, "item id"))
        ratings.append(_float(f[2], path, lineno, "rating"))
        stamps.append(int(_float(f[3], path, lineno, "timestamp")))
    return pd.DataFrame({"user": users, "item": items, "rating": ratings, "timestamp": stamps})


def _attach_titles(df: pd.DataFrame, titles: dict[int, str], data_path: Path) -> pd.DataFrame:
    unknown = sorted(set(df["item"]) - set(titles))
    if unknown:
        row = int(df.index[df["item"].isin(unknown)][0])
        raise DataFormatError(
            f"{data_path}, line {row + 1}: item id {unknown[0]} has no title in the item file "
            f"({len(unknown)} unknown item ids in all). Use matching interaction and item files."
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
            raise DataFormatError(f"{item_path}, line {lineno}: expected '|'-separated fields 'id|title|...'.")
        titles[_int(f[0], item_path, lineno, "item id")] = f[1]
    data_path = d / "u.data"
    rows = [line.split("\t") for line in _read_lines(data_path, "utf-8") if line.strip()]
    df = _parse_ratings(rows, data_path, 1)
    return MovieLens(_attach_titles(df, titles, data_path), titles, "grouplens", d)


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
        raise DataFormatError(f"{item_path}, line 1: header {header} lacks item_id/movie_title/release_year.") from None
    titles = {}
    for lineno, line in enumerate(lines[1:], 2):
        if line.strip():
            f = line.split("\t")
            titles[_int(f[i_id], item_path, lineno, "item id")] = _recbole_title(f[i_title], f[i_year] if len(f) > i_year else "")
    inter_path = d / "ml-100k.inter"
    lines = _read_lines(inter_path, "utf-8")
    header = lines[0].split("\t")
    cols = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
    if not all(c in header for c in cols):
        raise DataFormatError(f"{inter_path}, line 1: header {header} lacks one of {cols}.")
    idx = [header.index(c) for c in cols]
    rows = [[f[i] if i < len(f) else "" for i in idx] for f in (line.split("\t") for line in lines[1:] if line.strip())]
    df = _parse_ratings(rows, inter_path, 2)
    return MovieLens(_attach_titles(df, titles, inter_path), titles, "recbole", d)


def load_movielens(data_dir: str | Path | None = None) -> MovieLens:
    """Load MovieLens-100K from ``data_dir`` (GroupLens or recbole files) or the asset cache.

    Raises:
        FileNotFoundError: the directory holds neither format.
        DataFormatError: a file is malformed (the message names file and line).
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
    raise FileNotFoundError(
        f"{d} holds neither GroupLens files (u.data, u.item) nor recbole files (ml-100k.inter, "
        "ml-100k.item). Unzip ml-100k.zip there, or omit --data-dir to use the asset cache."
    )
