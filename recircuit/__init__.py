"""recircuit: circuit-aware unlearning for LLM-based recommenders.

Quick start::

    from recircuit.models import load_model, score
    from recircuit.data import build_split
    from recircuit.metrics import classification_metrics

    model = load_model("smollm2-135m-instruct")          # a TransformerBridge, per-head hooks on
    split = build_split("tallrec")                        # MovieLens-100K -> TALLRec prompts
    p_yes = score(model, split.test[:100])                # P("Yes") per sample
    print(classification_metrics([s.label for s in split.test[:100]], p_yes))
"""

__version__ = "0.1.0"
