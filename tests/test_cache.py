"""The one cache: keys follow inputs and code; tampered, unreadable or wrong-shape entries are misses."""

from __future__ import annotations

import json
import os
import time

import pytest

from recircuit import cache as cache_mod
from recircuit.cache import Cache, cache_key


def _rows(payload):
    """A reader that insists on the payload's shape, as the pipeline's readers do."""
    if not isinstance(payload["row"]["auc"], float):
        raise TypeError("auc is not a number")
    return payload


@pytest.fixture()
def stored(tmp_path):
    out = tmp_path / "out"
    (out / "audit").mkdir(parents=True)
    (out / "audit" / "a.json").write_text('{"x": 1}')
    cache = Cache(tmp_path / "cache")
    key = cache.key(step="s", config={"lr": 1e-5}, samples=["u1", "u2"])
    assert cache.get("s", key, out_dir=tmp_path / "none") is None
    cache.put("s", key, {"row": {"auc": 0.7}}, files=["audit/a.json", "missing.json"], out_dir=out)
    return cache, key


def test_put_get_round_trip_copies_files_and_records_their_sha256(stored, tmp_path):
    cache, key = stored
    out2 = tmp_path / "out2"
    assert cache.get("s", key, parse=_rows, out_dir=out2) == {"row": {"auc": 0.7}}
    assert json.loads((out2 / "audit" / "a.json").read_text()) == {"x": 1}
    assert not (out2 / "missing.json").exists()
    manifest = json.loads((cache.entry_dir("s", key) / "manifest.json").read_text())
    assert set(manifest["files"]) == {"audit/a.json"} and len(manifest["files"]["audit/a.json"]) == 64


def test_key_changes_with_inputs_and_code(monkeypatch):
    k = cache_key(config={"lr": 1e-5}, samples=["u1"])
    assert k == cache_key(samples=["u1"], config={"lr": 1e-5})
    assert k != cache_key(config={"lr": 2e-5}, samples=["u1"])
    assert k != cache_key(config={"lr": 1e-5}, samples=["u2"])
    assert k != cache_key(code=("train",), config={"lr": 1e-5}, samples=["u1"])
    monkeypatch.setattr(cache_mod, "code_fingerprint", lambda parts=(): "edited")
    assert k != cache_key(config={"lr": 1e-5}, samples=["u1"])


def test_a_tampered_file_is_a_miss(stored, tmp_path):
    cache, key = stored
    (cache.entry_dir("s", key) / "files" / "audit" / "a.json").write_text('{"x": 2}')
    assert cache.get("s", key, out_dir=tmp_path / "o") is None
    assert not (tmp_path / "o").exists()                      # nothing altered reaches the output


def test_a_missing_file_and_an_unreadable_manifest_are_misses(stored):
    cache, key = stored
    (cache.entry_dir("s", key) / "files" / "audit" / "a.json").unlink()
    assert cache.get("s", key) is None
    cache.put("s", key, {"row": {"auc": 0.7}})
    assert cache.get("s", key) == {"row": {"auc": 0.7}}
    (cache.entry_dir("s", key) / "manifest.json").write_bytes(b"\xff{not json")
    assert cache.get("s", key) is None
    (cache.entry_dir("s", key) / "manifest.json").write_text('["a list"]')
    assert cache.get("s", key) is None


def test_a_payload_of_the_wrong_shape_is_a_miss_and_put_repairs_it(stored):
    cache, key = stored
    cache.put("s", key, {"row": [1, 2]})                      # valid JSON, wrong shape
    assert cache.get("s", key) == {"row": [1, 2]}              # no reader: returned as stored
    assert cache.get("s", key, parse=_rows) is None            # the reader rejects it: a miss
    cache.put("s", key, {"row": {"auc": 0.5}})
    assert cache.get("s", key, parse=_rows) == {"row": {"auc": 0.5}}


def test_fresh_misses_old_entries_overwrites_them_and_reuses_its_own(stored):
    cache, key = stored
    old = cache.entry_dir("s", key) / "manifest.json"
    past = time.time() - 60
    os.utime(old, (past, past))
    fresh = Cache(cache.root, fresh=True)
    assert fresh.get("s", key) is None
    fresh.put("s", key, {"row": {"auc": 0.9}})
    assert fresh.get("s", key) == {"row": {"auc": 0.9}}        # written in this run: reused
    assert Cache(cache.root, fresh=True, since=fresh.since).get("s", key) == {"row": {"auc": 0.9}}
    assert cache.get("s", key) == {"row": {"auc": 0.9}}        # the entry was overwritten
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".")]   # no staging left behind


def test_put_can_move_large_files_in(tmp_path):
    src = tmp_path / "model.safetensors"
    src.write_bytes(b"weights")
    cache = Cache(tmp_path / "models")
    entry = cache.put("m", "k", {"ok": True}, files={"model.safetensors": src}, move=True)
    assert not src.exists() and entry.file("model.safetensors").read_bytes() == b"weights"
    assert cache.lookup("m", "k").file("model.safetensors") == entry.file("model.safetensors")


def test_a_file_altered_after_a_verified_lookup_is_hashed_again(stored):
    cache, key = stored
    assert cache.get("s", key) is not None                   # verified (and its digest remembered)
    path = cache.entry_dir("s", key) / "files" / "audit" / "a.json"
    path.write_text('{"x": 3}')                              # same size, new content
    assert cache.get("s", key) is None


def test_a_stored_file_is_hashed_once_by_put_and_not_again_by_lookup(tmp_path, monkeypatch):
    (tmp_path / "big.bin").write_bytes(b"w" * 4096)
    cache = Cache(tmp_path / "cache")
    cache.put("s", "k", {}, files=["big.bin"], out_dir=tmp_path)
    calls = []
    monkeypatch.setattr(cache_mod, "sha256_file", lambda p: calls.append(p) or "0" * 64)
    assert cache.lookup("s", "k") is not None and calls == []


def test_staging_folders_carry_the_pid_and_a_dead_writers_are_removed(tmp_path, monkeypatch):
    from recircuit._io import temp_owner

    root = tmp_path / "cache"
    cache = Cache(root)
    seen = []

    def killed(src, dst):
        seen.append(src.name)
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_mod, "_replace_dir", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.put("s", "k", {"x": 1})
    assert temp_owner(seen[0]) == os.getpid()
    dead = root / seen[0].replace(f"-{os.getpid()}-", "-999999999-")
    (dead / "files").mkdir(parents=True)
    live = root / seen[0]                                   # a running writer's (this pid) stays
    live.mkdir()
    Cache(root)
    assert not dead.exists() and live.exists()
    monkeypatch.undo()
    dead.mkdir()
    cache.put("s", "k", {"x": 1})                           # put cleans as well
    assert not dead.exists() and cache.lookup("s", "k").payload == {"x": 1}
