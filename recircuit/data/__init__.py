"""Rating data (MovieLens-100K, BookCrossing, CSV, TALLRec JSON), TALLRec prompts per domain,
split presets, forget/retain splits and request checks.

Usage::

    from recircuit.data import DataSource, build_split, check_request, forget_retain_split, sample_key
    split = build_split("tallrec")                     # 8000 / 1000 / 1000 samples
    split = DataSource("bookcrossing", path="data/bx", history_len=5).split("tallrec")
    request = forget_retain_split(split, "user", fraction=0.1, seed=0)
    check_request(request.forget, request.retain, test=split.test, heldout=split.valid, train=split.train)

:func:`sample_key` is the one sample identity and :func:`check_request` the one deletion-request
validator of the package (both in :mod:`recircuit.data.requests`).
"""

from recircuit.data.bookcrossing import load_bookcrossing
from recircuit.data.domains import DomainSpec, Item, domain_names, get_domain, register_domain
from recircuit.data.interactions_csv import load_interactions_csv
from recircuit.data.movielens import DataFormatError, MovieLens, load_movielens
from recircuit.data.prompts import INSTRUCTION, PROMPT_TEMPLATE, Sample, build_input, make_sample
from recircuit.data.ratings import RatingData, like_threshold_for
from recircuit.data.requests import RequestError, check_disjoint, check_request, sample_key
from recircuit.data.sources import FORMATS, Catalogue, DataSource
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
    "FORMATS",
    "Catalogue",
    "DataSource",
    "DomainSpec",
    "Item",
    "RatingData",
    "domain_names",
    "get_domain",
    "like_threshold_for",
    "load_bookcrossing",
    "load_interactions_csv",
    "register_domain",
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
