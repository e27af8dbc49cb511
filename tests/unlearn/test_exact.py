"""Exact unlearning (SISA, APA): partitions, aggregation formulas, weights and bit-exact deletion, on the tiny model."""

import json

import numpy as np
import pytest
import torch

from recircuit.data import make_sample
from recircuit.data.requests import sample_key
from recircuit.errors import InputError
from recircuit.models import tiny_model
from recircuit.train import TrainConfig
from recircuit.unlearn import get_method, method_config
from recircuit.unlearn.ensemble import (
    ShardEnsemble,
    adapter_outputs,
    apa_outputs,
    apa_weights,
    merge_adapters,
    shard_seed,
    sisa_outputs,
    train_shard,
    validation_errors,
)
from recircuit.unlearn.shards import (
    balanced_assignment,
    check_partition,
    prompt_embeddings,
    random_partition,
    semantic_partition,
    user_partition,
)

TITLES = ["Alpha (1990)", "Beta (1991)", "Gamma (1992)", "Delta (1993)", "Epsilon (1994)", "Zeta (1995)",
          "Eta (1996)", "Theta (1997)", "Iota (1998)", "Kappa (1999)", "Lambda (2000)"]
CFG = TrainConfig(mode="lora", lr=5e-3, epochs=1, batch_size=4)


@pytest.fixture(scope="module")
def samples():
    """24 samples of 12 users with pairwise different prompts and both labels."""
    out = []
    for u in range(12):
        for j in range(2):
            hist = [(i, TITLES[(u + 2 * i + j) % 11], 5 if (u + i) % 2 else 1) for i in range(2 + (u + j) % 3)]
            out.append(make_sample(u, hist, (500 + 2 * u + j, TITLES[(3 * u + j) % 11], 5 if (u + j) % 2 else 1),
                                   timestamp=j))
    assert len({s.prompt for s in out}) == len(out)
    return out


@pytest.fixture()
def base():
    return tiny_model(0)


def json_hash(d: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _state(m) -> dict:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- partitions -------------------------------------------------------------------------------

def test_balanced_assignment_hand_worked():
    # cosine distances to c0=(1,0): s0 0, s1 0.0061, s2 0.0299, s3 1; to c1=(0,1): 1, 0.8939, 0.7575, 0.
    # Walk: (s0,c0) (s3,c1) (s1,c0) -> c0 holds t=2; (s2,c0) is refused; ... (s2,c1) places s2 on c1.
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0]])
    centres = np.eye(2)
    assert balanced_assignment(emb, centres, max_size=2).tolist() == [0, 0, 1, 1]
    assert balanced_assignment(emb, centres, max_size=3).tolist() == [0, 0, 0, 1]    # no cap: nearest centre
    # a tie in distance goes to the lower centre index
    assert balanced_assignment(np.array([[1.0, 1.0], [1.0, 1.0]]), centres, max_size=1).tolist() == [0, 1]


def test_semantic_partition_is_balanced_complete_and_seeded():
    emb = np.random.default_rng(0).normal(size=(50, 8))
    shards = semantic_partition(emb, k=4, max_size=13, seed=3)
    check_partition(shards, 50, max_size=13)
    assert max(len(s) for s in shards) <= 13
    assert semantic_partition(emb, k=4, max_size=13, seed=3) == shards
    loose = semantic_partition(emb, k=4, max_size=40, seed=3)           # a loose cap lets clusters be uneven
    check_partition(loose, 50, max_size=40)
    default = semantic_partition(emb, k=4, seed=3)                       # default t = ceil(50 / 4) = 13
    check_partition(default, 50, max_size=13)


def test_random_and_user_partitions(samples):
    shards = random_partition(24, 5, seed=1)
    check_partition(shards, 24)
    assert sorted(len(s) for s in shards) == [4, 5, 5, 5, 5] and random_partition(24, 5, seed=1) == shards
    by_user = user_partition([s.user_id for s in samples], 3)
    check_partition(by_user, 24)
    for shard in by_user:                       # every user's samples in one shard
        users = {samples[i].user_id for i in shard}
        assert all(samples[i].user_id not in users for other in by_user if other is not shard for i in other)


def test_partition_bad_input_is_refused_with_the_fix():
    emb = np.random.default_rng(0).normal(size=(6, 4))
    with pytest.raises(InputError, match="k=7 shards for 6 training samples.*at most 6"):
        semantic_partition(emb, k=7)
    with pytest.raises(InputError, match="t=2 is too small.*at least 3"):
        semantic_partition(emb, k=2, max_size=2)
    with pytest.raises(InputError, match=r"empty.*fewer shards"):
        user_partition([1, 1, 1, 2, 2, 2], k=3)            # two users cannot fill three shards
    with pytest.raises(InputError, match="at least 1 shard"):
        random_partition(6, 0)
    with pytest.raises(InputError, match="exactly once"):
        check_partition([[0, 1], [1, 2]], 3)


def test_prompt_embeddings_read_the_final_residual(base, samples):
    emb = prompt_embeddings(base, samples[:5], batch_size=2, progress=False)
    assert emb.shape == (5, base.cfg.d_model)
    single = prompt_embeddings(base, samples[3:4], progress=False)
    np.testing.assert_allclose(emb[3], single[0], atol=1e-5)      # left padding does not move the last token
    from recircuit.models.scoring import tokenize_prompts

    _, cache = base.run_with_cache(tokenize_prompts(base.tokenizer, [samples[3].prompt]).input_ids)
    np.testing.assert_allclose(single[0], cache["ln_final.hook_in"][0, -1].double().numpy(), atol=1e-5)


# --- weights --------------------------------------------------------------------------------------

def test_adaptive_weights_against_a_hand_computed_softmax():
    query = np.array([[1.0, 0.0]])
    valid = np.array([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0]])      # the 2 nearest are rows 1 and 0
    errors = np.array([[0.1, 0.5, 0.3], [0.3, 0.1, 0.3], [0.9, 0.9, 0.0]])
    w = apa_weights(query, valid, errors, n_neighbors=2, tau=10.0)
    err = np.array([0.2, 0.3, 0.3])                               # mean over rows 0 and 1
    expected = np.exp(-10 * err) / np.exp(-10 * err).sum()
    np.testing.assert_allclose(w[0], expected, rtol=1e-12)
    np.testing.assert_allclose(apa_weights(query, valid, errors, 2, tau=0.0)[0], [1 / 3] * 3)
    assert apa_weights(query, valid, errors, 2, scheme="major")[0].tolist() == [1.0, 0.0, 0.0]
    np.testing.assert_allclose(apa_weights(query, valid, errors, 2, scheme="average")[0], [1 / 3] * 3)
    dead = errors.copy()
    dead[:, 0] = np.nan                                            # an emptied shard gets weight 0
    w = apa_weights(query, valid, dead, 2, tau=10.0)[0]
    assert w[0] == 0 and w[1:].sum() == pytest.approx(1.0) and w[1] == pytest.approx(0.5)
    np.testing.assert_allclose(apa_weights(query, valid, dead, 2, tau=0.0)[0], [0.0, 0.5, 0.5])
    assert apa_weights(query, valid, dead, 2, scheme="major")[0].tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(InputError, match="tau"):
        apa_weights(query, valid, errors, 2, tau=-1)
    with pytest.raises(InputError, match="weight scheme"):
        apa_weights(query, valid, errors, 2, scheme="best")


# --- ensembles --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted(samples):
    m = tiny_model(0)
    shards = random_partition(len(samples), 3, seed=0)
    ens = ShardEnsemble.fit(m, samples, shards, CFG, seed=4, progress=False)
    return ens


def test_fit_leaves_the_base_bit_identical_and_adapters_differ(samples, base):
    before = _state(base)
    base.train()
    flags = [p.requires_grad for p in base.parameters()]
    ens = ShardEnsemble.fit(base, samples[:12], random_partition(12, 2, 0), CFG, progress=False)
    assert _equal(before, _state(base))
    assert base.training and [p.requires_grad for p in base.parameters()] == flags    # mode and flags given back
    rng = torch.get_rng_state()
    sisa_outputs(base, ens, samples[:2], progress=False)
    assert torch.equal(rng, torch.get_rng_state())               # serving leaves the caller's RNG alone
    assert [p.requires_grad for p in base.parameters()] == flags
    assert not torch.equal(ens.adapters[0]["blocks.0.q.B"], ens.adapters[1]["blocks.0.q.B"])
    with pytest.raises(InputError, match="LoRA"):
        ShardEnsemble.fit(base, samples[:12], random_partition(12, 2, 0), TrainConfig(mode="full"), progress=False)


def test_aggregation_levels_match_the_formulas(fitted, base, samples):
    w = np.array([0.2, 0.5, 0.3])
    ab, ba = merge_adapters(fitted, w, "ab"), merge_adapters(fitted, w, "ba")
    for name in ("blocks.0.q", "blocks.1.v"):
        A = sum(wk * a[f"{name}.A"] for wk, a in zip(w, fitted.adapters))
        B = sum(wk * a[f"{name}.B"] for wk, a in zip(w, fitted.adapters))
        torch.testing.assert_close(ab[f"{name}.A"], A)
        torch.testing.assert_close(ab[f"{name}.B"], B)
        BA = sum(wk * (a[f"{name}.B"] @ a[f"{name}.A"]) for wk, a in zip(w, fitted.adapters))
        torch.testing.assert_close(ba[f"{name}.delta"], BA)
    test = samples[:6]
    # the BA level scores like a model whose weights carry W + scale * sum_k w_k B_k A_k
    from recircuit.models.families import projections
    from recircuit.train.losses import score_and_loss

    ref = tiny_model(0)
    with torch.no_grad():
        for name, proj in projections(ref, ("q", "v")).items():
            proj.module.weight.add_(fitted.lora.scale * ba[f"{name}.delta"])
    p_ref, l_ref = score_and_loss(ref, test)
    p, loss = apa_outputs(base, fitted, test, np.tile(w, (6, 1)), "ba", progress=False)
    np.testing.assert_allclose(p, p_ref, atol=1e-6)
    np.testing.assert_allclose(loss, l_ref, atol=1e-5)
    # one-hot weights at the AB level are adapter k alone, exactly
    p_k, l_k = adapter_outputs(base, fitted, test, progress=False)
    p1, l1 = apa_outputs(base, fitted, test, np.tile([0.0, 1.0, 0.0], (6, 1)), "ab", progress=False)
    np.testing.assert_array_equal(p1, p_k[:, 1])
    np.testing.assert_array_equal(l1, l_k[:, 1])
    # SISA: the mean P(Yes) and the mixture's answer loss
    p_s, l_s = sisa_outputs(base, fitted, test, progress=False)
    np.testing.assert_allclose(p_s, p_k.mean(axis=1))
    # the mixture's answer likelihood: each adapter's P(answer) = exp(-T * mean token CE), averaged
    from recircuit.models.tokenize import encode_continuation

    for i, smp in enumerate(test):
        t = len(encode_continuation(base.tokenizer, smp.answer))
        assert t >= 2                                            # " Yes." is more than one token
        p_answer = np.mean([np.exp(-t * l_k[i, k]) for k in range(3)])
        assert l_s[i] == pytest.approx(-np.log(p_answer) / t, rel=1e-9)
    assert _equal(_state(base), _state(tiny_model(0)))          # every aggregation left the base as it was


def test_deletion_is_bit_identical_to_training_from_scratch(fitted, samples):
    base = tiny_model(0)
    ens = fitted.copy()
    before = [dict(a) for a in ens.adapters]
    target = ens.shards[1]
    gone = {target[0], target[2]}
    rec = ens.delete(base, gone, samples, progress=False)
    assert rec["affected"] == [1] and rec["deleted"] == 2 and rec["before"] != rec["after"]
    assert _equal(ens.adapters[0], before[0]) and _equal(ens.adapters[2], before[2])
    by_id = {sample_key(s): s for s in samples}
    keep = [u for u in target if u not in gone]
    assert ens.shards[1] == keep
    scratch = train_shard(tiny_model(0), [by_id[u] for u in keep], CFG, shard_seed(4, 1))
    assert _equal(ens.adapters[1], scratch)
    # the whole ensemble equals one fitted from scratch on the remaining samples, same partition
    rest = [s for s in samples if sample_key(s) not in gone]
    index = {sample_key(s): i for i, s in enumerate(rest)}
    fresh = ShardEnsemble.fit(tiny_model(0), rest, [[index[u] for u in s] for s in ens.shards], CFG, seed=4,
                              progress=False)
    assert all(_equal(a, b) for a, b in zip(fresh.adapters, ens.adapters))
    assert fresh.state_hash() == ens.state_hash()


def test_parallel_shard_training_on_ray_equals_one_thread_training(samples):
    ray = pytest.importorskip("ray")
    shards = random_partition(len(samples), 3, seed=0)
    ray.init(num_cpus=2, include_dashboard=False)        # one local Ray for the fit and the deletion
    threads = torch.get_num_threads()
    try:
        par = ShardEnsemble.fit(tiny_model(0), samples, shards, CFG, seed=4, workers=2, progress=False)
        torch.set_num_threads(1)                   # a Ray task trains on one core
        ref = ShardEnsemble.fit(tiny_model(0), samples, shards, CFG, seed=4, progress=False)
        gone = {par.shards[2][1]}
        rec = par.delete(tiny_model(0), gone, samples, progress=False)    # the affected shard, on Ray again
        ref.delete(tiny_model(0), gone, samples, progress=False)
    finally:
        torch.set_num_threads(threads)
        ray.shutdown()
    assert rec["affected"] == [2] and par.workers == 2
    assert rec["runner_seconds"] == 0.0                 # Ray was up already: no start-up inside the deletion
    assert par.state_hash() == ref.state_hash()


def test_a_failed_retraining_changes_nothing(fitted, samples, monkeypatch):
    import recircuit.unlearn.ensemble as E

    ens = fitted.copy()
    h, shards = ens.state_hash(), [list(x) for x in ens.shards]

    def boom(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(E, "train_shards", boom)
    with pytest.raises(RuntimeError):
        ens.delete(tiny_model(0), {ens.shards[0][0]}, samples, progress=False)
    assert ens.state_hash() == h and ens.shards == shards and ens.audit == []    # a retry deletes again


def test_a_base_with_adapters_is_refused(samples):
    from recircuit.train.lora import attach_lora

    m = tiny_model(0)
    attach_lora(m)
    with pytest.raises(InputError, match="already has LoRA adapters"):
        ShardEnsemble.fit(m, samples[:12], random_partition(12, 2, 0), CFG, progress=False)


def test_the_ba_level_on_a_transposed_weight_family(samples):
    from recircuit.models.families import projections
    from recircuit.train.losses import score_and_loss

    base = tiny_model(0, family="gpt2")                      # Conv1D weights are stored [in, out]
    ens = ShardEnsemble.fit(base, samples[:12], random_partition(12, 2, 0), CFG, progress=False)
    w = np.array([0.3, 0.7])
    ba = merge_adapters(ens, w, "ba")
    ref = tiny_model(0, family="gpt2")
    with torch.no_grad():
        for name, proj in projections(ref, ("q", "v")).items():
            d = ens.lora.scale * ba[f"{name}.delta"]
            proj.module.weight.add_(d.T if proj.layout == "conv1d" else d)
    p_ref, _ = score_and_loss(ref, samples[:4])
    p, _ = apa_outputs(base, ens, samples[:4], np.tile(w, (4, 1)), "ba", progress=False)
    np.testing.assert_allclose(p, p_ref, atol=1e-6)
    # and the AB level equals attaching the averaged A and B as one adapter
    ab = merge_adapters(ens, w, "ab")
    p_ab, _ = apa_outputs(base, ens, samples[:4], np.tile(w, (4, 1)), "ab", progress=False)
    from recircuit.unlearn.ensemble import adapter_applied

    plain = tiny_model(0, family="gpt2")
    with adapter_applied(plain, ab, ens.lora):
        p_ref_ab, _ = score_and_loss(plain, samples[:4])
    np.testing.assert_array_equal(p_ab, p_ref_ab)
    assert _equal(_state(base), _state(tiny_model(0, family="gpt2")))


def test_a_deletion_touching_no_shard_retrains_nothing_and_records_chain(fitted, samples, monkeypatch):
    ens = fitted.copy()
    h = ens.state_hash()
    import recircuit.unlearn.ensemble as E

    monkeypatch.setattr(E, "train_shard", lambda *a, **k: pytest.fail("no shard should be retrained"))
    r1 = ens.delete(tiny_model(0), {"u999:i1:t1"}, samples, progress=False)
    assert r1["affected"] == [] and r1["deleted"] == 0 and r1["requested"] == 1 and r1["before"] == r1["after"] == h
    assert r1["runner_seconds"] == 0.0            # a one-worker ensemble starts no Ray
    r2 = ens.delete(tiny_model(0), set(), samples, progress=False)
    assert r2["previous"] == r1["record_hash"] and r2["request"] == 1


def test_a_deletion_must_use_the_fit_validation_samples(samples):
    base = tiny_model(0)
    cfg = TrainConfig(mode="lora", lr=5e-3, epochs=1, batch_size=4, eval_every=2, patience=1)
    ens = ShardEnsemble.fit(base, samples[:12], random_partition(12, 2, 0), cfg, valid=samples[20:], progress=False)
    h = ens.state_hash()
    for wrong in (None, samples[18:]):               # none, or others: the retraining would not be from scratch
        with pytest.raises(InputError, match="validation samples differ"):
            ens.delete(base, {ens.shards[0][0]}, samples, valid=wrong, progress=False)
    assert ens.state_hash() == h and ens.audit == []
    rec = ens.delete(base, {ens.shards[0][0]}, samples, valid=samples[20:], progress=False)
    assert rec["affected"] == [0]


def test_exact_method_refuses_or_reports_forget_samples_outside_its_shards(samples, caplog):
    base = tiny_model(0)
    sisa = get_method("sisa", method_config("sisa", k=2, partition="random", shard_batch_size=4))
    sisa.fit(base, samples[:12], progress=False)
    with pytest.raises(InputError, match="none of the 2 forget samples"):
        sisa.run(base, samples[12:14], samples[:12], progress=False)
    with caplog.at_level("WARNING"):
        res = sisa.run(base, [samples[0], samples[13]], samples[1:12], progress=False)
    assert res.extra["audit"]["deleted"] == 1 and "1 of 2 forget samples were in no shard" in res.stopped
    assert "in no shard" in caplog.text


def test_an_ensemble_saved_without_its_validation_hash_refuses_deletions(fitted, samples, tmp_path):
    import recircuit.unlearn.ensemble as E

    fitted.save(tmp_path)
    meta = json.loads((tmp_path / "ensemble.json").read_text())
    del meta["valid_hash"]                                   # as an older version saved it
    meta["meta_sha256"] = E._meta_hash(meta)
    (tmp_path / "ensemble.json").write_text(json.dumps(meta))
    old = ShardEnsemble.load(tmp_path)
    assert old.state_hash() == fitted.state_hash()           # it still serves
    with pytest.raises(InputError, match="fit the ensemble again"):
        old.delete(tiny_model(0), {old.shards[0][0]}, samples, progress=False)


def test_an_emptied_shard_drops_out_of_the_aggregation(fitted, samples):
    ens = fitted.copy()
    base = tiny_model(0)
    ens.delete(base, set(ens.shards[0]), samples, progress=False)
    assert ens.adapters[0] is None and ens.live == [1, 2]
    p, _ = sisa_outputs(base, ens, samples[:3], progress=False)
    p_k, _ = adapter_outputs(base, ens, samples[:3], progress=False)
    assert np.isnan(p_k[:, 0]).all()
    np.testing.assert_allclose(p, p_k[:, 1:].mean(axis=1))
    errs = validation_errors(base, ens, samples[:4], progress=False)
    assert np.isnan(errs[:, 0]).all() and np.isfinite(errs[:, 1:]).all()


def test_save_load_round_trip_and_tampering(fitted, tmp_path):
    ens = fitted.copy()
    ens.save(tmp_path / "ens")
    back = ShardEnsemble.load(tmp_path / "ens")
    assert back.state_hash() == ens.state_hash() and back.config == ens.config and back.shards == ens.shards
    meta = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    meta["shards"][0] = meta["shards"][0][1:]                  # a sample quietly dropped from a shard
    (tmp_path / "ens" / "ensemble.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="sidecar"):
        ShardEnsemble.load(tmp_path / "ens")
    ens.save(tmp_path / "ens")
    data = bytearray((tmp_path / "ens" / "ensemble.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "ens" / "ensemble.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256"):
        ShardEnsemble.load(tmp_path / "ens")
    with pytest.raises(InputError, match="missing"):
        ShardEnsemble.load(tmp_path / "nowhere")


# --- the methods -----------------------------------------------------------------------------------

def test_apa_method_deletes_and_refreshes_only_the_affected_errors(samples):
    base = tiny_model(0)
    pool, valid = samples[:18], samples[18:]
    cfg = method_config("apa", k=3, partition="random", shard_lr=5e-3, shard_batch_size=4, n_neighbors=2, tau=100.0)
    apa = get_method("apa", cfg, valid=valid)
    apa.fit(base, pool, progress=False)
    errors0 = apa.valid_errors.copy()
    forget = [s for s in pool if sample_key(s) in set(apa.ensemble.shards[2][:2])]
    retain = [s for s in pool if s not in forget]
    res = apa.run(base, forget, retain, progress=False)
    assert res.extra["affected"] == [2] and res.extra["audit"]["deleted"] == 2
    chained = {k: v for k, v in apa.ensemble.audit[-1].items() if k != "record_hash"}
    assert "serving_prep_seconds" in res.extra["audit"] and "serving_prep_seconds" not in chained
    assert json_hash(chained) == apa.ensemble.audit[-1]["record_hash"]       # the chained record is as hashed
    np.testing.assert_array_equal(apa.valid_errors[:, :2], errors0[:, :2])
    np.testing.assert_allclose(apa.valid_errors, validation_errors(base, apa.ensemble, valid, progress=False))
    p, loss = res.model.answer_outputs(samples[:4])
    w = apa.weights_for(base, samples[:4])
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    p_ref, _ = apa_outputs(base, apa.ensemble, samples[:4], w, "ab", progress=False)
    np.testing.assert_array_equal(p, p_ref)
    with pytest.raises(InputError, match="validation samples"):
        get_method("apa", cfg).fit(base, pool, progress=False)


def test_exact_configs_refuse_bad_settings():
    with pytest.raises(InputError, match="partition"):
        method_config("sisa", partition="alphabetical")
    with pytest.raises(InputError, match="level"):
        method_config("apa", level="abc")
    with pytest.raises(InputError, match="n_neighbors"):
        method_config("apa", n_neighbors=0)
