"""Built-in unlearning methods; importing this package registers them.

One file per method: ga, graddiff, npo, pcgrad, e2urec, cure (and random-groups CURE).
Retrain, the gold standard, is :func:`recircuit.train.retrain`.
"""

from recircuit.unlearn.methods import cure, e2urec, ga, graddiff, npo, pcgrad  # noqa: F401
