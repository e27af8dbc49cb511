"""The whole mission end to end: a preset of :mod:`recircuit.pipeline`, plus the figures.

Usage::

    from recircuit.demo import demo_config, run_demo
    result = run_demo(demo_config(), out_dir="runs/demo")     # SmolLM2-135M on MovieLens-100K
    result.table                                              # methods x metrics (pandas)

    cfg = demo_config("tiny", data_dir="../shared/data/ml-100k", methods=("cure", "ga"))
    run_demo(cfg, "/tmp/demo")                                # a dry run in about a minute

    from recircuit.data import DataSource                     # another data set (README: bring your own)
    cfg = demo_config("tiny", source=DataSource("bookcrossing", path="data/bx", history_len=5))

    recircuit demo --out runs/demo                            # the same from the shell (= make demo)

The protocol itself (data, Original, circuit, request, Retrain, every method, the report) is
:func:`recircuit.pipeline.run_pipeline`; this module only picks its sizes (what runs in about half
an hour on 2 CPU cores with SmolLM2-135M, or a minute on the tiny model) and draws every figure
into ``figures/`` from the saved results (:func:`recircuit.viz.figures.make_figures`). A rerun
reuses every cached step whose inputs are unchanged; ``fresh=True`` (``--fresh``) recomputes all
but the checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recircuit._io import atomic_write_json
from recircuit.data import DataSource
from recircuit.pipeline import PipelineConfig, PipelineResult, preset_method, run_pipeline

logger = logging.getLogger(__name__)

#: Columns of the short table printed at the end.
SUMMARY_COLUMNS = ("test_auc", "forget_auc", "forget_jsd", "test_jsd", "mia_auc", "mia_gap_to_retrain", "seconds")


def demo_config(model: str = "smollm2-135m-instruct", *, device: str | None = None, data_dir: str | None = None,
                source: DataSource | None = None, n_train: int | None = None, forget_fraction: float | None = None, seed: int | None = None,
                steps: int | None = None, methods: Sequence[str] | None = None,
                faithfulness: bool | None = None) -> PipelineConfig:
    """The demo's preset: :meth:`PipelineConfig.protocol` (SmolLM2: the two-stage protocol in which
    forgetting is measurable, a 64-sample pool, CURE with its random-groups control, GA and NPO)
    or :meth:`PipelineConfig.tiny`, with the command line's overrides (None keeps the preset).

    Args:
        model: ``"tiny"`` picks the tiny preset; any other name the full one with that base model.
        data_dir: MovieLens-100K files (default: the asset).
        source: another data set instead (:class:`recircuit.data.DataSource`: BookCrossing, a CSV,
            TALLRec JSON); ``recircuit demo --data-format/--data-path/--data-json``.
        n_train: training pool size (the fine-tuning eval interval follows it).
        seed: seed of the request, the training and the unlearning loop.
        steps: the unlearning budget (loop steps) of every method.
        methods: methods to compare, each with its preset settings (a CURE variant such as
            ``cure-random`` takes the preset CURE's, so the control is like for like).
        faithfulness: run the faithfulness sweep.
    """
    tiny = model.lower() == "tiny"
    cfg = PipelineConfig.tiny(data_dir=data_dir, source=source) if tiny else PipelineConfig.protocol(model)
    data, train, loop, circuit = cfg.data, cfg.train, cfg.loop, cfg.circuit
    if not tiny:
        data = dataclasses.replace(data, data_dir=data_dir, source=source)
    if n_train is not None:
        data = dataclasses.replace(data, n_train=n_train)
        if data.n_valid:        # validated fine-tuning only (the protocol's stage 2 trains every epoch)
            train = dataclasses.replace(train, eval_every=max(1, n_train // train.batch_size // 2))
    if forget_fraction is not None:
        data = dataclasses.replace(data, forget_fraction=forget_fraction)
    if seed is not None:
        data = dataclasses.replace(data, seed=seed)
        train = dataclasses.replace(train, seed=seed)
    if steps is not None:
        loop = dataclasses.replace(loop, steps=steps)
    if faithfulness is not None:
        circuit = dataclasses.replace(circuit, faithfulness=faithfulness)
    chosen = cfg.methods
    if methods is not None:
        chosen = {m: preset_method(cfg, m) for m in methods}
    return dataclasses.replace(cfg, device=device if device is not None else cfg.device, data=data, train=train,
                               loop=loop, circuit=circuit, methods=chosen)


#: The notebooks' profiles (``PROFILE`` in each notebook, ``$RECIRCUIT_PROFILE``).
NOTEBOOK_PROFILES = ("quick", "paper")


def notebook_config(model: str = "smollm2-135m-instruct", *, profile: str = "quick", data_dir: str | None = None,
                    source: DataSource | None = None) -> PipelineConfig:
    """The notebooks' preset: the demo's, at interactive speed (``quick``) or at paper size (``paper``).

    ``quick`` is :func:`demo_config` with CURE and one baseline (NPO): the recommender, the
    circuit, Retrain, CURE and NPO are the demo's own cache entries, so after ``make demo`` every
    notebook reuses them, and from an empty cache the notebooks train and compute only what they
    show. ``paper`` adds GA and sizes the circuit like MIB: 32 prompts, 5 EAP-IG steps and MIB's
    ten faithfulness sizes.

    Raises:
        InputError: an unknown profile.
    """
    from recircuit.circuits import MIB_SIZES
    from recircuit.errors import InputError

    if profile not in NOTEBOOK_PROFILES:
        raise InputError(f"unknown notebook profile {profile!r}", field="PROFILE",
                         fix=f"use one of {', '.join(NOTEBOOK_PROFILES)}")
    if profile == "quick":
        return demo_config(model, data_dir=data_dir, source=source, methods=("cure", "npo"))
    cfg = demo_config(model, data_dir=data_dir, source=source, methods=("cure", "ga", "npo"))
    attribution = dataclasses.replace(cfg.circuit.attribution, steps=5)
    return dataclasses.replace(cfg, circuit=dataclasses.replace(
        cfg.circuit, samples=32, faithfulness_sizes=tuple(MIB_SIZES), attribution=attribution))


@dataclass
class DemoResult:
    """What :func:`run_demo` produced: the pipeline's result plus the figures."""

    pipeline: PipelineResult
    figures: list[Path] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        """Where everything was written."""
        return self.pipeline.out_dir

    @property
    def table(self) -> pd.DataFrame:
        """Methods x metrics (Original and Retrain first)."""
        return self.pipeline.table

    @property
    def timings(self) -> dict[str, float]:
        """Wall seconds per step."""
        return self.pipeline.timings

    @property
    def circuit_summary(self) -> dict:
        """The circuit step's summary (empty when it was off)."""
        return self.pipeline.circuit or {}

    @property
    def memorization(self) -> dict:
        """Original vs Retrain on the forget set."""
        return self.pipeline.memorization

    @property
    def reused(self) -> list[str]:
        """Steps whose results came from the cache."""
        return self.pipeline.reused

    def to_dict(self) -> dict:
        """JSON-able summary (the table as records)."""
        return {**self.pipeline.to_dict(), "figures": [str(p) for p in self.figures]}

    def summary_lines(self) -> list[str]:
        """What a reader needs under the table, in words: the circuit, whether forgetting was
        measurable, CURE against its random-groups control, where each method sits on the Pareto
        fronts, the step times, what was reused or failed, and where the report is."""
        lines = []
        c = self.circuit_summary
        if c:
            faith = (f"CPR {c['cpr']:.3f}, CMD {c['cmd']:.3f}, f >= 0.8 from {c.get('edges_to_f80')} edges"
                     if "cpr" in c else "no faithfulness curve")
            lines.append(f"circuit: {c['n_edges_total']} edges; {faith}; top modules: "
                         + ", ".join(n for n, _ in c["top_modules"][:5]))
            if c.get("faithfulness_note"):
                lines.append(f"note: {c['faithfulness_note']}")
        if self.memorization.get("verdict"):
            lines.append(f"memorization: {self.memorization['verdict']}")
        meta = self.pipeline.report.meta
        lines += [f"against its control: {line}" for line in meta.get("notes") or []
                  if " - cure-random" in line.split(":", 1)[0]]
        lines += [front["sentence"] for front in (meta.get("pareto") or {}).values()]
        lines.append("steps (s): " + ", ".join(f"{k} {v:.0f}" for k, v in self.timings.items()))
        if self.reused:
            lines.append("reused unchanged results of: " + ", ".join(self.reused) + " (--fresh recomputes them)")
        if self.pipeline.failed:
            lines.append("runs that must not be trusted (see report.md): " + "; ".join(self.pipeline.failed))
        lines.append(f"report: {self.out_dir}/report.md, figures: {self.out_dir}/figures/ ({len(self.figures)} files)")
        return lines


def run_demo(config: PipelineConfig | None = None, out_dir: str | os.PathLike = "runs/demo", progress: bool = True,
             fresh: bool = False, static_figures: bool | None = None) -> DemoResult:
    """Run the pipeline (see :func:`recircuit.pipeline.run_pipeline`) and draw every figure.

    Args:
        config: default :func:`demo_config` (SmolLM2-135M, about half an hour on CPU).
        out_dir: the pipeline's outputs, plus ``figures/`` and ``demo.json``.
        progress: show progress bars.
        fresh: recompute every cached result (the checkpoints are kept; they are verified by sha256).
        static_figures: also write SVG/PDF/PNG (kaleido and a Chromium); default: not for ``tiny``.

    Raises:
        recircuit.errors.InputError: a bad config field, before any model is loaded.
    """
    cfg = config or demo_config()
    res = run_pipeline(cfg, out_dir, progress=progress, fresh=fresh)
    out = res.out_dir
    static = static_figures if static_figures is not None else cfg.model.lower() != "tiny"
    figures: list[Path] = []
    try:
        from recircuit.viz.figures import make_figures

        figures = make_figures(out, out / "figures", static=static)
    except Exception as err:  # figures must not lose the results they are drawn from
        logger.warning("figures could not be drawn (%s); the results in %s are complete", err, out)
    result = DemoResult(res, figures)
    atomic_write_json(out / "demo.json", result.to_dict())
    return result
