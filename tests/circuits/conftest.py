import pytest

from recircuit.circuits.corruptions import label_flip
from recircuit.data import make_sample

TITLES = ["Alpha (1990)", "Beta Gamma (1991)", "Delta (1992)", "Epsilon Zeta Eta (1993)", "Theta (1994)", "Iota (1995)"]


@pytest.fixture(scope="session")
def pairs():
    """Eight clean samples (varied lengths) and their label-flip corruptions."""
    clean = [
        make_sample(u, [(i, TITLES[(i + u) % 6], 5 if (i + u) % 3 else 1) for i in range(2 + u % 3)],
                    (100 + u, TITLES[u % 6], 5 if u % 2 else 2), timestamp=u)
        for u in range(8)
    ]
    return clean, label_flip(clean)
