"""Fine-tuned recommenders through the one cache (:mod:`recircuit.cache`), trained once, reused.

Usage::

    from recircuit.data import build_split
    from recircuit.train import TrainConfig, cached_recommender, load_recommender
    split = build_split("tallrec")
    cfg = TrainConfig(mode="full", lr=5e-5, eval_every=16, patience=3)
    path = cached_recommender("smollm2-135m-instruct", split, cfg, n_train=512)  # trains once
    model, meta = load_recommender("smollm2-135m-instruct", split, cfg, n_train=512)

A checkpoint is an entry of ``Cache(subdir="models")``:
``$RECIRCUIT_CACHE/models/<model>-<mode>-<key>/files/model.{safetensors,json}``. The key hashes the
base model's identity (the pinned asset sha256 for offline models), the split description
(preset, parameters and a hash of every sample), the numbers of training and validation samples,
the whole :class:`TrainConfig` (seed included), the effective precision when it is not fp32
(``bf16`` autocasts on CUDA only, ``cpu_bf16`` on CPU, so the same config trains in bf16 on a
GPU and in fp32 on a CPU) and the source of the code that trains (``recircuit.train``,
``models``, ``data``). The sha256 of both files is recorded and checked on reuse: a damaged,
altered or unreadable checkpoint is retrained and replaced; ``fresh=True`` retrains it. A run
that must not be trusted raises :class:`~recircuit.train.loop.TrainingFailed` and caches nothing.
Training writes into a staging directory (named with the writer's pid, so a killed run's is
removed by the next :class:`~recircuit.cache.Cache` on that root) that is moved into place only
when it succeeded, so a failed run never replaces a good checkpoint.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path

import torch

from recircuit._io import sha256_file, temp_prefix
from recircuit.cache import Cache, cache_key
from recircuit.models.loading import OFFLINE_MODELS, TINY_MODEL_NAME, default_device, tiny_family
from recircuit.train.checkpoint import load_trained, read_meta
from recircuit.train.loop import TrainConfig, train

logger = logging.getLogger(__name__)

#: Bump when the training code changes what a given config produces.
CACHE_VERSION = 1

#: The parts of recircuit whose source a trained checkpoint depends on.
TRAIN_CODE = ("train", "models", "data", "_io.py")


#: Files of a local model directory whose bytes identify the model.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".json", ".model", ".txt")


def model_identity(model_name: str) -> dict:
    """What identifies a base model by name, without loading it.

    A pinned asset is identified by its sha256, a local file (a GGUF) by its sha256, and a local
    directory by the sha256 of each of its weight, config and tokenizer files, so replacing the
    files behind the same path never reuses a recommender trained from the old ones. A hub name
    is identified by the name alone.
    """
    key = model_name.lower()
    if key in ("tiny", TINY_MODEL_NAME):
        return {"name": TINY_MODEL_NAME, "seed": 0}
    if key in OFFLINE_MODELS:
        from recircuit.assets import asset_sha256

        return {"name": key, "asset_sha256": asset_sha256(OFFLINE_MODELS[key]["asset"])}
    path = Path(model_name).expanduser()
    if path.is_file():
        return {"name": model_name, "sha256": sha256_file(path)}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
        return {"name": model_name, "files": {str(p.relative_to(path)): sha256_file(p) for p in files}}
    return {"name": model_name}


def train_device(model_name: str, device: str | torch.device | None = None) -> torch.device:
    """The device :func:`cached_recommender` trains on: ``device``, else CPU for tiny models, else CUDA when available."""
    if device is not None:
        return torch.device(device)
    if tiny_family(model_name) is not None:
        return torch.device("cpu")
    return default_device()


def precision(config: TrainConfig, device: str | torch.device) -> str:
    """The precision training runs in on ``device``: ``"bf16"`` (autocast) or ``"fp32"`` (as :func:`train` decides)."""
    kind = torch.device(device).type
    return "bf16" if (config.bf16 and kind == "cuda") or (config.cpu_bf16 and kind == "cpu") else "fp32"


def init_identity(init: str | Path) -> dict:
    """What identifies a starting checkpoint: the sha256 of its weights and of its sidecar."""
    from recircuit.train.checkpoint import _paths

    st, js = _paths(init)
    return {"weights_sha256": sha256_file(st), "sidecar_sha256": sha256_file(js)}


def recommender_key(model_name: str, split, config: TrainConfig, n_train: int | None, n_valid: int,
                    device: str | torch.device | None = None, init: str | Path | None = None) -> str:
    """The 16-hex-digit cache key of a recommender (see the module docstring).

    ``device`` (default: :func:`train_device`'s) enters the key as the effective precision, and
    only when that is not fp32, so the keys of fp32 runs are those of earlier versions. ``init``
    (a checkpoint training starts from) enters it by its bytes (:func:`init_identity`).
    """
    extra = {}
    prec = precision(config, train_device(model_name, device))
    if prec != "fp32":
        extra["precision"] = prec
    if init is not None:
        extra["init"] = init_identity(init)
    return cache_key(code=TRAIN_CODE, version=CACHE_VERSION, model=model_identity(model_name),
                     split=split.to_dict(), n_train=n_train, n_valid=n_valid, config=config.to_dict(), **extra)


def _step(model_name: str, config: TrainConfig) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name.lower()) + f"-{config.mode}"


def _models_cache(cache_root: str | Path | None, fresh: bool = False, since: float | None = None) -> Cache:
    if cache_root is None:
        return Cache(subdir="models", fresh=fresh, since=since)
    return Cache(Path(cache_root) / "models", fresh=fresh, since=since)


def recommender_dir(model_name: str, split, config: TrainConfig, n_train: int | None = 512, n_valid: int = 200,
                    cache_root: str | Path | None = None, device: str | torch.device | None = None) -> Path:
    """The cache entry directory of this recommender (it may not exist yet)."""
    key = recommender_key(model_name, split, config, n_train, n_valid, device)
    return _models_cache(cache_root).entry_dir(_step(model_name, config), key)


def _usable(payload) -> dict:
    """The entry's payload (``{"metrics": ..., "cache_key": ...}``); any other shape is a miss."""
    if not isinstance(payload, dict) or not isinstance(payload.get("metrics"), dict):
        raise ValueError("not a recommender entry")
    return payload


def cached_recommender(
    model_name: str = "smollm2-135m-instruct",
    split=None,
    config: TrainConfig | None = None,
    n_train: int | None = 512,
    n_valid: int = 200,
    device: str | None = None,
    cache_root: str | Path | None = None,
    progress: bool = True,
    fresh: bool = False,
    since: float | None = None,
    init: str | Path | None = None,
) -> Path:
    """The checkpoint of a fine-tuned recommender: reused if cached and intact, else trained and cached.

    Args:
        model_name: base model, as for :func:`recircuit.models.load_model` (``"tiny"`` works).
        split: a :class:`recircuit.data.Split`; default ``build_split("tallrec")``.
        config: training config; default :class:`TrainConfig` (LoRA, TALLRec defaults).
        n_train: train on the first ``n_train`` training samples (None: all).
        n_valid: validate (early stopping) on the first ``n_valid`` validation samples.
        device: where to train if training is needed (default: :func:`train_device`); its
            kind decides the precision, which is part of the key.
        cache_root: default ``$RECIRCUIT_CACHE`` (or ``~/.cache/recircuit``).
        progress: show the training progress bar.
        fresh, since: retrain even if cached (see :class:`recircuit.cache.Cache`).
        init: a full fine-tune checkpoint of the same base model to start from (the two-stage
            protocol: Original and Retrain both continue a base recommender); part of the key.

    Raises:
        InputError: ``init`` holds LoRA adapters (start from a full fine-tune or a merged one).

    Returns:
        Path of the ``.safetensors`` file; its sidecar ``.json`` sits next to it.
    """
    if split is None:
        from recircuit.data import build_split

        split = build_split("tallrec")
    config = config or TrainConfig()
    if init is not None and config.mode != "full":
        from recircuit.errors import InputError

        raise InputError(f"a {config.mode} fine-tune cannot continue {init}: its checkpoint would hold the adapters "
                         "alone and reload onto the raw base model", field="mode",
                         fix="continue a base recommender with mode='full'")
    cache = _models_cache(cache_root, fresh, since)
    dev = train_device(model_name, device)
    step, key = _step(model_name, config), recommender_key(model_name, split, config, n_train, n_valid, dev, init)
    entry = cache.lookup(step, key, parse=_usable)
    if entry is not None:
        st = entry.file("model.safetensors")
        try:
            read_meta(st)
            logger.info("reusing cached recommender %s", st)
            return st
        except (OSError, ValueError) as err:
            logger.warning("cached recommender %s is unreadable (%s); retraining", st, err)
    from recircuit.models import load_model

    model = load_model(model_name, device=dev)
    train_samples = split.train[:n_train] if n_train else split.train
    valid_samples = split.valid[:n_valid]
    meta = {"split": split.to_dict(), "n_train": len(train_samples), "n_valid": len(valid_samples), "cache_key": key}
    if init is not None:
        meta["init"] = _start_from(model, init)
    cache.root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=temp_prefix(f"{step}-{key}.train"), dir=cache.root))
    try:
        res = train(model, train_samples, valid_samples, config, out_dir=staging, meta=meta, progress=progress)
        st = res.checkpoint
        entry = cache.put(step, key, {"metrics": res.metrics, "cache_key": key},
                          files={"model.safetensors": st, "model.json": st.with_suffix(".json")}, move=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry.file("model.safetensors")


def _start_from(model, init: str | Path) -> dict:
    """Load the full fine-tune ``init`` into ``model``; returns what the sidecar records of it.

    Only a full fine-tune may continue one: a LoRA checkpoint stores its adapters alone and is
    loaded onto the raw base model, so the starting weights would be lost on reload.
    """
    from recircuit.errors import InputError
    from recircuit.train.checkpoint import load_checkpoint

    if read_meta(init).get("kind") != "full":
        raise InputError(f"{init} holds LoRA adapters; a recommender can only continue a full fine-tune",
                         field="init", fix="train the base recommender with mode='full'")
    parent = load_checkpoint(model, init)
    return {"checkpoint": str(init), **init_identity(init), "metrics": parent.get("metrics")}


def load_recommender(model_name: str = "smollm2-135m-instruct", split=None, config: TrainConfig | None = None,
                     n_train: int | None = 512, n_valid: int = 200, device: str | None = None,
                     cache_root: str | Path | None = None, progress: bool = True) -> tuple:
    """:func:`cached_recommender`, then load it: returns ``(model, meta)``."""
    path = cached_recommender(model_name, split, config, n_train, n_valid, device, cache_root, progress)
    return load_trained(path, device=device)
