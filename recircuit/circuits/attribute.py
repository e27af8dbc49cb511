"""Edge attribution patching (EAP, EAP-IG) and exact activation patching on a bridge.

Usage::

    from recircuit.circuits import attribute, AttributionConfig
    res = attribute(model, clean_samples, corrupted_samples,
                    AttributionConfig(method="eap-ig-inputs", steps=5, metric="logit_diff"))
    res.scores            # [n_forward, n_backward] mean edge scores (0 where no edge)
    res.node_scores()     # {"a3.h5": ..., "m7": ...}

**Sign convention.** A score estimates ``metric(clean) - metric(clean with that edge patched to
its corrupted value)``: positive edges carry the clean behaviour. For EAP that is
``(a_clean - a_corrupt) . d metric / d reader_input`` at the clean run (the ``gradient_point``
option moves the gradient to the corrupted run, TL 4.3's denoising form, which gives
``metric(corrupt with the edge patched to clean) - metric(corrupt)``).

**Design.** As in EAP-IG (hannamw/EAP-IG), one activation-difference tensor
``[batch, pos, n_forward, d_model]`` is filled by forward hooks on the writers (two no-grad
passes), and every reader hook registers a gradient hook that contracts its gradient with the
prefix of upstream writers into the dense ``(n_forward, n_backward)`` score matrix. Positions where
either prompt is padding are zeroed in the difference, so left-padded batches give the same
scores as one prompt at a time.

**Methods.**

- ``eap``: two forward passes and one backward per batch.
- ``eap-ig-inputs``: gradients averaged over ``steps`` points on the straight line from the
  corrupted to the clean input embeddings (alpha = k/steps, k = 1..steps).
- ``eap-ig-activations``: at each step every writer's output is set (value only, gradient kept) to
  ``corrupt + alpha (clean - corrupt)``, and reader gradients are averaged.
- ``exact``: real activation patching, one patched forward pass per edge (or per node): the
  reader's input becomes ``input - (a_live - a_corrupt)`` for that writer. For verification on
  small graphs.

The same patched forward (:func:`patched_metric`) gives faithfulness: every edge outside a
circuit carries its corrupted value, in one pass.

**Memory** is estimated before each batch (the difference tensor, plus the clean activations for
``eap-ig-activations`` or a live buffer for patching). A batch that would exceed the budget is split;
if one prompt alone exceeds it, :class:`AttributionMemoryError` says by how much and what to change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from recircuit.circuits.graph import Graph
from recircuit.circuits.metrics import Metric, get_metric
from recircuit.data.prompts import Sample
from recircuit.models.scoring import AnswerTokens, TokenizedBatch, answer_tokens, tokenize_prompts

logger = logging.getLogger(__name__)

METHODS = ("eap", "eap-ig-inputs", "eap-ig-activations", "exact")


class AttributionMemoryError(MemoryError):
    """Attribution would not fit in the memory budget even one prompt at a time."""


class CorruptionLengthError(ValueError):
    """A clean prompt and its corrupted counterpart differ in token length."""


@dataclass
class AttributionConfig:
    """How to score edges.

    Attributes:
        method: one of ``eap``, ``eap-ig-inputs``, ``eap-ig-activations``, ``exact``.
        steps: integration steps for the EAP-IG methods.
        metric: ``logit_diff`` (label-signed Yes-No logit difference), ``logprob`` or a callable.
        batch_size: prompt pairs per batch (split further if memory requires).
        align: ``"strict"`` (pairs must have equal token length, else error) or ``"left"``
            (left-pad both to a common length; positions where either side is padding get no
            activation difference). Use ``"left"`` only with corruptions whose changed tokens do
            not shift the rest of the prompt much.
        gradient_point: ``"clean"`` (default) or ``"corrupted"`` (TL's denoising form), for ``eap``.
        exact_level: ``"edge"`` or ``"node"`` for ``method="exact"``.
        max_bytes: memory budget for the attribution buffers; default 40% of RAM (CPU) or of
            free GPU memory.
        progress: show tqdm bars.
    """

    method: str = "eap-ig-inputs"
    steps: int = 5
    metric: str | Metric = "logit_diff"
    batch_size: int = 8
    align: str = "strict"
    gradient_point: str = "clean"
    exact_level: str = "edge"
    max_bytes: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"Unknown method {self.method!r}; choose one of {METHODS}.")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.align not in ("strict", "left"):
            raise ValueError(f"align must be 'strict' or 'left', got {self.align!r}")
        if self.gradient_point not in ("clean", "corrupted"):
            raise ValueError(f"gradient_point must be 'clean' or 'corrupted', got {self.gradient_point!r}")

    def to_dict(self) -> dict:
        """JSON-able form (a callable metric is stored by name)."""
        d = asdict(self)
        if callable(self.metric):
            d["metric"] = getattr(self.metric, "__name__", "custom")
        return d


@dataclass
class PairBatch:
    """Clean and corrupted prompts tokenized to a common length."""

    clean: TokenizedBatch
    corrupted: TokenizedBatch
    labels: Int[torch.Tensor, "batch"]

    @property
    def mask(self) -> Float[torch.Tensor, "batch pos"]:
        """1 where both prompts have a real token."""
        return (self.clean.attention_mask * self.corrupted.attention_mask).float()

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class AttributionResult:
    """Mean edge scores over the samples, with what made them."""

    scores: Float[torch.Tensor, "n_forward n_backward"]
    graph: Graph
    config: AttributionConfig
    n_samples: int
    clean_metric: float
    corrupted_metric: float
    extra: dict = field(default_factory=dict)

    def node_scores(self) -> dict[str, float]:
        """Per writer node: the sum of its outgoing edge scores (= node-level EAP, by linearity)."""
        s = (self.scores * self.graph.edge_mask).sum(1)
        return {n: float(v) for n, v in zip(self.graph.forward_names, s.tolist())}


def default_budget(device: torch.device) -> int:
    """40% of RAM (CPU) or of free CUDA memory, in bytes."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.4)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.4)
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 4 << 30


def buffer_bytes(graph: Graph, batch: int, pos: int, d_model: int, n_buffers: int, itemsize: int = 4) -> int:
    """Bytes of ``n_buffers`` tensors ``[batch, pos, n_forward, d_model]``."""
    return batch * pos * graph.n_forward * d_model * itemsize * n_buffers


def _n_buffers(config: AttributionConfig) -> int:
    return 2 if config.method in ("eap-ig-activations", "exact") else 1


def make_pair_batch(tokenizer, clean: Sequence[Sample], corrupted: Sequence[Sample], device, align: str = "strict") -> PairBatch:
    """Tokenize clean and corrupted prompts together (left padding, common length).

    Raises:
        CorruptionLengthError: with ``align="strict"``, when a pair differs in token length.
    """
    if len(clean) != len(corrupted):
        raise ValueError(f"{len(clean)} clean samples but {len(corrupted)} corrupted ones; pass one corruption per sample.")
    both = tokenize_prompts(tokenizer, [s.prompt for s in clean] + [s.prompt for s in corrupted], device)
    n = len(clean)
    c = TokenizedBatch(both.input_ids[:n], both.attention_mask[:n])
    k = TokenizedBatch(both.input_ids[n:], both.attention_mask[n:])
    if align == "strict":
        bad = (c.attention_mask.sum(1) != k.attention_mask.sum(1)).nonzero().flatten().tolist()
        if bad:
            i = bad[0]
            raise CorruptionLengthError(
                f"{len(bad)} of {n} clean/corrupted pairs differ in token length (first: sample "
                f"{clean[i].uid or i}, {int(c.attention_mask[i].sum())} vs {int(k.attention_mask[i].sum())} "
                "tokens). Use a length-matched corruption (e.g. label_flip, or target_swap with "
                "match_length=True) or AttributionConfig(align='left')."
            )
    labels = torch.tensor([s.label for s in clean], device=device)
    return PairBatch(c, k, labels)


class _Frozen:
    """Context: parameters stop requiring grad (attribution needs activation grads only)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.saved: list[tuple[torch.nn.Parameter, bool]] = []

    def __enter__(self) -> None:
        self.saved = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self.saved:
            p.requires_grad_(False)

    def __exit__(self, *exc) -> None:
        for p, r in self.saved:
            p.requires_grad_(r)


def _logits(model, batch: TokenizedBatch) -> Float[torch.Tensor, "batch pos vocab"]:
    return model(batch.input_ids, attention_mask=batch.attention_mask, return_type="logits")


@torch.no_grad()
def collect_writer_outputs(
    model, graph: Graph, batch: TokenizedBatch, mask: Float[torch.Tensor, "batch pos"]
) -> tuple[Float[torch.Tensor, "batch pos n_forward d_model"], Float[torch.Tensor, "batch pos vocab"]]:
    """Run ``batch`` and return every writer's output ``[b, p, n_forward, d]`` (masked) and the logits."""
    b, p = batch.input_ids.shape
    out = torch.zeros(b, p, graph.n_forward, model.cfg.d_model, device=batch.input_ids.device)

    def make(idx: tuple[int, ...]):
        def hook(t, *, hook):
            vals = t if t.dim() == 4 else t.unsqueeze(2)
            out[:, :, idx[0] : idx[-1] + 1] = vals.float() * mask[:, :, None, None]
            return t

        return hook

    hooks = [(name, make(idx)) for name, idx in graph.forward_hooks()]
    with model.hooks(fwd_hooks=hooks):
        logits = _logits(model, batch)
    return out, logits


def _score_hooks(
    graph: Graph,
    diff: Float[torch.Tensor, "batch pos n_forward d_model"],
    scores: Float[torch.Tensor, "n_forward n_backward"],
    weight: float,
) -> list[tuple[str, Callable]]:
    """Reader hooks whose gradient hooks add ``weight * diff . grad`` into ``scores``."""

    def make(slot):
        idx = list(slot.indices)

        def hook(t, *, hook):
            if not t.requires_grad:
                return t
            # A fresh tensor: the hook's input may also be the residual stream itself
            # (hook_mlp_in / ln2.hook_in is), whose skip path must not count as this reader.
            t = t.clone()

            def on_grad(g):
                g4 = g if slot.per_slot else g.unsqueeze(2)
                contrib = torch.einsum("bpfd,bpnd->fn", diff[:, :, : slot.n_upstream], g4.float())
                scores[: slot.n_upstream, idx] += weight * contrib
                return None

            t.register_hook(on_grad)
            return t

        return hook

    return [(slot.hook, make(slot)) for slot in graph.reader_slots()]


def _gradient_pass(
    model, graph: Graph, batch: TokenizedBatch, labels, answers: AnswerTokens, metric: Metric,
    diff, scores, weight: float, writer_override: Callable[[int], torch.Tensor | None] | None = None,
    input_override: torch.Tensor | None = None, real_mask: torch.Tensor | None = None,
) -> Float[torch.Tensor, "batch"]:
    """One forward + backward; reader gradient hooks accumulate scores. Returns the metric.

    ``input_override`` replaces the embeddings at real (``real_mask``) positions.
    """
    hooks: list[tuple[str, Callable]] = []

    def input_hook(t, *, hook):
        x = t if input_override is None else torch.where(real_mask[:, :, None] > 0, input_override.to(t.dtype), t)
        return x.detach().clone().requires_grad_(True)

    hooks.append(("blocks.0.hook_resid_pre", input_hook))
    if writer_override is not None:
        for name, idx in graph.forward_hooks()[1:]:
            def wh(t, *, hook, idx=idx):
                target = writer_override(idx)  # [b, p, n, d]
                tgt = target if t.dim() == 4 else target[:, :, 0]
                return t + (tgt.to(t.dtype) - t).detach()

            hooks.append((name, wh))
    hooks += _score_hooks(graph, diff, scores, weight)
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        m = metric(_logits(model, batch), labels, answers)
        m.sum().backward()
    return m.detach()


@torch.no_grad()
def patched_metric(
    model, graph: Graph, pair: PairBatch, corrupted_acts: Float[torch.Tensor, "batch pos n_forward d_model"],
    keep: Bool[torch.Tensor, "n_forward n_backward"], metric: Metric, answers: AnswerTokens,
) -> Float[torch.Tensor, "batch"]:
    """Clean run in which every edge with ``keep == False`` carries its corrupted value.

    Each reader's input becomes ``input - sum_f (a_live_f - a_corrupt_f)`` over the patched
    writers ``f``, where ``a_live`` are the writers' outputs in this same (patched) run.
    """
    batch, mask = pair.clean, pair.mask
    b, p = batch.input_ids.shape
    live = torch.zeros_like(corrupted_acts)
    drop = (~keep).float().to(live.device)
    hooks: list[tuple[str, Callable]] = []
    for name, idx in graph.forward_hooks():
        def wh(t, *, hook, idx=idx):
            vals = t if t.dim() == 4 else t.unsqueeze(2)
            live[:, :, idx[0] : idx[-1] + 1] = vals.float() * mask[:, :, None, None]
            return t

        hooks.append((name, wh))
    for slot in graph.reader_slots():
        cols = list(slot.indices)
        if not bool(drop[: slot.n_upstream, cols].any()):
            continue

        def rh(t, *, hook, slot=slot, cols=cols):
            delta = torch.einsum(
                "bpfd,fn->bpnd", live[:, :, : slot.n_upstream] - corrupted_acts[:, :, : slot.n_upstream], drop[: slot.n_upstream, cols]
            )
            if not slot.per_slot:
                delta = delta[:, :, 0]
            return t - delta.to(t.dtype)

        hooks.append((slot.hook, rh))
    # writer hooks must run before reader hooks at the same point; TL runs them in list order
    with model.hooks(fwd_hooks=hooks):
        return metric(_logits(model, batch), pair.labels, answers)


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def attribute(
    model,
    clean: Sequence[Sample],
    corrupted: Sequence[Sample],
    config: AttributionConfig | None = None,
    graph: Graph | None = None,
) -> AttributionResult:
    """Score every edge of ``graph`` (default: the model's full graph) on clean/corrupted pairs.

    Args:
        model: a bridge with per-head hooks on.
        clean: samples whose behaviour is explained.
        corrupted: one counterfactual per clean sample (see :mod:`recircuit.circuits.corruptions`).
        config: method, metric, batching, alignment, memory budget.
        graph: the graph to score.

    Returns:
        :class:`AttributionResult` with mean scores over samples.

    Raises:
        CorruptionLengthError: strict alignment and a pair differs in length.
        AttributionMemoryError: one prompt alone exceeds the memory budget.
    """
    config = config or AttributionConfig()
    graph = graph or Graph.from_model(model)
    if len(clean) == 0:
        raise ValueError("No samples to attribute; pass at least one clean/corrupted pair.")
    metric = get_metric(config.metric)
    answers = answer_tokens(model.tokenizer)
    device = next(model.parameters()).device
    budget = config.max_bytes or default_budget(device)
    d_model = model.cfg.d_model
    scores = torch.zeros(graph.n_forward, graph.n_backward, device=device)
    edge_mask = graph.edge_mask.to(device)
    m_clean_sum = m_corr_sum = 0.0
    was_training = model.training
    model.eval()

    units = _chunks(len(clean), config.batch_size)
    bar = tqdm(total=len(clean), desc=f"attribution ({config.method})", unit="pair", disable=not config.progress)
    try:
        with _Frozen(model):
            queue = list(units)
            while queue:
                lo, hi = queue.pop(0)
                pair = make_pair_batch(model.tokenizer, clean[lo:hi], corrupted[lo:hi], device, config.align)
                need = buffer_bytes(graph, hi - lo, pair.clean.input_ids.shape[1], d_model, _n_buffers(config))
                if need > budget:
                    if hi - lo == 1:
                        raise AttributionMemoryError(
                            f"One prompt of {pair.clean.input_ids.shape[1]} tokens needs {need / 2**30:.2f} GiB of "
                            f"attribution buffers ({graph.n_forward} writers x d_model {d_model}), over the budget of "
                            f"{budget / 2**30:.2f} GiB. Shorten the prompts, raise AttributionConfig.max_bytes, "
                            "or use a machine with more memory."
                        )
                    mid = lo + (hi - lo) // 2
                    logger.info("splitting batch %d-%d: %.2f GiB > budget %.2f GiB", lo, hi, need / 2**30, budget / 2**30)
                    queue[:0] = [(lo, mid), (mid, hi)]
                    continue
                mc, mk = _attribute_batch(model, graph, pair, config, metric, answers, scores, edge_mask)
                m_clean_sum += float(mc.sum())
                m_corr_sum += float(mk.sum())
                bar.update(hi - lo)
    finally:
        bar.close()
        model.train(was_training)
    n = len(clean)
    scores = (scores / n) * edge_mask
    return AttributionResult(scores.cpu(), graph, config, n, m_clean_sum / n, m_corr_sum / n)


def _attribute_batch(model, graph, pair, config, metric, answers, scores, edge_mask):
    """Add one batch's summed edge scores into ``scores``; return clean and corrupted metrics."""
    mask = pair.mask
    corr_acts, corr_logits = collect_writer_outputs(model, graph, pair.corrupted, mask)
    clean_acts, clean_logits = collect_writer_outputs(model, graph, pair.clean, mask)
    m_clean = metric(clean_logits, pair.labels, answers)
    m_corr = metric(corr_logits, pair.labels, answers)
    method = config.method
    if method == "exact":
        del clean_acts
        batch_scores = torch.zeros_like(scores)
        if config.exact_level == "node":
            rows = range(graph.n_forward)
            for f in rows:
                keep = torch.ones_like(edge_mask)
                keep[f] = False
                batch_scores[f] = 0
                m = patched_metric(model, graph, pair, corr_acts, keep, metric, answers)
                # node effect placed on the node's logits edge; node_scores() sums rows
                batch_scores[f, graph.backward_index["logits"]] = (m_clean - m).sum()
        else:
            edges = edge_mask.nonzero().tolist()
            for f, b in tqdm(edges, desc="exact patching", leave=False, disable=not config.progress):
                keep = torch.ones_like(edge_mask)
                keep[f, b] = False
                m = patched_metric(model, graph, pair, corr_acts, keep, metric, answers)
                batch_scores[f, b] = (m_clean - m).sum()
        scores += batch_scores
        return m_clean, m_corr
    diff = clean_acts - corr_acts  # [b, p, F, d], zero at padding
    if method == "eap":
        if config.gradient_point == "clean":
            _gradient_pass(model, graph, pair.clean, pair.labels, answers, metric, diff, scores, 1.0)
        else:
            _gradient_pass(model, graph, pair.corrupted, pair.labels, answers, metric, diff, scores, 1.0)
    elif method == "eap-ig-inputs":
        x_clean, x_corr = clean_acts[:, :, 0], corr_acts[:, :, 0]
        for k in range(1, config.steps + 1):
            alpha = k / config.steps
            x = x_corr + alpha * (x_clean - x_corr)  # padding keeps the run's own embedding
            _gradient_pass(model, graph, pair.clean, pair.labels, answers, metric, diff, scores,
                           1.0 / config.steps, input_override=x, real_mask=mask)
    elif method == "eap-ig-activations":
        for k in range(1, config.steps + 1):
            alpha = k / config.steps
            interp = corr_acts + alpha * diff

            def target(idx, interp=interp):
                return interp[:, :, idx[0] : idx[-1] + 1]

            _gradient_pass(model, graph, pair.clean, pair.labels, answers, metric, diff, scores,
                           1.0 / config.steps, writer_override=target, input_override=interp[:, :, 0],
                           real_mask=mask)
    return m_clean, m_corr


def exact_patch_scores(model, clean, corrupted, level: str = "edge", metric: str | Metric = "logit_diff",
                       batch_size: int = 8, graph: Graph | None = None, progress: bool = False) -> AttributionResult:
    """Real activation patching of every edge (``level="edge"``) or writer node (``"node"``)."""
    cfg = AttributionConfig(method="exact", exact_level=level, metric=metric, batch_size=batch_size, progress=progress)
    return attribute(model, clean, corrupted, cfg, graph)


def circuit_metric(
    model, clean: Sequence[Sample], corrupted: Sequence[Sample], keep: Bool[torch.Tensor, "n_forward n_backward"],
    metric: str | Metric = "logit_diff", batch_size: int = 8, graph: Graph | None = None, align: str = "strict",
) -> dict[str, float]:
    """Mean metric of the clean run, the corrupted run and the run where only ``keep`` edges stay clean."""
    graph = graph or Graph.from_model(model)
    metric_fn = get_metric(metric)
    answers = answer_tokens(model.tokenizer)
    device = next(model.parameters()).device
    tot = {"clean": 0.0, "corrupted": 0.0, "circuit": 0.0}
    keep = keep.to(device) | ~graph.edge_mask.to(device)
    for lo, hi in _chunks(len(clean), batch_size):
        pair = make_pair_batch(model.tokenizer, clean[lo:hi], corrupted[lo:hi], device, align)
        corr_acts, corr_logits = collect_writer_outputs(model, graph, pair.corrupted, pair.mask)
        with torch.no_grad():
            tot["clean"] += float(metric_fn(_logits(model, pair.clean), pair.labels, answers).sum())
        tot["corrupted"] += float(metric_fn(corr_logits, pair.labels, answers).sum())
        tot["circuit"] += float(patched_metric(model, graph, pair, corr_acts, keep, metric_fn, answers).sum())
    n = len(clean)
    return {k: v / n for k, v in tot.items()}


__all__ = [
    "METHODS",
    "AttributionConfig",
    "AttributionMemoryError",
    "AttributionResult",
    "CorruptionLengthError",
    "PairBatch",
    "attribute",
    "buffer_bytes",
    "circuit_metric",
    "collect_writer_outputs",
    "exact_patch_scores",
    "make_pair_batch",
    "patched_metric",
]
