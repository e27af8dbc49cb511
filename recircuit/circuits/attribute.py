"""Edge attribution patching (EAP, EAP-IG) and exact activation patching on a bridge.

Usage::

    from recircuit.circuits import attribute, AttributionConfig
    res = attribute(model, clean_samples, corrupted_samples,
                    AttributionConfig(method="eap-ig-inputs", steps=5, metric="logit_diff"))
    res.scores            # [n_forward, n_backward] mean edge scores (0 where no edge)
    res.node_scores()     # {"a3.h5": ..., "m7": ...}

    res = attribute(model, clean, corrupted, AttributionConfig(per_sample=True))
    res.per_sample_scores # [n, n_forward, n_backward], each sample's own scores; mean over n = res.scores

**Sign convention.** A score estimates ``metric(clean) - metric(clean with that edge patched to
its corrupted value)``: positive edges carry the clean behaviour. For EAP that is
``(a_clean - a_corrupt) . d metric / d reader_input`` at the clean run (the ``gradient_point``
option moves the gradient to the corrupted run, TL 4.3's denoising form, which gives
``metric(corrupt with the edge patched to clean) - metric(corrupt)``).

**Design.** As in EAP-IG (hannamw/EAP-IG), one activation-difference tensor
``[batch, pos, n_forward, d_model]`` is filled by forward hooks on the writers, and every reader
hook registers a gradient hook that contracts its gradient with the prefix of upstream writers
into the dense ``(n_forward, n_backward)`` score matrix. A no-grad corrupted pass fills the
tensor with corrupted outputs; the clean gradient pass turns it into ``clean - corrupted`` in place
during its forward, before its backward needs it. So ``eap`` costs two forward passes and one
backward per batch, and the buffer is allocated once. Positions where either prompt is padding
are zeroed in the difference, so left-padded batches give the same scores as one prompt at a
time. Metrics read the last position, so the unembedding runs on the last position only
(``AttributionConfig.last_position_only``).

**Methods.** Each method is one function with the signature of :data:`BatchMethod`, registered
in :data:`METHOD_FUNCTIONS` (hannamw/EAP-IG's ``get_scores_*``); :func:`attribute` owns batching,
memory and averaging and dispatches every batch to it. The shared hook machinery is
:mod:`recircuit.circuits.engine`; faithfulness is :mod:`recircuit.circuits.faithfulness`.

- ``eap``: two forward passes and one backward per batch.
- ``eap-ig-inputs``: gradients averaged over ``steps`` points on the straight line from the
  corrupted to the clean input embeddings (alpha = k/steps, k = steps..1; the alpha = 1 pass is
  the clean run that fills the difference). ``steps=1`` is ``eap``.
- ``eap-ig-activations``: at each step every writer's output is set (value only, gradient kept) to
  ``corrupt + alpha (clean - corrupt)``, and reader gradients are averaged. The final residual is
  then on the straight line too, so the edges into ``logits`` add up to
  ``metric(clean) - metric(corrupted)`` as steps grow (IG completeness).
- ``exact``: real activation patching, one patched run per edge (or per node): the reader's input
  becomes ``input - (a_live - a_corrupt)`` for that writer. Several patched copies of a batch
  share one forward pass (:func:`patched_metric` with a stack of masks). For verification on
  small graphs.

The same patched forward (:func:`patched_metric`) gives faithfulness: every edge outside a
circuit carries its corrupted value, in one pass.

**Checked first.** :func:`attribute` runs :func:`~recircuit.circuits.engine.check_writer_sum`
(once per model) and refuses, with a :class:`~recircuit.circuits.engine.WriterSumError` naming
the family and the miss, a model whose writers do not sum to its residual stream.

**Post-block norms** (Gemma-2/3): exact patching goes through the real post-attention norm, and
EAP/EAP-IG contract the norm's exact Jacobian (at each gradient run's norm input) applied to the
pre-norm head differences, so ``eap`` is the derivative of exact patching there too; see
:mod:`recircuit.circuits.engine` for what is exact and what is linearised.

**Memory** is estimated before each batch: the difference tensor (one buffer for ``eap`` and
``eap-ig-inputs``; two for ``eap-ig-activations``, which also keeps the corrupted outputs, and for
``exact``, which needs a live buffer per patched copy). A batch that would exceed the budget is
split; if one prompt alone exceeds it, :class:`AttributionMemoryError` says by how much and what
to change. Autograd's own saved activations (those of a plain backward pass) are not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Float
from tqdm.auto import tqdm

from recircuit.circuits.engine import (
    WRITER_SUM_TOLERANCE,
    CorruptionLengthError,
    Frozen,
    PairBatch,
    Record,
    WriterSumError,
    buffer_bytes,
    check_decomposition,
    check_writer_sum,
    chunks,
    collect_writer_outputs,
    default_budget,
    gradient_pass,
    input_index,
    make_pair_batch,
    patch_copies,
    patched_metric,
    run_logits,
)
from recircuit.circuits.graph import Graph
from recircuit.circuits.metrics import METRICS, Metric, get_metric
from recircuit.data.prompts import Sample
from recircuit.errors import InputError
from recircuit.models.scoring import AnswerTokens, answer_tokens

logger = logging.getLogger(__name__)


class AttributionMemoryError(MemoryError):
    """Attribution would not fit in the memory budget even one prompt at a time."""


#: Largest relative miss between a reader's input and the sum of its upstream writers that
#: :func:`attribute` accepts for float32 weights (the engine's :data:`WRITER_SUM_TOLERANCE`).
DECOMPOSITION_TOLERANCE = WRITER_SUM_TOLERANCE


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
        max_bytes: memory budget for the attribution buffers; default 40% of available RAM (CPU) or of
            free GPU memory.
        progress: show tqdm bars.
        last_position_only: unembed only the last position (metrics then get logits
            ``[batch, 1, vocab]``); set False for a custom metric that reads other positions.
        per_sample: also keep each sample's own edge scores
            (:attr:`AttributionResult.per_sample_scores`): the score hooks keep the batch axis
            instead of summing it (same passes; ``n * n_forward * n_backward`` floats kept on
            the CPU). Left out of :meth:`to_dict` when False.
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
    last_position_only: bool = True
    per_sample: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown attribution method {self.method!r}", field="method", fix=f"choose one of {', '.join(METHODS)}")
        if self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}", field="steps", fix="use 1 (EAP) or more")
        if not callable(self.metric) and self.metric not in METRICS:
            raise InputError(f"unknown metric {self.metric!r}", field="metric",
                             fix=f"choose one of {', '.join(METRICS)} or pass a callable")
        if self.align not in ("strict", "left"):
            raise InputError(f"align must be 'strict' or 'left', got {self.align!r}", field="align")
        if self.gradient_point not in ("clean", "corrupted"):
            raise InputError(f"gradient_point must be 'clean' or 'corrupted', got {self.gradient_point!r}",
                             field="gradient_point")

    def to_dict(self) -> dict:
        """JSON-able form (a callable metric is stored by name; ``per_sample`` left out when False,
        so cache keys of configs without it keep their form)."""
        d = asdict(self)
        if callable(self.metric):
            d["metric"] = getattr(self.metric, "__name__", "custom")
        if not self.per_sample:
            del d["per_sample"]
        return d


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
    #: The metric of each clean and each corrupted prompt, in sample order (the same forward passes
    #: that give the means); :func:`~recircuit.circuits.faithfulness.corruption_effect` reads their spread.
    clean_per_sample: list[float] = field(default_factory=list)
    corrupted_per_sample: list[float] = field(default_factory=list)
    #: Each sample's own edge scores ``[n, n_forward, n_backward]`` (0 where no edge), in sample
    #: order; their mean over samples is :attr:`scores`. Only with ``AttributionConfig(per_sample=True)``.
    per_sample_scores: Float[torch.Tensor, "n n_forward n_backward"] | None = None

    def node_scores(self) -> dict[str, float]:
        """Per writer node: the sum of its outgoing edge scores (= node-level EAP, by linearity)."""
        s = (self.scores * self.graph.edge_mask).sum(1)
        return {n: float(v) for n, v in zip(self.graph.forward_names, s.tolist())}


#: One method's work on one batch: add the batch's summed edge scores into ``scores`` (in place)
#: and return the per-sample clean and corrupted metrics ``([batch], [batch])``. With
#: ``AttributionConfig(per_sample=True)`` ``scores`` is ``[batch, n_forward, n_backward]`` and each
#: sample's scores go into its own row (:func:`~recircuit.circuits.engine.score_hooks` does both).
BatchMethod = Callable[
    [torch.nn.Module, Graph, PairBatch, "AttributionConfig", Metric, AnswerTokens,
     Float[torch.Tensor, "n_forward n_backward"], torch.Tensor],
    tuple[Float[torch.Tensor, "batch"], Float[torch.Tensor, "batch"]],
]


def eap_scores(model, graph: Graph, pair: PairBatch, config: AttributionConfig, metric: Metric, answers: AnswerTokens,
               scores: Float[torch.Tensor, "n_forward n_backward"], edge_mask: torch.Tensor,
               ) -> tuple[Float[torch.Tensor, "batch"], Float[torch.Tensor, "batch"]]:
    """EAP: ``(a_clean - a_corrupt) . grad`` with the gradient at the clean run (or the corrupted one).

    One buffer: the corrupted outputs, turned into the difference in place by the gradient pass's
    forward. With ``gradient_point="corrupted"`` (TL's denoising form) the clean outputs are
    collected and the gradient is taken on the corrupted run.
    """
    mask, last = pair.mask, config.last_position_only
    if config.gradient_point == "corrupted":
        buf, clean_logits = collect_writer_outputs(model, graph, pair.clean, mask, last)
        m_clean = metric(clean_logits, pair.labels, answers)
        m_corr = gradient_pass(model, graph, pair.corrupted, pair.labels, answers, metric, buf, scores, 1.0,
                               last_only=last, record=Record(buf, buf, -1.0, mask))
        return m_clean, m_corr
    corr, m_corr = _corrupted(model, graph, pair, metric, answers, last)
    m_clean = gradient_pass(model, graph, pair.clean, pair.labels, answers, metric, corr, scores, 1.0,
                            last_only=last, record=Record(corr, corr, 1.0, mask))
    return m_clean, m_corr


def eap_ig_inputs_scores(model, graph: Graph, pair: PairBatch, config: AttributionConfig, metric: Metric,
                         answers: AnswerTokens, scores: Float[torch.Tensor, "n_forward n_backward"],
                         edge_mask: torch.Tensor) -> tuple[Float[torch.Tensor, "batch"], Float[torch.Tensor, "batch"]]:
    """EAP-IG on the input embeddings: gradients averaged over ``steps`` points corrupted -> clean.

    alpha = k/steps for k = steps..1; the alpha = 1 pass is the clean run that fills the
    difference (one buffer). ``steps=1`` is :func:`eap_scores`.
    """
    mask, last = pair.mask, config.last_position_only
    corr, m_corr = _corrupted(model, graph, pair, metric, answers, last)
    steps, w = config.steps, 1.0 / config.steps
    x_corr = corr[:, :, 0].clone()
    diff = corr  # becomes clean - corrupted in the first (alpha = 1, clean) pass
    m_clean = gradient_pass(model, graph, pair.clean, pair.labels, answers, metric, diff, scores, w,
                            last_only=last, record=Record(diff, diff, 1.0, mask))
    for k in range(steps - 1, 0, -1):
        x = x_corr + (k / steps) * diff[:, :, 0]  # padding keeps the run's own embedding
        gradient_pass(model, graph, pair.clean, pair.labels, answers, metric, diff, scores, w,
                      input_override=x, real_mask=mask, last_only=last)
    return m_clean, m_corr


def eap_ig_activations_scores(model, graph: Graph, pair: PairBatch, config: AttributionConfig, metric: Metric,
                              answers: AnswerTokens, scores: Float[torch.Tensor, "n_forward n_backward"],
                              edge_mask: torch.Tensor,
                              ) -> tuple[Float[torch.Tensor, "batch"], Float[torch.Tensor, "batch"]]:
    """EAP-IG on activations: every writer's value set to ``corrupt + alpha (clean - corrupt)``.

    The gradient is kept through each writer; reader gradients are averaged over the steps. Two
    buffers (corrupted outputs and the difference).
    """
    mask, last = pair.mask, config.last_position_only
    corr, m_corr = _corrupted(model, graph, pair, metric, answers, last)
    steps, w = config.steps, 1.0 / config.steps
    diff = torch.empty_like(corr)
    m_clean = gradient_pass(model, graph, pair.clean, pair.labels, answers, metric, diff, scores, w,
                            last_only=last, record=Record(diff, corr, 1.0, mask))
    for k in range(steps - 1, 0, -1):
        alpha = k / steps

        def target(idx, alpha=alpha):
            sl = slice(idx[0], idx[-1] + 1)
            return corr[:, :, sl] + alpha * diff[:, :, sl]

        gradient_pass(model, graph, pair.clean, pair.labels, answers, metric, diff, scores, w,
                      writer_override=target, input_override=target(input_index(graph))[:, :, 0],
                      real_mask=mask, last_only=last)
    return m_clean, m_corr


def exact_scores(model, graph: Graph, pair: PairBatch, config: AttributionConfig, metric: Metric,
                 answers: AnswerTokens, scores: Float[torch.Tensor, "n_forward n_backward"], edge_mask: torch.Tensor,
                 ) -> tuple[Float[torch.Tensor, "batch"], Float[torch.Tensor, "batch"]]:
    """Exact activation patching: one patched run per edge (``exact_level="edge"``) or writer node.

    Several patched copies share one forward pass (:func:`patched_metric` with a stack of masks),
    as many as the memory budget allows. A node's effect is placed on its ``logits`` edge, so
    :meth:`AttributionResult.node_scores` (row sums) returns it.
    """
    last = config.last_position_only
    corr, m_corr = _corrupted(model, graph, pair, metric, answers, last)
    with torch.no_grad():
        m_clean = metric(run_logits(model, pair.clean, last), pair.labels, answers)
    b, p = pair.clean.input_ids.shape
    per_call = patch_copies(graph, b, p, model.cfg.d_model, config.max_bytes or default_budget(scores.device))
    if config.exact_level == "node":
        units = [(f, graph.backward_index["logits"]) for f in range(graph.n_forward)]
    else:
        units = edge_mask.nonzero().tolist()
    bar = tqdm(total=len(units), desc="exact patching", leave=False, disable=not config.progress)
    for lo, hi in chunks(len(units), per_call):
        keep = torch.ones(hi - lo, *edge_mask.shape, dtype=torch.bool, device=edge_mask.device)
        for j, (f, r) in enumerate(units[lo:hi]):
            if config.exact_level == "node":
                keep[j, f] = False
            else:
                keep[j, f, r] = False
        m = patched_metric(model, graph, pair, corr, keep, metric, answers, last)
        for j, (f, r) in enumerate(units[lo:hi]):
            if scores.dim() == 3:  # per-sample rows
                scores[:, f, r] += m_clean - m[j]
            else:
                scores[f, r] += (m_clean - m[j]).sum()
        bar.update(hi - lo)
    bar.close()
    return m_clean, m_corr


def _corrupted(model, graph: Graph, pair: PairBatch, metric: Metric, answers: AnswerTokens, last: bool,
               ) -> tuple[Float[torch.Tensor, "batch pos n_forward d_model"], Float[torch.Tensor, "batch"]]:
    """The corrupted run's writer outputs (the one buffer every method starts from) and metric."""
    corr, corr_logits = collect_writer_outputs(model, graph, pair.corrupted, pair.mask, last)
    return corr, metric(corr_logits, pair.labels, answers)


#: Method name -> its batch function; :func:`attribute` dispatches through this table.
METHOD_FUNCTIONS: dict[str, BatchMethod] = {
    "eap": eap_scores,
    "eap-ig-inputs": eap_ig_inputs_scores,
    "eap-ig-activations": eap_ig_activations_scores,
    "exact": exact_scores,
}

#: ``[b, p, n_forward, d_model]`` float32 buffers each method holds per batch (the memory estimate;
#: gradient methods hold one more on a graph with post-block norms, the contracted difference).
METHOD_BUFFERS: dict[str, int] = {"eap": 1, "eap-ig-inputs": 1, "eap-ig-activations": 2, "exact": 2}

METHODS = tuple(METHOD_FUNCTIONS)


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
        WriterSumError: the model's writers do not sum to its readers' inputs (an
            :class:`~recircuit.errors.InputError`; checked once per model on a probe prompt,
            :func:`~recircuit.circuits.engine.check_writer_sum`), before any score is computed.
    """
    config = config or AttributionConfig()
    graph = graph or Graph.from_model(model)
    check_writer_sum(model, graph)
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
    m_clean: dict[int, list[float]] = {}     # batch start -> per-sample metrics (batches may split)
    m_corr: dict[int, list[float]] = {}
    rows: dict[int, torch.Tensor] = {}       # batch start -> per-sample scores [b, F, B] (per_sample)
    was_training = model.training
    model.eval()

    units = chunks(len(clean), config.batch_size)
    bar = tqdm(total=len(clean), desc=f"attribution ({config.method})", unit="pair", disable=not config.progress)
    try:
        with Frozen(model):
            queue = list(units)
            while queue:
                lo, hi = queue.pop(0)
                pair = make_pair_batch(model.tokenizer, clean[lo:hi], corrupted[lo:hi], device, config.align)
                n_buf = METHOD_BUFFERS[config.method] + (1 if graph.post_norm and config.method != "exact" else 0)
                need = buffer_bytes(graph, hi - lo, pair.clean.input_ids.shape[1], d_model, n_buf)
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
                if config.per_sample:
                    batch_scores = torch.zeros(hi - lo, *scores.shape, device=device)
                    mc, mk = METHOD_FUNCTIONS[config.method](model, graph, pair, config, metric, answers,
                                                             batch_scores, edge_mask)
                    scores += batch_scores.sum(0)
                    rows[lo] = (batch_scores * edge_mask).cpu()
                else:
                    mc, mk = METHOD_FUNCTIONS[config.method](model, graph, pair, config, metric, answers, scores, edge_mask)
                m_clean_sum += float(mc.sum())
                m_corr_sum += float(mk.sum())
                m_clean[lo] = mc.detach().double().cpu().reshape(-1).tolist()
                m_corr[lo] = mk.detach().double().cpu().reshape(-1).tolist()
                bar.update(hi - lo)
    finally:
        bar.close()
        model.train(was_training)
    n = len(clean)
    scores = (scores / n) * edge_mask
    clean_ps = [v for lo in sorted(m_clean) for v in m_clean[lo]]
    corr_ps = [v for lo in sorted(m_corr) for v in m_corr[lo]]
    per_sample = torch.cat([rows[lo] for lo in sorted(rows)]) if config.per_sample else None
    return AttributionResult(scores.cpu(), graph, config, n, m_clean_sum / n, m_corr_sum / n,
                             clean_per_sample=clean_ps, corrupted_per_sample=corr_ps,
                             per_sample_scores=per_sample)


def exact_patch_scores(model, clean: Sequence[Sample], corrupted: Sequence[Sample], level: str = "edge", metric: str | Metric = "logit_diff",
                       batch_size: int = 8, graph: Graph | None = None, progress: bool = False) -> AttributionResult:
    """Real activation patching of every edge (``level="edge"``) or writer node (``"node"``)."""
    cfg = AttributionConfig(method="exact", exact_level=level, metric=metric, batch_size=batch_size, progress=progress)
    return attribute(model, clean, corrupted, cfg, graph)



__all__ = [
    "METHODS",
    "METHOD_BUFFERS",
    "METHOD_FUNCTIONS",
    "AttributionConfig",
    "AttributionMemoryError",
    "AttributionResult",
    "BatchMethod",
    "CorruptionLengthError",
    "PairBatch",
    "attribute",
    "DECOMPOSITION_TOLERANCE",
    "WriterSumError",
    "buffer_bytes",
    "check_decomposition",
    "check_writer_sum",
    "collect_writer_outputs",
    "eap_ig_activations_scores",
    "eap_ig_inputs_scores",
    "eap_scores",
    "exact_patch_scores",
    "exact_scores",
    "make_pair_batch",
    "patch_copies",
    "patched_metric",
]
