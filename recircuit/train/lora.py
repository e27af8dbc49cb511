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

**Which weights, per family.** Targets are the projection names of the family table
(:mod:`recircuit.models.families`): ``q``, ``k``, ``v``, ``o``, ``gate`` (gated MLPs only), ``up``,
``down``. A target a family lacks (``gate`` on GPT-2 or GPT-NeoX) is refused with the family's
list. GPT-2's ``Conv1D`` weights are stored ``[in, out]``; the adapter's delta is transposed to
match, so ``A`` is always ``[rank, in]`` and ``B`` ``[out, rank]``.

**Fused q/k/v (GPT-2, GPT-NeoX, Phi-3).** The bridge splits the fused matrix into standalone
``q``/``k``/``v`` linears at boot and only those run afterwards, so an adapter on the fused Hugging
Face matrix would change nothing. recircuit puts the ``q`` and ``v`` adapters on the split
weights. In terms of the fused matrix this is LoRA restricted to its query and value rows (with
one rank-r pair per part, as TALLRec's ``q_proj``/``v_proj`` targets do on Llama), which is the
sensible slice: the keys stay untouched unless ``k`` is asked for.

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

from recircuit.errors import InputError
from recircuit.models.families import PROJECTIONS, Projection, projections

#: Target short names -> (block submodule, TransformerLens component name), read from the family table.
TARGETS = {short: (role.component, role.bridge) for short, role in PROJECTIONS.items()}


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
            raise InputError(f"unknown LoRA targets {bad}", field="targets", fix=f"choose from {list(TARGETS)}")
        self.targets = tuple(self.targets)

    @property
    def scale(self) -> float:
        """``alpha / rank``."""
        return self.alpha / self.rank

    def to_dict(self) -> dict:
        """JSON-able form."""
        return asdict(self) | {"targets": list(self.targets)}


class LoraDelta(nn.Module):
    """Parametrization ``W -> W + scale * B @ A`` with feature dropout on the adapter path.

    ``transposed`` marks a weight stored ``[in, out]`` (GPT-2's ``Conv1D``): the delta is then
    ``(scale * B @ A).T``, so ``A`` is ``[rank, in]`` and ``B`` ``[out, rank]`` in every layout.
    """

    def __init__(self, out_features: int, in_features: int, cfg: LoraConfig, transposed: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.transposed = transposed
        self.A = nn.Parameter(torch.empty(cfg.rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, cfg.rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.enabled = True

    def delta(self) -> Float[torch.Tensor, "..."]:
        """``scale * B @ A`` in the weight's layout (with dropout on A's input columns in training mode)."""
        A = self.A
        if self.training and self.cfg.dropout > 0:
            keep = torch.ones(A.shape[1], device=A.device, dtype=A.dtype)
            A = A * nn.functional.dropout(keep, self.cfg.dropout, training=True)
        d = self.cfg.scale * (self.B @ A)
        return d.T if self.transposed else d

    def forward(self, weight: Float[torch.Tensor, "..."]) -> Float[torch.Tensor, "..."]:
        """The adapted weight ``W + delta`` (just ``W`` while disabled)."""
        if not self.enabled:
            return weight
        return weight + self.delta().to(weight.dtype)


def _keep_class_name(module: nn.Module, name: str) -> None:
    """Give the class ``parametrize`` made for ``module`` (``Parametrized<Name>``) its original name back.

    TransformerLens 4.3 computes per-head attention results with ``type(o).__name__ == "Conv1D"``
    to tell GPT-2's ``[in, out]`` o-projection from an ``nn.Linear``; under the generated name a
    square ``Conv1D`` would silently be read transposed. The class is generated for this one
    module and dropped again when the parametrization is removed, so nothing else is renamed.
    """
    cls = type(module)
    if cls.__name__ != name:
        cls.__name__ = cls.__qualname__ = name


def _as_weight(proj: Projection, delta: Float[torch.Tensor, "out in"]) -> torch.Tensor:
    """An ``[out, in]`` delta in the layout of the projection's weight."""
    return delta.T if proj.layout == "conv1d" else delta


def attach_lora(model, cfg: LoraConfig | None = None, freeze_base: bool = True) -> dict[str, LoraDelta]:
    """Attach one adapter per target projection of every layer.

    Returns:
        ``{"blocks.L.q": LoraDelta, ...}``. With ``freeze_base`` every other parameter stops
        requiring grad, so optimizers see adapter parameters only.

    Raises:
        InputError: a target the model's family does not have (e.g. ``gate`` on GPT-2).
        RuntimeError: adapters are already attached.
    """
    cfg = cfg or LoraConfig()
    if lora_modules(model):
        raise RuntimeError("The model already has LoRA adapters; detach_lora() or merge_lora() first.")
    targets = projections(model, cfg.targets)  # refuses targets the family lacks, before any change
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    out = {}
    for name, proj in targets.items():
        lin = proj.module
        d = LoraDelta(proj.out_features, proj.in_features, cfg, transposed=proj.layout == "conv1d")
        d = d.to(lin.weight.device)
        parametrize.register_parametrization(lin, "weight", d)
        _keep_class_name(lin, proj.module_class_name)
        out[name] = d
    model.recircuit_lora = cfg  # type: ignore[attr-defined]
    return out


def lora_modules(model) -> dict[str, LoraDelta]:
    """The attached adapters, keyed ``blocks.L.<target>``."""
    try:
        projs = projections(model)
    except InputError:  # a family the table cannot describe: attach_lora refuses it, so it has no adapters
        return {}
    out = {}
    for name, proj in projs.items():
        lin = proj.module
        if parametrize.is_parametrized(lin, "weight"):
            for p in lin.parametrizations.weight:
                if isinstance(p, LoraDelta):
                    out[name] = p
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
    projs = projections(model)
    for name in lora_modules(model):
        parametrize.remove_parametrizations(projs[name].module, "weight", leave_parametrized=False)
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
    projs = projections(model)
    for name, d in mods.items():
        d.eval()
        d.enabled = True
        parametrize.remove_parametrizations(projs[name].module, "weight", leave_parametrized=True)
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
    projs = projections(model)
    with torch.no_grad():
        for key in [k[:-2] for k in state if k.endswith(".A")]:
            lin = projs[key].module
            delta = _as_weight(projs[key], cfg.scale * (state[f"{key}.B"] @ state[f"{key}.A"]))
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
        projs = projections(model)
        with torch.no_grad():
            for key, delta in combined.items():
                name = key.removesuffix(".delta")
                lin = projs[name].module
                lin.weight.add_(cfg.scale * _as_weight(projs[name], delta).to(lin.weight.device, lin.weight.dtype))
        return
    attach_lora(model, cfg)
    load_lora_state_dict(model, combined)
