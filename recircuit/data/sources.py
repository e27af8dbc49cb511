"""Where the samples come from: one small, JSON-able data-source spec for every reader.

Usage::

    from recircuit.data.sources import DataSource
    src = DataSource()                                                  # MovieLens-100K (the asset)
    src = DataSource("movielens", path="../shared/data/ml-100k")
    src = DataSource("bookcrossing", path="data/BX-CSV-Dump", history_len=5)
    src = DataSource("csv", path="ratings.csv", items="games.csv", domain="game",
                     columns={"user": "player", "rating": "stars"}, rating_scale="1-10")
    src = DataSource("tallrec-json", path="TALLRec/data/book")          # train/valid/test.json
    split = src.split("tallrec")                                        # a recircuit.data.Split
    cat = src.catalogue()                   # the data set's own items, for catalogue corruptions
    DataSource.from_dict(src.to_dict()) == src

Formats:

* ``movielens``: a GroupLens or recbole ``ml-100k`` folder (``path``; default the cached asset);
* ``bookcrossing``: a folder with ``BX-Book-Ratings.csv`` and ``BX-Books.csv``, or the ratings
  file with ``items`` the books file (:mod:`recircuit.data.bookcrossing`);
* ``csv``: an interactions CSV (``path``) and an items CSV (``items``) with named ``columns``
  (:mod:`recircuit.data.interactions_csv`);
* ``tallrec-json``: TALLRec JSON (:mod:`recircuit.data.tallrec_json`): a folder with
  ``train.json``, ``valid.json`` and ``test.json``, or one file, cut 80/10/10 in file order.
  Records without a ``"user_id"`` key count as one user each (TALLRec's book data holds one
  sample per user), so user-level forgetting forgets those records.

The rating formats build prompts with the ``tallrec`` or ``random`` split preset, ``history_len``
items of history; ``domain`` (default: ``movie``, ``book`` for BookCrossing) picks the noun and
the item rendering, ``like_threshold``/``rating_scale`` the likes
(:func:`recircuit.data.ratings.like_threshold_for`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from recircuit.data.domains import Item, get_domain
from recircuit.data.prompts import Sample
from recircuit.data.ratings import DataFileMissing, RatingData
from recircuit.errors import InputError

__all__ = ["FORMATS", "Catalogue", "DataSource"]

logger = logging.getLogger(__name__)

#: The data formats a :class:`DataSource` reads.
FORMATS = ("movielens", "bookcrossing", "csv", "tallrec-json")
_TALLREC_PARTS = ("train", "valid", "test")


@dataclass
class Catalogue:
    """A data set's items, for corruptions that draw replacement items.

    Attributes:
        items: every item, with its id where known (TALLRec JSON: ``None``).
        domain: the items' domain.
        titles: item id -> title (items with ids).
        authors: item id -> author (domains that show one).
        interactions: the rating table (``user``, ``item`` columns), ``None`` for TALLRec JSON.
    """

    items: list[Item]
    domain: str
    titles: dict[int, str]
    authors: dict[int, str | None] | None = None
    interactions: pd.DataFrame | None = None


@dataclass(frozen=True)
class DataSource:
    """A data set and how to read it (see the module docstring).

    Attributes:
        format: one of :data:`FORMATS`.
        path: the folder or file (``movielens``: default the cached asset).
        items: the items CSV (``csv``; ``bookcrossing``: default ``BX-Books.csv`` beside the ratings).
        domain: a registered domain; default ``movie`` (``book`` for BookCrossing).
        columns: ``csv`` column names (:data:`recircuit.data.interactions_csv.COLUMNS`).
        like_threshold: ratings strictly above it are liked.
        rating_scale: ``"1-5"``, ``"1-10"``... when no threshold is given.
        history_len: history items per prompt (rating formats).
    """

    format: str = "movielens"
    path: str | None = None
    items: str | None = None
    domain: str | None = None
    columns: Mapping[str, str] | None = None
    like_threshold: float | None = None
    rating_scale: str | None = None
    history_len: int = 10

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"unknown data format {self.format!r}", field="format", fix=f"choose one of {', '.join(FORMATS)}")
        if self.path is not None and not isinstance(self.path, str | Path):
            raise InputError(f"path must be a string, got {self.path!r}", field="path")
        if self.path is not None:
            object.__setattr__(self, "path", str(self.path))
        if self.items is not None:
            object.__setattr__(self, "items", str(self.items))
        if self.format != "movielens" and self.path is None:
            raise InputError(f"the {self.format} format needs a path", field="path",
                             fix={"bookcrossing": "pass the folder holding BX-Book-Ratings.csv and BX-Books.csv",
                                  "csv": "pass the interactions CSV (and items: the items CSV)",
                                  "tallrec-json": "pass a TALLRec JSON file or a folder with train/valid/test.json"
                                  }[self.format])
        if self.format == "csv" and self.items is None:
            raise InputError("the csv format needs the items CSV", field="items",
                             fix="pass items=<items.csv> (--items-csv): one row per item with id, title[, author]")
        if self.items is not None and self.format not in ("csv", "bookcrossing"):
            raise InputError(f"items does not apply to the {self.format} format", field="items",
                             fix="leave it out")
        if self.columns is not None:
            from recircuit.data.interactions_csv import COLUMNS

            if self.format != "csv":
                raise InputError(f"columns do not apply to the {self.format} format", field="columns", fix="leave them out")
            if not isinstance(self.columns, Mapping) or not all(isinstance(v, str) for v in self.columns.values()):
                raise InputError(f"columns must map names to header names, got {self.columns!r}", field="columns",
                                 fix='e.g. {"user": "player", "rating": "stars"}')
            bad = sorted(set(self.columns) - set(COLUMNS))
            if bad:
                raise InputError(f"unknown column name {bad[0]!r}", field="columns",
                                 fix=f"name columns among {', '.join(COLUMNS)}")
            object.__setattr__(self, "columns", dict(self.columns))
        if self.domain is not None:
            get_domain(self.domain)
            if self.format in ("movielens", "bookcrossing", "tallrec-json"):
                fixed = {"movielens": "movie", "bookcrossing": "book", "tallrec-json": None}[self.format]
                if self.domain != fixed:
                    raise InputError(f"the {self.format} format sets its own domain"
                                     + (f" ({fixed})" if fixed else " (read from the prompts)"),
                                     field="domain", fix="leave domain out")
        if isinstance(self.history_len, bool) or not isinstance(self.history_len, int) or self.history_len < 1:
            raise InputError(f"history_len must be an integer >= 1, got {self.history_len!r}", field="history_len",
                             fix="e.g. history_len=10")
        if self.format in ("movielens", "tallrec-json") and (self.like_threshold is not None or self.rating_scale):
            raise InputError(f"the {self.format} format has its own labels", field="like_threshold",
                             fix="leave like_threshold and rating_scale out")
        from recircuit.data.ratings import like_threshold_for

        if self.like_threshold is not None or self.rating_scale is not None:
            like_threshold_for((), self.like_threshold, self.rating_scale)

    # ------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: ``format`` and the settings that differ from their defaults."""
        out: dict[str, Any] = {"format": self.format}
        for f in dataclasses.fields(self)[1:]:
            v = getattr(self, f.name)
            if v != f.default:
                out[f.name] = dict(v) if isinstance(v, Mapping) else v
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataSource:
        """Inverse of :meth:`to_dict`.

        Raises:
            InputError: not an object, an unknown key or a bad value (the field named).
        """
        if not isinstance(d, Mapping):
            raise InputError(f"a data source must be a JSON object, got {type(d).__name__}", field="source",
                             fix='e.g. {"format": "bookcrossing", "path": "data/bx"}')
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise InputError(f"unknown data source setting {unknown[0]!r}", field=unknown[0],
                             fix=f"its settings: {', '.join(names)}")
        return cls(**d)

    def describe(self) -> str:
        """A short label: ``"bookcrossing data/bx"``."""
        return f"{self.format} {self.path or '(asset)'}"

    # ------------------------------------------------------------------------------------------

    def load(self) -> RatingData:
        """The rating table (rating formats only).

        Raises:
            InputError: for ``tallrec-json`` (it holds prompts, not ratings).
            DataFormatError: a malformed file (file, line, field and fix named).
        """
        if self.format == "movielens":
            from recircuit.data.movielens import load_movielens

            return load_movielens(self.path)
        if self.format == "bookcrossing":
            from recircuit.data.bookcrossing import load_bookcrossing

            return load_bookcrossing(self.path, self.items, self.like_threshold,  # type: ignore[arg-type]
                                     self.rating_scale if self.rating_scale or self.like_threshold is not None else "1-10")
        if self.format == "csv":
            from recircuit.data.interactions_csv import load_interactions_csv

            return load_interactions_csv(self.path, self.items, self.columns, self.domain or "movie",  # type: ignore[arg-type]
                                         self.like_threshold, self.rating_scale)
        raise InputError("TALLRec JSON holds prompts, not ratings", field="format",
                         fix="use split() or load_tallrec_json() for it")

    def split(self, preset: str = "tallrec", **kwargs: Any):
        """The train/valid/test :class:`~recircuit.data.splits.Split` of this data.

        Rating formats: the split preset (``history_len`` from this source unless given).
        ``tallrec-json``: the folder's three files, or one file cut 80/10/10 in order.

        Raises:
            SplitError: a bad preset or parameter, too little data.
            DataFormatError: a malformed file.
        """
        from recircuit.data.splits import PRESETS, Split, SplitError, random_split, tallrec_split

        if self.format == "tallrec-json":
            if preset != "tallrec" or kwargs:
                raise SplitError("TALLRec JSON is split already (its train/valid/test files)", field="preset",
                                 fix="use the tallrec preset with no parameters")
            parts = self._tallrec_parts()
            params = {"source": "tallrec-json", "path": str(self.path)}
            return Split("tallrec-json", parts["train"], parts["valid"], parts["test"], params)
        if preset not in PRESETS:
            raise SplitError(f"unknown split preset {preset!r}", field="preset", fix=f"choose one of {', '.join(PRESETS)}")
        kwargs.setdefault("history_len", self.history_len)
        data = self.load()
        return tallrec_split(data, **kwargs) if preset == "tallrec" else random_split(data, **kwargs)

    def samples(self, part: str = "test", preset: str = "tallrec") -> list[Sample]:
        """One part of :meth:`split`; a single TALLRec JSON file is returned whole, whatever ``part``."""
        if self.format == "tallrec-json" and Path(self.path).is_file():  # type: ignore[arg-type]
            from recircuit.data.tallrec_json import load_tallrec_json

            return load_tallrec_json(self.path)  # type: ignore[arg-type]
        return list(getattr(self.split(preset), part))

    def _tallrec_parts(self) -> dict[str, list[Sample]]:
        from recircuit.data.tallrec_json import load_tallrec_json

        p = Path(self.path).expanduser()  # type: ignore[arg-type]
        if p.is_dir():
            missing = [f"{n}.json" for n in _TALLREC_PARTS if not (p / f"{n}.json").is_file()]
            if missing:
                raise DataFileMissing(f"lacks {', '.join(missing)}", path=p,
                                      fix="a TALLRec folder holds train.json, valid.json and test.json; or pass one file")
            parts = {n: load_tallrec_json(p / f"{n}.json") for n in _TALLREC_PARTS}
        else:
            every = load_tallrec_json(p)
            a, b = int(len(every) * 0.8), int(len(every) * 0.9)
            parts = {"train": every[:a], "valid": every[a:b], "test": every[b:]}
        # records without a user id count as one user each (TALLRec's book data: one sample per user)
        taken = {s.user_id for ss in parts.values() for s in ss if s.user_id is not None}
        next_id, assigned = 1, 0
        for name in _TALLREC_PARTS:
            out = []
            for s in parts[name]:
                if s.user_id is None:
                    while next_id in taken:
                        next_id += 1
                    s = dataclasses.replace(s, user_id=next_id)
                    taken.add(next_id)
                    assigned += 1
                out.append(s)
            parts[name] = out
        if assigned:
            logger.info("%s: %d records carry no user_id; each counts as its own user", p, assigned)
        return parts

    def catalogue(self) -> Catalogue:
        """The data set's items (rating formats: the item table; TALLRec JSON: every item its prompts show)."""
        if self.format != "tallrec-json":
            data = self.load()
            items = [Item(t, (data.authors or {}).get(i), i) for i, t in data.titles.items()]
            return Catalogue(items, data.domain, dict(data.titles), data.authors, data.interactions)
        seen: dict[tuple[str, str | None], Item] = {}
        domain = None
        for samples in self._tallrec_parts().values():
            for s in samples:
                if not s.structured:
                    continue
                domain = domain or s.domain
                for it in (*s.liked_items, *s.disliked_items, s.target_item):
                    seen.setdefault(it.key, Item(it.title, it.author))
        return Catalogue(list(seen.values()), domain or "movie", {})
