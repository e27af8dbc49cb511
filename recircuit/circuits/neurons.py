"""Node attribution: one score per MLP neuron and per attention head, in the denoising and noising directions.

Usage::

    from recircuit.circuits.neurons import NodeAttributionConfig, node_attribution, node_patch_effect
    res = node_attribution(model, clean, corrupted, NodeAttributionConfig(method="eap"))
    res.neurons["denoising"]        # [n_layers, d_mlp]: clean value patched into the corrupted run
    res.heads["noising"]            # [n_layers, n_heads]: corrupted value patched into the clean run
    node_patch_effect(model, clean, corrupted, ("neuron", 3, 17), "noising")   # the exact effect, one node
    res.save("runs/nodes"); NodeScores.load("runs/nodes")

**The nodes.** A neuron is one coordinate of an MLP's hidden activation, the input of its down
projection (``blocks.L.mlp.out.hook_in``, ``[batch, pos, d_mlp]``: after the activation function
and, for gated MLPs, the gate). A head is one slice of the attention's pre-output values
(``blocks.L.attn.hook_z``, ``[batch, pos, n_heads, d_head]``), so a head's score does not depend on
how the family stores its output projection or norms. Patching a node sets its activation at every
real (unpadded) position of a prompt.

**The two directions** (CLUE's noising and denoising circuits, read at the node level).
- *Denoising*: the effect of restoring one node in the corrupted run,
  ``m(corrupted run, node := clean value) - m(corrupted run)``. A large one says the node alone
  brings back much of the clean behaviour (sufficiency).
- *Noising*: the effect of breaking one node in the clean run,
  ``m(clean run, node := corrupted value) - m(clean run)``. A large negative one says the clean
  behaviour needs it (necessity).
``m`` is the attribution metric (:mod:`recircuit.circuits.metrics`, label-signed, clean labels).

**The estimators.** ``eap`` is the first-order term at the run being patched:
``sum_pos (a_other - a_run) . dm/da`` with the gradient taken in that run, so it is exactly the
derivative of :func:`node_patch_effect` along ``a -> a + eps (a_other - a)`` (tested against
finite differences). Because the gradient is taken at different runs, the two directions differ
wherever the model is not linear in the node; that difference is what tells necessary nodes
from sufficient ones. ``eap-ig`` integrates the gradient over ``steps`` midpoints of the path on
which every scored node moves from the run's value to the other run's at once
(``a_run + alpha (a_other - a_run)``; the value is set, the gradient still flows through the
node's own computation), the embeddings staying those of the run being patched. The two
directions share no path (the embeddings and where each path starts differ), so EAP-IG keeps the
asymmetry. It is an estimate: with the node values set and the embeddings held, the scores need
not sum to the total effect (no completeness), and the tests check it against exact patching.

Memory: the activation differences of one batch, ``batch * pos * n_layers * (d_mlp + n_heads *
d_head)`` floats (SmolLM2-135M, 8 prompts of 300 tokens: about 0.5 GB), and one gradient pass at
a time; ``batch_size`` bounds both.

**Why hand-written.** TransformerLens's attribution patching scores one hook at a time per
example; recircuit needs both directions, IG, every neuron of every layer in one backward, and
the same pair batching and padding rules as the edge engine (:mod:`recircuit.circuits.engine`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from recircuit._io import atomic_write, atomic_write_json, read_checked_sidecar, sha256_file
from recircuit.circuits.engine import (
    Frozen,
    PairBatch,
    check_writer_sum,
    make_pair_batch,
    run_logits,
)
from recircuit.circuits.metrics import get_metric
from recircuit.data.prompts import Sample
from recircuit.errors import InputError
from recircuit.models.scoring import TokenizedBatch, answer_tokens

#: Node attribution estimators.
METHODS = ("eap", "eap-ig")
#: Patching directions: restore a clean node in the corrupted run, or break it in the clean run.
DIRECTIONS = ("denoising", "noising")
#: Node kinds: an MLP neuron, an attention head.
KINDS = ("neuron", "head")
#: File format tag of saved node scores.
FORMAT = "recircuit.node_scores/1"


def neuron_hook(layer: int) -> str:
    """The hook whose output holds layer ``layer``'s MLP neurons (the down projection's input)."""
    return f"blocks.{layer}.mlp.out.hook_in"


def head_hook(layer: int) -> str:
    """The hook whose output holds layer ``layer``'s per-head values before the output projection."""
    return f"blocks.{layer}.attn.hook_z"


@dataclass
class NodeAttributionConfig:
    """How node scores are computed.

    Attributes:
        method: ``eap`` (gradient at the patched run) or ``eap-ig`` (integrated over ``steps``).
        directions: which of ``denoising`` and ``noising`` to score.
        steps: EAP-IG's midpoints.
        metric: the metric differentiated (``logit_diff``, ``logprob``, ``yes_logit_diff``).
        batch_size: prompt pairs per pass (bounds memory).
        align: ``strict`` (pairs of equal token length) or ``left`` (see :func:`make_pair_batch`).
        progress: show a bar over batches.
    """

    method: str = "eap"
    directions: tuple[str, ...] = DIRECTIONS
    steps: int = 5
    metric: str = "logit_diff"
    batch_size: int = 4
    align: str = "strict"
    progress: bool = True

    def __post_init__(self) -> None:
        self.directions = tuple(self.directions)
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}", field="method", fix=f"use one of {', '.join(METHODS)}")
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad or not self.directions:
            raise InputError(f"directions must be a non-empty subset of {DIRECTIONS}, got {self.directions!r}",
                             field="directions", fix="e.g. ('denoising', 'noising')")
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"must be a whole number >= 1, got {v!r}", field=name)

    def to_dict(self) -> dict:
        """JSON-able form (``progress`` left out: it changes no score)."""
        d = asdict(self)
        d.pop("progress")
        d["directions"] = list(self.directions)
        return d


@dataclass
class NodeScores:
    """Per-node scores of one attribution, in metric units per sample (mean over the samples).

    Attributes:
        neurons: direction -> ``[n_layers, d_mlp]``.
        heads: direction -> ``[n_layers, n_heads]``.
        clean_metric: mean metric of the clean run.
        corrupted_metric: mean metric of the corrupted run.
        n_samples: prompt pairs attributed.
        config: :meth:`NodeAttributionConfig.to_dict` of the run.
        metadata: anything the caller adds (model, data, corruption).
    """

    neurons: dict[str, Float[torch.Tensor, "n_layers d_mlp"]]
    heads: dict[str, Float[torch.Tensor, "n_layers n_heads"]]
    clean_metric: float
    corrupted_metric: float
    n_samples: int
    config: dict
    metadata: dict = field(default_factory=dict)

    def score(self, node: tuple[str, int, int], direction: str) -> float:
        """The score of ``node = (kind, layer, index)`` in ``direction``."""
        kind, layer, i = node
        table = self.neurons if kind == "neuron" else self.heads
        return float(table[direction][layer, i])

    def save(self, directory: str | Path) -> Path:
        """Write ``nodes.safetensors`` and ``nodes.json`` (with the tensors' sha256) atomically."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {f"{kind}.{direction}": t.contiguous().cpu() for kind, table in (("neuron", self.neurons),
                   ("head", self.heads)) for direction, t in table.items()}
        path = atomic_write(d / "nodes.safetensors", lambda p: save_file(tensors, str(p)))
        meta = {"format": FORMAT, "clean_metric": self.clean_metric, "corrupted_metric": self.corrupted_metric,
                "n_samples": self.n_samples, "config": self.config, "metadata": self.metadata,
                "sha256": sha256_file(path)}
        return atomic_write_json(d / "nodes.json", meta)

    @classmethod
    def load(cls, directory: str | Path) -> NodeScores:
        """Read what :meth:`save` wrote, verifying the tensors' sha256.

        Raises:
            InputError: a missing file, another format, or tensors whose hash does not match.
        """
        from safetensors.torch import load_file

        d = Path(directory)
        path = d / "nodes.safetensors"
        meta = read_checked_sidecar(d / "nodes.json", path, FORMAT, "score tensors",
                                    "compute the scores again and save them with NodeScores.save")
        flat = load_file(str(path))
        neurons = {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("neuron.")}
        heads = {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("head.")}
        return cls(neurons, heads, meta["clean_metric"], meta["corrupted_metric"], meta["n_samples"],
                   meta["config"], meta.get("metadata", {}))


def _names(model) -> list[str]:
    return [h(layer) for layer in range(model.cfg.n_layers) for h in (neuron_hook, head_hook)]


def _mask_like(t: torch.Tensor, mask: Float[torch.Tensor, "batch pos"]) -> torch.Tensor:
    return mask.view(*mask.shape, *([1] * (t.dim() - 2))).to(t.dtype)


@torch.no_grad()
def _record(model, batch: TokenizedBatch, names: Sequence[str], mask,
            logits_out: list | None = None) -> dict[str, torch.Tensor]:
    """The masked activations of ``names`` on ``batch`` (and, into ``logits_out``, the run's logits)."""
    acts: dict[str, torch.Tensor] = {}

    def make(name: str):             # bound by name: hook.name is the canonical alias (hook_z is attn.o.hook_in)
        def hook(t, *, hook):
            acts[name] = t.detach().float() * _mask_like(t, mask).float()
            return t

        return hook

    with model.hooks(fwd_hooks=[(n, make(n)) for n in names]):
        logits = run_logits(model, batch)
    if logits_out is not None:
        logits_out.append(logits)
    return acts


def _gradient_pass(model, batch: TokenizedBatch, labels, answers, metric, diffs: dict[str, torch.Tensor],
                   sums: dict[str, torch.Tensor], weight: float, values: dict[str, torch.Tensor] | None = None,
                   mask: Float[torch.Tensor, "batch pos"] | None = None) -> Float[torch.Tensor, "batch"]:
    """One forward + backward; ``sums[name] += weight * sum_{batch, pos[, d_head]} diffs[name] * grad``.

    ``values`` (IG) sets each node hook's value at the positions where ``mask`` is 1 (both
    prompts real) while letting the gradient flow through the node's own computation; elsewhere
    (padding, or the longer prompt's own prefix under ``align="left"``) the run keeps its value.
    """
    def input_hook(t, *, hook):
        return t.detach().clone().requires_grad_(True)

    def node_hook(t, *, hook, name: str):
        if values is None:
            x = t
        else:
            real = _mask_like(t, mask) > 0
            x = t + (torch.where(real, values[name].to(t.dtype), t) - t).detach()
        x = x.clone()
        d = diffs[name]

        def on_grad(g):
            prod = d * g.float()
            sums[name] += weight * (prod.sum((0, 1)) if prod.dim() == 3 else prod.sum((0, 1, 3)))
            return None

        x.register_hook(on_grad)
        return x

    hooks: list[tuple[str, Callable]] = [("blocks.0.hook_resid_pre", input_hook)]
    hooks += [(n, functools.partial(node_hook, name=n)) for n in diffs]
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        m = metric(run_logits(model, batch), labels, answers)
        m.sum().backward()
    return m.detach()


def node_attribution(model, clean: Sequence[Sample], corrupted: Sequence[Sample],
                     config: NodeAttributionConfig | None = None, metadata: dict | None = None) -> NodeScores:
    """Score every MLP neuron and attention head of ``model`` on the prompt pairs ``(clean, corrupted)``.

    See the module docstring for the directions and estimators. Checks the writer-sum invariant
    first (:func:`~recircuit.circuits.engine.check_writer_sum`), as every circuit method does.

    Raises:
        InputError: no samples, or clean and corrupted lists of different lengths.
    """
    config = config or NodeAttributionConfig()
    if not clean or len(clean) != len(corrupted):
        raise InputError(f"{len(clean)} clean and {len(corrupted)} corrupted samples", field="corrupted",
                         fix="pass one corrupted sample per clean one (at least one)")
    check_writer_sum(model)
    metric, answers = get_metric(config.metric), answer_tokens(model.tokenizer)
    device = next(model.parameters()).device
    names = _names(model)
    sums = {d: {n: None for n in names} for d in config.directions}
    m_clean = m_corr = 0.0
    fractions = [(k + 0.5) / config.steps for k in range(config.steps)] if config.method == "eap-ig" else [None]
    was_training = model.training
    model.eval()
    batches = range(0, len(clean), config.batch_size)
    try:
        with Frozen(model):
            for i in tqdm(batches, desc=f"node attribution ({config.method})", unit="batch",
                          disable=not config.progress, leave=False):
                pair: PairBatch = make_pair_batch(model.tokenizer, clean[i: i + config.batch_size],
                                                  corrupted[i: i + config.batch_size], device, config.align)
                logits: list[torch.Tensor] = []
                a_clean = _record(model, pair.clean, names, pair.mask, logits)
                a_corr = _record(model, pair.corrupted, names, pair.mask, logits)
                with torch.no_grad():             # the recording runs' own logits: no extra forward
                    m_clean += float(metric(logits[0], pair.labels, answers).sum())
                    m_corr += float(metric(logits[1], pair.labels, answers).sum())
                for direction in config.directions:
                    run, start, end = ((pair.corrupted, a_corr, a_clean) if direction == "denoising"
                                       else (pair.clean, a_clean, a_corr))
                    diffs = {n: end[n] - start[n] for n in names}
                    acc = sums[direction]
                    for n in names:
                        if acc[n] is None:
                            acc[n] = torch.zeros(diffs[n].shape[2], device=device)
                    for alpha in fractions:
                        values = None if alpha is None else {n: start[n] + alpha * diffs[n] for n in names}
                        _gradient_pass(model, run, pair.labels, answers, metric, diffs, acc,
                                       1.0 / len(fractions), values, pair.mask)
    finally:
        model.train(was_training)
    n = len(clean)
    L = model.cfg.n_layers
    neurons = {d: torch.stack([sums[d][neuron_hook(layer)] for layer in range(L)]).cpu() / n for d in config.directions}
    heads = {d: torch.stack([sums[d][head_hook(layer)] for layer in range(L)]).cpu() / n for d in config.directions}
    return NodeScores(neurons, heads, m_clean / n, m_corr / n, n, config.to_dict(), dict(metadata or {}))


@torch.no_grad()
def node_patch_effect(model, clean: Sequence[Sample], corrupted: Sequence[Sample], node: tuple[str, int, int],
                      direction: str = "denoising", metric: str = "logit_diff", align: str = "strict",
                      scale: float = 1.0) -> float:
    """The exact effect of patching one node, mean over the pairs (what :func:`node_attribution` estimates).

    ``node = (kind, layer, index)`` with ``kind`` in :data:`KINDS`. Denoising runs the corrupted
    prompts with the node set to ``a_corr + scale * (a_clean - a_corr)``; noising the clean ones
    with ``a_clean + scale * (a_corr - a_clean)``; the result is the metric's change. ``scale``
    below 1 gives the finite differences the EAP estimate is the derivative of.

    Raises:
        InputError: an unknown kind or direction, or a layer or index out of range.
    """
    kind, layer, index = node
    if kind not in KINDS or direction not in DIRECTIONS:
        raise InputError(f"node kind {kind!r} / direction {direction!r}", field="node",
                         fix=f"kind in {KINDS}, direction in {DIRECTIONS}")
    width = model.cfg.d_mlp if kind == "neuron" else model.cfg.n_heads
    if not (0 <= layer < model.cfg.n_layers and 0 <= index < width):
        raise InputError(f"node {node!r} is outside the model ({model.cfg.n_layers} layers, {width} {kind}s)",
                         field="node")
    name = neuron_hook(layer) if kind == "neuron" else head_hook(layer)
    fn, answers = get_metric(metric), answer_tokens(model.tokenizer)
    device = next(model.parameters()).device
    pair = make_pair_batch(model.tokenizer, list(clean), list(corrupted), device, align)
    a_clean = _record(model, pair.clean, [name], pair.mask)[name]
    a_corr = _record(model, pair.corrupted, [name], pair.mask)[name]
    run, start, end = (pair.corrupted, a_corr, a_clean) if direction == "denoising" else (pair.clean, a_clean, a_corr)
    # a neuron is a coordinate of the last axis [b, p, d_mlp]; a head a slice of axis 2 [b, p, n_heads, d_head]
    sel = (Ellipsis, index) if kind == "neuron" else (slice(None), slice(None), index)
    target = start[sel] + scale * (end[sel] - start[sel])                  # [b, p] or [b, p, d_head]
    real = pair.mask > 0

    def patch(t, *, hook):
        t = t.clone()
        cur = t[sel]
        t[sel] = torch.where(real.view(*real.shape, *([1] * (cur.dim() - 2))), target.to(t.dtype), cur)
        return t

    was_training = model.training
    model.eval()
    try:
        base = fn(run_logits(model, run), pair.labels, answers)
        with model.hooks(fwd_hooks=[(name, patch)]):
            patched = fn(run_logits(model, run), pair.labels, answers)
    finally:
        model.train(was_training)
    return float((patched - base).mean())


def top_nodes(scores: NodeScores, direction: str, k: int | None = None,
              kinds: Sequence[str] = KINDS) -> list[tuple[tuple[str, int, int], float]]:
    """Nodes by decreasing ``|score|`` in ``direction``: ``[((kind, layer, index), score), ...]`` (``k``: the first k)."""
    out = []
    for kind in kinds:
        table = (scores.neurons if kind == "neuron" else scores.heads)[direction].numpy()
        for (layer, i), v in np.ndenumerate(table):
            out.append(((kind, int(layer), int(i)), float(v)))
    out.sort(key=lambda x: -abs(x[1]))
    return out[:k] if k is not None else out
