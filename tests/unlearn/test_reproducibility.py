"""The split on resamples: disjoint draws, seeded corruptions, CURE's own grouping, pairwise Jaccard."""

import numpy as np
import pytest

from recircuit import unlearn as U
from recircuit.unlearn import GROUPS, Grouping, GroupingConfig
from recircuit.unlearn.reproducibility import (
    resample_groupings,
    resample_indices,
    split_reproducibility,
)


def test_resample_indices_are_disjoint_when_there_are_enough():
    rng = np.random.default_rng(0)
    sets = resample_indices(12, 4, 3, rng)
    assert [len(s) for s in sets] == [4, 4, 4] and len(set(np.concatenate(sets).tolist())) == 12
    few = resample_indices(5, 4, 3, np.random.default_rng(0))      # 5 < 12: a seeded choice each
    assert all(len(set(s.tolist())) == 4 and max(s) < 5 for s in few)
    assert [s.tolist() for s in few] == [s.tolist() for s in resample_indices(5, 4, 3, np.random.default_rng(0))]
    assert [len(s) for s in resample_indices(3, 4, 2, np.random.default_rng(0))] == [3, 3]


def test_three_resamples_on_the_tiny_model(model, request_data, monkeypatch):
    import recircuit.unlearn.methods.cure as cure

    forget, retain, _ = request_data                  # 12 forget samples: three disjoint draws of 4
    scored = []
    real = cure.per_sample_module_importance

    def spy(model, samples, **kw):
        scored.append([s.uid for s in samples])
        return real(model, samples, **kw)

    monkeypatch.setattr(cure, "per_sample_module_importance", spy)
    cfg = U.method_config("cure", importance_samples=4, importance_method="eap", corruption="user_swap",
                          grouping={"mode": "contrast", "top_k": 0.3, "n_boot": 100})
    gs = resample_groupings(model, forget, retain, cfg, n_resamples=3, seed=1)
    assert len(gs) == 3 and all(isinstance(g, Grouping) for g in gs)
    assert all(set(g.groups) == set(gs[0].groups) and len(g.groups) == 10 for g in gs)
    forget_sets = [set(u) for u in scored[0::2]]
    assert all(len(s) == 4 for s in forget_sets) and len(set.union(*forget_sets)) == 12     # disjoint
    assert len(set().union(*map(set, scored[1::2]))) == 12                                 # retain too
    again = resample_groupings(model, forget, retain, cfg, n_resamples=3, seed=1)
    assert [g.to_dict() for g in again] == [g.to_dict() for g in gs]
    rep = split_reproducibility(gs)
    # hand check: the pairwise values, and their mean per group
    for g in GROUPS:
        sets = [set(x.members(g)) for x in gs]
        pairs = {f"{g}/{i}-{j}": (len(sets[i] & sets[j]) / len(sets[i] | sets[j]) if sets[i] | sets[j] else 1.0)
                 for i, j in ((0, 1), (0, 2), (1, 2))}
        assert {k: rep[k] for k in pairs} == pytest.approx(pairs)
        assert rep[g] == pytest.approx(np.mean(list(pairs.values())))
    assert rep["disjoint"] == 1.0 and [g.thresholds["resample_index"] for g in gs] == [0.0, 1.0, 2.0]
    # 12 forget samples cannot give 4 disjoint draws of 4: said in every grouping and in the agreement
    overlap = resample_groupings(model, forget, retain, cfg, n_resamples=4, seed=1)
    assert split_reproducibility(overlap)["disjoint"] == 0.0


def test_a_seeded_corruption_gets_seed_plus_r(monkeypatch, request_data):
    import recircuit.unlearn.reproducibility as R

    seeds = []

    class Spy:
        def __init__(self, config, data_source=None):
            seeds.append(config.corruption_args.get("seed"))

        def make_grouping(self, model, forget, retain):
            return Grouping({"a": "frozen"}, {"a": 0.0}, {"a": 0.0}, {"a": 0.0}, {"a": 0.0}, {}, {"a": ""},
                            GroupingConfig())

    monkeypatch.setattr(R, "CURE", Spy)
    forget, retain, _ = request_data
    R.resample_groupings(None, forget, retain, U.method_config("cure", corruption="user_swap"), n_resamples=3, seed=5)
    assert seeds == [5, 6, 7]
    seeds.clear()
    R.resample_groupings(None, forget, retain, U.method_config("cure"), n_resamples=2, seed=5)   # label_flip: no seed
    assert seeds == [None, None]


def test_split_reproducibility_refuses_bad_input():
    g = Grouping({"a": "frozen"}, {"a": 0.0}, {"a": 0.0}, {"a": 0.0}, {"a": 0.0}, {}, {"a": ""}, GroupingConfig())
    h = Grouping({"b": "frozen"}, {"b": 0.0}, {"b": 0.0}, {"b": 0.0}, {"b": 0.0}, {}, {"b": ""}, GroupingConfig())
    with pytest.raises(ValueError, match="different modules"):
        split_reproducibility([g, h])
    with pytest.raises(ValueError, match="at least two"):
        split_reproducibility([g])
    assert split_reproducibility([g, g])["frozen/0-1"] == 1.0
