"""Paper sizes and the fixed, colour-blind-safe group colours."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from recircuit.viz import style


def test_group_colours_are_fixed_okabe_ito_and_distinct():
    assert style.GROUP_COLORS["forget_specific"] == "#D55E00"
    assert style.GROUP_COLORS["retain_specific"] == "#0072B2"
    assert style.GROUP_COLORS["task_shared"] == "#009E73"
    assert len(set(style.GROUP_COLORS.values())) == 4
    assert set(style.GROUP_COLORS) == set(style.GROUP_ORDER) == set(style.GROUP_SYMBOLS) == set(style.GROUP_LABELS)
    assert set(style.GROUP_COLORS.values()) - {style.GREY} <= set(style.OKABE_ITO.values())
    assert len(set(style.GROUP_SYMBOLS.values())) == 4  # groups stay apart in greyscale


def test_paper_sizes_in_pixels():
    fig = style.apply_paper_style(go.Figure(), "single", height_in=2.5)
    assert fig.layout.width == round(3.3 * 96) and fig.layout.height == 240
    assert fig.layout.font.size == pytest.approx(9 * 96 / 72)
    fig = style.apply_paper_style(go.Figure(), "double")
    assert fig.layout.width == 672
    with pytest.raises(ValueError, match="single"):
        style.apply_paper_style(go.Figure(), "triple")


def test_method_colours():
    assert style.method_color("CURE") == style.METHOD_COLORS["cure"]
    assert style.method_color("Random-Groups") == style.METHOD_COLORS["random_groups"]
    assert style.method_color("MyNewMethod", 2) == style.PALETTE[2]


def test_every_method_of_the_validity_study_has_its_own_colour():
    study = ["original", "retrain", "cure", "cure-random", "cure:today", "ga", "graddiff", "npo", "pcgrad", "e2urec",
             "clue", "clue-random"]
    colours = [style.method_color(m, i) for i, m in enumerate(study)]
    assert len(set(colours)) == len(study)
