"""Figures for notebooks and papers: what recircuit found, and what unlearning did.

Usage::

    from recircuit import viz
    fig = viz.group_scatter(grouping)                    # the picture that explains CURE
    fig                                                  # interactive in Jupyter
    viz.save_figure(fig, "figures/groups.pdf")           # .html (offline), .svg, .pdf, .png

Every function takes plain data (dicts module -> score, pandas DataFrames, arrays) and also,
by duck typing, recircuit objects: anything with ``.module_importance()`` (a circuit),
``.to_dataframe()`` (a circuit's edges, a grouping) or ``.to_dict()`` (a faithfulness curve).
Modules are named ``a{L}.h{H}`` (attention heads) and ``m{L}`` (MLPs).

- :func:`importance_heatmap` - forget, retain and difference on layer x head grids (+ MLP column)
- :func:`group_scatter` - forget against retain importance per module, coloured by group
- :func:`localization_figure`, :func:`localization_heatmap`, :func:`circuits_figure`,
  :func:`gate_scatter` - CLUE: forget and conflict nodes per layer (bars, heatmap); the forget and
  retain circuits side by side by category; necessity against sufficiency, AND and OR inputs
- :func:`circuit_diagram`, :func:`circuit_comparison` - layered DAG of the top edges
- :func:`faithfulness_curves` - f against % edges kept, CPR/CMD in the legend
- :func:`pareto_plot` - JSD to Retrain against test AUC, with error bars over seeds
- :func:`pareto_figure` - the same from per-seed rows, one panel per deletion rate (also MIA gap)
- :func:`relearn_figure` - relearning attack: held-out forget loss against relearning step
- :func:`stream_figure` - a stream of deletion requests: test AUC and forget JSD after each request
- :func:`jaccard_table`, :func:`jaccard_figure` - reproducibility of CURE's groups (Jaccard)
- :func:`weight_change_map` - per-module norm of the unlearning update
- :func:`attention_patterns_html` - circuitsvis attention patterns, self-contained HTML
- :func:`attention_figure` - the same patterns as plotly heatmaps (readable without JavaScript)
- :func:`save_figure`, :func:`save_html`, :func:`static_export_session` - export

Static export (SVG/PDF/PNG) needs ``kaleido>=1`` and a Chromium (``apt-get install chromium``);
see :mod:`recircuit.viz.export`.
"""

from recircuit.viz.attention import (
    OfflineHTML,
    attention_figure,
    attention_patterns,
    attention_patterns_from_arrays,
    attention_patterns_html,
)
from recircuit.viz.circuit import circuit_comparison, circuit_diagram, node_edges
from recircuit.viz.curves import faithfulness_curves, pareto_front, pareto_plot
from recircuit.viz.export import (
    StaticExportUnavailable,
    figure_to_html,
    figure_to_image,
    save_figure,
    save_html,
    static_export_available,
    static_export_session,
)
from recircuit.viz.groups import group_scatter
from recircuit.viz.heatmaps import importance_heatmap, weight_change_map
from recircuit.viz.logic import (
    circuits_figure,
    gate_scatter,
    localization_figure,
    localization_heatmap,
)
from recircuit.viz.pareto import (
    jaccard_figure,
    jaccard_table,
    pareto_figure,
    pareto_summary,
    relearn_figure,
)
from recircuit.viz.streams import stream_figure
from recircuit.viz.style import GROUP_COLORS, GROUP_LABELS, PALETTE, apply_paper_style

__all__ = [
    "GROUP_COLORS", "GROUP_LABELS", "PALETTE", "OfflineHTML", "StaticExportUnavailable",
    "apply_paper_style", "attention_figure", "attention_patterns", "attention_patterns_from_arrays",
    "attention_patterns_html",
    "circuit_comparison", "circuit_diagram", "faithfulness_curves", "figure_to_html", "figure_to_image",
    "circuits_figure", "gate_scatter", "group_scatter", "importance_heatmap", "localization_figure",
    "localization_heatmap", "jaccard_figure", "jaccard_table", "node_edges", "pareto_figure",
    "pareto_front", "pareto_plot", "pareto_summary", "relearn_figure", "save_figure",
    "save_html", "static_export_available", "static_export_session", "stream_figure", "weight_change_map",
]
