"""The two-stage protocol: a base recommender outside the pool that Original and Retrain continue."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from recircuit.errors import InputError
from recircuit.pipeline import BaseConfig, PipelineConfig, prepare_data, validate
from recircuit.train import TrainConfig

TINY_BASE = BaseConfig(n_train=24, per_user=4, n_valid=8,
                       train=TrainConfig(mode="full", lr=3e-3, epochs=1, batch_size=8, eval_every=2, patience=2))


def _tiny(shared_data, **kw) -> PipelineConfig:
    return PipelineConfig.tiny(data_dir=str(shared_data / "ml-100k"), **{"base": TINY_BASE, **kw})


def test_base_config_round_trips_and_is_left_out_when_none():
    cfg = PipelineConfig.tiny(data_dir="d", base=TINY_BASE)
    back = PipelineConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.base == TINY_BASE
    assert "base" not in PipelineConfig.tiny().to_dict()


@pytest.mark.parametrize("base, field", [
    ({"n_train": 0}, "base.n_train"),
    ({"per_user": -1}, "base.per_user"),
    ({"train": {"mode": "lora"}}, "base.train.mode"),
    ({"train": {"lr": -1}}, "base.train.lr"),
    ({"n_trian": 3}, "base.n_trian"),
])
def test_a_bad_base_setting_names_its_field(base, field):
    with pytest.raises(InputError) as err:
        validate(PipelineConfig.from_dict({"base": base}))
    assert err.value.field == field


def test_base_users_are_outside_the_pool(shared_data):
    data = prepare_data(_tiny(shared_data))
    pool_users = {s.user_id for s in data.split.train}
    base_users = {s.user_id for s in data.base}
    assert data.base and len(data.base) == 24 and not pool_users & base_users
    assert max(sum(s.user_id == u for s in data.base) for u in base_users) <= 4
    heldout = {s.uid for s in data.heldout}
    assert not heldout & {s.uid for s in data.base_valid}


def test_base_per_user_zero_takes_the_first_samples_outside_the_pool(shared_data):
    from recircuit.data import build_split

    data = prepare_data(_tiny(shared_data, base=dataclasses.replace(TINY_BASE, per_user=0)))
    pool_users = {s.user_id for s in data.split.train}
    full = build_split("tallrec", data_dir=str(shared_data / "ml-100k"))
    assert [s.uid for s in data.base] == [s.uid for s in full.train if s.user_id not in pool_users][:24]
    assert max(sum(s.user_id == u for s in data.base) for u in {s.user_id for s in data.base}) > 4   # no cap


def test_base_validation_may_not_reach_the_mia_nonmembers(shared_data):
    cfg = _tiny(shared_data, base=dataclasses.replace(TINY_BASE, n_valid=10_000))
    with pytest.raises(InputError) as err:
        prepare_data(cfg)
    assert err.value.field == "base.n_valid"


def test_original_and_retrain_continue_the_base(shared_data, tmp_path):
    from recircuit.pipeline import (
        Context,
        base_checkpoint,
        make_request,
        original_checkpoint,
        retrain_checkpoint,
    )
    from recircuit.train.cache import init_identity
    from recircuit.train.checkpoint import read_meta

    cfg = _tiny(shared_data)
    data = prepare_data(cfg)
    ctx = Context(cache_root=str(tmp_path))
    base = base_checkpoint(cfg, data, ctx)
    orig = original_checkpoint(cfg, data, ctx)
    gold = retrain_checkpoint(cfg, data, make_request(data, 0.25, 0), ctx)
    for path in (orig, gold):
        meta = read_meta(path)
        assert meta["init"]["weights_sha256"] == init_identity(base)["weights_sha256"]
    assert read_meta(base).get("init") is None and read_meta(base)["n_train"] == 24
    # without a base, Original is another checkpoint (the base is part of its identity)
    plain = original_checkpoint(dataclasses.replace(cfg, base=None), prepare_data(dataclasses.replace(cfg, base=None)),
                                ctx)
    assert plain != orig and read_meta(plain).get("init") is None


def test_a_method_variant_is_its_method_under_another_name():
    from recircuit.pipeline import preset_method
    from recircuit.unlearn import get_method, method_config
    from recircuit.unlearn.methods.cure import CURE, CUREConfig

    cfg = PipelineConfig.from_dict({"methods": {"cure": {"importance_samples": 4},
                                                "cure:other": {"importance_samples": 2}, "ga": {}}})
    validate(cfg)
    assert isinstance(cfg.methods["cure:other"], CUREConfig) and cfg.methods["cure:other"].importance_samples == 2
    assert type(get_method("cure:other", cfg.methods["cure:other"])) is CURE
    # a control of a variant takes that variant's settings
    assert preset_method(cfg, "cure-random:other").importance_samples == 2
    assert preset_method(cfg, "cure-random").importance_samples == 4
    assert method_config("ga:x").to_dict() == method_config("ga").to_dict()
    for bad in ("cure:", "cure:a b", "nope:x", "retrain:x"):
        with pytest.raises(InputError) as err:
            PipelineConfig.from_dict({"methods": {bad: {}}})
        assert err.value.field == "methods"


def test_a_run_reports_memorization_relearning_and_cure_against_its_control(shared_data, tmp_path, monkeypatch):
    from recircuit.pipeline import EvalConfig, run_pipeline
    from recircuit.unlearn import method_config

    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path / "cache"))
    cfg = _tiny(shared_data)
    cure = method_config("cure", importance_samples=4, importance_steps=2)
    cfg = dataclasses.replace(cfg, methods={"cure": cure, "cure-random": method_config("cure-random", **cure.to_dict())},
                              circuit=dataclasses.replace(cfg.circuit, enabled=False),
                              eval=EvalConfig(relearn_steps=2, relearn_lr=1e-3))
    res = run_pipeline(cfg, tmp_path / "out", progress=False)
    meta = res.report.meta
    mem = meta["memorization"]
    assert isinstance(mem["measurable"], bool) and mem["verdict"]
    assert meta["notes"][0] == f"Memorization: {mem['verdict']}"
    control = meta["against_control"]["cure - cure-random"]
    assert set(control) == {"forget_jsd", "mia_gap_to_retrain", "test_auc"}
    assert all(v["ci_low"] <= v["diff"] <= v["ci_high"] for v in control.values())
    assert any(n.startswith("cure - cure-random:") for n in meta["notes"])
    for name in ("cure", "cure-random"):
        row = res.runs[name].row
        assert row["relearn_loss_b"] > 0 and "relearn_steps_to_original" in row
        assert len(res.runs[name].result["outputs"]["p_forget"]) == meta["n_forget"]
    rows = {r["method"]: r for r in res.report.rows}
    assert "relearn_loss_b" in rows["retrain"]
    front = meta["pareto"]["forget_jsd"]
    assert front["front"] and set(front["front"]) <= {"cure", "cure-random"}
    assert front["sentence"] in meta["notes"] and ("cure is on it" in front["sentence"]
                                                  or "cure is dominated by cure-random" in front["sentence"])


def test_only_a_full_fine_tune_continues_the_base(shared_data, tmp_path):
    """A LoRA checkpoint stores its adapters alone and reloads onto the raw model: the base would be lost."""
    from recircuit.data import build_split
    from recircuit.train import cached_recommender

    with pytest.raises(InputError) as err:
        validate(dataclasses.replace(PipelineConfig.tiny(data_dir="d", base=TINY_BASE),
                                     train=TrainConfig(mode="lora", lr=1e-3)))
    assert err.value.field == "train.mode"
    split = build_split("tallrec", data_dir=str(shared_data / "ml-100k"))

    def one_step(mode: str, init=None):
        return cached_recommender("tiny", split, TrainConfig(mode=mode, lr=1e-3, epochs=1, max_steps=1), 8, 4,
                                  cache_root=tmp_path, progress=False, init=init)

    base, lora = one_step("full"), one_step("lora")
    for mode, init, field in (("lora", base, "mode"), ("full", lora, "init")):   # neither side may be LoRA
        with pytest.raises(InputError) as err:
            one_step(mode, init)
        assert err.value.field == field


def test_the_data_memo_tells_a_run_with_a_base_from_one_without(shared_data):
    """A process that prepared a run's data without a base must not hand it to a run with one."""
    from recircuit.pipeline import _data

    cfg = _tiny(shared_data)
    plain = _data(dataclasses.replace(cfg, base=None))
    based = _data(cfg)
    assert not plain.base and len(based.base) == TINY_BASE.n_train


def test_replay_is_the_same_base_samples_in_original_and_retrain(shared_data, tmp_path, monkeypatch):
    import recircuit.train as train_pkg
    from recircuit.pipeline import (
        Context,
        make_request,
        original_checkpoint,
        original_split,
        retain_split,
        retrain_checkpoint,
    )

    cfg = _tiny(shared_data, base=dataclasses.replace(TINY_BASE, replay=6))
    data = prepare_data(cfg)
    assert len(data.replay) == 6 and {s.uid for s in data.replay} <= {s.uid for s in data.base}
    assert [s.uid for s in prepare_data(cfg).replay] == [s.uid for s in data.replay]  # fixed draw
    request = make_request(data, 0.25, 0)
    orig, gold = original_split(data), retain_split(data, request)
    replay = {s.uid for s in data.replay}
    assert {s.uid for s in orig.train} == {s.uid for s in data.split.train} | replay
    assert {s.uid for s in gold.train} == {s.uid for s in request.retain} | replay
    assert not {s.uid for s in request.forget} & {s.uid for s in gold.train}
    assert orig.params["replay"] == gold.params["replay"] == 6
    seen = []
    real = train_pkg.cached_recommender
    monkeypatch.setattr(train_pkg, "cached_recommender",
                        lambda model, split, *a, **kw: seen.append(split) or real(model, split, *a, **kw))
    ctx = Context(cache_root=str(tmp_path))
    original_checkpoint(cfg, data, ctx)
    retrain_checkpoint(cfg, data, request, ctx)
    trained = [{s.uid for s in sp.train} for sp in seen if "base" not in sp.params]
    assert trained == [{s.uid for s in orig.train}, {s.uid for s in gold.train}]
    # no replay: Original trains on the pool itself, and the config leaves the field out
    plain = prepare_data(_tiny(shared_data))
    assert not plain.replay and original_split(plain) is plain.split
    assert "replay" not in TINY_BASE.to_dict() and BaseConfig.__dataclass_fields__["replay"].default == 0


@pytest.mark.parametrize("replay", [-1, 25, 1.5, True])
def test_a_bad_replay_names_its_field(replay):
    with pytest.raises(InputError) as err:
        validate(PipelineConfig.tiny(base=dataclasses.replace(TINY_BASE, replay=replay)))
    assert err.value.field == "base.replay"


def test_replay_round_trips():
    cfg = PipelineConfig.tiny(data_dir="d", base=dataclasses.replace(TINY_BASE, replay=5))
    back = PipelineConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back.base.replay == 5 and back == cfg


def test_against_control_pools_rates_by_seed_and_pairs_requests_within_a_rate():
    from recircuit.evaluate.stats import paired_difference
    from recircuit.pipeline import MethodRun, against_control

    def run(method, rate, seed, jsd):
        return MethodRun(method, rate, seed, {"forget_jsd": jsd}, "ok", "", {}, {})

    cure = {(0.1, 1): 0.10, (0.1, 2): 0.12, (0.1, 3): 0.11, (0.2, 1): 0.20, (0.2, 2): 0.25, (0.2, 3): 0.21}
    ctrl = {k: v + 0.05 + 0.01 * k[1] for k, v in cure.items()}
    runs = [run("cure", *k, v) for k, v in cure.items()] + [run("cure-random", *k, v) for k, v in ctrl.items()]
    out = against_control(runs, {"forget_jsd": "lower"}, n_boot=200)["cure - cure-random"]
    pooled = out["all"]["forget_jsd"]
    # the rates of one seed share its Original and nest their forget users: one pair per seed, their mean
    assert pooled["n"] == 3 and pooled["n_requests"] == 6 and pooled["unit"].startswith("seed")
    want = paired_difference([np.mean([cure[(r, s)] for r in (0.1, 0.2)]) for s in (1, 2, 3)],
                             [np.mean([ctrl[(r, s)] for r in (0.1, 0.2)]) for s in (1, 2, 3)], n_boot=200)
    assert pooled["mean"] == pytest.approx(want["mean"]) and pooled["ci_low"] == pytest.approx(want["ci_low"])
    per_rate = out["rate=0.2"]["forget_jsd"]
    assert per_rate["n"] == 3 and per_rate["unit"] == "request"
    assert pooled["better"] and not pooled["worse"]           # CURE's JSD is lower on every seed
