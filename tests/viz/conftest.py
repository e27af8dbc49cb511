"""Known module scores, groupings and edges for the viz tests (no model, no torch needed)."""

from __future__ import annotations

import pandas as pd
import pytest

N_LAYERS, N_HEADS = 2, 3


@pytest.fixture()
def forget_importance() -> dict[str, float]:
    """Forget-set importance: a1.h2 dominates, MLPs matter too."""
    imp = {f"a{layer}.h{h}": 1.0 for layer in range(N_LAYERS) for h in range(N_HEADS)}
    imp.update({"a1.h2": 10.0, "a0.h0": 2.0, "m0": 4.0, "m1": 3.0})
    return imp


@pytest.fixture()
def retain_importance() -> dict[str, float]:
    """Retain-set importance: a0.h1 dominates."""
    imp = {f"a{layer}.h{h}": 1.0 for layer in range(N_LAYERS) for h in range(N_HEADS)}
    imp.update({"a0.h1": 10.0, "a0.h0": 2.0, "m0": 4.0, "m1": 3.0})
    return imp


@pytest.fixture()
def grouping_df() -> pd.DataFrame:
    """One module per group (plus an extra frozen one), with normalized scores and reasons."""
    return pd.DataFrame({
        "module": ["a1.h2", "a0.h1", "m0", "a0.h2", "m1"],
        "forget": [10.0, 1.0, 4.0, 1.0, 0.5],
        "retain": [1.0, 10.0, 4.0, 1.0, 0.5],
        "forget_norm": [0.5, 0.05, 0.2, 0.05, 0.02],
        "retain_norm": [0.05, 0.5, 0.2, 0.05, 0.02],
        "group": ["forget_specific", "retain_specific", "task_shared", "frozen", "frozen"],
        "reason": ["forget share high", "retain share high", "in both", "in neither", "in neither"],
    })


@pytest.fixture()
def edges_df() -> pd.DataFrame:
    """Edges of a GQA circuit (group size 3 would make a0.g0 cover heads 0-2)."""
    return pd.DataFrame({
        "source": ["input", "a0.h1", "m0", "a1.h2", "input", "a0.h0", "a0.h2"],
        "target": ["a0.h1<q>", "m0", "a1.h2<q>", "logits", "a0.g0<k>", "a1.g0<v>", "logits"],
        "score": [0.5, -2.0, 1.0, 3.0, 0.25, -0.1, 0.05],
        "in_circuit": [True, True, True, True, True, True, False],
    })
