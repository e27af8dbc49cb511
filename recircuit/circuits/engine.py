"""The hook machinery attribution and faithfulness share: pair batches, writer buffers, score hooks.

Usage::

    from recircuit.circuits.engine import make_pair_batch, collect_writer_outputs, patched_metric
    pair = make_pair_batch(model.tokenizer, clean, corrupted, device, align="left")
    acts, logits = collect_writer_outputs(model, graph, pair.corrupted, pair.mask)   # [b, p, F, d]
    m = patched_metric(model, graph, pair, acts, keep, metric, answers)              # [batch]

This is EAP-IG's ``utils`` layer (hannamw/EAP-IG): the activation-difference buffer
``[batch, pos, n_forward, d_model]`` filled by forward hooks on the writers
(:meth:`Graph.forward_hooks`), reader hooks whose gradient hooks contract that buffer into the
``(n_forward, n_backward)`` score matrix (:func:`score_hooks`), one gradient pass
(:func:`gradient_pass`), the patched forward used by exact patching and faithfulness
(:func:`patched_metric`), and the memory budget (:func:`default_budget`, :func:`buffer_bytes`).
The methods that use them live in :mod:`recircuit.circuits.attribute`; faithfulness in
:mod:`recircuit.circuits.faithfulness`.

**The writer-sum invariant.** Everything here rests on one identity: every reader's input is the
sum of the writes of its upstream writers (embeddings, heads, MLPs). :func:`check_writer_sum`
checks it once per model, on a fixed probe prompt (:data:`PROBE_PROMPT`), before any circuit
work (:func:`~recircuit.circuits.attribute.attribute`, exact patching, faithfulness, CURE's
module importance), and refuses a model that misses it by more than
:data:`WRITER_SUM_TOLERANCE` (relative) with a :class:`WriterSumError` naming the family and the
size of the miss. Scores are never computed on a model that fails it.

**Post-block norms** (Gemma-2/3: ``Graph.post_norm``). Such a block adds ``N(A)`` to the
residual, where ``A = sum_h r_h`` is the sum of the per-head results (``hook_result``, pre-norm;
``ln1_post.hook_in``) and ``N`` the post-attention RMSNorm. ``N`` is not linear across heads, so
the engine keeps each head's *pre-norm* result ``r_h`` in its writer buffers (the patchable
activation) and handles the norm as follows:

- *Exact* (no approximation): exact patching and faithfulness (:func:`patched_metric`). Patching
  heads ``D`` of layer ``L`` into a reader replaces that reader's view of ``N(A)`` by the real
  norm applied to the patched sum, ``N(A - sum_{h in D} (r_h - r_h^corr))``, with ``A`` from the
  same run; the norm recomputes. So a patched head is what the model would add with that head's
  result patched, and patching every edge gives the corrupted run.
- *Exact first order*: EAP and EAP-IG contract ``J_N(A) (r_h^clean - r_h^corr)`` with the
  reader gradients, where ``J_N(A)`` is the norm's full Jacobian (including the derivative of its
  RMS scale) at the norm input ``A`` of the very run whose gradient is taken (clean run for
  ``eap``, each interpolation point for EAP-IG), computed by forward-mode AD on the real norm
  module. So ``eap`` is exactly the derivative of exact edge patching along
  ``r_h -> r_h - eps (r_h - r_h^corr)``, as on families without post-norms.
- *Linearised* (bookkeeping only): what one head "writes" for the writer-sum invariant is
  ``w ⊙ r_h / s(A)``, the norm with its RMS denominator ``s(A)`` of the same run held constant
  (TransformerLens's frozen LayerNorm scale; :func:`recircuit.models.families.post_norm_head_writes`).
  These writes sum to ``N(A)`` exactly; they are not used for any score.

The MLP's writer ``hook_mlp_out`` is taken after the post-MLP norm: the MLP is one writer, so its
write is what it adds, exactly. Embeddings scaled by ``sqrt(d_model)`` are read after the scaling
(``blocks.0.hook_resid_pre``), and Gemma-2's final logit soft-cap sits after the ``logits`` reader
(``ln_final.hook_in``), inside the metric's differentiated function.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int

from recircuit.circuits.graph import Graph, ReaderSlot
from recircuit.circuits.metrics import Metric
from recircuit.data.prompts import Sample
from recircuit.errors import InputError
from recircuit.models.families import family_of, post_attn_norm, post_norm_head_writes
from recircuit.models.scoring import AnswerTokens, TokenizedBatch, kept_logits, tokenize_prompts

#: Largest relative miss between a reader's input and the sum of its upstream writers' writes that
#: :func:`check_writer_sum` accepts for float32/float64 weights: the worst absolute miss over the
#: probe's positions and the reader's slots, divided by the largest absolute value of that
#: reader's input. Exact float32 models measure 1e-7 to 1e-6; post-norm bookkeeping adds nothing.
WRITER_SUM_TOLERANCE = 1e-4

#: The tolerance for 16-bit weights (bfloat16's spacing is 7.8e-3; the residual adds in 16 bits).
WRITER_SUM_TOLERANCE_16BIT = 3e-2

#: The fixed prompt :func:`check_writer_sum` runs (a TALLRec-style question, a few dozen tokens).
PROBE_PROMPT = ('User Preference: "Toy Story (1995)", "Heat (1995)". User Unpreference: "Jumanji (1995)". '
                'Whether the user will like the target movie "Casino (1995)"? Answer: Yes.')


class WriterSumError(InputError):
    """The graph's writers do not sum to the residual stream: circuit scores would be wrong."""


class CorruptionLengthError(ValueError):
    """A clean prompt and its corrupted counterpart differ in token length."""


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


class Frozen:
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


def run_logits(model, batch: TokenizedBatch, last_only: bool = True) -> Float[torch.Tensor, "batch pos vocab"]:
    """Logits of ``batch``; with ``last_only`` the unembedding runs on the last position only.

    Metrics read the last position (prompts are left-padded), so unembedding every position
    (49,152 logits per token on SmolLM2, about a fifth of the forward cost) is wasted work.
    The result then has ``pos == 1`` (:func:`recircuit.models.kept_logits`, as scoring does).
    """
    if last_only:
        return kept_logits(model, batch.input_ids, batch.attention_mask, 1)
    return model(batch.input_ids, attention_mask=batch.attention_mask, return_type="logits")


@torch.no_grad()
def collect_writer_outputs(
    model, graph: Graph, batch: TokenizedBatch, mask: Float[torch.Tensor, "batch pos"], last_only: bool = True
) -> tuple[Float[torch.Tensor, "batch pos n_forward d_model"], Float[torch.Tensor, "batch pos vocab"]]:
    """Run ``batch`` and return every writer's output ``[b, p, n_forward, d]`` (masked) and the logits.

    The outputs are the writers' patchable activations: their residual writes, except for heads
    under a post-block norm (``graph.post_norm``), whose slots hold the pre-norm results.
    """
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
        logits = run_logits(model, batch, last_only)
    return out, logits


def _post_norm_jvp(model, layer: int, norm_in: Float[torch.Tensor, "batch pos d_model"],
                   tangent: Float[torch.Tensor, "batch pos n d_model"]) -> Float[torch.Tensor, "batch pos n d_model"]:
    """``J_N(A) t`` for each slot of ``tangent``: the exact derivative of layer ``layer``'s real
    post-attention norm at its input ``A`` (forward-mode AD on the module the model runs)."""
    norm = post_attn_norm(model, layer)
    a = norm_in.detach().to(tangent.dtype)[:, :, None, :].expand_as(tangent).contiguous()
    with torch.enable_grad():
        _, out = torch.func.jvp(norm, (a,), (tangent.contiguous(),))
    return out.detach().float()


def post_norm_diff(model, graph: Graph, raw: Float[torch.Tensor, "batch pos n_forward d_model"],
                   norm_ins: dict[int, torch.Tensor],
                   out: Float[torch.Tensor, "batch pos n_forward d_model"] | None = None,
                   ) -> Float[torch.Tensor, "batch pos n_forward d_model"]:
    """The activation difference readers contract, for a graph with post-block norms.

    ``raw`` holds pre-norm per-head differences ``r_h - r_h'``; each post-norm layer's head slots
    become ``J_N(A) (r_h - r_h')`` with ``A = norm_ins[layer]`` (the norm's input on the run whose
    gradient is taken); every other slot is copied. Without post-norms ``raw`` is returned.
    """
    if not graph.post_norm:
        return raw
    out = torch.empty_like(raw) if out is None else out
    out.copy_(raw)
    for layer, _, idx in graph.post_norm_hooks():
        sl = slice(idx[0], idx[-1] + 1)
        out[:, :, sl] = _post_norm_jvp(model, layer, norm_ins[layer], raw[:, :, sl])
    return out


@torch.no_grad()
def decomposition_error(model, graph: Graph, batch: TokenizedBatch) -> dict[str, float]:
    """How far each reader's input is from the sum of its upstream writers' writes, on real activations.

    The graph's decomposition says a reader hook's input (every slot of a per-head reader) equals
    the sum of the writes of forward nodes ``[:n_upstream]`` (for heads under a post-block norm,
    the frozen-scale writes of :func:`recircuit.models.families.post_norm_head_writes`). Returns,
    per reader hook, the largest absolute miss over real positions divided by the largest absolute
    input there (0 for a model the graph describes exactly; about 1e-7 in float32).
    """
    b, p = batch.input_ids.shape
    buf = torch.zeros(b, p, graph.n_forward, model.cfg.d_model, device=batch.input_ids.device)
    seen: dict[str, torch.Tensor] = {}
    mask = batch.attention_mask.float()

    def writer(idx: tuple[int, ...]):
        def hook(t, *, hook):
            buf[:, :, idx[0] : idx[-1] + 1] = (t if t.dim() == 4 else t.unsqueeze(2)).float()
            return t

        return hook

    def post_norm(layer: int, idx: tuple[int, ...]):
        def hook(t, *, hook):  # the layer's heads are in buf (hook_result fired first): map them to writes
            sl = slice(idx[0], idx[-1] + 1)
            buf[:, :, sl] = post_norm_head_writes(model, layer, buf[:, :, sl], t)
            return t

        return hook

    def reader(name: str):
        def hook(t, *, hook):
            seen[name] = t.detach().float().clone()
            return t

        return hook

    slots = graph.reader_slots()
    hooks = [(name, writer(idx)) for name, idx in graph.forward_hooks()]
    hooks += [(name, post_norm(layer, idx)) for layer, name, idx in graph.post_norm_hooks()]
    hooks += [(s.hook, reader(s.hook)) for s in slots]
    with model.hooks(fwd_hooks=hooks):
        model(batch.input_ids, attention_mask=batch.attention_mask, return_type="logits")
    out = {}
    for s in slots:
        x = seen[s.hook]
        x = x if s.per_slot else x.unsqueeze(2)
        total = buf[:, :, : s.n_upstream].sum(2, keepdim=True)
        real = mask[:, :, None, None]
        scale = float((x * real).abs().max()) or 1.0
        out[s.hook] = float(((x - total) * real).abs().max()) / scale
    return out


def _model_label(model) -> str:
    """``"Gemma2ForCausalLM (family gemma2)"``: the architecture and, where the table knows it, its family."""
    arch = getattr(model.cfg, "architecture", None) or getattr(model.cfg, "model_name", None) or "this model"
    try:
        fam = family_of(model).name
    except (InputError, AttributeError, IndexError, TypeError):
        return str(arch)
    return f"{arch} (family {fam})" if fam != arch else str(arch)


def _writer_sum_error(model, hook: str, err: float, tol: float, where: str) -> WriterSumError:
    return WriterSumError(
        f"{_model_label(model)}: the graph's writers (embeddings, per-head results, MLP outputs) miss the input of "
        f"{hook} by a relative {err:.2g}{where} (tolerance {tol:g}), so this architecture's residual stream is not "
        "the sum EAP assumes and edge scores would be wrong; refusing circuit work", field="model",
        fix="use a supported family (Llama, Qwen2, Mistral, GPT-2, GPT-NeoX, Phi-3, Gemma-2/3 style), or add a "
            "row to recircuit.models.families.FAMILIES that describes this one")


def writer_sum_tolerance(model) -> float:
    """:data:`WRITER_SUM_TOLERANCE` for float32/float64 weights, :data:`WRITER_SUM_TOLERANCE_16BIT` otherwise."""
    dtype = next(model.parameters()).dtype
    return WRITER_SUM_TOLERANCE if dtype in (torch.float32, torch.float64) else WRITER_SUM_TOLERANCE_16BIT


def check_decomposition(model, graph: Graph, batch: TokenizedBatch, tol: float | None = None) -> float:
    """Refuse a model whose writers do not sum to every reader's input on ``batch``.

    Returns:
        The worst relative miss over reader hooks (:func:`decomposition_error`).

    Raises:
        WriterSumError: naming the model's family, the worst reader hook and its relative miss.
    """
    tol = writer_sum_tolerance(model) if tol is None else tol
    errs = decomposition_error(model, graph, batch)
    hook, err = max(errs.items(), key=lambda kv: kv[1])
    if not err <= tol:
        raise _writer_sum_error(model, hook, err, tol, "")
    return err


def check_writer_sum(model, graph: Graph | None = None, tol: float | None = None) -> float:
    """Check, once per model and graph, that the graph's writers sum to the residual stream.

    Runs :data:`PROBE_PROMPT` and compares every reader's input (each head's q/k/v input, each
    MLP's input and the final residual, ``ln_final.hook_in``) with the sum of its upstream
    writers' writes (:func:`decomposition_error`). The tolerance is relative: the worst absolute
    miss over positions and slots divided by the largest absolute value of that reader's input,
    at most :data:`WRITER_SUM_TOLERANCE` (1e-4) for float32/float64 weights and
    :data:`WRITER_SUM_TOLERANCE_16BIT` (3e-2) for 16-bit ones, unless ``tol`` is given. The
    result is cached on the model (per graph shape and dtype), so later calls cost nothing.

    Args:
        model: a bridge with per-head hooks on.
        graph: the graph to check (default: :meth:`Graph.from_model`).
        tol: the relative tolerance (default: by dtype, as above).

    Returns:
        The worst relative miss (SmolLM2 and the tiny families: about 1e-7 to 1e-6).

    Raises:
        WriterSumError: the miss exceeds the tolerance (the message names the family and the miss).
    """
    graph = graph or Graph.from_model(model)
    tol = writer_sum_tolerance(model) if tol is None else tol
    key = (tuple(sorted(graph.to_dict().items())), str(next(model.parameters()).dtype))
    cache = model.__dict__.setdefault("_recircuit_writer_sum", {})
    if key not in cache:
        device = next(model.parameters()).device
        probe = tokenize_prompts(model.tokenizer, [PROBE_PROMPT], device)
        was_training = model.training
        model.eval()
        try:
            errs = decomposition_error(model, graph, probe)
        finally:
            model.train(was_training)
        cache[key] = max(errs.items(), key=lambda kv: kv[1])
    hook, err = cache[key]
    if not err <= tol:
        raise _writer_sum_error(model, hook, err, tol, " on the probe prompt")
    return err


def score_hooks(
    graph: Graph,
    diff: Float[torch.Tensor, "batch pos n_forward d_model"],
    scores: Float[torch.Tensor, "n_forward n_backward"] | Float[torch.Tensor, "batch n_forward n_backward"],
    weight: float, grads: Float[torch.Tensor, "n_backward batch pos d_model"] | None = None,
) -> list[tuple[str, Callable]]:
    """Reader hooks whose gradient hooks add ``weight * diff . grad`` into ``scores``.

    ``scores`` of shape ``[n_forward, n_backward]`` gets the sum over the batch; of shape
    ``[batch, n_forward, n_backward]`` each sample's own contribution (per-sample scores, the same
    contraction with only the position sum taken). With ``grads`` (batch-summed scores only) the
    hooks only store each reader's gradient there, for :func:`contract_scores` to contract once
    after the backward: one large product instead of one small one per reader.
    """
    per_sample = scores.dim() == 3
    if grads is not None and per_sample:
        raise ValueError("a gradient buffer is for batch-summed scores; per-sample scores contract at each reader")

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
                if grads is not None:      # contracted once, after the backward (gradient_pass)
                    grads[idx[0] : idx[-1] + 1] = g4.permute(2, 0, 1, 3)
                    return None
                b, p, n, d = g4.shape
                nu = slot.n_upstream
                # sum over (batch, pos, d) of diff[..., f, d] * g[..., n, d], as one batched matmul
                # over positions: the diff prefix [b*p, nu, d] is a view (no copy), unlike einsum's
                # permuted operand, which copied it at every reader (8x slower on SmolLM2 shapes)
                contrib = torch.bmm(diff[:, :, :nu].reshape(b * p, nu, d), g4.reshape(b * p, n, d).transpose(1, 2))
                if per_sample:
                    scores[:, :nu, idx] += weight * contrib.view(b, p, nu, n).sum(1)
                else:
                    scores[:nu, idx] += weight * contrib.sum(0)
                return None

            t.register_hook(on_grad)
            return t

        return hook

    return [(slot.hook, make(slot)) for slot in graph.reader_slots()]


def contract_scores(graph: Graph, diff: Float[torch.Tensor, "batch pos n_forward d_model"],
                    grads: Float[torch.Tensor, "n_backward batch pos d_model"],
                    scores: Float[torch.Tensor, "n_forward n_backward"], weight: float) -> None:
    """``scores += weight * sum over (batch, pos, d) of diff[..., f, d] * grads[r, ..., d]`` on the
    graph's edges (writer ``f`` upstream of reader ``r``), as one matrix product."""
    n_fwd = diff.shape[2]
    flat = diff.permute(2, 0, 1, 3).reshape(n_fwd, -1)                    # [F, b*p*d] (one copy)
    prod = flat @ grads.reshape(grads.shape[0], -1).T                     # [F, B]
    scores += weight * prod * graph.edge_mask.to(prod.device)


@dataclass
class Record:
    """Fill ``out = sign * (writer outputs of this run - base)`` during a gradient pass's forward."""

    out: Float[torch.Tensor, "batch pos n_forward d_model"]
    base: Float[torch.Tensor, "batch pos n_forward d_model"]
    sign: float
    mask: Float[torch.Tensor, "batch pos"]

    def write(self, t: Float[torch.Tensor, "batch pos ..."], idx: tuple[int, ...]) -> None:
        """Store one hook's output for the forward slots ``idx``: ``sign * (t * mask - base)``.

        Args:
            t: the hook's tensor, ``[batch, pos, n_heads, d_model]`` (per-head writers) or
                ``[batch, pos, d_model]`` (one writer, e.g. an MLP).
            idx: the consecutive slots of ``out``'s ``n_forward`` axis this hook fills.
        """
        sl = slice(idx[0], idx[-1] + 1)
        vals = (t if t.dim() == 4 else t.unsqueeze(2)).detach().float() * self.mask[:, :, None, None]
        self.out[:, :, sl] = self.sign * (vals - self.base[:, :, sl])


def gradient_pass(
    model, graph: Graph, batch: TokenizedBatch, labels, answers: AnswerTokens, metric: Metric,
    diff, scores, weight: float, writer_override: Callable[[tuple[int, ...]], torch.Tensor] | None = None,
    input_override: torch.Tensor | None = None, real_mask: torch.Tensor | None = None,
    last_only: bool = True, record: Record | None = None,
) -> Float[torch.Tensor, "batch"]:
    """One forward + backward; reader gradient hooks accumulate scores. Returns the metric.

    ``input_override`` replaces the embeddings at real (``real_mask``) positions;
    ``writer_override(idx)`` gives the value ``[b, p, n, d]`` writers ``idx`` output (the gradient
    still flows through the writer). ``record`` fills ``diff`` from this run's writer outputs during
    the forward, so it is ready when the backward hooks contract it. With post-block norms
    (``graph.post_norm``) ``diff`` holds pre-norm head differences and the readers contract
    :func:`post_norm_diff` of it at this run's norm inputs (one extra buffer, for this pass).
    """
    hooks: list[tuple[str, Callable]] = []
    norm_ins: dict[int, torch.Tensor] = {}
    contracted = torch.empty_like(diff) if graph.post_norm else diff
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
    for layer, name, _ in graph.post_norm_hooks():
        def nh(t, *, hook, layer=layer):
            norm_ins[layer] = t.detach()
            return t

        hooks.append((name, nh))
    b, p = batch.input_ids.shape
    grads = None if scores.dim() == 3 else torch.zeros(graph.n_backward, b, p, diff.shape[-1], device=diff.device)
    hooks += score_hooks(graph, contracted, scores, weight, grads)
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        m = metric(run_logits(model, batch, last_only), labels, answers)
        if graph.post_norm:  # the whole forward (and every writer's record) is done; the backward is next
            post_norm_diff(model, graph, diff, norm_ins, out=contracted)
        m.sum().backward()
    if grads is not None:
        contract_scores(graph, contracted, grads, scores, weight)
    return m.detach()


@torch.no_grad()
def patched_metric(
    model, graph: Graph, pair: PairBatch, corrupted_acts: Float[torch.Tensor, "batch pos n_forward d_model"],
    keep: Bool[torch.Tensor, "*k n_forward n_backward"], metric: Metric, answers: AnswerTokens,
    last_only: bool = True,
) -> Float[torch.Tensor, "*k batch"]:
    """Clean run in which every edge with ``keep == False`` carries its corrupted value.

    Each reader's input becomes ``input - sum_f (a_live_f - a_corrupt_f)`` over the patched
    writers ``f``, where ``a_live`` are the writers' outputs in this same (patched) run. Heads under
    a post-block norm (``graph.post_norm``; their activations are pre-norm results) are patched
    through the real norm instead: the reader's view of layer ``L``'s attention write ``N(A)``
    becomes ``N(A - sum_h (r_live_h - r_corrupt_h))`` over the patched heads ``h`` of ``L``, with
    ``A`` the norm's input in this run (exact; see the module docstring).

    On plain residual families the sum is taken over the smaller of two writer sets: the writers
    some copy drops, or (through the writer-sum identity, ``sum over all upstream writers of
    (a_live - a_corrupt) = input - corrupted input``) the writers some copy keeps. The readers
    of one residual point (a layer's q, k and v inputs) share one product. A small circuit thus
    touches its few kept writers and a large one its few dropped writers.

    ``keep`` of shape ``[n_forward, n_backward]`` gives the metric per sample ``[batch]``. A stack
    ``[k, n_forward, n_backward]`` runs ``k`` differently patched copies of the batch in one
    forward pass (the batch is tiled ``k`` times) and gives ``[k, batch]``.
    """
    single = keep.dim() == 2
    keeps = (keep[None] if single else keep).to(corrupted_acts.device)
    if graph.post_norm:
        m = _patched_metric_dense(model, graph, pair, corrupted_acts, keeps, metric, answers, last_only)
    else:
        m = _patched_metric_plain(model, graph, pair, corrupted_acts, keeps, metric, answers, last_only)
    return m[0] if single else m


def _patched_metric_plain(model, graph: Graph, pair: PairBatch, corrupted_acts: torch.Tensor, keeps: torch.Tensor,
                          metric: Metric, answers: AnswerTokens, last_only: bool) -> torch.Tensor:
    """:func:`patched_metric` on a plain residual family (no post-block norms): ``[k, batch]``."""
    k = keeps.shape[0]
    b, p = pair.clean.input_ids.shape
    dm = corrupted_acts.shape[-1]
    n_fwd = graph.n_forward
    batch = TokenizedBatch(pair.clean.input_ids.repeat(k, 1), pair.clean.attention_mask.repeat(k, 1))
    mask = pair.mask.to(corrupted_acts.dtype)                                  # [b, p]
    corr = corrupted_acts.permute(2, 0, 1, 3).contiguous()                     # [F, b, p, dm]
    gap = torch.zeros(k, n_fwd, b, p, dm, device=corr.device)                  # a_live - a_corrupt, masked
    drop = (~keeps).float()                                                    # [k, F, B]
    hooks: list[tuple[str, Callable]] = []
    for name, idx in graph.forward_hooks():
        def wh(t, *, hook, lo=idx[0], hi=idx[-1] + 1):
            vals = (t if t.dim() == 4 else t.unsqueeze(2)).float()            # [k*b, p, n, dm]
            vals = vals.reshape(k, b, p, hi - lo, dm).permute(0, 3, 1, 2, 4)
            gap[:, lo:hi] = (vals - corr[lo:hi]) * mask[:, :, None]
            return t
        hooks.append((name, wh))
    prefix = {"nu": 0, "sum": torch.zeros(b, p, dm, device=corr.device)}      # the corrupted input at nu

    def corrupt_in(nu: int) -> torch.Tensor:
        if nu < prefix["nu"]:
            prefix.update(nu=0, sum=torch.zeros_like(prefix["sum"]))
        if nu > prefix["nu"]:
            prefix["sum"] = prefix["sum"] + corr[prefix["nu"] : nu].sum(0)
            prefix["nu"] = nu
        return prefix["sum"]

    groups: dict[int, list[ReaderSlot]] = {}
    for slot in graph.reader_slots():
        if bool(drop[:, : slot.n_upstream, list(slot.indices)].any()):
            groups.setdefault(slot.n_upstream, []).append(slot)
    for nu, slots in groups.items():
        ready: dict[str, torch.Tensor] = {}
        cols = [c for sl in slots for c in sl.indices]
        d = drop[:, :nu, cols]                                                 # [k, nu, N]
        any_drop = d.amax(dim=(0, 2)) > 0
        any_keep = d.amin(dim=(0, 2)) < 1
        complement = int(any_keep.sum()) < int(any_drop.sum())
        rows = (any_keep if complement else any_drop).nonzero().squeeze(1)
        dense = len(rows) > 0.8 * nu                                           # a slice beats a gather
        coef = (1.0 - d) if complement else d
        coef = (coef if dense else coef[:, rows]).transpose(1, 2).contiguous()  # [k, N, s]

        def rh(t, *, hook, name, nu=nu, slots=slots, ready=ready, rows=rows, dense=dense, coef=coef,
               complement=complement):
            if not ready:   # the first reader of this residual point: every slot's delta at once
                src = gap[:, :nu] if dense else gap.index_select(1, rows)
                part = torch.matmul(coef, src.reshape(k, src.shape[1], b * p * dm)) if src.shape[1] else None
                if complement:
                    resid = (t[:, :, 0] if t.dim() == 4 else t).float().reshape(k, b, p, dm)
                    whole = ((resid - corrupt_in(nu)) * mask[:, :, None]).reshape(k, 1, b * p * dm)
                    part = whole if part is None else whole - part
                at = 0
                for sl in slots:
                    n = len(sl.indices)
                    dl = part.expand(k, coef.shape[1], b * p * dm)[:, at : at + n].reshape(k, n, b, p, dm)
                    dl = dl.permute(0, 2, 3, 1, 4).reshape(k * b, p, n, dm)
                    ready[sl.hook] = dl if sl.per_slot else dl[:, :, 0]
                    at += n
            delta = ready.pop(name)
            return t - delta.to(t.dtype)

        hooks += [(sl.hook, functools.partial(rh, name=sl.hook)) for sl in slots]
    # writer hooks must run before reader hooks at the same point; TL runs them in list order
    with model.hooks(fwd_hooks=hooks):
        return metric(run_logits(model, batch, last_only), pair.labels.repeat(k), answers).view(k, b)


def _patched_metric_dense(model, graph: Graph, pair: PairBatch, corrupted_acts: torch.Tensor, keeps: torch.Tensor,
                              metric: Metric, answers: AnswerTokens, last_only: bool) -> torch.Tensor:
    """:func:`patched_metric` with dense sums over every dropped writer (patched through the real norm
    where a post-block norm follows): the path of post-norm families, and on plain families the
    reference the sparse path is tested and benchmarked against."""
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
    post = graph.post_norm_hooks()
    norm_ins: dict[int, torch.Tensor] = {}
    normed: dict[int, torch.Tensor] = {}  # N(A) per layer, computed once per run
    linear = torch.ones(graph.n_forward, 1, device=drop.device)  # writers patched by plain subtraction
    for layer, name, idx in post:
        linear[idx[0] : idx[-1] + 1] = 0.0

        def nh(t, *, hook, layer=layer):
            norm_ins[layer] = t
            return t

        hooks.append((name, nh))
    for slot in graph.reader_slots():
        cols = list(slot.indices)
        nu = slot.n_upstream
        if not bool(drop[:, :nu, cols].any()):
            continue

        def rh(t, *, hook, nu=nu, cols=cols, per_slot=slot.per_slot):
            d_t = drop[:, :nu, cols].transpose(1, 2)[:, None]  # [k, 1, n, f]
            dm = live.shape[-1]
            gap = live[:, :, :nu].reshape(k, b * p, nu, dm) - corrupted_acts[:, :, :nu].reshape(1, b * p, nu, dm)
            delta = torch.matmul(d_t * linear[:nu, 0], gap)  # [k, b*p, n, dm]: sum over dropped (linear) writers
            for layer, _, idx in post:
                lo, hi = idx[0], idx[-1] + 1
                if hi > nu or not bool(d_t[..., lo:hi].any()):
                    continue
                shift = torch.matmul(d_t[..., lo:hi], gap[:, :, lo:hi])  # [k, b*p, n, dm]
                norm = post_attn_norm(model, layer)
                if layer not in normed:
                    normed[layer] = norm(norm_ins[layer]).float()
                a = norm_ins[layer].float().reshape(k, b * p, 1, dm)
                delta = delta + normed[layer].reshape(k, b * p, 1, dm) - norm((a - shift).to(norm_ins[layer].dtype)).float()
            delta = delta.reshape(k * b, p, len(cols), dm)
            if not per_slot:
                delta = delta[:, :, 0]
            return t - delta.to(t.dtype)

        hooks.append((slot.hook, rh))
    # writer hooks must run before reader hooks at the same point; TL runs them in list order
    with model.hooks(fwd_hooks=hooks):
        return metric(run_logits(model, batch, last_only), pair.labels.repeat(k), answers).view(k, b)


def patch_copies(graph: Graph, batch: int, pos: int, d_model: int, budget: int, cap: int = 64) -> int:
    """How many patched copies of a batch :func:`patched_metric` may run at once within ``budget``.

    Each copy costs its live writer buffer plus the einsum temporaries, about two
    ``[batch, pos, n_forward, d_model]`` float32 tensors.
    """
    one = buffer_bytes(graph, batch, pos, d_model, 2)
    return max(1, min(cap, budget // max(one, 1)))


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges of at most ``size`` covering ``range(n)``."""
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def input_index(graph: Graph) -> tuple[int, ...]:
    """Forward indices written by the first writer hook (the ``input`` node)."""
    return graph.forward_hooks()[0][1]


__all__ = [
    "PROBE_PROMPT",
    "WRITER_SUM_TOLERANCE",
    "WRITER_SUM_TOLERANCE_16BIT",
    "CorruptionLengthError",
    "Frozen",
    "WriterSumError",
    "check_decomposition",
    "check_writer_sum",
    "post_norm_diff",
    "writer_sum_tolerance",
    "PairBatch",
    "Record",
    "available_ram",
    "buffer_bytes",
    "chunks",
    "collect_writer_outputs",
    "decomposition_error",
    "default_budget",
    "gradient_pass",
    "input_index",
    "make_pair_batch",
    "patch_copies",
    "patched_metric",
    "run_logits",
    "score_hooks",
]
