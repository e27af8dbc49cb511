"""The one pipeline: nested config, validation before work, cache repair, and the Ray grid."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest

from recircuit.data import DataSource
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
    ({"circuit": {"attribution": {"metric": "auc"}}}, "circuit.attribution.metric"),
    # a corruption's arguments are its factory's own knobs, never the data set's resources
    ({"circuit": {"corruption": "ppr", "corruption_args": {"far": 0.1}}}, "circuit.corruption_args.far"),
    ({"circuit": {"corruption_args": {"seed": 1}}}, "circuit.corruption_args.seed"),      # label_flip takes none
    ({"methods": {"cure": {"corruption": "ppr", "corruption_args": {"titles": {}}}}},
     "methods.cure.corruption_args.titles"),
    ({"methods": {"cure": {"corruption": "nope"}}}, "methods.cure.corruption"),
])
def test_from_dict_names_the_bad_field(d, field):
    with pytest.raises(InputError) as err:
        PipelineConfig.from_dict(d)
    assert err.value.field == field and str(err.value).count("field '") == 1     # one line, the field once


def test_corruption_args_round_trip_and_default_configs_keep_their_form():
    from recircuit.pipeline import CircuitConfig

    for cfg in (PipelineConfig(), PipelineConfig.tiny()):
        d = cfg.to_dict()
        assert "corruption_args" not in d["circuit"] and "corruption_args" not in d["methods"]["cure"]
    cfg = dataclasses.replace(
        PipelineConfig.tiny(data_dir="d"),
        circuit=CircuitConfig(corruption="ppr", corruption_args={"far_fraction": 0.1, "seed": 1}),
        methods={"cure": method_config("cure", corruption="target_swap", corruption_args={"seed": 3})})
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["circuit"]["corruption_args"] == {"far_fraction": 0.1, "seed": 1}
    assert d["methods"]["cure"]["corruption_args"] == {"seed": 3}
    back = PipelineConfig.from_dict(d)
    assert back == cfg and back.to_dict() == cfg.to_dict()
    validate(back)      # a catalogue corruption is fine for CURE here: the pipeline gives it the data source


def test_validate_rechecks_corruption_args_set_after_construction():
    cfg = PipelineConfig.tiny()
    cfg.circuit.corruption_args = {"far_fraction": 0.1}        # label_flip's: none
    with pytest.raises(InputError) as err:
        validate(cfg)
    assert err.value.field == "circuit.corruption_args.far_fraction" and str(err.value).count("field '") == 1
    cfg.circuit.corruption = "ppr"
    validate(cfg)


def test_cure_gets_the_runs_data_source_and_other_methods_none():
    from recircuit.pipeline import method_kwargs
    from recircuit.unlearn import get_method

    cure = method_config("cure", corruption="ppr", corruption_args={"far_fraction": 0.1})
    ml = PipelineConfig.tiny(data_dir="d")
    assert method_kwargs(ml, cure) == {"data_source": DataSource("movielens", path="d")}
    assert method_kwargs(ml, method_config("cure-random"))["data_source"] == DataSource("movielens", path="d")
    bx = DataSource("bookcrossing", path="bx")
    assert method_kwargs(PipelineConfig.tiny(source=bx), cure) == {"data_source": bx}
    assert method_kwargs(ml, method_config("ga")) == {}
    assert get_method("cure", cure, **method_kwargs(ml, cure)).data_source.path == "d"


def test_from_dict_names_a_bad_method_setting():
    with pytest.raises(InputError) as err:
        PipelineConfig.from_dict({"methods": {"ga": {"no_such_knob": 1}}})
    assert err.value.field.startswith("methods.ga") and "no_such_knob" in str(err.value)


@pytest.mark.parametrize("change, grid, field", [
    ({"data": DataConfig(forget_fraction=1.5)}, None, "data.forget_fraction"),
    ({"data": DataConfig(forget_fraction=-0.2)}, None, "data.forget_fraction"),
    ({"data": DataConfig(forget_fraction=math.nan)}, None, "data.forget_fraction"),
    ({"data": DataConfig(n_test=0)}, None, "data.n_test"),
    ({"data": DataConfig(n_valid=-1)}, None, "data.n_valid"),
    ({"methods": {}}, None, "methods"),
    ({}, GridConfig(methods=("pcgrad",)), "grid.methods"),
    ({}, GridConfig(rates=(0.0,)), "grid.rates"),
    ({}, GridConfig(seeds=(-1,)), "grid.seeds"),
])
def test_validate_refuses_bad_fields(change, grid, field):
    cfg = dataclasses.replace(PipelineConfig.tiny(), **change)
    with pytest.raises(InputError) as err:
        validate(cfg, grid)
    assert err.value.field == field and str(err.value).count("field '") == 1


@pytest.mark.parametrize("name, value", [("lr", -1.0), ("lr", math.inf), ("epochs", 0), ("batch_size", 0)])
def test_validate_refuses_training_settings_changed_after_construction(name, value):
    cfg = PipelineConfig.tiny()
    setattr(cfg.train, name, value)
    with pytest.raises(InputError) as err:
        validate(cfg)
    assert err.value.field == f"train.{name}"


def test_validate_rechecks_an_attribution_metric_set_after_construction():
    cfg = PipelineConfig.tiny()
    cfg.circuit.attribution.metric = "auc"
    with pytest.raises(InputError) as err:
        validate(cfg)
    assert err.value.field == "circuit.attribution.metric"


def test_n_valid_zero_trains_without_validation(shared_data, monkeypatch):
    """n_valid=0 (the benchmark's default) reaches the training cache: no early stopping."""
    from recircuit.pipeline import original_checkpoint, prepare_data

    cfg = PipelineConfig.tiny(data_dir=str(shared_data / "ml-100k"))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, n_valid=0))
    validate(cfg)
    seen = {}
    monkeypatch.setattr("recircuit.train.cached_recommender",
                        lambda model, split, tcfg, n_train, n_valid, *a, **k: seen.update(n=n_valid, v=split.valid))
    data = prepare_data(cfg)
    original_checkpoint(cfg, data)
    assert seen == {"n": 0, "v": []} and data.valid == []
    assert _benchmark().parser().parse_args([]).n_valid == 0


def test_samples_without_uid_are_keyed_by_their_prompt():
    from recircuit.data.prompts import Sample
    from recircuit.pipeline import PipelineData

    a, b = (Sample(instruction="Rate.", input=f"Whether the user will like {t}?", output="Yes.") for t in "AB")
    ids = PipelineData(None, [], [], [], [a, b]).ids()
    assert len(set(ids["test"])) == 2 and all(ids["test"])       # before: both "" (one key for two samples)


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
        for entry in (demo_cache / "results").glob("circuit-*"):     # the demo's (and any other run's)
            path = entry / "files" / "circuit.json"
            path.write_text(path.read_text() + " ")      # still valid JSON, but not the bytes recorded
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


def test_an_exact_method_runs_on_the_pipeline_from_its_cached_ensemble(demo_run, demo_cache, tmp_path, monkeypatch):
    from recircuit.unlearn import method_config
    from recircuit.unlearn.ensemble import ShardEnsemble

    cfg = dataclasses.replace(demo_run["config"], methods={"sisa": method_config("sisa", k=2, shard_lr=3e-3)},
                              circuit=dataclasses.replace(demo_run["config"].circuit, enabled=False))
    res = run_pipeline(cfg, tmp_path / "out", progress=False)
    assert res.reused == ["evaluate_references"]          # Original and Retrain are the demo's
    row = res.table.loc["sisa"]
    exact_metrics = [k for k in METRICS if k != "forget_jsd_to_original"]   # its Original is its own ensemble
    assert all(np.isfinite(row[k]) for k in exact_metrics) and row["fit_seconds"] > 0
    run = json.loads((tmp_path / "out" / "report.json").read_text())
    (entry,) = list((demo_cache / "models").glob("ensemble-*"))
    assert {p.name for p in (entry / "files").iterdir()} == {"ensemble.safetensors", "ensemble.json"}
    # the next request deletes from the cached fit (read back and verified), not from the first deletion's result
    shutil.rmtree(_entry(demo_cache, "unlearn_sisa"))
    monkeypatch.setattr(ShardEnsemble, "fit", classmethod(lambda *a, **k: pytest.fail("the ensemble is cached")))
    again = run_pipeline(cfg, tmp_path / "out2", progress=False)
    for k in exact_metrics:
        assert again.table.loc["sisa", k] == pytest.approx(row[k], rel=1e-9, abs=1e-12), k
    assert run["rows"] and again.table.loc["sisa", "seconds"] > 0


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
    from recircuit.cache import code_fingerprint

    codes = {json.loads((out / "runs" / f).read_text())["code"] for f in files}
    assert codes == {code_fingerprint()[:16]}                              # one version made them all
    assert json.loads((out / "report.json").read_text())["meta"]["code"] == sorted(codes)
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


# --- the grid's bookkeeping, with an in-process stand-in for Ray ------------------------------


class _TaskError(Exception):
    """What ray.get raises: Ray's wrapper, its traceback in the message, the task's error as .cause."""

    def __init__(self, cause):
        super().__init__(f"ray::task failed\nTraceback (most recent call last):\n  ...\n{cause!r}")
        self.cause = cause


class _Ref:
    """An object ref: a task's value or its error (hashable by identity, as Ray's are)."""

    def __init__(self, value=None, error=None):
        self.value, self.error = value, error


class _FakeRay:
    """``ray`` run synchronously in this process (so monkeypatches reach the tasks)."""

    def __init__(self):
        self.up, self.init_kw, self.ctxs = False, None, []

    def is_initialized(self):
        return self.up

    def init(self, **kw):
        self.up, self.init_kw = True, kw

    def shutdown(self):
        self.up = False

    def put(self, value):
        return _Ref(value)

    def remote(self, **_):
        def wrap(fn):
            class Task:
                @staticmethod
                def remote(*args):
                    self.ctxs.append(args[-1])
                    failed = [a for a in args if isinstance(a, _Ref) and a.error is not None]
                    if failed:                          # an argument's task failed: so does this one
                        return _Ref(error=_TaskError(failed[0].error))
                    try:
                        return _Ref(fn(*[a.value if isinstance(a, _Ref) else a for a in args]))
                    except Exception as err:  # noqa: BLE001
                        return _Ref(error=_TaskError(err))
            return Task
        return wrap

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value


@pytest.fixture()
def fake_ray(monkeypatch):
    import sys

    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    return fake


@pytest.mark.parametrize("broken", ["npo", "references"])
def test_a_failing_task_fails_its_request_only(broken, demo_run, demo_cache, fake_ray, tmp_path, monkeypatch, capsys):
    from recircuit import pipeline
    from recircuit.errors import RunFailed

    cfg = demo_run["config"]
    rate, seed = cfg.data.forget_fraction, cfg.data.seed
    real_run, real_refs = pipeline.run_method, pipeline.references

    def run_method(config, name, *a, **k):
        if name == broken:
            raise RunFailed("npo diverged (loss nan at step 2)")
        return real_run(config, name, *a, **k)

    def references(*a, **k):
        if broken == "references":
            raise RunFailed("Retrain diverged")
        return real_refs(*a, **k)

    monkeypatch.setattr(pipeline, "run_method", run_method)
    monkeypatch.setattr(pipeline, "references", references)
    out = tmp_path / "grid"
    argv = ["--config", str(demo_run["out"] / "demo.json"), "--methods", "ga", "npo", "--seeds", str(seed),
            "--rates", str(rate), "--out", str(out)]
    assert _benchmark().main(argv) == 1                     # a failed request: non-zero exit
    printed = capsys.readouterr().out
    runs = out / "runs"
    if broken == "npo":                                     # ga went on and was written
        assert (runs / f"ga_rate{rate}_seed{seed}.json").is_file()
        assert not (runs / f"npo_rate{rate}_seed{seed}.json").exists()
        failed = json.loads((runs / f"npo_rate{rate}_seed{seed}.failed.json").read_text())
        assert failed["error"] == "RunFailed: npo diverged (loss nan at step 2)"     # one line, no traceback
    else:                                                   # both methods fail with the references' reason
        for name in ("references", "ga", "npo"):
            f = runs / f"{name}_rate{rate}_seed{seed}.failed.json"
            assert json.loads(f.read_text())["error"] == "RunFailed: Retrain diverged"
    assert "Traceback" not in printed and f"{broken if broken == 'npo' else 'refs'} rate={rate}" in printed
    # the fixed rerun finishes the rest and removes the failure files
    monkeypatch.setattr(pipeline, "run_method", real_run)
    monkeypatch.setattr(pipeline, "references", real_refs)
    assert _benchmark().main(argv) == 0
    assert not list(runs.glob("*.failed.json")) and len(list(runs.glob("*.json"))) == 3


def test_the_grid_context_names_the_cache_every_task_uses(demo_run, demo_cache, fake_ray, tmp_path):
    cfg = demo_run["config"]
    grid = GridConfig(methods=("ga",), seeds=(cfg.data.seed,), rates=(cfg.data.forget_fraction,))
    with pytest.raises(InputError) as err:       # --num-cpus cannot size an existing cluster
        run_grid(cfg, grid, tmp_path / "a", ray_address="auto", num_cpus=2)
    assert err.value.field == "num_cpus"
    run_grid(cfg, grid, tmp_path / "b", ray_address="auto", cache_root=demo_cache)
    assert fake_ray.init_kw["address"] == "auto"
    assert {c.cache_root for c in fake_ray.ctxs} == {str(demo_cache)}     # before: the driver's cache_dir()
    fake_ray.ctxs.clear()
    run_grid(cfg, grid, tmp_path / "c", ray_address="auto")
    assert {c.cache_root for c in fake_ray.ctxs} == {None}      # each node resolves its own $RECIRCUIT_CACHE


def test_a_request_file_counts_as_done_only_unaltered_and_for_its_config(tmp_path):
    from recircuit.pipeline import _grid_key, _read_done, _write_done

    cfg = PipelineConfig.tiny()
    path = tmp_path / "runs" / "x.json"
    _write_done(path, _grid_key(cfg, "ga"), {"forget_jsd": 0.25})
    assert _read_done(path, _grid_key(cfg, "ga"), dict) == {"forget_jsd": 0.25}
    # the single run's rate and seed are not the grid's: they do not invalidate a request file
    other = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, forget_fraction=0.5, seed=7))
    assert _grid_key(other, "ga") == _grid_key(cfg, "ga")
    assert _grid_key(dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, steps=9)), "ga") != _grid_key(cfg, "ga")
    d = json.loads(path.read_text())
    assert len(d["code"]) == 16                            # the code that made it, recorded, not keyed on
    d["result"]["forget_jsd"] = 0.0                        # a hand-edited number
    path.write_text(json.dumps(d))
    assert _read_done(path, _grid_key(cfg, "ga"), dict) is None


def test_an_edit_of_the_code_keeps_the_finished_requests(monkeypatch):
    import recircuit.cache
    from recircuit.pipeline import _grid_key

    cfg = PipelineConfig.tiny()
    before = _grid_key(cfg, "ga")
    monkeypatch.setattr(recircuit.cache, "code_fingerprint", lambda parts=(): "edited")
    assert recircuit.cache.cache_key(x=1) != recircuit.cache.cache_key(x=1, code=None)   # the patch bites
    assert _grid_key(cfg, "ga") == before


def test_the_circuit_step_leaves_no_stale_file(demo_run, demo_cache, tmp_path):
    from recircuit.pipeline import CIRCUIT_FILES, Context, circuit_step, prepare_data

    cfg = demo_run["config"]
    cfg = dataclasses.replace(cfg, circuit=dataclasses.replace(cfg.circuit, faithfulness=False, attention_heads=0))
    out = tmp_path / "out"
    out.mkdir()
    for rel in CIRCUIT_FILES:                               # an earlier run's outputs in the same folder
        (out / rel).write_bytes((demo_run["out"] / rel).read_bytes() if (demo_run["out"] / rel).exists() else b"{}")
    data = prepare_data(cfg)
    before = set((demo_cache / "results").glob("circuit-*"))      # other tests may have left circuit entries
    circuit_step(cfg, data, out, Context())
    assert not any((out / rel).exists() for rel in ("faithfulness.json", "attention.json", "attention.safetensors"))
    (entry,) = set((demo_cache / "results").glob("circuit-*")) - before
    assert sorted(p.name for p in (entry / "files").iterdir()) == ["circuit.json", "circuit.safetensors",
                                                                   "circuit_summary.json"]
    again = tmp_path / "again"                              # a cache hit into a folder with old files
    again.mkdir()
    (again / "faithfulness.json").write_text('{"label_flip": "an earlier run\'s curve"}')
    reused = []
    circuit_step(cfg, data, again, Context(), reused)
    assert reused == ["circuit"] and not (again / "faithfulness.json").exists()


def test_the_circuit_step_sweeps_faithfulness_only_for_a_corruption_that_moves_the_metric(
        demo_run, demo_cache, tmp_path, monkeypatch):
    """The demo's label_flip does not move the tiny model's metric: note, no sweep (tests/test_demo.py).
    With the check made to pass, the same step sweeps and writes a real curve."""
    from recircuit.circuits import faithfulness
    from recircuit.pipeline import Context, circuit_step, prepare_data

    cfg = demo_run["config"]
    cfg = dataclasses.replace(cfg, circuit=dataclasses.replace(cfg.circuit, attention_heads=0))
    data = prepare_data(cfg)
    flagged = circuit_step(cfg, data, tmp_path / "flagged", Context())
    assert "faithfulness_note" in flagged and not (tmp_path / "flagged" / "faithfulness.json").exists()
    check = faithfulness.check_corruption

    def passing(*args, **kwargs):                     # the same numbers, judged sound
        return dataclasses.replace(check(*args, **kwargs), note=None)

    monkeypatch.setattr(faithfulness, "check_corruption", passing)
    cfg = dataclasses.replace(cfg, circuit=dataclasses.replace(cfg.circuit, samples=cfg.circuit.samples - 1))
    summary = circuit_step(cfg, data, tmp_path / "passing", Context())     # fewer samples: not a cache hit
    assert "faithfulness_note" not in summary
    curve = json.loads((tmp_path / "passing" / "faithfulness.json").read_text())[cfg.circuit.corruption]
    assert "flag" not in curve and summary["cpr"] == pytest.approx(curve["cpr"])
    assert curve["faithfulness"][0] == pytest.approx(0.0, abs=1e-4)      # empty circuit
    assert curve["faithfulness"][-1] == pytest.approx(1.0, abs=1e-4)     # the whole graph


def test_benchmark_compares_cure_grouping_across_corruptions(demo_run, demo_cache):
    from recircuit.unlearn.grouping import grouping_jaccard

    bench = _benchmark()
    cfg, cure = demo_run["config"], demo_run["result"].pipeline.runs["cure"]
    same = bench.corruption_jaccard(cfg, [cure], "label_flip")      # CURE's own corruption: its own grouping
    (groups,) = same.values()
    assert list(same) == [f"rate={cure.rate} seed={cure.seed}"]
    g = cure.grouping
    assert groups == grouping_jaccard([_grouping(g), _grouping(g)])     # identical groupings
    assert set(bench.corruption_jaccard(cfg, [cure], "history_resample")[f"rate={cure.rate} seed={cure.seed}"]) \
        == set(groups)
    assert bench.corruption_jaccard(cfg, [demo_run["result"].pipeline.runs["ga"]], "history_resample") == {}
    with pytest.raises(InputError) as err:
        bench.grid_config(bench.parser().parse_args(["--second-corruption", "nope"]))
    assert err.value.field == "--second-corruption"


def _grouping(d):
    from recircuit.unlearn import Grouping, GroupingConfig

    return Grouping(**{**d, "config": GroupingConfig(**d["config"])})


def test_a_resumed_grid_recomputes_requests_made_on_another_original(demo_run, demo_cache, fake_ray, tmp_path,
                                                                     caplog):
    """A grid resumed where Original trained to other weights (another machine, changed training
    code) must not score new method runs against the old Original's references: such a request is
    run again whole. Same weights (the usual resume) keep every finished request."""
    from recircuit.pipeline import _grid_key, _refs_file, _run_file, _write_done

    cfg = demo_run["config"]
    rate, seed = cfg.data.forget_fraction, cfg.data.seed
    grid = GridConfig(methods=("ga", "npo"), seeds=(seed,), rates=(rate,))
    out = tmp_path / "grid"
    first = run_grid(cfg, grid, out, cache_root=demo_cache)
    assert not first.errors and len(first.runs) == 2
    true_hash = first.references[0].original_hash
    # the usual resume: one method missing, the same Original -> only that method runs
    _run_file(out, "npo", rate, seed).unlink()
    again = run_grid(cfg, grid, out, cache_root=demo_cache)
    assert again.submitted == [("npo", rate, seed)]
    # the references were made on other weights: the whole request runs again, with a warning
    refs = json.loads(_refs_file(out, rate, seed).read_text())["result"]
    refs["original_hash"] = "0" * 64
    _write_done(_refs_file(out, rate, seed), _grid_key(cfg, None), refs)
    _run_file(out, "npo", rate, seed).unlink()
    with caplog.at_level("WARNING", logger="recircuit.pipeline"):
        res = run_grid(cfg, grid, out, cache_root=demo_cache)
    assert sorted(res.submitted) == [("ga", rate, seed), ("npo", rate, seed)]
    assert "evaluated on another Original" in caplog.text
    assert json.loads(_refs_file(out, rate, seed).read_text())["result"]["original_hash"] == true_hash


def test_a_method_refuses_references_of_another_original(demo_run, demo_cache, tmp_path):
    from recircuit.errors import RunFailed
    from recircuit.pipeline import Context, prepare_data, references, run_method

    cfg = demo_run["config"]
    data = prepare_data(cfg)
    cache = tmp_path / "checkpoints-only"        # the demo's checkpoints, no cached results
    shutil.copytree(demo_cache / "models", cache / "models")
    ctx = Context(cache_root=str(cache))
    refs = references(cfg, data, cfg.data.forget_fraction, cfg.data.seed, ctx)
    stale = dataclasses.replace(refs, original_hash="0" * 64)
    with pytest.raises(RunFailed, match="another Original"):
        run_method(cfg, "ga", data, stale, ctx)


def test_cure_and_its_control_share_one_cached_grouping_and_run_as_if_computed_inside(demo_run, demo_cache, tmp_path):
    from recircuit.evaluate import model_hash
    from recircuit.models import copy_model
    from recircuit.pipeline import (
        Context,
        _load,
        data_source,
        make_request,
        original_checkpoint,
        prepare_data,
        references,
        run_method,
    )
    from recircuit.unlearn import Grouping, get_method

    cfg = demo_run["config"]
    cure = cfg.methods["cure"]
    cfg = dataclasses.replace(cfg, methods={"cure": cure, "cure-random": method_config("cure-random", **cure.to_dict())})
    data = prepare_data(cfg)
    cache = tmp_path / "checkpoints-only"        # the demo's checkpoints, no cached results
    shutil.copytree(demo_cache / "models", cache / "models")
    ctx = Context(cache_root=str(cache))
    refs = references(cfg, data, cfg.data.forget_fraction, cfg.data.seed, ctx)
    runs = {m: run_method(cfg, m, data, refs, ctx) for m in cfg.methods}
    entry = _entry(cache, "grouping")                        # one grouping for both
    stored = json.loads((entry / "manifest.json").read_text())["payload"]
    assert Grouping.from_dict(stored["grouping"]).groups == runs["cure"].grouping["groups"]
    assert runs["cure-random"].grouping["groups"] != runs["cure"].grouping["groups"]     # shuffled from it
    assert sorted(runs["cure-random"].grouping["groups"].values()) == sorted(runs["cure"].grouping["groups"].values())
    for run in runs.values():                                # each method's time includes the grouping's
        assert run.row["seconds"] >= stored["seconds"] > 0
    # the same CURE run as one that computes its grouping inside (no cache)
    request = make_request(data, refs.rate, refs.seed)
    original = _load(original_checkpoint(cfg, data, ctx), cfg.device)
    model = copy_model(original)
    get_method("cure", cure, data_source=data_source(cfg)).run(
        model, request.forget, request.retain, dataclasses.replace(cfg.loop, seed=refs.seed), reference=original,
        heldout=data.stop)
    assert model_hash(model) == runs["cure"].audit["model_sha256"]["after"]


def test_relearning_is_read_against_retrain_learning_the_same_answers_from_scratch():
    from recircuit.pipeline import relearn_against_retrain

    retrain = {"steps": [0, 1, 2], "loss_b": [3.9, 1.6, 1.2], "idx_b": [0, 2]}
    hid = {"steps": [0, 1, 2], "loss_b": [3.5, 1.0, 0.1], "idx_b": [0, 2]}       # came back faster: hidden
    assert relearn_against_retrain(hid, retrain)["relearn_gap_to_retrain"] == pytest.approx(1.1)
    assert relearn_against_retrain(retrain, retrain) == {"relearn_gap_to_retrain": 0.0}
    assert relearn_against_retrain({**hid, "idx_b": [1, 3]}, retrain) == {}       # other halves: no comparison
    assert relearn_against_retrain({**hid, "steps": [0, 2, 4]}, retrain) == {}
    assert relearn_against_retrain(None, retrain) == relearn_against_retrain(hid, None) == {}
