"""Partitions of a training set into shards, for exact unlearning (SISA, APA).

Usage::

    from recircuit.unlearn.shards import prompt_embeddings, semantic_partition, random_partition
    emb = prompt_embeddings(base_model, samples)              # (n, d): the un-fine-tuned LLM's view
    shards = semantic_partition(emb, k=4, max_size=256, seed=0)   # APA's balanced K-means (Algorithm 1)
    shards = random_partition(len(samples), k=4, seed=0)      # SISA's
    shards = user_partition([s.user_id for s in samples], k=4)    # every user's samples in one shard

A partition is a list of ``k`` lists of sample indices, each sorted ascending, together covering
``0..n-1`` once. Exact unlearning retrains only the shards that held a deleted sample, so the
partition decides both the cost of a deletion and how much each shard model knows.

**APA's balanced semantic partition.** K-means (scikit-learn) on the L2-normalised embeddings
gives ``k`` centres; then every (sample, centre) pair is sorted by cosine distance, ascending, and
the list is walked once: a sample not yet placed goes to that centre while the centre holds fewer
than ``max_size`` samples (:func:`balanced_assignment`). Ties in distance go to the lower sample
index, then the lower centre index, so the partition is a function of the embeddings and the
seed. The embeddings are the final residual stream (the input of the last norm) at the last
prompt token of the *un-fine-tuned* model, as APA embeds each instruction with the LLM itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from recircuit.data.prompts import Sample
from recircuit.errors import InputError

#: Partition schemes by name (``APAConfig.partition`` / ``SISAConfig.partition``).
PARTITIONS = ("semantic", "random", "user")


def _check_k(n: int, k: int, max_size: int | None = None) -> None:
    if k < 1:
        raise InputError(f"k={k} shards", field="k", fix="use at least 1 shard")
    if k > n:
        raise InputError(f"k={k} shards for {n} training samples: a shard would be empty", field="k",
                         fix=f"use at most {n} shards")
    if max_size is not None and max_size * k < n:
        raise InputError(f"shard size t={max_size} is too small: {k} shards of at most {max_size} hold "
                         f"{max_size * k} of {n} samples", field="max_size",
                         fix=f"raise t to at least {-(-n // k)} or use more shards")


def _nonempty(shards: list[list[int]], what: str) -> list[list[int]]:
    empty = [i for i, s in enumerate(shards) if not s]
    if empty:
        raise InputError(f"{what} left shard(s) {empty} of {len(shards)} empty", field="k",
                         fix="use fewer shards (an empty shard has no adapter to train)")
    return shards


@torch.no_grad()
def prompt_embeddings(model, samples: Sequence[Sample], batch_size: int = 8,
                      progress: bool = True) -> Float[np.ndarray, "n d_model"]:
    """The final residual stream (``ln_final.hook_in``) at each prompt's last token, float64.

    Args:
        model: a bridge (use the un-fine-tuned base model, as APA does).
        samples: the samples whose prompts to embed.
        batch_size: prompts per forward pass.
        progress: show a tqdm bar.
    """
    from recircuit.models.loading import plain_forward
    from recircuit.models.scoring import forward_logits, iter_batches, tokenize_prompts

    samples = list(samples)
    if not samples:
        return np.zeros((0, model.cfg.d_model))
    device = next(model.parameters()).device
    grabbed: list[torch.Tensor] = []

    def grab(resid: Float[torch.Tensor, "batch pos d_model"], *, hook) -> None:
        grabbed.append(resid[:, -1, :].detach().double().cpu())      # left-padded: the last prompt token

    was = model.training
    model.eval()
    try:
        with plain_forward(model), model.hooks(fwd_hooks=[("ln_final.hook_in", grab)]):
            bar = tqdm(total=len(samples), desc="embed prompts", unit="sample", disable=not progress, leave=False)
            for chunk in iter_batches(samples, batch_size):
                forward_logits(model, tokenize_prompts(model.tokenizer, [s.prompt for s in chunk], device))
                bar.update(len(chunk))
            bar.close()
    finally:
        model.train(was)
    return torch.cat(grabbed).numpy()


def _unit(x: Float[np.ndarray, "n d"]) -> Float[np.ndarray, "n d"]:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def cosine_similarity(a: Float[np.ndarray, "m d"], b: Float[np.ndarray, "n d"]) -> Float[np.ndarray, "m n"]:
    """Cosine similarity of every row of ``a`` with every row of ``b`` (a zero row has similarity 0)."""
    return _unit(a) @ _unit(b).T


def balanced_assignment(embeddings: Float[np.ndarray, "n d"], centres: Float[np.ndarray, "k d"],
                        max_size: int) -> Int[np.ndarray, "n"]:
    """APA's Algorithm 1: each sample's shard, walking (sample, centre) pairs by cosine distance.

    Pairs are sorted by ``1 - cos(sample, centre)`` ascending (ties: lower sample index, then lower
    centre index); a pair places its sample when the sample is unplaced and the centre holds fewer
    than ``max_size``. No shard ends above ``max_size``.

    Raises:
        InputError: ``max_size * k`` below the number of samples.
    """
    n, k = len(embeddings), len(centres)
    _check_k(n, k, max_size)
    dist = 1.0 - cosine_similarity(embeddings, centres)               # (n, k)
    sample_idx, centre_idx = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    order = np.lexsort((centre_idx.ravel(), sample_idx.ravel(), dist.ravel()))   # last key sorts first
    shard = np.full(n, -1, dtype=np.int64)
    counts = np.zeros(k, dtype=np.int64)
    placed = 0
    for flat in order:
        i, c = divmod(int(flat), k)
        if shard[i] < 0 and counts[c] < max_size:
            shard[i] = c
            counts[c] += 1
            placed += 1
            if placed == n:
                break
    return shard


def _groups(assign: Int[np.ndarray, "n"], k: int) -> list[list[int]]:
    return [sorted(int(i) for i in np.flatnonzero(assign == c)) for c in range(k)]


def semantic_partition(embeddings: Float[np.ndarray, "n d"], k: int, max_size: int | None = None,
                       seed: int = 0) -> list[list[int]]:
    """APA's balanced semantic partition: K-means centres, then :func:`balanced_assignment`.

    Args:
        embeddings: one row per training sample (:func:`prompt_embeddings`).
        k: number of shards.
        max_size: the most samples a shard may hold (APA's ``t``; None: ``ceil(n / k)``, i.e. balanced).
        seed: K-means' seed.

    Raises:
        InputError: ``k`` below 1 or above the samples, ``max_size`` too small, or a shard left empty.
    """
    from sklearn.cluster import KMeans

    n = len(embeddings)
    max_size = -(-n // k) if max_size is None and k >= 1 else max_size
    _check_k(n, k, max_size)
    x = _unit(embeddings)
    centres = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(x).cluster_centers_
    return _nonempty(_groups(balanced_assignment(x, centres, max_size), k), "the semantic partition")


def random_partition(n: int, k: int, seed: int = 0) -> list[list[int]]:
    """SISA's partition: a seeded permutation cut into ``k`` shards of ``n // k`` or ``n // k + 1``."""
    _check_k(n, k)
    perm = np.random.default_rng(seed).permutation(n)
    return [sorted(int(i) for i in part) for part in np.array_split(perm, k)]


def user_partition(user_ids: Sequence[object], k: int) -> list[list[int]]:
    """Every user's samples in one shard, chosen by a stable hash of the user id (sha256 mod ``k``).

    A deletion of one user's data then retrains one shard. Shards are as balanced as the hash makes them.

    Raises:
        InputError: ``k`` above the number of samples, or a shard with no user.
    """
    _check_k(len(user_ids), k)
    assign = np.array([int(hashlib.sha256(str(u).encode()).hexdigest(), 16) % k for u in user_ids])
    return _nonempty(_groups(assign, k), f"hashing {len(set(map(str, user_ids)))} users into {k} shards")


def check_partition(shards: Sequence[Sequence[int]], n: int, max_size: int | None = None) -> None:
    """Refuse a partition that does not cover ``0..n-1`` exactly once, has an empty shard, or a shard above ``max_size``."""
    flat = sorted(i for s in shards for i in s)
    if flat != list(range(n)):
        raise InputError(f"the shards do not cover the {n} training samples exactly once", field="shards",
                         fix="pass a partition from semantic_partition, random_partition or user_partition")
    _nonempty([list(s) for s in shards], "the partition")
    if max_size is not None and max(len(s) for s in shards) > max_size:
        raise InputError(f"a shard holds {max(len(s) for s in shards)} samples, above t={max_size}",
                         field="max_size", fix="raise t or use more shards")
