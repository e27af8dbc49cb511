"""Hooked models (``TransformerBridge``) and Yes/No scoring.

Usage::

    from recircuit.models import load_model, tiny_model, score
    model = load_model("smollm2-135m-instruct")
    p_yes = score(model, samples, batch_size=8)
"""

from recircuit.models.loading import (
    OFFLINE_MODELS,
    ModelLoadError,
    default_device,
    enable_circuit_hooks,
    load_hf,
    load_model,
    model_device,
    model_name,
    plain_forward,
    tiny_hf_model,
    tiny_model,
    tiny_tokenizer,
)
from recircuit.models.scoring import (
    AnswerTokens,
    TokenizedBatch,
    answer_tokens,
    iter_batches,
    score,
    tokenize_prompts,
    yes_no_logits,
)

__all__ = [
    "OFFLINE_MODELS",
    "AnswerTokens",
    "ModelLoadError",
    "TokenizedBatch",
    "answer_tokens",
    "default_device",
    "enable_circuit_hooks",
    "iter_batches",
    "load_hf",
    "load_model",
    "model_device",
    "model_name",
    "plain_forward",
    "score",
    "tiny_hf_model",
    "tiny_model",
    "tiny_tokenizer",
    "tokenize_prompts",
    "yes_no_logits",
]
