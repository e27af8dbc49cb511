"""Parameter masks: which slices of which weights belong to each module group.

Usage::

    from recircuit.unlearn.masks import group_masks
    masks = group_masks(model, grouping)      # {group: {param_name: bool mask, same shape as the param}}
    handles = attach_grad_masks(model, active_mask(masks))   # gradients outside the groups -> 0
    ...
    for h in handles: h.remove()

A head ``a{L}.h{H}`` owns rows ``H*d_head:(H+1)*d_head`` of ``W_Q`` (q_proj), the columns of
``W_O`` (o_proj) with the same range, and the rows of ``W_K``/``W_V`` of its KV group. An MLP
``m{L}`` owns its gate, up and down weights. Norms, embeddings and the unembedding are never
updated (frozen).

**Grouped-query attention.** A KV slice is shared by ``n_heads / n_kv_heads`` query heads, which
can fall into different groups. Rule: if the query heads of one KV group fall into more than one
group among forget-specific / retain-specific / task-shared, the shared K/V slice is task-shared
(it serves both objectives, so it gets the conflict-aware update); if they agree, the slice
follows them; if all are frozen, it is frozen.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool
from torch.utils.hooks import RemovableHandle

from recircuit.unlearn.grouping import GROUPS, Grouping


def _proj(model, layer: int, comp: str, name: str) -> torch.nn.Linear:
    bridge = getattr(getattr(model.blocks[layer], comp), name)
    return getattr(bridge, "original_component", None) or bridge


def module_params(model) -> dict[str, torch.nn.Parameter]:
    """Short names ``blocks.L.{q,k,v,o,gate,up,down}`` for the weights masks refer to."""
    out = {}
    for layer in range(model.cfg.n_layers):
        for short, (comp, name) in {"q": ("attn", "q"), "k": ("attn", "k"), "v": ("attn", "v"), "o": ("attn", "o"),
                                    "gate": ("mlp", "gate"), "up": ("mlp", "in"), "down": ("mlp", "out")}.items():
            out[f"blocks.{layer}.{short}"] = _proj(model, layer, comp, name).weight
    return out


def kv_group_of(grouping: Grouping, layer: int, group: int, n_heads: int, n_kv: int) -> str:
    """The group a shared K/V slice gets (see the GQA rule in the module docstring)."""
    size = n_heads // n_kv
    labels = {grouping.groups.get(f"a{layer}.h{h}", "frozen") for h in range(group * size, (group + 1) * size)}
    active = labels - {"frozen"}
    if not active:
        return "frozen"
    if len(active) > 1:
        return "task_shared"
    return active.pop()


def group_masks(model, grouping: Grouping) -> dict[str, dict[str, Bool[torch.Tensor, "..."]]]:
    """Boolean masks per group over the projection weights (see module docstring)."""
    cfg = model.cfg
    H, K, L = cfg.n_heads, getattr(cfg, "n_key_value_heads", None) or cfg.n_heads, cfg.n_layers
    params = module_params(model)
    dh = params["blocks.0.q"].shape[0] // H
    masks = {g: {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()} for g in GROUPS}
    for layer in range(L):
        for h in range(H):
            g = grouping.groups.get(f"a{layer}.h{h}", "frozen")
            masks[g][f"blocks.{layer}.q"][h * dh : (h + 1) * dh, :] = True
            masks[g][f"blocks.{layer}.o"][:, h * dh : (h + 1) * dh] = True
        for kv in range(K):
            g = kv_group_of(grouping, layer, kv, H, K)
            masks[g][f"blocks.{layer}.k"][kv * dh : (kv + 1) * dh, :] = True
            masks[g][f"blocks.{layer}.v"][kv * dh : (kv + 1) * dh, :] = True
        g = grouping.groups.get(f"m{layer}", "frozen")
        for short in ("gate", "up", "down"):
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

    ``mask`` maps :func:`module_params` names to boolean tensors of the parameter's shape. The
    hooks run on every backward pass and ``torch.autograd.grad`` call, before any optimizer sees the
    gradient. Weights that do not require grad get no hook (they receive no gradient). Remove them with ``for h in handles: h.remove()``.
    """
    params = module_params(model)
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
