"""TALLRec fine-tuning on hooked bridges: LoRA or full, checkpoints, Retrain.

Usage::

    from recircuit.train import TrainConfig, train, retrain, save_checkpoint, load_checkpoint
    res = train(model, split.train[:512], split.valid[:200], TrainConfig(mode="full", lr=5e-5))
    path = cached_recommender("smollm2-135m-instruct", split, TrainConfig(mode="full", lr=5e-5))
"""

from recircuit.train.cache import cached_recommender, load_recommender, recommender_dir
from recircuit.train.checkpoint import (
    CheckpointMismatchError,
    load_checkpoint,
    load_trained,
    read_meta,
    save_checkpoint,
)
from recircuit.train.loop import (
    NonFiniteLossError,
    TrainConfig,
    TrainingFailed,
    TrainResult,
    evaluate,
    retrain,
    train,
)
from recircuit.train.lora import (
    LoraConfig,
    attach_lora,
    combine_adapters,
    detach_lora,
    load_combined,
    lora_modules,
    lora_state_dict,
    merge_lora,
    set_lora_enabled,
    unmerge_lora,
)
from recircuit.train.losses import answer_forward, answer_loss, tokenize_with_answers

__all__ = [
    "CheckpointMismatchError",
    "LoraConfig",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "TrainingFailed",
    "answer_forward",
    "answer_loss",
    "attach_lora",
    "cached_recommender",
    "combine_adapters",
    "detach_lora",
    "evaluate",
    "load_checkpoint",
    "load_combined",
    "load_recommender",
    "load_trained",
    "lora_modules",
    "lora_state_dict",
    "merge_lora",
    "read_meta",
    "recommender_dir",
    "retrain",
    "save_checkpoint",
    "set_lora_enabled",
    "tokenize_with_answers",
    "train",
    "unmerge_lora",
]
