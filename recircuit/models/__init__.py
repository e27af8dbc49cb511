"""Hooked models (``TransformerBridge``) and Yes/No scoring.

Usage::

    from recircuit.models import load_model, tiny_model, score, family_of
    model = load_model("smollm2-135m-instruct")
    p_yes = score(model, samples, batch_size=8)
    family_of(load_model("tiny-gpt2")).qkv            # 'fused': the family table, models/families.py
    convert_gguf("model.gguf", "model-hf")            # a GGUF file as a plain HF directory (models/loading.py)
"""

from recircuit.models.families import (
    FAMILIES,
    PROJECTIONS,
    Family,
    family_of,
    head_slice,
    module_update_norms,
    projection_params,
    projections,
)
from recircuit.models.loading import (
    OFFLINE_MODELS,
    TINY_MODELS,
    ModelLoadError,
    convert_gguf,
    copy_model,
    default_device,
    enable_circuit_hooks,
    load_gguf,
    load_hf,
    load_model,
    model_device,
    model_name,
    plain_forward,
    tiny_family,
    tiny_hf_model,
    tiny_model,
    tiny_model_name,
    tiny_tokenizer,
)
from recircuit.models.scoring import (
    AnswerTokens,
    TokenizedBatch,
    answer_tokens,
    iter_batches,
    kept_logits,
    p_yes_from_logits,
    read_yes_no,
    score,
    tokenize_prompts,
    yes_no_logits,
)

__all__ = [
    "FAMILIES",
    "OFFLINE_MODELS",
    "PROJECTIONS",
    "TINY_MODELS",
    "Family",
    "family_of",
    "head_slice",
    "module_update_norms",
    "projection_params",
    "projections",
    "AnswerTokens",
    "ModelLoadError",
    "TokenizedBatch",
    "answer_tokens",
    "convert_gguf",
    "copy_model",
    "default_device",
    "enable_circuit_hooks",
    "iter_batches",
    "load_gguf",
    "load_hf",
    "load_model",
    "model_device",
    "model_name",
    "p_yes_from_logits",
    "plain_forward",
    "read_yes_no",
    "score",
    "tiny_hf_model",
    "tiny_family",
    "tiny_model",
    "tiny_model_name",
    "tiny_tokenizer",
    "tokenize_prompts",
    "yes_no_logits",
    "kept_logits",
]
