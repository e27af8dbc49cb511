"""Export: self-contained HTML (no CDN), static SVG/PDF/PNG when kaleido and Chromium exist."""

from __future__ import annotations

import re

import plotly.graph_objects as go
import pytest

from recircuit.viz import (
    StaticExportUnavailable,
    group_scatter,
    save_figure,
    static_export_available,
    static_export_session,
)
from recircuit.viz import export as export_mod

EXTERNAL = re.compile(r"""(<script[^>]*\bsrc\s*=\s*["']?https?:|import[^;]*from\s*["']https?:|<link[^>]*href\s*=\s*["']?https?:)""", re.I)
STATIC_OK, STATIC_REASON = static_export_available()


def test_html_is_self_contained(grouping_df, tmp_path):
    path = save_figure(group_scatter(grouping_df), tmp_path / "sub" / "groups.html")
    text = path.read_text()
    assert text.lstrip().lower().startswith("<html") or "<!doctype html>" in text[:200].lower()
    assert not EXTERNAL.search(text), "the HTML loads a script from the network"
    head = text.split("<body>")[0].lower()
    assert "mathjax" not in head and "cdn.plot.ly" not in head      # (plotly.js itself names its geo CDN)
    assert "Plotly.newPlot" in text and len(text) > 1_000_000      # plotly.js inlined
    assert "a1.h2" in text                                          # the data travels with the page


def test_unknown_suffix_and_bad_static_input(grouping_df, tmp_path):
    with pytest.raises(ValueError, match=r"\.html, \.svg, \.pdf or \.png"):
        save_figure(go.Figure(), tmp_path / "x.jpeg")
    with pytest.raises(ValueError, match="Only plotly figures"):
        save_figure("<div>hi</div>", tmp_path / "x.svg")


def test_missing_backend_gives_install_advice(monkeypatch, tmp_path):
    monkeypatch.setattr(export_mod, "find_browser", lambda: None)
    ok, reason = export_mod.static_export_available()
    if "kaleido" in reason and "not installed" in reason:
        assert not ok
    else:
        assert not ok and "Chromium" in reason and "apt-get install chromium" in reason
    with pytest.raises(StaticExportUnavailable, match="pip install 'kaleido>=1'"):
        save_figure(go.Figure(), tmp_path / "x.pdf")


@pytest.mark.skipif(not STATIC_OK, reason=f"static export unavailable: {STATIC_REASON}")
def test_static_export(grouping_df, tmp_path):
    fig = group_scatter(grouping_df, {"forget": 0.1, "retain": 0.15})
    with static_export_session():
        svg = save_figure(fig, tmp_path / "g.svg").read_text()
        pdf = save_figure(fig, tmp_path / "g.pdf").read_bytes()
        png = save_figure(fig, tmp_path / "g.png").read_bytes()
    assert svg.startswith("<svg") and "a1.h2" in svg and "forget threshold" in svg
    assert 'width="317"' in svg                                     # single-column width
    assert pdf.startswith(b"%PDF")
    assert png.startswith(b"\x89PNG")
    width = int.from_bytes(png[16:20], "big")
    assert abs(width - 317 * 300 / 96) <= 2                          # ~300 dpi at 3.3 in
