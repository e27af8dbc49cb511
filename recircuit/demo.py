"""The whole mission end to end: fine-tune, find the circuit, forget users with CURE, compare, report.

Usage::

    from recircuit.demo import DemoConfig, run_demo
    result = run_demo(DemoConfig(), out_dir="runs/demo")      # SmolLM2-135M on MovieLens-100K
    result.table                                              # methods x metrics (pandas)

    recircuit demo --out runs/demo                            # the same from the shell (= make demo)
    recircuit demo --model tiny --data-dir ../shared/data/ml-100k --out /tmp/demo   # a dry run in ~1 min

Steps, each timed and shown with a progress bar:

1. **assets**: fetch the pinned model and MovieLens-100K (skipped for ``--model tiny`` when a
   ``data_dir`` is given).
2. **original**: fine-tune the recommender on a pool of whole users (TALLRec ``tallrec`` split,
   at most ``per_user`` windows per user), or reuse it from ``$RECIRCUIT_CACHE/models``.
3. **circuit**: the recommendation circuit of the fine-tuned model on test prompts (EAP-IG,
   label-flip corruption), its MIB faithfulness curve, and the attention patterns of its top heads.
4. **request**: a seeded ``forget_fraction`` of the pool's users asks to be forgotten.
5. **retrain**: the gold standard, the same training on the retain users only (cached as well).
6. **unlearn**: CURE and the baselines, each from the same original weights, same budget.
7. **report**: the protocol's metrics for Original ("do nothing"), Retrain and every method,
   the memorization gap, audit records, ``report.{json,md}`` and every figure in ``figures/``.

Everything needed to redraw the figures is saved as JSON or safetensors (no pickles), so
:func:`recircuit.viz.figures.make_figures` (``make figures``) rebuilds them without a model.
The sizes default to what runs in about half an hour on 2 CPU cores with SmolLM2-135M. A rerun
reuses the cached checkpoints (steps 2 and 5) and, through :class:`recircuit.step_cache.StepCache`,
the circuit, the reference evaluation and every method whose inputs are unchanged (config,
checkpoints, sample ids and the package's code); it only rewrites the report and figures. Change
one method's settings and only that method reruns; ``reuse_results=False`` (``--fresh``)
recomputes everything but the checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recircuit._io import atomic_write, atomic_write_json
from recircuit.data import Split
from recircuit.data.prompts import Sample
from recircuit.step_cache import StepCache, file_fingerprint
from recircuit.train import TrainConfig
from recircuit.unlearn import UnlearnConfig

logger = logging.getLogger(__name__)

#: Below this clean-minus-corrupted metric gap (logit units) the faithfulness curve is flagged.
MIN_METRIC_GAP = 0.1

#: Columns of the short table printed at the end.
SUMMARY_COLUMNS = ("test_auc", "forget_auc", "forget_jsd", "test_jsd", "mia_auc", "mia_gap_to_retrain", "seconds")


@dataclass
class DemoConfig:
    """Sizes and settings of the end-to-end run.

    Attributes:
        model: base model (``"smollm2-135m-instruct"``, an HF name, a local directory or ``"tiny"``).
        device: torch device (default: CUDA when present, else CPU).
        data_dir: a directory with GroupLens ``u.data``/``u.item``/``u.user`` (default: the asset).
        n_train: training pool size (whole users, ``per_user`` windows each).
        per_user: training windows kept per user, so user-level forgetting has users to pick.
        n_valid: validation samples for early stopping while fine-tuning.
        n_test: test samples for utility and JSD.
        n_heldout: never-trained samples (from the end of the valid split) for the MIA attack.
        forget_fraction: share of the pool's users that ask to be forgotten.
        seed: seed of the request, training and unlearning.
        train_lr, train_epochs, batch_size: fine-tuning (full fine-tune, AdamW, warmup + cosine).
        circuit_samples, circuit_method, circuit_steps, corruption: the circuit extraction.
        circuit_top_n: edges kept in the saved circuit and drawn in the diagram.
        faithfulness: run the faithfulness sweep (one patched forward per size and batch).
        faithfulness_sizes: circuit sizes of the sweep (fractions of all edges); six of MIB's ten,
            because each patched forward costs about a minute on one CPU core.
        attention_heads: how many top heads to show with circuitsvis.
        methods: unlearning methods to compare (Retrain is always run).
        unlearn_steps, unlearn_lr, unlearn_batch_size: the shared budget of every method.
        importance_samples, importance_steps: CURE's EAP-IG scoring of forget and retain modules.
        static_figures: also write SVG/PDF/PNG when kaleido and a Chromium are installed.
        reuse_results: reuse the circuit, reference evaluation and each method's results from
            ``$RECIRCUIT_CACHE/results`` when their inputs (config, checkpoints, samples and the
            package's code) are unchanged; ``False`` recomputes them (``recircuit demo --fresh``).
    """

    model: str = "smollm2-135m-instruct"
    device: str | None = None
    data_dir: str | None = None
    n_train: int = 64
    per_user: int = 8
    n_valid: int = 32
    n_test: int = 64
    n_heldout: int = 32
    forget_fraction: float = 0.25
    seed: int = 0
    train_lr: float = 1e-4
    train_epochs: int = 2
    batch_size: int = 8
    circuit_samples: int = 8
    circuit_method: str = "eap-ig-inputs"
    circuit_steps: int = 2
    corruption: str = "label_flip"
    circuit_top_n: int = 200
    faithfulness: bool = True
    faithfulness_sizes: tuple[float, ...] = (0.001, 0.01, 0.05, 0.2, 0.5, 1.0)
    attention_heads: int = 4
    methods: tuple[str, ...] = ("cure", "ga", "npo")
    unlearn_steps: int = 6
    unlearn_lr: float = 2e-5
    unlearn_batch_size: int = 4
    importance_samples: int = 4
    importance_steps: int = 2
    static_figures: bool = True
    reuse_results: bool = True

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        self.faithfulness_sizes = tuple(float(f) for f in self.faithfulness_sizes)
        if not 0 < self.forget_fraction < 1:
            raise ValueError(f"forget_fraction must be in (0, 1), got {self.forget_fraction}")
        for name in ("n_train", "per_user", "n_valid", "n_test", "n_heldout", "circuit_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def tiny(cls, data_dir: str | None = None, **overrides) -> DemoConfig:
        """A dry run on the tiny random GQA model: every step, in about a minute on CPU."""
        kw = dict(model="tiny", device="cpu", data_dir=data_dir, n_train=48, per_user=6, n_valid=16, n_test=24,
                  n_heldout=16, train_lr=3e-3, train_epochs=2, circuit_samples=4, circuit_steps=2, circuit_top_n=60,
                  unlearn_steps=4, unlearn_lr=1e-3, unlearn_batch_size=8, importance_samples=4, importance_steps=2,
                  static_figures=False)
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict:
        """JSON-able form."""
        d = asdict(self)
        d["methods"] = list(self.methods)
        d["faithfulness_sizes"] = list(self.faithfulness_sizes)
        return d

    def train_config(self) -> TrainConfig:
        """The fine-tuning config of Original and Retrain (full fine-tune, early stopping)."""
        steps_per_epoch = max(1, self.n_train // self.batch_size)
        return TrainConfig(mode="full", lr=self.train_lr, epochs=self.train_epochs, batch_size=self.batch_size,
                           eval_every=max(1, steps_per_epoch // 2), patience=3, seed=self.seed)

    def unlearn_config(self) -> UnlearnConfig:
        """The budget every unlearning method gets."""
        return UnlearnConfig(steps=self.unlearn_steps, lr=self.unlearn_lr, batch_size=self.unlearn_batch_size,
                             seed=self.seed, eval_every=5, eval_samples=self.n_heldout,
                             importance_samples=self.importance_samples, importance_steps=self.importance_steps,
                             corruption=self.corruption)


@dataclass
class DemoData:
    """The samples of one run: the training pool of whole users and the evaluation sets."""

    split: Split          # the pool as train; valid and test cut to size
    valid: list[Sample]   # early stopping while fine-tuning
    heldout: list[Sample]  # never trained on: MIA non-members and the unlearning early stop
    test: list[Sample]


def prepare_data(config: DemoConfig) -> DemoData:
    """Build the ``tallrec`` split and cut the pool and evaluation sets the config asks for."""
    from recircuit.data import build_split, cap_per_user

    full = build_split("tallrec", data_dir=config.data_dir)
    pool = cap_per_user(full.train, config.per_user, config.n_train)
    valid = full.valid[: config.n_valid]
    heldout = full.valid[len(full.valid) - config.n_heldout:]
    test = full.test[: config.n_test]
    params = {**full.params, "pool": {"per_user": config.per_user, "n_train": config.n_train}}
    return DemoData(Split(full.name, pool, valid, test, params), valid, heldout, test)


def retain_split(data: DemoData, request) -> Split:
    """The split Retrain trains on: the retain part of the pool, same valid and test."""
    return Split(data.split.name, list(request.retain), data.valid, data.test,
                 {**data.split.params, "request": request.params | {"level": request.level}})


@dataclass
class DemoResult:
    """What :func:`run_demo` produced."""

    out_dir: Path
    table: pd.DataFrame
    timings: dict[str, float]
    circuit_summary: dict
    memorization: dict
    figures: list[Path] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)  # steps whose results came from the step cache

    def to_dict(self) -> dict:
        """JSON-able summary (the table as records)."""
        return {"out_dir": str(self.out_dir), "table": self.table.reset_index().to_dict("records"),
                "timings": self.timings, "circuit": self.circuit_summary, "memorization": self.memorization,
                "figures": [str(p) for p in self.figures], "reused": self.reused}


class _Timer:
    """Wall time per named step."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        logger.info("demo step: %s", name)
        t = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(time.perf_counter() - t, 2)


def module_update_norms(before: torch.nn.Module, after: torch.nn.Module) -> dict[str, float]:
    """Frobenius norm of the weight update of every head and MLP (CURE's module ownership).

    A head ``a{L}.h{H}`` counts its rows of W_Q and its columns of W_O (the slices only it
    owns; shared K/V slices of grouped-query attention are left out); an MLP counts its gate,
    up and down weights.
    """
    from recircuit.unlearn.masks import module_params

    pb, pa = module_params(before), module_params(after)
    cfg = after.cfg
    n_heads = cfg.n_heads
    d_head = pa["blocks.0.q"].shape[0] // n_heads
    out: dict[str, float] = {}
    for layer in range(cfg.n_layers):
        dq = (pa[f"blocks.{layer}.q"] - pb[f"blocks.{layer}.q"]).detach().float().cpu()
        do = (pa[f"blocks.{layer}.o"] - pb[f"blocks.{layer}.o"]).detach().float().cpu()
        for h in range(n_heads):
            sl = slice(h * d_head, (h + 1) * d_head)
            out[f"a{layer}.h{h}"] = float(torch.sqrt(dq[sl].pow(2).sum() + do[:, sl].pow(2).sum()))
        sq = sum(float((pa[f"blocks.{layer}.{k}"] - pb[f"blocks.{layer}.{k}"]).detach().float().pow(2).sum())
                 for k in ("gate", "up", "down"))
        out[f"m{layer}"] = float(np.sqrt(sq))
    return out


def _top_heads(importance: dict[str, float], k: int) -> list[tuple[int, int]]:
    heads = sorted((kv for kv in importance.items() if kv[0].startswith("a")), key=lambda kv: -kv[1])[:k]
    return [(int(n[1:].split(".h")[0]), int(n.split(".h")[1])) for n, _ in heads]


def _save_attention(model, prompt: str, heads: list[tuple[int, int]], out: Path) -> None:
    """Attention patterns of ``heads`` on ``prompt``: safetensors arrays plus a JSON of tokens."""
    from safetensors.torch import save_file

    from recircuit.viz.attention import attention_patterns

    tokens, arr = attention_patterns(model, prompt, heads)
    pats = torch.from_numpy(arr).contiguous()
    atomic_write(out.with_suffix(".safetensors"), lambda tmp: save_file({"patterns": pats}, str(tmp)))
    atomic_write_json(out.with_suffix(".json"), {"prompt": prompt, "tokens": tokens,
                                                 "heads": [f"a{layer}.h{h}" for layer, h in heads]})

#: DemoConfig fields the circuit step depends on (with the checkpoint and the prompts).
CIRCUIT_FIELDS = ("circuit_method", "circuit_steps", "corruption", "circuit_top_n", "faithfulness",
                  "faithfulness_sizes", "attention_heads", "batch_size", "model")
#: Files the circuit step writes into the output directory.
CIRCUIT_FILES = ("circuit.json", "circuit.safetensors", "faithfulness.json", "attention.json",
                 "attention.safetensors", "circuit_summary.json")


def _uids(samples) -> list[str]:
    return [s.uid for s in samples]


def _sidecar(path) -> Path:
    """The JSON sidecar of a checkpoint given as a stem, ``.json`` or ``.safetensors`` path."""
    p = Path(path)
    return p if p.suffix == ".json" else p.with_suffix(".json")


def _circuit_step(cfg: DemoConfig, original, clean: list[Sample], out: Path, progress: bool) -> dict:
    """Circuit, faithfulness curve and attention of the top heads; returns the summary it saves."""
    from recircuit.circuits import AttributionConfig, Circuit, attribute, faithfulness_curve
    from recircuit.circuits.corruptions import corruption_for

    corrupted = corruption_for(cfg.corruption, original.tokenizer, cfg.data_dir)(list(clean))
    acfg = AttributionConfig(method=cfg.circuit_method, steps=cfg.circuit_steps, batch_size=cfg.batch_size,
                             align="left", progress=progress)
    res = attribute(original, clean, corrupted, acfg)
    circuit = Circuit.from_attribution(res, top_n=min(cfg.circuit_top_n, res.graph.n_edges),
                                       metadata={"model": cfg.model, "data": "tallrec test",
                                                 "corruption": cfg.corruption, "n_samples": len(clean)})
    circuit.save(out / "circuit")
    metric_gap = res.clean_metric - res.corrupted_metric
    summary = {"n_edges_total": res.graph.n_edges, "n_edges_kept": circuit.n_edges,
               "clean_metric": res.clean_metric, "corrupted_metric": res.corrupted_metric, "metric_gap": metric_gap,
               "top_modules": sorted(circuit.module_importance().items(), key=lambda kv: -kv[1])[:10]}
    if cfg.faithfulness:
        curve = faithfulness_curve(original, res, clean, corrupted, sizes=cfg.faithfulness_sizes,
                                   batch_size=cfg.batch_size, align="left", progress=progress)
        atomic_write_json(out / "faithfulness.json", {cfg.corruption: curve.to_dict()})
        summary.update({"cpr": curve.cpr, "cmd": curve.cmd, "edges_to_f80": curve.edges_to_reach(0.8)})
        if abs(metric_gap) < MIN_METRIC_GAP:
            summary["faithfulness_note"] = (
                f"the {cfg.corruption} corruption moves the metric by only {metric_gap:.3g} (logit difference), so "
                "f = (circuit - corrupted) / (clean - corrupted) divides by almost nothing and is not reliable; "
                "use another corruption or a better-trained recommender")
            logger.warning("faithfulness: %s", summary["faithfulness_note"])
    heads = _top_heads(circuit.module_importance(), cfg.attention_heads)
    if heads:
        _save_attention(original, clean[0].prompt, heads, out / "attention")
    atomic_write_json(out / "circuit_summary.json", summary)
    return summary


def run_demo(config: DemoConfig | None = None, out_dir: str | Path = "runs/demo", progress: bool = True) -> DemoResult:
    """Run the whole mission (see the module docstring) and write its outputs into ``out_dir``.

    Args:
        config: sizes and settings; default :class:`DemoConfig` (SmolLM2-135M, ~30 min on CPU).
        out_dir: where ``report.{json,md}``, ``audit/``, ``circuit.*``, ``grouping.json``,
            ``faithfulness.json``, ``updates.json``, ``attention.*`` and ``figures/`` go.
        progress: show progress bars.

    Returns:
        A :class:`DemoResult` with the methods x metrics table and per-step timings.

    Raises:
        recircuit.data.SplitError, recircuit.unlearn.UnlearningError: an impossible request
            (e.g. a pool with a single user); the message says which size to change.
    """
    from recircuit.data import forget_retain_split
    from recircuit.evaluate import UnlearningReport, audit_record, evaluate_unlearning, model_hash
    from recircuit.evaluate.metrics import memorization_gap
    from recircuit.train import cached_recommender, load_trained
    from recircuit.unlearn import get_method

    cfg = config or DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timer = _Timer()
    tiny = cfg.model.lower() == "tiny"

    with timer.step("assets"):
        if not (tiny and cfg.data_dir):
            from recircuit.assets import fetch_asset

            if cfg.data_dir is None:
                fetch_asset("movielens-100k")
            if cfg.model.lower() == "smollm2-135m-instruct":
                fetch_asset("smollm2-135m-instruct")
        data = prepare_data(cfg)
        pool, valid, heldout, test = data.split.train, data.valid, data.heldout, data.test
    tcfg = cfg.train_config()

    cache = StepCache(enabled=cfg.reuse_results)
    reused: list[str] = []
    with timer.step("original"):
        orig_path = cached_recommender(cfg.model, data.split, tcfg, None, cfg.n_valid, cfg.device, progress=progress)
    models: dict[str, torch.nn.Module] = {}

    def loaded(name: str, path: Path) -> torch.nn.Module:
        """Load a checkpoint only when a step that needs it is not cached."""
        if name not in models:
            m, _ = load_trained(path, device=cfg.device)
            for p in m.parameters():
                p.requires_grad_(False)
            models[name] = m
        return models[name]

    orig_id = file_fingerprint(_sidecar(orig_path))
    eval_ids = {"test": _uids(test), "heldout": _uids(heldout), "valid": _uids(valid)}

    with timer.step("circuit"):
        clean = test[: cfg.circuit_samples]
        ckey = cache.key(step="circuit", original=orig_id, data_dir=cfg.data_dir, samples=_uids(clean),
                         **{k: getattr(cfg, k) for k in CIRCUIT_FIELDS})
        summary = cache.get("circuit", ckey, out)
        if summary is not None:
            reused.append("circuit")
        else:
            original = loaded("original", orig_path)
            summary = _circuit_step(cfg, original, clean, out, progress)
            cache.put("circuit", ckey, summary, out, CIRCUIT_FILES)

    with timer.step("request"):
        request = forget_retain_split(data.split, level="user", fraction=cfg.forget_fraction, seed=cfg.seed)

    with timer.step("retrain"):
        gold_path = cached_recommender(cfg.model, retain_split(data, request), tcfg, None, cfg.n_valid, cfg.device,
                                       progress=progress)
    gold_meta = json.loads(_sidecar(gold_path).read_text())
    gold_id = file_fingerprint(_sidecar(gold_path))
    retrain_seconds = float(gold_meta.get("metrics", {}).get("seconds", 0.0)) or None
    request_ids = {"forget": _uids(request.forget), "retain": _uids(request.retain)}

    report = UnlearningReport(meta={"demo_config": cfg.to_dict(), "n_forget": len(request.forget),
                                    "n_retain": len(request.retain), "n_test": len(test),
                                    "n_heldout": len(heldout), "train_config": tcfg.to_dict()})
    kw = dict(retain=request.retain, train=pool)
    with timer.step("evaluate_references"):
        rkey = cache.key(step="references", original=orig_id, retrain=gold_id, batch_size=cfg.batch_size,
                         **eval_ids, **request_ids)
        refs = cache.get("references", rkey, out)
        if refs is not None:
            reused.append("evaluate_references")
        else:
            original, retrained = loaded("original", orig_path), loaded("retrain", gold_path)
            rcache: dict = {}
            rows = {"original": {**evaluate_unlearning(original, retrained, request.forget, test, heldout,
                                                       cfg.batch_size, rcache, original=original, **kw),
                                 "seconds": 0.0},
                    "retrain": evaluate_unlearning(retrained, retrained, request.forget, test, heldout,
                                                   cfg.batch_size, rcache, original=original, **kw,
                                                   seconds=retrain_seconds, retrain_seconds=retrain_seconds)}
            gap = memorization_gap(original, retrained, request.forget, heldout, test, cfg.batch_size, cache=rcache)
            atomic_write_json(out / "memorization.json", gap)
            refs = {"rows": rows, "memorization": gap, "model_hash_original": model_hash(original),
                    "outputs": {who: {k: v.tolist() for k, v in o.items()} for who, o in rcache.items()}}
            cache.put("references", rkey, refs, out, ["memorization.json"])
        for name, row in refs["rows"].items():
            report.add(name, cfg.seed, row)
        gap = refs["memorization"]
        rcache = {who: {k: np.asarray(v) for k, v in o.items()} for who, o in refs["outputs"].items()}
    before = refs["model_hash_original"]

    updates: dict[str, dict[str, float]] = {}
    grouping = None
    ucfg = cfg.unlearn_config()
    for name in cfg.methods:
        with timer.step(f"unlearn_{name}"):
            mkey = cache.key(step="unlearn", method=name, original=orig_id, retrain=gold_id, unlearn=ucfg.to_dict(),
                             batch_size=cfg.batch_size, **eval_ids, **request_ids)
            done = cache.get(f"unlearn_{name}", mkey, out)
            if done is not None:
                reused.append(f"unlearn_{name}")
            else:
                original = loaded("original", orig_path)
                model = copy.deepcopy(original)
                t = time.perf_counter()
                ures = get_method(name).run(model, request.forget, request.retain, ucfg, heldout=valid,
                                            original=original, progress=progress)
                secs = time.perf_counter() - t
                row = evaluate_unlearning(model, None, request.forget, test, heldout, cfg.batch_size, rcache,
                                          original=original, **kw, seconds=secs, retrain_seconds=retrain_seconds)
                record = audit_record(request.forget, before, model_hash(model), ucfg.to_dict(), name, secs)
                atomic_write_json(out / "audit" / f"{name}.json", record)
                done = {"row": {**row, "steps": ures.steps}, "updates": module_update_norms(original, model),
                        "grouping": ures.extra.get("grouping")}
                cache.put(f"unlearn_{name}", mkey, done, out, [f"audit/{name}.json"])
                del model
            report.add(name, cfg.seed, done["row"])
            updates[name] = done["updates"]
            if done["grouping"] and grouping is None:
                grouping = done["grouping"]
                atomic_write_json(out / "grouping.json", grouping)
    atomic_write_json(out / "updates.json", updates)

    with timer.step("report"):
        report.meta["timings"] = timer.times
        report.meta["reused_from_cache"] = reused
        report.meta["memorization"] = gap
        report.meta["circuit"] = summary
        report.save(out / "report")
        table = pd.DataFrame({m: {k: v[0] for k, v in cols.items()} for m, cols in report.summary().items()}).T
        figures: list[Path] = []
        try:
            from recircuit.viz.figures import make_figures

            figures = make_figures(out, out / "figures", static=cfg.static_figures)
        except Exception as err:  # figures must not lose the results they are drawn from
            logger.warning("figures could not be drawn (%s); the results in %s are complete", err, out)
    result = DemoResult(out, table, timer.times, summary, gap, figures, reused)
    atomic_write_json(out / "demo.json", result.to_dict())
    return result
