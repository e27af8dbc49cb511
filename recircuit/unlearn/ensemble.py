"""Shard ensembles for exact unlearning: one LoRA adapter per shard, deletion by retraining shards.

Usage::

    from recircuit.train import TrainConfig
    from recircuit.unlearn.ensemble import ShardEnsemble, sisa_outputs, apa_weights, apa_outputs
    from recircuit.unlearn.shards import prompt_embeddings, semantic_partition

    shards = semantic_partition(prompt_embeddings(base, train), k=4)
    ens = ShardEnsemble.fit(base, train, shards, TrainConfig(mode="lora", lr=1e-3))
    record = ens.delete(base, forget_uids, train)    # retrains only the shards that held them
    p, loss = sisa_outputs(base, ens, test)          # SISA: the mean P(Yes) of the K adapters
    errs = validation_errors(base, ens, valid)       # (n_valid, K): |label - P_k(Yes)|
    w = apa_weights(prompt_embeddings(base, test), prompt_embeddings(base, valid), errs, n_neighbors=20, tau=1000)
    p, loss = apa_outputs(base, ens, test, w, level="ab")   # APA(D): one merged adapter per sample
    ens.save("runs/apa"); ShardEnsemble.load("runs/apa")

**Exactness, given the partition.** Shard ``k``'s adapter is a function of the base weights,
the shard's samples in their order, the training config and the shard's own seed
(:func:`shard_seed`, which depends on the ensemble seed and ``k`` only). A deletion removes the
samples from their shards, keeping the order of the rest, and retrains exactly those shards with
the same function. So after a deletion every adapter is what training from scratch on the
remaining samples *of its shard* would give: bit for bit on a deterministic device with the same
thread count (the tests check it). The partition itself was drawn at fit time, with the deleted
samples present: APA's K-means centres and its size-capped walk saw them, so which shard a
remaining sample sits in can still depend on them (as in APA and SISA themselves). A partition
that no other sample influences is ``user_partition`` (a hash of the user id). A shard emptied
by a deletion loses its adapter; the aggregations then use the others. A deletion whose
retraining fails changes nothing (shards and adapters are replaced together).

**Aggregation.** SISA aggregates predictions: P(Yes) is the mean of the K adapters' P(Yes) (K
forward passes); the answer loss (for the loss-based MIA) is that of the mixture,
``-log(mean_k P_k(answer))`` with ``P_k(answer) = exp(-T * loss_k)`` over the answer's ``T``
tokens. APA aggregates parameters, so serving costs one pass of the merged model (plus the base
model's embedding pass that picks the weights) instead of SISA's K: per test sample, the adapters are merged with sample-adaptive weights at the decomposition level
(``"ab"``: ``A = sum w_k A_k``, ``B = sum w_k B_k``, APA(D)) or the non-decomposition level
(``"ba"``: ``delta W = sum w_k B_k A_k``, APA(ND)). The weights (:func:`apa_weights`) come from
the test sample's ``n`` most similar validation samples: ``w = softmax(-tau * error_k)`` with
``error_k`` adapter ``k``'s mean absolute error on them; ``"average"`` (uniform) and
``"major"`` (the lowest-error adapter alone) are the paper's ablations.

**Why hand-written.** PEFT's adapters wrap module forwards, which the bridge's per-head paths
bypass (see :mod:`recircuit.train.lora`), and no library partitions, trains and retrains shard
adapters for a deletion.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from recircuit._io import atomic_write, atomic_write_json, read_checked_sidecar, sha256_file
from recircuit.data.prompts import Sample
from recircuit.errors import InputError
from recircuit.train import TrainConfig
from recircuit.train.lora import (
    LoraConfig,
    attach_lora,
    detach_lora,
    load_lora_state_dict,
    lora_modules,
)
from recircuit.train.lora import combine_adapters as _combine
from recircuit.unlearn.shards import check_partition, cosine_similarity

#: File format tag of a saved ensemble.
FORMAT = "recircuit.shard_ensemble/1"
#: Aggregation levels of APA: decomposition (APA(D)) and non-decomposition (APA(ND)).
LEVELS = ("ab", "ba")
#: ``valid_hash`` of an ensemble saved before it was recorded: its deletions are refused (refit it).
UNKNOWN_VALID = "unknown"
#: APA's weight schemes: sample-adaptive, and the paper's two ablations.
WEIGHT_SCHEMES = ("adaptive", "average", "major")


def shard_seed(seed: int, k: int) -> int:
    """The training seed of shard ``k`` of an ensemble seeded ``seed`` (independent of the other shards)."""
    return int(hashlib.sha256(f"recircuit.shard:{seed}:{k}".encode()).hexdigest()[:8], 16)


def _uid(s: Sample) -> str:
    from recircuit.data.requests import sample_key

    return sample_key(s)


def train_shard(base, samples: Sequence[Sample], config: TrainConfig, seed: int,
                valid: Sequence[Sample] | None = None) -> dict[str, torch.Tensor]:
    """A fresh LoRA adapter trained on ``samples`` over ``base``; ``base`` is left without adapters.

    The adapter depends only on ``base``'s weights, the samples in order, ``config`` and ``seed``.
    """
    from recircuit.train import train
    from recircuit.train.lora import lora_state_dict

    with _base_kept(base):
        try:
            train(base, list(samples), list(valid) if valid else None, dataclasses.replace(config, seed=seed),
                  progress=False)
            return lora_state_dict(base)
        finally:
            if lora_modules(base):
                detach_lora(base)


@contextlib.contextmanager
def _base_kept(base) -> Iterator[None]:
    """Refuse a base that already carries adapters; give back its ``requires_grad`` flags and train/eval mode."""
    if lora_modules(base):
        raise InputError("the base model already has LoRA adapters attached", field="base",
                         fix="merge them (merge_lora) or detach them before building a shard ensemble on it")
    flags = [p.requires_grad for p in base.parameters()]
    mode = base.training
    try:
        yield
    finally:
        for p, f in zip(base.parameters(), flags):
            p.requires_grad_(f)
        base.train(mode)


def _shard_task(name: str, base_state: dict[str, torch.Tensor], samples: list[Sample], config: TrainConfig,
                seed: int, valid: list[Sample] | None, device: str = "cpu") -> tuple[dict[str, torch.Tensor], float]:
    """One shard's training in a Ray worker: rebuild the base from its name and weights (one CPU thread, or its GPU)."""
    from recircuit.models.loading import load_model

    torch.set_num_threads(1)
    base = load_model(name, device=device)
    base.load_state_dict(base_state)
    t0 = time.perf_counter()
    state = train_shard(base, samples, config, seed, valid)
    return state, time.perf_counter() - t0


def train_shards(base, jobs: Mapping[int, Sequence[Sample]], config: TrainConfig, seed: int,
                 valid: Sequence[Sample] | None = None, workers: int = 1, progress: bool = True,
                 timing: dict[str, float] | None = None) -> dict[int, tuple[dict[str, torch.Tensor], float]]:
    """Train shard ``k``'s adapter on ``jobs[k]`` for every ``k``: ``{k: (adapter, seconds)}``.

    ``workers == 1`` trains them one after another in this process, on ``base``; ``workers > 1``
    runs them as Ray tasks of one core each (one GPU each when ``base`` is on CUDA), each
    rebuilding the base from its name and weights:
    on a Ray you initialised (a cluster, or a local one kept up over a stream of deletions), else
    on a local one with ``workers`` cores, started and shut down here.
    An adapter is bit-identical across reruns of the same mode; the fit and every deletion of an
    ensemble use the same ``workers`` so that retrained shards match trained-from-scratch ones.
    ``timing``, when given, receives ``"runner_seconds"``: the time spent starting and stopping a
    local Ray here (0 when Ray was already up or ``workers == 1``), so a caller can report the
    retraining apart from the runner's start-up.
    """
    if timing is not None:
        timing["runner_seconds"] = 0.0
    out: dict[int, tuple[dict[str, torch.Tensor], float]] = {}
    if workers <= 1 or not jobs:
        for k in tqdm(list(jobs), desc="shard adapters", unit="shard", disable=not progress, leave=False):
            t0 = time.perf_counter()
            out[k] = (train_shard(base, jobs[k], config, shard_seed(seed, k), valid), time.perf_counter() - t0)
        return out
    import logging

    import ray

    from recircuit.models.loading import model_name

    started = not ray.is_initialized()
    if started:
        t0 = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
        if timing is not None:
            timing["runner_seconds"] += time.perf_counter() - t0
    try:
        gpu = next(base.parameters()).device.type == "cuda"
        task = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(_shard_task)
        state = ray.put({n: t.detach().cpu() for n, t in base.state_dict().items()})
        vals = list(valid) if valid else None
        device = "cuda" if gpu else "cpu"
        pending = {task.remote(model_name(base), state, list(jobs[k]), config, shard_seed(seed, k), vals, device): k
                   for k in jobs}
        bar = tqdm(total=len(pending), desc="shard adapters (Ray)", unit="shard", disable=not progress, leave=False)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            k = pending.pop(ready[0])
            out[k] = ray.get(ready[0])
            bar.update(1)
        bar.close()
    finally:
        if started:
            t0 = time.perf_counter()
            ray.shutdown()
            if timing is not None:
                timing["runner_seconds"] += time.perf_counter() - t0
    return out


def _check_config(config: TrainConfig) -> None:
    if config.mode != "lora":
        raise InputError(f"shard models are LoRA adapters, got mode={config.mode!r}", field="train.mode",
                         fix="use TrainConfig(mode='lora', ...)")


def _valid_hash(valid: Sequence[Sample] | None) -> str | None:
    """sha256 over the ids and content of the validation samples a shard trains against (None: none)."""
    if not valid:
        return None
    h = hashlib.sha256()
    for s in valid:
        h.update(f"{_uid(s)}\x1f{s.instruction}\x1f{s.input}\x1f{s.output}\x1e".encode())
    return h.hexdigest()


def _state_hash(adapters: Sequence[dict[str, torch.Tensor] | None], shards: Sequence[Sequence[str]]) -> str:
    h = hashlib.sha256()
    for k, (a, s) in enumerate(zip(adapters, shards)):
        h.update(f"shard{k}:{len(s)}:{','.join(s)};".encode())
        for name in sorted(a or {}):
            h.update(name.encode())
            h.update(a[name].contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class ShardEnsemble:
    """K LoRA adapters over one base model, adapter ``k`` trained on shard ``k`` only.

    Attributes:
        shards: each shard's sample ids (:func:`recircuit.data.requests.sample_key`), in training order.
        adapters: each shard's adapter tensors (``None`` once a deletion emptied the shard).
        config: the shards' fine-tuning (LoRA; its ``seed`` is replaced by :func:`shard_seed`).
        seed: the ensemble's seed.
        audit: one record per deletion, each chaining to the previous by hash (see :meth:`delete`).
        train_seconds: wall time of each shard's latest training.
        workers: parallel shard trainings (Ray tasks; 1: in this process), for the fit and every deletion.
        valid_hash: sha256 of the ids and content of the validation samples the fit trained against (early
            stopping); every deletion must pass the same ones, or its retrained shards would not be
            what training from scratch gives.
    """

    shards: list[list[str]]
    adapters: list[dict[str, torch.Tensor] | None]
    config: TrainConfig
    seed: int = 0
    audit: list[dict] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    workers: int = 1
    valid_hash: str | None = None

    @property
    def k(self) -> int:
        """Number of shards (emptied ones included)."""
        return len(self.shards)

    @property
    def live(self) -> list[int]:
        """Indices of the shards that still have an adapter."""
        return [k for k, a in enumerate(self.adapters) if a is not None]

    @property
    def lora(self) -> LoraConfig:
        """The adapters' LoRA config."""
        return self.config.lora

    def state_hash(self) -> str:
        """sha256 over the training config, every shard's sample ids and adapter tensors (the audit's model hash)."""
        return hashlib.sha256((json.dumps(self.config.to_dict(), sort_keys=True)
                               + _state_hash(self.adapters, self.shards)).encode()).hexdigest()

    @classmethod
    def fit(cls, base, samples: Sequence[Sample], shards: Sequence[Sequence[int]], config: TrainConfig,
            valid: Sequence[Sample] | None = None, seed: int = 0, max_size: int | None = None,
            workers: int = 1, progress: bool = True) -> ShardEnsemble:
        """Train one adapter per shard of ``samples`` (shards as index lists, from :mod:`recircuit.unlearn.shards`).

        ``workers > 1`` trains the shards as parallel Ray tasks (:func:`train_shards`).

        Raises:
            InputError: a non-LoRA config, or a partition that does not cover the samples once.
        """
        _check_config(config)
        samples = list(samples)
        check_partition(shards, len(samples), max_size)
        ids = [[_uid(samples[i]) for i in s] for s in shards]
        ens = cls(ids, [None] * len(ids), config, seed, [], [0.0] * len(ids), workers, _valid_hash(valid))
        ens._train(base, range(ens.k), {_uid(s): s for s in samples}, valid, progress)
        return ens

    def _train(self, base, ks: Sequence[int], by_id: Mapping[str, Sample], valid, progress: bool,
               timing: dict[str, float] | None = None) -> None:
        jobs = {k: [by_id[u] for u in self.shards[k]] for k in ks if self.shards[k]}
        for k in ks:
            if not self.shards[k]:
                self.adapters[k], self.train_seconds[k] = None, 0.0
        for k, (state, secs) in train_shards(base, jobs, self.config, self.seed, valid, self.workers, progress,
                                             timing).items():
            self.adapters[k], self.train_seconds[k] = state, secs

    def delete(self, base, uids: Sequence[str] | set[str], samples: Sequence[Sample] | Mapping[str, Sample],
               valid: Sequence[Sample] | None = None, progress: bool = True) -> dict:
        """Remove samples and retrain exactly the shards that held them; append and return the audit record.

        Args:
            base: the base model the adapters sit on (left without adapters).
            uids: ids of the samples to delete (ids in no shard are ignored: nothing is retrained for them).
            samples: the training samples (a list or an id -> sample map) the remaining shard ids refer to.
            valid: validation samples for the shards' early stopping: the same as at :meth:`fit`.

        Returns:
            ``{"request", "requested", "deleted", "affected", "seconds", "runner_seconds", "before",
            "after", "previous"}``: the request's index, how many distinct ids were asked for and how many
            samples were removed (ids in no shard count in the first only), the retrained shards,
            the wall time of the deletion and the part of it spent starting and stopping a local
            Ray (:func:`train_shards`), the ensemble hash before and after, and the previous
            record's hash (``record_hash``), so the records form a chain.

        Raises:
            InputError: ``valid`` differs from the fit's, or a remaining shard sample is missing
                from ``samples``.
        """
        gone = set(uids)
        if self.valid_hash == UNKNOWN_VALID:
            raise InputError("the ensemble was saved without the hash of its validation samples, so a deletion "
                             "cannot be checked to retrain as the fit trained", field="valid_hash",
                             fix="fit the ensemble again (ShardEnsemble.fit) and save it")
        if _valid_hash(valid) != self.valid_hash:
            raise InputError("the validation samples differ from the ones the ensemble was fitted with, so the "
                             "retrained shards would not match training from scratch", field="valid",
                             fix="pass delete() the valid= given to ShardEnsemble.fit (None if none was)")
        by_id = samples if isinstance(samples, Mapping) else {_uid(s): s for s in samples}
        before = self.state_hash()
        affected = [k for k, s in enumerate(self.shards) if gone.intersection(s)]
        n_deleted = sum(len(gone.intersection(self.shards[k])) for k in affected)
        missing = [u for k in affected for u in self.shards[k] if u not in gone and u not in by_id]
        if missing:
            raise InputError(f"{len(missing)} remaining shard sample(s) are not in the samples given "
                             f"(first {missing[0]!r})", field="samples", fix="pass the ensemble's training samples")
        t0 = time.perf_counter()
        trial = self.copy()                        # a failed retraining leaves this ensemble as it was
        for k in affected:
            trial.shards[k] = [u for u in trial.shards[k] if u not in gone]
        timing: dict[str, float] = {}
        trial._train(base, affected, by_id, valid, progress, timing)
        self.shards, self.adapters, self.train_seconds = trial.shards, trial.adapters, trial.train_seconds
        record = {"request": len(self.audit), "requested": len(gone), "deleted": n_deleted, "affected": affected,
                  "seconds": time.perf_counter() - t0, "runner_seconds": timing.get("runner_seconds", 0.0),
                  "before": before, "after": self.state_hash(),
                  "previous": self.audit[-1]["record_hash"] if self.audit else None}
        record["record_hash"] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
        self.audit.append(record)
        return record

    def copy(self) -> ShardEnsemble:
        """A deep copy (adapters cloned)."""
        return copy.deepcopy(self)

    def save(self, directory: str | Path) -> Path:
        """Write ``ensemble.safetensors`` and ``ensemble.json`` (with the tensors' sha256) atomically."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {f"shard{k}.{n}": t.contiguous() for k, a in enumerate(self.adapters) for n, t in (a or {}).items()}
        weights = atomic_write(d / "ensemble.safetensors", lambda p: save_file(tensors, str(p)))
        meta = {"format": FORMAT, "shards": self.shards, "live": self.live, "config": self.config.to_dict(),
                "seed": self.seed, "audit": self.audit, "train_seconds": self.train_seconds, "workers": self.workers,
                "valid_hash": self.valid_hash, "sha256": sha256_file(weights)}
        meta["meta_sha256"] = _meta_hash(meta)
        return atomic_write_json(d / "ensemble.json", meta)

    @classmethod
    def load(cls, directory: str | Path) -> ShardEnsemble:
        """Read what :meth:`save` wrote, verifying the tensors' sha256.

        Raises:
            InputError: a missing file, another format, or tensors whose hash does not match.
        """
        from safetensors.torch import load_file

        d = Path(directory)
        meta_path, weights = d / "ensemble.json", d / "ensemble.safetensors"
        meta = read_checked_sidecar(meta_path, weights, FORMAT, "adapter tensors",
                                    "save the ensemble there again with ShardEnsemble.save")
        if meta.get("meta_sha256") != _meta_hash(meta):
            raise InputError("the sidecar does not match its own sha256 (shards, config or audit were edited)",
                             path=meta_path, fix="save the ensemble again")
        flat = load_file(str(weights))
        adapters: list[dict | None] = [None] * len(meta["shards"])
        for k in meta["live"]:
            pre = f"shard{k}."
            adapters[k] = {n[len(pre):]: t for n, t in flat.items() if n.startswith(pre)}
        return cls(meta["shards"], adapters, TrainConfig(**meta["config"]), meta["seed"],
                   meta["audit"], meta["train_seconds"], meta.get("workers", 1),
                   meta.get("valid_hash", UNKNOWN_VALID))


def _meta_hash(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def adapter_applied(base, state: Mapping[str, torch.Tensor], lora: LoraConfig) -> Iterator[None]:
    """``base`` with a LoRA adapter (A/B tensors, or ``.delta`` tensors from a BA-level merge) inside the block.

    A/B tensors are attached as an adapter and detached after; ``.delta`` tensors (a sum of
    rank-r products, no longer rank r) are added to the weights, which are copied back after, so
    the base leaves bit-identical either way.
    """
    from recircuit.models.families import projections

    if any(k.endswith(".delta") for k in state):
        projs = projections(base, lora.targets)
        keep = {}
        try:
            with torch.no_grad():
                for key, delta in state.items():
                    name = key.removesuffix(".delta")
                    lin = projs[name].module
                    keep[name] = lin.weight.detach().clone()
                    delta = delta.T if projs[name].layout == "conv1d" else delta      # GPT-2 stores [in, out]
                    lin.weight.add_(lora.scale * delta.to(lin.weight.device, lin.weight.dtype))
            yield
        finally:
            with torch.no_grad():
                for name, w in keep.items():
                    projs[name].module.weight.copy_(w)
        return
    with _base_kept(base):
        with torch.random.fork_rng(devices=[]):     # the fresh adapter's init must not move the caller's RNG
            attach_lora(base, lora)
        try:
            load_lora_state_dict(base, dict(state))
            yield
        finally:
            detach_lora(base)


def adapter_outputs(base, ens: ShardEnsemble, samples: Sequence[Sample], batch_size: int = 8,
                    progress: bool = True) -> tuple[Float[np.ndarray, "n k"], Float[np.ndarray, "n k"]]:
    """Each live adapter's P(Yes) and answer loss on ``samples`` (columns of emptied shards are NaN)."""
    from recircuit.train.losses import score_and_loss

    p = np.full((len(samples), ens.k), np.nan)
    loss = np.full((len(samples), ens.k), np.nan)
    for k in tqdm(ens.live, desc="shard adapters", unit="adapter", disable=not progress, leave=False):
        with adapter_applied(base, ens.adapters[k], ens.lora):
            p[:, k], loss[:, k] = score_and_loss(base, samples, batch_size)
    return p, loss


def sisa_outputs(base, ens: ShardEnsemble, samples: Sequence[Sample], batch_size: int = 8,
                 progress: bool = True) -> tuple[Float[np.ndarray, "n"], Float[np.ndarray, "n"]]:
    """SISA's prediction-level aggregation: mean P(Yes) over the live adapters, and the mixture's answer loss."""
    from scipy.special import logsumexp

    p, loss = adapter_outputs(base, ens, samples, batch_size, progress)
    live = ens.live
    t = answer_lengths(base.tokenizer, samples)[:, None]      # loss is the mean CE per answer token
    mix = -(logsumexp(-t * loss[:, live], axis=1) - np.log(len(live))) / t[:, 0]
    return p[:, live].mean(axis=1), mix


def answer_lengths(tokenizer, samples: Sequence[Sample]) -> Float[np.ndarray, "n"]:
    """How many tokens each sample's answer (``" Yes."`` / ``" No."``) has: the answer loss is their mean CE."""
    from recircuit.models.tokenize import encode_continuation

    return np.array([len(encode_continuation(tokenizer, s.answer)) for s in samples], dtype=np.float64)


def validation_errors(base, ens: ShardEnsemble, valid: Sequence[Sample], batch_size: int = 8,
                      progress: bool = True) -> Float[np.ndarray, "n_valid k"]:
    """``|label - P_k(Yes)|`` of every live adapter on every validation sample (NaN for emptied shards)."""
    p, _ = adapter_outputs(base, ens, valid, batch_size, progress)
    y = np.array([s.label for s in valid], dtype=np.float64)[:, None]
    return np.abs(y - p)


def apa_weights(query: Float[np.ndarray, "m d"], valid: Float[np.ndarray, "n_valid d"],
                errors: Float[np.ndarray, "n_valid k"], n_neighbors: int = 20, tau: float = 1000.0,
                scheme: str = "adaptive") -> Float[np.ndarray, "m k"]:
    """APA's sample-adaptive aggregation weights, one row per query sample.

    Each query's ``n_neighbors`` most cosine-similar validation samples (ties: lower index) give
    ``error_k``, adapter ``k``'s mean error on them; ``w = softmax(-tau * error)`` over the live
    adapters (columns whose errors are NaN get weight 0). ``tau = 0`` gives uniform weights.
    ``scheme="average"`` is uniform over live adapters; ``"major"`` puts all weight on the
    lowest-error adapter (ties: lower index).

    Raises:
        InputError: an unknown scheme, ``n_neighbors`` below 1, ``tau`` negative, or no live adapter.
    """
    if scheme not in WEIGHT_SCHEMES:
        raise InputError(f"unknown weight scheme {scheme!r}", field="weights", fix=f"choose from {list(WEIGHT_SCHEMES)}")
    if n_neighbors < 1:
        raise InputError(f"n_neighbors={n_neighbors}", field="n_neighbors", fix="use at least 1")
    if tau < 0:
        raise InputError(f"tau={tau}", field="tau", fix="use tau >= 0 (0 gives uniform weights)")
    errors = np.asarray(errors, dtype=np.float64)
    live = ~np.isnan(errors).all(axis=0)
    if not live.any():
        raise InputError("no live adapter to weight", field="adapters", fix="the ensemble lost every shard")
    m = len(query)
    if scheme == "average":
        w = np.where(live, 1.0, 0.0)
        return np.tile(w / w.sum(), (m, 1))
    n = min(n_neighbors, len(valid))
    sims = cosine_similarity(query, valid)
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    err = np.where(live, errors[nearest].mean(axis=1), 0.0)     # (m, k); dead columns masked below
    if scheme == "major":
        w = np.zeros_like(err)
        w[np.arange(m), np.argmin(np.where(live, err, np.inf), axis=1)] = 1.0
        return w
    z = np.where(live, -tau * err, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def merge_adapters(ens: ShardEnsemble, weights: Float[np.ndarray, "k"], level: str = "ab") -> dict[str, torch.Tensor]:
    """One sample's merged adapter: ``"ab"`` -> ``A``/``B`` tensors, ``"ba"`` -> ``.delta`` tensors (unscaled)."""
    if level not in LEVELS:
        raise InputError(f"unknown aggregation level {level!r}", field="level",
                         fix="use 'ab' (decomposition, APA(D)) or 'ba' (non-decomposition, APA(ND))")
    live = [k for k in ens.live if weights[k] != 0]
    return _combine([ens.adapters[k] for k in live], [float(weights[k]) for k in live], level)


def apa_outputs(base, ens: ShardEnsemble, samples: Sequence[Sample], weights: Float[np.ndarray, "n k"],
                level: str = "ab", batch_size: int = 8,
                progress: bool = True) -> tuple[Float[np.ndarray, "n"], Float[np.ndarray, "n"]]:
    """APA's parameter-level aggregation: each sample scored once, under its own merged adapter.

    Samples with identical weight rows share one merge and are batched together.
    """
    from recircuit.train.losses import score_and_loss

    samples = list(samples)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(samples), ens.k):
        raise InputError(f"weights of shape {weights.shape} for {len(samples)} samples and {ens.k} shards",
                         field="weights", fix="pass one row of K weights per sample (apa_weights)")
    p, loss = np.zeros(len(samples)), np.zeros(len(samples))
    groups: dict[bytes, list[int]] = {}
    for i, row in enumerate(weights):
        groups.setdefault(row.tobytes(), []).append(i)
    bar = tqdm(total=len(samples), desc=f"APA ({level})", unit="sample", disable=not progress, leave=False)
    for rows in groups.values():
        with adapter_applied(base, merge_adapters(ens, weights[rows[0]], level), ens.lora):
            p[rows], loss[rows] = score_and_loss(base, [samples[i] for i in rows], batch_size)
        bar.update(len(rows))
    bar.close()
    return p, loss
