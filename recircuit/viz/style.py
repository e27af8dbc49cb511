"""Shared look of every recircuit figure: paper sizes, font, colour-blind-safe colours.

Usage::

    from recircuit.viz.style import GROUP_COLORS, apply_paper_style, PALETTE
    fig = apply_paper_style(fig, column="single", height_in=2.4)   # 3.3 in wide, 9 pt type
    GROUP_COLORS["forget_specific"]                                # "#D55E00" (Okabe-Ito vermillion)

**Sizes.** Two-column papers (ACL, NeurIPS, ICML, IEEE) have a column of about 3.3 in and a
text width of about 7 in. Plotly measures figures in CSS pixels (96 per inch), which static
export keeps for SVG and PDF, so a single-column figure is ``3.3 * 96 = 317`` px wide and its
9 pt type is 12 px. PNG export uses ``scale=PNG_SCALE`` for about 300 dpi.

**Colours.** Categories use the Okabe-Ito palette (Okabe & Ito 2008), which stays distinct under
the common colour-vision deficiencies and in greyscale together with the marker shapes of
:data:`GROUP_SYMBOLS`. Heatmaps use Cividis (sequential, colour-blind-safe) and a red-blue
diverging scale centred on zero for signed values.
"""

from __future__ import annotations

from typing import Literal

import plotly.graph_objects as go

#: Okabe-Ito colour-blind-safe palette, in its usual order.
OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

#: Categorical colour cycle (yellow last: it is hard to see on white).
PALETTE: list[str] = [OKABE_ITO[k] for k in
                      ("blue", "vermillion", "bluish_green", "orange", "reddish_purple", "sky_blue", "black", "yellow")]

#: Neutral grey for "nothing special" (frozen modules, input/logits nodes).
GREY = "#9E9E9E"

#: CURE's module groups, in display order.
GROUP_ORDER: tuple[str, ...] = ("forget_specific", "retain_specific", "task_shared", "frozen")

#: Fixed colour per group, the same in every figure.
GROUP_COLORS: dict[str, str] = {
    "forget_specific": OKABE_ITO["vermillion"],
    "retain_specific": OKABE_ITO["blue"],
    "task_shared": OKABE_ITO["bluish_green"],
    "frozen": GREY,
}

#: Marker shape per group, so groups stay apart in greyscale print.
GROUP_SYMBOLS: dict[str, str] = {
    "forget_specific": "triangle-up",
    "retain_specific": "square",
    "task_shared": "diamond",
    "frozen": "circle-open",
}

#: Words a reader understands, per group.
GROUP_LABELS: dict[str, str] = {
    "forget_specific": "forget-specific",
    "retain_specific": "retain-specific",
    "task_shared": "task-shared",
    "frozen": "frozen",
}

#: Fixed colours for the unlearning methods of the benchmark (others cycle through PALETTE).
METHOD_COLORS: dict[str, str] = {
    "cure": OKABE_ITO["vermillion"],
    "retrain": OKABE_ITO["black"],
    "original": GREY,
    "ga": OKABE_ITO["orange"],
    "graddiff": OKABE_ITO["sky_blue"],
    "npo": OKABE_ITO["blue"],
    "pcgrad": OKABE_ITO["bluish_green"],
    "e2urec": OKABE_ITO["reddish_purple"],
    "random_groups": OKABE_ITO["yellow"],
    "cure_random": OKABE_ITO["yellow"],
    # beyond Okabe-Ito's eight: Paul Tol's colour-blind-safe muted set, so that every method of
    # the validity study (CURE, its variant and control, five baselines, CLUE and its control)
    # has its own colour
    "cure:today": "#882255",
    "clue": "#117733",
    "clue_random": "#999933",
}

#: Sequential colour scale (colour-blind-safe, monotone in lightness).
SEQUENTIAL = "Cividis"
#: Diverging colour scale for signed values (blue negative, red positive); use with zmid=0.
DIVERGING = "RdBu_r"

FONT_FAMILY = "Arial, Helvetica, Liberation Sans, DejaVu Sans, sans-serif"
FONT_SIZE_PT = 9
PX_PER_IN = 96
PX_PER_PT = PX_PER_IN / 72
#: Column widths in inches of a two-column paper.
COLUMN_WIDTH_IN: dict[str, float] = {"single": 3.3, "double": 7.0}
#: PNG scale factor: 96 px/in * 3.125 = 300 dpi.
PNG_SCALE = 300 / PX_PER_IN

Column = Literal["single", "double"]


def inches(x: float) -> int:
    """CSS pixels for a length in inches."""
    return int(round(x * PX_PER_IN))


def method_color(method: str, index: int = 0) -> str:
    """Colour of an unlearning method: fixed for known names, else ``PALETTE[index]``."""
    key = method.lower().replace("-", "_").replace(" ", "_")
    return METHOD_COLORS.get(key, PALETTE[index % len(PALETTE)])


def apply_paper_style(fig: go.Figure, column: Column | int = "double", height_in: float | None = None,
                      font_pt: float = FONT_SIZE_PT) -> go.Figure:
    """Set the paper size, font and a clean white background on ``fig`` (in place, also returned).

    Args:
        fig: the figure.
        column: ``"single"`` (3.3 in), ``"double"`` (7 in) or a width in pixels.
        height_in: height in inches (default: 0.75 of the width for single, 0.4 for double).
        font_pt: base font size in points.
    """
    if isinstance(column, str):
        if column not in COLUMN_WIDTH_IN:
            raise ValueError(f"column must be 'single' or 'double' (or a width in px), got {column!r}")
        width_in = COLUMN_WIDTH_IN[column]
    else:
        width_in = column / PX_PER_IN
    if height_in is None:
        height_in = width_in * (0.75 if width_in < 5 else 0.4)
    size = font_pt * PX_PER_PT
    fig.update_layout(
        width=inches(width_in), height=inches(height_in),
        font={"family": FONT_FAMILY, "size": size, "color": "#222222"},
        title={"font": {"size": size * 1.1}, "x": 0.5, "xanchor": "center"},
        paper_bgcolor="white", plot_bgcolor="white",
        margin={"l": 50, "r": 20, "t": 40, "b": 45},
        legend={"font": {"size": size * 0.9}},
        hoverlabel={"font": {"family": FONT_FAMILY}},
    )
    fig.update_xaxes(showline=True, linecolor="#444444", ticks="outside", gridcolor="#EEEEEE", zeroline=False)
    fig.update_yaxes(showline=True, linecolor="#444444", ticks="outside", gridcolor="#EEEEEE", zeroline=False)
    return fig


def legend_below(fig: go.Figure, n_rows: int = 1, axis_title: bool = True, columns: int | None = None) -> go.Figure:
    """Put a horizontal legend at the bottom of the figure, below the x-axis title, without overlap.

    Args:
        fig: the figure (changed in place, also returned).
        n_rows: legend rows to reserve space for.
        axis_title: whether an x-axis title sits between the plot and the legend.
        columns: legend entries per row (fixed entry width), or ``None`` for plotly's flow.
    """
    row_px = 1.6 * FONT_SIZE_PT * PX_PER_PT
    legend = {"orientation": "h", "yref": "container", "y": 0.0, "yanchor": "bottom", "x": 0.5, "xanchor": "center",
              "tracegroupgap": 0}
    if columns:
        legend.update(entrywidth=1.0 / columns, entrywidthmode="fraction")
    fig.update_layout(legend=legend, margin={"b": int(round((60 if axis_title else 30) + row_px * n_rows))})
    return fig
