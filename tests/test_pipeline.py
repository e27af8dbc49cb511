"""The one pipeline: nested config, validation before work, cache repair, and the Ray grid."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest

from recircuit.errors import InputError
from recircuit.pipeline import (
    DataConfig,
    GridConfig,
    PipelineConfig,
    run_grid,
    run_pipeline,
    validate,
)
from recircuit.unlearn import method_config

#: Metrics that depend only on the models (not on wall time).
METRICS = ("test_auc", "forget_auc", "forget_jsd", "test_jsd", "mia_auc", "forget_loss", "forget_jsd_to_original")


def test_config_round_trips_through_json():
    cfg = PipelineConfig.tiny(data_dir="d")
    cfg = dataclasses.replace(cfg, methods={"cure": method_config("cure", forget_rule="ga"), "ga": method_config("ga")})
    back = PipelineConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.to_dict() == cfg.to_dict()
    assert PipelineConfig.from_dict({}) == PipelineConfig()


@pytest.mark.parametrize("d, field", [
    ({"data": {"n_trian": 3}}, "data.n_trian"),
    ({"circuit": {"attribution": {"stepz": 2}}}, "circuit.attribution.stepz"),
    ({"methods": {"nope": {}}}, "methods"),
    ({"methods": {"retrain": {}}}, "methods"),
    ({"oops": 1}, "oops"),
])
def test_from_dict_names_the_bad_field(d, field):
    with pytest.raises(InputError) as err:
        PipelineConfig.from_dict(d)
    assert err.value.field == field


def test_from_dict_names_a_bad_method_setting():
    with pytest.raises(InputError) as err:
        PipelineConfig.from_dict({"methods": {"ga": {"no_such_knob": 1}}})
    assert err.value.field.startswith("methods.ga") and "no_such_knob" in str(err.value)


@pytest.mark.parametrize("change, grid, field", [
    ({"data": DataConfig(forget_fraction=1.5)}, None, "data.forget_fraction"),
    ({"data": DataConfig(forget_fraction=-0.2)}, None, "data.forget_fraction"),
    ({"data": DataConfig(forget_fraction=math.nan)}, None, "data.forget_fraction"),
    ({"data": DataConfig(n_test=0)}, None, "data.n_test"),
    ({"methods": {}}, None, "methods"),
    ({}, GridConfig(methods=("pcgrad",)), "grid.methods"),
    ({}, GridConfig(rates=(0.0,)), "grid.rates"),
    ({}, GridConfig(seeds=(-1,)), "grid.seeds"),
])
def test_validate_refuses_bad_fields(change, grid, field):
    cfg = dataclasses.replace(PipelineConfig.tiny(), **change)
    with pytest.raises(InputError) as err:
        validate(cfg, grid)
    assert err.value.field == field


@pytest.mark.parametrize("name, value", [("lr", -1.0), ("lr", math.inf), ("epochs", 0), ("batch_size", 0)])
def test_validate_refuses_training_settings_changed_after_construction(name, value):
    cfg = PipelineConfig.tiny()
    setattr(cfg.train, name, value)
    with pytest.raises(InputError) as err:
        validate(cfg)
    assert err.value.field == f"train.{name}"


def test_an_impossible_request_is_refused_before_any_model(shared_data, tmp_path, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("no model may be trained before every request is drawn")

    monkeypatch.setattr("recircuit.pipeline.original_checkpoint", no_model)
    cfg = PipelineConfig.tiny(data_dir=str(shared_data / "ml-100k"))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, n_train=1, per_user=1))  # one user only
    with pytest.raises(InputError) as err:
        run_pipeline(cfg, tmp_path, progress=False, cache_root=tmp_path / "cache")
    assert err.value.field == "data.forget_fraction"
    with pytest.raises(InputError) as err:
        run_grid(cfg, GridConfig(methods=("ga",), seeds=(0,), rates=(0.5,)), tmp_path, cache_root=tmp_path / "c")
    assert err.value.field == "grid.rates"


# --- the cache inside the pipeline ---------------------------------------------------------


@pytest.fixture()
def demo_cache(demo_run, tmp_path, monkeypatch):
    """A private copy of the demo's cache (the tests below damage entries)."""
    cache = tmp_path / "cache"
    shutil.copytree(demo_run["cache"], cache)
    monkeypatch.setenv("RECIRCUIT_CACHE", str(cache))
    return cache


def _ga_only(demo_run):
    cfg = demo_run["config"]
    return dataclasses.replace(cfg, methods={"ga": cfg.methods["ga"]},
                               circuit=dataclasses.replace(cfg.circuit, enabled=False))


def _entry(cache, step, having=None):
    """The one cache entry of ``step`` (with the file ``having``, where other runs left several)."""
    (entry,) = [e for e in sorted((cache / "results").glob(f"{step}-*"))
                if having is None or (e / "files" / having).is_file()]
    return entry


def _rewrite_payload(entry, change):
    manifest = json.loads((entry / "manifest.json").read_text())
    change(manifest["payload"])
    (entry / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage", ["wrong_shape_row", "wrong_shape_outputs", "unreadable", "tampered_circuit"])
def test_a_damaged_entry_is_recomputed_and_repaired(damage, demo_run, demo_cache, tmp_path):
    cfg = _ga_only(demo_run)
    expect = ["evaluate_references", "unlearn_ga"]
    if damage == "wrong_shape_row":          # valid JSON, but the row is not a row
        _rewrite_payload(_entry(demo_cache, "unlearn_ga"), lambda p: p.update(row=[1, 2, 3]))
        expect = ["evaluate_references"]
    elif damage == "wrong_shape_outputs":    # Retrain's scores of one test sample too few
        _rewrite_payload(_entry(demo_cache, "references"),
                         lambda p: p["outputs"]["retrained"]["p_test"].pop())
        expect = ["unlearn_ga"]
    elif damage == "unreadable":
        (_entry(demo_cache, "unlearn_ga") / "manifest.json").write_bytes(b"\xff\xfe{")
        expect = ["evaluate_references"]
    else:                                    # an altered circuit file: its sha256 no longer matches
        cfg = dataclasses.replace(cfg, circuit=demo_run["config"].circuit)
        path = _entry(demo_cache, "circuit", "faithfulness.json") / "files" / "circuit.json"
        path.write_text(path.read_text() + " ")          # still valid JSON, but not the bytes recorded
        expect = ["evaluate_references", "unlearn_ga"]
    res = run_pipeline(cfg, tmp_path / "out", progress=False)
    assert res.reused == expect
    want = demo_run["result"].table.loc["ga"]
    assert all(res.table.loc["ga", k] == pytest.approx(want[k], rel=1e-6) for k in METRICS)
    if damage == "tampered_circuit":
        assert (tmp_path / "out" / "circuit.json").read_bytes() == (demo_run["out"] / "circuit.json").read_bytes()
    again = run_pipeline(cfg, tmp_path / "out2", progress=False)       # the entry was replaced: all reused
    assert len(again.reused) == len(expect) + 1


def test_fresh_recomputes_and_overwrites_a_wrong_shape_entry(demo_run, demo_cache, tmp_path):
    cfg = _ga_only(demo_run)
    entry = _entry(demo_cache, "unlearn_ga")
    _rewrite_payload(entry, lambda p: p.update(updates="not a dict"))
    res = run_pipeline(cfg, tmp_path / "out", progress=False, fresh=True)
    assert res.reused == []                                  # fresh: nothing from before this run
    payload = json.loads((entry / "manifest.json").read_text())["payload"]
    assert isinstance(payload["updates"], dict)              # the entry was overwritten with a good one
    assert run_pipeline(cfg, tmp_path / "out2", progress=False).reused == ["evaluate_references", "unlearn_ga"]


# --- the grid through Ray --------------------------------------------------------------------


def _benchmark():
    """benchmarks/unlearning.py as a module (the benchmark is a script, not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "unlearning.py"
    spec = importlib.util.spec_from_file_location("benchmark_unlearning", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_grid_runs_through_ray_matches_the_demo_and_reruns_nothing(demo_run, tmp_path, monkeypatch, capsys):
    pytest.importorskip("ray")
    bench = _benchmark()
    cfg = demo_run["config"]
    cache = tmp_path / "cache"                  # its own results: references and methods are computed again
    shutil.copytree(demo_run["cache"] / "models", cache / "models")     # (the checkpoints are reused)
    monkeypatch.setenv("RECIRCUIT_CACHE", str(cache))
    out = tmp_path / "grid"
    seeds = (cfg.data.seed, cfg.data.seed + 1)
    argv = ["--config", str(demo_run["out"] / "demo.json"), "--methods", "ga", "npo", "--seeds", *map(str, seeds),
            "--rates", str(cfg.data.forget_fraction), "--num-cpus", "2", "--out", str(out)]
    bench_cfg, grid = bench.grid_config(bench.parser().parse_args(argv))
    assert bench_cfg == cfg and grid.methods == ("ga", "npo")      # the demo's request, through the benchmark
    assert bench.main(argv) == 0
    assert "4 requests run now" in capsys.readouterr().out
    files = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert len(files) == 6 and len(list((cache / "models").glob("*/files/model.safetensors"))) == 3
    # the same request gives the same numbers through the demo and through the benchmark
    demo_rows = {r["method"]: r for r in json.loads((demo_run["out"] / "report.json").read_text())["rows"]}
    report = json.loads((out / "report.json").read_text())
    grid_rows = [r for r in report["rows"] if r["seed"] == cfg.data.seed]
    assert sorted(r["method"] for r in grid_rows) == ["ga", "npo", "original", "retrain"]
    for row in grid_rows:
        for k in METRICS:
            if k in row:
                assert row[k] == pytest.approx(demo_rows[row["method"]][k], rel=1e-4, abs=1e-6), (row["method"], k)
    # a rerun of the finished grid starts no Ray and computes nothing
    import ray

    def no_ray(*a, **k):
        raise AssertionError("a finished grid must not start Ray")

    monkeypatch.setattr(ray, "init", no_ray)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    assert bench.main(argv) == 0
    assert "0 requests run now" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")} == stamps
    assert json.loads((out / "report.json").read_text())["rows"] == report["rows"]
    res = run_grid(cfg, grid, out, cache_root=cache)
    assert res.submitted == [] and len(res.runs) == 4
