"""Counterfactual (corrupted) prompts for recommendation circuits, in a registry.

Usage::

    from recircuit.circuits.corruptions import get_corruption, corruption_names
    corrupt = get_corruption("label_flip")
    corrupted = corrupt(samples)                      # one corrupted Sample per sample

    corrupt = get_corruption("target_swap", titles=ml.titles, tokenizer=model.tokenizer)
    corrupt = get_corruption("ppr", interactions=ml.interactions, titles=ml.titles, tokenizer=tok)
    corrupt = corruption_for("ppr", tokenizer=tok, data_dir=None, seed=0)   # loads what it needs
    corrupt = corruption_for("target_swap", tok, source=DataSource("bookcrossing", path="data/bx"))
    corrupt = corruption_for("ppr", tok, args={"far_fraction": 0.1, "seed": 3})   # a config's corruption_args
    corrupt = get_corruption("user_swap", donors=split.train, seed=1)   # another user's history, same target
    corruption_names()                                # ('label_flip', 'target_swap', ...)

Strategies (each gives a callable ``list[Sample] -> list[Sample]``, seeded):

1. ``label_flip``: swap the preference and unpreference lists. The tokens are the same, moved,
   so token length is preserved up to BPE merges at the list boundaries.
2. ``target_swap``: replace the target with another item of the data set of the same token length
   (with ``tokenizer``; without one, the same character length).
3. ``history_resample``: replace the history items with those of another user's sample (or the
   data set's catalogue), keeping each item's like/dislike slot; lengths are matched per item
   where a tokenizer is given.
4. ``ppr``: the CURE-style graph corruption. Personalized PageRank from the user on the
   user-item bipartite graph; history items are replaced by items the user's PPR ranks lowest
   (far from the user), each with matched token length where possible.
5. ``user_swap``: replace the whole history (both lists) with that of a sample of another user
   of the same domain (from ``donors``, by default the data set's TALLRec training split; else
   the batch), keeping the target: the pair differs only in *whose* data the prompt shows, so
   the circuit isolates the paths that carry the user's data (circuit-aware unlearning). Not
   length-matched: attribute with ``AttributionConfig(align="left")``.

Every strategy works on every domain (:mod:`recircuit.data.domains`: movies, books with their
authors, games...): it edits the samples' structured items (:meth:`Sample.with_items`,
:meth:`Sample.with_target_item`: title, author, item id) and lets the sample re-render its prompt
through its domain; none parses prompt text. Lengths are those of the rendered item
(``"Title" written by Author`` for books). Catalogue-based strategies (``target_swap``,
``history_resample``, ``ppr``) and ``user_swap``'s donors draw from the data set the samples
come from (:func:`corruption_for` with ``source``), never from another. Where no length-matched
replacement exists the original item is kept, so the pair stays aligned;
:func:`recircuit.circuits.attribute.make_pair_batch` still checks lengths (``user_swap`` alone is
not length-matched).

**Adding a corruption** is one function decorated with :func:`register_corruption`. Either the
function is itself the corruption (``samples -> samples``, registered with ``factory=False``), or
it is a factory whose keyword parameters name what it needs from :data:`CONTEXT` (``titles``,
``authors``, ``catalogue``, ``tokenizer``, ``interactions``, ``donors``, ``seed``) plus its own
knobs with defaults. A config that holds a corruption stores its registered name (and knobs),
never a function. :func:`get_corruption`, :func:`corruption_for` (which loads the catalogue and
interactions, or the training split's samples as ``donors``, only for a factory that asks for
them) and the ``recircuit circuit --corruption`` choices all read the registry.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from recircuit.data.domains import DomainSpec, Item
from recircuit.data.prompts import Sample
from recircuit.data.sources import Catalogue, DataSource
from recircuit.errors import InputError

logger = logging.getLogger(__name__)

Corruption = Callable[[Sequence[Sample]], list[Sample]]

#: Keyword arguments :func:`corruption_for` can supply to a registered factory (``donors``: the
#: data set's TALLRec training samples).
CONTEXT = ("titles", "authors", "catalogue", "tokenizer", "interactions", "donors", "seed")

#: The :data:`CONTEXT` keys taken from the model and the data set (never a user's argument).
RESOURCES = ("titles", "authors", "catalogue", "tokenizer", "interactions", "donors")


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
        raise InputError(f"The {name} corruption needs TALLRec prompts of a registered domain (movie, book...); "
                         f"sample {s.uid or '(no uid)'} has input {s.input[:60]!r}..., which is in none of their "
                         "formats", field="input",
                         fix="use samples built by recircuit.data (rating data, or TALLRec JSON of a registered domain)")
    return s


@register_corruption("label_flip", factory=False)
def label_flip(samples: Sequence[Sample]) -> list[Sample]:
    """Swap the preference and unpreference lists of every sample."""
    out = []
    for s in samples:
        s = _structured(s, "label_flip")
        out.append(s.with_items(s.disliked_items, s.liked_items))
    return out


def _length_fn(tokenizer) -> Callable[[str], int]:
    if tokenizer is None:
        return len
    return lambda t: len(tokenizer.encode(f'"{t}"', add_special_tokens=False))


def _item_length_fn(tokenizer, spec: DomainSpec, target: bool = False) -> Callable[[Item], int]:
    """Token length of an item as ``spec`` renders it (characters of the title without a tokenizer,
    for a domain that renders ``"Title"``; else of the rendering); ``target``: as the target is
    rendered (``spec.render_target`` where the domain has one)."""
    render = (spec.render_target or spec.render) if target else spec.render
    if render(Item("\x00", "\x01")) == '"\x00"':      # a "Title" domain: the title's length, as always
        titled = _length_fn(tokenizer)
        return lambda it: titled(it.title)
    if tokenizer is None:
        return lambda it: len(render(it))
    return lambda it: len(tokenizer.encode(render(it), add_special_tokens=False))


def _sort_key(key: tuple[str, str | None]) -> tuple[str, str]:
    return (key[0], key[1] or "")


class _ItemPool:
    """Items bucketed by (token) length of their rendering, per domain, for length-matched sampling."""

    def __init__(self, items: Iterable[Item], tokenizer=None) -> None:
        self.items = list(items)
        self.tokenizer = tokenizer
        self._by: dict[tuple[str, bool], tuple[Callable[[Item], int], dict[int, list[Item]]]] = {}

    def _buckets(self, spec: DomainSpec, target: bool) -> tuple[Callable[[Item], int], dict[int, list[Item]]]:
        if (spec.name, target) not in self._by:
            length = _item_length_fn(self.tokenizer, spec, target)
            buckets: dict[int, list[Item]] = {}
            for it in self.items:
                buckets.setdefault(length(it), []).append(it)
            self._by[spec.name, target] = (length, buckets)
        return self._by[spec.name, target]

    def sample(self, like: Item, spec: DomainSpec, rng: np.random.Generator, exclude: set,
               target: bool = False) -> Item:
        """A random item of ``like``'s length whose key is not in ``exclude`` (``like`` itself if none);
        ``target``: lengths as the domain renders its target."""
        length, buckets = self._buckets(spec, target)
        cands = [it for it in buckets.get(length(like), []) if it.key not in exclude and it.key != like.key]
        return cands[int(rng.integers(len(cands)))] if cands else like


def _catalogue_items(titles: Mapping[int, str] | None, authors: Mapping[int, str | None] | None,
                     catalogue: Catalogue | None) -> list[Item] | None:
    """The candidate items: ``catalogue``'s, else built from ``titles`` (and ``authors``); ``None`` if neither."""
    if catalogue is not None:
        return list(catalogue.items)
    if titles is None:
        return None
    return [Item(t, (authors or {}).get(i), i) for i, t in titles.items()]


def _known_ids(samples: Sequence[Sample]) -> dict[tuple[str, str | None], int]:
    """Item key -> item id, from the samples' own structured fields."""
    out: dict[tuple[str, str | None], int] = {}
    for s in samples:
        for it in (*s.liked_items, *s.disliked_items, s.target_item):
            if it.id is not None:
                out[it.key] = it.id
    return out


@register_corruption("target_swap")
def target_swap(titles: Mapping[int, str] | None, tokenizer=None, seed: int = 0,
                authors: Mapping[int, str | None] | None = None, catalogue: Catalogue | None = None) -> Corruption:
    """Replace each target with a random other item of the data set of the same token length.

    The candidates are ``catalogue``'s items (:meth:`recircuit.data.DataSource.catalogue`), else
    ``titles`` (item id -> title) with ``authors`` where the domain shows them. ``titles`` is a
    required argument (``None`` with a ``catalogue``), so the strategy is never built without
    the data set's items (CURE's importance step refuses it).

    Raises:
        InputError: neither ``catalogue`` nor ``titles`` is given.
    """
    items = _catalogue_items(titles, authors, catalogue)
    if items is None:
        raise InputError("target_swap draws targets from the data set's items, and none were given", field="catalogue",
                         fix="pass catalogue=DataSource(...).catalogue() or titles=..., or use corruption_for()")
    pool = _ItemPool(items, tokenizer)

    def corrupt(samples: Sequence[Sample]) -> list[Sample]:
        rng = np.random.default_rng(seed)
        out = []
        for s in samples:
            s = _structured(s, "target_swap")
            old = s.target_item
            new = pool.sample(old, s.spec, rng, {it.key for it in (*s.liked_items, *s.disliked_items)}, target=True)
            out.append(s if new.key == old.key else s.with_target_item(new))
        return out

    return corrupt


@register_corruption("history_resample")
def history_resample(tokenizer=None, seed: int = 0, titles: Mapping[int, str] | None = None,
                     authors: Mapping[int, str | None] | None = None, catalogue: Catalogue | None = None) -> Corruption:
    """Replace history items with items from other users' samples (same slot, matched length).

    A replacement never comes from the sample's own history or target, nor from an item that
    only the same user has in the batch. With the data set's catalogue (``catalogue``, or
    ``titles`` and ``authors``, e.g. ``load_movielens().titles``) its items are candidates too,
    which a batch of one user's consecutive windows (TALLRec's split) needs.

    Raises:
        InputError: when no history item of any sample could be replaced (the corrupted prompts
            would equal the clean ones); the message says to pass the catalogue.
    """
    cat_items = _catalogue_items(titles, authors, catalogue) or []

    def corrupt(samples: Sequence[Sample]) -> list[Sample]:
        rng = np.random.default_rng(seed)
        samples = [_structured(s, "history_resample") for s in samples]
        parsed = [(list(s.liked_items), list(s.disliked_items), s.target_item) for s in samples]
        id_of: dict[tuple[str, str | None], int | None] = {
            **_known_ids(samples), **{it.key: it.id for it in cat_items if it.id is not None}}
        owners: dict[tuple[str, str | None], set] = {}
        for s, (lk, dk, _) in zip(samples, parsed):
            for it in lk + dk:
                owners.setdefault(it.key, set()).add(s.user_id if s.user_id is not None else s.uid)
        candidates = sorted(set(owners) | {it.key for it in cat_items}, key=_sort_key)
        pool = _ItemPool([Item(t, a, id_of.get((t, a))) for t, a in candidates], tokenizer)
        out, changed = [], 0
        for s, (liked, disliked, target) in zip(samples, parsed):
            me = s.user_id if s.user_id is not None else s.uid
            own = {it.key for it in liked + disliked} | {target.key} | {k for k, o in owners.items() if o == {me}}
            spec = s.spec
            new_l = [pool.sample(it, spec, rng, own) for it in liked]
            new_d = [pool.sample(it, spec, rng, own) for it in disliked]
            changed += sum(a.key != b.key for a, b in zip(liked + disliked, new_l + new_d))
            out.append(s.with_items([Item(it.title, it.author, id_of.get(it.key)) for it in new_l],
                                    [Item(it.title, it.author, id_of.get(it.key)) for it in new_d]))
        if samples and not changed and any(lk or dk for lk, dk, _ in parsed):
            raise InputError("history_resample could not replace any history item: every candidate of matching "
                             "length belongs to the sample's own user (e.g. a batch of one user's consecutive "
                             "TALLRec windows). Pass the item catalogue: get_corruption('history_resample', "
                             "catalogue=DataSource(...).catalogue(), tokenizer=...) (or titles=load_movielens().titles), "
                             "or use samples of several users.")
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
def ppr_replace(interactions: pd.DataFrame | None, titles: Mapping[int, str], tokenizer=None, seed: int = 0,
                far_fraction: float = 0.2, authors: Mapping[int, str | None] | None = None) -> Corruption:
    """Replace history items with items far from the user in PPR (the lowest ``far_fraction``).

    Raises:
        InputError: no interaction table (TALLRec JSON has none).
    """
    if interactions is None:
        raise InputError("The ppr corruption needs the data set's user-item interactions, and this data has none "
                         "(TALLRec JSON)", field="corruption",
                         fix="use a rating source (MovieLens, BookCrossing, CSV) or another corruption")
    cache: dict[int, list[Item]] = {}
    graph = BipartiteGraph(interactions)

    def far_items(user: int) -> list[Item]:
        if user not in cache:
            ppr = graph.ppr(user)
            ranked = sorted(ppr, key=ppr.get)
            k = max(1, int(len(ranked) * far_fraction))
            cache[user] = [Item(titles[i], (authors or {}).get(i), int(i)) for i in ranked[:k] if i in titles]
        return cache[user]

    def corrupt(samples: Sequence[Sample]) -> list[Sample]:
        rng = np.random.default_rng(seed)
        out = []
        for s in samples:
            if s.user_id is None:
                raise InputError("The ppr corruption needs samples with user ids", field="user_id",
                                 fix="use splits built from rating data (recircuit data build), not bare TALLRec JSON")
            s = _structured(s, "ppr")
            length = _item_length_fn(tokenizer, s.spec)
            buckets: dict[int, list[Item]] = {}
            for it in far_items(s.user_id):
                buckets.setdefault(length(it), []).append(it)

            def pick(it: Item, buckets: dict[int, list[Item]] = buckets,
                     length: Callable[[Item], int] = length) -> Item:
                c = buckets.get(length(it), [])
                return c[int(rng.integers(len(c)))] if c else it

            out.append(s.with_items([pick(it) for it in s.liked_items], [pick(it) for it in s.disliked_items]))
        return out

    return corrupt


def _user_of(s: Sample) -> object:
    """Whose data a sample shows: its ``user_id``, else its ``uid``."""
    return s.user_id if s.user_id is not None else s.uid


@register_corruption("user_swap")
def user_swap(donors: Sequence[Sample] | None = None, seed: int = 0) -> Corruption:
    """Replace each sample's history with that of another user's sample (same target).

    For every sample a donor is drawn (seeded, deterministic for a given ``seed``, batch and
    ``donors``) among the structured samples of ``donors`` (default: the other samples of the
    batch being corrupted) whose user differs (``user_id``, else ``uid``), whose domain is the
    sample's and whose history does not show the sample's target (no liked or disliked item with
    its title, or its id where both ids are known: the corrupted prompt would still mention the
    target in the history); the corrupted sample shows the donor's liked and disliked items
    (titles, authors, ids) and keeps its own target, label, ``uid``, ``user_id`` and ``history``.
    The clean/corrupted pair thus differs only in whose data it shows, isolating the paths that
    carry the user's data.

    Donor histories may differ in token length (other titles, another like/dislike split), so the
    pair is **not** length-matched: attribute with ``AttributionConfig(align="left")`` (the
    pipeline's and CURE's importance step's setting), which left-pads both sides to a common
    length. A sample for which no donor exists keeps its history (logged).

    ``donors`` is data-set context like ``titles``, not a user argument:
    :func:`corruption_for` passes the data set's TALLRec training samples, and a config's
    ``corruption_args`` take only ``seed``.

    Raises:
        InputError: (when corrupting) no sample of the batch has a donor of another user of its
            domain whose history lacks its target, e.g. a batch of one user's samples and no ``donors``.
    """
    pool = None if donors is None else [d for d in donors if d.structured]

    def bucket(ds: Sequence[Sample]) -> dict[str, list[Sample]]:
        out: dict[str, list[Sample]] = {}
        for d in ds:
            out.setdefault(d.spec.name, []).append(d)
        return out

    given = None if pool is None else bucket(pool)

    def corrupt(samples: Sequence[Sample]) -> list[Sample]:
        rng = np.random.default_rng(seed)
        samples = [_structured(s, "user_swap") for s in samples]
        by_domain = bucket(samples) if given is None else given
        cands: dict[tuple[str, object], list[Sample]] = {}
        keys: dict[int, tuple[frozenset[str], frozenset[int]]] = {}     # per donor object, for this call

        def shows_target(d: Sample, target: Item) -> bool:
            """Whether the donor's history shows the target: its title, or its id where both are known."""
            if id(d) not in keys:
                ids = [i for part in (d.liked_ids, d.disliked_ids) if part for i in part if i is not None]
                keys[id(d)] = frozenset((*d.liked, *d.disliked)), frozenset(int(i) for i in ids)
            titles, ids = keys[id(d)]
            return target.title in titles or (target.id is not None and int(target.id) in ids)

        out, missing = [], 0
        for s in samples:
            key = (s.spec.name, _user_of(s))
            if key not in cands:
                cands[key] = [d for d in by_domain.get(key[0], []) if _user_of(d) != key[1]]
            target = s.target_item
            c = [d for d in cands[key] if not shows_target(d, target)]
            if not c:
                missing += 1
                out.append(s)
                continue
            donor = c[int(rng.integers(len(c)))]
            out.append(s.with_items(donor.liked_items, donor.disliked_items))
        if samples and missing == len(samples):
            where = "the batch" if pool is None else f"the {len(pool)} donors"
            users = sorted({str(_user_of(s)) for s in samples})[:5]
            raise InputError(f"user_swap found no donor of another user (whose history lacks the target) in "
                             f"{where} for any of the {len(samples)} samples (users {users}, "
                             f"domains {sorted({s.spec.name for s in samples})})", field="donors",
                             fix="pass donors=<samples of other users of the same domain> (e.g. "
                                 "DataSource(...).split().train), use corruption_for('user_swap', tok, "
                                 "source=...), or corrupt a batch of several users")
        if missing:
            logger.warning("user_swap: %d of %d samples have no donor of another user of their domain whose "
                           "history lacks their target, and keep their history", missing, len(samples))
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


def corruption_arg_names(name: str) -> tuple[str, ...]:
    """The arguments a user may give corruption ``name`` (a config's ``corruption_args``).

    Its factory's keyword parameters (``seed``, ``far_fraction``...) less the :data:`RESOURCES`
    injected from the model and data set; empty for a plain corruption (``label_flip``).

    Raises:
        InputError: unknown name.
    """
    spec = _spec(name)
    if not spec.factory:
        return ()
    params = inspect.signature(spec.fn).parameters.values()
    return tuple(p.name for p in params if p.name not in RESOURCES
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def check_corruption_args(name: str, args: object, field: str = "corruption_args") -> dict:
    """``args`` checked for corruption ``name``: a JSON object of scalars keyed by
    :func:`corruption_arg_names`; returns it as a plain dict.

    Raises:
        InputError: not an object, an unknown or injected key (``field.<key>``, the allowed keys
            listed), or a value that is not a JSON scalar (string, number, boolean, null).
    """
    if not isinstance(args, Mapping):
        raise InputError(f"must be a JSON object of the corruption's arguments, got {type(args).__name__}",
                         field=field, fix='e.g. {"seed": 1}')
    allowed = corruption_arg_names(name)
    for key, value in args.items():
        if key not in allowed:
            injected = f" ({key!r} comes from the model or data set)" if key in RESOURCES else ""
            raise InputError(f"corruption {name!r} takes no argument {key!r}{injected}", field=f"{field}.{key}",
                             fix=f"its arguments: {', '.join(allowed)}" if allowed else f"{name} takes no arguments")
        if not (value is None or isinstance(value, str | bool | int)
                or (isinstance(value, float) and np.isfinite(value))):
            raise InputError(f"must be a JSON scalar (string, finite number, boolean or null), got {value!r}",
                             field=f"{field}.{key}")
    return dict(args)


def corruption_for(name: str, tokenizer=None, data_dir: str | None = None, seed: int = 0,
                   source: DataSource | None = None, args: Mapping[str, object] | None = None) -> Corruption:
    """:func:`get_corruption` with what the strategy needs loaded from the data set.

    A factory that takes ``titles``, ``authors``, ``catalogue`` or ``interactions`` gets them from
    ``source`` (:meth:`recircuit.data.DataSource.catalogue`: the same data set the samples come
    from), else from MovieLens-100K (``data_dir``, default the asset); one that takes ``donors``
    (``user_swap``) gets the training samples of that data set's TALLRec split
    (:meth:`recircuit.data.DataSource.split`); the data is read only then. ``tokenizer`` (length
    matching) and ``seed`` are passed to factories that take them.
    ``args`` are the user's arguments (a config's ``corruption_args``, checked with
    :func:`check_corruption_args`); a ``seed`` among them wins over ``seed``.

    Raises:
        InputError: unknown name, or a bad argument (see :func:`check_corruption_args`).
    """
    spec = _spec(name)
    user = check_corruption_args(name, args or {})
    kw: dict = {"tokenizer": tokenizer, "seed": seed}
    if {"titles", "authors", "catalogue", "interactions"} & set(spec.needs):
        from recircuit.data import DataSource

        cat = (source or DataSource("movielens", path=data_dir)).catalogue()
        kw |= {"titles": cat.titles, "authors": cat.authors, "catalogue": cat, "interactions": cat.interactions}
    if "donors" in spec.needs:
        kw["donors"] = list((source or DataSource("movielens", path=data_dir)).split().train)
    return get_corruption(name, **(kw | user))


__all__ = ["CONTEXT", "CORRUPTIONS", "RESOURCES", "BipartiteGraph", "Corruption", "CorruptionSpec",
           "check_corruption_args", "corruption_arg_names", "corruption_for", "corruption_names",
           "get_corruption", "history_resample", "label_flip", "personalized_pagerank", "ppr_replace",
           "register_corruption", "target_swap", "user_swap"]
