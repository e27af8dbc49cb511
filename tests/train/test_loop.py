import json

import numpy as np
import pytest
import torch

from recircuit.models import score, tiny_model
from recircuit.train import (
    CheckpointMismatchError,
    NonFiniteLossError,
    TrainConfig,
    answer_loss,
    evaluate,
    load_checkpoint,
    load_trained,
    read_meta,
    retrain,
    save_checkpoint,
    train,
)
from recircuit.train.losses import tokenize_with_answers


def test_training_raises_auc_on_a_learnable_task(full_trained, toy_task):
    _, va = toy_task
    after = evaluate(full_trained.model, va)["auc"]
    before = full_trained.before_auc
    assert after >= 0.95 and after > before + 0.2, (before, after)
    res = full_trained.res
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0]
    assert res.metrics["best_valid_auc"] == pytest.approx(max(h["valid_auc"] for h in res.history if "valid_auc" in h))
    assert res.metrics["best_valid_auc"] == pytest.approx(after)  # the best weights were kept
    meta = json.loads((full_trained.out / "model.json").read_text())
    assert meta["kind"] == "full" and meta["train_config"]["seed"] == 0 and meta["history"]
    assert res.checkpoint_path == res.checkpoint == full_trained.out / "model.safetensors"


def test_full_checkpoint_roundtrip(full_trained, toy_task):
    _, va = toy_task
    p1 = score(full_trained.model, va, progress=False)
    fresh = tiny_model(0)
    load_checkpoint(fresh, full_trained.res.checkpoint)
    np.testing.assert_array_equal(score(fresh, va, progress=False), p1)


def test_lora_training_learns_and_roundtrips(lora_trained, toy_task):
    _, va = toy_task
    res = lora_trained.res
    assert res.metrics["best_valid_auc"] >= 0.9
    assert read_meta(res.checkpoint)["lora"] == {"rank": 8, "alpha": 16.0, "dropout": 0.05, "targets": ["q", "v"]}
    p1 = score(lora_trained.model, va, progress=False)
    fresh = tiny_model(0)
    load_checkpoint(fresh, res.checkpoint)
    np.testing.assert_array_equal(score(fresh, va, progress=False), p1)
    built, meta = load_trained(res.checkpoint)  # base model rebuilt from the sidecar
    np.testing.assert_array_equal(score(built, va, progress=False), p1)
    assert meta["kind"] == "lora"


def test_mismatched_base_model_is_refused(lora_trained):
    with pytest.raises(CheckpointMismatchError, match="trained on base model"):
        load_checkpoint(tiny_model(1), lora_trained.res.checkpoint)
    with pytest.raises(CheckpointMismatchError, match="trained on base model"):
        load_checkpoint(tiny_model(0, n_layers=1), lora_trained.res.checkpoint)


def test_training_is_deterministic_on_cpu(toy_task):
    tr, _ = toy_task
    outs = []
    for _ in range(2):
        m = tiny_model(0)
        train(m, tr[:16], None, TrainConfig(mode="lora", lr=1e-2, epochs=1, batch_size=4, seed=3), progress=False)
        outs.append(score(m, tr[:8], progress=False))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_nan_guard_restores_last_good_weights_and_keeps_the_old_checkpoint(toy_task, monkeypatch, tmp_path):
    import recircuit.train.loop as loop
    from recircuit.errors import RunFailed

    tr, _ = toy_task
    good = tiny_model(0)
    st, js = save_checkpoint(good, tmp_path / "model", {"note": "good"})
    before = (st.read_bytes(), js.read_bytes())
    m = tiny_model(0)
    calls = {"n": 0}
    real = loop.answer_loss
    snapshots = []

    def flaky(model, samples, **kw):
        calls["n"] += 1
        snapshots.append([p.detach().clone() for p in model.parameters()])
        out = real(model, samples, **kw)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(loop, "answer_loss", flaky)
    with pytest.raises(NonFiniteLossError, match="last good weights were restored in memory") as info:
        train(m, tr, None, TrainConfig(mode="full", lr=1e-3, epochs=3, batch_size=8), out_dir=tmp_path, progress=False)
    assert isinstance(info.value, RunFailed) and isinstance(info.value, FloatingPointError)
    assert info.value.reason == "non-finite loss" and info.value.step == 2 and len(info.value.history) == 2
    assert calls["n"] == 3
    # restored to the weights before the last applied update (those the 2nd step started from)
    for p, s in zip(m.parameters(), snapshots[1]):
        assert torch.equal(p, s)
    # ... and the good checkpoint already in out_dir was not touched
    assert (st.read_bytes(), js.read_bytes()) == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


def test_divergence_guard_compares_recent_losses_with_the_first_and_ln2():
    from recircuit.train.loop import DIVERGENCE_FACTOR, DIVERGENCE_WINDOW, divergence

    assert DIVERGENCE_WINDOW == 4 and DIVERGENCE_FACTOR == 10.0
    assert divergence([6.0, 5.0, 4.0, 3.0, 2.0]) is None                 # a healthy run
    assert divergence([6.0, 1e5, 1e6]) is None                          # window not full yet ...
    assert divergence([6.0, 1e5, 1e6], final=True) == (5.5e5, 60.0)    # ... but checked at the end
    assert divergence([6.0, 59.0, 61.0, 60.0, 60.5]) is not None        # mean 60.125 > 60
    assert divergence([6.0, 200.0, 10.0, 10.0, 10.0]) is None           # one spike is not divergence
    # the ln 2 floor: from an already fine-tuned start (first loss 0.01), 0.5 is no divergence,
    # although it is 50x the first loss
    assert divergence([0.01, 0.5, 0.5, 0.5, 0.5]) is None
    recent, limit = divergence([0.01, 8.0, 8.0, 8.0, 8.0])
    assert limit == pytest.approx(10 * np.log(2)) and recent == 8.0
    assert divergence([3.0]) is None and divergence([3.0], final=True) is None


def test_collapse_guard_needs_constant_predictions_at_chance():
    from recircuit.train.loop import COLLAPSE_SPREAD, collapsed

    labels = [0, 1, 0, 1, 1, 0]
    hit = collapsed(labels, np.full(6, 0.5))
    assert hit == {"spread": 0.0, "auc": 0.5, "mean": 0.5}
    assert collapsed(labels, np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]))["mean"] == 1.0
    # nearly constant but still ranking perfectly: not chance, not refused
    assert collapsed(labels, 0.5 + 1e-6 * np.array(labels)) is None
    # spread above the threshold: a model that still tells prompts apart is not refused, even at chance
    assert collapsed(labels, 0.5 + 10 * COLLAPSE_SPREAD * np.array([0, 0, 1, 1, 0, 1])) is None
    assert collapsed([1, 1, 1], np.full(3, 0.2)) is not None           # single class: AUC undefined
    assert collapsed(labels, np.full(6, np.nan)) is not None            # NaN predictions


@pytest.mark.parametrize(("lr", "reason"), [(1e6, "collapsed"), (1e2, "diverged")])
def test_absurd_learning_rate_fails_and_keeps_the_old_checkpoint(toy_task, tmp_path, lr, reason):
    from recircuit.train import TrainingFailed

    tr, va = toy_task
    good = tiny_model(0)
    st, js = save_checkpoint(good, tmp_path / "model", {"note": "good"})
    before = (st.read_bytes(), js.read_bytes())
    m = tiny_model(0)
    cfg = TrainConfig(mode="full", lr=lr, epochs=2, batch_size=8, eval_every=2, patience=10)
    with pytest.raises(TrainingFailed, match="lower the learning rate") as info:
        train(m, tr, va, cfg, out_dir=tmp_path, progress=False)
    assert info.value.reason == reason, str(info.value)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    assert (st.read_bytes(), js.read_bytes()) == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


def test_nan_predictions_at_a_validation_fail_the_run(toy_task, monkeypatch, tmp_path):
    import recircuit.train.loop as loop
    from recircuit.train import TrainingFailed

    tr, va = toy_task
    monkeypatch.setattr(loop, "score", lambda model, samples, **kw: np.full(len(samples), np.nan))
    with pytest.raises(TrainingFailed, match="P\\(Yes\\) is NaN or infinite on 16 of 16 validation samples at step 2"):
        train(tiny_model(0), tr, va, TrainConfig(mode="full", lr=1e-3, batch_size=8, eval_every=2), out_dir=tmp_path,
              progress=False)
    assert not list(tmp_path.iterdir())


def test_collapse_guard_without_validation_probes_training_samples(toy_task):
    from recircuit.train import TrainingFailed

    tr, _ = toy_task
    with pytest.raises(TrainingFailed, match="16 training samples") as info:
        train(tiny_model(0), tr, None, TrainConfig(mode="full", lr=1e6, batch_size=8), progress=False)
    assert info.value.reason == "collapsed"


def test_train_config_refuses_bad_values_with_the_field_named():
    from recircuit.errors import InputError

    for kw, field in [({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"batch_size": 0}, "batch_size"),
                      ({"epochs": 0}, "epochs"), ({"max_steps": 0}, "max_steps"), ({"warmup_ratio": 2.0}, "warmup_ratio")]:
        with pytest.raises(InputError, match=f"field '{field}'"):
            TrainConfig(**kw)


def test_answer_loss_falls_with_training_and_prefers_the_right_answer(full_trained, toy_task):
    tr, _ = toy_task
    m = full_trained.model
    flipped = [" No." if s.label else " Yes." for s in tr]
    right = answer_loss(m, tr).detach()
    wrong = answer_loss(m, tr, answers=flipped).detach()
    assert right.shape == (len(tr),)
    assert right.mean() < full_trained.before_loss.mean() - 1.0
    assert right.mean() < wrong.mean()
    assert answer_loss(m, tr, reduction="mean").item() == pytest.approx(right.mean().item(), rel=1e-5)
    assert answer_loss(m, tr, reduction="sum").item() == pytest.approx(right.sum().item(), rel=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        answer_loss(m, tr, reduction="max")


def test_answer_loss_matches_reference_formula(toy_task):
    tr, _ = toy_task
    m = tiny_model(0)
    samples = tr[:5]
    got = answer_loss(m, samples)
    # reference: per sample, unpadded, mean NLL of the answer tokens given everything before them
    tok = m.tokenizer
    for i, s in enumerate(samples):
        p = tok.encode(s.prompt, add_special_tokens=False)
        a = tok.encode(s.answer, add_special_tokens=False)
        ids = torch.tensor([p + a])
        logp = torch.log_softmax(m(ids, return_type="logits")[0].float(), -1)
        ref = -torch.stack([logp[len(p) - 1 + j, a[j]] for j in range(len(a))]).mean()
        torch.testing.assert_close(got[i], ref, atol=1e-4, rtol=1e-4)
    b = tokenize_with_answers(tok, samples)
    assert b.target_mask.sum(1).tolist() == [len(tok.encode(s.answer, add_special_tokens=False)) for s in samples]


def test_cpu_bf16_autocast_trains_close_to_fp32(toy_task):
    tr, _ = toy_task
    losses = {}
    for bf16 in (False, True):
        m = tiny_model(0)
        res = train(m, tr[:8], None, TrainConfig(mode="full", lr=1e-3, batch_size=8, cpu_bf16=bf16), progress=False)
        losses[bf16] = res.history[0]["loss"]
    assert np.isfinite(losses[True])
    assert losses[True] != losses[False] and losses[True] == pytest.approx(losses[False], rel=0.05)


def test_retrain_uses_same_config_and_seed(toy_task):
    tr, va = toy_task
    cfg = TrainConfig(mode="lora", lr=1e-2, epochs=1, batch_size=8, seed=5)
    m1, r1 = retrain(lambda: tiny_model(0), tr[8:24], cfg, va[:8])
    m2 = tiny_model(0)
    r2 = train(m2, tr[8:24], va[:8], cfg, progress=False)
    np.testing.assert_array_equal(score(m1, va, progress=False), score(m2, va, progress=False))
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    assert cfg.lora.targets == ("q", "v")  # the caller's config is not mutated


def test_save_checkpoint_is_atomic_and_no_pickle(tmp_path):
    m = tiny_model(0)
    st, js = save_checkpoint(m, tmp_path / "x", {"seed": 1})
    assert st.suffix == ".safetensors" and not list(tmp_path.glob(".*tmp"))
    assert b"pickle" not in st.read_bytes()[:200]
    assert json.loads(js.read_text())["seed"] == 1


def test_yes_no_loss_is_the_cross_entropy_of_the_score(tiny, toy_samples):
    import numpy as np
    import torch

    from recircuit.models import score
    from recircuit.train.losses import yes_no_loss

    p_yes = score(tiny, toy_samples, batch_size=5, progress=False)
    want = -np.log(np.where([s.label == 1 for s in toy_samples], p_yes, 1 - p_yes))
    with torch.no_grad():
        got = yes_no_loss(tiny, toy_samples).double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert yes_no_loss(tiny, toy_samples, "sum").item() == pytest.approx(float(want.sum()), abs=1e-4)


def test_yes_no_training_raises_auc_and_keeps_cache_keys_stable(tiny, toy_task):
    from recircuit.train import TrainConfig, evaluate, train

    tr, va = toy_task
    before = evaluate(tiny, va)["auc"]
    cfg = TrainConfig(mode="full", lr=3e-3, epochs=4, batch_size=8, loss="yes_no")
    train(tiny, tr, None, cfg, progress=False)
    assert evaluate(tiny, va)["auc"] > max(before, 0.5) + 0.2
    assert cfg.to_dict()["loss"] == "yes_no" and "loss" not in TrainConfig().to_dict()
    with pytest.raises(ValueError, match="loss must be"):
        TrainConfig(loss="mse")


def test_schedules_warm_up_then_decay_or_hold():
    from recircuit.train.loop import lr_lambda

    cos = [lr_lambda(10, 2)(s) for s in range(10)]
    const = [lr_lambda(10, 2, "constant")(s) for s in range(10)]
    assert cos[:2] == const[:2] == [0.5, 1.0]
    assert cos[2] == pytest.approx(1.0) and all(a > b for a, b in zip(cos[2:], cos[3:]))
    assert cos[-1] < 0.05 and const[2:] == [1.0] * 8
    assert TrainConfig(schedule="constant").to_dict()["schedule"] == "constant"
    assert "schedule" not in TrainConfig().to_dict()
    with pytest.raises(ValueError, match="schedule must be"):
        TrainConfig(schedule="linear")


def test_constant_schedule_keeps_the_peak_learning_rate(toy_task, monkeypatch):
    seen: list[float] = []
    real_step = torch.optim.AdamW.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    tr, _ = toy_task
    model = tiny_model(seed=0)
    train(model, tr[:16], None, TrainConfig(mode="full", lr=1e-3, batch_size=4, warmup_ratio=0.0,
                                            schedule="constant"), progress=False)
    assert seen == [pytest.approx(1e-3)] * 4


def test_an_evaluation_that_answers_almost_always_the_same_is_never_kept(toy_task, monkeypatch):
    """Validation AUC alone kept a model that answers "Yes." to everything; one answer is not eligible."""
    import recircuit.train.loop as loop

    tr, va = toy_task
    labels = np.array([s.label for s in va])
    good = np.where(labels == 1, 0.7, 0.3)
    good[:3] = 1 - good[:3]                                   # a mixed model with AUC < 1
    yes = 0.6 + 0.3 * labels                                  # AUC 1.0, but "Yes." to every prompt
    seq = iter([good, yes, yes, yes])
    monkeypatch.setattr(loop, "score", lambda model, samples, **kw: next(seq))
    res = train(tiny_model(0), tr, va, TrainConfig(mode="full", lr=1e-3, batch_size=8, eval_every=1, patience=5,
                                                   max_steps=4), progress=False)
    assert res.metrics["best_step"] == 1 and res.metrics["best_valid_auc"] < 1.0
    assert [h.get("one_answer", False) for h in res.history] == [False, True, True, True]
    assert "one_answer" not in res.metrics
    assert loop.one_answer(yes) and not loop.one_answer(good)


def test_when_every_evaluation_is_one_answer_the_best_auc_is_kept_and_flagged(toy_task, monkeypatch):
    import recircuit.train.loop as loop

    tr, va = toy_task
    labels = np.array([s.label for s in va])
    seq = iter([0.6 + 0.1 * labels, 0.6 + 0.3 * labels * (np.arange(len(labels)) % 2)])
    monkeypatch.setattr(loop, "score", lambda model, samples, **kw: next(seq))
    res = train(tiny_model(0), tr, va, TrainConfig(mode="full", lr=1e-3, batch_size=8, eval_every=1, patience=5,
                                                   max_steps=2), progress=False)
    assert res.metrics["one_answer"] is True and res.metrics["best_step"] == 1
