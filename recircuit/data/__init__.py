"""MovieLens-100K data, TALLRec prompts, split presets, forget/retain splits and request checks.

Usage::

    from recircuit.data import build_split, check_request, forget_retain_split, sample_key
    split = build_split("tallrec")                     # 8000 / 1000 / 1000 samples
    request = forget_retain_split(split, "user", fraction=0.1, seed=0)
    check_request(request.forget, request.retain, test=split.test, heldout=split.valid, train=split.train)

:func:`sample_key` is the one sample identity and :func:`check_request` the one deletion-request
validator of the package (both in :mod:`recircuit.data.requests`).
"""

from recircuit.data.movielens import DataFormatError, MovieLens, load_movielens
from recircuit.data.prompts import INSTRUCTION, PROMPT_TEMPLATE, Sample, build_input, make_sample
from recircuit.data.requests import RequestError, check_disjoint, check_request, sample_key
from recircuit.data.splits import (
    PRESETS,
    ForgetRetain,
    Split,
    SplitError,
    build_split,
    cap_per_user,
    check_forget_args,
    forget_retain_split,
    random_split,
    tallrec_split,
    write_tallrec_json,
)
from recircuit.data.tallrec_json import load_tallrec_json

__all__ = [
    "INSTRUCTION",
    "PRESETS",
    "PROMPT_TEMPLATE",
    "DataFormatError",
    "ForgetRetain",
    "MovieLens",
    "Sample",
    "Split",
    "RequestError",
    "SplitError",
    "build_input",
    "build_split",
    "cap_per_user",
    "check_disjoint",
    "check_forget_args",
    "check_request",
    "forget_retain_split",
    "load_movielens",
    "load_tallrec_json",
    "make_sample",
    "random_split",
    "sample_key",
    "tallrec_split",
    "write_tallrec_json",
]
