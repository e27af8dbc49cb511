"""Parameter masks: which slices of which weights belong to each module group.

Usage::

    from recircuit.unlearn.masks import group_masks
    masks = group_masks(model, grouping)      # {group: {param_name: bool mask, same shape as the param}}
    handles = attach_grad_masks(model, active_mask(masks))   # gradients outside the groups -> 0
    ...
    for h in handles: h.remove()

A head ``a{L}.h{H}`` owns its block of ``d_head`` output features of ``W_Q`` (q), the same block
of input features of ``W_O`` (o), and the output features of ``W_K``/``W_V`` of its KV group. An
MLP ``m{L}`` owns its whole gate, up and down weights (``up``/``down`` only for a non-gated MLP).
Where those blocks sit (rows or columns, split or fused q/k/v, which projections exist) comes
from the family table, :mod:`recircuit.models.families`, so the same masks work on Llama-style,
GPT-2-style (fused qkv, ``Conv1D`` layout, no gate), GPT-NeoX and Phi-3 models. Biases, norms,
embeddings and the unembedding are never updated (frozen).

**Grouped-query attention.** A KV slice is shared by ``n_heads / n_kv_heads`` query heads, which
can fall into different groups. Rule: if the query heads of one KV group fall into more than one
group among forget-specific / retain-specific / task-shared, the shared K/V slice is task-shared
(it serves both objectives, so it gets the conflict-aware update); if they agree, the slice
follows them; if all are frozen, it is frozen. Without GQA each head has its K/V to itself.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool
from torch.utils.hooks import RemovableHandle

from recircuit.models.families import (
    family_of,
    head_slice,
    n_kv_heads,
    neuron_slice,
    projection_params,
)
from recircuit.nodes import head_name, mlp_name
from recircuit.unlearn.grouping import GROUPS, Grouping


def kv_group_of(grouping: Grouping, layer: int, group: int, n_heads: int, n_kv: int) -> str:
    """The group a shared K/V slice gets (see the GQA rule in the module docstring)."""
    size = n_heads // n_kv
    labels = {grouping.groups.get(head_name(layer, h), "frozen") for h in range(group * size, (group + 1) * size)}
    active = labels - {"frozen"}
    if not active:
        return "frozen"
    if len(active) > 1:
        return "task_shared"
    return active.pop()


def group_masks(model, grouping: Grouping) -> dict[str, dict[str, Bool[torch.Tensor, "..."]]]:
    """Boolean masks per group over the projection weights (see module docstring).

    Returns:
        ``{group: {param_name: mask}}`` for every group in :data:`~recircuit.unlearn.grouping.GROUPS`;
        the groups partition every entry of every weight of
        :func:`~recircuit.models.families.projection_params`.
    """
    fam = family_of(model)
    H, K, L = model.cfg.n_heads, n_kv_heads(model), model.cfg.n_layers
    params = projection_params(model)
    masks = {g: {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()} for g in GROUPS}
    for layer in range(L):
        for h in range(H):
            g = grouping.groups.get(head_name(layer, h), "frozen")
            for short in ("q", "o"):
                masks[g][f"blocks.{layer}.{short}"][head_slice(model, short, h, layer)] = True
        for kv in range(K):
            g = kv_group_of(grouping, layer, kv, H, K)
            for short in ("k", "v"):
                masks[g][f"blocks.{layer}.{short}"][head_slice(model, short, kv, layer)] = True
        g = grouping.groups.get(mlp_name(layer), "frozen")
        for short in fam.mlp_projections:
            masks[g][f"blocks.{layer}.{short}"][:] = True
    return masks


def active_mask(masks: dict[str, dict[str, Bool[torch.Tensor, "..."]]],
                groups: tuple[str, ...] = ("forget_specific", "retain_specific", "task_shared")
                ) -> dict[str, Bool[torch.Tensor, "..."]]:
    """Union of ``groups``' masks per parameter (default: every group that may move)."""
    names = next(iter(masks.values())).keys()
    return {n: torch.stack([masks[g][n] for g in groups]).any(0) for n in names}


def attach_grad_masks(model, mask: dict[str, Bool[torch.Tensor, "..."]]) -> list[RemovableHandle]:
    """Gradient hooks on the bridge's projection weights that zero every entry outside ``mask``.

    ``mask`` maps :func:`~recircuit.models.families.projection_params` names to boolean tensors
    of the parameter's shape. The
    hooks run on every backward pass and ``torch.autograd.grad`` call, before any optimizer sees the
    gradient. Weights that do not require grad get no hook (they receive no gradient). Remove them with ``for h in handles: h.remove()``.
    """
    params = projection_params(model)
    unknown = set(mask) - set(params)
    if unknown:
        raise KeyError(f"No projection weights named {sorted(unknown)[:3]}; names look like {next(iter(params))!r}.")
    handles = []
    for name, m in mask.items():
        p = params[name]
        if m.shape != p.shape:
            raise ValueError(f"Mask for {name} has shape {tuple(m.shape)}, the weight {tuple(p.shape)}.")
        if not p.requires_grad:
            continue  # receives no gradient at all
        keep = m.to(device=p.device, dtype=torch.bool)
        handles.append(p.register_hook(lambda g, keep=keep: torch.where(keep, g, torch.zeros_like(g))))
    return handles


def node_masks(model, nodes) -> dict[str, Bool[torch.Tensor, "..."]]:
    """Boolean masks over the projection weights of ``nodes`` (``(kind, layer, index)``, as in
    :mod:`recircuit.circuits.neurons`): a neuron owns its row or column of the MLP's gate, up and
    down weights (:func:`~recircuit.models.families.neuron_slice`); a head its q and o blocks and
    the K/V slices of its KV group (shared with the group's other heads: a KV slice is in the
    mask when any of its heads is).

    Returns:
        ``{param_name: mask}`` for every weight of :func:`~recircuit.models.families.projection_params`.
    """
    fam = family_of(model)
    H, K = model.cfg.n_heads, n_kv_heads(model)
    params = projection_params(model)
    masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
    for kind, layer, i in nodes:
        if kind == "neuron":
            for short in fam.mlp_projections:
                masks[f"blocks.{layer}.{short}"][neuron_slice(model, short, i, layer)] = True
        elif kind == "head":
            for short in ("q", "o"):
                masks[f"blocks.{layer}.{short}"][head_slice(model, short, i, layer)] = True
            for short in ("k", "v"):
                masks[f"blocks.{layer}.{short}"][head_slice(model, short, i // (H // K), layer)] = True
        else:
            raise ValueError(f"node kind must be 'neuron' or 'head', got {kind!r}")
    return masks
