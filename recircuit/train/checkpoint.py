"""Checkpoints: safetensors weights plus a JSON sidecar, written atomically, checked on load.

Usage::

    from recircuit.train.checkpoint import save_checkpoint, load_checkpoint
    save_checkpoint(model, "runs/ft/model", meta={"split": split.to_dict(), "seed": 0})
    load_checkpoint(fresh_model, "runs/ft/model")      # refuses a different base model
    model, meta = load_trained("runs/ft/model")        # builds the base model named in the sidecar

``<path>.safetensors`` holds the LoRA adapter tensors (``lora.*``) when adapters are attached
(sidecar ``kind: "lora"``), or else the full state dict (``full.*``, ``kind: "full"``);
``<path>.json`` holds the base-model name, the asset sha256 where known, the LoRA config, the
sha256 of the weights file (``weights``), the data split, the seed and the metrics. No pickles.

What is checked, and what happens:

* **Saving** writes both files to temporary siblings first and renames them into place only
  once both are complete, weights first and the sidecar last. A failed save leaves an existing
  checkpoint at ``path`` byte-identical; an interrupted one can at worst pair new weights with
  the old sidecar, which the sha256 check below refuses.
* **Loading** refuses, with an :class:`~recircuit.errors.InputError` naming the file and the fix:
  a sidecar that is not valid JSON (with its line and column) or lacks a field; a missing
  weights or adapter file; a weights file whose sha256 differs from the sidecar's (edited,
  truncated or swapped); a file safetensors cannot read; and any missing, unexpected or
  wrongly shaped tensor (a file holding 13 of 22 tensors no longer loads as a half-trained model).
  A different base model raises :class:`CheckpointMismatchError` (also an ``InputError``).
* **Old checkpoints** (``format: "recircuit.checkpoint/1"``, written before sidecars carried a
  sha256) still load, with a logged warning: the tensor-name and shape checks still run, only
  the byte-level check is skipped. Re-save one (``load_trained`` then ``save_checkpoint``) to add
  the hash. A current-format sidecar without a sha256 is refused: it was edited by hand.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recircuit._io import atomic_write, sha256_file
from recircuit.cache import file_sha256
from recircuit.errors import InputError
from recircuit.models.loading import OFFLINE_MODELS, model_name, tiny_family
from recircuit.train.lora import (
    LoraConfig,
    attach_lora,
    detach_lora,
    load_lora_state_dict,
    lora_modules,
    lora_state_dict,
)

logger = logging.getLogger(__name__)

FORMAT = "recircuit.checkpoint/2"
#: Older sidecar formats that still load (without a sha256 check; see the module docstring).
LEGACY_FORMATS = ("recircuit.checkpoint/1",)
#: Sidecar fields written by :func:`save_checkpoint` itself; a caller's ``meta`` cannot override them.
RESERVED = ("format", "kind", "base_model", "lora", "weights")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RETRAIN = "restore the file from a backup, or retrain it (recircuit train --out DIR)"


class CheckpointMismatchError(InputError):
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
    """Save adapters (if attached) or the full weights, plus the JSON sidecar with their sha256.

    Both files are staged as temporary siblings (:func:`recircuit._io.atomic_write`, named with
    this process's pid) and renamed into place only when both are complete (weights first,
    sidecar last), so a failure never replaces a good checkpoint.

    Args:
        model: the bridge to save.
        path: the checkpoint stem (``runs/ft/model``), or its ``.json`` / ``.safetensors`` name.
        meta: extra JSON-able sidecar fields (split, metrics, ...). The fields in :data:`RESERVED`
            are written by this function and win over ``meta``'s.

    Returns:
        ``(weights_path, sidecar_path)``.
    """
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
    extra = {k: v for k, v in (meta or {}).items() if k not in RESERVED}

    def write_sidecar(js_tmp: Path) -> None:
        def write_weights(st_tmp: Path) -> None:
            save_file(tensors, str(st_tmp))
            sidecar = {"format": FORMAT, "kind": kind, "base_model": base_model_id(model),
                       "lora": lora_cfg.to_dict() if lora_cfg else None,
                       "weights": {"file": st.name, "sha256": sha256_file(st_tmp), "tensors": len(tensors)}, **extra}
            js_tmp.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")

        atomic_write(st, write_weights)  # both temporaries are complete before this rename

    atomic_write(js, write_sidecar)  # the sidecar is renamed last
    return st, js


def read_meta(path: str | Path) -> dict:
    """The JSON sidecar of a checkpoint, with its fields checked.

    Raises:
        FileNotFoundError: there is no sidecar.
        InputError: the sidecar is not UTF-8 JSON, or a field is missing or malformed.
    """
    _, js = _paths(path)
    if not js.exists():
        raise FileNotFoundError(f"No checkpoint sidecar {js}; pass the stem written by save_checkpoint.")
    fix = f"restore it from a backup, or retrain the checkpoint (recircuit train --out {js.parent})"
    try:
        meta = json.loads(js.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(f"checkpoint sidecar is not UTF-8 (byte {err.start})", path=js, fix=fix) from None
    except json.JSONDecodeError as err:
        raise InputError(f"checkpoint sidecar is not valid JSON ({err.msg} at line {err.lineno} column {err.colno})",
                         path=js, line=err.lineno, fix=fix) from None
    if not isinstance(meta, dict):
        raise InputError(f"checkpoint sidecar holds a JSON {type(meta).__name__}, not an object", path=js, fix=fix)
    fmt = meta.get("format")
    if fmt != FORMAT and fmt not in LEGACY_FORMATS:
        raise InputError(f"not a recircuit checkpoint sidecar (format {fmt!r}, expected {FORMAT!r})", path=js,
                         field="format", fix=fix)
    if meta.get("kind") not in ("full", "lora"):
        raise InputError(f"kind is {meta.get('kind')!r}, expected 'full' or 'lora'", path=js, field="kind", fix=fix)
    base = meta.get("base_model")
    if not isinstance(base, dict) or not isinstance(base.get("name"), str):
        raise InputError("base_model must be an object with a 'name'", path=js, field="base_model", fix=fix)
    if meta["kind"] == "lora" and not isinstance(meta.get("lora"), dict):
        raise InputError("kind is 'lora' but the sidecar has no LoRA config", path=js, field="lora", fix=fix)
    if fmt == FORMAT:
        w = meta.get("weights")
        if not isinstance(w, dict) or not isinstance(w.get("sha256"), str) or not _HEX64.fullmatch(w["sha256"]):
            raise InputError("the sidecar carries no sha256 of its weights file (64 hex digits)", path=js,
                             field="weights", fix=fix)
    return meta


def _read_tensors(st: Path, js: Path, meta: dict) -> dict:
    """The weights file's tensors, after its existence, sha256 and readability are checked."""
    what = "LoRA adapter file" if meta["kind"] == "lora" else "weights file"
    if not st.is_file():
        raise InputError(f"the {what} of sidecar {js.name} (kind {meta['kind']!r}) is missing", path=st, fix=_RETRAIN)
    want = (meta.get("weights") or {}).get("sha256")
    if want is None:
        logger.warning("%s: sidecar format %s carries no sha256, so the weights are loaded without a byte-level "
                       "check; re-save the checkpoint (load_trained, then save_checkpoint) to add one",
                       js, meta.get("format"))
    else:
        have = file_sha256(st)
        if have != want:
            raise InputError(f"sha256 {have[:12]}... does not match {want[:12]}... recorded in {js.name}: the {what} "
                             "was changed, truncated or swapped after it was saved", path=st, fix=_RETRAIN)
    try:
        return load_file(str(st))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        msg = " ".join(str(err).split())[:120]
        raise InputError(f"not a readable safetensors file, truncated or corrupt ({msg})", path=st, fix=_RETRAIN) from None


def _few(names) -> str:
    names = sorted(names)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _check_keys(st: Path, have: dict, want: dict, label: str) -> None:
    """Refuse missing, unexpected or wrongly shaped tensors (``want``: name -> shape)."""
    missing = set(want) - set(have)
    unexpected = set(have) - set(want)
    problems = []
    if missing:
        problems.append(f"lacks {len(missing)} of the {len(want)} {label} tensors ({_few(missing)})")
    if unexpected:
        problems.append(f"has {len(unexpected)} tensors the model does not ({_few(unexpected)})")
    shaped = [f"{k} {tuple(have[k].shape)} != {tuple(want[k])}" for k in sorted(set(have) & set(want))
              if tuple(have[k].shape) != tuple(want[k])]
    if shaped:
        problems.append(f"has {len(shaped)} tensors of the wrong shape ({', '.join(shaped[:3])})")
    if problems:
        raise InputError("; ".join(problems), path=st,
                         fix="load it into the base model it was saved from, or retrain it (recircuit train --out DIR)")


def load_checkpoint(model, path: str | Path, strict_base: bool = True) -> dict:
    """Load a checkpoint into ``model`` (attaching adapters if it holds LoRA tensors).

    Every check in the module docstring runs before ``model`` is changed; on any refusal the
    model is left as it was (adapters attached for the check are removed again).

    Args:
        model: a fresh base model (no adapters attached).
        path: the checkpoint stem, or its ``.json`` / ``.safetensors`` name.
        strict_base: refuse a checkpoint saved from another base model.

    Returns:
        The sidecar.

    Raises:
        CheckpointMismatchError: the checkpoint's base model differs from ``model``.
        InputError: a broken sidecar, a missing, changed, truncated or unreadable weights file,
            or missing / unexpected / wrongly shaped tensors.
        FileNotFoundError: there is no sidecar.
    """
    st, js = _paths(path)
    meta = read_meta(path)
    want, have = meta["base_model"], base_model_id(model)
    if strict_base and want != have:
        raise CheckpointMismatchError(
            f"Checkpoint {st} was trained on base model {want}, but the model given is {have}. Load it "
            f"onto `load_model({want['name']!r})` (same asset / seed), or retrain."
        )
    tensors = _read_tensors(st, js, meta)
    prefix = f"{meta['kind']}."
    named = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in tensors.items()}
    if meta["kind"] == "lora":
        if not any(k.startswith(prefix) for k in tensors):
            raise InputError(f"sidecar {js.name} has kind 'lora' but the file holds no adapter tensors (lora.*)",
                             path=st, fix=_RETRAIN)
        if lora_modules(model):
            raise RuntimeError("The model already has adapters; load the checkpoint into a fresh model.")
        try:
            cfg = LoraConfig(**{k: tuple(v) if k == "targets" else v for k, v in meta["lora"].items()})
        except (TypeError, ValueError) as err:
            raise InputError(f"invalid LoRA config ({err})", path=js, field="lora", fix=_RETRAIN) from None
        grads = [p.requires_grad for p in model.parameters()]
        attach_lora(model, cfg)
        try:
            _check_keys(st, named, {k: v.shape for k, v in lora_state_dict(model).items()}, "adapter")
            load_lora_state_dict(model, named)
        except Exception:
            detach_lora(model)  # leave the model as it was given
            for p, g in zip(model.parameters(), grads):
                p.requires_grad_(g)
            raise
    else:
        _check_keys(st, named, {k: v.shape for k, v in model.state_dict().items()}, "model")
        model.load_state_dict(named, strict=True)
    return meta


def load_trained(path: str | Path, device: str | None = None) -> tuple:
    """Build the base model a checkpoint names in its sidecar and load the checkpoint into it.

    Args:
        path: the checkpoint (stem, ``.json`` or ``.safetensors``).
        device: torch device for the model (default: CUDA when available; tiny models: CPU).

    Returns:
        ``(model, meta)``: the fine-tuned bridge in eval mode and the sidecar.

    Raises:
        InputError: see :func:`load_checkpoint`; also a tiny-model sidecar without its shape.

    Tiny random models (any family, :data:`recircuit.models.loading.TINY_MODELS`) are rebuilt
    from the seed and shape in the sidecar; any other name goes through ``load_model``.
    """
    from recircuit.models import load_model, tiny_model

    base = read_meta(path)["base_model"]
    family = tiny_family(base["name"])
    if family is not None:
        shape = {k: base.get(k) for k in ("n_layers", "n_heads", "d_model")}
        if not all(isinstance(v, int) for v in shape.values()):
            _, js = _paths(path)
            raise InputError("a tiny-model sidecar needs integer n_layers, n_heads and d_model", path=js,
                             field="base_model", fix=_RETRAIN)
        model = tiny_model(base.get("seed", 0), device=device or "cpu", family=family, **shape)
    else:
        model = load_model(base["name"], device=device)
    meta = load_checkpoint(model, path)
    model.eval()
    return model, meta
