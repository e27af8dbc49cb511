"""Counterfactual (corrupted) prompts for recommendation circuits.

Usage::

    from recircuit.circuits.corruptions import get_corruption
    corrupt = get_corruption("label_flip")
    corrupted = corrupt(samples)                      # one corrupted Sample per sample

    corrupt = get_corruption("target_swap", titles=ml.titles, tokenizer=model.tokenizer)
    corrupt = get_corruption("ppr", interactions=ml.interactions, titles=ml.titles, tokenizer=tok)

Strategies (each a callable ``list[Sample] -> list[Sample]``, seeded):

1. ``label_flip``: swap the preference and unpreference lists. The tokens are the same, moved,
   so token length is preserved up to BPE merges at the list boundaries.
2. ``target_swap``: replace the target title with another item's title of the same token length
   (with ``tokenizer``; without one, the same character length).
3. ``history_resample``: replace the history titles with those of another user's sample, keeping
   each item's like/dislike slot; lengths are matched per title where a tokenizer is given.
4. ``ppr``: the CURE-style graph corruption. Personalized PageRank from the user on the
   user-item bipartite graph; history items are replaced by items the user's PPR ranks lowest
   (far from the user), each with matched token length where possible.

Where no length-matched replacement exists the original title is kept, so the pair stays aligned;
:func:`recircuit.circuits.attribute.make_pair_batch` still checks lengths and fails clearly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from recircuit.data.prompts import Sample, build_input

Corruption = Callable[[Sequence[Sample]], list[Sample]]

_INPUT_RE = re.compile(
    r'^User Preference: (?P<liked>.*)\nUser Unpreference: (?P<disliked>.*)\n'
    r'Whether the user will like the target movie "(?P<target>.*)"\?$',
    re.S,
)


def parse_input(text: str) -> tuple[list[str], list[str], str]:
    """Split a TALLRec input into liked titles, disliked titles and the target title."""
    m = _INPUT_RE.match(text)
    if not m:
        raise ValueError(f"Not a TALLRec movie input: {text[:80]!r}...; corruptions need the TALLRec format.")

    def titles(s: str) -> list[str]:
        s = s.strip()
        return [] if not s else [t[1:-1] if t.startswith('"') else t for t in re.findall(r'"[^"]*"', s)]

    return titles(m["liked"]), titles(m["disliked"]), m["target"]


def label_flip(samples: Sequence[Sample]) -> list[Sample]:
    """Swap the preference and unpreference lists of every sample."""
    out = []
    for s in samples:
        liked, disliked, target = parse_input(s.input)
        out.append(s.with_input(build_input(disliked, liked, target)))
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


def target_swap(titles: dict[int, str], tokenizer=None, seed: int = 0) -> Corruption:
    """Replace each target with a random other title of the same token length."""
    pool = _TitlePool(titles, tokenizer)

    def corrupt(samples: Sequence[Sample]) -> list[Sample]:
        rng = np.random.default_rng(seed)
        out = []
        for s in samples:
            liked, disliked, target = parse_input(s.input)
            new = pool.sample(target, rng, set(liked) | set(disliked))
            out.append(s.with_input(build_input(liked, disliked, new)))
        return out

    return corrupt


def history_resample(tokenizer=None, seed: int = 0, titles: dict[int, str] | None = None) -> Corruption:
    """Replace history titles with titles from other users' samples (same slot, matched length).

    A replacement never comes from the sample's own history or target, nor from a title that
    only the same user has in the batch. With ``titles`` (the item catalogue, e.g.
    ``load_movielens().titles``) the catalogue's titles are candidates too, which a batch of one
    user's consecutive windows (TALLRec's split) needs.

    Raises:
        ValueError: when no history title of any sample could be replaced (the corrupted prompts
            would equal the clean ones); the message says to pass ``titles``.
    """

    def corrupt(samples: Sequence[Sample]) -> list[Sample]:
        rng = np.random.default_rng(seed)
        parsed = [parse_input(s.input) for s in samples]
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
            out.append(s.with_input(build_input(new_l, new_d, target)))
        if samples and not changed and any(lk or dk for lk, dk, _ in parsed):
            raise ValueError("history_resample could not replace any history title: every candidate of matching "
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


def ppr_replace(interactions: pd.DataFrame, titles: dict[int, str], tokenizer=None, seed: int = 0,
                far_fraction: float = 0.2) -> Corruption:
    """Replace history items with items far from the user in PPR (the lowest ``far_fraction``)."""
    cache: dict[int, list[str]] = {}
    length = _length_fn(tokenizer)
    graph = BipartiteGraph(interactions)

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
                raise ValueError("The ppr corruption needs samples with user ids (MovieLens splits, not bare JSON).")
            liked, disliked, target = parse_input(s.input)
            far = far_titles(s.user_id)
            buckets: dict[int, list[str]] = {}
            for t in far:
                buckets.setdefault(length(t), []).append(t)

            def pick(t: str, buckets: dict[int, list[str]] = buckets) -> str:
                c = buckets.get(length(t), [])
                return c[int(rng.integers(len(c)))] if c else t

            out.append(s.with_input(build_input([pick(t) for t in liked], [pick(t) for t in disliked], target)))
        return out

    return corrupt


CORRUPTIONS = ("label_flip", "target_swap", "history_resample", "ppr")


def get_corruption(name: str, **kwargs) -> Corruption:
    """A corruption strategy by name; ``kwargs`` go to its factory (titles, tokenizer, seed, ...)."""
    if name == "label_flip":
        return label_flip
    if name == "target_swap":
        return target_swap(**kwargs)
    if name == "history_resample":
        return history_resample(**{k: v for k, v in kwargs.items() if k in ("tokenizer", "seed", "titles")})
    if name == "ppr":
        return ppr_replace(**kwargs)
    raise ValueError(f"Unknown corruption {name!r}; choose one of {CORRUPTIONS}.")


def corruption_for(name: str, tokenizer=None, data_dir: str | None = None, seed: int = 0) -> Corruption:
    """:func:`get_corruption` with what each strategy needs loaded from MovieLens-100K.

    ``target_swap``, ``history_resample`` and ``ppr`` get the item catalogue (and ``ppr`` the
    interactions) from :func:`recircuit.data.load_movielens` (``data_dir``, default the asset),
    and the tokenizer for length matching.
    """
    if name == "label_flip":
        return label_flip
    from recircuit.data import load_movielens

    ml = load_movielens(data_dir)
    kw: dict = {"titles": ml.titles, "tokenizer": tokenizer, "seed": seed}
    if name == "ppr":
        kw["interactions"] = ml.interactions
    return get_corruption(name, **kw)


__all__ = ["CORRUPTIONS", "corruption_for", "BipartiteGraph", "Corruption", "get_corruption", "history_resample", "label_flip",
           "parse_input", "personalized_pagerank", "ppr_replace", "target_swap"]
