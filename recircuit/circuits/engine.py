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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int

from recircuit.circuits.graph import Graph
from recircuit.circuits.metrics import Metric
from recircuit.data.prompts import Sample
from recircuit.models.scoring import AnswerTokens, TokenizedBatch, tokenize_prompts


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


def _last_position(t: Float[torch.Tensor, "batch pos d_model"], *, hook) -> Float[torch.Tensor, "batch 1 d_model"]:
    return t[:, -1:]


def run_logits(model, batch: TokenizedBatch, last_only: bool = True) -> Float[torch.Tensor, "batch pos vocab"]:
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
        logits = run_logits(model, batch, last_only)
    return out, logits


@torch.no_grad()
def decomposition_error(model, graph: Graph, batch: TokenizedBatch) -> dict[str, float]:
    """How far each reader's input is from the sum of its upstream writers, on real activations.

    The graph's decomposition says a reader hook's input (every slot of a per-head reader) equals
    the sum of the outputs of forward nodes ``[:n_upstream]``. Returns, per reader hook, the
    largest absolute miss over real positions divided by the largest absolute input there (0 for
    a model the graph describes exactly; about 1e-7 in float32).
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

    def reader(name: str):
        def hook(t, *, hook):
            seen[name] = t.detach().float().clone()
            return t

        return hook

    slots = graph.reader_slots()
    hooks = [(name, writer(idx)) for name, idx in graph.forward_hooks()] + [(s.hook, reader(s.hook)) for s in slots]
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


def score_hooks(
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
    hooks += score_hooks(graph, diff, scores, weight)
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        m = metric(run_logits(model, batch, last_only), labels, answers)
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
        m = metric(run_logits(model, batch, last_only), pair.labels.repeat(k), answers).view(k, b)
    return m[0] if single else m


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
    "CorruptionLengthError",
    "Frozen",
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
