"""Adapters from recircuit objects (or plain data) to the plain tables the figures use.

Usage::

    from recircuit.viz._data import as_importance, parse_module, module_grid
    imp = as_importance(circuit)                # anything with .module_importance(), or a dict
    parse_module("a3.h5")                       # ("head", 3, 5)
    grid, names = module_grid(imp, n_layers=2, n_heads=4)   # [layer, head + MLP column]

Every figure takes plain data (dicts, DataFrames, arrays); objects are accepted by duck typing
(``.module_importance()``, ``.to_dataframe()``, ``.groups``), so the viz package imports nothing
from the circuit or unlearning code but the node-name grammar (:mod:`recircuit.nodes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from recircuit.nodes import head_name, mlp_name, parse_node


def parse_module(name: str) -> tuple[str, int, int]:
    """Kind, layer and index of a node name (a thin view of :func:`recircuit.nodes.parse_node`).

    Returns ``("head", L, H)`` for ``a{L}.h{H}``, ``("kv", L, G)`` for a KV-group reader node
    ``a{L}.g{G}``, ``("mlp", L, -1)`` for ``m{L}``, ``("input", -1, 0)`` and ``("logits", -1, 0)``.

    Raises:
        ValueError: for any other name, and for a name with a reader suffix (use :func:`split_reader`).
    """
    node = parse_node(name)
    if node.channel is not None:
        raise ValueError(f"Unknown module name {name!r}: strip the reader suffix first (split_reader).")
    if node.kind in ("input", "logits"):
        return node.kind, -1, 0
    return node.kind, node.layer, node.index


def split_reader(name: str) -> tuple[str, str | None]:
    """``"a3.h5<q>"`` -> ``("a3.h5", "q")``; ``"m2"`` -> ``("m2", None)``.

    Raises:
        ValueError: for a name outside the node grammar.
    """
    node = parse_node(name)
    return node.module, node.channel


def as_importance(obj: Any, name: str = "importance") -> dict[str, float]:
    """Module -> score from a dict, a pandas Series, a DataFrame (``module``, ``score`` columns)
    or any object with ``.module_importance()``."""
    if hasattr(obj, "module_importance"):
        obj = obj.module_importance()
    if isinstance(obj, pd.Series):
        obj = obj.to_dict()
    if isinstance(obj, pd.DataFrame):
        val = next((c for c in ("score", "importance", "value", "norm") if c in obj.columns), None)
        if "module" not in obj.columns or val is None:
            raise ValueError(f"{name}: a DataFrame needs a 'module' column and a 'score' column, got {list(obj.columns)}.")
        obj = dict(zip(obj["module"], obj[val]))
    if not isinstance(obj, Mapping):
        raise TypeError(f"{name}: expected a dict module -> score or an object with .module_importance(), "
                        f"got {type(obj).__name__}.")
    return {str(k): float(v) for k, v in obj.items()}


def infer_shape(*importances: Mapping[str, float]) -> tuple[int, int]:
    """(n_layers, n_heads) implied by the module names present."""
    n_layers = n_heads = 0
    for imp in importances:
        for m in imp:
            kind, layer, idx = parse_module(m)
            if kind in ("head", "mlp"):
                n_layers = max(n_layers, layer + 1)
            if kind == "head":
                n_heads = max(n_heads, idx + 1)
    return n_layers, n_heads


def module_grid(values: Mapping[str, float], n_layers: int, n_heads: int,
                ) -> tuple[Float[np.ndarray, "n_layers n_cols"], list[list[str]]]:
    """Lay module values on a ``[layer, head]`` grid with the MLP as the last column.

    Missing modules are NaN (drawn blank). Names outside the grid raise ``ValueError``.

    Returns:
        The grid (``n_cols = n_heads + 1``) and the module name of every cell.
    """
    grid = np.full((n_layers, n_heads + 1), np.nan)
    names = [[head_name(layer, h) for h in range(n_heads)] + [mlp_name(layer)] for layer in range(n_layers)]
    for m, v in values.items():
        kind, layer, idx = parse_module(m)
        if kind not in ("head", "mlp"):
            continue
        col = n_heads if kind == "mlp" else idx
        if layer >= n_layers or col > n_heads or (kind == "head" and idx >= n_heads):
            raise ValueError(f"Module {m!r} lies outside a {n_layers}-layer x {n_heads}-head model; "
                             f"pass the model's n_layers and n_heads.")
        grid[layer, col] = v
    return grid, names


def normalize(values: Mapping[str, float], how: str | None) -> dict[str, float]:
    """``"share"``: |v| / sum |v|; ``"max"``: v / max |v|; ``None``: unchanged."""
    if how is None:
        return dict(values)
    arr = np.abs(np.array(list(values.values()), dtype=float))
    if how == "share":
        tot = arr.sum()
        return {k: (abs(v) / tot if tot > 0 else 0.0) for k, v in values.items()}
    if how == "max":
        mx = arr.max() if arr.size else 0.0
        return {k: (v / mx if mx > 0 else 0.0) for k, v in values.items()}
    raise ValueError(f"normalize must be 'share', 'max' or None, got {how!r}")


def as_grouping_frame(obj: Any) -> tuple[pd.DataFrame, dict[str, float]]:
    """A grouping as a DataFrame (``module``, ``forget``, ``retain``, ``group`` ...) plus its thresholds.

    Accepts a DataFrame or any object with ``.to_dataframe()`` (thresholds read from its
    ``.thresholds`` and ``.config.mode`` when present).
    """
    thresholds: dict[str, float] = {}
    if hasattr(obj, "to_dataframe"):
        thresholds = dict(getattr(obj, "thresholds", {}) or {})
        cfg = getattr(obj, "config", None)
        if cfg is not None and getattr(cfg, "mode", None):
            thresholds["mode"] = cfg.mode
        obj = obj.to_dataframe()
    if not isinstance(obj, pd.DataFrame):
        raise TypeError(f"Expected a grouping DataFrame or an object with .to_dataframe(), got {type(obj).__name__}.")
    missing = {"module", "group"} - set(obj.columns)
    if missing:
        raise ValueError(f"The grouping table lacks the columns {sorted(missing)}; it needs 'module', 'group' and "
                         f"the scores ('forget'/'retain' or 'forget_norm'/'retain_norm').")
    return obj, thresholds


def as_groups(obj: Any) -> dict[str, str]:
    """Module -> group from a dict, a grouping DataFrame, or an object with ``.groups``/``.to_dataframe()``."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return {str(k): str(v) for k, v in obj.items()}
    if hasattr(obj, "groups") and isinstance(obj.groups, Mapping):
        return {str(k): str(v) for k, v in obj.groups.items()}
    df, _ = as_grouping_frame(obj)
    return dict(zip(df["module"].astype(str), df["group"].astype(str)))


def as_edges_frame(obj: Any) -> pd.DataFrame:
    """Edges (``source``, ``target``, ``score``) from a DataFrame or an object with ``.to_dataframe()``.

    Only rows with ``in_circuit`` true are kept when that column exists.
    """
    if hasattr(obj, "to_dataframe") and not isinstance(obj, pd.DataFrame):
        obj = obj.to_dataframe()
    if not isinstance(obj, pd.DataFrame):
        raise TypeError(f"Expected an edge DataFrame or an object with .to_dataframe(), got {type(obj).__name__}.")
    missing = {"source", "target", "score"} - set(obj.columns)
    if missing:
        raise ValueError(f"The edge table lacks the columns {sorted(missing)}; it needs 'source', 'target', 'score'.")
    if "in_circuit" in obj.columns:
        obj = obj[obj["in_circuit"].astype(bool)]
    return obj.reset_index(drop=True)
