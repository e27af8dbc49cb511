"""The LLMRec unlearning protocol, written once: data, Original, Retrain, circuit, methods, evaluation, report.

Usage::

    from recircuit.pipeline import GridConfig, PipelineConfig, run_grid, run_pipeline

    cfg = PipelineConfig.tiny(data_dir="../shared/data/ml-100k")   # or PipelineConfig() for SmolLM2
    res = run_pipeline(cfg, "runs/demo")          # one request, with the circuit: what `recircuit demo` runs
    res.table                                     # methods x metrics (pandas)

    grid = GridConfig(methods=("ga", "npo"), seeds=(0, 1, 2), rates=(0.1,))
    out = run_grid(cfg, grid, "runs/unlearning")  # method x seed x rate as Ray tasks (local cores)
    out = run_grid(cfg, grid, "runs/unlearning", ray_address="ray://head:10001")   # an existing cluster

    PipelineConfig.from_dict(cfg.to_dict()) == cfg      # the config round-trips through JSON

The protocol (E2URec / CURE): Original is fine-tuned on a pool of whole users (TALLRec
``tallrec`` split, at most ``per_user`` windows each); a request forgets a seeded fraction of the
pool's users; Retrain, the gold standard, is the same training (same config and seed) on the
retain users only; every unlearning method starts from Original's weights with the same loop
budget; each is scored against Retrain on utility, forget-set JSD, membership inference and time.

Everything runs through the one cache (:mod:`recircuit.cache`): the checkpoints of Original and
Retrain, the circuit, the reference evaluation of each request and every method's result, keyed
by their inputs (configs, checkpoints, sample ids) and recircuit's source, checked by sha256 on
reuse. The whole config is validated (:func:`validate`), and every request is drawn, before any
model is loaded, so a bad method name or fraction fails at once with an
:class:`~recircuit.errors.InputError` naming the field.

:func:`run_grid` runs each (method, seed, rate) request as a Ray task (one CPU and one torch
thread each; Original is trained once, before the tasks, and shared through the cache) and
writes each finished request to ``<out>/runs/`` as it completes, so a rerun only does what is
missing. Ray is imported inside :func:`run_grid` only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from recircuit._io import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    sha256_file,
    temp_prefix,
)
from recircuit.cache import Cache
from recircuit.circuits import AttributionConfig, corruption_names
from recircuit.circuits.corruptions import check_corruption_args
from recircuit.data import (
    DataSource,
    ForgetRetain,
    Split,
    SplitError,
    check_forget_args,
    sample_key,
)
from recircuit.data.prompts import Sample
from recircuit.errors import InputError
from recircuit.nodes import top_heads
from recircuit.train import TrainConfig
from recircuit.unlearn import (
    Grouping,
    LoopConfig,
    MethodConfig,
    available_methods,
    config_class,
    method_config,
)
from recircuit.unlearn.registry import method_entry

if TYPE_CHECKING:
    from recircuit.evaluate.relearn import RelearnConfig

logger = logging.getLogger(__name__)

#: Circuit step outputs written into the output directory (and cached with their sha256).
CIRCUIT_FILES = ("circuit.json", "circuit.safetensors", "faithfulness.json", "attention.json",
                 "attention.safetensors", "circuit_summary.json")

#: Metric columns of the report's Markdown table.
REPORT_COLUMNS = ("forget_jsd", "test_jsd", "test_auc", "forget_auc", "forget_loss", "mia_auc",
                  "mia_gap_to_retrain", "seconds", "time_vs_retrain")

#: The four outputs each reference model has for one request (see evaluate.metrics.model_outputs).
_OUTPUT_SETS = {"p_test": "test", "p_forget": "forget", "loss_forget": "forget", "loss_heldout": "heldout"}


# ---------------------------------------------------------------------------------------------
# config


@dataclass
class DataConfig:
    """The samples of a run.

    Attributes:
        data_dir: a directory with GroupLens ``u.data``/``u.item``/``u.user`` (None: the asset).
        source: another data set (:class:`recircuit.data.DataSource`: BookCrossing, a CSV, TALLRec
            JSON...; a JSON object in :meth:`PipelineConfig.from_dict`) instead of ``data_dir``.
            Left out of :meth:`to_dict` when ``None``, so MovieLens configs keep their form.
        n_train: training pool size (whole users, ``per_user`` windows each).
        per_user: training windows kept per user, so user-level forgetting has users to pick.
        n_valid: validation samples (start of the valid split) for early stopping of fine-tuning
            (0: no validation, every epoch is trained and the last weights kept).
        n_stop: never-trained samples (start of the valid split) for early stopping of unlearning.
        n_test: test samples for utility and JSD.
        n_heldout: never-trained samples (end of the valid split): the MIA non-members.
        forget_fraction: share of the pool's users that ask to be forgotten (the single run's rate).
        seed: seed of the single run's request (and of its unlearning loop).
    """

    data_dir: str | None = None
    n_train: int = 64
    per_user: int = 8
    n_valid: int = 32
    n_stop: int = 32
    n_test: int = 64
    n_heldout: int = 32
    forget_fraction: float = 0.25
    seed: int = 0
    source: DataSource | None = None

    def __post_init__(self) -> None:
        if isinstance(self.source, Mapping):
            try:
                self.source = DataSource.from_dict(self.source)
            except InputError as err:
                raise InputError(_message(err), field=_join("source", err.field) if err.field else "source",
                                 fix=err.fix) from err
        if self.source is not None and not isinstance(self.source, DataSource):
            raise InputError(f"source must be a DataSource or a JSON object, got {type(self.source).__name__}",
                             field="source", fix='e.g. {"format": "bookcrossing", "path": "data/bx"}')
        if self.source is not None and self.data_dir is not None:
            raise InputError("data_dir and source both name the data", field="data_dir",
                             fix='leave data_dir out, or use source {"format": "movielens", "path": ...}')

    def to_dict(self) -> dict:
        """JSON-able form (``source`` as its own dict, left out when ``None``)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}
        if self.source is not None:
            d["source"] = self.source.to_dict()
        return d


#: The README's fine-tuning recipe, the protocol's base recommender: the first 512 samples outside the
#: pool, Yes/No loss, lr 5e-5 constant without warmup (benchmarks/RESULTS.md, issue 13's pilots: it
#: answers both ways, where a base over fewer windows per user answered one way).
RECIPE_TRAIN = TrainConfig(mode="full", lr=5e-5, epochs=1, batch_size=8, warmup_ratio=0.0, schedule="constant",
                           eval_every=16, patience=2, loss="yes_no")
#: Stage 2 of the protocol (Original and Retrain from the base): the Yes/No loss at lr 1e-4 for 3
#: epochs. Of the four stage-2 settings piloted it is the one whose two pilot requests both passed
#: both memorization checks with margin (MIA gap 0.29 and 0.43, forget/test JSD 3.5 and 11.8); its
#: cost is utility (Original ranks a few points below its base).
STAGE2_TRAIN = TrainConfig(mode="full", lr=1e-4, epochs=3, batch_size=8, warmup_ratio=0.1, schedule="constant",
                           loss="yes_no")
#: Base samples replayed in both Original's and Retrain's fine-tuning (64 let the priors drift apart
#: between requests; 128 held them together).
PROTOCOL_REPLAY = 128


def _base_train() -> TrainConfig:
    return TrainConfig(mode="full", lr=5e-5, epochs=1, batch_size=8, warmup_ratio=0.1, schedule="constant",
                       eval_every=16, patience=3, loss="yes_no")


@dataclass
class BaseConfig:
    """The base recommender that Original and Retrain both continue (the two-stage protocol).

    A recommender has to be a real one before anything about forgetting can be measured, and
    a few dozen pool samples do not make one. So a base recommender is first fine-tuned on users
    **outside** the unlearning pool (no forget user is in it, so it is part of the gold standard
    too), then Original continues it on the whole pool and Retrain on the retain users only,
    with the same config and seed. The base is trained once per data set and shared.

    Attributes:
        n_train: base training samples: the split's training samples of users not in the pool,
            at most ``per_user`` windows each, the first ``n_train``.
        per_user: windows kept per base user (more users, fewer windows each, generalize better);
            0: no cap, the first ``n_train`` samples of users outside the pool in the split's order
            (TALLRec's own recipe: long runs of one user's windows).
        n_valid: validation samples for its early stopping (the start of the valid split; must
            not reach the MIA non-members at its end).
        train: its fine-tuning (:class:`recircuit.train.TrainConfig`; ``mode`` must be ``full``).
        replay: base samples mixed into the fine-tuning of Original *and* Retrain (the same ones:
            a draw fixed by seed 0, whatever the request). They anchor the prior the two runs
            share, as in the one-stage protocol where Original and Retrain train on one large set
            that differs only by the forget users; without them, the few pool samples can move the
            answer prior of the two runs apart and hide forgetting behind that shift. 0: none
            (left out of :meth:`to_dict`).
    """

    n_train: int = 512
    per_user: int = 8
    n_valid: int = 200
    train: TrainConfig = field(default_factory=_base_train)
    replay: int = 0

    def to_dict(self) -> dict:
        """JSON-able form."""
        d = {"n_train": self.n_train, "per_user": self.per_user, "n_valid": self.n_valid,
             "train": self.train.to_dict()}
        if self.replay:
            d["replay"] = self.replay
        return d


@dataclass
class CircuitConfig:
    """The recommendation circuit of Original (single runs only; the grid skips it).

    Attributes:
        enabled: extract the circuit at all.
        samples: test prompts to attribute on.
        corruption: the corruption of the clean prompts (``label_flip``, ...).
        corruption_args: the corruption's own arguments (JSON scalars, e.g. ``{"seed": 1}`` or
            ``{"far_fraction": 0.1}`` for ``ppr``; see
            :func:`recircuit.circuits.corruptions.corruption_arg_names`); the data set's titles,
            catalogue and interactions are not among them. Left out of :meth:`to_dict` when empty.
        top_n: edges kept in the saved circuit and drawn in the diagram.
        faithfulness: run the faithfulness sweep (one patched forward per size and batch).
        faithfulness_sizes: circuit sizes of the sweep (fractions of all edges).
        attention_heads: how many top heads to save attention patterns of.
        attribution: how edges are scored (:class:`recircuit.circuits.AttributionConfig`).
    """

    enabled: bool = True
    samples: int = 8
    corruption: str = "label_flip"
    corruption_args: dict = field(default_factory=dict)
    top_n: int = 200
    faithfulness: bool = True
    faithfulness_sizes: tuple[float, ...] = (0.001, 0.01, 0.05, 0.2, 0.5, 1.0)
    attention_heads: int = 4
    attribution: AttributionConfig = field(default_factory=lambda: AttributionConfig(
        method="eap-ig-inputs", steps=2, batch_size=8, align="left"))

    def __post_init__(self) -> None:
        self.faithfulness_sizes = tuple(float(f) for f in self.faithfulness_sizes)
        if isinstance(self.corruption, str) and self.corruption in corruption_names():
            self.corruption_args = check_corruption_args(self.corruption, self.corruption_args)
        elif not isinstance(self.corruption_args, Mapping):     # an unknown name: validate() names it
            raise InputError(f"must be a JSON object, got {type(self.corruption_args).__name__}",
                             field="corruption_args", fix='e.g. {"seed": 1}')

    def to_dict(self) -> dict:
        """JSON-able form (``corruption_args`` left out when empty, so older configs keep their form)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.corruption_args:
            d["corruption_args"] = dict(self.corruption_args)
        else:
            del d["corruption_args"]
        d["faithfulness_sizes"] = list(self.faithfulness_sizes)
        d["attribution"] = {k: v for k, v in self.attribution.to_dict().items() if k != "progress"}
        return d


@dataclass
class EvalConfig:
    """Evaluation settings.

    Attributes:
        batch_size: prompts per forward pass when scoring.
        relearn_steps: steps of the relearning attack run on every unlearned model and on
            Retrain (:func:`recircuit.evaluate.relearn_attack`: fine-tune a copy on half of the
            forget samples, watch the other half's loss come back); 0 turns it off.
        relearn_lr: its learning rate.
        relearn_batch_size: its samples per step.
    """

    batch_size: int = 8
    relearn_steps: int = 0
    relearn_lr: float = 5e-5
    relearn_batch_size: int = 4

    def to_dict(self) -> dict:
        """JSON-able form (the relearning settings left out while the attack is off)."""
        d = dataclasses.asdict(self)
        if not self.relearn_steps:
            for k in ("relearn_steps", "relearn_lr", "relearn_batch_size"):
                del d[k]
        return d

    def relearn_config(self, seed: int) -> RelearnConfig | None:
        """The attack's :class:`~recircuit.evaluate.relearn.RelearnConfig` (None when off)."""
        from recircuit.evaluate.relearn import RelearnConfig

        if not self.relearn_steps:
            return None
        return RelearnConfig(steps=self.relearn_steps, lr=self.relearn_lr, batch_size=self.relearn_batch_size,
                             seed=seed)


def _default_methods() -> dict[str, MethodConfig]:
    # CURE's module importance at the demo's size: 4 forget and 4 retain prompts, 2 IG steps
    return {"cure": method_config("cure", importance_samples=4, importance_steps=2),
            "ga": method_config("ga"), "npo": method_config("npo")}


def preset_method(config: PipelineConfig, name: str) -> MethodConfig:
    """``name``'s config in ``config``, else one that matches the preset's own CURE where it can.

    A CURE variant not in the preset (``cure-random``) takes the preset CURE's settings, so a
    control differs from CURE only in what it controls for (``cure-random:x`` takes ``cure:x``'s);
    any other method takes its defaults.
    """
    if name in config.methods:
        return config.methods[name]
    label = name.split(":", 1)[1] if ":" in name else None
    base = config.methods.get("cure" if label is None else f"cure:{label}")
    cls = config_class(name)
    if base is not None and isinstance(base, cls):
        return cls.from_dict(base.to_dict(), method=name)
    return method_config(name)


@dataclass
class PipelineConfig:
    """Everything one run of the protocol depends on (nested; JSON round trip with to_dict/from_dict).

    Attributes:
        model: base model (``"smollm2-135m-instruct"``, an HF name, a local directory or ``"tiny"``).
        device: torch device (default: CUDA when present, else CPU).
        data: the samples (:class:`DataConfig`).
        train: fine-tuning of Original and Retrain (:class:`recircuit.train.TrainConfig`).
        circuit: the circuit step (:class:`CircuitConfig`).
        methods: unlearning methods to compare, each with its own config (Retrain is always run).
        loop: the budget every method gets (:class:`recircuit.unlearn.LoopConfig`); its ``seed``
            is replaced by each request's seed.
        eval: evaluation settings (:class:`EvalConfig`).
        base: the base recommender Original and Retrain continue (:class:`BaseConfig`; None:
            both start from the base model itself). Left out of :meth:`to_dict` when None.
    """

    model: str = "smollm2-135m-instruct"
    device: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(mode="full", lr=1e-4, epochs=2, batch_size=8,
                                                                   eval_every=4, patience=3))
    circuit: CircuitConfig = field(default_factory=CircuitConfig)
    methods: dict[str, MethodConfig] = field(default_factory=_default_methods)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=6, lr=2e-5, batch_size=4, eval_every=5,
                                                                eval_samples=32))
    eval: EvalConfig = field(default_factory=EvalConfig)
    base: BaseConfig | None = None

    @classmethod
    def tiny(cls, data_dir: str | None = None, source: DataSource | None = None, **overrides: Any) -> PipelineConfig:
        """A dry run on the tiny random GQA model: every step in about a minute on CPU (``source``:
        another data set than MovieLens, see :class:`DataConfig`)."""
        cfg = cls(model="tiny", device="cpu",
                  data=DataConfig(data_dir=data_dir, source=source, n_train=48, per_user=6, n_valid=16, n_stop=16, n_test=24,
                                  n_heldout=16),
                  train=TrainConfig(mode="full", lr=3e-3, epochs=2, batch_size=8, eval_every=3, patience=3),
                  circuit=CircuitConfig(samples=4, top_n=60, attribution=AttributionConfig(
                      method="eap-ig-inputs", steps=2, batch_size=8, align="left")),
                  methods={"cure": method_config("cure", importance_samples=4, importance_steps=2),
                           "ga": method_config("ga"), "npo": method_config("npo")},
                  loop=LoopConfig(steps=4, lr=1e-3, batch_size=8, eval_every=5, eval_samples=16))
        return dataclasses.replace(cfg, **overrides)

    @classmethod
    def protocol(cls, model: str = "smollm2-135m-instruct", *, n_pool: int = 64, data_dir: str | None = None,
                 source: DataSource | None = None, device: str | None = None, **overrides: Any) -> PipelineConfig:
        """The two-stage protocol in which forgetting is measurable (the demo's and the study's).

        A base recommender (:data:`RECIPE_TRAIN` on the first 512 samples of users outside the
        pool) is continued into Original (the whole pool) and Retrain (its retain users) with
        :data:`STAGE2_TRAIN` and the same :data:`PROTOCOL_REPLAY` base samples. The pool has
        ``n_pool`` samples of 4 windows per user; utility is read on 200 test samples and
        membership against 100 never-trained samples (the sizes at which the memorization check's
        differences exceed their bootstrap intervals). CURE uses the importance definition the
        study selected on requests it never reports (the user-swap corruption,
        ``benchmarks/results/validity/selection.json``), next to its random-groups control, GA
        and NPO.

        Args:
            model: base model.
            n_pool: training pool size (the demo 64, the study 128).
            data_dir, source: the data (see :class:`DataConfig`).
            device: torch device.
            **overrides: any other field of :class:`PipelineConfig`.
        """
        cure = method_config("cure", importance_samples=8, importance_steps=3, corruption="user_swap")
        cfg = cls(model=model, device=device,
                  base=BaseConfig(n_train=512, per_user=0, n_valid=100, replay=PROTOCOL_REPLAY,
                                  train=dataclasses.replace(RECIPE_TRAIN)),     # copies: no config shares them
                  data=DataConfig(data_dir=data_dir, source=source, n_train=n_pool, per_user=4, n_valid=0, n_stop=32,
                                  n_test=200, n_heldout=100),
                  train=dataclasses.replace(STAGE2_TRAIN),
                  methods={"cure": cure, "cure-random": method_config("cure-random", **cure.to_dict()),
                           "ga": method_config("ga"), "npo": method_config("npo")},
                  loop=LoopConfig(steps=6, lr=2e-5, batch_size=4, eval_every=5, eval_samples=32))
        return dataclasses.replace(cfg, **overrides)

    def to_dict(self) -> dict:
        """JSON-able form (nested dicts; methods as ``{name: settings}``)."""
        d = {"model": self.model, "device": self.device, "data": self.data.to_dict(),
             "train": self.train.to_dict(), "circuit": self.circuit.to_dict(),
             "methods": {name: cfg.to_dict() for name, cfg in self.methods.items()},
             "loop": self.loop.to_dict(), "eval": self.eval.to_dict()}
        if self.base is not None:
            d["base"] = self.base.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PipelineConfig:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys raise
        :class:`~recircuit.errors.InputError` naming the field."""
        d = dict(_known(cls, d, ""))
        default = cls()
        if "data" in d:
            d["data"] = _build(DataConfig, d["data"], "data")
        if "train" in d:
            d["train"] = _build(TrainConfig, d["train"], "train")
        if "circuit" in d:
            d["circuit"] = _build(CircuitConfig, d["circuit"], "circuit")
        if "methods" in d:
            d["methods"] = _methods_from(d["methods"])
        if "loop" in d:
            d["loop"] = _build(LoopConfig, d["loop"], "loop")
        if "eval" in d:
            d["eval"] = _build(EvalConfig, d["eval"], "eval")
        if d.get("base") is not None:
            d["base"] = _build(BaseConfig, d["base"], "base")
        return dataclasses.replace(default, **d)


@dataclass
class GridConfig:
    """The requests of a grid: every method x seed x deletion rate.

    Attributes:
        methods: methods to run (None: every method of the pipeline config).
        seeds: seeds of the forget-set sampling (and of each request's unlearning loop).
        rates: deletion rates (share of the pool's users forgotten).
    """

    methods: tuple[str, ...] | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    rates: tuple[float, ...] = (0.1,)

    def __post_init__(self) -> None:
        self.methods = None if self.methods is None else tuple(self.methods)
        self.seeds, self.rates = tuple(self.seeds), tuple(self.rates)


def _known(cls: type, d: Any, prefix: str) -> Mapping[str, Any]:
    where = prefix or "the pipeline config"
    if not isinstance(d, Mapping):
        raise InputError(f"{where} must be a JSON object, got {type(d).__name__}", field=prefix or None)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise InputError(f"unknown setting {unknown[0]!r} in {where}", field=_join(prefix, unknown[0]),
                         fix=f"its settings: {', '.join(sorted(names))}")
    return d


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _message(err: InputError) -> str:
    """An InputError's message without its ``field ...:`` prefix and ``; fix`` suffix (to re-raise it
    under a longer field name)."""
    text = str(err)
    if err.fix:
        suffix = "; " + " ".join(err.fix.split())
        text = text[: -len(suffix)] if text.endswith(suffix) else text
    if err.field is not None or err.path is not None or err.line is not None:
        text = text.split(": ", 1)[-1]
    return text


def _build(cls: type, d: Any, prefix: str):
    kw = dict(_known(cls, d, prefix))
    if cls is CircuitConfig and isinstance(kw.get("attribution"), Mapping):
        kw["attribution"] = _build(AttributionConfig, kw["attribution"], _join(prefix, "attribution"))
    if cls is BaseConfig and isinstance(kw.get("train"), Mapping):
        kw["train"] = _build(TrainConfig, kw["train"], _join(prefix, "train"))
    try:
        return cls(**kw)
    except InputError as err:
        raise InputError(_message(err), field=_join(prefix, err.field) if err.field else prefix, fix=err.fix) from err
    except (TypeError, ValueError) as err:
        raise InputError(f"invalid {prefix} settings: {err}", field=prefix) from err


def _methods_from(d: Any) -> dict[str, MethodConfig]:
    if isinstance(d, list | tuple):
        d = {name: {} for name in d}
    if not isinstance(d, Mapping):
        raise InputError(f"methods must map method names to their settings, got {type(d).__name__}", field="methods")
    out = {}
    for name, settings in d.items():
        _check_method_name(name)
        try:
            out[name] = config_class(name).from_dict(settings or {}, method=name)
        except InputError as err:
            raise InputError(_message(err), field=f"methods.{name}" + (f".{err.field}" if err.field else ""),
                             fix=err.fix) from err
    return out


def _check_method_name(name: str) -> None:
    from recircuit.unlearn.registry import base_method

    names = [m for m in available_methods() if m != "retrain"]
    try:
        name = base_method(name)
    except InputError as err:
        raise InputError(_message(err), field="methods", fix=err.fix) from err
    if name == "retrain":
        raise InputError("Retrain is always run as the reference; do not list it", field="methods",
                         fix=f"choose among {', '.join(names)}")
    if name not in names:
        raise InputError(f"unknown unlearning method {name!r}", field="methods", fix=f"choose among {', '.join(names)}")


def _check_rate(value: Any, where: str) -> None:
    try:
        check_forget_args("user", value, 0)
    except SplitError as err:
        raise InputError(_message(err), field=where, fix="e.g. 0.1 forgets 10% of the pool's users") from err


def _recheck(obj: Any, prefix: str) -> None:
    """Run ``obj``'s own ``__post_init__`` checks again (a field may have been set after construction)."""
    try:
        dataclasses.replace(obj)
    except InputError as err:
        raise InputError(_message(err), field=_join(prefix, err.field) if err.field else prefix, fix=err.fix) from err
    except (TypeError, ValueError) as err:
        raise InputError(f"invalid {prefix} settings: {err}", field=prefix) from err


def validate(config: PipelineConfig, grid: GridConfig | None = None) -> None:
    """Check the whole config (and grid) before any work.

    Raises:
        InputError: the first bad field, named (``data.forget_fraction``, ``methods``, ...).
    """
    cfg = config
    if not isinstance(cfg.model, str) or not cfg.model:
        raise InputError("must name a base model (e.g. 'smollm2-135m-instruct' or 'tiny')", field="model")
    d = cfg.data
    for name in ("n_train", "per_user", "n_valid", "n_stop", "n_test", "n_heldout"):
        v, low = getattr(d, name), 0 if name == "n_valid" else 1
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise InputError(f"must be a whole number >= {low}, got {v!r}", field=f"data.{name}")
    _check_rate(d.forget_fraction, "data.forget_fraction")
    if not isinstance(d.seed, int) or d.seed < 0:
        raise InputError(f"must be a whole number >= 0, got {d.seed!r}", field="data.seed")
    _recheck(d, "data")
    _recheck(cfg.train, "train")
    c = cfg.circuit
    if c.enabled:
        for name in ("samples", "top_n"):
            if getattr(c, name) < 1:
                raise InputError(f"must be >= 1, got {getattr(c, name)}", field=f"circuit.{name}")
        if c.attention_heads < 0:
            raise InputError(f"must be >= 0, got {c.attention_heads}", field="circuit.attention_heads")
        if c.faithfulness and (not c.faithfulness_sizes or not all(0 < f <= 1 for f in c.faithfulness_sizes)):
            raise InputError(f"sizes must be fractions in (0, 1], got {list(c.faithfulness_sizes)}",
                             field="circuit.faithfulness_sizes")
        if c.corruption not in corruption_names():
            raise InputError(f"unknown corruption {c.corruption!r}", field="circuit.corruption",
                             fix=f"choose among {', '.join(corruption_names())}")
        _recheck(c, "circuit")      # corruption_args against the corruption (either may be set after construction)
        _recheck(c.attribution, "circuit.attribution")
    if not cfg.methods:
        raise InputError("no unlearning method to run", field="methods", fix="name at least one, e.g. cure")
    for name, mcfg in cfg.methods.items():
        _check_method_name(name)
        if not isinstance(mcfg, MethodConfig):
            raise InputError(f"the config of {name!r} is a {type(mcfg).__name__}, not a method config",
                             field=f"methods.{name}", fix=f"use recircuit.unlearn.method_config({name!r}, ...)")
    if cfg.eval.batch_size < 1:
        raise InputError(f"must be >= 1, got {cfg.eval.batch_size}", field="eval.batch_size")
    if cfg.eval.relearn_steps:
        try:
            cfg.eval.relearn_config(0)
        except InputError as err:
            raise InputError(_message(err), field=f"eval.relearn_{err.field}" if err.field else "eval",
                             fix=err.fix) from err
    if cfg.base is not None:
        for name in ("n_train", "per_user", "n_valid"):
            v, least = getattr(cfg.base, name), 0 if name == "per_user" else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < least:
                raise InputError(f"must be a whole number >= {least}, got {v!r}", field=f"base.{name}",
                                 fix=f"pass e.g. the default ({getattr(BaseConfig(), name)})"
                                 + (" or 0 for no cap" if name == "per_user" else ""))
        r = cfg.base.replay
        if not isinstance(r, int) or isinstance(r, bool) or not 0 <= r <= cfg.base.n_train:
            raise InputError(f"must be a whole number from 0 to base.n_train ({cfg.base.n_train}), got {r!r}",
                             field="base.replay", fix="pass e.g. 0 (no replay) or a quarter of base.n_train")
        if cfg.base.train.mode != "full":
            raise InputError(f"the base recommender must be a full fine-tune, got mode {cfg.base.train.mode!r}",
                             field="base.train.mode", fix="set base.train.mode to 'full'")
        if cfg.train.mode != "full":
            raise InputError(f"Original and Retrain continue the base recommender, so they must be full fine-tunes, "
                             f"got mode {cfg.train.mode!r}", field="train.mode", fix="set train.mode to 'full'")
        _recheck(cfg.base.train, "base.train")
    if grid is not None:
        for name in grid.methods or ():
            if name not in cfg.methods:
                _check_method_name(name)
                raise InputError(f"method {name!r} is in the grid but has no config", field="grid.methods",
                                 fix=f"add it to the pipeline config's methods ({', '.join(cfg.methods)})")
        if not grid.seeds or not grid.rates or (grid.methods is not None and not grid.methods):
            raise InputError("the grid is empty", field="grid", fix="give at least one method, seed and rate")
        for s in grid.seeds:
            if not isinstance(s, int) or isinstance(s, bool) or s < 0:
                raise InputError(f"seeds must be whole numbers >= 0, got {s!r}", field="grid.seeds")
        for r in grid.rates:
            _check_rate(r, "grid.rates")


# ---------------------------------------------------------------------------------------------
# data and requests


@dataclass
class PipelineData:
    """The samples of one run: the training pool of whole users and the evaluation sets."""

    split: Split            # the pool as train; valid and test cut to size
    valid: list[Sample]     # early stopping while fine-tuning
    stop: list[Sample]      # early stopping while unlearning (never trained on)
    heldout: list[Sample]   # never trained on: the MIA non-members
    test: list[Sample]
    base: list[Sample] = field(default_factory=list)        # base recommender's users (none in the pool)
    base_valid: list[Sample] = field(default_factory=list)  # its early stopping
    replay: list[Sample] = field(default_factory=list)      # base samples Original and Retrain both train on

    def ids(self) -> dict[str, list[str]]:
        """Sample ids of the evaluation sets (part of every result's cache key)."""
        return {"valid": _uids(self.valid), "stop": _uids(self.stop), "heldout": _uids(self.heldout),
                "test": _uids(self.test)}


def _uids(samples: Sequence[Sample]) -> list[str]:
    return [sample_key(s) for s in samples]


def prepare_data(config: PipelineConfig) -> PipelineData:
    """Build the ``tallrec`` split and cut the pool and evaluation sets the config asks for.

    Raises:
        InputError: the valid split is too small for ``n_stop`` + ``n_heldout`` disjoint samples.
    """
    from recircuit.data import build_split, cap_per_user

    d = config.data
    full = build_split("tallrec", data_dir=d.data_dir) if d.source is None else d.source.split("tallrec")
    if d.n_stop + d.n_heldout > len(full.valid):
        raise InputError(f"n_stop ({d.n_stop}) + n_heldout ({d.n_heldout}) exceed the {len(full.valid)} "
                         "validation samples, so the early-stop and MIA sets would overlap", field="data.n_heldout",
                         fix="lower data.n_stop or data.n_heldout")
    pool = cap_per_user(full.train, d.per_user, d.n_train)
    valid = full.valid[: d.n_valid]
    params = {**full.params, "pool": {"per_user": d.per_user, "n_train": d.n_train}}
    base, base_valid, replay = [], [], []
    if config.base is not None:
        b = config.base
        if b.n_valid + d.n_heldout > len(full.valid):
            raise InputError(f"base.n_valid ({b.n_valid}) + data.n_heldout ({d.n_heldout}) exceed the "
                             f"{len(full.valid)} validation samples, so the base recommender would be selected "
                             "on MIA non-members", field="base.n_valid", fix="lower base.n_valid or data.n_heldout")
        users = {s.user_id for s in pool}
        outside = [s for s in full.train if s.user_id not in users]
        base = (cap_per_user(outside, b.per_user, b.n_train) if b.per_user else outside[: b.n_train]) if outside else []
        if not base:
            raise InputError(f"no training user is left outside the pool of {len(users)} users for the base "
                             "recommender", field="base.n_train", fix="lower data.n_train or data.per_user")
        base_valid = full.valid[: b.n_valid]
        if b.replay > len(base):
            raise InputError(f"base.replay ({b.replay}) exceeds the {len(base)} base samples", field="base.replay",
                             fix=f"lower base.replay to at most {len(base)}")
        replay = replay_samples(base, b.replay)
    return PipelineData(Split(full.name, pool, valid, full.test[: d.n_test], params), valid,
                        full.valid[: d.n_stop], full.valid[len(full.valid) - d.n_heldout:], full.test[: d.n_test],
                        base, base_valid, replay)


def replay_samples(base: Sequence[Sample], n: int) -> list[Sample]:
    """The ``n`` base samples that Original and Retrain both replay (:attr:`BaseConfig.replay`): a
    draw fixed by seed 0, whatever the request, kept in the base's order."""
    return [base[i] for i in sorted(np.random.default_rng(0).permutation(len(base))[:n])]


def make_request(data: PipelineData, rate: float, seed: int, field_name: str = "data.forget_fraction"
                 ) -> ForgetRetain:
    """The deletion request of ``(rate, seed)``: every pool sample of a seeded ``rate`` of its users.

    Raises:
        InputError: the rate leaves no user to forget or none to retain in this pool.
    """
    from recircuit.data import forget_retain_split

    try:
        return forget_retain_split(data.split, level="user", fraction=rate, seed=seed)
    except ValueError as err:
        raise InputError(f"rate {rate} cannot be drawn from a pool of {len(data.split.train)} samples: {err}",
                         field=field_name, fix="change the rate or data.n_train / data.per_user") from err


def retain_split(data: PipelineData, request: ForgetRetain) -> Split:
    """The split Retrain trains on: the retain part of the pool (plus the base replay, when
    :attr:`BaseConfig.replay` asks for one), same valid and test (``request`` from
    :func:`make_request`)."""
    params = {**data.split.params, "request": request.params | {"level": request.level}}
    if data.replay:
        params["replay"] = len(data.replay)
    return Split(data.split.name, list(request.retain) + list(data.replay), data.valid, data.test, params)


def original_split(data: PipelineData) -> Split:
    """The split Original trains on: the whole pool (plus the base replay, when
    :attr:`BaseConfig.replay` asks for one; the pool itself stays ``data.split``)."""
    if not data.replay:
        return data.split
    s = data.split
    return Split(s.name, list(s.train) + list(data.replay), s.valid, s.test, {**s.params, "replay": len(data.replay)})


# ---------------------------------------------------------------------------------------------
# steps


@dataclass
class Context:
    """Where a run keeps its cache and how it reports progress (picklable, for Ray tasks).

    Attributes:
        cache_root: ``$RECIRCUIT_CACHE`` (None: each process's own); results go under ``results/``
            and checkpoints under ``models/``.
        fresh: recompute every result (checkpoints are kept: they are verified by sha256).
        since: the start of a fresh run (see :class:`recircuit.cache.Cache`).
        progress: show progress bars.
    """

    cache_root: str | None = None
    fresh: bool = False
    since: float | None = None
    progress: bool = False

    def results(self) -> Cache:
        """The results cache of this run."""
        root = None if self.cache_root is None else Path(self.cache_root) / "results"
        return Cache(root, subdir="results", fresh=self.fresh, since=self.since)


def _fresh_context(cache_root: str | os.PathLike | None, fresh: bool, progress: bool, resolve: bool = True) -> Context:
    """A run's context; ``resolve`` pins a None ``cache_root`` to this process's cache directory
    (else each process, e.g. a Ray task on another node, resolves its own ``$RECIRCUIT_CACHE``)."""
    from recircuit.assets import cache_dir

    root = cache_root if cache_root is not None or not resolve else cache_dir()
    return Context(None if root is None else str(root), fresh, time.time() if fresh else None, progress)


def base_checkpoint(config: PipelineConfig, data: PipelineData, ctx: Context | None = None) -> Path | None:
    """The base recommender (:class:`BaseConfig`) Original and Retrain continue; None without one."""
    from recircuit.train import cached_recommender

    if config.base is None:
        return None
    ctx = ctx or Context()
    b = config.base
    split = Split(data.split.name, list(data.base), list(data.base_valid), [],
                  {**data.split.params, "base": {"n_train": b.n_train, "per_user": b.per_user, "outside_pool": True}})
    return cached_recommender(config.model, split, b.train, None, b.n_valid, config.device,
                              cache_root=ctx.cache_root, progress=ctx.progress)


def original_checkpoint(config: PipelineConfig, data: PipelineData, ctx: Context | None = None) -> Path:
    """Original: fine-tuned on the whole pool, from the base recommender when there is one (cached)."""
    from recircuit.train import cached_recommender

    ctx = ctx or Context()
    init = base_checkpoint(config, data, ctx)
    return cached_recommender(config.model, original_split(data), config.train, None, config.data.n_valid,
                              config.device, cache_root=ctx.cache_root, progress=ctx.progress, init=init)


def retrain_checkpoint(config: PipelineConfig, data: PipelineData, request: ForgetRetain,
                       ctx: Context | None = None) -> Path:
    """Retrain: the same training on the retain users only, from the same base (cached)."""
    from recircuit.train import cached_recommender

    ctx = ctx or Context()
    init = base_checkpoint(config, data, ctx)
    return cached_recommender(config.model, retain_split(data, request), config.train, None, config.data.n_valid,
                              config.device, cache_root=ctx.cache_root, progress=ctx.progress, init=init)


def _sidecar(path: str | os.PathLike) -> Path:
    from recircuit.train.checkpoint import _paths

    return _paths(path)[1]


def checkpoint_id(path: str | os.PathLike) -> str:
    """sha256 of a checkpoint's sidecar (it names the run; the cache verified the weights)."""
    return sha256_file(_sidecar(path))


def _load(path: Path, device: str | None) -> torch.nn.Module:
    from recircuit.train import load_trained

    model, _ = load_trained(path, device=device)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _request_ids(request: ForgetRetain) -> dict[str, list[str]]:
    return {"forget": _uids(request.forget), "retain": _uids(request.retain)}


def _floats(row: Any, need: Sequence[str]) -> dict:
    if not isinstance(row, dict):
        raise TypeError("a metrics row is not a JSON object")
    for k in need:
        if not isinstance(row[k], int | float):
            raise TypeError(f"{k} is not a number")
    return row


@dataclass
class References:
    """Original and Retrain on one request: their rows, outputs and the memorization check."""

    rate: float
    seed: int
    rows: dict[str, dict]                            # "original", "retrain"
    outputs: dict[str, dict[str, np.ndarray]]        # "original"/"retrained" -> model_outputs
    memorization: dict
    original_hash: str
    original_id: str
    retrain_id: str
    retrain_seconds: float | None
    relearn: dict | None = None                      # Retrain's relearning-attack curve (when run)

    def to_dict(self) -> dict:
        """JSON-able form (the arrays as lists)."""
        d = dataclasses.asdict(self)
        d["outputs"] = {who: {k: np.asarray(v).tolist() for k, v in o.items()} for who, o in self.outputs.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict, sizes: Mapping[str, int] | None = None) -> References:
        """Inverse of :meth:`to_dict`; with ``sizes`` (``forget``/``test``/``heldout`` counts) every
        output array must have its set's length (else ``ValueError``: a payload of the wrong shape)."""
        outputs = {}
        for who in ("original", "retrained"):
            outputs[who] = {}
            for k, part in _OUTPUT_SETS.items():
                arr = np.asarray(d["outputs"][who][k], dtype=np.float64)
                if arr.ndim != 1 or (sizes is not None and len(arr) != sizes[part]):
                    raise ValueError(f"outputs.{who}.{k} has shape {arr.shape}, expected ({sizes and sizes[part]},)")
                outputs[who][k] = arr
        need = ("test_auc", "forget_jsd", "mia_auc")
        rows = {"original": _floats(d["rows"]["original"], need), "retrain": _floats(d["rows"]["retrain"], need)}
        if not isinstance(d["memorization"], dict) or not isinstance(d["original_hash"], str):
            raise TypeError("memorization or original_hash has the wrong type")
        rs = d["retrain_seconds"]
        relearn = d.get("relearn")
        if relearn is not None and not isinstance(relearn, dict):
            raise TypeError("relearn is not a JSON object")
        return cls(float(d["rate"]), int(d["seed"]), rows, outputs, d["memorization"], d["original_hash"],
                   str(d["original_id"]), str(d["retrain_id"]), None if rs is None else float(rs), relearn)


def references(config: PipelineConfig, data: PipelineData, rate: float, seed: int, ctx: Context | None = None,
               reused: list[str] | None = None, request: ForgetRetain | None = None) -> References:
    """Retrain for the request ``(rate, seed)`` and the rows of Original and Retrain (cached).

    ``request`` is :func:`make_request` of ``(rate, seed)`` when the caller has it already.
    """
    from recircuit.evaluate import evaluate_unlearning, model_hash
    from recircuit.evaluate.metrics import memorization_gap
    from recircuit.train.checkpoint import read_meta

    ctx = ctx or Context()
    request = request or make_request(data, rate, seed)
    orig_path = original_checkpoint(config, data, ctx)
    gold_path = retrain_checkpoint(config, data, request, ctx)
    orig_id, gold_id = checkpoint_id(orig_path), checkpoint_id(gold_path)
    sizes = {"forget": len(request.forget), "test": len(data.test), "heldout": len(data.heldout)}
    cache = ctx.results()
    key = cache.key(step="references", original=orig_id, retrain=gold_id, eval=config.eval.to_dict(),
                    protocol=2, rate=rate, seed=seed, **data.ids(), **_request_ids(request))
    hit = cache.get("references", key, parse=lambda d: References.from_dict(d, sizes))
    if hit is not None:
        if reused is not None:
            reused.append("evaluate_references")
        return hit
    meta = read_meta(gold_path)
    retrain_seconds = float((meta.get("metrics") or {}).get("seconds") or 0.0) or None
    original, retrained = _load(orig_path, config.device), _load(gold_path, config.device)
    kw = dict(retain=request.retain, train=original_split(data).train)
    bs = config.eval.batch_size
    rcache: dict = {}
    rows = {"original": {**evaluate_unlearning(original, retrained, request.forget, data.test, data.heldout, bs,
                                               rcache, original=original, **kw), "seconds": 0.0},
            "retrain": evaluate_unlearning(retrained, retrained, request.forget, data.test, data.heldout, bs, rcache,
                                           original=original, **kw, seconds=retrain_seconds,
                                           retrain_seconds=retrain_seconds)}
    gap = memorization_gap(original, retrained, request.forget, data.heldout, data.test, bs, cache=rcache, seed=seed)
    relearn = _relearn(config, retrained, request, data, seed, ctx)
    if relearn:
        rows["retrain"].update(relearn_summary(relearn, rcache["original"]["loss_forget"]))
    refs = References(rate, seed, rows, rcache, gap, model_hash(original), orig_id, gold_id, retrain_seconds,
                      relearn)
    cache.put("references", key, refs.to_dict())
    return refs


def _relearn(config: PipelineConfig, model, request: ForgetRetain, data: PipelineData, seed: int,
             ctx: Context) -> dict | None:
    """The relearning attack on ``model`` (None when ``eval.relearn_steps`` is 0, or with fewer
    than two forget samples)."""
    from recircuit.evaluate.relearn import relearn_attack

    rcfg = config.eval.relearn_config(seed)
    if rcfg is None or len(request.forget) < 2:
        return None
    return relearn_attack(model, request.forget, rcfg, heldout=data.heldout, progress=ctx.progress).to_dict()


def relearn_summary(curve: dict | None, original_loss_forget: np.ndarray) -> dict:
    """What a relearning curve says against Original's fit of the same held-back half: its loss
    on that half at the end, and the first step at which it is back at Original's
    (``relearn_recovered`` False: never within the attack, and the step count is censored at the
    attack's length + 1)."""
    from recircuit.evaluate.relearn import RelearnCurve, steps_to_reach

    if not curve:
        return {}
    c = RelearnCurve.from_dict(curve)
    target = float(np.asarray(original_loss_forget)[np.asarray(c.idx_b)].mean())
    reached = steps_to_reach(c, target)
    # never back at Original's fit within the attack: censored at one step past its end, so means stay defined
    return {"relearn_loss_b": float(c.loss_b[-1]), "relearn_target": target,
            "relearn_steps_to_original": float(reached if reached is not None else c.steps[-1] + 1),
            "relearn_recovered": reached is not None}


def relearn_against_retrain(curve: dict | None, retrain_curve: dict | None) -> dict:
    """What a relearning curve says against Retrain's curve under the same attack (same forget
    halves, same steps): ``relearn_gap_to_retrain``, Retrain's held-out-half loss at the end
    minus this model's. Retrain never saw the forget data, so its curve is what learning those
    answers from scratch looks like; a positive gap means they came back faster than that, so
    the model hid the data rather than removed it (0 for Retrain itself). Empty when either
    curve is missing or the two attacks did not use the same halves and steps.
    """
    if not curve or not retrain_curve:
        return {}
    if list(curve.get("idx_b", [])) != list(retrain_curve.get("idx_b", [])) or \
            list(curve.get("steps", [])) != list(retrain_curve.get("steps", [])):
        return {}
    return {"relearn_gap_to_retrain": float(retrain_curve["loss_b"][-1]) - float(curve["loss_b"][-1])}


@dataclass
class MethodRun:
    """One method on one request: its metrics row, audit record, weight changes and status.

    Attributes:
        status: the run's status (``"ok"``, ``"early_stop"``, ``"restored"``, ...).
        stopped: why it stopped, in words.
        updates: Frobenius norm of the weight update of every head and MLP.
        grouping: CURE's module groups (None for other methods).
    """

    method: str
    rate: float
    seed: int
    row: dict
    status: str
    stopped: str
    audit: dict
    updates: dict[str, float]
    grouping: dict | None = None
    result: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MethodRun:
        """Inverse of :meth:`to_dict` (``KeyError``/``TypeError`` on a payload of the wrong shape)."""
        row = _floats(d["row"], ("test_auc", "forget_jsd", "mia_auc", "seconds"))
        if not isinstance(d["audit"], dict) or not isinstance(d["audit"]["model_sha256"], dict):
            raise TypeError("the audit record is not a JSON object")
        updates = {str(k): float(v) for k, v in d["updates"].items()}
        if d["grouping"] is not None and not isinstance(d["grouping"], dict):
            raise TypeError("grouping is not a JSON object")
        return cls(str(d["method"]), float(d["rate"]), int(d["seed"]), row, str(d["status"]), str(d["stopped"]),
                   d["audit"], updates, d["grouping"], dict(d.get("result") or {}))


def data_source(config: PipelineConfig) -> DataSource:
    """The data set of a run as a :class:`~recircuit.data.DataSource` (MovieLens at ``data.data_dir``
    when the config names no ``source``)."""
    return config.data.source or DataSource("movielens", path=config.data.data_dir)


def method_kwargs(config: PipelineConfig, mcfg: MethodConfig) -> dict[str, Any]:
    """What the run gives a method's constructor besides its config: CURE (and its variants) and CLUE get
    the run's :func:`data_source`, so its importance step can build catalogue-based corruptions
    (``target_swap``, ``history_resample``, ``ppr``) from the samples' own data set."""
    from recircuit.unlearn.methods.clue import CLUEConfig
    from recircuit.unlearn.methods.cure import CUREConfig

    return {"data_source": data_source(config)} if isinstance(mcfg, CUREConfig | CLUEConfig) else {}


def shares_grouping(name: str) -> bool:
    """Whether method ``name`` is CURE or a variant that computes its grouping as CURE does
    (:meth:`~recircuit.unlearn.methods.cure.CURE.make_grouping`, ``grouping=`` in its constructor)."""
    from recircuit.unlearn.methods.cure import CURE

    cls = method_entry(name)[0]
    return isinstance(cls, type) and issubclass(cls, CURE) and cls.make_grouping is CURE.make_grouping \
        and cls.__init__ is CURE.__init__


def request_grouping(config: PipelineConfig, name: str, loop: LoopConfig, data: PipelineData, refs: References,
                     request: ForgetRetain, original: Any, ctx: Context) -> tuple[Grouping, float]:
    """CURE's grouping of a request on Original (before a control such as ``cure-random`` shuffles
    it), through the results cache, so that CURE and each variant with the same settings
    computed in turn (one process, or tasks that do not overlap) compute it once per request;
    tasks that run at the same time each compute it (the same grouping, deterministically).

    The key holds every setting of the method's config but its forget rule's (which only shapes
    the update), so a setting added to CURE later is keyed without being listed here.

    Args:
        config, name: the run's config and the method (:func:`shares_grouping` must hold).
        loop: the run's loop (its batch size batches the attribution).
        data, refs, request: the samples, the request's references (Original's id) and the request.
        original: Original's model.
        ctx: the run's context (its results cache).

    Returns:
        The grouping and the seconds its computation took. The pipeline adds them to the time of
        every method that uses it, whether computed now or read from the cache: a method's time
        is what it costs run alone.
    """
    from recircuit.unlearn import get_method
    from recircuit.unlearn.forget_rules import ForgetRuleConfig

    mcfg = config.methods[name]
    rule = {f.name for f in dataclasses.fields(ForgetRuleConfig)}
    settings = {k: v for k, v in mcfg.to_dict().items() if k not in rule}
    cache = ctx.results()
    key = cache.key(step="grouping", importance=settings, original=refs.original_id, batch_size=loop.batch_size,
                    **data.ids(), **_request_ids(request))
    hit = cache.get("grouping", key, parse=lambda p: (Grouping.from_dict(p["grouping"]), float(p["seconds"])))
    if hit is not None:
        return hit
    method = get_method(name, mcfg, **method_kwargs(config, mcfg))
    method.loop = loop
    t = time.perf_counter()
    grouping = method.make_grouping(original, request.forget, request.retain)
    secs = time.perf_counter() - t
    cache.put("grouping", key, {"grouping": grouping.to_dict(), "seconds": secs})
    return grouping, secs


def run_method(config: PipelineConfig, name: str, data: PipelineData, refs: References,
               ctx: Context | None = None, reused: list[str] | None = None,
               request: ForgetRetain | None = None) -> MethodRun:
    """Unlearn the request of ``refs`` with method ``name`` from Original's weights, and evaluate (cached).

    ``request`` is :func:`make_request` of ``(refs.rate, refs.seed)`` when the caller has it already.
    """
    from recircuit.evaluate import audit_record, evaluate_unlearning, model_hash
    from recircuit.models import copy_model
    from recircuit.models.families import module_update_norms
    from recircuit.unlearn import get_method

    ctx = ctx or Context()
    request = request or make_request(data, refs.rate, refs.seed)
    mcfg = config.methods[name]
    loop = dataclasses.replace(config.loop, seed=refs.seed)
    cache = ctx.results()
    key = cache.key(step="unlearn", method=name, method_config=mcfg.to_dict(), loop=loop.to_dict(),
                    original=refs.original_id, retrain=refs.retrain_id, eval=config.eval.to_dict(),
                    rate=refs.rate, seed=refs.seed, **data.ids(), **_request_ids(request))
    hit = cache.get(f"unlearn_{name}", key, parse=MethodRun.from_dict)
    if hit is not None:
        if reused is not None:
            reused.append(f"unlearn_{name}")
        return hit
    if getattr(method_entry(name)[0], "exact", False):
        run = _run_exact(config, name, data, refs, request, ctx)
        cache.put(f"unlearn_{name}", key, run.to_dict())
        return run
    original = _load(original_checkpoint(config, data, ctx), config.device)
    if model_hash(original) != refs.original_hash:
        from recircuit.errors import RunFailed

        raise RunFailed(f"{name} on rate {refs.rate} seed {refs.seed}: this request's references were evaluated "
                        f"on another Original (weights sha256 {refs.original_hash[:12]}, now "
                        f"{model_hash(original)[:12]}); recompute its references first (run_grid does)")
    kwargs = method_kwargs(config, mcfg)
    grouping_secs = 0.0
    if shares_grouping(name):   # CURE and its variants: the request's grouping once, shared
        kwargs["grouping"], grouping_secs = request_grouping(config, name, loop, data, refs, request, original, ctx)
    model = copy_model(original)   # not copy.deepcopy: TL 4.3 hook closures would point at the original
    t = time.perf_counter()
    res = get_method(name, mcfg, **kwargs).run(
        model, request.forget, request.retain, loop, reference=original, heldout=data.stop, progress=ctx.progress)
    secs = time.perf_counter() - t + grouping_secs
    rcache = {who: dict(o) for who, o in refs.outputs.items()}
    mine: dict = {}
    row = evaluate_unlearning(model, None, request.forget, data.test, data.heldout, config.eval.batch_size, rcache,
                              original=original, retain=request.retain, train=original_split(data).train, seconds=secs,
                              retrain_seconds=refs.retrain_seconds, outputs=mine)
    relearn = _relearn(config, model, request, data, refs.seed, ctx)
    if relearn:
        row.update(relearn_summary(relearn, refs.outputs["original"]["loss_forget"]))
    status = str(res.status)
    settings = {"method": mcfg.to_dict(), "loop": loop.to_dict()}
    extra = res.extra or {}
    notes = {"stopped": res.stopped, **({"warnings": extra["warnings"]} if extra.get("warnings") else {})}
    record = audit_record(request.forget, refs.original_hash, model_hash(model), settings, name, secs,
                          extra=notes, status=status)
    grouping = extra.get("grouping")
    result = res.to_dict()
    result["extra"] = {k: v for k, v in extra.items() if k != "grouping"}
    if grouping_secs:       # the method's own clock started after the shared grouping: one time everywhere
        result["seconds"], result["grouping_seconds"] = secs, grouping_secs
    if relearn:
        result["relearn"] = relearn
    result["outputs"] = {k: np.asarray(v).tolist() for k, v in mine.items()}    # for sample-level intervals
    result = json.loads(json.dumps(result, default=str))
    run = MethodRun(name, refs.rate, refs.seed, {**row, "steps": res.steps}, status, str(res.stopped), record,
                    module_update_norms(original, model), grouping, result)
    if not res.ok:
        logger.warning("%s on rate %s seed %s: %s (%s)", name, refs.rate, refs.seed, status, res.stopped)
    cache.put(f"unlearn_{name}", key, run.to_dict())
    return run


def exact_valid(data: PipelineData) -> list[Sample]:
    """The validation samples an exact method weights its adapters on (APA): the fine-tuning's
    valid set, else the base recommender's, else the unlearning early-stopping set (never the
    MIA non-members)."""
    valid = list(data.valid or data.base_valid or data.stop)
    members = set(_uids(data.heldout))
    if members.intersection(_uids(valid)):
        raise InputError("the validation samples an exact method weights on overlap the MIA non-members",
                         field="data.n_heldout", fix="lower data.n_valid / n_stop or data.n_heldout so the "
                         "valid split's start and end do not meet")
    return valid


def exact_ensemble(config: PipelineConfig, name: str, data: PipelineData, base, base_id: str,
                   ctx: Context | None = None):
    """Exact method ``name`` with its shard ensemble fitted on Original's training set (cached).

    The ensemble is an exact method's Original: one LoRA adapter per shard of the pool (plus the
    replayed base samples), over the base recommender (or the base model without one). It is
    cached in ``models/`` as safetensors with APA's validation embeddings and errors, keyed on
    the settings the shards depend on (:meth:`ExactConfig.fit_settings`: APA's serving variants
    and a SISA on the same partition share one fit), the base, the model's identity, the content of every training and
    validation sample, the device and thread count (bit-exact retraining needs the same ones) and
    the code; every request deletes from a fresh copy of it.
    """
    from safetensors.numpy import load_file, save_file

    from recircuit.evaluate.report import samples_hash
    from recircuit.train.cache import model_identity
    from recircuit.unlearn import get_method
    from recircuit.unlearn.ensemble import ShardEnsemble

    ctx = ctx or Context()
    mcfg = config.methods[name]
    train, valid = original_split(data).train, exact_valid(data)
    method = get_method(name, mcfg, valid=valid)
    models = Cache(None if ctx.cache_root is None else Path(ctx.cache_root) / "models", subdir="models")
    device = str(next(base.parameters()).device)
    key = models.key(step="ensemble", fit=mcfg.fit_settings(), base=base_id,
                     model=model_identity(config.model), train=samples_hash(train), valid=samples_hash(valid),
                     device=device, threads=torch.get_num_threads() if getattr(mcfg, "workers", 1) <= 1 else 1,
                     code=("unlearn", "train", "models", "data"))
    step = "ensemble"
    entry = models.lookup(step, key)
    if entry is not None:
        method.ensemble = ShardEnsemble.load(entry.path / "files")
        method.samples = {_uids([s])[0]: s for s in train}
        method.fit_seconds = float(entry.payload["fit_seconds"])
        if "serving.safetensors" in entry.files:
            for k, v in load_file(str(entry.file("serving.safetensors"))).items():
                setattr(method, k, v)
        else:                       # fitted by a variant that serves without them (SISA, average weights)
            method.after_fit(base)
        return method
    method.fit(base, train, progress=ctx.progress)
    models.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=temp_prefix(step), dir=models.root) as tmp:
        method.ensemble.save(tmp)
        serving = {k: np.ascontiguousarray(getattr(method, k)) for k in ("valid_embeddings", "valid_errors")
                   if getattr(method, k, None) is not None}
        files = {"ensemble.safetensors": Path(tmp) / "ensemble.safetensors", "ensemble.json": Path(tmp) / "ensemble.json"}
        if serving:
            save_file(serving, str(Path(tmp) / "serving.safetensors"))
            files["serving.safetensors"] = Path(tmp) / "serving.safetensors"
        models.put(step, key, {"fit_seconds": method.fit_seconds, "shard_sizes": [len(x) for x in method.ensemble.shards]},
                   files=files)
    return method


def _run_exact(config: PipelineConfig, name: str, data: PipelineData, refs: References, request: ForgetRetain,
               ctx: Context) -> MethodRun:
    """An exact method on one request: delete the forget samples from a copy of the fitted ensemble
    (retraining only the shards that held them), then evaluate the ensemble's predictor. Its
    ``seconds`` are the deletion's; the fit is ``row["fit_seconds"]``. The relearning attack, the
    weight-update norms and ``forget_jsd_to_original`` (its Original is its own ensemble, not the
    pipeline's) are left out: there is no single fine-tuned model."""
    from recircuit.evaluate import audit_record, evaluate_unlearning
    from recircuit.models import load_model

    mcfg = config.methods[name]
    base_path = base_checkpoint(config, data, ctx)
    base = _load(base_path, config.device) if base_path is not None else load_model(config.model, device=config.device)
    base_id = checkpoint_id(base_path) if base_path is not None else f"model:{config.model}"
    method = exact_ensemble(config, name, data, base, base_id, ctx)
    method.ensemble = method.ensemble.copy()          # the cached fit stays as it was for the next request
    before = method.ensemble.state_hash()
    if getattr(method, "valid_errors", None) is not None:
        method.valid_errors = np.array(method.valid_errors, copy=True)
    res = method.run(base, request.forget, request.retain, progress=ctx.progress)
    mine: dict = {}
    rcache = {who: dict(o) for who, o in refs.outputs.items()}
    row = evaluate_unlearning(res.model, None, request.forget, data.test, data.heldout, config.eval.batch_size, rcache,
                              retain=request.retain, train=original_split(data).train, seconds=res.seconds,
                              retrain_seconds=refs.retrain_seconds, outputs=mine)
    row["fit_seconds"] = method.fit_seconds
    row["runner_seconds"] = res.extra["audit"].get("runner_seconds", 0.0)      # Ray start-up inside `seconds`
    settings = {"method": mcfg.to_dict()}
    record = audit_record(request.forget, before, method.ensemble.state_hash(), settings, name, res.seconds,
                          extra={"stopped": res.stopped, "exact": res.extra["audit"]}, status=res.status)
    result = json.loads(json.dumps({**res.to_dict(), "outputs": {k: np.asarray(v).tolist() for k, v in mine.items()}},
                                   default=str))
    return MethodRun(name, refs.rate, refs.seed, {**row, "steps": res.steps}, res.status, res.stopped, record, {},
                     None, result)


def _save_attention(model, prompt: str, heads: list[tuple[int, int]], out: Path) -> None:
    """Attention patterns of ``heads`` on ``prompt``: safetensors arrays plus a JSON of tokens."""
    from safetensors.torch import save_file

    from recircuit.nodes import head_name
    from recircuit.viz.attention import attention_patterns

    tokens, arr = attention_patterns(model, prompt, heads)
    pats = torch.from_numpy(arr).contiguous()
    atomic_write(out.with_suffix(".safetensors"), lambda tmp: save_file({"patterns": pats}, str(tmp)))
    atomic_write_json(out.with_suffix(".json"), {"prompt": prompt, "tokens": tokens,
                                                 "heads": [head_name(layer, h) for layer, h in heads]})


def _circuit_summary(d: Any) -> dict:
    if not isinstance(d, dict) or not isinstance(d["n_edges_total"], int) or not isinstance(d["top_modules"], list):
        raise TypeError("not a circuit summary")
    return d


def circuit_step(config: PipelineConfig, data: PipelineData, out_dir: str | os.PathLike, ctx: Context | None = None,
                 reused: list[str] | None = None) -> dict:
    """Original's recommendation circuit, faithfulness curve and top heads' attention (cached).

    Writes :data:`CIRCUIT_FILES` into ``out_dir`` and returns the summary it saves. When the
    corruption does not move the metric beyond its spread over the samples
    (:func:`~recircuit.circuits.faithfulness.check_corruption`), the faithfulness sweep is skipped:
    no ``faithfulness.json``, and the summary's ``faithfulness_note`` says why and what to do.
    """
    ctx = ctx or Context()
    c, out = config.circuit, Path(out_dir)
    orig_path = original_checkpoint(config, data, ctx)
    clean = data.test[: c.samples]
    cache = ctx.results()
    source = {} if config.data.source is None else {"source": config.data.source.to_dict()}
    key = cache.key(step="circuit", original=checkpoint_id(orig_path), model=config.model,
                    data_dir=config.data.data_dir, samples=_uids(clean), circuit=c.to_dict(), **source)
    entry = cache.lookup("circuit", key, parse=_circuit_summary)
    if entry is not None:
        for rel in CIRCUIT_FILES:      # the entry's files, and none left over from an earlier run
            if rel in entry.files:
                atomic_write_bytes(out / rel, entry.file(rel).read_bytes())
            else:
                (out / rel).unlink(missing_ok=True)
        if reused is not None:
            reused.append("circuit")
        return entry.payload
    from recircuit.circuits import Circuit, attribute, corruption_effect, faithfulness_curve
    from recircuit.circuits.corruptions import corruption_for

    original = _load(orig_path, config.device)
    corrupted = corruption_for(c.corruption, original.tokenizer, config.data.data_dir,
                               source=config.data.source, args=c.corruption_args)(list(clean))
    acfg = dataclasses.replace(c.attribution, progress=ctx.progress)
    res = attribute(original, clean, corrupted, acfg)
    circuit = Circuit.from_attribution(res, top_n=min(c.top_n, res.graph.n_edges),
                                       metadata={"model": config.model, "data": "tallrec test",
                                                 "corruption": c.corruption, "n_samples": len(clean),
                                                 **({"corruption_args": c.corruption_args}
                                                    if c.corruption_args else {})})
    circuit.save(out / "circuit")
    metric_gap = res.clean_metric - res.corrupted_metric
    summary = {"n_edges_total": res.graph.n_edges, "n_edges_kept": circuit.n_edges,
               "clean_metric": res.clean_metric, "corrupted_metric": res.corrupted_metric, "metric_gap": metric_gap,
               "top_modules": sorted(circuit.module_importance().items(), key=lambda kv: -kv[1])[:10]}
    # a corruption that does not move the metric beyond its spread makes f meaningless: no sweep, a note
    note = corruption_effect(res.clean_metric, res.corrupted_metric, c.corruption,
                             clean_per_sample=res.clean_per_sample, corrupted_per_sample=res.corrupted_per_sample)
    if note:      # kept even without a sweep: the circuit itself is scored against this corruption
        summary["faithfulness_note"] = note
        logger.warning("%s%s", "faithfulness sweep skipped: " if c.faithfulness else "corruption: ", note)
    if c.faithfulness and not note:
        curve = faithfulness_curve(original, res, clean, corrupted, sizes=c.faithfulness_sizes,
                                   batch_size=acfg.batch_size, align=acfg.align, progress=ctx.progress,
                                   corruption=c.corruption)
        atomic_write_json(out / "faithfulness.json", {c.corruption: curve.to_dict()})
        summary.update({"cpr": curve.cpr, "cmd": curve.cmd, "edges_to_f80": curve.edges_to_reach(0.8)})
    heads = top_heads(circuit.module_importance(), c.attention_heads)
    if heads:
        _save_attention(original, clean[0].prompt, heads, out / "attention")
    atomic_write_json(out / "circuit_summary.json", summary)
    written = {"circuit.json", "circuit.safetensors", "circuit_summary.json"}
    written |= {"faithfulness.json"} if c.faithfulness and not note else set()
    written |= {"attention.json", "attention.safetensors"} if heads else set()
    for rel in set(CIRCUIT_FILES) - written:     # an earlier run's file must not be cached as this run's
        (out / rel).unlink(missing_ok=True)
    cache.put("circuit", key, summary, files=CIRCUIT_FILES, out_dir=out)
    return summary


# ---------------------------------------------------------------------------------------------
# single run


class _Timer:
    """Wall time per named step."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        logger.info("pipeline step: %s", name)
        t = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(time.perf_counter() - t, 2)


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` produced (also written to ``out_dir``).

    Attributes:
        table: methods x metrics (Original and Retrain first), one row per method.
        timings: wall seconds per step.
        circuit: the circuit summary (None when the circuit step is off).
        memorization: Original vs Retrain on the forget set (is there something to forget?).
        runs: each method's :class:`MethodRun`.
        reused: steps whose results came from the cache.
    """

    out_dir: Path
    config: PipelineConfig
    report: Any
    table: pd.DataFrame
    timings: dict[str, float]
    circuit: dict | None
    memorization: dict
    runs: dict[str, MethodRun]
    reused: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """Methods whose run must not be trusted (status other than ``ok``/``early_stop``)."""
        return [m for m, r in self.runs.items() if r.status not in ("ok", "early_stop")]

    def to_dict(self) -> dict:
        """JSON-able summary (the table as records)."""
        return {"out_dir": str(self.out_dir), "config": self.config.to_dict(),
                "table": self.table.reset_index().to_dict("records"), "timings": self.timings,
                "circuit": self.circuit, "memorization": self.memorization,
                "status": {m: r.status for m, r in self.runs.items()}, "reused": self.reused}


def _table(report) -> pd.DataFrame:
    return pd.DataFrame({m: {k: v[0] for k, v in cols.items()} for m, cols in report.summary().items()}).T


_DATA: dict[str, PipelineData] = {}


def _data(config: PipelineConfig) -> PipelineData:
    """:func:`prepare_data`, built once per process and data (and base) config (building the split takes seconds)."""
    k = json.dumps({"data": config.data.to_dict(), "base": config.base.to_dict() if config.base else None},
                   sort_keys=True)
    if k not in _DATA:
        _DATA.clear()
        _DATA[k] = prepare_data(config)
    return _DATA[k]


def _prepare(config: PipelineConfig, grid: GridConfig | None = None
             ) -> tuple[PipelineData, dict[tuple[float, int], ForgetRetain]]:
    """Validate the config, build the data and draw every request: all before any model is loaded.

    Returns the data and every request, keyed ``(rate, seed)`` in grid order.
    """
    validate(config, grid)
    data = _data(config)
    if grid is None:
        pairs = [(config.data.forget_fraction, config.data.seed)]
        field_name = "data.forget_fraction"
    else:
        pairs = [(float(r), int(s)) for r in grid.rates for s in grid.seeds]
        field_name = "grid.rates"
    return data, {(rate, seed): make_request(data, rate, seed, field_name) for rate, seed in pairs}


def run_pipeline(config: PipelineConfig | None = None, out_dir: str | os.PathLike = "runs/demo",
                 progress: bool = True, fresh: bool = False, cache_root: str | os.PathLike | None = None
                 ) -> PipelineResult:
    """Run the protocol for one request (``data.forget_fraction``, ``data.seed``) with the circuit.

    Args:
        config: the run (default :class:`PipelineConfig`: SmolLM2-135M, about half an hour on CPU).
        out_dir: where ``report.{json,md}``, ``audit/<method>.json``, ``circuit.*``, ``faithfulness.json``,
            ``attention.*``, ``memorization.json``, ``grouping.json`` and ``updates.json`` go.
        progress: show progress bars.
        fresh: recompute every cached result (the checkpoints are kept; they are verified by sha256).
        cache_root: default ``$RECIRCUIT_CACHE``.

    Raises:
        InputError: a bad config field or an impossible request, before any model is loaded.
    """
    cfg = config or PipelineConfig()
    timer = _Timer()
    with timer.step("assets"):
        validate(cfg)
        tiny = cfg.model.lower() == "tiny"
        if not (tiny and (cfg.data.data_dir or cfg.data.source)):
            from recircuit.assets import fetch_asset

            if cfg.data.data_dir is None and (cfg.data.source is None or cfg.data.source.path is None):
                fetch_asset("movielens-100k")
            if cfg.model.lower() == "smollm2-135m-instruct":
                fetch_asset("smollm2-135m-instruct")
        data, requests = _prepare(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = _fresh_context(cache_root, fresh, progress)
    reused: list[str] = []
    rate, seed = cfg.data.forget_fraction, cfg.data.seed
    request = requests[(rate, seed)]
    with timer.step("original"):
        original_checkpoint(cfg, data, ctx)
    summary = None
    if cfg.circuit.enabled:
        with timer.step("circuit"):
            summary = circuit_step(cfg, data, out, ctx, reused)
    with timer.step("retrain"):
        retrain_checkpoint(cfg, data, request, ctx)
    with timer.step("evaluate_references"):
        refs = references(cfg, data, rate, seed, ctx, reused, request=request)
        atomic_write_json(out / "memorization.json", refs.memorization)
    runs: dict[str, MethodRun] = {}
    for name in cfg.methods:
        with timer.step(f"unlearn_{name}"):
            runs[name] = run_method(cfg, name, data, refs, ctx, reused, request=request)
            atomic_write_json(out / "audit" / f"{name}.json", runs[name].audit)
    grouping = next((r.grouping for r in runs.values() if r.grouping), None)
    if grouping is not None:
        atomic_write_json(out / "grouping.json", grouping)
    atomic_write_json(out / "updates.json", {m: r.updates for m, r in runs.items()})
    control = control_on_request(runs, refs, data)
    with timer.step("report"):
        report = _report(cfg, [refs], list(runs.values()))
        report.meta.update({"n_forget": len(request.forget), "n_retain": len(request.retain), "n_test": len(data.test),
                            "n_heldout": len(data.heldout), "timings": timer.times, "reused_from_cache": reused,
                            "memorization": refs.memorization, "circuit": summary, "against_control": control})
        notes = [f"Memorization: {refs.memorization['verdict']}"] if refs.memorization.get("verdict") else []
        notes += [control_sentence(name, d) for name, d in control.items()]
        front = pareto_position(runs)
        report.meta["pareto"] = front
        notes += [front[x]["sentence"] for x in front]
        if summary and summary.get("faithfulness_note"):
            notes.append(f"Faithfulness: {summary['faithfulness_note']}.")
        if notes:
            report.meta["notes"] = notes
        report.save(out / "report")
    return PipelineResult(out, cfg, report, _table(report), timer.times, summary, refs.memorization, runs, reused)


def _report(config: PipelineConfig, refs: Sequence[References], runs: Sequence[MethodRun]):
    """The table: Original and Retrain of every request, then every method (rows carry the rate)."""
    from recircuit.evaluate import UnlearningReport

    report = UnlearningReport(meta={"pipeline_config": config.to_dict(),
                                    "status": {f"{r.method} rate={r.rate} seed={r.seed}": r.status for r in runs}})
    retrain_curves = {(r.rate, r.seed): r.relearn for r in refs}
    for who in ("original", "retrain"):
        for r in refs:
            extra = relearn_against_retrain(r.relearn, r.relearn) if who == "retrain" else {}
            report.add(who, r.seed, {**r.rows[who], **extra, "rate": r.rate})
    for r in runs:       # computed here from the saved curves, so files written before it get it too
        extra = relearn_against_retrain(r.result.get("relearn"), retrain_curves.get((r.rate, r.seed)))
        report.add(r.method, r.seed, {**r.row, **extra, "rate": r.rate})
    return report


# ---------------------------------------------------------------------------------------------
# grid (Ray)


def _run_file(out: Path, method: str, rate: float, seed: int) -> Path:
    return out / "runs" / f"{method}_rate{rate}_seed{seed}.json"


def _refs_file(out: Path, rate: float, seed: int) -> Path:
    return out / "runs" / f"references_rate{rate}_seed{seed}.json"


def _failed_file(path: Path) -> Path:
    return path.with_suffix(".failed.json")


def _grid_key(config: PipelineConfig, method: str | None) -> str:
    """What a finished request file must match to count as done: the config the grid uses (not
    the circuit, other methods, or the single run's ``data.forget_fraction``/``data.seed``).

    recircuit's source is left out of the key on purpose: a grid is meant to be spread over
    sessions (24 core-hours for the validity study), and a key over the whole package would
    throw every finished request away at the first edit of any module. Each file records the
    fingerprint of the code that made it instead (``code``), and a resumed grid whose Original
    trains to other weights recomputes the affected requests (:func:`_stale_requests`).
    """
    from recircuit.cache import cache_key

    d = config.to_dict()
    d.pop("circuit")
    d["data"] = {k: v for k, v in d["data"].items() if k not in ("forget_fraction", "seed")}
    d["methods"] = {method: d["methods"][method]} if method else {}
    return cache_key(code=None, config=d)


def _digest(result: Any) -> str:
    """sha256 of a request file's result (canonical JSON), recorded next to it and checked on reuse."""
    import hashlib

    return hashlib.sha256(json.dumps(result, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _write_done(path: Path, key: str, result: dict, code: str | None = None) -> None:
    """Write a finished request file: its key, the sha256 of its result, the fingerprint of the
    code that made it (``code``: taken when the grid started, the code its tasks loaded; default
    the code on disk now) and the result."""
    from recircuit.cache import code_fingerprint

    result = json.loads(json.dumps(result))     # the form a reader sees
    atomic_write_json(path, {"grid_key": key, "sha256": _digest(result), "code": code or code_fingerprint()[:16],
                             "result": result})
    _failed_file(path).unlink(missing_ok=True)


def _read_done(path: Path, key: str, parse: Any) -> Any:
    """The parsed result of a finished request file, or None when it is missing, for another
    config, altered since it was written (sha256) or of the wrong shape."""
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("grid_key") != key:
            return None
        if d.get("sha256") != _digest(d["result"]):
            logger.warning("grid: %s does not match its recorded sha256; running the request again", path)
            return None
        return parse(d["result"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        logger.warning("grid: %s is unreadable (%s); running the request again", path, err)
        return None


def _sizes(data: PipelineData, request: ForgetRetain) -> dict[str, int]:
    """Lengths of the reference outputs of ``request`` (see :meth:`References.from_dict`)."""
    return {"forget": len(request.forget), "test": len(data.test), "heldout": len(data.heldout)}


def _references_task(cfg_dict: dict, data: PipelineData, rate: float, seed: int, ctx: Context) -> dict:
    """Ray task: Retrain and the reference rows of one request (one torch thread)."""
    torch.set_num_threads(1)
    return references(PipelineConfig.from_dict(cfg_dict), data, rate, seed, ctx).to_dict()


def _method_task(cfg_dict: dict, data: PipelineData, name: str, refs: dict, ctx: Context) -> dict:
    """Ray task: one method on one request (one torch thread)."""
    torch.set_num_threads(1)
    request = make_request(data, float(refs["rate"]), int(refs["seed"]))
    parsed = References.from_dict(refs, _sizes(data, request))
    return run_method(PipelineConfig.from_dict(cfg_dict), name, data, parsed, ctx, request=request).to_dict()


@dataclass
class GridResult:
    """What :func:`run_grid` produced.

    Attributes:
        report: the :class:`recircuit.evaluate.UnlearningReport` over every finished request.
        runs: every method run of the grid.
        submitted: the ``(method, rate, seed)`` requests computed by this call (the rest were done).
        errors: tasks of this call that raised (``"<method or refs> rate=<r> seed=<s>: <reason>"``);
            each also has a ``<out>/runs/...failed.json``.
    """

    out_dir: Path
    report: Any
    runs: list[MethodRun]
    references: list[References]
    submitted: list[tuple[str, float, int]]
    errors: list[str] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        """Methods x metrics (means over seeds and rates)."""
        return _table(self.report)

    @property
    def failed(self) -> list[str]:
        """Requests that failed or must not be trusted (the report's ``meta["failed"]``)."""
        return list(self.report.meta["failed"])


def run_grid(config: PipelineConfig, grid: GridConfig, out_dir: str | os.PathLike = "runs/unlearning",
             ray_address: str | None = None, num_cpus: int | None = None, fresh: bool = False,
             cache_root: str | os.PathLike | None = None, progress: bool = False, compute: bool = True) -> GridResult:
    """Run every (method, seed, rate) request of ``grid`` as Ray tasks; write each as it finishes.

    Original is trained (or reused) once in this process and shared by the tasks through the
    cache; each request's Retrain and reference rows are one task, each method on it another
    (started as soon as its references are done). Each finished request is written atomically to
    ``<out>/runs/<method>_rate<r>_seed<s>.json`` with the sha256 of its result; a request whose
    file matches the config and its sha256 is not run again, so a rerun only does what is missing
    (and starts no Ray at all when nothing is). A task that raises fails its request only: the
    reason goes to ``<out>/runs/<...>.failed.json`` and :attr:`GridResult.errors`, the other tasks
    go on. Writes ``<out>/report.{json,md}`` and ``<out>/audit/<method>_rate<r>_seed<s>.json``.

    Args:
        ray_address: an existing Ray cluster (``"auto"``, ``"ray://head:10001"``); None starts a
            local one with ``num_cpus`` (default: the cores there are). Every task takes one CPU
            and one torch thread. On a cluster, recircuit must be installed on every node, and
            the cache (``cache_root``, else each node's own ``$RECIRCUIT_CACHE``) should be a
            shared directory (else each node trains Original once).
        num_cpus: cores of the local Ray (refused with ``ray_address``: a cluster has its own).
        fresh: recompute every cached result and every request file.
        cache_root: default ``$RECIRCUIT_CACHE`` (on a cluster: of each process).
        compute: False reports the finished requests only (nothing is trained or submitted).

    Raises:
        InputError: a bad config or grid field, before any model is loaded or any task started.
        RunFailed: Original's training failed (before any task started).
    """
    if ray_address and num_cpus is not None:
        raise InputError("num_cpus sizes a local Ray; an existing cluster (ray_address) has its own cores",
                         field="num_cpus", fix="drop num_cpus (--num-cpus), or drop ray_address (--ray-address)")
    data, requests = _prepare(config, grid)
    pairs = list(requests)
    out = Path(out_dir)
    methods = list(grid.methods or config.methods)
    ctx = _fresh_context(cache_root, fresh, progress, resolve=not ray_address)
    from recircuit.cache import code_fingerprint

    keys = {m: _grid_key(config, m) for m in [None, *methods]}
    code = code_fingerprint()[:16]      # what the tasks submitted now load (an edit during the run is not theirs)
    refs_done: dict[tuple[float, int], References] = {}
    runs: dict[tuple[str, float, int], MethodRun] = {}
    todo: dict[tuple[float, int], list[str]] = {}
    for rate, seed in pairs:
        if not fresh:
            sizes = _sizes(data, requests[(rate, seed)])
            r = _read_done(_refs_file(out, rate, seed), keys[None], lambda d, z=sizes: References.from_dict(d, z))
            if r is not None:
                refs_done[(rate, seed)] = r
        for m in methods:
            run = None if fresh else _read_done(_run_file(out, m, rate, seed), keys[m], MethodRun.from_dict)
            if run is None:
                todo.setdefault((rate, seed), []).append(m)
            else:
                runs[(m, rate, seed)] = run
    submitted = [(m, rate, seed) for (rate, seed), ms in todo.items() for m in ms] if compute else []
    errors: list[str] = []
    if submitted:
        orig = original_checkpoint(config, data, ctx)   # once per pool, shared through the cache
        partial = {pair: refs_done[pair] for pair in todo if pair in refs_done}   # a finished request is whole
        for pair in _stale_requests(partial, orig, config.device):
            del refs_done[pair]                      # the whole request again, on the Original of this run
            todo[pair] = list(methods)
            _refs_file(out, *pair).unlink(missing_ok=True)    # no file of the old Original outlives an interruption
            for m in methods:
                runs.pop((m, *pair), None)
                _run_file(out, m, *pair).unlink(missing_ok=True)
        submitted = [(m, rate, seed) for (rate, seed), ms in todo.items() for m in ms]
        errors = _run_ray(config, data, todo, refs_done, runs, keys, out, ctx, ray_address, num_cpus, code)
    refs = [refs_done[p] for p in pairs if p in refs_done]
    all_runs = [runs[(m, rate, seed)] for rate, seed in pairs for m in methods if (m, rate, seed) in runs]
    report = _report(config, refs, all_runs)
    report.meta.update(_grid_meta(grid, methods, refs, all_runs))
    report.meta["failed"] = errors + report.meta["failed"]
    report.meta["code"] = _codes(out)
    report.save(out / "report")
    return GridResult(out, report, all_runs, refs, submitted, errors)


def _stale_requests(refs_done: Mapping[tuple[float, int], References], original: Path,
                    device: str | None) -> list[tuple[float, int]]:
    """The requests of ``refs_done`` whose references were evaluated on other Original weights than ``original``.

    A grid resumed in a new session (or on another machine) trains Original again from the same
    config; training on the same hardware reproduces it bit for bit, and then every finished
    request is kept. Where the weights differ (other hardware, a changed training code path) a
    method run on the new Original would be scored against references of the old one: those
    requests are recomputed whole, with a warning naming them, and their files are removed first.
    Only requests with work left are checked: a finished request is consistent in itself.
    """
    from recircuit.evaluate import model_hash

    if not refs_done:
        return []
    now = model_hash(_load(original, device))
    stale = [pair for pair, r in refs_done.items() if r.original_hash != now]
    for rate, seed in stale:
        logger.warning("rate %s seed %s: its finished references were evaluated on another Original (weights "
                       "sha256 %s, now %s); the request is run again", rate, seed,
                       refs_done[(rate, seed)].original_hash[:12], now[:12])
    return stale


def _task_error(err: BaseException) -> str:
    """One line for a task's exception (the remote error, not Ray's wrapper and its traceback)."""
    cause = getattr(err, "cause", None)
    while getattr(cause, "cause", None) is not None:     # a task whose argument (references) failed
        cause = cause.cause
    err = cause if isinstance(cause, BaseException) else err
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _codes(out: Path) -> list[str]:
    """The code fingerprints recorded in a grid's request files (several: its results were made by
    several versions of recircuit, which the report then says)."""
    codes: set[str] = set()
    for f in sorted((out / "runs").glob("*.json")):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            codes.add(str(json.loads(f.read_text(encoding="utf-8")).get("code") or "unrecorded"))
    if len(codes) > 1:
        logger.warning("grid %s: its request files were made by %d versions of recircuit's code (%s)", out,
                       len(codes), ", ".join(sorted(codes)))
    return sorted(codes)


def _run_ray(config: PipelineConfig, data: PipelineData, todo: dict[tuple[float, int], list[str]],
             refs_done: dict[tuple[float, int], References], runs: dict[tuple[str, float, int], MethodRun],
             keys: dict[str | None, str], out: Path, ctx: Context, ray_address: str | None,
             num_cpus: int | None, code: str | None = None) -> list[str]:
    """Submit the missing requests to Ray and write each result as it arrives (with ``code``, the
    fingerprint of the code the tasks loaded).

    Returns:
        The tasks that raised, one line each (``"<kind> rate=<r> seed=<s>: <reason>"``).
    """
    import ray

    started = not ray.is_initialized()
    if started:
        if ray_address:
            ray.init(address=ray_address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                     logging_level=logging.WARNING)
    errors: list[str] = []
    try:
        ref_task = ray.remote(num_cpus=1)(_references_task)
        method_task = ray.remote(num_cpus=1)(_method_task)
        cfg_dict, data_ref = config.to_dict(), ray.put(data)   # the samples travel with the tasks
        pending: dict[Any, tuple] = {}
        for (rate, seed), ms in todo.items():
            if (rate, seed) in refs_done:
                rref = ray.put(refs_done[(rate, seed)].to_dict())
            else:
                rref = ref_task.remote(cfg_dict, data_ref, rate, seed, ctx)
                pending[rref] = ("refs", rate, seed)
            for m in ms:
                pending[method_task.remote(cfg_dict, data_ref, m, rref, ctx)] = (m, rate, seed)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            kind, rate, seed = pending.pop(ready[0])
            path = _refs_file(out, rate, seed) if kind == "refs" else _run_file(out, kind, rate, seed)
            try:
                result = ray.get(ready[0])
            except Exception as err:   # noqa: BLE001 - one request's failure, not the grid's
                why = _task_error(err)
                errors.append(f"{kind} rate={rate} seed={seed}: {why}")
                logger.error("grid: %s rate %s seed %s failed: %s", kind, rate, seed, why)
                atomic_write_json(_failed_file(path), {"task": kind, "rate": rate, "seed": seed, "error": why})
                continue
            if kind == "refs":
                refs_done[(rate, seed)] = References.from_dict(result)
                _write_done(path, keys[None], result, code)
            else:
                run = MethodRun.from_dict(result)
                runs[(kind, rate, seed)] = run
                atomic_write_json(out / "audit" / f"{kind}_rate{rate}_seed{seed}.json", run.audit)
                _write_done(path, keys[kind], result, code)
                logger.info("grid: %s rate %s seed %s done (%s)", kind, rate, seed, run.status)
    finally:
        if started:
            ray.shutdown()
    return errors


def _grid_meta(grid: GridConfig, methods: list[str], refs: Sequence[References], runs: Sequence[MethodRun]) -> dict:
    from recircuit.unlearn import Grouping, GroupingConfig
    from recircuit.unlearn.grouping import grouping_jaccard

    groupings: dict[str, dict[float, list]] = {}
    for r in runs:
        if r.grouping:
            g = r.grouping
            groupings.setdefault(r.method, {}).setdefault(r.rate, []).append(
                Grouping(**{**g, "config": GroupingConfig(**g["config"])}))
    jaccard = {m: {str(rate): grouping_jaccard(v) for rate, v in by_rate.items() if len(v) > 1}
               for m, by_rate in groupings.items()}
    return {"grid": {"methods": methods, "seeds": list(grid.seeds), "rates": list(grid.rates)},
            "memorization": {f"rate={r.rate} seed={r.seed}": r.memorization for r in refs},
            "not_measurable": [f"rate={r.rate} seed={r.seed}" for r in refs if not r.memorization.get("measurable")],
            "grouping_jaccard_across_seeds": jaccard,
            "against_control": against_control(runs, measurable={(r.rate, r.seed) for r in refs
                                                                 if r.memorization.get("measurable")}),
            "failed": [f"{r.method} rate={r.rate} seed={r.seed}: {r.stopped}" for r in runs
                       if r.status not in ("ok", "early_stop")]}


def control_on_request(runs: Mapping[str, MethodRun], refs: References, data: PipelineData, n_boot: int = 1000
                       ) -> dict[str, dict]:
    """Each CURE of a single run minus its random-groups control on this one request, with
    bootstrap intervals over the request's samples
    (:func:`recircuit.evaluate.metrics.paired_outputs_difference`); ``{}`` without a control."""
    from recircuit.evaluate.metrics import paired_outputs_difference

    out = {}
    for name, run in runs.items():
        base, _, label = name.partition(":")
        control = runs.get("cure-random" + (f":{label}" if label else ""))
        if base != "cure" or control is None:
            continue
        a, b = run.result.get("outputs"), control.result.get("outputs")
        if not a or not b or run.status not in ("ok", "early_stop") or control.status not in ("ok", "early_stop"):
            continue
        arr = {k: np.asarray(v, dtype=np.float64) for k, v in a.items()}
        brr = {k: np.asarray(v, dtype=np.float64) for k, v in b.items()}
        d = paired_outputs_difference(arr, brr, refs.outputs["retrained"], [s.label for s in data.test], n_boot=n_boot,
                                      seed=refs.seed)
        for metric, better in CONTROL_METRICS.items():
            v = d[metric]
            if v.get("ci_low") is None or v.get("ci_high") is None:     # e.g. a test set of one class
                v["better"] = v["worse"] = False
                continue
            v["better"] = bool(v["ci_high"] < 0) if better == "lower" else bool(v["ci_low"] > 0)
            v["worse"] = bool(v["ci_low"] > 0) if better == "lower" else bool(v["ci_high"] < 0)
        out[f"{name} - {control.method}"] = d
    return out


def pareto_position(runs: Mapping[str, MethodRun]) -> dict[str, dict]:
    """Which methods of a single run are on the forget/utility Pareto front: forget JSD to Retrain
    (and MIA gap to Retrain) against test AUC, among the runs that can be trusted; and where each
    CURE sits (on the front, or which methods dominate it)."""
    from recircuit.viz.pareto import pareto_front

    ok = {m: r.row for m, r in runs.items() if r.status in ("ok", "early_stop")}
    out = {}
    for x, words in (("forget_jsd", "forget JSD"), ("mia_gap_to_retrain", "MIA gap")):
        names = [m for m in ok if np.isfinite(ok[m].get(x, np.nan)) and np.isfinite(ok[m].get("test_auc", np.nan))]
        if not names:
            continue
        pts = np.array([[ok[m][x], ok[m]["test_auc"]] for m in names])
        front = [names[i] for i in pareto_front(pts)]
        parts = []
        for m in names:
            if m.partition(":")[0] != "cure":
                continue
            beats = [o for o in names if o != m and ok[o][x] <= ok[m][x] and ok[o]["test_auc"] >= ok[m]["test_auc"]
                     and (ok[o][x], ok[o]["test_auc"]) != (ok[m][x], ok[m]["test_auc"])]
            parts.append(f"{m} is on it" if m in front else f"{m} is dominated by {', '.join(beats)}")
        sentence = (f"Pareto front of {words} to Retrain against test AUC (one request): {', '.join(front)}"
                    + (f"; {'; '.join(parts)}" if parts else "") + ".")
        out[x] = {"front": front, "sentence": sentence}
    return out


def control_sentence(name: str, d: Mapping[str, Mapping]) -> str:
    """One line for the report: CURE minus its control, each metric with its interval and verdict."""
    words = {"forget_jsd": "forget JSD to Retrain", "mia_gap_to_retrain": "MIA gap to Retrain", "test_auc": "test AUC"}
    def part(m: str, v: Mapping) -> str:
        if v.get("diff") is None:
            return f"{words[m]} not measurable ({v.get('note', 'no value')})"
        if v.get("ci_low") is None or v.get("ci_high") is None:
            return f"{words[m]} {v['diff']:+.4f} (no interval: {v.get('note', 'no replicate')})"
        return f"{words[m]} {v['diff']:+.4f} (95% CI {v['ci_low']:+.4f}..{v['ci_high']:+.4f})"

    parts = [part(m, v) for m, v in d.items()]
    f, m, auc = d["forget_jsd"], d["mia_gap_to_retrain"], d["test_auc"]
    forgets = (f["better"] or m["better"]) and not (f["worse"] or m["worse"])
    if not forgets:
        verdict = "does not beat its random-groups control on this request"
    elif auc.get("ci_low") is None or auc.get("ci_high") is None:
        verdict = "beats its random-groups control on forgetting; utility is not measurable on this test set"
    elif auc["worse"]:
        verdict = "forgets better than its random-groups control but at a cost in utility"
    else:
        verdict = "beats its random-groups control on forgetting with utility no worse"
    return f"{name}: {'; '.join(parts)}; CURE {verdict}."


#: Metrics compared between CURE and its random-groups control, and which way is better.
CONTROL_METRICS = {"forget_jsd": "lower", "mia_gap_to_retrain": "lower", "test_auc": "higher"}


def against_control(runs: Sequence[MethodRun], metrics: Mapping[str, str] = CONTROL_METRICS,
                    n_boot: int = 2000, seed: int = 0, measurable: set[tuple[float, int]] | None = None) -> dict:
    """Each CURE (``cure``, ``cure:x``) minus its random-groups control (``cure-random``,
    ``cure-random:x``), paired by request: the mean difference and its bootstrap interval per
    metric, over all requests and per deletion rate (:func:`recircuit.evaluate.stats.paired_difference`).

    Only requests both finished (status ok or early_stop) are paired; a comparison with fewer than
    two pairs reports its count and no interval. ``better`` (``worse``) says whether the interval
    lies wholly on the better (worse) side (lower forget JSD and MIA gap, higher test AUC). With
    ``measurable`` (the ``(rate, seed)`` requests that passed the memorization check) a
    ``"measurable"`` scope pairs those requests only: on the others there was nothing to forget.

    Within one rate the unit is the request (one per seed). The scopes that pool rates (``all``,
    ``measurable``) average each seed's differences over its rates first and pair those means
    (``unit`` says so): requests of one seed at several rates share the Original and nest their
    forget users, so counting them as independent pairs would make the interval too narrow.
    """
    from recircuit.evaluate.stats import paired_difference

    ok = {(r.method, r.rate, r.seed): r.row for r in runs if r.status in ("ok", "early_stop")}
    out: dict[str, dict] = {}
    for method in sorted({m for m, _, _ in ok}):
        base, _, label = method.partition(":")
        if base != "cure":
            continue
        control = "cure-random" + (f":{label}" if label else "")
        pairs = sorted((rate, seed) for m, rate, seed in ok if m == method and (control, rate, seed) in ok)
        comp: dict[str, dict] = {}
        scopes = ["all", *(["measurable"] if measurable is not None else []), *sorted({rate for rate, _ in pairs})]
        for scope in scopes:
            sel = [p for p in pairs if scope == "all" or p[0] == scope or (scope == "measurable" and p in measurable)]
            per = {}
            pooled = isinstance(scope, str)
            for metric, better in metrics.items():
                by_unit: dict = {}
                for p in sel:
                    x, y = ok[(method, *p)].get(metric), ok[(control, *p)].get(metric)
                    if (isinstance(x, int | float) and isinstance(y, int | float) and np.isfinite(x)
                            and np.isfinite(y)):
                        by_unit.setdefault(p[1] if pooled else p, []).append((float(x), float(y)))
                keep = [tuple(np.mean(v, axis=0)) for _, v in sorted(by_unit.items())]
                if len(keep) < 2:
                    per[metric] = {"n": len(keep)}
                    continue
                d = paired_difference([x for x, _ in keep], [y for _, y in keep], n_boot=n_boot, seed=seed)
                d["better"] = bool(d["ci_high"] < 0) if better == "lower" else bool(d["ci_low"] > 0)
                d["worse"] = bool(d["ci_low"] > 0) if better == "lower" else bool(d["ci_high"] < 0)
                d["unit"] = "seed (mean over its rates)" if pooled else "request"
                d["n_requests"] = sum(len(v) for v in by_unit.values())
                per[metric] = d
            comp[scope if isinstance(scope, str) else f"rate={scope}"] = per
        out[f"{method} - {control}"] = comp
    return out


def grid_markdown(result: GridResult, columns: Sequence[str] = REPORT_COLUMNS) -> str:
    """The grid's table as Markdown (methods as rows, mean +- std over seeds)."""
    return result.report.to_markdown(list(columns))
