"""The end-to-end main job (``recircuit demo``) on the tiny model: every step, real outputs."""

from __future__ import annotations

import json

import pytest

from recircuit.demo import demo_config, run_demo
from recircuit.errors import InputError


def test_demo_writes_report_for_original_retrain_and_every_method(demo_run):
    out, cfg, res = demo_run["out"], demo_run["config"], demo_run["result"]
    report = json.loads((out / "report.json").read_text())
    methods = [r["method"] for r in report["rows"]]
    assert methods == ["original", "retrain", *cfg.methods]
    rows = {r["method"]: r for r in report["rows"]}
    # Retrain is the reference: its distance to itself is exactly 0; Original is the "do nothing" row
    assert rows["retrain"]["forget_jsd"] == 0.0 and rows["retrain"]["mia_gap_to_retrain"] == 0.0
    assert rows["original"]["forget_jsd_to_original"] == 0.0
    assert rows["original"]["forget_jsd"] == pytest.approx(rows["retrain"]["forget_jsd_to_original"])
    for m in cfg.methods:
        assert rows[m]["seconds"] > 0 and rows[m]["time_vs_retrain"] > 0
        assert 0.0 <= rows[m]["test_auc"] <= 1.0 and 0.0 <= rows[m]["mia_auc"] <= 1.0
    assert list(res.table.index) == methods
    assert res.table.loc["retrain", "forget_jsd"] == 0.0
    assert "| cure |" in (out / "report.md").read_text()
    assert set(res.timings) >= {"assets", "original", "circuit", "retrain", "report"} | {f"unlearn_{m}" for m in cfg.methods}
    assert set(report["meta"]["status"]) == {f"{m} rate={cfg.data.forget_fraction} seed={cfg.data.seed}"
                                             for m in cfg.methods}
    assert json.loads((out / "demo.json").read_text())["config"] == cfg.to_dict()


def test_the_summary_says_in_words_what_the_run_found(demo_run):
    res = demo_run["result"]
    lines = res.summary_lines()
    verdict = res.memorization["verdict"]
    assert f"memorization: {verdict}" in lines                          # measurable or not, plainly
    assert verdict.startswith("measurable" if res.memorization["measurable"] else "not measurable")
    assert any(line.startswith("steps (s): ") for line in lines)
    assert lines[-1].startswith(f"report: {res.out_dir}/report.md")
    fronts = res.pipeline.report.meta.get("pareto") or {}
    assert [f["sentence"] for f in fronts.values()] == [x for x in lines if x.startswith("Pareto front")]


def test_demo_saves_circuit_faithfulness_and_audits(demo_run):
    out, cfg = demo_run["out"], demo_run["config"]
    from recircuit.circuits import Circuit

    circuit = Circuit.load(out / "circuit")
    assert circuit.n_edges == min(cfg.circuit.top_n, circuit.graph.n_edges)
    # the tiny model's label_flip does not move the metric beyond its spread: no sweep, the note instead,
    # in the summary and in report.md (the curve of a corruption that moves it: tests/test_pipeline.py)
    summary = json.loads((out / "circuit_summary.json").read_text())
    note = summary["faithfulness_note"]
    assert "label_flip corruption moves the metric" in note and "--corruption target_swap" in note
    assert not (out / "faithfulness.json").exists() and "cpr" not in summary
    assert f"- Faithfulness: {note}." in (out / "report.md").read_text()
    n_forget = json.loads((out / "report.json").read_text())["meta"]["n_forget"]
    records = {m: json.loads((out / "audit" / f"{m}.json").read_text()) for m in cfg.methods}
    uids = {tuple(r["forgotten"]["uids"]) for r in records.values()}
    assert len(uids) == 1 and len(next(iter(uids))) == n_forget       # the same request for every method
    befores = {r["model_sha256"]["before"] for r in records.values()}
    assert len(befores) == 1                                           # all start from the same original
    assert records["cure"]["model_sha256"]["after"] != records["cure"]["model_sha256"]["before"]
    status = json.loads((out / "report.json").read_text())["meta"]["status"]
    for m, r in records.items():                                       # every audit carries its run's status
        assert r["status"] == status[f"{m} rate={cfg.data.forget_fraction} seed={cfg.data.seed}"]
        assert r["status"] in ("ok", "early_stop", "restored", "destroyed")
    att = json.loads((out / "attention.json").read_text())
    assert len(att["heads"]) == cfg.circuit.attention_heads and att["tokens"]


def test_cure_changes_only_the_modules_of_its_groups(demo_run):
    out = demo_run["out"]
    grouping = json.loads((out / "grouping.json").read_text())["groups"]
    norms = json.loads((out / "updates.json").read_text())["cure"]
    assert set(norms) == set(grouping)
    frozen = [m for m, g in grouping.items() if g == "frozen"]
    active = [m for m, g in grouping.items() if g != "frozen"]
    assert frozen and active
    assert all(norms[m] == 0.0 for m in frozen)
    assert any(norms[m] > 0.0 for m in active)


def test_rerun_reuses_cached_original_and_retrain(demo_run, shared_data, tmp_path, monkeypatch):
    cache = demo_run["cache"]
    ckpts = sorted((cache / "models").glob("*/files/model.safetensors"))
    assert len(ckpts) == 2                                     # Original and Retrain
    stamps = {p: p.stat().st_mtime_ns for p in ckpts}
    monkeypatch.setenv("RECIRCUIT_CACHE", str(cache))
    cfg = demo_config("tiny", data_dir=str(shared_data / "ml-100k"), methods=("ga",), faithfulness=False)
    res = run_demo(cfg, tmp_path, progress=False)
    assert sorted((cache / "models").glob("*/files/model.safetensors")) == ckpts
    assert {p: p.stat().st_mtime_ns for p in ckpts} == stamps  # nothing retrained
    assert list(res.table.index) == ["original", "retrain", "ga"]
    # the circuit settings changed (no faithfulness sweep), so only that step ran again
    reused = json.loads((tmp_path / "report.json").read_text())["meta"]["reused_from_cache"]
    assert reused == ["evaluate_references", "unlearn_ga"]
    assert res.table.loc["ga"].equals(demo_run["result"].table.loc["ga"])
    assert not (tmp_path / "faithfulness.json").exists()


def test_cached_rerun_reuses_every_step_and_rewrites_the_same_outputs(demo_run, tmp_path, monkeypatch):
    monkeypatch.setenv("RECIRCUIT_CACHE", str(demo_run["cache"]))

    def no_model(*a, **k):
        raise AssertionError("a fully cached rerun must not load a checkpoint")

    monkeypatch.setattr("recircuit.train.load_trained", no_model)
    cfg = demo_run["config"]
    res = run_demo(cfg, tmp_path, progress=False)
    meta = json.loads((tmp_path / "report.json").read_text())["meta"]
    assert meta["reused_from_cache"] == ["circuit", "evaluate_references", *[f"unlearn_{m}" for m in cfg.methods]]
    assert res.table.equals(demo_run["result"].table)
    first = demo_run["out"]
    for rel in ("circuit.json", "memorization.json", "grouping.json", "updates.json",
                "attention.json", "circuit_summary.json", *[f"audit/{m}.json" for m in cfg.methods]):
        assert (tmp_path / rel).read_bytes() == (first / rel).read_bytes(), rel
    assert (tmp_path / "figures").is_dir()


def test_demo_config_presets_and_overrides(shared_data):
    cfg = demo_config("tiny", data_dir="d", n_train=32, forget_fraction=0.5, seed=3, steps=2, methods=("npo",),
                      faithfulness=False)
    assert (cfg.model, cfg.data.data_dir, cfg.data.n_train, cfg.data.forget_fraction) == ("tiny", "d", 32, 0.5)
    assert cfg.data.seed == cfg.train.seed == 3 and cfg.loop.steps == 2 and list(cfg.methods) == ["npo"]
    assert cfg.train.eval_every == 32 // cfg.train.batch_size // 2 and not cfg.circuit.faithfulness
    full = demo_config()
    assert full.model == "smollm2-135m-instruct" and list(full.methods) == ["cure", "cure-random", "ga", "npo"]
    assert full.base is not None and full.base.replay > 0           # the protocol: forgetting is measurable
    assert full.data.n_test >= 200 and full.data.n_heldout >= 100
    # the preset's own pool size changes nothing (stage 2 trains every epoch, no validation to space)
    assert demo_config(n_train=full.data.n_train) == full
    assert full.train is not demo_config().train                     # each config its own copy


@pytest.mark.parametrize("overrides, field", [({"forget_fraction": 1.5}, "data.forget_fraction"),
                                              ({"forget_fraction": -0.2}, "data.forget_fraction"),
                                              ({"n_train": 0}, "data.n_train")])
def test_bad_demo_config_is_refused_before_any_work(overrides, field, shared_data, tmp_path, monkeypatch):
    def no_work(*a, **k):
        raise AssertionError("nothing may be loaded or trained before the config is validated")

    monkeypatch.setattr("recircuit.pipeline.prepare_data", no_work)
    monkeypatch.setattr("recircuit.pipeline.original_checkpoint", no_work)
    cfg = demo_config("tiny", data_dir=str(shared_data / "ml-100k"), **overrides)
    with pytest.raises(InputError) as err:
        run_demo(cfg, tmp_path, progress=False)
    assert err.value.field == field and field in str(err.value)


def test_unknown_method_is_refused_before_any_work(shared_data):
    with pytest.raises(InputError, match="nope"):
        demo_config("tiny", data_dir=str(shared_data / "ml-100k"), methods=("cure", "nope"))
