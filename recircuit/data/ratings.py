"""Rating tables of any domain (the common form every builder returns) and the like-threshold rule.

Usage::

    from recircuit.data.ratings import RatingData, like_threshold_for
    like_threshold_for([1, 5, 3])                  # 3.0: a 1-5 scale, ratings > 3 are liked
    like_threshold_for([2, 10, 7])                 # 6.0: a 1-10 scale, ratings >= 7 are liked
    like_threshold_for([2, 10], scale="1-10")      # named scale
    like_threshold_for([2, 10], threshold=8)       # explicit: ratings > 8 are liked

A :class:`RatingData` is what :func:`recircuit.data.load_movielens`,
:func:`recircuit.data.bookcrossing.load_bookcrossing` and
:func:`recircuit.data.interactions_csv.load_interactions_csv` return, and what the split presets
(:mod:`recircuit.data.splits`) turn into prompts: one row per interaction, with integer user and
item ids, the rating, an order key (the ``timestamp`` column: a timestamp, an explicit order
column, or the file line where the data has neither) and the item title (and author).

**Like threshold.** A rating strictly above the threshold is a like (the ``User Preference``
list and a ``"Yes."`` label). With no explicit threshold it comes from the rating scale
(:data:`RATING_SCALES`): ``1-5`` (and ``0-5``) -> 3, TALLRec's ``rating > 3``; ``1-10`` (and
``0-10``) -> 6, i.e. 7 and up; ``0-1`` -> 0.5 (binary). With no scale either it is inferred from
the largest rating (at most 1, 5 or 10); larger ratings need an explicit threshold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recircuit.errors import InputError

__all__ = ["RATING_SCALES", "DataFileMissing", "DataFormatError", "RatingData", "like_threshold_for"]

logger = logging.getLogger(__name__)


class DataFormatError(InputError):
    """A data file is malformed; the message names the file and line, and the fix."""


class DataFileMissing(DataFormatError, FileNotFoundError):
    """A data file or folder is missing (also a :class:`FileNotFoundError`)."""


#: Rating scale -> like threshold (ratings strictly above it are liked).
RATING_SCALES: dict[str, float] = {"0-1": 0.5, "1-5": 3.0, "0-5": 3.0, "1-10": 6.0, "0-10": 6.0}


def like_threshold_for(ratings: Iterable[float], threshold: float | None = None, scale: str | None = None) -> float:
    """The like threshold of a data set (see the module docstring).

    Args:
        ratings: the data set's ratings (used only when neither ``threshold`` nor ``scale`` is given).
        threshold: an explicit threshold; wins when given.
        scale: a key of :data:`RATING_SCALES`.

    Raises:
        InputError: an unknown scale, a non-finite threshold, or ratings above 10 with neither given.
    """
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
            raise InputError(f"like threshold {threshold!r} is not a finite number", field="like_threshold",
                             fix="pass a number; ratings strictly above it are liked")
        return float(threshold)
    if scale is not None:
        if scale not in RATING_SCALES:
            raise InputError(f"unknown rating scale {scale!r}", field="rating_scale",
                             fix=f"choose one of {', '.join(RATING_SCALES)}, or pass like_threshold")
        return RATING_SCALES[scale]
    top = max((float(r) for r in ratings), default=5.0)
    for limit, name in ((1, "0-1"), (5, "1-5"), (10, "1-10")):
        if top <= limit:
            logger.warning("no like threshold or rating scale given: the largest rating is %g, so the %s scale is "
                           "assumed (liked: rating > %g); pass like_threshold or rating_scale to choose",
                           top, name, RATING_SCALES[name])
            return RATING_SCALES[name]
    raise InputError(f"ratings go up to {top:g}, which is no known scale", field="like_threshold",
                     fix="pass like_threshold (ratings strictly above it are liked) or rating_scale")


@dataclass
class RatingData:
    """Interactions plus item titles (and authors), in one domain.

    Attributes:
        interactions: columns ``user, item, rating, timestamp, title`` (``timestamp`` is the order
            key: a timestamp, an order column, or the file line), in file order.
        titles: item id -> title.
        source: the reader (``"grouplens"``, ``"recbole"``, ``"bookcrossing"``, ``"csv"``).
        path: the file or directory read.
        domain: a registered domain name (:mod:`recircuit.data.domains`).
        authors: item id -> author, for domains that show one.
        like_threshold: ratings strictly above it are liked.
        uid_tag: the letter before the order key in sample uids (``t`` timestamp, ``o`` order
            column, ``n`` file line).
        user_keys: user id -> the data set's own id, where it is not that integer (uids use it).
        item_keys: item id -> the data set's own id (e.g. an ISBN), where it is not that integer.
    """

    interactions: pd.DataFrame
    titles: dict[int, str]
    source: str
    path: Path
    domain: str = "movie"
    authors: dict[int, str | None] | None = None
    like_threshold: float = 3.0
    uid_tag: str = "t"
    user_keys: dict[int, str] | None = None
    item_keys: dict[int, str] | None = None

    def uid(self, user: int, item: int, order: object) -> str:
        """The sample uid ``"u<user>:i<item>:<tag><order>"`` in the data set's own ids."""
        u = (self.user_keys or {}).get(user, user)
        i = (self.item_keys or {}).get(item, item)
        return f"u{u}:i{i}:{self.uid_tag}{order}"

    @property
    def default_prompts(self) -> bool:
        """True for TALLRec's movie prompts with ``rating > 3`` (MovieLens' split parameters stay as they were)."""
        return self.domain == "movie" and self.like_threshold == 3.0 and self.uid_tag == "t"
