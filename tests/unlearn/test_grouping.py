import pytest

from recircuit.unlearn import Grouping, GroupingConfig, group_modules, random_grouping


def test_topk_grouping_sets_and_reasons(tmp_path):
    f = {"a0.h0": 9, "a0.h1": 5, "m0": 1, "m1": 0.5, "a1.h0": 0.1}
    r = {"a0.h0": 8, "a0.h1": 0.2, "m0": 7, "m1": 0.4, "a1.h0": 0.1}
    g = group_modules(f, r, GroupingConfig(top_k=0.4))
    assert g.groups == {"a0.h0": "task_shared", "a0.h1": "forget_specific", "m0": "retain_specific",
                        "m1": "frozen", "a1.h0": "frozen"}
    assert g.thresholds["k"] == 2 and "both" in g.reasons["a0.h0"]
    assert g.sizes() == {"forget_specific": 1, "retain_specific": 1, "task_shared": 1, "frozen": 2}
    back = Grouping.load(g.save(tmp_path / "g.json"))
    assert back.groups == g.groups and back.config == g.config
    assert set(g.to_dataframe().columns) >= {"module", "forget", "retain", "group", "reason"}


def test_ratio_mode_and_random_control():
    f = {"a": 10.0, "b": 1.0, "c": 5.0, "d": 0.0}
    r = {"a": 1.0, "b": 10.0, "c": 5.0, "d": 0.0}
    g = group_modules(f, r, GroupingConfig(top_k=0.75, mode="ratio", margin=0.5))
    assert (g.groups["a"], g.groups["b"], g.groups["c"], g.groups["d"]) == ("forget_specific", "retain_specific", "task_shared", "frozen")
    rnd = random_grouping(g, seed=1)
    assert sorted(rnd.groups.values()) == sorted(g.groups.values())


def test_bad_inputs():
    with pytest.raises(ValueError, match="same, non-empty"):
        group_modules({"a": 1}, {"b": 1})
    with pytest.raises(ValueError, match="top_k"):
        GroupingConfig(top_k=0)
