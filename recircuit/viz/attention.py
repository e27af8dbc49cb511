"""Attention patterns of chosen heads with circuitsvis, self-contained and offline.

Usage::

    from recircuit.viz import attention_patterns_html, save_html
    html = attention_patterns_html(model, prompt, heads=[(3, 5), (7, 1)])
    html                                   # renders in Jupyter (no network access needed)
    save_html(html, "figures/attention.html")

circuitsvis renders two versions of every view: one importing its JavaScript from the unpkg CDN,
and ``local_src`` with the bundle inlined. Its own notebook display probes the internet
(``google.com``) to choose; recircuit always uses ``local_src``, so the HTML works offline and
opens without network requests. The result is an :class:`OfflineHTML` string.
"""

from __future__ import annotations

import html as _html
from collections.abc import Sequence
from typing import Any

import numpy as np
from jaxtyping import Float

from recircuit.nodes import head_name


class OfflineHTML(str):
    """An HTML string that Jupyter renders as-is (no CDN, no network probe).

    Its plain-text form is a one-line description, not the HTML itself: the inlined circuitsvis
    bundle is about 2 MB, which a notebook would otherwise store twice.
    """

    def _repr_html_(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"<OfflineHTML: {len(self) / 1e6:.1f} MB of self-contained HTML; open it in Jupyter or save_html it>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


def _local_src(rendered: Any) -> str:
    src = getattr(rendered, "local_src", None)
    if src is None:
        raise RuntimeError("This circuitsvis version gives no 'local_src' (inlined JavaScript); recircuit needs "
                           "circuitsvis>=1.43 for offline HTML. Upgrade with: pip install -U 'circuitsvis>=1.43'.")
    return src


def _checked(tokens: Sequence[str], patterns: Float[np.ndarray, "n_heads dest src"],
             head_names: Sequence[str] | None) -> tuple[Float[np.ndarray, "n_heads dest src"], list[str]]:
    """The patterns as float32 and one name per head, or a ValueError saying what does not fit."""
    pats = np.asarray(patterns, dtype=np.float32)
    if pats.ndim != 3 or pats.shape[1] != pats.shape[2] or pats.shape[1] != len(tokens):
        raise ValueError(f"patterns must be [heads, {len(tokens)}, {len(tokens)}] for {len(tokens)} tokens, "
                         f"got {list(pats.shape)}.")
    names = list(head_names) if head_names is not None else [f"head {i}" for i in range(pats.shape[0])]
    if len(names) != pats.shape[0]:
        raise ValueError(f"{len(names)} head names for {pats.shape[0]} heads.")
    return pats, names


def attention_patterns_from_arrays(tokens: Sequence[str], patterns: Float[np.ndarray, "n_heads dest src"],
                                   head_names: Sequence[str] | None = None, title: str | None = None) -> OfflineHTML:
    """Self-contained HTML of attention patterns given as arrays.

    Args:
        tokens: the prompt's tokens (length ``dest == src``).
        patterns: attention weights ``[head, query position, key position]``.
        head_names: one label per head (e.g. ``"a3.h5"``).
        title: heading above the view.
    """
    import circuitsvis as cv

    pats, names = _checked(tokens, patterns, head_names)
    rendered = cv.attention.attention_heads(attention=pats, tokens=list(tokens), attention_head_names=names)
    head = f"<h3 style=\"font-family: sans-serif\">{_html.escape(title)}</h3>\n" if title else ""
    return OfflineHTML(head + _local_src(rendered))


def attention_figure(tokens: Sequence[str], patterns: Float[np.ndarray, "n_heads dest src"],
                     head_names: Sequence[str] | None = None, title: str | None = None,
                     max_tokens: int | None = 64) -> Any:
    """The same attention patterns as a plotly figure: one heatmap per head, side by side.

    Unlike the circuitsvis view it needs no JavaScript to be read: exported as an image (or shown
    with a static renderer) it renders anywhere, e.g. in a notebook viewed on a code-hosting site.

    Args:
        tokens: the prompt's tokens (length ``dest == src``).
        patterns: attention weights ``[head, query position, key position]``.
        head_names: one label per head (e.g. ``"a3.h5"``).
        title: figure title.
        max_tokens: keep the last ``max_tokens`` positions (where the answer is read), so the
            cells stay readable; ``None`` keeps all.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pats, names = _checked(tokens, patterns, head_names)
    toks = list(tokens)
    if max_tokens is not None and len(toks) > max_tokens:
        toks, pats = toks[-max_tokens:], pats[:, -max_tokens:, -max_tokens:]
    labels = [f"{i}:{t}" for i, t in enumerate(toks, start=len(tokens) - len(toks))]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True,
                        horizontal_spacing=0.02)
    for i, name in enumerate(names):
        fig.add_trace(go.Heatmap(z=pats[i], x=labels, y=labels, coloraxis="coloraxis", name=name,
                                 hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra>" + name + "</extra>"),
                      row=1, col=i + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_yaxes(showticklabels=True, tickfont={"size": 7}, row=1, col=1)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(coloraxis={"colorscale": "Blues", "cmin": 0.0, "colorbar": {"title": "weight"}},
                      title=title or "Attention patterns (query rows, key columns)",
                      width=min(1600, 320 * len(names) + 200), height=460, margin={"l": 110})
    return fig


def attention_patterns(model: Any, prompt: str, heads: Sequence[tuple[int, int]]
                       ) -> tuple[list[str], Float[np.ndarray, "n_heads dest src"]]:
    """The prompt's tokens and the attention weights of ``heads`` on it (one forward pass).

    Raises:
        ValueError: no heads, or a head outside the model.
    """
    import torch

    if not heads:
        raise ValueError("Pass at least one (layer, head) pair in heads.")
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    for layer, h in heads:
        if not (0 <= layer < n_layers and 0 <= h < n_heads):
            raise ValueError(f"Head ({layer}, {h}) is outside the model ({n_layers} layers x {n_heads} heads).")
    from recircuit.models.tokenize import encode_prompt

    names = {f"blocks.{layer}.attn.hook_pattern" for layer, _ in heads}
    # the prompt's tokens as scoring sees them (BOS only where the tokenizer adds one), not
    # TransformerLens' string path, which prepends a BOS to every model by default
    ids = torch.tensor([encode_prompt(model.tokenizer, prompt)], device=next(model.parameters()).device)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n in names)
    tokens = [str(t) for t in model.to_str_tokens(ids[0])]
    arr = np.stack([cache[f"blocks.{layer}.attn.hook_pattern"][0, h].detach().float().cpu().numpy()
                    for layer, h in heads])
    return tokens, arr


def attention_patterns_html(model: Any, prompt: str, heads: Sequence[tuple[int, int]],
                            title: str | None = None, max_tokens: int | None = 256) -> OfflineHTML:
    """Run ``model`` on ``prompt`` and show the attention patterns of ``heads`` with circuitsvis.

    Args:
        model: a TransformerLens ``TransformerBridge`` or ``HookedTransformer`` (needs
            ``run_with_cache`` with ``blocks.{L}.attn.hook_pattern`` and ``to_str_tokens``).
        prompt: the text, e.g. a recommendation prompt.
        heads: ``(layer, head)`` pairs, e.g. the top heads of a circuit.
        title: heading above the view (default: the heads shown).
        max_tokens: keep only the last ``max_tokens`` tokens, so long prompts stay readable
            (``None``: all).

    Returns:
        Self-contained HTML (an :class:`OfflineHTML` string; see :func:`save_html`).
    """
    tokens, arr = attention_patterns(model, prompt, heads)
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens, arr = tokens[-max_tokens:], arr[:, -max_tokens:, -max_tokens:]
    labels = [head_name(layer, h) for layer, h in heads]
    return attention_patterns_from_arrays(tokens, arr, labels,
                                          title or "Attention patterns of circuit heads: " + ", ".join(labels))
