"""The relearning attack (recircuit.evaluate.relearn) on the tiny model."""

import json

import numpy as np
import pytest
import torch

from recircuit.data import make_sample
from recircuit.errors import InputError
from recircuit.evaluate.metrics import per_sample_loss
from recircuit.evaluate.relearn import (
    RelearnConfig,
    RelearnCurve,
    relearn_attack,
    split_halves,
    steps_to_reach,
)
from recircuit.models import tiny_model

TITLES = ["Alpha (1990)", "Delta (1992)", "Iota (1995)", "Theta (1994)"]


def _liked(n, user0=0, rating=5):
    """Samples of a toy task whose answer is always the same ("Yes." for rating 5, "No." for 1)."""
    return [make_sample(user0 + u, [(i, TITLES[(u + i) % 4], 5) for i in range(2)],
                        (400 + user0 + u, TITLES[u % 4], rating), timestamp=u) for u in range(n)]


@pytest.fixture(scope="module")
def pushed():
    """A tiny model pushed away from the forget samples' answers: trained to answer "No." to them."""
    from recircuit.train import TrainConfig, train

    m = tiny_model(0)
    train(m, _liked(8, rating=1), None, TrainConfig(mode="full", lr=3e-3, epochs=3, batch_size=4, warmup_ratio=0.0,
                                                    schedule="constant"), progress=False)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def test_relearning_brings_the_held_back_half_back_and_leaves_the_model_alone(pushed):
    forget, heldout = _liked(8), _liked(4, user0=50, rating=1)
    before = {k: v.clone() for k, v in pushed.state_dict().items()}
    start = float(np.mean(per_sample_loss(pushed, forget)))
    cfg = RelearnConfig(steps=6, lr=1e-2, batch_size=2, seed=0)
    curve = relearn_attack(pushed, forget, cfg, heldout=heldout)
    assert curve.steps == [0, 1, 2, 3, 4, 5, 6]
    assert sorted(curve.idx_a + curve.idx_b) == list(range(8)) and len(curve.idx_a) == len(curve.idx_b) == 4
    # step 0 is the given model: the mean loss of each half is the model's own per-sample loss
    losses = per_sample_loss(pushed, forget)
    assert curve.loss_b[0] == pytest.approx(float(losses[curve.idx_b].mean()), rel=1e-5)
    assert curve.loss_a[0] == pytest.approx(float(losses[curve.idx_a].mean()), rel=1e-5)
    assert curve.loss_b[0] > 1.0                          # pushed away: the answer "Yes." is unlikely
    assert curve.loss_b[-1] < 0.3 * curve.loss_b[0]       # training on A brings B back
    assert curve.loss_a[-1] < 0.3 * curve.loss_a[0]
    assert len(curve.loss_heldout) == 7
    assert curve.loss_heldout[0] == pytest.approx(float(np.mean(per_sample_loss(pushed, heldout))), rel=1e-5)
    # the given model is untouched: bit-identical weights, its requires_grad flags kept
    after = pushed.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in pushed.parameters())
    assert float(np.mean(per_sample_loss(pushed, forget))) == start


def test_deterministic_for_a_seed_and_recorded_every_eval_every(pushed):
    forget = _liked(7)
    cfg = RelearnConfig(steps=5, lr=1e-3, batch_size=3, seed=1, eval_every=2)
    a, b = relearn_attack(pushed, forget, cfg), relearn_attack(pushed, forget, cfg)
    assert a.to_dict() == b.to_dict() and a.loss_heldout is None
    assert a.steps == [0, 2, 4, 5] and len(a.idx_a) == 4 and len(a.idx_b) == 3
    c = relearn_attack(pushed, forget, RelearnConfig(steps=5, lr=1e-3, batch_size=3, seed=2, eval_every=2))
    assert (c.idx_a, c.idx_b) == tuple(x.tolist() for x in split_halves(7, 2)) and c.idx_b != a.idx_b


def test_split_halves():
    a, b = split_halves(5, seed=3)
    perm = np.random.default_rng(3).permutation(5)
    assert a.tolist() == sorted(perm[:3].tolist()) and b.tolist() == sorted(perm[3:].tolist())
    assert split_halves(2, 0)[0].size == split_halves(2, 0)[1].size == 1


def test_bad_config_names_the_field(pushed):
    for kw, name in (({"steps": 0}, "steps"), ({"lr": 0.0}, "lr"), ({"lr": -1e-3}, "lr"), ({"lr": float("nan")}, "lr"),
                     ({"batch_size": 0}, "batch_size"), ({"eval_every": 0}, "eval_every"), ({"loss": "mse"}, "loss")):
        with pytest.raises(InputError, match=f"field '{name}'"):
            RelearnConfig(**kw)
    with pytest.raises(InputError, match="field 'forget'.*at least 2 forget samples"):
        relearn_attack(pushed, _liked(1), RelearnConfig(steps=1))


def test_steps_to_reach_and_the_json_round_trip():
    curve = RelearnCurve([0, 2, 4, 5], [1.0, 0.8, 0.5, 0.4], [2.0, 1.5, 0.9, 0.7], None, [0, 2], [1, 3],
                         RelearnConfig(steps=5, eval_every=2).to_dict())
    assert steps_to_reach(curve, 1.5) == 2 and steps_to_reach(curve, 0.8) == 5 and steps_to_reach(curve, 2.0) == 0
    assert steps_to_reach(curve, 0.5) is None
    back = RelearnCurve.from_dict(json.loads(json.dumps(curve.to_dict())))
    assert back == curve and RelearnConfig(**back.config) == RelearnConfig(steps=5, eval_every=2)
    with pytest.raises(ValueError, match="one loss per recorded step"):
        RelearnCurve.from_dict({**curve.to_dict(), "loss_b": [1.0]})
