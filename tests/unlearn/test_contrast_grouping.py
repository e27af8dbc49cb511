"""Contrast grouping: shares, the shared component removed, permutation p-values with Benjamini-Hochberg,
a descriptive bootstrap interval per module; CURE on it."""

import itertools
import json

import numpy as np
import pytest
import torch

from recircuit import unlearn as U
from recircuit.circuits.corruptions import (
    CORRUPTIONS,
    CorruptionSpec,
    corruption_names,
    get_corruption,
)
from recircuit.errors import InputError
from recircuit.models import tiny_tokenizer
from recircuit.models.families import projection_params
from recircuit.unlearn import (
    Grouping,
    GroupingConfig,
    contrast_grouping,
    group_masks,
    group_modules,
)
from recircuit.unlearn.grouping import benjamini_hochberg, permutation_pvalues
from recircuit.unlearn.methods.cure import self_contained_corruptions

# forget rows: module a carries extra share in every row; b has share 0.3 in every row of both sets
F = np.array([[5.0, 3, 1, 1], [4, 3, 2, 1]])
R = np.array([[2.0, 3, 3, 2], [3, 3, 2, 2]])
NAMES = ["a", "b", "c", "d"]


def _cfg(**kw):
    return GroupingConfig(mode="contrast", **kw)


def _exact_bootstrap(forget, retain):
    """Every equally likely bootstrap outcome of two forget and two retain rows (4 x 4 ordered draws):
    the contrast ``f - beta r`` of each, by hand (no code shared with the library)."""
    fs, rs = forget / forget.sum(1, keepdims=True), retain / retain.sum(1, keepdims=True)
    out = []
    for i in itertools.product(range(len(fs)), repeat=len(fs)):
        for j in itertools.product(range(len(rs)), repeat=len(rs)):
            f, r = fs[list(i)].mean(0), rs[list(j)].mean(0)
            out.append(f - np.median(f / r) * r)
    return np.array(out)


def test_identical_rows_give_the_hand_computed_contrast():
    # shares f = (.4, .4, .2), r = (.3, .4, .3): <f,r> = .34 = <r,r>, so beta = 1 and c = (.1, 0, -.1)
    g = contrast_grouping(["a", "b", "c"], np.array([[4.0, 4, 2]] * 3), np.array([[3.0, 4, 3]] * 2), _cfg(top_k=0.34))
    assert g.thresholds["beta"] == pytest.approx(1.0) and g.thresholds["k"] == 2
    assert [g.contrast[m] for m in "abc"] == pytest.approx([0.1, 0.0, -0.1], abs=1e-12)
    assert g.contrast_low == pytest.approx(g.contrast, abs=1e-12)       # every resample is the same
    assert g.contrast_high == pytest.approx(g.contrast, abs=1e-12)
    # 3 + 2 rows have only C(5, 3) = 10 splits: no p-value much below 1/10 (a permutation estimate of it), nothing passes BH at .05 over 6 tests
    assert min(g.p_forget.values()) > 0.09 and g.sizes()["forget_specific"] == g.sizes()["retain_specific"] == 0
    assert g.thresholds["p_min"] == pytest.approx(0.1) and g.thresholds["bh_threshold"] == pytest.approx(0.05 / 6)
    assert g.forget_scores == pytest.approx({"a": 0.4, "b": 0.4, "c": 0.2})
    assert g.retain_scores == pytest.approx({"a": 0.3, "b": 0.4, "c": 0.3})
    # 6 + 6 of the same rows (same contrast), C(12, 6) = 924 splits: the observed one is the most extreme for
    # a and c, so p = (1 + n_boot / 924 on average) / 2001 < BH's .05 / 6
    g = contrast_grouping(["a", "b", "c"], np.array([[4.0, 4, 2]] * 6), np.array([[3.0, 4, 3]] * 6),
                          _cfg(top_k=0.34, n_boot=2000))
    assert [g.contrast[m] for m in "abc"] == pytest.approx([0.1, 0.0, -0.1], abs=1e-12)
    assert g.p_forget["a"] == g.p_retain["c"] < 0.05 / 6 and g.p_forget["c"] == g.p_retain["a"] == 1.0
    # b is equally important to both: not specific; it has the largest mean share (.4), so task-shared
    assert g.groups == {"a": "forget_specific", "b": "task_shared", "c": "retain_specific"}
    assert "not significant" in g.reasons["b"]
    # f = (.5, .25, .25), r = (.25, .25, .5): ratios (2, 1, .5), median 1, so beta = 1 and c = (.25, 0, -.25):
    # b has the same share on both sides and is not specific (a least-squares beta, 5/6, made it so)
    g = contrast_grouping(["a", "b", "c"], np.array([[2.0, 1, 1]] * 2), np.array([[1.0, 1, 2]]), _cfg(top_k=1.0))
    assert g.thresholds["beta"] == pytest.approx(1.0)
    assert [g.contrast[m] for m in "abc"] == pytest.approx([0.25, 0.0, -0.25])
    g = contrast_grouping(["a", "b", "c"], np.array([[2.0, 1, 1]] * 8), np.array([[1.0, 1, 2]] * 8),
                          _cfg(top_k=1.0, n_boot=2000))
    assert [g.contrast[m] for m in "abc"] == pytest.approx([0.25, 0.0, -0.25])
    assert g.groups == {"a": "forget_specific", "b": "task_shared", "c": "retain_specific"}
    bh = g.thresholds["bh_threshold"]
    assert bh == pytest.approx(0.05 * 2 / 6)          # BH: 2 of the 6 tests rejected, cut at alpha * 2 / 6
    assert (f"contrast +0.25, p_forget {g.p_forget['a']:.3g} <= BH threshold {bh:.3g}" in g.reasons["a"]
            and "95% CI [+0.25, +0.25]" in g.reasons["a"])
    # beta != 1: a gains share on the forget side, everything else shrinks by one factor.
    # f = (.5, .2, .2, .1), r = (.2, .32, .32, .16): ratios (2.5, .625, .625, .625), beta = .625, c = (.375, 0, 0, 0)
    g = contrast_grouping(list("abcd"), np.array([[5.0, 2, 2, 1]] * 2), np.array([[5.0, 8, 8, 4]]), _cfg(top_k=1.0))
    assert g.thresholds["beta"] == pytest.approx(0.625)
    assert [g.contrast[m] for m in "abcd"] == pytest.approx([0.375, 0, 0, 0], abs=1e-12)


def test_a_planted_shift_calls_the_modules_that_moved_and_few_others():
    # 40 modules, both sets Dirichlet around one profile; the forget profile moves .15 of share from m0 to m1.
    # The other 38 are unchanged: with a least-squares beta (about .56 here) all 38 were called specific.
    # BH at .05 still makes the odd false call (a null p-value below its cut); over 6 draws, 228 unchanged
    # modules, the seeds 0-5 give 3 (m5; m11, m24). The bound leaves room for that, not for a systematic bias.
    names, false_calls = [f"m{j}" for j in range(40)], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        base = rng.dirichlet(np.ones(40)) * 0.7
        base[0] += 0.2
        base[1] += 0.1
        shifted = base.copy()
        shifted[0] -= 0.15
        shifted[1] += 0.15
        fs, rs = rng.dirichlet(shifted * 400, size=30), rng.dirichlet(base * 400, size=30)
        g = contrast_grouping(names, fs, rs, _cfg(top_k=0.5, n_boot=4000))
        assert g.thresholds["beta"] == pytest.approx(1.0, abs=0.05)
        assert g.groups["m1"] == "forget_specific" and g.groups["m0"] == "retain_specific"
        false_calls += [m for m, grp in g.groups.items() if grp.endswith("_specific") and m not in ("m0", "m1")]
    assert len(false_calls) <= 4, false_calls


def _contrast_by_hand(fs, rs):
    f, r = fs.mean(0), rs.mean(0)
    return f - np.median(f[r > 0] / r[r > 0]) * r


def test_permutation_pvalues_by_hand():
    # one forget row x = (.75, .25), one retain row y = (.25, .75): beta = median(3, 1/3) = 5/3,
    # c = x - 5/3 y = (1/3, -1); the swapped labels give y - 5/3 x = (-1, 1/3). Permutations: identity, swap.
    x, y = np.array([[0.75, 0.25]]), np.array([[0.25, 0.75]])
    p_f, p_r = permutation_pvalues(x, y, np.array([[0, 1], [1, 0]]))
    # module 0: c = 1/3; perms give 1/3, -1 -> #{>= 1/3} = 1, #{<= 1/3} = 2; module 1 mirrored
    assert p_f == pytest.approx([(1 + 1) / 3, (1 + 2) / 3]) and p_r == pytest.approx([(1 + 2) / 3, (1 + 1) / 3])
    # two + two rows, all 4! = 24 permutations: each of the 6 splits 4 times (ties counted)
    fs, rs = F / F.sum(1, keepdims=True), R / R.sum(1, keepdims=True)
    perms = np.array(list(itertools.permutations(range(4))))
    p_f, p_r = permutation_pvalues(fs, rs, perms)
    pool, c = np.concatenate([fs, rs]), _contrast_by_hand(fs, rs)
    cp = np.array([_contrast_by_hand(pool[list(q[:2])], pool[list(q[2:])]) for q in perms])
    assert p_f == pytest.approx((1 + (cp >= c - 1e-12).sum(0)) / 25)
    assert p_r == pytest.approx((1 + (cp <= c + 1e-12).sum(0)) / 25)
    # by hand: f = (.45, .3, .15, .1), r = (.25, .3, .25, .2), ratios (1.8, 1, .6, .5), beta = median = .8,
    # c = (.25, .06, -.05, -.06) (with half the modules moved the median is no longer robust: b gets +.06).
    # The observed split is the most extreme one for a, b (up) and d (down), its 4 orders tie
    assert c == pytest.approx([0.25, 0.06, -0.05, -0.06])
    assert p_f == pytest.approx([5 / 25, 5 / 25, 21 / 25, 1]) and p_r == pytest.approx([1, 1, 9 / 25, 5 / 25])


def test_benjamini_hochberg_by_hand():
    # sorted p against alpha k / n = .025, .05, .075, .1: the first three pass, the cut is .075
    rej, thr = benjamini_hochberg(np.array([0.5, 0.02, 0.01, 0.03]), 0.1)
    assert rej.tolist() == [False, True, True, True] and thr == pytest.approx(0.075)
    # step-up: .03 > .05 * 1/2 alone, but .04 <= .05 * 2/2 rejects both
    rej, thr = benjamini_hochberg(np.array([0.04, 0.03]), 0.05)
    assert rej.tolist() == [True, True] and thr == pytest.approx(0.05)
    rej, thr = benjamini_hochberg(np.array([0.2, 0.3]), 0.05)
    assert not rej.any() and thr == pytest.approx(0.025)


def _null_rows(seed: int, n: int, m: int = 300):
    rng = np.random.default_rng(seed)
    return rng.exponential(size=(n, m)), rng.exponential(size=(n, m))


NULL_NAMES = [f"m{i}" for i in range(300)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_gives_no_specific_modules(seed):
    """Forget and retain rows from one distribution (300 modules, 12 + 12 rows, enough permutations to find
    a single module, see the next test). Observed: 0 forget- and 0 retain-specific on each seed; the old rule
    (bootstrap interval excludes 0, no correction) called 22-40 forget- and 3-6 retain-specific here."""
    f, r = _null_rows(seed, 12)
    g = contrast_grouping(NULL_NAMES, f, r, _cfg(n_boot=15000, seed=seed))
    assert g.thresholds["p_min"] < 0.05 / 600                 # the test can call a single module
    sizes = g.sizes()
    assert sizes["forget_specific"] <= 3 and sizes["retain_specific"] <= 3, sizes
    # the descriptive intervals alone would have called many (what the uncorrected rule did)
    assert sum(v > 0 for v in g.contrast_low.values()) >= 5


def test_a_planted_module_is_found():
    f, r = _null_rows(0, 12)
    f[:, 0] += 0.05 * f.sum(1)          # module 0 carries extra share in every forget row
    g = contrast_grouping(NULL_NAMES, f, r, _cfg(n_boot=15000, seed=0))
    assert g.groups["m0"] == "forget_specific" and g.members("forget_specific") == ["m0"]
    assert g.p_forget["m0"] == pytest.approx(1 / 15001) and g.sizes()["retain_specific"] == 0


def test_the_interval_is_the_exact_bootstrap_percentile():
    g = contrast_grouping(NAMES, F, R, _cfg(alpha=0.2, n_boot=20000, top_k=0.5))
    atoms = np.sort(_exact_bootstrap(F, R), axis=0)      # 16 equally likely outcomes per module
    # 10% and 90% quantiles: the 2nd and 15th of 16 atoms (cumulative 1/16 < .1 < 2/16, 14/16 < .9 < 15/16)
    assert [g.contrast_low[m] for m in NAMES] == pytest.approx(atoms[1], abs=1e-12)
    assert [g.contrast_high[m] for m in NAMES] == pytest.approx(atoms[14], abs=1e-12)
    assert [g.contrast_sd[m] for m in NAMES] == pytest.approx(atoms.std(0), rel=0.03)
    # the interval is descriptive: a's (and b's: with 2 of 4 modules moved the median ratio is .8 and b reads
    # +.06) lies above 0, c's and d's below, yet 2 + 2 rows have 6 splits and the observed one is the most
    # extreme for a, b, d (see test_permutation_pvalues_by_hand): p -> 1/6 with many permutations (c: 2/6),
    # above every BH cut .2 k / 8 for k < 7, so nothing is specific
    assert g.contrast_low["a"] > 0 and g.contrast_high["c"] < 0 and g.contrast_high["d"] < 0
    assert [g.p_forget["a"], g.p_forget["b"], g.p_retain["d"]] == pytest.approx([1 / 6] * 3, abs=0.01)
    assert g.p_retain["c"] == pytest.approx(2 / 6, abs=0.01)
    assert g.groups == {"a": "task_shared", "b": "task_shared", "c": "frozen", "d": "frozen"}
    assert "not significant" in g.reasons["b"]
    df = g.to_dataframe()
    assert {"contrast", "contrast_low", "contrast_high", "contrast_sd", "p_forget", "p_retain"} <= set(df.columns)
    assert df.set_index("module").loc["a", "p_forget"] == g.p_forget["a"]


def test_more_qualifiers_than_k_keep_the_largest_contrast_over_sd():
    # F's and R's rows four times each (8 + 8 rows, same shares): c = (.25, .06, -.05, -.06); a and b are both
    # significant on the forget side, k = 1 keeps the larger |c| / sd (a); d is the one retain call
    g = contrast_grouping(NAMES, np.tile(F, (4, 1)), np.tile(R, (4, 1)), _cfg(n_boot=4000, top_k=0.25))
    bh = g.thresholds["bh_threshold"]
    assert g.p_forget["a"] <= bh and g.p_forget["b"] <= bh and g.p_retain["d"] <= bh < g.p_retain["c"]
    z = {m: abs(g.contrast[m] / g.contrast_sd[m]) for m in NAMES}
    assert z["a"] > z["b"]
    assert g.groups["a"] == "forget_specific" and g.groups["d"] == "retain_specific"
    # b is cut; its mean share (.3) is not the top-1 (a's .35), so it is frozen, with the reason said
    assert g.groups["b"] == "frozen" and "not among the top-1 by contrast/sd" in g.reasons["b"]
    assert g.sizes() == {"forget_specific": 1, "retain_specific": 1, "task_shared": 0, "frozen": 2}


def test_deterministic_for_a_seed_and_round_trips(tmp_path):
    a = contrast_grouping(NAMES, F, R, _cfg(n_boot=300, seed=3))
    b = contrast_grouping(NAMES, F, R, _cfg(n_boot=300, seed=3))
    assert a.to_dict() == b.to_dict()
    c = contrast_grouping(NAMES, F, R, _cfg(n_boot=300, seed=4))
    assert c.contrast == a.contrast and c.contrast_sd != a.contrast_sd        # same data, other resamples
    assert c.p_forget != a.p_forget                                           # and other permutations
    big = [contrast_grouping(NULL_NAMES[:50], *_null_rows(7, 8, 50), _cfg(n_boot=500, seed=1)) for _ in range(2)]
    assert big[0].to_dict() == big[1].to_dict() and len(set(big[0].p_forget.values())) > 10
    back = Grouping.load(a.save(tmp_path / "g.json"))
    assert back.to_dict() == json.loads(json.dumps(a.to_dict())) and back.config == a.config
    assert a.to_dict()["config"]["alpha"] == 0.05          # contrast knobs kept in contrast mode


def test_other_modes_keep_their_form_and_old_files_load(tmp_path):
    g = group_modules({"a": 3.0, "b": 1.0}, {"a": 1.0, "b": 3.0}, GroupingConfig(top_k=0.5))
    d = g.to_dict()
    assert set(d) == {"groups", "forget_scores", "retain_scores", "forget_norm", "retain_norm", "thresholds",
                      "reasons", "config"}
    assert d["config"] == {"top_k": 0.5, "normalize": "share", "mode": "topk", "margin": 0.5}
    assert "contrast" not in g.to_dataframe().columns
    assert GroupingConfig(n_boot=50).to_dict()["n_boot"] == 50         # a non-default knob is kept
    path = tmp_path / "old.json"
    path.write_text(json.dumps(d))                          # the form written before contrast mode
    old = Grouping.load(path)
    assert old.groups == g.groups and old.contrast == {} and old.config == GroupingConfig(top_k=0.5)
    # a contrast grouping written before the p-values existed loads, and its table has no p columns
    c = contrast_grouping(NAMES, F, R, _cfg(n_boot=50)).to_dict()
    del c["p_forget"], c["p_retain"]
    path.write_text(json.dumps(c))
    old = Grouping.load(path)
    assert old.p_forget == {} and old.contrast == pytest.approx(c["contrast"])
    assert "p_forget" not in old.to_dataframe().columns and "contrast_sd" in old.to_dataframe().columns


def test_bad_contrast_inputs():
    with pytest.raises(InputError) as err:
        GroupingConfig(mode="contrast", alpha=1.5)
    assert err.value.field == "alpha"
    with pytest.raises(InputError) as err:
        GroupingConfig(mode="contrast", n_boot=1)
    assert err.value.field == "n_boot"
    with pytest.raises(InputError) as err:
        group_modules({"a": 1.0}, {"a": 1.0}, GroupingConfig(mode="contrast"))
    assert err.value.field == "mode" and "per_sample_module_importance" in str(err.value)
    with pytest.raises(ValueError, match="zero importance"):
        contrast_grouping(["a", "b"], np.array([[0.0, 0.0]]), np.array([[1.0, 1.0]]), _cfg())
    # an unchanged sample (all-zero row) carries no evidence: dropped, counted
    g = contrast_grouping(["a", "b"], np.array([[0.0, 0.0], [3.0, 1.0]]), np.array([[1.0, 1.0]]), _cfg(top_k=1.0))
    assert g.thresholds["dropped_forget"] == 1 and g.thresholds["n_forget"] == 1
    assert g.forget_scores == pytest.approx({"a": 0.75, "b": 0.25})
    with pytest.raises(ValueError, match="shape"):
        contrast_grouping(["a", "b"], np.array([[1.0, 1.0, 1.0]]), np.array([[1.0, 1.0]]), _cfg())


def test_cure_in_contrast_mode_keeps_frozen_modules_bit_identical(model, request_data):
    forget, retain, _ = request_data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = U.method_config("cure", importance_samples=4, importance_method="eap", importance_metric="logprob",
                          grouping={"mode": "contrast", "top_k": 0.3, "n_boot": 100})
    res = U.get_method("cure", cfg).run(model, forget, retain, U.LoopConfig(steps=3, lr=3e-3, early_stop=False),
                                        progress=False)
    g = res.extra["grouping"]
    t = g["thresholds"]
    assert t["n_forget"] + t["dropped_forget"] == 4 and t["n_retain"] + t["dropped_retain"] == 4  # per-sample rows
    assert set(g["contrast"]) == set(g["groups"]) and len(g["groups"]) == 10
    sizes = res.extra["group_sizes"]
    assert sizes["frozen"] >= 1 and sizes["frozen"] < 10   # at most 3 per group with k = ceil(0.3 * 10)
    grouping = Grouping(**{**g, "config": GroupingConfig(**g["config"])})
    masks = group_masks(model, grouping)
    key_of = {v.data_ptr(): k for k, v in model.state_dict().items()}
    changed = False
    for name, p in projection_params(model).items():
        frozen, old = masks["frozen"][name], before[key_of[p.data_ptr()]]
        assert torch.equal(p[frozen], old[frozen]), name
        changed |= not torch.equal(p[~frozen], old[~frozen])
    assert changed


def _donor_swap(donors, seed: int = 0):
    """Test stand-in with user_swap's API: each sample gets the first donor's input, label kept."""
    def corrupt(samples):
        return [s.__class__(**{**s.__dict__, "input": donors[0].input}) for s in samples]
    return corrupt


def test_a_donor_corruption_gets_the_retain_samples(monkeypatch, request_data):
    """CURE passes its retain samples as donors to a corruption that takes them (user_swap's API)."""
    import recircuit.circuits.corruptions as C
    import recircuit.unlearn.methods.cure as cure

    monkeypatch.setitem(C._REGISTRY, "donor_swap_test", CorruptionSpec("donor_swap_test", _donor_swap, True, "test"))
    forget, retain, _ = request_data
    assert "donor_swap_test" in self_contained_corruptions()      # no data source needed: CURE has donors
    m = U.get_method("cure", U.method_config("cure", corruption="donor_swap_test", importance_samples=2))
    with pytest.raises(InputError, match="donor"):
        m.corruption(tiny_tokenizer())
    seen = []
    monkeypatch.setattr(cure, "module_importance", lambda model, samples, **kw: seen.append(kw["corruption"]) or {})
    monkeypatch.setattr(cure, "group_modules", lambda i_f, i_r, config: "grouping")
    m.loop = U.LoopConfig()
    model = type("Model", (), {"tokenizer": tiny_tokenizer()})()
    assert m.make_grouping(model, forget, retain[5:]) == "grouping"
    assert all(c(forget[:1])[0].input == retain[5].input for c in seen) and len(seen) == 2


@pytest.mark.skipif("user_swap" not in corruption_names(),
                    reason="the user_swap corruption is not registered yet (added to corruptions.py by another change)")
def test_cure_with_user_swap_corrupts_with_retain_histories(request_data):
    forget, retain, _ = request_data
    m = U.get_method("cure", U.method_config("cure", corruption="user_swap"))   # no data source needed
    got = m.corruption(tiny_tokenizer(), donors=retain)(forget[:4])
    expect = get_corruption("user_swap", donors=list(retain), seed=0)(forget[:4])
    assert [s.input for s in got] == [s.input for s in expect]
    histories = {(tuple(s.liked), tuple(s.disliked)) for s in retain}
    for s, c in zip(forget[:4], got):
        assert c.target == s.target and c.label == s.label
        assert (tuple(c.liked), tuple(c.disliked)) in histories
    assert "user_swap" in CORRUPTIONS
