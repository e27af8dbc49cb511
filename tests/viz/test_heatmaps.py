"""Layer x head heatmaps carry the right values in the right cells."""

from __future__ import annotations

import numpy as np
import pytest

from recircuit.viz import importance_heatmap, weight_change_map
from recircuit.viz._data import module_grid, parse_module

from .conftest import N_HEADS, N_LAYERS


def test_parse_and_grid():
    assert parse_module("a12.h3") == ("head", 12, 3)
    assert parse_module("m7") == ("mlp", 7, -1)
    assert parse_module("a2.g1") == ("kv", 2, 1)
    with pytest.raises(ValueError, match="Unknown node name"):
        parse_module("blocks.3")
    with pytest.raises(ValueError, match="reader suffix"):
        parse_module("a1.h2<q>")
    grid, names = module_grid({"a1.h2": 5.0, "m0": 7.0}, 2, 3)
    assert grid.shape == (2, 4)
    assert grid[1, 2] == 5.0 and grid[0, 3] == 7.0 and np.isnan(grid[0, 0])
    assert names[1][2] == "a1.h2" and names[0][3] == "m0"
    with pytest.raises(ValueError, match="outside"):
        module_grid({"a5.h0": 1.0}, 2, 3)


def test_importance_heatmap_values(forget_importance, retain_importance):
    fig = importance_heatmap(forget_importance, retain_importance, N_LAYERS, N_HEADS)
    assert [t.type for t in fig.data] == ["heatmap"] * 3
    f, r, d = (np.asarray(t.z, dtype=float) for t in fig.data)
    assert f.shape == (N_LAYERS, N_HEADS + 1)
    tot_f, tot_r = sum(forget_importance.values()), sum(retain_importance.values())
    assert f[1, 2] == pytest.approx(10.0 / tot_f)          # a1.h2 in row 1, column 2
    assert f[0, N_HEADS] == pytest.approx(4.0 / tot_f)     # m0 in the MLP column
    assert r[0, 1] == pytest.approx(10.0 / tot_r)
    np.testing.assert_allclose(d, f - r)
    assert d[1, 2] > 0 and d[0, 1] < 0                     # forget-heavy red, retain-heavy blue
    assert list(fig.data[0].x) == ["0", "1", "2", "MLP"]
    assert fig.data[0].customdata[1][2] == "a1.h2"
    assert fig.layout.coloraxis2.cmid == 0.0
    assert fig.layout.coloraxis2.cmin == -fig.layout.coloraxis2.cmax
    assert "a1.h2" in fig.data[0].hovertemplate or "%{customdata}" in fig.data[0].hovertemplate


def test_importance_heatmap_accepts_objects_and_infers_shape(forget_importance, retain_importance):
    class FakeCircuit:
        def __init__(self, imp):
            self.imp = imp

        def module_importance(self):
            return self.imp

    fig = importance_heatmap(FakeCircuit(forget_importance), FakeCircuit(retain_importance), normalize_by=None)
    assert np.asarray(fig.data[0].z).shape == (N_LAYERS, N_HEADS + 1)
    assert np.asarray(fig.data[0].z, dtype=float)[1, 2] == 10.0


def test_weight_change_map(forget_importance):
    deltas = {"a0.h0": 0.5, "m1": 2.0, "a1.h1": 0.0}
    fig = weight_change_map(deltas, N_LAYERS, N_HEADS)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z[0, 0] == 0.5 and z[1, N_HEADS] == 2.0 and z[1, 1] == 0.0 and np.isnan(z[0, 1])
    fig = weight_change_map(deltas, N_LAYERS, N_HEADS, log_scale=True)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z[1, N_HEADS] == pytest.approx(np.log10(2.0)) and np.isnan(z[1, 1])
    assert "log10" in fig.data[0].colorbar.title.text
