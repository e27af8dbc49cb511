"""The LLMRec unlearning protocol's metrics, reports, audit records, intervals and relearning attack.

Usage::

    from recircuit.evaluate import evaluate_unlearning, memorization_gap, UnlearningReport, audit_record
    row = evaluate_unlearning(model, retrained, forget, test, heldout)   # utility, JSD, MIA
    gap = memorization_gap(original, retrained, forget, heldout, test)   # gap["measurable"], gap["verdict"]
    report = UnlearningReport(); report.add("cure", seed=0, metrics=row); report.save("runs/report")

    from recircuit.evaluate import paired_difference, relearn_attack, RelearnConfig
    d = paired_difference(cure_per_request, control_per_request)         # mean, ci_low, ci_high, excludes_zero
    curve = relearn_attack(unlearned, forget, RelearnConfig(steps=10))   # loss on half B while tuning on A
"""

from recircuit.evaluate.metrics import (
    evaluate_unlearning,
    jsd_binary,
    memorization_gap,
    mia_auc,
    per_sample_loss,
)
from recircuit.evaluate.relearn import (
    RelearnConfig,
    RelearnCurve,
    relearn_attack,
    split_halves,
    steps_to_reach,
)
from recircuit.evaluate.report import UnlearningReport, audit_record, model_hash, samples_hash
from recircuit.evaluate.stats import (
    auc_difference_ci,
    auc_from_counts,
    bootstrap_ci,
    paired_difference,
    sign_flip_p_value,
)

__all__ = ["RelearnConfig", "RelearnCurve", "UnlearningReport", "auc_difference_ci", "auc_from_counts", "audit_record",
           "bootstrap_ci", "sign_flip_p_value", "evaluate_unlearning", "jsd_binary", "memorization_gap", "mia_auc", "model_hash",
           "paired_difference", "per_sample_loss", "relearn_attack", "samples_hash", "split_halves",
           "steps_to_reach"]
