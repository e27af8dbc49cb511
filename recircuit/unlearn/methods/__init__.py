"""Built-in unlearning methods; importing this package registers them.

Usage::

    import recircuit.unlearn.methods            # (done by ``import recircuit.unlearn``)
    from recircuit.unlearn.registry import available_methods
    available_methods()                         # ['cure', 'cure-random', 'e2urec', 'ga', ...]

One file per method, each holding its config dataclass and its ``@register(name, Config)``
class: ``ga``, ``graddiff``, ``npo``, ``pcgrad``, ``e2urec``, ``cure``, ``cure-random``
(random_groups.py), ``clue`` (neurons localized by a SAT reading of forget and retain circuits), ``clue-random``
(clue_random.py, its control) and ``retrain`` (the gold standard, via :func:`recircuit.train.retrain`);
the exact methods ``sisa`` and ``apa`` (shard adapters, :mod:`recircuit.unlearn.ensemble`, their
shared run in ``_exact.py``).
A new method is one more file imported here.
"""

from recircuit.unlearn.methods import (  # noqa: F401
    apa,
    clue,
    clue_random,
    cure,
    e2urec,
    ga,
    graddiff,
    npo,
    pcgrad,
    random_groups,
    retrain,
    sisa,
)
