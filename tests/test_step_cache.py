"""The step cache: keys follow the inputs and the code, entries round-trip, damage is a miss."""

from __future__ import annotations

import json

from recircuit import step_cache
from recircuit.step_cache import StepCache


def test_put_get_round_trip_copies_files(tmp_path):
    out, out2 = tmp_path / "out", tmp_path / "out2"
    (out / "audit").mkdir(parents=True)
    (out / "audit" / "a.json").write_text('{"x": 1}')
    cache = StepCache(tmp_path / "cache")
    key = cache.key(step="s", config={"lr": 1e-5}, samples=["u1", "u2"])
    assert cache.get("s", key, out2) is None
    cache.put("s", key, {"row": {"auc": 0.7}}, out, ["audit/a.json", "missing.json"])
    assert cache.get("s", key, out2) == {"row": {"auc": 0.7}}
    assert json.loads((out2 / "audit" / "a.json").read_text()) == {"x": 1}
    assert not (out2 / "missing.json").exists()


def test_key_changes_with_inputs_and_code(monkeypatch):
    k = StepCache.key(config={"lr": 1e-5}, samples=["u1"])
    assert k == StepCache.key(samples=["u1"], config={"lr": 1e-5})
    assert k != StepCache.key(config={"lr": 2e-5}, samples=["u1"])
    assert k != StepCache.key(config={"lr": 1e-5}, samples=["u2"])
    monkeypatch.setattr(step_cache, "code_fingerprint", lambda: "edited")
    assert k != StepCache.key(config={"lr": 1e-5}, samples=["u1"])


def test_damaged_entry_is_a_miss_and_disabled_cache_stores_nothing(tmp_path):
    cache = StepCache(tmp_path)
    cache.put("s", "k", {"a": 1})
    (tmp_path / "s-k" / "payload.json").write_text("{not json")
    assert cache.get("s", "k") is None
    off = StepCache(tmp_path / "off", enabled=False)
    assert off.put("s", "k", {"a": 1}) is None and off.get("s", "k") is None
    assert not (tmp_path / "off").exists()
