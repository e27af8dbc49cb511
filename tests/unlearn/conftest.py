import pytest

from recircuit.data import make_sample
from recircuit.models import tiny_model
from recircuit.train import TrainConfig, train

TITLES = ["Alpha (1990)", "Delta (1992)", "Iota (1995)", "Theta (1994)"]


@pytest.fixture(scope="session")
def request_data():
    """Forget (users 0-3), retain (users 4-15) and held-out samples of a toy task."""
    data = []
    for u in range(24):
        for k in range(3):
            t = TITLES[(u + k) % 4]
            hist = [(i, TITLES[(u + i + k) % 4], 5 if i % 2 else 1) for i in range(3)]
            data.append(make_sample(u, hist, (300 + 10 * u + k, t, 5 if (u + k) % 2 else 1), timestamp=k))
    forget = [s for s in data if s.user_id < 4]
    retain = [s for s in data if 4 <= s.user_id < 16]
    heldout = [s for s in data if s.user_id >= 16]
    return forget, retain, heldout


@pytest.fixture(scope="session")
def trained(request_data):
    """A tiny model fine-tuned on forget + retain (state dict, to copy into fresh models)."""
    forget, retain, _ = request_data
    m = tiny_model(0)
    train(m, forget + retain, None, TrainConfig(mode="full", lr=3e-3, epochs=4, batch_size=8), progress=False)
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.fixture()
def model(trained):
    m = tiny_model(0)
    m.load_state_dict(trained)
    for p in m.parameters():
        p.requires_grad_(False)
    return m
