"""Other domains end to end on the tiny model: TALLRec book JSON and BookCrossing CSVs go through
build -> score -> circuit -> unlearn -> report (the pipeline), and the CLI reads them too."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from recircuit.data import DataSource
from recircuit.pipeline import PipelineConfig, run_pipeline
from recircuit.unlearn import method_config

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _config(source: DataSource, corruption: str) -> PipelineConfig:
    cfg = PipelineConfig.tiny(source=source)
    data = dataclasses.replace(cfg.data, n_train=24, per_user=4, n_valid=3, n_stop=3, n_heldout=3, n_test=6,
                               forget_fraction=0.25)
    circuit = dataclasses.replace(cfg.circuit, samples=4, top_n=30, faithfulness=False, corruption=corruption)
    train = dataclasses.replace(cfg.train, epochs=1)
    loop = dataclasses.replace(cfg.loop, steps=2, eval_samples=3)
    return dataclasses.replace(cfg, data=data, circuit=circuit, train=train, loop=loop,
                               methods={"cure": method_config("cure", importance_samples=2, importance_steps=1)})


@pytest.mark.parametrize("source, corruption", [
    (DataSource("tallrec-json", path=str(FIXTURES / "book_tallrec")), "target_swap"),
    (DataSource("bookcrossing", path=str(FIXTURES / "bookcrossing"), history_len=3), "history_resample"),
], ids=["tallrec-book-json", "bookcrossing-csv"])
def test_book_data_goes_through_the_whole_pipeline(source, corruption, tmp_path, monkeypatch):
    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path / "cache"))
    cfg = _config(source, corruption)
    assert PipelineConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg       # the source round-trips
    res = run_pipeline(cfg, tmp_path / "out", progress=False, cache_root=tmp_path / "cache")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["meta"]["pipeline_config"]["data"]["source"] == source.to_dict()
    assert {"original", "retrain", "cure"} <= set(res.table.index)
    assert 0.0 <= res.table.loc["original", "test_auc"] <= 1.0
    assert res.circuit["n_edges_kept"] >= 1 and res.circuit["metric_gap"] != 0.0   # the corruption changed prompts
    circuit = json.loads((tmp_path / "out" / "circuit.json").read_text())
    assert circuit["metadata"]["corruption"] == corruption                        # a name, never a function
    assert (tmp_path / "out" / "report.md").is_file() and (tmp_path / "out" / "audit" / "cure.json").is_file()
