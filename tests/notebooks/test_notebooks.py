"""Every notebook under ``notebooks/`` runs top to bottom on the tiny model (nbclient)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_committed_outputs_come_from_a_recorded_real_run():
    """A notebook is committed either without outputs, or executed top to bottom on the real path.

    Executed ones (``scripts/execute_notebooks.py --write``) record the run in
    ``metadata.recircuit``, have no error output, and every plotly figure carries a static PNG
    next to its interactive form, so it renders where JavaScript does not.
    """
    assert len(NOTEBOOKS) >= 3
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        top = next(c.source for c in nb.cells if c.cell_type == "markdown")
        if not any(c.outputs or c.execution_count for c in code):
            assert "*Outputs: none committed yet" in top, f"{path.name}: the top cell must say its outputs' run"
            continue
        run = nb.metadata.get("recircuit")
        assert run, f"{path.name} carries outputs but no metadata.recircuit: clear them, or execute it with scripts/execute_notebooks.py --write"
        assert run.get("commit") and f"recircuit {run['commit']}" in top and "*Outputs: made by" in top, (
            f"{path.name}: the top cell must name the run that made the outputs")
        assert path.stat().st_size < 3_000_000, f"{path.name}: {path.stat().st_size} bytes of outputs; keep figures small"
        assert "tiny" not in str(run.get("model", "")), f"{path.name}: committed outputs must come from the real model"
        assert all(c.execution_count for c in code), f"{path.name}: not every cell was executed"
        assert not [o for c in code for o in c.outputs if o.output_type == "error"], f"{path.name} has an error output"
        for c in code:
            for o in c.outputs:
                data = o.get("data", {})
                # a figure (not the renderer's one-off loader script) carries its static PNG beside it
                if any("plotly" in k or "Plotly.newPlot" in str(v) for k, v in data.items() if k != "image/png"):
                    assert "image/png" in data, f"{path.name}: a plotly figure without its static PNG"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_on_the_tiny_model(path, demo_run, shared_data, tmp_path, monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(demo_run["out"], results)
    monkeypatch.setenv("RECIRCUIT_NOTEBOOK_MODEL", "tiny")
    monkeypatch.setenv("RECIRCUIT_DATA_DIR", str(shared_data / "ml-100k"))
    cache = tmp_path / "cache"       # a private copy: the notebooks add entries the other tests must not see
    shutil.copytree(demo_run["cache"], cache)
    monkeypatch.setenv("RECIRCUIT_CACHE", str(cache))                  # reuse the demo's tiny recommenders
    monkeypatch.setenv("RECIRCUIT_NOTEBOOK_OUT", str(tmp_path / "notebook_out"))
    monkeypatch.setenv("RECIRCUIT_RESULTS", str(results))
    monkeypatch.setenv("RECIRCUIT_FIGURES_DIR", str(tmp_path / "figures"))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    if path.stem.startswith("03"):
        assert (tmp_path / "figures" / "pareto.html").exists()


def test_notebook_02_runs_the_pipeline_not_its_own_protocol():
    (path,) = [p for p in NOTEBOOKS if p.stem.startswith("02")]
    source = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "recircuit.pipeline" in source
    assert "notebook_config" in source                  # the notebooks' preset of the pipeline config
    for own_protocol in ("run_demo", "demo_config", "forget_retain_split", "load_recommender", "evaluate_unlearning",
                         "get_method", '{"summary"'):
        assert own_protocol not in source, own_protocol
