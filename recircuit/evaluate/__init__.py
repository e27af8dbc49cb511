"""The LLMRec unlearning protocol's metrics, reports and audit records.

Usage::

    from recircuit.evaluate import evaluate_unlearning, UnlearningReport, audit_record
    row = evaluate_unlearning(model, retrained, forget, test, heldout)   # utility, JSD, MIA
    report = UnlearningReport(); report.add("cure", seed=0, metrics=row); report.save("runs/report")
"""

from recircuit.evaluate.metrics import evaluate_unlearning, jsd_binary, mia_auc, per_sample_loss
from recircuit.evaluate.report import UnlearningReport, audit_record, model_hash, samples_hash

__all__ = ["UnlearningReport", "audit_record", "evaluate_unlearning", "jsd_binary", "mia_auc",
           "model_hash", "per_sample_loss", "samples_hash"]
