import numpy as np
import pytest

from recircuit.data import Split
from recircuit.models import score
from recircuit.train import (
    TrainConfig,
    cached_recommender,
    load_recommender,
    read_meta,
    recommender_dir,
)


@pytest.fixture()
def split(toy_task):
    tr, va = toy_task
    return Split("toy", list(tr), list(va[:8]), list(va[8:]), {"purpose": "test"})


def test_recommender_is_trained_once_then_reused(split, tmp_path, monkeypatch):
    import recircuit.train.cache as cache

    cfg = TrainConfig(mode="lora", lr=1e-2, batch_size=4, max_steps=2, seed=1)
    path = cached_recommender("tiny", split, cfg, n_train=8, n_valid=8, cache_root=tmp_path, progress=False)
    assert path.exists() and path.parent.parent.parent == tmp_path / "models"
    assert path.parent.parent == recommender_dir("tiny", split, cfg, 8, 8, tmp_path)
    meta = read_meta(path)
    assert meta["split"]["name"] == "toy" and meta["n_train"] == 8 and meta["train_config"]["seed"] == 1
    assert meta["base_model"]["name"] == "recircuit/tiny-llama-gqa"

    def no_training(*a, **k):
        raise AssertionError("the cached recommender should have been reused")

    monkeypatch.setattr(cache, "train", no_training)
    assert cached_recommender("tiny", split, cfg, n_train=8, n_valid=8, cache_root=tmp_path) == path
    model, meta2 = load_recommender("tiny", split, cfg, n_train=8, n_valid=8, cache_root=tmp_path)
    assert meta2["cache_key"] == meta["cache_key"]
    p = score(model, split.test, progress=False)
    assert np.all((p > 0) & (p < 1))


def test_cache_key_covers_config_data_and_model(split, tmp_path):
    cfg = TrainConfig(mode="lora", seed=1)
    d = recommender_dir("tiny", split, cfg, 8, 8, tmp_path)
    assert d == recommender_dir("tiny", split, TrainConfig(mode="lora", seed=1), 8, 8, tmp_path)
    other_split = Split("toy", split.train[1:], split.valid, split.test, split.params)
    for changed in (recommender_dir("tiny", split, TrainConfig(mode="lora", seed=2), 8, 8, tmp_path),
                    recommender_dir("tiny", split, TrainConfig(mode="lora", seed=1, lr=1e-3), 8, 8, tmp_path),
                    recommender_dir("tiny", split, cfg, 16, 8, tmp_path),
                    recommender_dir("tiny", other_split, cfg, 8, 8, tmp_path),
                    recommender_dir("smollm2-135m-instruct", split, cfg, 8, 8, tmp_path)):
        assert changed != d


def _train_once(split, tmp_path):
    cfg = TrainConfig(mode="lora", lr=1e-2, batch_size=4, max_steps=1, seed=1)
    return cfg, cached_recommender("tiny", split, cfg, n_train=8, n_valid=8, cache_root=tmp_path, progress=False)


def test_a_tampered_or_truncated_cached_checkpoint_is_retrained(split, tmp_path):
    cfg, path = _train_once(split, tmp_path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])                 # truncated: its sha256 no longer matches
    again = cached_recommender("tiny", split, cfg, n_train=8, n_valid=8, cache_root=tmp_path, progress=False)
    assert again == path and again.read_bytes() == good        # retrained (deterministic) and replaced
    path.with_suffix(".json").write_text("{not json")
    again = cached_recommender("tiny", split, cfg, n_train=8, n_valid=8, cache_root=tmp_path, progress=False)
    assert read_meta(again)["train_config"]["seed"] == 1


def test_fresh_retrains_and_a_failed_training_keeps_the_good_checkpoint(split, tmp_path, monkeypatch):
    import recircuit.train.cache as cache

    cfg, path = _train_once(split, tmp_path)
    stamp = path.stat().st_mtime_ns

    def boom(*a, **k):
        raise FloatingPointError("diverged")

    monkeypatch.setattr(cache, "train", boom)
    with pytest.raises(FloatingPointError):
        cached_recommender("tiny", split, cfg, n_train=8, n_valid=8, cache_root=tmp_path, progress=False, fresh=True)
    assert path.stat().st_mtime_ns == stamp                     # the good entry is untouched
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    again = cached_recommender("tiny", split, cfg, n_train=8, n_valid=8, cache_root=tmp_path, progress=False,
                               fresh=True)
    assert again == path and path.stat().st_mtime_ns != stamp
