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
    retrain,
    save_checkpoint,
    train,
)


def test_training_raises_auc_on_a_learnable_task(toy_task, tmp_path):
    tr, va = toy_task
    m = tiny_model(0)
    before = evaluate(m, va)["auc"]
    res = train(m, tr, va, TrainConfig(mode="full", lr=3e-3, epochs=6, batch_size=8, eval_every=4, patience=10), out_dir=tmp_path)
    after = evaluate(m, va)["auc"]
    assert after >= 0.95 and after > before + 0.2, (before, after)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < losses[0]
    assert res.metrics["best_valid_auc"] == pytest.approx(max(h["valid_auc"] for h in res.history if "valid_auc" in h))
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["kind"] == "full" and meta["train_config"]["seed"] == 0 and meta["history"]


def test_lora_training_learns_and_roundtrips(toy_task, tmp_path):
    tr, va = toy_task
    m = tiny_model(0)
    cfg = TrainConfig(mode="lora", lr=2e-2, epochs=6, batch_size=8, eval_every=4, patience=10)
    res = train(m, tr, va, cfg, out_dir=tmp_path)
    assert res.metrics["best_valid_auc"] >= 0.9
    p1 = score(m, va, progress=False)
    fresh = tiny_model(0)
    load_checkpoint(fresh, res.checkpoint)
    np.testing.assert_array_equal(score(fresh, va, progress=False), p1)
    with pytest.raises(CheckpointMismatchError, match="trained on base model"):
        load_checkpoint(tiny_model(1), res.checkpoint)


def test_training_is_deterministic_on_cpu(toy_task):
    tr, _ = toy_task
    outs = []
    for _ in range(2):
        m = tiny_model(0)
        train(m, tr[:16], None, TrainConfig(mode="lora", lr=1e-2, epochs=1, batch_size=4, seed=3), progress=False)
        outs.append(score(m, tr[:8], progress=False))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_nan_guard_restores_last_good_weights(toy_task, monkeypatch):
    import recircuit.train.loop as loop

    tr, _ = toy_task
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
    with pytest.raises(NonFiniteLossError, match="last good weights were restored"):
        train(m, tr, None, TrainConfig(mode="full", lr=1e-3, epochs=3, batch_size=8), progress=False)
    assert calls["n"] == 3
    # restored to the weights before the last applied update (those the 2nd step started from)
    for p, s in zip(m.parameters(), snapshots[1]):
        assert torch.equal(p, s)


def test_answer_loss_falls_with_training_and_prefers_the_right_answer(toy_task):
    tr, _ = toy_task
    m = tiny_model(0)
    flipped = [" No." if s.label else " Yes." for s in tr]
    before = answer_loss(m, tr).detach()
    train(m, tr, None, TrainConfig(mode="full", lr=3e-3, epochs=6, batch_size=8), progress=False)
    right = answer_loss(m, tr).detach()
    wrong = answer_loss(m, tr, answers=flipped).detach()
    assert right.shape == (len(tr),)
    assert right.mean() < before.mean() - 1.0
    assert right.mean() < wrong.mean()
    assert answer_loss(m, tr, reduction="mean").item() == pytest.approx(right.mean().item(), rel=1e-5)


def test_retrain_uses_same_config_and_seed(toy_task, tmp_path):
    tr, va = toy_task
    cfg = TrainConfig(mode="lora", lr=1e-2, epochs=1, batch_size=8, seed=5)
    m1, _ = retrain(lambda: tiny_model(0), tr[8:], cfg, va)
    m2 = tiny_model(0)
    train(m2, tr[8:], va, cfg)
    np.testing.assert_array_equal(score(m1, va, progress=False), score(m2, va, progress=False))


def test_save_checkpoint_is_atomic_and_no_pickle(tmp_path):
    m = tiny_model(0)
    st, js = save_checkpoint(m, tmp_path / "x", {"seed": 1})
    assert st.suffix == ".safetensors" and not list(tmp_path.glob(".*tmp"))
    assert b"pickle" not in st.read_bytes()[:200]
