"""A cache of fine-tuned recommenders, so demos and benchmarks reuse them instead of retraining.

Usage::

    from recircuit.data import build_split
    from recircuit.train import TrainConfig, cached_recommender, load_recommender
    split = build_split("tallrec")
    cfg = TrainConfig(mode="full", lr=5e-5, eval_every=16, patience=3)
    path = cached_recommender("smollm2-135m-instruct", split, cfg, n_train=512)  # trains once
    model, meta = load_recommender("smollm2-135m-instruct", split, cfg, n_train=512)

Checkpoints live under ``$RECIRCUIT_CACHE/models/<model>-<mode>-<key>/model.{safetensors,json}``.
The key is a sha256 over the base model's identity (the pinned asset sha256 for offline models),
the split description (preset, parameters and a hash of every sample), the number of training
and validation samples used and the whole :class:`TrainConfig` (seed included). Any change to
one of them trains a new model; an unchanged request reuses the checkpoint. Writes are atomic,
so an interrupted run leaves no half-written checkpoint behind (it is simply retrained).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from recircuit.models.loading import OFFLINE_MODELS, TINY_MODEL_NAME
from recircuit.train.checkpoint import load_trained, read_meta
from recircuit.train.loop import TrainConfig, train

logger = logging.getLogger(__name__)

#: Bump when the training code changes what a given config produces.
CACHE_VERSION = 1


def model_identity(model_name: str) -> dict:
    """What identifies a base model by name, without loading it (asset sha256 where pinned)."""
    key = model_name.lower()
    if key in ("tiny", TINY_MODEL_NAME):
        return {"name": TINY_MODEL_NAME, "seed": 0}
    if key in OFFLINE_MODELS:
        from recircuit.assets import asset_sha256

        return {"name": key, "asset_sha256": asset_sha256(OFFLINE_MODELS[key]["asset"])}
    return {"name": model_name}


def recommender_key(model_name: str, split, config: TrainConfig, n_train: int | None, n_valid: int) -> str:
    """The hex sha256 that names a cached recommender (see the module docstring)."""
    desc = {"version": CACHE_VERSION, "model": model_identity(model_name), "split": split.to_dict(),
            "n_train": n_train, "n_valid": n_valid, "config": config.to_dict()}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()


def recommender_dir(model_name: str, split, config: TrainConfig, n_train: int | None = 512, n_valid: int = 200,
                    cache_root: str | Path | None = None) -> Path:
    """Directory of the cached recommender for this request (it may not exist yet)."""
    if cache_root is None:
        from recircuit.assets import cache_dir

        cache_root = cache_dir()
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name.lower())
    key = recommender_key(model_name, split, config, n_train, n_valid)
    return Path(cache_root) / "models" / f"{safe}-{config.mode}-{key[:16]}"


def cached_recommender(
    model_name: str = "smollm2-135m-instruct",
    split=None,
    config: TrainConfig | None = None,
    n_train: int | None = 512,
    n_valid: int = 200,
    device: str | None = None,
    cache_root: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """The checkpoint of a fine-tuned recommender: reused if cached, else trained and cached.

    Args:
        model_name: base model, as for :func:`recircuit.models.load_model` (``"tiny"`` works).
        split: a :class:`recircuit.data.Split`; default ``build_split("tallrec")``.
        config: training config; default :class:`TrainConfig` (LoRA, TALLRec defaults).
        n_train: train on the first ``n_train`` training samples (None: all).
        n_valid: validate (early stopping) on the first ``n_valid`` validation samples.
        device: where to train if training is needed.
        cache_root: default ``$RECIRCUIT_CACHE`` (or ``~/.cache/recircuit``).
        progress: show the training progress bar.

    Returns:
        Path of the ``.safetensors`` file; its sidecar ``.json`` sits next to it.
    """
    if split is None:
        from recircuit.data import build_split

        split = build_split("tallrec")
    config = config or TrainConfig()
    out = recommender_dir(model_name, split, config, n_train, n_valid, cache_root)
    stem = out / "model"
    try:
        meta = read_meta(stem)
        if not (meta.get("metrics") or {}).get("stopped") and stem.with_suffix(".safetensors").exists():
            logger.info("reusing cached recommender %s", stem)
            return stem.with_suffix(".safetensors")
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        pass
    from recircuit.models import load_model

    model = load_model(model_name, device=device or ("cpu" if model_name.lower() == "tiny" else None))
    train_samples = split.train[:n_train] if n_train else split.train
    valid_samples = split.valid[:n_valid]
    meta = {"split": split.to_dict(), "n_train": len(train_samples), "n_valid": len(valid_samples),
            "cache_key": recommender_key(model_name, split, config, n_train, n_valid)}
    res = train(model, train_samples, valid_samples, config, out_dir=out, meta=meta, progress=progress)
    return res.checkpoint


def load_recommender(model_name: str = "smollm2-135m-instruct", split=None, config: TrainConfig | None = None,
                     n_train: int | None = 512, n_valid: int = 200, device: str | None = None,
                     cache_root: str | Path | None = None, progress: bool = True) -> tuple:
    """:func:`cached_recommender`, then load it: returns ``(model, meta)``."""
    path = cached_recommender(model_name, split, config, n_train, n_valid, device, cache_root, progress)
    return load_trained(path, device=device)
