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


def test_model_heads(tiny, tmp_path):
    html = attention_patterns_html(tiny, "User likes Alpha. Will they like Beta?", heads=[(0, 1), (1, 3)])
    assert '"a0.h1"' in html and '"a1.h3"' in html and "Attention patterns of circuit heads" in html
    tokens = [str(t) for t in tiny.to_str_tokens("User likes Alpha. Will they like Beta?")]
    m = re.search(r'"tokens": (\[.*?\])', html)
    assert m is not None and len(__import__("json").loads(m.group(1))) == len(tokens)
    path = save_html(html, tmp_path / "attention.html")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and not EXTERNAL.search(text)
    with pytest.raises(ValueError, match="outside the model"):
        attention_patterns_html(tiny, "x", heads=[(9, 0)])

