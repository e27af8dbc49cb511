"""BookCrossing ratings (``BX-Book-Ratings.csv`` + ``BX-Books.csv``) as book-domain rating data.

Usage::

    from recircuit.data.bookcrossing import load_bookcrossing
    data = load_bookcrossing("data/BX-CSV-Dump")          # the folder holding both files
    data = load_bookcrossing("r.csv", books="b.csv")       # or the two files
    # then: recircuit.data.splits.tallrec_split(data, history_len=10)

Columns (as in the BookCrossing dump): ``BX-Book-Ratings.csv``: ``"User-ID";"ISBN";"Book-Rating"``;
``BX-Books.csv``: ``"ISBN";"Book-Title";"Book-Author";...`` (other columns ignored). Semicolon- or
comma-separated (taken from the header line), UTF-8 or Latin-1 (the dump's own encoding).

Decisions, as TALLRec's book data makes them:

* ``Book-Rating`` 0 is BookCrossing's *implicit* interaction (the user handled the book, gave no
  rating); those rows are dropped. Explicit ratings are 1-10, so by default a book is liked when
  rated 7 or more (``like_threshold`` 6, :data:`recircuit.data.ratings.RATING_SCALES` ``"1-10"``).
* The dump has no timestamps: a user's history is in file order, and sample uids carry the file
  line (``"u276725:i034545104X:n2"``).
* Ratings of an ISBN missing from ``BX-Books.csv`` are dropped (the dump has many); the count
  is logged. Items render as ``"Title" written by Author`` (domain ``book``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from recircuit.data.interactions_csv import assemble, parse_number, read_items, read_table
from recircuit.data.ratings import DataFormatError, RatingData

__all__ = ["BOOKS_FILE", "RATINGS_FILE", "load_bookcrossing"]

logger = logging.getLogger(__name__)

RATINGS_FILE = "BX-Book-Ratings.csv"
BOOKS_FILE = "BX-Books.csv"


def load_bookcrossing(path: str | Path, books: str | Path | None = None, like_threshold: float | None = None,
                      rating_scale: str | None = "1-10", delimiter: str | None = None) -> RatingData:
    """Read BookCrossing (see the module docstring).

    Args:
        path: the folder holding :data:`RATINGS_FILE` and :data:`BOOKS_FILE`, or the ratings file.
        books: the books file (default: :data:`BOOKS_FILE` beside the ratings file).
        like_threshold: ratings strictly above it are liked (default 6: 7-10 liked).
        rating_scale: used when ``like_threshold`` is not given.
        delimiter: default: detected from each header line.

    Raises:
        DataFileMissing: a file is missing.
        DataFormatError: a missing column, a rating that is not a number, no explicit rating left.
    """
    p = Path(path).expanduser()
    ratings_path = p / RATINGS_FILE if p.is_dir() else p
    books_path = Path(books).expanduser() if books is not None else ratings_path.parent / BOOKS_FILE
    table = read_table(ratings_path, delimiter)
    catalogue = read_items(read_table(books_path, delimiter), "ISBN", "Book-Title", "Book-Author")
    u, i, r = (table.column(c, c) for c in ("User-ID", "ISBN", "Book-Rating"))
    kept_rows, users, items, values = [], [], [], []
    implicit = unknown = 0
    for line, f in table.rows:
        value = parse_number(f[r], table, line, "Book-Rating")  # type: ignore[index]
        if value == 0:
            implicit += 1
            continue
        if f[i].strip() not in catalogue:  # type: ignore[index]
            unknown += 1
            continue
        kept_rows.append((line, f))
        users.append(f[u])  # type: ignore[index]
        items.append(f[i])  # type: ignore[index]
        values.append(value)
    if not kept_rows:
        raise DataFormatError(f"no explicit rating of a known book ({implicit} implicit 0 ratings, {unknown} of "
                              f"ISBNs not in {books_path.name})", path=ratings_path,
                              fix="BookCrossing ratings 1-10 are explicit; 0 means no rating and is dropped")
    if implicit or unknown:
        logger.info("BookCrossing: dropped %d implicit (0) ratings and %d ratings of books not in %s",
                    implicit, unknown, books_path.name)
    table.rows = kept_rows
    return assemble(table, users, items, values, None, catalogue, source="bookcrossing", path=ratings_path,
                    domain="book", like_threshold=like_threshold,
                    rating_scale=rating_scale if rating_scale or like_threshold is not None else "1-10", uid_tag="n")
