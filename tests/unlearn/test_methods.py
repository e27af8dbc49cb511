import copy

import pytest
import torch

from recircuit.errors import InputError
from recircuit.models.families import projection_params
from recircuit.train import answer_loss
from recircuit.unlearn import (
    Grouping,
    GroupingConfig,
    LoopConfig,
    RequestError,
    available_methods,
    check_request,
    get_method,
    group_masks,
    method_config,
)
from recircuit.unlearn.methods.cure import CURE


def _fixed_grouping():
    names = [f"a{layer}.h{h}" for layer in range(2) for h in range(4)] + ["m0", "m1"]
    groups = {n: "frozen" for n in names}
    groups.update({"a1.h0": "forget_specific", "a1.h1": "forget_specific", "m1": "forget_specific",
                   "m0": "retain_specific", "a0.h2": "task_shared"})
    z = {n: 0.0 for n in names}
    return Grouping(groups, z, z, z, z, {}, {n: "test" for n in names}, GroupingConfig())


def test_cure_forgets_and_leaves_frozen_modules_bit_identical(model, request_data):
    forget, retain, heldout = request_data
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before = answer_loss(model, forget).mean().item()
    grouping = _fixed_grouping()
    res = CURE(grouping=grouping).run(model, forget, retain, LoopConfig(steps=15, lr=3e-3, early_stop=False), progress=False)
    after = answer_loss(model, forget).mean().item()
    assert after > before + 0.05, (before, after)
    assert res.steps == 15 and res.extra["group_sizes"]["forget_specific"] == 3
    masks = group_masks(model, grouping)
    params = projection_params(model)
    changed_any = False
    for name, p in params.items():
        frozen = masks["frozen"][name]
        key = [k for k, v in model.state_dict().items() if v.data_ptr() == p.data_ptr()][0]
        old = before_state[key]
        assert torch.equal(p[frozen], old[frozen]), name
        changed_any |= not torch.equal(p[~frozen], old[~frozen])
    assert changed_any
    # embeddings, norms and unembedding never move
    touched = {p.data_ptr() for p in params.values()}
    for k, v in model.state_dict().items():
        if v.data_ptr() not in touched:
            assert torch.equal(v, before_state[k]), k


@pytest.mark.parametrize("name", ["ga", "graddiff", "npo", "pcgrad", "e2urec"])
def test_baselines_raise_forget_loss(model, request_data, name):
    forget, retain, _ = request_data
    before = answer_loss(model, forget).mean().item()
    loop = LoopConfig(steps=8, lr=2e-3, early_stop=False)
    cfg = method_config("e2urec", e2urec_aug_steps=4, e2urec_aug_lr=3e-3) if name == "e2urec" else None
    res = get_method(name, cfg).run(model, forget, retain, loop, progress=False)
    after = answer_loss(model, forget).mean().item()
    assert res.method == name and res.history
    assert after > before, (name, before, after)


def test_cure_computes_its_own_grouping_with_the_eap_engine(model, request_data):
    forget, retain, _ = request_data
    loop = LoopConfig(steps=2, lr=1e-3, early_stop=False)
    cfg = method_config("cure", importance_samples=4, importance_steps=1, grouping=GroupingConfig(top_k=0.3))
    res = get_method("cure", cfg).run(model, forget, retain, loop, progress=False)
    sizes = res.extra["group_sizes"]
    assert sum(sizes.values()) == 10 and sizes["frozen"] < 10
    rnd = get_method("cure-random", cfg).run(copy.deepcopy(model), forget, retain, loop, progress=False)
    assert sorted(rnd.extra["grouping"]["groups"].values()) == sorted(res.extra["grouping"]["groups"].values())


def test_early_stopping_uses_heldout_not_retrain(model, request_data):
    forget, retain, heldout = request_data
    res = get_method("ga", method_config("ga", ga_bound=None)).run(
        model, forget, retain, LoopConfig(steps=200, lr=5e-3, eval_every=2), heldout=heldout, progress=False)
    assert res.steps < 200 and "held-out level" in res.stopped and res.status == "early_stop"


def test_nan_restores_last_good_weights(model, request_data, monkeypatch):
    forget, retain, _ = request_data
    import recircuit.unlearn.methods.graddiff as gd

    calls = {"n": 0}
    real = gd.ga_loss

    def bad(ce, bound):
        calls["n"] += 1
        out = real(ce, bound)
        return out * float("nan") if calls["n"] == 3 else out

    monkeypatch.setattr(gd, "ga_loss", bad)
    reference = copy.deepcopy(model)
    res = get_method("graddiff").run(model, forget, retain, LoopConfig(steps=10, lr=1e-3, early_stop=False),
                                     original=reference, progress=False)
    # the loss of step 3 is NaN: the weights it was computed on (after step 2) are suspect, so the
    # run goes back to the weights after step 1
    assert "non-finite" in res.stopped and res.steps == 1
    assert res.status == "restored" and res.to_dict()["status"] == "restored" and not res.ok
    assert all(torch.isfinite(p).all() for p in model.parameters())
    monkeypatch.setattr(gd, "ga_loss", real)
    one_step = copy.deepcopy(reference)
    get_method("graddiff").run(one_step, forget, retain, LoopConfig(steps=1, lr=1e-3, early_stop=False),
                               original=reference, progress=False)
    for (name, a), b in zip(model.named_parameters(), one_step.parameters()):
        assert torch.equal(a, b), name


def test_bad_requests_raise(request_data):
    forget, retain, heldout = request_data
    with pytest.raises(RequestError, match="forget set is empty"):
        check_request([], retain)
    with pytest.raises(RequestError, match="in the test set"):
        check_request(forget, retain, test=forget[:2])
    with pytest.raises(RequestError, match="larger than the training set"):
        check_request(forget, retain, train_size=len(forget) - 1)
    with pytest.raises(InputError, match="available"):
        get_method("magic")
    assert {"cure", "cure-random", "ga", "graddiff", "npo", "pcgrad", "e2urec"} <= set(available_methods())


def test_idle_bounded_ga_warns_and_says_so(model, request_data, caplog):
    forget, retain, _ = request_data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # every answer CE is >= 0, so with ga_bound=0 bounded GA has no gradient at any step
    with caplog.at_level("WARNING", logger="recircuit.unlearn.base"):
        res = get_method("ga", method_config("ga", ga_bound=0.0)).run(
            model, forget, retain, LoopConfig(steps=3, lr=1e-3, early_stop=False), progress=False)
    assert res.extra["ga_idle_steps"] == 3 and "did nothing" in res.extra["warnings"][0]
    assert any("ga_bound" in r.getMessage() for r in caplog.records)
    assert all(h["ga_active"] == 0.0 for h in res.history)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # a GA that pushes has no such note
    res = get_method("ga", method_config("ga", ga_bound=None)).run(
        model, forget, retain, LoopConfig(steps=2, lr=1e-3, early_stop=False), progress=False)
    assert "ga_idle_steps" not in res.extra and "warnings" not in res.extra


def test_a_destroyed_model_is_flagged_not_returned_as_ok(model, request_data):
    from recircuit.errors import RunFailed

    forget, retain, _ = request_data
    ok = get_method("npo").run(copy.deepcopy(model), forget, retain, LoopConfig(steps=2, lr=1e-3, early_stop=False),
                               reference=model, progress=False)
    assert ok.status == "ok" and ok.check() is ok and ok.extra["guard"]["samples"] == 8
    res = get_method("npo").run(model, forget, retain, LoopConfig(steps=2, lr=1e6, early_stop=False), progress=False)
    assert res.status == "destroyed" and not res.ok and res.to_dict()["status"] == "destroyed"
    assert "lr 1e+06" in res.stopped
    with pytest.raises(RunFailed, match="destroyed"):
        res.check()


def test_heldout_samples_that_were_trained_on_are_refused(model, request_data):
    forget, retain, heldout = request_data
    with pytest.raises(RequestError, match="held-out samples were trained on"):
        get_method("ga").run(model, forget, retain, LoopConfig(steps=1), heldout=heldout + retain[:1], progress=False)


def test_guard_reuses_the_reference_pass_until_the_reference_changes(model, request_data, monkeypatch):
    import recircuit.unlearn.base as base

    _, retain, _ = request_data
    calls = []
    real = base._answer_state
    monkeypatch.setattr(base, "_answer_state", lambda m, s: calls.append(m) or real(m, s))
    ref = copy.deepcopy(model)
    first = base._reference_state(ref, retain[:4])
    assert base._reference_state(ref, retain[:4]) is first and len(calls) == 1
    base._reference_state(ref, retain[:3])  # other samples: recomputed
    assert len(calls) == 2
    with torch.no_grad():
        next(ref.parameters()).add_(1.0)  # an in-place change: recomputed
    base._reference_state(ref, retain[:3])
    assert len(calls) == 3
