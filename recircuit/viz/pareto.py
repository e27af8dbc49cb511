"""Forget/retain Pareto fronts per deletion rate, relearning-attack curves and group Jaccard tables.

Usage::

    import pandas as pd
    from recircuit.viz.pareto import jaccard_table, pareto_figure, pareto_front, relearn_figure
    rows = pd.DataFrame(report.rows)          # one row per (method, rate, seed) with the metrics
    fig = pareto_figure(rows)                                  # forget JSD to Retrain vs test AUC
    fig = pareto_figure(rows, x="mia_gap_to_retrain")          # MIA gap to Retrain vs test AUC
    pareto_front([[0.1, 0.7], [0.2, 0.6], [0.0, 0.5]])         # [2, 0]: both non-dominated
    fig = relearn_figure({"cure": {"steps": [0, 10, 20], "loss": [[2.1, 1.4, 0.9], [2.0, 1.5, 1.0]]},
                          "retrain": {"steps": [0, 10, 20], "loss": [2.2, 1.7, 1.3]}})
    table = jaccard_table({"cure, rate 5%": {"forget_specific": 0.8, "retain_specific": 0.7}})
    fig = jaccard_figure(table)

**Pareto figure.** One panel per deletion rate. Every method is a point at the mean over seeds
of (x, y) with error bars of one standard deviation over seeds in both axes (numpy's ``std``,
``ddof=0``, as :class:`~recircuit.evaluate.report.UnlearningReport` reports it); the legend
title and each point's hover text say so. x is a distance to Retrain (forget JSD, or the MIA gap
to Retrain), so lower is better and Retrain itself sits at x = 0 by definition; it is the
reference, drawn as a black diamond, and never takes part in the front. The methods whose means
no other method beats on both axes are joined by a dashed line. A method with fewer than
``min_seeds`` (3) seeds at a rate is named in a note inside that panel.

**Relearning attack.** After unlearning, each model is fine-tuned on one half of the forget set
and its loss on the other, held-out half is tracked. A method that only hid the data sees that
loss fall faster than Retrain's (which never learned it); Retrain is the dashed reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots

from recircuit.errors import InputError
from recircuit.viz.style import (
    GREY,
    GROUP_LABELS,
    GROUP_ORDER,
    METHOD_COLORS,
    OKABE_ITO,
    PALETTE,
    SEQUENTIAL,
    Column,
    apply_paper_style,
    legend_below,
)

#: Words for the metric columns of a report, as axis titles use them.
METRIC_WORDS: dict[str, str] = {
    "forget_jsd": "forget JSD to Retrain",
    "test_jsd": "test JSD to Retrain",
    "mia_gap_to_retrain": "MIA gap to Retrain",
    "mia_auc": "MIA AUC",
    "test_auc": "test AUC",
    "forget_auc": "forget-set AUC",
    "test_acc": "test accuracy",
    "forget_loss": "forget-set loss",
}

#: Values of Retrain's own x (a distance to Retrain) above this are refused as inconsistent.
REFERENCE_TOL = 1e-6


def pareto_front(points: Float[np.ndarray, "n 2"], minimize: Sequence[bool] = (True, False)) -> list[int]:
    """Indices of the non-dominated points (pure numpy).

    Point ``j`` dominates point ``i`` when it is at least as good in both coordinates and
    strictly better in one (``minimize[k]`` says whether lower is better in coordinate ``k``;
    by default the first is minimized and the second maximized). Equal points do not dominate
    each other, so duplicates on the front are all returned. Rows with a NaN or infinite value
    are never on the front and dominate nothing.

    Args:
        points: ``[n, 2]`` array of coordinates.
        minimize: per coordinate, whether lower is better.

    Returns:
        The indices of the front, ordered along it: by the first coordinate, best first, then by
        the second, best first (then by index).

    Raises:
        InputError: ``points`` is not ``[n, 2]`` or ``minimize`` has not two entries.
    """
    pts = np.asarray(points, dtype=float)
    if pts.size == 0:
        return []
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise InputError(f"expected an [n, 2] array of points, got shape {pts.shape}", field="points",
                         fix="stack the two coordinates as columns, e.g. np.c_[x, y]")
    if len(minimize) != 2:
        raise InputError(f"needs one direction per coordinate (2), got {len(minimize)}", field="minimize",
                         fix="pass e.g. (True, False): minimize x, maximize y")
    s = pts * np.where(np.asarray(minimize, dtype=bool), 1.0, -1.0)       # every coordinate minimized
    finite = np.isfinite(s).all(axis=1)
    no_worse = (s[:, None, :] <= s[None, :, :]).all(axis=-1)              # [j, i]: j no worse than i
    better = (s[:, None, :] < s[None, :, :]).any(axis=-1)                 # [j, i]: j better somewhere
    dominated = (no_worse & better & finite[:, None]).any(axis=0)
    idx = np.flatnonzero(finite & ~dominated)
    order = np.lexsort((idx, s[idx, 1], s[idx, 0]))
    return [int(i) for i in idx[order]]


def _frame(rows: Any, name: str) -> pd.DataFrame:
    """A DataFrame from a DataFrame, a list of dicts, a dict of lists or an object with ``.rows``."""
    if hasattr(rows, "rows") and not isinstance(rows, pd.DataFrame):
        rows = rows.rows
    if isinstance(rows, pd.DataFrame):
        return rows
    try:
        return pd.DataFrame(rows)
    except (TypeError, ValueError) as e:
        raise InputError(f"expected a table (DataFrame or list of row dicts), got {type(rows).__name__}: {e}",
                         field=name, fix="pass pd.DataFrame(report.rows)") from e


def _require(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in dict.fromkeys(cols) if c not in df.columns]
    if missing:
        raise InputError(f"{what} has no column {missing[0]!r} (missing {missing}; it has {list(df.columns)})",
                         field=missing[0], fix=f"add the column or pass the name of the one that holds it "
                                               f"({', '.join(repr(c) for c in cols)} are needed)")


def _numeric(df: pd.DataFrame, col: str) -> pd.Series:
    try:
        return pd.to_numeric(df[col], errors="raise").astype(float)
    except (TypeError, ValueError) as e:
        raise InputError(f"column {col!r} must hold numbers: {e}", field=col,
                         fix="store the metric as a float (NaN where it was not measured)") from e


def _norm(name: str) -> str:
    return str(name).lower().replace("-", "_").replace(" ", "_")


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method: the house colours for known names, unused palette colours for the rest."""
    out = {m: METHOD_COLORS[_norm(m)] for m in methods if _norm(m) in METHOD_COLORS}
    free = [c for c in PALETTE if c not in out.values()] or PALETTE
    k = 0
    for m in methods:
        if m not in out:
            out[m] = free[k % len(free)]
            k += 1
    return out


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def rate_label(rate: Any) -> str:
    """``0.05`` -> ``"5%"``, ``20`` -> ``"20%"``, strings unchanged."""
    if isinstance(rate, int | float | np.integer | np.floating) and not isinstance(rate, bool):
        r = float(rate)
        return f"{100 * r:g}%" if 0 < r <= 1 else f"{r:g}%"
    return str(rate)


def _axis_words(col: str, lower_better: bool, label: str | None) -> str:
    if label:
        return label
    word = METRIC_WORDS.get(col, col.replace("_", " "))
    return f"{word} ({'lower' if lower_better else 'higher'} is better)"


def pareto_summary(rows: pd.DataFrame | Sequence[Mapping], x: str = "forget_jsd", y: str = "test_auc",
                   method_col: str = "method", rate_col: str = "rate", seed_col: str = "seed",
                   reference: str | None = "retrain") -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``x`` and ``y`` per (rate, method).

    Seeds where ``x`` or ``y`` is NaN are left out (``n_seeds`` counts the rest). The reference
    method's x is a distance to itself: its NaNs count as 0, and a non-zero value is refused.

    Args:
        rows: one row per (method, rate, seed), e.g. ``pd.DataFrame(report.rows)`` (an object
            with ``.rows`` is accepted too).
        x, y: the metric columns.
        method_col, rate_col, seed_col: the key columns.
        reference: the reference method (case-insensitive), or ``None``.

    Returns:
        Columns ``rate, method, x_mean, x_std, y_mean, y_std, n_seeds, seeds, is_reference``
        (std is ``np.std``, ``ddof=0``), rates in ascending order when numeric, methods in order
        of first appearance.

    Raises:
        InputError: a missing or non-numeric column, two rows for one (method, rate, seed), or a
            reference whose x is not 0.
    """
    df = _frame(rows, "rows")
    _require(df, (method_col, rate_col, seed_col, x, y), "the results table")
    df = df[[method_col, rate_col, seed_col]].assign(_x=_numeric(df, x), _y=_numeric(df, y))
    df[method_col] = df[method_col].astype(str)
    dup = df.duplicated([method_col, rate_col, seed_col], keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        raise InputError(f"{int(dup.sum())} rows share a (method, rate, seed), e.g. method {first[method_col]!r} "
                         f"rate {first[rate_col]!r} seed {first[seed_col]!r}", field=seed_col,
                         fix="keep one row per method, rate and seed")
    ref = df[method_col].map(_norm) == _norm(reference) if reference is not None else pd.Series(False, index=df.index)
    bad = ref & df["_x"].notna() & (df["_x"].abs() > REFERENCE_TOL)
    if bad.any():
        raise InputError(f"{x!r} is a distance to {reference}, so {reference}'s own value must be 0, got "
                         f"{df.loc[bad, '_x'].tolist()}", field=x,
                         fix=f"set {reference}'s {x} to 0 (or NaN), or pass reference=None")
    df.loc[ref, "_x"] = df.loc[ref, "_x"].fillna(0.0)
    rates = list(dict.fromkeys(df[rate_col]))
    try:
        rates = sorted(rates, key=float)
    except (TypeError, ValueError):
        pass
    methods = list(dict.fromkeys(df[method_col]))
    out = []
    for rate in rates:
        at = df[df[rate_col] == rate]
        for m in methods:
            sub = at[at[method_col] == m]
            if not len(sub):
                continue
            ok = sub[sub["_x"].notna() & sub["_y"].notna()]
            xs, ys = ok["_x"].to_numpy(), ok["_y"].to_numpy()
            out.append({"rate": rate, "method": m,
                        "x_mean": float(xs.mean()) if len(ok) else math.nan,
                        "x_std": float(np.std(xs)) if len(ok) else math.nan,
                        "y_mean": float(ys.mean()) if len(ok) else math.nan,
                        "y_std": float(np.std(ys)) if len(ok) else math.nan,
                        "n_seeds": int(len(ok)), "seeds": ok[seed_col].tolist(),
                        "is_reference": bool(reference is not None and _norm(m) == _norm(reference))})
    return pd.DataFrame(out, columns=["rate", "method", "x_mean", "x_std", "y_mean", "y_std", "n_seeds", "seeds",
                                      "is_reference"])


def pareto_figure(rows: pd.DataFrame | Sequence[Mapping], x: str = "forget_jsd", y: str = "test_auc",
                  method_col: str = "method", rate_col: str = "rate", seed_col: str = "seed",
                  reference: str | None = "retrain", title: str | None = None, min_seeds: int = 3,
                  exclude_from_front: Sequence[str] = (), x_label: str | None = None, y_label: str | None = None,
                  column: Column = "double") -> go.Figure:
    """Forget-utility Pareto fronts, one panel per deletion rate, mean ± std over seeds per method.

    Args:
        rows: one row per (method, rate, seed) with the metric columns, e.g.
            ``pd.DataFrame(report.rows)``; an object with ``.rows`` works too.
        x: a distance to Retrain, lower is better: ``"forget_jsd"`` or ``"mia_gap_to_retrain"``.
        y: a utility, higher is better (``"test_auc"``).
        method_col, rate_col, seed_col: the key columns.
        reference: the method every x is measured against (drawn at x = 0, never on the front),
            or ``None``.
        title: figure title.
        min_seeds: a method with fewer seeds than this at a rate is named in a note in its panel.
        exclude_from_front: further methods to draw but leave out of the front (case-insensitive).
        x_label, y_label: axis titles (default: the metric in words and which way is better).
        column: paper width.

    Returns:
        Per panel (rate, in ascending order), one marker trace per method with ``error_x`` and
        ``error_y`` (one std over seeds, ``ddof=0``; hidden for a single seed) and ``meta``
        ``{"role": "method" | "reference", "method", "rate", "n_seeds", "x_mean", "x_std",
        "y_mean", "y_std"}``, then one dashed line trace with ``meta`` ``{"role": "front",
        "rate", "pareto_front": [methods along the front]}``. Notes about too few seeds are
        annotations named ``"few_seeds"`` and are listed in ``fig.layout.meta["notes"]``.

    Raises:
        InputError: a missing or non-numeric column, duplicate rows, a reference whose x is not 0,
            or no rows.
    """
    summ = pareto_summary(rows, x, y, method_col, rate_col, seed_col, reference)
    if not len(summ):
        raise InputError("the results table has no rows", field="rows", fix="pass one row per method, rate and seed")
    rates = list(dict.fromkeys(summ["rate"]))
    methods = list(dict.fromkeys(summ["method"]))
    colours = method_colors(methods)
    skip = {_norm(m) for m in exclude_from_front}
    xw, yw = _axis_words(x, True, x_label), _axis_words(y, False, y_label)
    fig = make_subplots(rows=1, cols=len(rates), shared_yaxes=True, horizontal_spacing=0.05 if len(rates) > 1 else 0.1,
                        subplot_titles=[f"deletion rate {rate_label(r)}" for r in rates], x_title=xw)
    seen: set[str] = set()
    notes: list[str] = []
    front_in_legend = False
    for c, rate in enumerate(rates, start=1):
        at = summ[summ["rate"] == rate].reset_index(drop=True)
        for row in at.itertuples(index=False):
            m, n = row.method, row.n_seeds
            if n == 0:
                continue
            colour = colours[m]
            is_ref, is_cure = row.is_reference, _norm(m) == "cure"
            label = f"{m} (reference, x = 0)" if is_ref else m
            bars = n > 1
            fig.add_trace(go.Scatter(
                x=[row.x_mean], y=[row.y_mean], mode="markers", name=label, legendgroup=m,
                showlegend=m not in seen,
                meta={"role": "reference" if is_ref else "method", "method": m, "rate": rate, "n_seeds": n,
                      "x_mean": row.x_mean, "x_std": row.x_std, "y_mean": row.y_mean, "y_std": row.y_std},
                error_x={"type": "data", "array": [row.x_std], "visible": bars and not is_ref, "thickness": 1,
                         "width": 3, "color": colour},
                error_y={"type": "data", "array": [row.y_std], "visible": bars, "thickness": 1, "width": 3,
                         "color": colour},
                marker={"color": colour, "size": 10 if (is_cure or is_ref) else 8,
                        "symbol": "diamond" if is_ref else ("star" if is_cure else "circle"),
                        "line": {"width": 0.5, "color": "white"}},
                hovertemplate=(f"<b>{label}</b>, deletion rate {rate_label(rate)}<br>{xw}: %{{x:.4f}} ± {row.x_std:.4f}"
                               f"<br>{yw}: %{{y:.4f}} ± {row.y_std:.4f}<br>mean ± std over {n} seed"
                               f"{'s' if n != 1 else ''}<extra></extra>"),
            ), row=1, col=c)
            seen.add(m)
        cand = at[~at["is_reference"] & (at["n_seeds"] > 0) & ~at["method"].map(_norm).isin(skip)].reset_index(drop=True)
        if len(cand):
            front = pareto_front(cand[["x_mean", "y_mean"]].to_numpy(), (True, False))
            fig.add_trace(go.Scatter(
                x=cand["x_mean"].to_numpy()[front], y=cand["y_mean"].to_numpy()[front], mode="lines",
                name="Pareto front (non-dominated means)", legendgroup="pareto_front", showlegend=not front_in_legend,
                line={"color": GREY, "dash": "dash", "width": 1}, hoverinfo="skip",
                meta={"role": "front", "rate": rate, "pareto_front": [str(cand["method"].iloc[i]) for i in front]},
            ), row=1, col=c)
            front_in_legend = True
        few = at[at["n_seeds"] < min_seeds]
        if len(few):
            parts = [f"{m} ({n})" for m, n in zip(few["method"], few["n_seeds"])]
            text = f"fewer than {min_seeds} seeds: " + ", ".join(parts)
            notes.append(f"deletion rate {rate_label(rate)}: {text}")
            counts = set(few["n_seeds"])
            if len(few) == len(at) and len(counts) == 1:      # every method alike: say it once, in short
                n = counts.pop()
                text = f"{n} seed{'' if n == 1 else 's'} per method (fewer than {min_seeds})"
            suffix = "" if c == 1 else str(c)
            fig.add_annotation(text="<br>".join(_wrap(text, 28)), name="few_seeds", showarrow=False, align="left",
                               xref=f"x{suffix} domain", yref=f"y{suffix} domain", x=0.02, y=0.02, xanchor="left",
                               yanchor="bottom", font={"size": 9, "color": OKABE_ITO["vermillion"]},
                               bgcolor="rgba(255,255,255,0)")       # no box over the points
    apply_paper_style(fig, column, height_in=3.0)
    fig.update_layout(title={"text": title or f"{METRIC_WORDS.get(x, x)} against {METRIC_WORDS.get(y, y)}, "
                                              f"per deletion rate"},
                      meta={"notes": notes, "x": x, "y": y, "error_bars": "std over seeds (ddof=0)"},
                      legend={"title": {"text": "mean ± std over seeds:"}})
    fig.update_yaxes(title_text=yw, row=1, col=1)
    n_entries = sum(1 for t in fig.data if t.showlegend is not False)
    ncol = min(n_entries, 4)
    legend_below(fig, n_rows=math.ceil(n_entries / ncol) + 1, axis_title=True, columns=ncol)
    size = fig.layout.font.size
    for a in fig.layout.annotations:                 # make_subplots' titles: the house font size
        if a.name == "few_seeds":
            continue
        a.update(font={"size": size})
        if a.text == xw:                             # the shared x title sits under the tick labels
            a.update(yshift=-28)
    fig.update_layout(margin={"t": 60})
    return fig


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [text]


def _curves(curves: Mapping[str, Mapping] | pd.DataFrame, method_col: str, step_col: str, loss_col: str,
            seed_col: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """method -> (steps [n], losses [seeds, n]) from a dict or a long DataFrame."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if isinstance(curves, pd.DataFrame):
        _require(curves, (method_col, step_col, loss_col), "the relearning table")
        df = curves.assign(_loss=_numeric(curves, loss_col), _step=_numeric(curves, step_col))
        df[method_col] = df[method_col].astype(str)
        keys = [method_col, seed_col, step_col] if seed_col in df.columns else [method_col, step_col]
        if df.duplicated(keys).any():
            raise InputError(f"two rows share a ({', '.join(keys)})", field=step_col,
                             fix="keep one loss per method, seed and step")
        for m in dict.fromkeys(df[method_col]):
            sub = df[df[method_col] == m]
            if seed_col in df.columns:
                wide = sub.pivot(index=seed_col, columns="_step", values="_loss").sort_index(axis=1)
            else:
                wide = sub.set_index("_step")["_loss"].sort_index().to_frame().T
            if wide.isna().to_numpy().any():
                raise InputError(f"the seeds of method {m!r} cover different relearning steps (or hold NaN)",
                                 field=step_col, fix="record the loss at the same steps for every seed")
            out[m] = (wide.columns.to_numpy(dtype=float), wide.to_numpy(dtype=float))
        return out
    if not isinstance(curves, Mapping):
        raise InputError(f"expected method -> {{'steps', 'loss'}} or a DataFrame, got {type(curves).__name__}",
                         field="curves", fix="pass {'cure': {'steps': [...], 'loss': [[seed 0 ...], ...]}}")
    for m, val in curves.items():
        if not isinstance(val, Mapping) or "steps" not in val or not ({"loss", "losses"} & set(val)):
            raise InputError(f"method {m!r} needs 'steps' and 'loss'", field=f"curves[{m!r}]",
                             fix="give 'steps' [n] and 'loss' [n] or [seeds, n]")
        steps = np.asarray(val["steps"], dtype=float)
        loss = np.asarray(val.get("loss", val.get("losses")), dtype=float)
        loss = loss[None, :] if loss.ndim == 1 else loss
        if steps.ndim != 1 or loss.ndim != 2 or loss.shape[1] != len(steps) or not len(steps):
            raise InputError(f"method {m!r}: steps {steps.shape} and loss {loss.shape} do not match",
                             field=f"curves[{m!r}]", fix="loss must be [n] or [seeds, n] for n steps")
        order = np.argsort(steps, kind="stable")
        out[str(m)] = (steps[order], loss[:, order])
    return out


def relearn_figure(curves: Mapping[str, Mapping] | pd.DataFrame, reference: str | None = "retrain",
                   method_col: str = "method", step_col: str = "step", loss_col: str = "loss", seed_col: str = "seed",
                   column: Column | None = None, title: str | None = None) -> go.Figure:
    """Relearning attack: loss on the held-out half of the forget set against relearning step, per method.

    Args:
        curves: method -> ``{"steps": [n], "loss": [n] or [seeds, n]}``, or a long DataFrame with
            ``method``, ``step``, ``loss`` and optionally ``seed`` columns.
        reference: the method drawn dashed as the reference (Retrain), or ``None``.
        method_col, step_col, loss_col, seed_col: column names for a DataFrame.
        column: paper width (default: single column for up to 6 methods, else double, so that a
            whole study's legend fits beside readable curves).
        title: figure title.

    Returns:
        Per method, a band trace (mean ± std over seeds, ``ddof=0``; only with several seeds,
        ``meta`` ``{"role": "band", ...}``) and a line of the mean (``meta`` ``{"role": "mean",
        "method", "n_seeds", "std"}``); the reference's line is dashed.

    Raises:
        InputError: a missing column, mismatched shapes, or seeds that cover different steps.
    """
    data = _curves(curves, method_col, step_col, loss_col, seed_col)
    if not data:
        raise InputError("no relearning curves given", field="curves", fix="pass at least one method")
    colours = method_colors(list(data))
    fig = go.Figure()
    for m, (steps, loss) in data.items():
        colour, k = colours[m], loss.shape[0]
        is_ref = reference is not None and _norm(m) == _norm(reference)
        mean, std = loss.mean(axis=0), loss.std(axis=0)
        if k > 1:
            fig.add_trace(go.Scatter(
                x=np.r_[steps, steps[::-1]], y=np.r_[mean + std, (mean - std)[::-1]], mode="lines", fill="toself",
                fillcolor=_rgba(colour, 0.18), line={"width": 0}, hoverinfo="skip", showlegend=False,
                legendgroup=m, name=f"{m} ± std", meta={"role": "band", "method": m, "n_seeds": k}))
        fig.add_trace(go.Scatter(
            x=steps, y=mean, mode="lines+markers" if len(steps) <= 12 else "lines", legendgroup=m,
            name=f"{m} (reference)" if is_ref else m,
            line={"color": colour, "width": 1.5, "dash": "dash" if is_ref else "solid"}, marker={"size": 4},
            customdata=std, meta={"role": "mean", "method": m, "n_seeds": k, "std": std.tolist()},
            hovertemplate=(f"<b>{m}</b><br>step %{{x:g}}<br>held-out forget loss %{{y:.4f}} ± %{{customdata:.4f}}"
                           f"<br>mean ± std over {k} seed{'s' if k != 1 else ''}<extra></extra>")))
    column = column or ("single" if len(data) <= 6 else "double")
    apply_paper_style(fig, column, height_in=2.8)
    fig.update_layout(title={"text": title or "Relearning attack (Retrain dashed)"},
                      legend={"title": {"text": "mean ± std over seeds:"}})
    fig.update_xaxes(title_text="relearning step")
    fig.update_yaxes(title_text="held-out forget loss")
    n_entries = len(data) + 1
    per_row = 3 if column == "single" else 5
    legend_below(fig, n_rows=math.ceil(n_entries / per_row), columns=per_row)
    return fig


def jaccard_table(values: Mapping[str, Mapping[str, float]], wide: bool = False) -> pd.DataFrame:
    """Group Jaccard values as a tidy table for the report.

    Args:
        values: comparison -> group -> Jaccard in [0, 1], e.g. ``{"cure, rate 5%":
            grouping_jaccard(groupings)}``. Flatten the pipeline's method -> rate -> group
            nesting first (see the error's fix).
        wide: one row per comparison and one column per group instead of the long form.

    Returns:
        Long form: columns ``comparison, group, group_label, jaccard``, comparisons in the given
        order and groups in the house order (forget-specific, retain-specific, task-shared,
        frozen, then others). Wide form: index ``comparison``, one column per group key.

    Raises:
        InputError: a value that is not a number in [0, 1].
    """
    if not isinstance(values, Mapping):
        raise InputError(f"expected comparison -> group -> Jaccard, got {type(values).__name__}", field="values",
                         fix="pass a dict of dicts")
    rows = []
    for comp, groups in values.items():
        if not isinstance(groups, Mapping):
            raise InputError(f"comparison {comp!r} holds {type(groups).__name__}, not group -> Jaccard",
                             field=str(comp), fix="pass {comparison: {group: value}}")
        for g, v in groups.items():
            if isinstance(v, Mapping):
                raise InputError(f"comparison {comp!r} nests a further level under {g!r}", field=f"{comp}.{g}",
                                 fix="flatten it: {f'{m}, rate {r}': d for m, by_rate in j.items() "
                                     "for r, d in by_rate.items()}")
            try:
                val = float(v)
            except (TypeError, ValueError) as e:
                raise InputError(f"Jaccard of {comp!r}, group {g!r} is not a number: {v!r}", field=f"{comp}.{g}",
                                 fix="store floats in [0, 1]") from e
            if not 0.0 <= val <= 1.0:
                raise InputError(f"Jaccard of {comp!r}, group {g!r} is {val}, outside [0, 1]", field=f"{comp}.{g}",
                                 fix="store |A & B| / |A | B|")
            rows.append({"comparison": str(comp), "group": str(g), "group_label": GROUP_LABELS.get(str(g), str(g)),
                         "jaccard": val})
    df = pd.DataFrame(rows, columns=["comparison", "group", "group_label", "jaccard"])
    present = list(dict.fromkeys(df["group"]))
    group_order = [g for g in GROUP_ORDER if g in present] + [g for g in present if g not in GROUP_ORDER]
    comp_order = list(dict.fromkeys(str(c) for c in values))
    df = (df.assign(_c=df["comparison"].map(comp_order.index), _g=df["group"].map(group_order.index))
          .sort_values(["_c", "_g"], kind="stable").drop(columns=["_c", "_g"]).reset_index(drop=True))
    if wide:
        return df.pivot(index="comparison", columns="group", values="jaccard").reindex(
            index=[c for c in comp_order if c in set(df["comparison"])], columns=group_order)
    return df


def jaccard_figure(values: Mapping[str, Mapping[str, float]] | pd.DataFrame, column: Column = "single",
                   title: str | None = None) -> go.Figure:
    """Heatmap of group Jaccard values: comparisons as rows, groups as columns, values written in.

    Args:
        values: comparison -> group -> Jaccard, or :func:`jaccard_table`'s long form.
        column: paper width.
        title: figure title.

    Returns:
        One heatmap trace (``z`` = the wide table, rows in the given order, colour scale 0 to 1).
    """
    table = values if isinstance(values, pd.DataFrame) else jaccard_table(values)
    _require(table, ("comparison", "group", "jaccard"), "the Jaccard table")
    groups = list(dict.fromkeys(table["group"]))
    comps = list(dict.fromkeys(table["comparison"]))
    z = table.pivot(index="comparison", columns="group", values="jaccard").reindex(index=comps, columns=groups)
    labels = [GROUP_LABELS.get(g, g) for g in groups]
    fig = go.Figure(go.Heatmap(
        z=z.to_numpy(dtype=float), x=labels, y=comps, zmin=0.0, zmax=1.0, colorscale=SEQUENTIAL,
        texttemplate="%{z:.2f}", colorbar={"title": {"text": "Jaccard"}, "thickness": 10},
        hovertemplate="%{y}<br>%{x}: Jaccard %{z:.3f}<extra></extra>", meta={"groups": groups}))
    apply_paper_style(fig, column, height_in=max(1.6, 0.9 + 0.3 * len(comps)))
    fig.update_layout(title={"text": title or "Group reproducibility (Jaccard)"})
    fig.update_yaxes(autorange="reversed", showline=False, ticks="")
    fig.update_xaxes(showline=False, ticks="")
    return fig
