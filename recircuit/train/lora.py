"""LoRA adapters on a bridge's own weights, so every hook keeps firing.

Usage::

    from recircuit.train.lora import LoraConfig, attach_lora, merge_lora, detach_lora
    adapters = attach_lora(model, LoraConfig(rank=8, alpha=16, targets=("q", "v")))
    ...train: only adapter parameters require grad...
    merge_lora(model)          # fold B @ A into the weights and remove the adapters
    unmerge_lora(model)        # take the delta back out and re-attach the same adapters
    both = combine_adapters([lora_state_dict(m1), lora_state_dict(m2)], [0.5, 0.5], level="ba")
    load_combined(base_model, both, cfg)   # APA-style weighted merge

**Why hand-written, and why weight-space.** With per-head hooks on, the bridge computes queries,
keys, values and per-head outputs from the projection *weights* (it splits them per head), not
always by calling the ``nn.Linear``. An adapter that wraps the module's forward (as ``peft``
does) can be bypassed on those paths. recircuit's adapter is a ``torch.nn.utils.parametrize``
parametrization of the weight itself: ``W_eff = W + (alpha / rank) * B @ A``. Every code path
that reads the weight sees the adapted weight, every hook fires, and gradients reach ``A`` and
``B`` only. Dropout (TALLRec's 0.05) is applied to the adapter's input features (columns of
``A``), sampled once per forward pass, since a weight parametrization has no per-token input.

Several adapters combine at the A/B level (``A = sum w_i A_i``, ``B = sum w_i B_i``) or at the BA
level (``delta W = sum w_i B_i A_i``), the two merges APA uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from jaxtyping import Float
from torch import nn
from torch.nn.utils import parametrize

#: Target short names -> (component path under a block, HF attribute for docs).
TARGETS = {
    "q": ("attn", "q"), "k": ("attn", "k"), "v": ("attn", "v"), "o": ("attn", "o"),
    "gate": ("mlp", "gate"), "up": ("mlp", "in"), "down": ("mlp", "out"),
}


@dataclass
class LoraConfig:
    """LoRA hyper-parameters (defaults follow TALLRec and APA)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self) -> None:
        bad = [t for t in self.targets if t not in TARGETS]
        if bad:
            raise ValueError(f"Unknown LoRA targets {bad}; choose from {sorted(TARGETS)}.")
        self.targets = tuple(self.targets)

    @property
    def scale(self) -> float:
        """``alpha / rank``."""
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self) | {"targets": list(self.targets)}


class LoraDelta(nn.Module):
    """Parametrization ``W -> W + scale * B @ A`` with feature dropout on the adapter path."""

    def __init__(self, out_features: int, in_features: int, cfg: LoraConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.A = nn.Parameter(torch.empty(cfg.rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, cfg.rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.enabled = True

    def delta(self) -> Float[torch.Tensor, "out in"]:
        """``scale * B @ A`` (with dropout on A's input columns in training mode)."""
        A = self.A
        if self.training and self.cfg.dropout > 0:
            keep = torch.ones(A.shape[1], device=A.device, dtype=A.dtype)
            A = A * nn.functional.dropout(keep, self.cfg.dropout, training=True)
        return self.cfg.scale * (self.B @ A)

    def forward(self, weight: Float[torch.Tensor, "out in"]) -> Float[torch.Tensor, "out in"]:
        """The adapted weight ``W + scale * B @ A`` (just ``W`` while disabled)."""
        if not self.enabled:
            return weight
        return weight + self.delta().to(weight.dtype)


def _linear(model, layer: int, target: str) -> nn.Linear:
    comp, name = TARGETS[target]
    bridge = getattr(getattr(model.blocks[layer], comp), name)
    lin = getattr(bridge, "original_component", None) or bridge
    if not isinstance(lin, nn.Linear):
        raise TypeError(f"blocks.{layer}.{comp}.{name} is {type(lin).__name__}, not nn.Linear; LoRA cannot attach there.")
    return lin


def attach_lora(model, cfg: LoraConfig | None = None, freeze_base: bool = True) -> dict[str, LoraDelta]:
    """Attach one adapter per target projection of every layer.

    Returns:
        ``{"blocks.L.q": LoraDelta, ...}``. With ``freeze_base`` every other parameter stops
        requiring grad, so optimizers see adapter parameters only.
    """
    cfg = cfg or LoraConfig()
    if lora_modules(model):
        raise RuntimeError("The model already has LoRA adapters; detach_lora() or merge_lora() first.")
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    out = {}
    for layer in range(model.cfg.n_layers):
        for t in cfg.targets:
            lin = _linear(model, layer, t)
            d = LoraDelta(lin.out_features, lin.in_features, cfg).to(lin.weight.device)
            parametrize.register_parametrization(lin, "weight", d)
            out[f"blocks.{layer}.{t}"] = d
    model.recircuit_lora = cfg  # type: ignore[attr-defined]
    return out


def lora_modules(model) -> dict[str, LoraDelta]:
    """The attached adapters, keyed ``blocks.L.<target>``."""
    out = {}
    for layer in range(model.cfg.n_layers):
        for t in TARGETS:
            lin = _linear(model, layer, t)
            if parametrize.is_parametrized(lin, "weight"):
                for p in lin.parametrizations.weight:
                    if isinstance(p, LoraDelta):
                        out[f"blocks.{layer}.{t}"] = p
    return out


def lora_state_dict(model) -> dict[str, torch.Tensor]:
    """``{"blocks.L.q.A": ..., "blocks.L.q.B": ...}`` of every adapter."""
    sd = {}
    for name, d in lora_modules(model).items():
        sd[f"{name}.A"] = d.A.detach().cpu().contiguous()
        sd[f"{name}.B"] = d.B.detach().cpu().contiguous()
    return sd


def load_lora_state_dict(model, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors into the attached adapters (names must match)."""
    mods = lora_modules(model)
    for name, d in mods.items():
        with torch.no_grad():
            d.A.copy_(state[f"{name}.A"])
            d.B.copy_(state[f"{name}.B"])


def detach_lora(model) -> None:
    """Remove adapters, restoring the original weights."""
    for name in lora_modules(model):
        layer, t = int(name.split(".")[1]), name.split(".")[2]
        parametrize.remove_parametrizations(_linear(model, layer, t), "weight", leave_parametrized=False)
    if hasattr(model, "recircuit_lora"):
        del model.recircuit_lora


def merge_lora(model) -> None:
    """Fold every adapter into its weight (``W <- W + scale B A``) and remove the adapters.

    The adapters' tensors and config are remembered on the model, so :func:`unmerge_lora` can
    take the delta back out and re-attach them.
    """
    mods = lora_modules(model)
    if not mods:
        return
    merged = {"cfg": getattr(model, "recircuit_lora", None) or next(iter(mods.values())).cfg,
              "state": lora_state_dict(model)}
    was = model.training
    model.eval()  # no dropout in the merged delta
    for name, d in mods.items():
        layer, t = int(name.split(".")[1]), name.split(".")[2]
        d.eval()
        d.enabled = True
        parametrize.remove_parametrizations(_linear(model, layer, t), "weight", leave_parametrized=True)
    model.train(was)
    if hasattr(model, "recircuit_lora"):
        del model.recircuit_lora
    model.recircuit_merged_lora = merged  # type: ignore[attr-defined]


def unmerge_lora(model, freeze_base: bool = True) -> dict[str, LoraDelta]:
    """Undo :func:`merge_lora`: subtract ``scale B A`` from the weights and re-attach the adapters.

    The base weights come back up to float rounding (``(W + D) - D``); the adapters come back
    with exactly the tensors they had.

    Raises:
        RuntimeError: nothing was merged into this model by :func:`merge_lora`.
    """
    merged = getattr(model, "recircuit_merged_lora", None)
    if merged is None:
        raise RuntimeError("No merged LoRA adapters to unmerge; merge_lora() was not called on this model.")
    cfg, state = merged["cfg"], merged["state"]
    with torch.no_grad():
        for key in [k[:-2] for k in state if k.endswith(".A")]:
            layer, t = int(key.split(".")[1]), key.split(".")[2]
            lin = _linear(model, layer, t)
            delta = cfg.scale * (state[f"{key}.B"] @ state[f"{key}.A"])
            lin.weight.sub_(delta.to(lin.weight.device, lin.weight.dtype))
    del model.recircuit_merged_lora
    adapters = attach_lora(model, cfg, freeze_base=freeze_base)
    load_lora_state_dict(model, state)
    return adapters


def set_lora_enabled(model, enabled: bool) -> None:
    """Switch adapters off (base model) or on without removing them (the 'unmerged' state)."""
    for d in lora_modules(model).values():
        d.enabled = enabled


def combine_adapters(
    adapters: Sequence[dict[str, torch.Tensor]], weights: Sequence[float], level: str = "ab"
) -> dict[str, torch.Tensor]:
    """Combine adapter state dicts with weights.

    Args:
        adapters: state dicts from :func:`lora_state_dict`.
        weights: one weight per adapter.
        level: ``"ab"``: ``A = sum w_i A_i`` and ``B = sum w_i B_i`` (returns A/B tensors);
            ``"ba"``: ``delta = sum w_i B_i @ A_i`` (returns ``<name>.delta`` tensors, unscaled).
    """
    if len(adapters) != len(weights) or not adapters:
        raise ValueError(f"{len(adapters)} adapters but {len(weights)} weights; pass one weight per adapter.")
    names = sorted({k.rsplit(".", 1)[0] for k in adapters[0]})
    out = {}
    for n in names:
        if level == "ab":
            out[f"{n}.A"] = sum(w * a[f"{n}.A"] for a, w in zip(adapters, weights))
            out[f"{n}.B"] = sum(w * a[f"{n}.B"] for a, w in zip(adapters, weights))
        elif level == "ba":
            out[f"{n}.delta"] = sum(w * (a[f"{n}.B"] @ a[f"{n}.A"]) for a, w in zip(adapters, weights))
        else:
            raise ValueError(f"level must be 'ab' or 'ba', got {level!r}")
    return out


def load_combined(model, combined: dict[str, torch.Tensor], cfg: LoraConfig | None = None) -> None:
    """Put the output of :func:`combine_adapters` into ``model``.

    A/B-level tensors (``<name>.A``/``<name>.B``) become attached adapters (trainable, base
    frozen); BA-level tensors (``<name>.delta``) are added to the weights as ``scale * delta``,
    the merged form, since a sum of rank-r products is no longer rank r.

    Args:
        model: a bridge without attached adapters.
        combined: tensors from :func:`combine_adapters`.
        cfg: the adapters' config (rank, alpha, targets); defaults to :class:`LoraConfig`.
    """
    cfg = cfg or LoraConfig()
    if any(k.endswith(".delta") for k in combined):
        with torch.no_grad():
            for key, delta in combined.items():
                layer, t = int(key.split(".")[1]), key.split(".")[2]
                lin = _linear(model, layer, t)
                lin.weight.add_(cfg.scale * delta.to(lin.weight.device, lin.weight.dtype))
        return
    attach_lora(model, cfg)
    load_lora_state_dict(model, combined)
