"""Shared fixtures: seeding, offline HF, tiny bridges of every model family and the reference data folder."""

from __future__ import annotations

import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch

#: Reference data provided beside the project (raw ML-100K, TALLRec's published split).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def seed_everything() -> None:
    """Seed python, numpy and torch before every test."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests using it skip with a reason where it is absent."""
    if not (SHARED_DATA / "ml-100k" / "u.data").exists():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent (it ships only with the project's CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def movielens(shared_data):
    """MovieLens-100K read from the reference GroupLens files."""
    from recircuit.data import load_movielens

    return load_movielens(shared_data / "ml-100k")


@pytest.fixture(scope="session")
def tallrec(movielens):
    """The ``tallrec`` split built from the reference files."""
    from recircuit.data import tallrec_split

    return tallrec_split(movielens)


@pytest.fixture()
def tiny():
    """A fresh tiny GQA bridge (2 layers, 4 query heads, 2 KV heads)."""
    from recircuit.models import tiny_model

    return tiny_model(seed=0)


#: The model families every family test runs on (rows of recircuit.models.families.FAMILIES):
#: Llama-style GQA, GPT-2-style (fused qkv, Conv1D, plain MLP, learned positions), GPT-NeoX
#: (interleaved fused qkv, parallel attention/MLP), Phi-3 (fused qkv and gate/up, GQA) and Gemma-2
#: (post-block "sandwich" norms, GQA, logit soft-capping).
TINY_FAMILIES = ("llama", "gpt2", "neox", "phi3", "gemma2", "gemma3")


@pytest.fixture(params=TINY_FAMILIES)
def family_model(request):
    """A fresh tiny bridge of each family in turn (2 layers, 4 query heads, d_model 64)."""
    from recircuit.models import tiny_model

    return tiny_model(seed=0, family=request.param)


@pytest.fixture(scope="session")
def toy_samples():
    """Twelve short synthetic samples with varied lengths and both labels."""
    from recircuit.data import make_sample

    titles = ["Alpha (1990)", "Beta Gamma (1991)", "Delta (1992)", "Epsilon Zeta Eta (1993)", "Theta (1994)", "Iota (1995)"]
    out = []
    for u in range(12):
        hist = [(i, titles[i % 6], 5 if (i + u) % 3 else 1) for i in range(u % 4 + 1)]
        out.append(make_sample(u, hist, (100 + u, titles[u % 6], 5 if u % 2 else 2), timestamp=u))
    return out


@pytest.fixture(scope="session")
def demo_run(shared_data, tmp_path_factory):
    """One end-to-end run of ``recircuit.demo`` on the tiny model (cache and outputs in tmp dirs)."""
    from recircuit.demo import demo_config, run_demo

    cache = tmp_path_factory.mktemp("demo_cache")
    out = tmp_path_factory.mktemp("demo_out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECIRCUIT_CACHE", str(cache))
        cfg = demo_config("tiny", data_dir=str(shared_data / "ml-100k"))
        result = run_demo(cfg, out, progress=False)
    return {"result": result, "config": cfg, "cache": cache, "out": out}
