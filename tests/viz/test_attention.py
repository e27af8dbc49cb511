"""circuitsvis attention patterns: inlined JavaScript only, right heads, offline display."""

from __future__ import annotations

import re

import numpy as np
import pytest

from recircuit.viz import (
    OfflineHTML,
    attention_patterns_from_arrays,
    attention_patterns_html,
    save_html,
)

EXTERNAL = re.compile(r"""(<script[^>]*\bsrc\s*=\s*["']?https?:|import[^;]*from\s*["']https?:|<link[^>]*href\s*=\s*["']?https?:)""", re.I)


def test_from_arrays_is_offline():
    pats = np.tril(np.ones((2, 3, 3))) / np.arange(1, 4)[None, :, None]
    html = attention_patterns_from_arrays(["a", "b", "c"], pats, ["a0.h1", "a1.h0"], title="Heads")
    assert isinstance(html, OfflineHTML) and html._repr_html_() == str(html)
    assert not EXTERNAL.search(html) and "unpkg.com" not in html
    assert "CircuitsVis.render" in html and '"a0.h1"' in html and "AttentionHeads" in html
    with pytest.raises(ValueError, match="patterns must be"):
        attention_patterns_from_arrays(["a", "b"], pats)
    assert len(repr(html)) < 200 and "OfflineHTML" in repr(html)    # notebooks store no second copy as text


def test_attention_figure_keeps_the_last_positions():
    from recircuit.viz import attention_figure

    rng = np.random.default_rng(0)
    pats = rng.random((2, 5, 5)).astype(np.float32)
    fig = attention_figure(list("abcde"), pats, ["a0.h1", "a1.h0"], max_tokens=3)
    assert [t.name for t in fig.data] == ["a0.h1", "a1.h0"]
    assert np.allclose(np.asarray(fig.data[1].z), pats[1, -3:, -3:])
    assert list(fig.data[0].x) == ["2:c", "3:d", "4:e"]           # absolute positions in the labels
    with pytest.raises(ValueError, match="head names"):
        attention_figure(list("abcde"), pats, ["only one"])


def test_model_heads(tiny, tmp_path):
    html = attention_patterns_html(tiny, "User likes Alpha. Will they like Beta?", heads=[(0, 1), (1, 3)])
    assert '"a0.h1"' in html and '"a1.h3"' in html and "Attention patterns of circuit heads" in html
    from recircuit.models.tokenize import encode_prompt

    tokens = encode_prompt(tiny.tokenizer, "User likes Alpha. Will they like Beta?")  # as scoring tokenizes it
    m = re.search(r'"tokens": (\[.*?\])', html)
    assert m is not None and len(__import__("json").loads(m.group(1))) == len(tokens)
    path = save_html(html, tmp_path / "attention.html")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and not EXTERNAL.search(text)
    with pytest.raises(ValueError, match="outside the model"):
        attention_patterns_html(tiny, "x", heads=[(9, 0)])

