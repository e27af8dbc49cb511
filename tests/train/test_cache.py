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


def test_cache_key_covers_the_effective_precision_and_keeps_fp32_keys(split, tmp_path):
    """bf16 autocasts on CUDA only: the same config trains differently on cuda and cpu."""
    from recircuit.cache import cache_key
    from recircuit.train.cache import (
        CACHE_VERSION,
        TRAIN_CODE,
        model_identity,
        precision,
        recommender_key,
    )

    cfg = TrainConfig(mode="lora", seed=1)                       # bf16=True: bf16 on cuda, fp32 on cpu
    assert precision(cfg, "cuda") == "bf16" and precision(cfg, "cpu") == "fp32"
    assert precision(TrainConfig(mode="lora", cpu_bf16=True), "cpu") == "bf16"
    cpu = recommender_key("tiny", split, cfg, 8, 8, "cpu")
    assert recommender_key("tiny", split, cfg, 8, 8, "cuda") != cpu
    assert recommender_key("tiny", split, cfg, 8, 8, "cuda:0") == recommender_key("tiny", split, cfg, 8, 8, "cuda")
    # an fp32 run keeps the key of earlier versions (cached checkpoints stay valid)
    assert cpu == cache_key(code=TRAIN_CODE, version=CACHE_VERSION, model=model_identity("tiny"),
                            split=split.to_dict(), n_train=8, n_valid=8, config=cfg.to_dict())
    assert recommender_dir("tiny", split, cfg, 8, 8, tmp_path) == recommender_dir("tiny", split, cfg, 8, 8, tmp_path,
                                                                                  device="cpu")


def test_training_stages_in_a_pid_tagged_folder_that_a_later_cache_removes(split, tmp_path, monkeypatch):
    """A killed training leaves its staging folder; it carries the pid, so the next Cache removes it."""
    import os

    import recircuit.train.cache as cache
    from recircuit._io import temp_owner

    seen = []

    def killed(model, tr, va, cfg, out_dir=None, **k):
        seen.append(out_dir)
        (out_dir / "model.safetensors").write_bytes(b"x" * 64)
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "train", killed)
    cfg = TrainConfig(mode="lora", seed=1)
    with pytest.raises(KeyboardInterrupt):
        cached_recommender("tiny", split, cfg, n_train=8, n_valid=8, cache_root=tmp_path, progress=False)
    assert temp_owner(seen[0].name) == os.getpid()
    # what a killed process (a pid no longer running) left behind is removed by the next cache on that root
    dead = tmp_path / "models" / seen[0].name.replace(f"-{os.getpid()}-", "-999999999-")
    (dead / "sub").mkdir(parents=True)
    cache._models_cache(tmp_path)
    assert not dead.exists()


def test_a_local_model_is_identified_by_its_bytes(tmp_path):
    """Replacing the files behind the same path must not reuse a recommender trained from the old ones."""
    from recircuit.train.cache import model_identity

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF one")
    first = model_identity(str(gguf))
    gguf.write_bytes(b"GGUF two")
    assert model_identity(str(gguf)) != first
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"a")
    before = model_identity(str(d))
    (d / "model.safetensors").write_bytes(b"b")
    assert model_identity(str(d)) != before and set(before["files"]) == {"config.json", "model.safetensors"}
    assert model_identity("some-org/some-model") == {"name": "some-org/some-model"}
