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
``[batch, pos, n_forward, d_model]`` is filled by forward hooks on the writers, and every reader
hook registers a gradient hook that contracts its gradient with the prefix of upstream writers
into the dense ``(n_forward, n_backward)`` score matrix. A no-grad corrupted pass fills the
tensor with corrupted outputs; the clean gradient pass turns it into ``clean - corrupted`` in place
during its forward, before its backward needs it. So ``eap`` costs two forward passes and one
backward per batch, and the buffer is allocated once. Positions where either prompt is padding
are zeroed in the difference, so left-padded batches give the same scores as one prompt at a
time. Metrics read the last position, so the unembedding runs on the last position only
(``AttributionConfig.last_position_only``).

**Methods.**

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

**Memory** is estimated before each batch: the difference tensor (one buffer for ``eap`` and
``eap-ig-inputs``; two for ``eap-ig-activations``, which also keeps the corrupted outputs, and for
``exact``, which needs a live buffer per patched copy). A batch that would exceed the budget is
split; if one prompt alone exceeds it, :class:`AttributionMemoryError` says by how much and what
to change. Autograd's own saved activations (those of a plain backward pass) are not counted.
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
        max_bytes: memory budget for the attribution buffers; default 40% of available RAM (CPU) or of
            free GPU memory.
        progress: show tqdm bars.
        last_position_only: unembed only the last position (metrics then get logits
            ``[batch, 1, vocab]``); set False for a custom metric that reads other positions.
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


def available_ram() -> int:
    """Bytes of RAM available to a new allocation now (``MemAvailable``; total RAM where unknown).

    Other processes count: on a shared machine the budget shrinks instead of ending in the
    kernel's out-of-memory killer.
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # not Linux
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 10 << 30


def default_budget(device: torch.device) -> int:
    """40% of available RAM (CPU) or of free CUDA memory, in bytes."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.4)
    return int(available_ram() * 0.4)


def buffer_bytes(graph: Graph, batch: int, pos: int, d_model: int, n_buffers: int, itemsize: int = 4) -> int:
    """Bytes of ``n_buffers`` tensors ``[batch, pos, n_forward, d_model]``."""
    return batch * pos * graph.n_forward * d_model * itemsize * n_buffers


def _n_buffers(config: AttributionConfig) -> int:
    """``[b, p, n_forward, d_model]`` buffers a batch holds (see :func:`_attribute_batch`)."""
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


def _last_position(t: Float[torch.Tensor, "batch pos d_model"], *, hook) -> Float[torch.Tensor, "batch 1 d_model"]:
    return t[:, -1:]


def _logits(model, batch: TokenizedBatch, last_only: bool = True) -> Float[torch.Tensor, "batch pos vocab"]:
    """Logits of ``batch``; with ``last_only`` the unembedding runs on the last position only.

    Metrics read the last position (prompts are left-padded), so unembedding every position
    (49,152 logits per token on SmolLM2, about a fifth of the forward cost) is wasted work.
    The result then has ``pos == 1``.
    """
    if last_only and "unembed.hook_in" in model.hook_dict:
        with model.hooks(fwd_hooks=[("unembed.hook_in", _last_position)]):
            return model(batch.input_ids, attention_mask=batch.attention_mask, return_type="logits")
    return model(batch.input_ids, attention_mask=batch.attention_mask, return_type="logits")


@torch.no_grad()
def collect_writer_outputs(
    model, graph: Graph, batch: TokenizedBatch, mask: Float[torch.Tensor, "batch pos"], last_only: bool = True
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
        logits = _logits(model, batch, last_only)
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
                g4 = (g if slot.per_slot else g.unsqueeze(2)).float()
                b, p, n, d = g4.shape
                nu = slot.n_upstream
                # sum over (batch, pos, d) of diff[..., f, d] * g[..., n, d], as one batched matmul
                # over positions: the diff prefix [b*p, nu, d] is a view (no copy), unlike einsum's
                # permuted operand, which copied it at every reader (8x slower on SmolLM2 shapes)
                contrib = torch.bmm(diff[:, :, :nu].reshape(b * p, nu, d), g4.reshape(b * p, n, d).transpose(1, 2)).sum(0)
                scores[:nu, idx] += weight * contrib
                return None

            t.register_hook(on_grad)
            return t

        return hook

    return [(slot.hook, make(slot)) for slot in graph.reader_slots()]


@dataclass
class _Record:
    """Fill ``out = sign * (writer outputs of this run - base)`` during a gradient pass's forward."""

    out: Float[torch.Tensor, "batch pos n_forward d_model"]
    base: Float[torch.Tensor, "batch pos n_forward d_model"]
    sign: float
    mask: Float[torch.Tensor, "batch pos"]

    def write(self, t: torch.Tensor, idx: tuple[int, ...]) -> None:
        sl = slice(idx[0], idx[-1] + 1)
        vals = (t if t.dim() == 4 else t.unsqueeze(2)).detach().float() * self.mask[:, :, None, None]
        self.out[:, :, sl] = self.sign * (vals - self.base[:, :, sl])


def _gradient_pass(
    model, graph: Graph, batch: TokenizedBatch, labels, answers: AnswerTokens, metric: Metric,
    diff, scores, weight: float, writer_override: Callable[[tuple[int, ...]], torch.Tensor] | None = None,
    input_override: torch.Tensor | None = None, real_mask: torch.Tensor | None = None,
    last_only: bool = True, record: _Record | None = None,
) -> Float[torch.Tensor, "batch"]:
    """One forward + backward; reader gradient hooks accumulate scores. Returns the metric.

    ``input_override`` replaces the embeddings at real (``real_mask``) positions;
    ``writer_override(idx)`` gives the value ``[b, p, n, d]`` writers ``idx`` output (the gradient
    still flows through the writer). ``record`` fills ``diff`` from this run's writer outputs during
    the forward, so it is ready when the backward hooks contract it.
    """
    hooks: list[tuple[str, Callable]] = []
    first_idx = graph.forward_hooks()[0][1]

    def input_hook(t, *, hook):
        if record is not None:
            record.write(t, first_idx)
        x = t if input_override is None else torch.where(real_mask[:, :, None] > 0, input_override.to(t.dtype), t)
        return x.detach().clone().requires_grad_(True)

    hooks.append(("blocks.0.hook_resid_pre", input_hook))
    if writer_override is not None or record is not None:
        for name, idx in graph.forward_hooks()[1:]:
            def wh(t, *, hook, idx=idx):
                if record is not None:
                    record.write(t, idx)
                if writer_override is None:
                    return t
                target = writer_override(idx)  # [b, p, n, d]
                tgt = target if t.dim() == 4 else target[:, :, 0]
                return t + (tgt.to(t.dtype) - t).detach()

            hooks.append((name, wh))
    hooks += _score_hooks(graph, diff, scores, weight)
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        m = metric(_logits(model, batch, last_only), labels, answers)
        m.sum().backward()
    return m.detach()


@torch.no_grad()
def patched_metric(
    model, graph: Graph, pair: PairBatch, corrupted_acts: Float[torch.Tensor, "batch pos n_forward d_model"],
    keep: Bool[torch.Tensor, "*k n_forward n_backward"], metric: Metric, answers: AnswerTokens,
    last_only: bool = True,
) -> Float[torch.Tensor, "*k batch"]:
    """Clean run in which every edge with ``keep == False`` carries its corrupted value.

    Each reader's input becomes ``input - sum_f (a_live_f - a_corrupt_f)`` over the patched
    writers ``f``, where ``a_live`` are the writers' outputs in this same (patched) run.

    ``keep`` of shape ``[n_forward, n_backward]`` gives the metric per sample ``[batch]``. A stack
    ``[k, n_forward, n_backward]`` runs ``k`` differently patched copies of the batch in one
    forward pass (the batch is tiled ``k`` times) and gives ``[k, batch]``.
    """
    single = keep.dim() == 2
    keeps = (keep[None] if single else keep).to(corrupted_acts.device)
    k = keeps.shape[0]
    b, p = pair.clean.input_ids.shape
    batch = TokenizedBatch(pair.clean.input_ids.repeat(k, 1), pair.clean.attention_mask.repeat(k, 1))
    mask = pair.mask.repeat(k, 1)
    live = torch.zeros(k * b, p, graph.n_forward, corrupted_acts.shape[-1], device=corrupted_acts.device)
    drop = (~keeps).float()  # [k, F, B]
    hooks: list[tuple[str, Callable]] = []
    for name, idx in graph.forward_hooks():
        def wh(t, *, hook, idx=idx):
            vals = t if t.dim() == 4 else t.unsqueeze(2)
            live[:, :, idx[0] : idx[-1] + 1] = vals.float() * mask[:, :, None, None]
            return t

        hooks.append((name, wh))
    for slot in graph.reader_slots():
        cols = list(slot.indices)
        nu = slot.n_upstream
        if not bool(drop[:, :nu, cols].any()):
            continue

        def rh(t, *, hook, nu=nu, cols=cols, per_slot=slot.per_slot):
            d_t = drop[:, :nu, cols].transpose(1, 2)[:, None]  # [k, 1, n, f]
            dm = live.shape[-1]
            gap = live[:, :, :nu].reshape(k, b * p, nu, dm) - corrupted_acts[:, :, :nu].reshape(1, b * p, nu, dm)
            delta = torch.matmul(d_t, gap).reshape(k * b, p, len(cols), dm)  # sum over dropped writers
            if not per_slot:
                delta = delta[:, :, 0]
            return t - delta.to(t.dtype)

        hooks.append((slot.hook, rh))
    # writer hooks must run before reader hooks at the same point; TL runs them in list order
    with model.hooks(fwd_hooks=hooks):
        m = metric(_logits(model, batch, last_only), pair.labels.repeat(k), answers).view(k, b)
    return m[0] if single else m


def patch_copies(graph: Graph, batch: int, pos: int, d_model: int, budget: int, cap: int = 64) -> int:
    """How many patched copies of a batch :func:`patched_metric` may run at once within ``budget``.

    Each copy costs its live writer buffer plus the einsum temporaries, about two
    ``[batch, pos, n_forward, d_model]`` float32 tensors.
    """
    one = buffer_bytes(graph, batch, pos, d_model, 2)
    return max(1, min(cap, budget // max(one, 1)))


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
    """Add one batch's summed edge scores into ``scores``; return clean and corrupted metrics.

    Buffers ``[b, p, n_forward, d_model]``: ``eap`` and ``eap-ig-inputs`` hold one (the corrupted
    outputs, turned into the difference in place by the first gradient pass, which runs on the
    clean prompt: alpha = 1 first for IG); ``eap-ig-activations`` two (corrupted and difference);
    ``exact`` one plus the patched copies' live buffers.
    """
    mask, last = pair.mask, config.last_position_only
    method = config.method
    if method == "eap" and config.gradient_point == "corrupted":
        # TL's denoising form: the gradient at the corrupted run; diff = clean - corrupted
        buf, m_clean_t = collect_writer_outputs(model, graph, pair.clean, mask, last)
        m_clean = metric(m_clean_t, pair.labels, answers)
        m_corr = _gradient_pass(model, graph, pair.corrupted, pair.labels, answers, metric, buf, scores, 1.0,
                                last_only=last, record=_Record(buf, buf, -1.0, mask))
        return m_clean, m_corr
    corr, corr_logits = collect_writer_outputs(model, graph, pair.corrupted, mask, last)
    m_corr = metric(corr_logits, pair.labels, answers)
    del corr_logits
    if method == "exact":
        with torch.no_grad():
            m_clean = metric(_logits(model, pair.clean, last), pair.labels, answers)
        b, p = pair.clean.input_ids.shape
        per_call = patch_copies(graph, b, p, model.cfg.d_model, config.max_bytes or default_budget(scores.device))
        if config.exact_level == "node":
            # node effect placed on the node's logits edge, so node_scores() (row sums) returns it
            units = [(f, graph.backward_index["logits"]) for f in range(graph.n_forward)]
        else:
            units = edge_mask.nonzero().tolist()
        bar = tqdm(total=len(units), desc="exact patching", leave=False, disable=not config.progress)
        for lo, hi in _chunks(len(units), per_call):
            keep = torch.ones(hi - lo, *edge_mask.shape, dtype=torch.bool, device=edge_mask.device)
            for j, (f, r) in enumerate(units[lo:hi]):
                if config.exact_level == "node":
                    keep[j, f] = False
                else:
                    keep[j, f, r] = False
            m = patched_metric(model, graph, pair, corr, keep, metric, answers, last)
            for j, (f, r) in enumerate(units[lo:hi]):
                scores[f, r] += (m_clean - m[j]).sum()
            bar.update(hi - lo)
        bar.close()
        return m_clean, m_corr
    if method == "eap":
        m_clean = _gradient_pass(model, graph, pair.clean, pair.labels, answers, metric, corr, scores, 1.0,
                                 last_only=last, record=_Record(corr, corr, 1.0, mask))
        return m_clean, m_corr
    steps, w = config.steps, 1.0 / config.steps
    if method == "eap-ig-inputs":
        x_corr = corr[:, :, 0].clone()
        diff = corr  # becomes clean - corrupted in the first (alpha = 1, clean) pass
        m_clean = _gradient_pass(model, graph, pair.clean, pair.labels, answers, metric, diff, scores, w,
                                 last_only=last, record=_Record(diff, diff, 1.0, mask))
        for k in range(steps - 1, 0, -1):
            x = x_corr + (k / steps) * diff[:, :, 0]  # padding keeps the run's own embedding
            _gradient_pass(model, graph, pair.clean, pair.labels, answers, metric, diff, scores, w,
                           input_override=x, real_mask=mask, last_only=last)
        return m_clean, m_corr
    # eap-ig-activations: every writer's value set to corrupted + alpha * diff (gradient kept)
    diff = torch.empty_like(corr)
    m_clean = _gradient_pass(model, graph, pair.clean, pair.labels, answers, metric, diff, scores, w,
                             last_only=last, record=_Record(diff, corr, 1.0, mask))
    for k in range(steps - 1, 0, -1):
        alpha = k / steps

        def target(idx, alpha=alpha):
            sl = slice(idx[0], idx[-1] + 1)
            return corr[:, :, sl] + alpha * diff[:, :, sl]

        _gradient_pass(model, graph, pair.clean, pair.labels, answers, metric, diff, scores, w,
                       writer_override=target, input_override=target(_input_idx(graph))[:, :, 0],
                       real_mask=mask, last_only=last)
    return m_clean, m_corr


def _input_idx(graph: Graph) -> tuple[int, ...]:
    """Forward indices written by the first writer hook (the ``input`` node)."""
    return graph.forward_hooks()[0][1]


def exact_patch_scores(model, clean, corrupted, level: str = "edge", metric: str | Metric = "logit_diff",
                       batch_size: int = 8, graph: Graph | None = None, progress: bool = False) -> AttributionResult:
    """Real activation patching of every edge (``level="edge"``) or writer node (``"node"``)."""
    cfg = AttributionConfig(method="exact", exact_level=level, metric=metric, batch_size=batch_size, progress=progress)
    return attribute(model, clean, corrupted, cfg, graph)


def circuit_metric(
    model, clean: Sequence[Sample], corrupted: Sequence[Sample], keep: Bool[torch.Tensor, "n_forward n_backward"],
    metric: str | Metric = "logit_diff", batch_size: int = 8, graph: Graph | None = None, align: str = "strict",
    last_only: bool = True,
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
        corr_acts, corr_logits = collect_writer_outputs(model, graph, pair.corrupted, pair.mask, last_only)
        with torch.no_grad():
            tot["clean"] += float(metric_fn(_logits(model, pair.clean, last_only), pair.labels, answers).sum())
        tot["corrupted"] += float(metric_fn(corr_logits, pair.labels, answers).sum())
        tot["circuit"] += float(patched_metric(model, graph, pair, corr_acts, keep, metric_fn, answers, last_only).sum())
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
    "patch_copies",
    "patched_metric",
]
