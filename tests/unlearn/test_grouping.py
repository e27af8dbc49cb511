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


def test_per_kind_thresholds_choose_among_mlps_too(tmp_path):
    # MLPs carry ten times a head's importance: one threshold over all modules only ever picks MLPs
    f = {"a0.h0": 1.0, "a0.h1": 0.9, "a1.h0": 0.2, "a1.h1": 0.1, "m0": 20.0, "m1": 10.0, "m2": 9.0, "m3": 1.0}
    r = {"a0.h0": 0.1, "a0.h1": 0.9, "a1.h0": 1.0, "a1.h1": 0.2, "m0": 9.0, "m1": 10.0, "m2": 20.0, "m3": 1.0}
    pooled = group_modules(f, r, GroupingConfig(top_k=0.25))
    assert (pooled.members("forget_specific"), pooled.members("task_shared")) == (["m0"], ["m1"])
    assert all(pooled.groups[m] == "frozen" for m in ("a0.h0", "a0.h1", "a1.h0", "a1.h1"))
    per = group_modules(f, r, GroupingConfig(top_k=0.25, per_kind=True))   # top 1 head and top 1 MLP per circuit
    assert per.groups == {"a0.h0": "forget_specific", "a0.h1": "frozen", "a1.h0": "retain_specific", "a1.h1": "frozen",
                          "m0": "forget_specific", "m1": "frozen", "m2": "retain_specific", "m3": "frozen"}
    assert (per.thresholds["k"], per.thresholds["k:m"]) == (1, 1) and "forget" not in per.thresholds
    assert per.thresholds["forget:m"] == pytest.approx(20 / 42.2) and "top-1 MLP" in per.reasons["m1"]
    assert Grouping.load(per.save(tmp_path / "g.json")).config.per_kind
    # the flag is left out of the dict while off, so configs (and cache keys) written before it keep their form
    assert "per_kind" not in GroupingConfig().to_dict() and GroupingConfig(per_kind=True).to_dict()["per_kind"]
    with pytest.raises(ValueError, match="per_kind"):
        GroupingConfig(mode="contrast", per_kind=True)
    with pytest.raises(ValueError, match="per_kind"):
        GroupingConfig(per_kind="yes")


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
