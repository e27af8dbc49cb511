import pytest

from recircuit.data import make_sample


@pytest.fixture(scope="session")
def toy_task():
    """A learnable task: the target title alone decides the label."""
    liked = {"Alpha (1990)", "Iota (1995)"}
    titles = ["Alpha (1990)", "Delta (1992)", "Iota (1995)", "Theta (1994)"]
    data = []
    for u in range(48):
        target = titles[u % 4]
        hist = [(i, titles[(u + i) % 4], 5 if i % 2 else 1) for i in range(3)]
        data.append(make_sample(u, hist, (200 + u, target, 5 if target in liked else 1), timestamp=u))
    return data[:32], data[32:]
