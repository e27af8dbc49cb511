"""Checkpoints: safetensors weights plus a JSON sidecar, written atomically, checked on load.

Usage::

    from recircuit.train.checkpoint import save_checkpoint, load_checkpoint
    save_checkpoint(model, "runs/ft/model", meta={"split": split.to_dict(), "seed": 0})
    load_checkpoint(fresh_model, "runs/ft/model")      # refuses a different base model
    model, meta = load_trained("runs/ft/model")        # builds the base model named in the sidecar

``<path>.safetensors`` holds LoRA adapter tensors (``lora.*``) when adapters are attached, or else
the full state dict (``full.*``); ``<path>.json`` holds the base-model name, the asset sha256 where
known, the LoRA config, the data split, the seed and the metrics. No pickles.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from recircuit._io import atomic_write, atomic_write_json
from recircuit.models.loading import OFFLINE_MODELS, TINY_MODEL_NAME, model_name
from recircuit.train.lora import (
    LoraConfig,
    attach_lora,
    load_lora_state_dict,
    lora_modules,
    lora_state_dict,
)

FORMAT = "recircuit.checkpoint/1"


class CheckpointMismatchError(ValueError):
    """A checkpoint was made for another base model."""


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    p = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def base_model_id(model) -> dict:
    """Identity of the base model: name, asset sha256 (offline models), shape, seed for tiny models."""
    name = model_name(model)
    ident = {"name": name, "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model, "n_heads": model.cfg.n_heads}
    if name.lower() in OFFLINE_MODELS:
        from recircuit.assets import asset_sha256

        ident["asset_sha256"] = asset_sha256(OFFLINE_MODELS[name.lower()]["asset"])
    if getattr(model, "recircuit_seed", None) is not None:
        ident["seed"] = model.recircuit_seed
    return ident


def save_checkpoint(model, path: str | Path, meta: dict | None = None) -> tuple[Path, Path]:
    """Save adapters (if attached) or the full weights, plus the JSON sidecar."""
    st, js = _paths(path)
    mods = lora_modules(model)
    if mods:
        tensors = {f"lora.{k}": v for k, v in lora_state_dict(model).items()}
        lora_cfg = getattr(model, "recircuit_lora", None)
        kind = "lora"
    else:
        tensors = {f"full.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        lora_cfg, kind = None, "full"
    # tied weights share storage; safetensors refuses shared tensors, so clone
    tensors = {k: v.clone() for k, v in tensors.items()}
    atomic_write(st, lambda tmp: save_file(tensors, str(tmp)))
    atomic_write_json(js, {"format": FORMAT, "kind": kind, "base_model": base_model_id(model),
                           "lora": lora_cfg.to_dict() if lora_cfg else None, **(meta or {})})
    return st, js


def read_meta(path: str | Path) -> dict:
    """The JSON sidecar of a checkpoint."""
    _, js = _paths(path)
    if not js.exists():
        raise FileNotFoundError(f"No checkpoint sidecar {js}; pass the stem written by save_checkpoint.")
    meta = json.loads(js.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{js} is not a recircuit checkpoint (format {meta.get('format')!r}).")
    return meta


def load_checkpoint(model, path: str | Path, strict_base: bool = True) -> dict:
    """Load a checkpoint into ``model`` (attaching adapters if it holds LoRA tensors).

    Raises:
        CheckpointMismatchError: the checkpoint's base model differs from ``model``.
    """
    st, _ = _paths(path)
    meta = read_meta(path)
    want, have = meta["base_model"], base_model_id(model)
    if strict_base and want != have:
        raise CheckpointMismatchError(
            f"Checkpoint {st} was trained on base model {want}, but the model given is {have}. Load it "
            f"onto `load_model({want['name']!r})` (same asset / seed), or retrain."
        )
    tensors = load_file(str(st))
    if meta["kind"] == "lora":
        if lora_modules(model):
            raise RuntimeError("The model already has adapters; load the checkpoint into a fresh model.")
        attach_lora(model, LoraConfig(**{k: tuple(v) if k == "targets" else v for k, v in meta["lora"].items()}))
        load_lora_state_dict(model, {k[5:]: v for k, v in tensors.items()})
    else:
        sd = {k[5:]: v for k, v in tensors.items()}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if unexpected:
            raise CheckpointMismatchError(f"{st} has weights the model lacks: {unexpected[:3]}...")
    return meta


def load_trained(path: str | Path, device: str | None = None) -> tuple:
    """Build the base model a checkpoint names in its sidecar and load the checkpoint into it.

    Args:
        path: the checkpoint (stem, ``.json`` or ``.safetensors``).
        device: torch device for the model (default: CUDA when available; tiny models: CPU).

    Returns:
        ``(model, meta)``: the fine-tuned bridge in eval mode and the sidecar.
    """
    from recircuit.models import load_model, tiny_model

    base = read_meta(path)["base_model"]
    if base["name"] == TINY_MODEL_NAME:
        model = tiny_model(base.get("seed", 0), n_layers=base["n_layers"], n_heads=base["n_heads"],
                           d_model=base["d_model"], device=device or "cpu")
    else:
        model = load_model(base["name"], device=device)
    meta = load_checkpoint(model, path)
    model.eval()
    return model, meta
