"""Built-in unlearning methods; importing this package registers them.

One file per method: ``ga``, ``graddiff``, ``npo``, ``pcgrad``, ``e2urec``, ``cure``,
``cure-random`` (random_groups.py) and ``retrain`` (the gold standard, via
:func:`recircuit.train.retrain`). A new method is one more file imported here.
"""

from recircuit.unlearn.methods import (  # noqa: F401
    cure,
    e2urec,
    ga,
    graddiff,
    npo,
    pcgrad,
    random_groups,
    retrain,
)
