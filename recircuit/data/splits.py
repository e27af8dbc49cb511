"""Train/valid/test split presets and forget/retain splits for unlearning.

Usage::

    from recircuit.data.splits import build_split, forget_retain_split
    split = build_split("tallrec")                      # TALLRec's published movie split
    split = build_split("random", seed=0, history_len=10, samples_per_user=5)
    fr = forget_retain_split(split, level="user", fraction=0.2, seed=0)
    fr.forget, fr.retain                                # disjoint lists of Sample

``tallrec`` walks users in order of first appearance in ``u.data``, sorts each user's
interactions by timestamp (stable), takes every window of 10 history items followed by a
target, keeps the last 10,000 windows and cuts them 80/10/10 in order. Built from the GroupLens
files it reproduces TALLRec's ``data/movie/{valid,test}.json`` byte for byte (tested).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recircuit._io import atomic_write_text
from recircuit.data.movielens import load_movielens
from recircuit.data.prompts import Sample, make_sample
from recircuit.data.ratings import RatingData
from recircuit.data.requests import RequestError, check_request


class SplitError(RequestError):
    """A split request cannot be satisfied (bad argument, empty set, too little history...).

    A :class:`recircuit.data.requests.RequestError` (an :class:`recircuit.errors.InputError`), so the
    command line prints it as one line.
    """


@dataclass
class Split:
    """Train/valid/test lists of samples plus a description that identifies how they were made."""

    name: str
    train: list[Sample]
    valid: list[Sample]
    test: list[Sample]
    params: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-able description (preset, parameters, sizes, content hash)."""
        return {
            "name": self.name,
            "params": self.params,
            "sizes": {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)},
            "sha256": self.fingerprint(),
        }

    def fingerprint(self) -> str:
        """sha256 over every sample's uid, prompt and label, in order."""
        h = hashlib.sha256()
        for part in (self.train, self.valid, self.test):
            for s in part:
                h.update(f"{s.uid}\x1f{s.input}\x1f{s.output}\x1e".encode())
            h.update(b"\x1d")
        return h.hexdigest()

    def save_tallrec(self, directory: str | Path) -> list[Path]:
        """Write ``train.json``, ``valid.json`` and ``test.json`` in TALLRec's format."""
        return [write_tallrec_json(getattr(self, part), Path(directory) / f"{part}.json") for part in ("train", "valid", "test")]


def write_tallrec_json(samples: Sequence[Sample], path: str | Path) -> Path:
    """Write samples as TALLRec JSON (``json.dump(..., indent=4)``), atomically."""
    return atomic_write_text(path, json.dumps([s.to_tallrec() for s in samples], indent=4))


def _windows(user: int, rows: pd.DataFrame, history_len: int, data: RatingData | None = None) -> list[Sample]:
    items = rows["item"].tolist()
    titles = rows["title"].tolist()
    ratings = rows["rating"].tolist()
    stamps = rows["timestamp"].tolist()
    out = []
    for t in range(history_len, len(items)):
        hist = list(zip(items[t - history_len : t], titles[t - history_len : t], ratings[t - history_len : t]))
        target = (items[t], titles[t], ratings[t])
        if data is None or data.default_prompts and not data.user_keys and not data.item_keys:
            out.append(make_sample(user, hist, target, timestamp=stamps[t]))
        else:
            out.append(make_sample(user, hist, target, domain=data.domain, like_threshold=data.like_threshold,
                                   authors=data.authors, uid=data.uid(user, items[t], stamps[t])))
    return out


def _params(ml: RatingData, **params: object) -> dict:
    """A split's parameters: ``params`` plus the source, and the domain and threshold where not TALLRec's movie ones."""
    out = {**params, "source": ml.source}
    if not ml.default_prompts:
        out |= {"domain": ml.domain, "like_threshold": ml.like_threshold}
    return out


def _group_by_user(df: pd.DataFrame) -> dict[int, pd.DataFrame]:
    order = pd.unique(df["user"])
    groups = {int(u): g for u, g in df.groupby("user", sort=False)}
    return {int(u): groups[int(u)].sort_values("timestamp", kind="stable") for u in order}


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _need_int(name: str, value: object, low: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_int(value) or value < low:
        raise SplitError(f"{name} must be an integer >= {low}{' or None' if optional else ''}, got {value!r}",
                         field=name, fix=f"pass a whole number of at least {low}")


def _need_fraction(name: str, value: object, closed_low: bool = True) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not (0 <= float(value) < 1 if closed_low else 0 < float(value) < 1):
        rng = "[0, 1)" if closed_low else "(0, 1)"
        raise SplitError(f"{name} must be a number in {rng}, got {value!r}", field=name,
                         fix=f"pass a fraction in {rng}, e.g. {name}=0.1")


def _check_tallrec_args(history_len: int = 10, n_windows: int = 10_000) -> None:
    _need_int("history_len", history_len, 1)
    _need_int("n_windows", n_windows, 1)


def _check_random_args(seed: int = 0, history_len: int = 10, samples_per_user: int | None = None,
                       valid_frac: float = 0.1, test_frac: float = 0.1) -> None:
    _need_int("seed", seed, 0)
    _need_int("history_len", history_len, 1)
    _need_int("samples_per_user", samples_per_user, 3, optional=True)
    _need_fraction("valid_frac", valid_frac)
    _need_fraction("test_frac", test_frac)
    if valid_frac + test_frac >= 1:
        raise SplitError(f"valid_frac + test_frac = {valid_frac + test_frac:g} leaves no training samples",
                         field="valid_frac/test_frac", fix="keep their sum below 1")


def tallrec_split(ml: RatingData, history_len: int = 10, n_windows: int = 10_000) -> Split:
    """TALLRec's movie split: last ``n_windows`` sliding windows, cut 80/10/10 in order.

    Raises:
        SplitError: ``history_len`` or ``n_windows`` not a positive integer; no user has more
            than ``history_len`` interactions.
    """
    _check_tallrec_args(history_len, n_windows)
    windows: list[Sample] = []
    for user, rows in _group_by_user(ml.interactions).items():
        windows.extend(_windows(user, rows, history_len, ml))
    if not windows:
        raise SplitError(f"No user has more than {history_len} interactions; nothing to build.")
    windows = windows[-n_windows:]
    n = len(windows)
    a, b = int(n * 0.8), int(n * 0.9)
    return Split("tallrec", windows[:a], windows[a:b], windows[b:],
                 _params(ml, history_len=history_len, n_windows=n_windows))


def random_split(
    ml: RatingData,
    seed: int = 0,
    history_len: int = 10,
    samples_per_user: int | None = None,
    valid_frac: float = 0.1,
    test_frac: float = 0.1,
) -> Split:
    """A seeded per-user split: each user's windows are shuffled and cut into train/valid/test.

    Args:
        seed: RNG seed.
        history_len: history items per prompt.
        samples_per_user: keep at most this many windows per user (sampled), ``None`` keeps all.
        valid_frac, test_frac: per-user fractions for valid and test.

    Raises:
        SplitError: a bad argument (named, with its valid range); no user has enough history.
    """
    _check_random_args(seed, history_len, samples_per_user, valid_frac, test_frac)
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    too_short = 0
    for user, rows in _group_by_user(ml.interactions).items():
        w = _windows(user, rows, history_len, ml)
        if len(w) < 3:
            too_short += 1
            continue
        idx = rng.permutation(len(w))
        if samples_per_user is not None:
            idx = idx[:samples_per_user]
        n = len(idx)
        n_test = max(1, int(round(n * test_frac)))
        n_valid = max(1, int(round(n * valid_frac)))
        test += [w[i] for i in idx[:n_test]]
        valid += [w[i] for i in idx[n_test : n_test + n_valid]]
        train += [w[i] for i in idx[n_test + n_valid :]]
    if not train:
        raise SplitError(
            f"No user has at least {history_len + 3} interactions ({too_short} users too short); "
            "lower history_len."
        )
    return Split("random", train, valid, test, _params(ml, seed=seed, history_len=history_len,
                 samples_per_user=samples_per_user, valid_frac=valid_frac, test_frac=test_frac))


PRESETS = ("tallrec", "random")
_PRESET_CHECKS = {"tallrec": _check_tallrec_args, "random": _check_random_args}


def build_split(preset: str = "tallrec", data_dir: str | Path | None = None, source=None, **kwargs) -> Split:
    """Build a named split preset from MovieLens-100K (``data_dir`` or the asset cache) or ``source``.

    Args:
        preset: ``"tallrec"`` or ``"random"``.
        data_dir: GroupLens or recbole directory; default: the cached asset.
        source: a :class:`recircuit.data.sources.DataSource` (BookCrossing, CSV, TALLRec JSON...)
            instead of ``data_dir``; see :meth:`~recircuit.data.sources.DataSource.split`.
        **kwargs: preset parameters (see :func:`tallrec_split`, :func:`random_split`).

    Raises:
        SplitError: an unknown preset or parameter, or a bad parameter value (checked before the
            data is read).
        recircuit.data.DataFormatError: a malformed data file (file and line named).
    """
    if preset not in PRESETS:
        raise SplitError(f"unknown split preset {preset!r}", field="preset", fix=f"choose one of {', '.join(PRESETS)}")
    check = _PRESET_CHECKS[preset]
    allowed = list(inspect.signature(check).parameters)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise SplitError(f"preset {preset!r} takes no parameter {unknown[0]!r}", field=unknown[0],
                         fix=f"its parameters are {', '.join(allowed)}")
    check(**kwargs)
    if source is not None:
        if data_dir is not None:
            raise SplitError("both data_dir and source are given", field="data_dir", fix="pass one of them")
        return source.split(preset, **kwargs)
    ml = load_movielens(data_dir)
    return tallrec_split(ml, **kwargs) if preset == "tallrec" else random_split(ml, **kwargs)


def cap_per_user(samples: Sequence[Sample], per_user: int, limit: int | None = None) -> list[Sample]:
    """Keep at most ``per_user`` samples of each user (in order), then the first ``limit``.

    TALLRec's split holds long runs of one user's windows; capping gives a training pool that
    spans many users, which user-level forgetting needs.

    Raises:
        SplitError: ``per_user`` not a positive integer, ``limit`` neither ``None`` nor one.
    """
    _need_int("per_user", per_user, 1)
    _need_int("limit", limit, 1, optional=True)
    seen: dict[int | None, int] = {}
    out = []
    for s in samples:
        if seen.get(s.user_id, 0) < per_user:
            seen[s.user_id] = seen.get(s.user_id, 0) + 1
            out.append(s)
            if limit is not None and len(out) >= limit:
                break
    return out


@dataclass
class ForgetRetain:
    """A deletion request: the forget and retain parts of a training set."""

    forget: list[Sample]
    retain: list[Sample]
    level: str
    params: dict = field(default_factory=dict)

    @property
    def forget_users(self) -> list[int]:
        """Sorted distinct user ids in the forget set."""
        return sorted({s.user_id for s in self.forget if s.user_id is not None})

    def to_dict(self) -> dict:
        """JSON-able description: level, parameters, sizes, forgotten uids."""
        return {"level": self.level, "params": self.params, "n_forget": len(self.forget),
                "n_retain": len(self.retain), "forget_uids": [s.uid for s in self.forget]}


LEVELS = ("user", "interaction")


def _check_ids(name: str, ids: Sequence[int] | None) -> list[int] | None:
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise SplitError(f"expected a list of integer ids, got {ids!r}", field=name, fix=f"pass {name}=[196, 186, ...]")
    out = []
    for v in ids:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise SplitError(f"{v!r} is not an integer id", field=name, fix="pass MovieLens ids as integers")
        out.append(int(v))
    if not out:
        raise SplitError("the list of ids is empty", field=name, fix=f"name at least one id, or leave {name} out "
                         "to draw a seeded fraction")
    return out


def check_forget_args(level: str, fraction: float, seed: int, user_ids: Sequence[int] | None = None,
                      item_ids: Sequence[int] | None = None) -> None:
    """Refuse bad :func:`forget_retain_split` arguments before any work, naming the argument and its valid range.

    Raises:
        SplitError: an unknown ``level``; ``fraction`` not a number strictly between 0 and 1 (when
            it is used, i.e. no ids are given); ``seed`` not a non-negative integer; ids that are
            not integers; ``item_ids`` at user level.
    """
    if level not in LEVELS:
        raise SplitError(f"unknown level {level!r}", field="level", fix="use 'user' or 'interaction'")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SplitError(f"seed must be a non-negative integer, got {seed!r}", field="seed", fix="pass e.g. --seed 0")
    _check_ids("user_ids", user_ids)
    _check_ids("item_ids", item_ids)
    if level == "user" and item_ids is not None:
        raise SplitError("item_ids select interactions, not users", field="item_ids",
                         fix="use level='interaction' to forget by item, or pass user_ids")
    if user_ids is None and item_ids is None:
        ok = isinstance(fraction, (int, float, np.floating, np.integer)) and not isinstance(fraction, bool)
        if not ok or not 0 < float(fraction) < 1:  # NaN fails the comparison too
            raise SplitError(f"the share to forget must be a number strictly between 0 and 1, got {fraction!r}",
                             field="forget_fraction", fix="pass a fraction in (0, 1), e.g. --forget-fraction 0.1")


def forget_retain_split(
    split: Split,
    level: str = "user",
    fraction: float = 0.2,
    seed: int = 0,
    user_ids: Sequence[int] | None = None,
    item_ids: Sequence[int] | None = None,
) -> ForgetRetain:
    """Split ``split.train`` into forget and retain sets.

    Args:
        level: ``"user"`` (all training samples of a seeded ``fraction`` of users, or of
            ``user_ids``) or ``"interaction"`` (a seeded ``fraction`` of samples, or every sample
            whose target is in ``item_ids`` / whose user is in ``user_ids``).
        fraction: share of users (user level) or samples (interaction level) to forget, in (0, 1);
            ignored when ids are given.
        seed: RNG seed (a non-negative integer).

    Raises:
        SplitError: a bad argument (see :func:`check_forget_args`), an empty training set, ids
            with no training samples, an empty forget or retain set.
        RequestError: the result breaks the request rules of
            :func:`recircuit.data.requests.check_request` against ``split.valid`` / ``split.test``.
    """
    check_forget_args(level, fraction, seed, user_ids, item_ids)
    train = split.train
    if not train:
        raise SplitError("The training set is empty; there is nothing to forget.")
    rng = np.random.default_rng(seed)
    if level == "user":
        users = sorted({s.user_id for s in train if s.user_id is not None})
        if user_ids is not None:
            chosen = set(int(u) for u in user_ids)
            missing = chosen - set(users)
            if missing:
                raise SplitError(f"Users {sorted(missing)[:5]} have no training samples", field="user_ids",
                                 fix="pick users from the training set")
        else:
            if not users:
                raise SplitError("Samples carry no user ids (bare TALLRec JSON?)", field="level",
                                 fix="use level='interaction'")
            k = int(round(fraction * len(users)))
            chosen = set(rng.choice(users, size=k, replace=False).tolist()) if k else set()
        is_forget = [s.user_id in chosen for s in train]
    else:
        if user_ids is not None or item_ids is not None:
            us, its = set(user_ids or ()), set(item_ids or ())
            is_forget = [(s.user_id in us) or (s.item_id in its) for s in train]
        else:
            k = int(round(fraction * len(train)))
            pick = set(rng.choice(len(train), size=k, replace=False).tolist()) if k else set()
            is_forget = [i in pick for i in range(len(train))]
    forget = [s for s, f in zip(train, is_forget) if f]
    retain = [s for s, f in zip(train, is_forget) if not f]
    if not forget:
        raise SplitError(
            f"The forget set is empty (level={level}, fraction={fraction})",
            field="forget_fraction" if user_ids is None and item_ids is None else "user_ids/item_ids",
            fix="raise the fraction or name users/items that have training samples",
        )
    if not retain:
        raise SplitError("The forget set covers the whole training set; nothing would be retained",
                         field="forget_fraction", fix="lower the fraction or name fewer users/items")
    check_request(forget, retain, test=split.test or None, heldout=split.valid or None, train=train)
    return ForgetRetain(forget, retain, level, {"fraction": fraction, "seed": seed,
                        "user_ids": list(user_ids) if user_ids is not None else None,
                        "item_ids": list(item_ids) if item_ids is not None else None})
