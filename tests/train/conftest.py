"""Fixtures for the training tests: a learnable toy task and models trained on it once per module."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from recircuit.data import make_sample
from recircuit.models import tiny_model
from recircuit.train import TrainConfig, answer_loss, evaluate, train


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models train ~5x faster on one thread on the shared 2-core machine (no oversubscription)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_task():
    """A learnable task: the target title alone decides the label."""
    liked = {"Alpha (1990)", "Iota (1995)"}
    titles = ["Alpha (1990)", "Delta (1992)", "Iota (1995)", "Theta (1994)"]
    data = []
    for u in range(48):
        target = titles[u % 4]
        hist = [(i, titles[(u + i) % 4], 5 if i % 2 else 1) for i in range(3)]
        data.append(make_sample(u, hist, (200 + u, target, 5 if target in liked else 1), timestamp=u))
    return data[:32], data[32:]


@pytest.fixture(scope="module")
def full_trained(_one_thread, toy_task, tmp_path_factory):
    """tiny_model(0) fully fine-tuned on the toy task, with the before-training AUC and losses."""
    tr, va = toy_task
    m = tiny_model(0)
    before_auc = evaluate(m, va)["auc"]
    before_loss = answer_loss(m, tr).detach()
    out = tmp_path_factory.mktemp("full")
    cfg = TrainConfig(mode="full", lr=3e-3, epochs=4, batch_size=8, eval_every=4, patience=10)
    res = train(m, tr, va, cfg, out_dir=out, progress=False)
    return SimpleNamespace(model=m, res=res, before_auc=before_auc, before_loss=before_loss, out=out)


@pytest.fixture(scope="module")
def lora_trained(_one_thread, toy_task, tmp_path_factory):
    """tiny_model(0) with LoRA adapters trained on the toy task."""
    tr, va = toy_task
    m = tiny_model(0)
    out = tmp_path_factory.mktemp("lora")
    cfg = TrainConfig(mode="lora", lr=2e-2, epochs=3, batch_size=8, eval_every=4, patience=10)
    res = train(m, tr, va, cfg, out_dir=out, progress=False)
    return SimpleNamespace(model=m, res=res, out=out)
