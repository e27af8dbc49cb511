"""Counterfactual (corrupted) prompts for recommendation circuits, in a registry.

Usage::

    from recircuit.circuits.corruptions import get_corruption, corruption_names
    corrupt = get_corruption("label_flip")
    corrupted = corrupt(samples)                      # one corrupted Sample per sample

    corrupt = get_corruption("target_swap", titles=ml.titles, tokenizer=model.tokenizer)
    corrupt = get_corruption("ppr", interactions=ml.interactions, titles=ml.titles, tokenizer=tok)
    corrupt = corruption_for("ppr", tokenizer=tok, data_dir=None, seed=0)   # loads what it needs
    corruption_names()                                # ('label_flip', 'target_swap', ...)

Strategies (each gives a callable ``list[Sample] -> list[Sample]``, seeded):

1. ``label_flip``: swap the preference and unpreference lists. The tokens are the same, moved,
   so token length is preserved up to BPE merges at the list boundaries.
2. ``target_swap``: replace the target title with another item's title of the same token length
   (with ``tokenizer``; without one, the same character length).
3. ``history_resample``: replace the history titles with those of another user's sample, keeping
   each item's like/dislike slot; lengths are matched per title where a tokenizer is given.
4. ``ppr``: the CURE-style graph corruption. Personalized PageRank from the user on the
   user-item bipartite graph; history items are replaced by items the user's PPR ranks lowest
   (far from the user), each with matched token length where possible.

Every strategy edits the samples' structured fields (:meth:`Sample.with_history`,
:meth:`Sample.with_target`, titles and item ids) and lets the sample re-render its prompt; none
parses prompt text. Where no length-matched replacement exists the original title is kept, so the
pair stays aligned; :func:`recircuit.circuits.attribute.make_pair_batch` still checks lengths.

**Adding a corruption** is one function decorated with :func:`register_corruption`. Either the
function is itself the corruption (``samples -> samples``, registered with ``factory=False``), or
it is a factory whose keyword parameters name what it needs from :data:`CONTEXT` (``titles``,
``tokenizer``, ``interactions``, ``seed``) plus its own knobs with defaults. :func:`get_corruption`,
:func:`corruption_for` (which loads the catalogue and interactions only for a factory that asks for
them) and the ``recircuit circuit --corruption`` choices all read the registry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from recircuit.data.prompts import Sample
from recircuit.errors import InputError

Corruption = Callable[[Sequence[Sample]], list[Sample]]

#: Keyword arguments :func:`corruption_for` can supply to a registered factory.
CONTEXT = ("titles", "tokenizer", "interactions", "seed")


@dataclass(frozen=True)
class CorruptionSpec:
    """A registered corruption: its name, function, and whether the function is a factory."""

    name: str
    fn: Callable
    factory: bool
    help: str

    @property
    def needs(self) -> tuple[str, ...]:
        """The :data:`CONTEXT` keys the factory takes (empty for a plain corruption)."""
        if not self.factory:
            return ()
        params = inspect.signature(self.fn).parameters
        return tuple(k for k in CONTEXT if k in params)


_REGISTRY: dict[str, CorruptionSpec] = {}

#: Read-only view of the registry, name -> :class:`CorruptionSpec` (``name in CORRUPTIONS``).
CORRUPTIONS: Mapping[str, CorruptionSpec] = MappingProxyType(_REGISTRY)


def register_corruption(name: str, *, factory: bool = True, help: str = "") -> Callable[[Callable], Callable]:
    """Decorator registering a corruption under ``name`` (see the module docstring).

    Raises:
        ValueError: when ``name`` is already registered.
    """

    def deco(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"A corruption named {name!r} is already registered ({_REGISTRY[name].fn.__qualname__}).")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = CorruptionSpec(name, fn, factory, help or (doc[0] if doc else ""))
        return fn

    return deco


def corruption_names() -> tuple[str, ...]:
    """Names of every registered corruption, in registration order."""
    return tuple(_REGISTRY)


def _spec(name: str) -> CorruptionSpec:
    if name not in _REGISTRY:
        raise InputError(f"unknown corruption {name!r}", field="corruption",
                         fix=f"choose one of {', '.join(corruption_names())}")
    return _REGISTRY[name]


def _structured(s: Sample, name: str) -> Sample:
    if not s.structured:
        raise InputError(f"The {name} corruption needs TALLRec movie prompts; sample {s.uid or '(no uid)'} has "
                         f"input {s.input[:60]!r}..., which is not in that format", field="input",
                         fix="use samples built by recircuit.data (MovieLens splits or TALLRec movie JSON)")
    return s


@register_corruption("label_flip", factory=False)
def label_flip(samples: Sequence[Sample]) -> list[Sample]:
    """Swap the preference and unpreference lists of every sample."""
    out = []
    for s in samples:
        s = _structured(s, "label_flip")
        out.append(s.with_history(s.disliked, s.liked, s.disliked_ids, s.liked_ids))  # type: ignore[arg-type]
    return out


def _length_fn(tokenizer) -> Callable[[str], int]:
    if tokenizer is None:
        return len
    return lambda t: len(tokenizer.encode(f'"{t}"', add_special_tokens=False))


class _TitlePool:
    """Titles bucketed by (token) length, for length-matched sampling."""

    def __init__(self, titles: dict[int, str], tokenizer=None) -> None:
        self.length = _length_fn(tokenizer)
        self.by_len: dict[int, list[str]] = {}
        self.item_of = {t: i for i, t in titles.items()}
        for t in titles.values():
            self.by_len.setdefault(self.length(t), []).append(t)

    def sample(self, like: str, rng: np.random.Generator, exclude: set[str]) -> str:
        cands = [t for t in self.by_len.get(self.length(like), []) if t not in exclude and t != like]
        return cands[int(rng.integers(len(cands)))] if cands else like


def _ids(titles: Sequence[str], id_of: Mapping[str, int | None]) -> tuple[int, ...] | None:
    """Item ids of ``titles``; ``None`` when any is unknown."""
    ids = [id_of.get(t) for t in titles]
    return None if any(i is None for i in ids) else tuple(ids)  # type: ignore[misc]


def _known_ids(samples: Sequence[Sample]) -> dict[str, int]:
    """Title -> item id, from the samples' own structured fields."""
    out: dict[str, int] = {}
    for s in samples:
        for titles, ids in ((s.liked, s.liked_ids), (s.disliked, s.disliked_ids)):
            if titles is not None and ids is not None:
                out.update(zip(titles, ids))
        if s.target is not None and s.item_id is not None:
            out[s.target] = s.item_id
    return out


@register_corruption("target_swap")
def target_swap(titles: dict[int, str], tokenizer=None, seed: int = 0) -> Corruption:
    """Replace each target with a random other title of the same token length."""
    pool = _TitlePool(titles, tokenizer)

    def corrupt(samples: Sequence[Sample]) -> list[Sample]:
        rng = np.random.default_rng(seed)
        out = []
        for s in samples:
            s = _structured(s, "target_swap")
            new = pool.sample(s.target, rng, set(s.liked) | set(s.disliked))  # type: ignore[arg-type]
            out.append(s if new == s.target else s.with_target(new, pool.item_of.get(new)))
        return out

    return corrupt


@register_corruption("history_resample")
def history_resample(tokenizer=None, seed: int = 0, titles: dict[int, str] | None = None) -> Corruption:
    """Replace history titles with titles from other users' samples (same slot, matched length).

    A replacement never comes from the sample's own history or target, nor from a title that
    only the same user has in the batch. With ``titles`` (the item catalogue, e.g.
    ``load_movielens().titles``) the catalogue's titles are candidates too, which a batch of one
    user's consecutive windows (TALLRec's split) needs.

    Raises:
        InputError: when no history title of any sample could be replaced (the corrupted prompts
            would equal the clean ones); the message says to pass ``titles``.
    """

    def corrupt(samples: Sequence[Sample]) -> list[Sample]:
        rng = np.random.default_rng(seed)
        samples = [_structured(s, "history_resample") for s in samples]
        parsed = [(list(s.liked), list(s.disliked), s.target) for s in samples]  # type: ignore[arg-type]
        id_of: dict[str, int | None] = {**_known_ids(samples), **{t: i for i, t in (titles or {}).items()}}
        owners: dict[str, set] = {}
        for s, (lk, dk, _) in zip(samples, parsed):
            for t in lk + dk:
                owners.setdefault(t, set()).add(s.user_id if s.user_id is not None else s.uid)
        candidates = sorted(set(owners) | set((titles or {}).values()))
        pool = _TitlePool(dict(enumerate(candidates)), tokenizer)
        out, changed = [], 0
        for s, (liked, disliked, target) in zip(samples, parsed):
            me = s.user_id if s.user_id is not None else s.uid
            own = set(liked) | set(disliked) | {target} | {t for t, o in owners.items() if o == {me}}
            new_l = [pool.sample(t, rng, own) for t in liked]
            new_d = [pool.sample(t, rng, own) for t in disliked]
            changed += sum(a != b for a, b in zip(liked + disliked, new_l + new_d))
            out.append(s.with_history(new_l, new_d, _ids(new_l, id_of), _ids(new_d, id_of)))
        if samples and not changed and any(lk or dk for lk, dk, _ in parsed):
            raise InputError("history_resample could not replace any history title: every candidate of matching "
                             "length belongs to the sample's own user (e.g. a batch of one user's consecutive "
                             "TALLRec windows). Pass the item catalogue: get_corruption('history_resample', "
                             "titles=load_movielens().titles, tokenizer=...), or use samples of several users.")
        return out

    return corrupt


class BipartiteGraph:
    """The user-item interaction graph, built once, for personalized PageRank.

    Edges are unweighted and undirected (one per ``(user, item)`` row of ``interactions``,
    whatever the rating: a watched movie links the user and the item either way).
    """

    def __init__(self, interactions: pd.DataFrame) -> None:
        missing = {"user", "item"} - set(interactions.columns)
        if missing:
            raise ValueError(f"interactions need 'user' and 'item' columns; missing {sorted(missing)}.")
        self.users = {u: i for i, u in enumerate(sorted(interactions["user"].unique()))}
        self.items = {it: i for i, it in enumerate(sorted(interactions["item"].unique()))}
        nu, ni = len(self.users), len(self.items)
        ui = torch.tensor(interactions["user"].map(self.users).to_numpy(), dtype=torch.long)
        ii = torch.tensor(interactions["item"].map(self.items).to_numpy(), dtype=torch.long) + nu
        n = nu + ni
        idx = torch.cat([torch.stack([ui, ii]), torch.stack([ii, ui])], dim=1)
        self.adj = torch.sparse_coo_tensor(idx, torch.ones(idx.shape[1]), (n, n), check_invariants=False).coalesce()
        self.deg = torch.sparse.sum(self.adj, dim=1).to_dense().clamp(min=1)
        self.n_users = nu

    def ppr(self, user: int, damping: float = 0.85, iters: int = 50) -> dict[int, float]:
        """PPR of every item from ``user``: ``r = (1 - d) e_user + d A D^-1 r`` by power iteration."""
        if user not in self.users:
            raise ValueError(f"User {user} has no interactions in the graph; PPR needs the user's history.")
        restart = torch.zeros(self.adj.shape[0])
        restart[self.users[user]] = 1.0
        r: Float[torch.Tensor, "n"] = restart.clone()
        for _ in range(iters):
            r = (1 - damping) * restart + damping * torch.sparse.mm(self.adj, (r / self.deg)[:, None])[:, 0]
        return {it: float(r[self.n_users + j]) for it, j in self.items.items()}


def personalized_pagerank(
    interactions: pd.DataFrame, user: int, damping: float = 0.85, iters: int = 50
) -> dict[int, float]:
    """PPR scores of every item from ``user`` on the user-item bipartite graph (power iteration)."""
    return BipartiteGraph(interactions).ppr(user, damping, iters)


@register_corruption("ppr")
def ppr_replace(interactions: pd.DataFrame, titles: dict[int, str], tokenizer=None, seed: int = 0,
                far_fraction: float = 0.2) -> Corruption:
    """Replace history items with items far from the user in PPR (the lowest ``far_fraction``)."""
    cache: dict[int, list[str]] = {}
    length = _length_fn(tokenizer)
    graph = BipartiteGraph(interactions)

    id_of = {t: i for i, t in titles.items()}

    def far_titles(user: int) -> list[str]:
        if user not in cache:
            ppr = graph.ppr(user)
            ranked = sorted(ppr, key=ppr.get)
            k = max(1, int(len(ranked) * far_fraction))
            cache[user] = [titles[i] for i in ranked[:k] if i in titles]
        return cache[user]

    def corrupt(samples: Sequence[Sample]) -> list[Sample]:
        rng = np.random.default_rng(seed)
        out = []
        for s in samples:
            if s.user_id is None:
                raise InputError("The ppr corruption needs samples with user ids", field="user_id",
                                 fix="use MovieLens splits (recircuit data build), not bare TALLRec JSON")
            s = _structured(s, "ppr")
            far = far_titles(s.user_id)
            buckets: dict[int, list[str]] = {}
            for t in far:
                buckets.setdefault(length(t), []).append(t)

            def pick(t: str, buckets: dict[int, list[str]] = buckets) -> str:
                c = buckets.get(length(t), [])
                return c[int(rng.integers(len(c)))] if c else t

            new_l, new_d = [pick(t) for t in s.liked], [pick(t) for t in s.disliked]  # type: ignore[union-attr]
            id_of_s = {**_known_ids([s]), **id_of}
            out.append(s.with_history(new_l, new_d, _ids(new_l, id_of_s), _ids(new_d, id_of_s)))
        return out

    return corrupt


def get_corruption(name: str, **kwargs) -> Corruption:
    """A registered corruption by name.

    ``kwargs`` go to its factory: the :data:`CONTEXT` keys it does not take are dropped (so one
    context fits every factory), any other keyword must be one of its parameters. A plain
    corruption (``label_flip``) ignores them.

    Raises:
        InputError: unknown name, or a factory missing a required argument or given an unknown one.
    """
    spec = _spec(name)
    if not spec.factory:
        return spec.fn
    params = inspect.signature(spec.fn).parameters
    kw = {k: v for k, v in kwargs.items() if k in params or k not in CONTEXT}
    try:
        inspect.signature(spec.fn).bind(**kw)
    except TypeError as err:
        raise InputError(f"Corruption {name!r}: {err}", fix=f"it takes {', '.join(params)}") from None
    return spec.fn(**kw)


def corruption_for(name: str, tokenizer=None, data_dir: str | None = None, seed: int = 0) -> Corruption:
    """:func:`get_corruption` with what the strategy needs loaded from MovieLens-100K.

    A factory that takes ``titles`` or ``interactions`` gets them from
    :func:`recircuit.data.load_movielens` (``data_dir``, default the asset); MovieLens is read only
    then. ``tokenizer`` (length matching) and ``seed`` are passed to factories that take them.
    """
    spec = _spec(name)
    kw: dict = {"tokenizer": tokenizer, "seed": seed}
    if {"titles", "interactions"} & set(spec.needs):
        from recircuit.data import load_movielens

        ml = load_movielens(data_dir)
        kw |= {"titles": ml.titles, "interactions": ml.interactions}
    return get_corruption(name, **kw)


__all__ = ["CONTEXT", "CORRUPTIONS", "BipartiteGraph", "Corruption", "CorruptionSpec", "corruption_for",
           "corruption_names", "get_corruption", "history_resample", "label_flip", "personalized_pagerank",
           "ppr_replace", "register_corruption", "target_swap"]
