"""Cost curves (issue 16): wall time and peak memory of Retrain, CURE, GA and APA against pool size, and of EAP against prompt count.

    python benchmarks/cost_curves.py run --model smollm2-135m-instruct --pools 96 256 512 --prompts 8 16 32 64
    python benchmarks/cost_curves.py report                  # table and figure from the finished units
    python benchmarks/cost_curves.py run --model tiny --data-dir ../shared/data/ml-100k --pools 16 32 --prompts 2 4 \\
        --out /tmp/cost   # smoke run: 13 units, about 2.5 min on 2 cores (each process spends ~8 s starting)

Each **unit** of work runs in its own fresh Python process, one at a time, so its peak memory
(``ru_maxrss`` of that process, read at its end) is its own and no unit warms another's caches:

- ``train_base`` (the two-stage protocol only): the base recommender of a pool (its users are
  the ones outside the pool, so each pool has its own);
- ``train_original``: Original, fine-tuned on the pool; a prerequisite of CURE, GA and EAP;
- ``retrain``: Retrain for the request (``--rate``, request seed ``--seed``): the same training
  on the retain users;
- ``cure``, ``ga``: the method on that request from Original's weights (for CURE the time
  includes its importance step, reported apart as ``importance_seconds``);
- ``apa_fit``: APA's shard adapters fitted on Original's training set (the exact method's
  Original); ``apa``: the deletion, i.e. retraining the shards that held the forget samples;
- ``eap``: recircuit's EAP edge attribution (``method="eap"``) of Original at ``--eap-pool``
  (``0``: the base model itself) on the first N test prompts and their corruptions (the
  pipeline's circuit corruption), after an untimed one-prompt warm-up.

The SmolLM2 pools follow the two-stage protocol (:meth:`recircuit.pipeline.PipelineConfig.protocol`:
a base recommender on users outside the pool, Original and Retrain continuing it, its CURE, GA
and the APA of ``benchmarks/exact_unlearning.py``) but keep 8 training windows per user
(``--per-user``) where the protocol keeps 4: TALLRec's training split has 80 users, and 512
samples at 4 each would need 128. At 8, the pools of 96, 256 and 512 samples hold 12, 32 and 64
users (1, 3 and 6 forgotten at 10%) and leave at least 16 users for the base recommender.

Every step is the pipeline's own (:mod:`recircuit.pipeline`: ``base_checkpoint``,
``original_checkpoint``, ``retrain_checkpoint``, ``exact_ensemble``, the method registry), over
the pipeline's cache (``$RECIRCUIT_CACHE``, or ``--cache``): each unit's prerequisites are
trained once by their own unit and reused from the cache. The ``seconds`` of a unit are the
work's own wall time, not the model loading around it: a training's own time (its checkpoint's
``metrics.seconds``, what the pipeline reports as Retrain's time), the method's ``run`` for CURE
and GA (as ``run_method`` times it), APA's deletion and fit as APA itself times them, the
``attribute`` call for EAP. A checkpoint that was already in the cache before its unit ran is
not trained again: its unit says ``trained_here: false`` (its seconds are still the training's
own, from the checkpoint, but its peak memory is only that of loading it); use a fresh
``--cache`` for memory figures of every training. Methods are not evaluated (no references are
needed), so no unit's memory includes an evaluation.

Each finished unit is written as ``<out>/<kind>_pool<N>.json`` (``<out>/eap_prompts<N>.json``)
with its seconds, ``peak_rss_mb``, the config it ran, a key over that config, the torch thread
count and device, and the code it ran (git commit, dirty flag, sha256 of recircuit's source). A
rerun skips every unit whose file holds the same key, so an interrupted run goes on where it
stopped; a unit that fails is reported (its last error line) and the units that need it are
skipped; the exit status is then 1. Bad input (an unknown kind, a pool or prompt count that is
not positive, a rate outside (0, 1), a pool too small for the rate or larger than the split can
give) is one line and status 2.

``report`` (also run at the end of ``run``) writes ``<out>/cost_curves.json`` (the table),
``<out>/cost_curves.html`` and, when static export works, ``<out>/cost_curves.png`` (time and
peak RSS against pool size and against prompt count), and prints the tables in Markdown with
each method's time as a ratio to Retrain's at the same pool.

Timings depend on the torch thread count (``--threads``, default torch's, which follows
``OMP_NUM_THREADS``); it is part of every unit's key, so units measured with another count are
run again rather than mixed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Every unit kind, in the order a pool's units run (prerequisites first).
POOL_KINDS = ("train_base", "train_original", "retrain", "cure", "ga", "apa_fit", "apa")
KINDS = (*POOL_KINDS, "eap")
#: The four curves against pool size (what the issue asks for); the prerequisites are drawn dotted.
CURVES = ("retrain", "cure", "ga", "apa")
PREREQUISITES = ("train_base", "train_original", "apa_fit")
#: What each kind needs to have run before it (on the same pool).
NEEDS = {"train_original": ("train_base",), "retrain": ("train_base",), "cure": ("train_base", "train_original"),
         "ga": ("train_base", "train_original"), "apa_fit": ("train_base",), "apa": ("train_base", "apa_fit"),
         "eap": ("train_base", "train_original")}
#: Training windows per user in the SmolLM2 pools (see :func:`pool_config`).
PER_USER = 8
REPO = Path(__file__).resolve().parents[1]
PROG = "cost_curves.py"


# ---------------------------------------------------------------------------------------------
# configs and the plan


def pool_config(model: str, pool: int, data_dir: str | None = None, device: str | None = None,
                per_user: int | None = None):
    """The pipeline config of one pool size.

    SmolLM2 (any model but ``tiny``): the two-stage protocol (:meth:`PipelineConfig.protocol`,
    pool of ``pool`` samples) with its CURE (the study's importance definition), GA and the APA
    of ``benchmarks/exact_unlearning.py``, but ``per_user`` windows per user (default
    :data:`PER_USER`, where the protocol keeps 4): TALLRec's training split holds 80 users, so a
    pool of 512 at 4 windows each would take all of them (320 samples) and leave no user for the
    base recommender. ``tiny``: the tiny random model at :meth:`PipelineConfig.tiny`'s sizes with
    ``per_user`` (default 2) windows per user (so a 10% request of a 16-sample pool has a user to
    forget), no base recommender, and the same methods at tiny settings.
    """
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from exact_unlearning import exact_methods  # the sibling benchmark's APA

    from recircuit.pipeline import PipelineConfig

    tiny = model == "tiny"
    apa = exact_methods(4, tiny)["apa"]
    if tiny:
        cfg = PipelineConfig.tiny(data_dir=data_dir)
        cfg = dataclasses.replace(cfg, device=device or cfg.device,
                                  data=dataclasses.replace(cfg.data, n_train=pool, per_user=per_user or 2))
        return dataclasses.replace(cfg, methods={"cure": cfg.methods["cure"], "ga": cfg.methods["ga"], "apa": apa})
    cfg = PipelineConfig.protocol(model, n_pool=pool, data_dir=data_dir, device=device)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, per_user=per_user or PER_USER))
    return dataclasses.replace(cfg, methods={"cure": cfg.methods["cure"], "ga": cfg.methods["ga"], "apa": apa})


def _key_view(spec: dict) -> dict:
    """What a unit's result depends on: its spec, with only its own method's settings and the
    circuit settings only for EAP (the cache location is left out)."""
    d = {k: v for k, v in spec.items() if k != "cache"}
    cfg = dict(d["config"])
    method = {"apa_fit": "apa"}.get(d["kind"], d["kind"])
    cfg["methods"] = {m: s for m, s in cfg.get("methods", {}).items() if m == method}
    if d["kind"] != "eap":
        cfg.pop("circuit", None)
    d["config"] = cfg
    return d


def unit_key(spec: dict) -> str:
    """The key a unit file must hold to count as done (see :func:`_key_view`)."""
    from recircuit.cache import cache_key

    return cache_key(code=None, unit=_key_view(spec))


def unit_name(spec: dict) -> str:
    """``<kind>_pool<N>`` or ``eap_prompts<N>``."""
    if spec["kind"] == "eap":
        return f"eap_prompts{spec['prompts']}"
    return f"{spec['kind']}_pool{spec['pool']}"


def _check_args(args: argparse.Namespace) -> None:
    from recircuit.errors import InputError

    for k in args.kinds:
        if k not in KINDS:
            raise InputError(f"unknown kind {k!r}", field="--kinds", fix=f"choose from {', '.join(KINDS)}")
    for flag, values in (("--pools", args.pools), ("--prompts", args.prompts)):
        for v in values:
            if v <= 0:
                raise InputError(f"{v} is not a positive count", field=flag, fix="give sizes of at least 1")
    if args.eap_pool is not None and args.eap_pool < 0:
        raise InputError(f"{args.eap_pool} is negative", field="--eap-pool",
                         fix="give a pool size, or 0 for the base model")
    if not 0 < args.rate < 1:
        raise InputError(f"rate {args.rate} is outside (0, 1)", field="--rate", fix="e.g. --rate 0.1")
    if args.per_user is not None and args.per_user < 1:
        raise InputError(f"{args.per_user} windows per user", field="--per-user", fix="use at least 1")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"{args.threads} threads", field="--threads", fix="use at least 1")


def plan(args: argparse.Namespace) -> list[dict]:
    """Every unit the command line asks for, with its prerequisites, in the order they must run."""
    _check_args(args)
    import torch

    threads = args.threads or torch.get_num_threads()
    kinds = set(args.kinds)
    eap_pool = args.eap_pool if args.eap_pool is not None else (min(args.pools) if args.pools else 0)
    if "eap" not in kinds or not args.prompts:
        eap_pool = 0
    wanted: dict[int, set[str]] = {p: set(kinds) - {"eap"} for p in args.pools}
    if "eap" in kinds and args.prompts and eap_pool:
        wanted.setdefault(eap_pool, set()).add("eap")
    units = []
    for pool in sorted(wanted):
        cfg = pool_config(args.model, pool, args.data_dir, args.device, args.per_user)
        need = set(wanted[pool])
        for k in list(need):
            need.update(NEEDS.get(k, ()))
        if cfg.base is None:
            need.discard("train_base")
        for kind in POOL_KINDS:
            if kind in need:
                units.append({"kind": kind, "pool": pool, "rate": args.rate, "seed": args.seed, "threads": threads,
                              "config": cfg.to_dict(), "cache": args.cache})
    if "eap" in kinds and args.prompts:
        cfg = pool_config(args.model, eap_pool or min(args.pools or [64]), args.data_dir, args.device,
                          args.per_user)
        for n in sorted(set(args.prompts)):
            units.append({"kind": "eap", "pool": eap_pool, "prompts": n, "threads": threads, "config": cfg.to_dict(),
                          "cache": args.cache})
    return units


# ---------------------------------------------------------------------------------------------
# one unit, in its own process


def _rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _written_since(manifest: Path, t0: float) -> bool:
    """Whether the cache entry of ``manifest`` was written by this unit (it started at ``t0``)."""
    return manifest.is_file() and manifest.stat().st_mtime >= t0 - 1.0


def _checkpoint_unit(path: Path, t0: float) -> dict:
    from recircuit.train.checkpoint import read_meta

    metrics = read_meta(path).get("metrics") or {}
    return {"seconds": float(metrics.get("seconds") or 0.0), "trained_here": _written_since(
        path.parent.parent / "manifest.json", t0), "train_samples": metrics.get("train_samples"),
        "checkpoint": str(path)}


def _models_root(ctx) -> Path:
    from recircuit.assets import cache_dir

    return Path(ctx.cache_root) / "models" if ctx.cache_root is not None else cache_dir() / "models"


def run_unit(spec: dict) -> dict:
    """Do one unit's work in this process and return what its file records (no file written)."""
    import torch

    from recircuit.pipeline import (
        Context,
        PipelineConfig,
        _load,
        base_checkpoint,
        checkpoint_id,
        exact_ensemble,
        make_request,
        method_kwargs,
        original_checkpoint,
        prepare_data,
        retrain_checkpoint,
    )

    torch.set_num_threads(int(spec["threads"]))
    kind, pool = spec["kind"], int(spec["pool"])
    cfg = PipelineConfig.from_dict(spec["config"])
    ctx = Context(cache_root=spec.get("cache"), progress=False)
    t0 = time.time()
    data = prepare_data(cfg) if pool else None
    if data is not None and len(data.split.train) != pool:
        from recircuit.errors import InputError

        raise InputError(f"the training split gives only {len(data.split.train)} samples at "
                         f"{cfg.data.per_user} per user, not a pool of {pool}", field="--pools",
                         fix="use smaller pools or a larger --per-user")
    request = make_request(data, spec["rate"], spec["seed"], "--rate") if kind in ("retrain", *CURVES) else None
    out: dict[str, Any] = {}
    if request is not None:
        out.update(n_forget=len(request.forget), n_retain=len(request.retain))

    def base_model():
        from recircuit.models import load_model

        path = base_checkpoint(cfg, data, ctx) if data is not None else None
        if path is not None:
            return _load(path, cfg.device), checkpoint_id(path)
        return load_model(cfg.model, device=cfg.device), f"model:{cfg.model}"

    ready = _rss_mb()
    if kind == "train_base":
        out.update(_checkpoint_unit(base_checkpoint(cfg, data, ctx), t0))
    elif kind == "train_original":
        out.update(_checkpoint_unit(original_checkpoint(cfg, data, ctx), t0))
    elif kind == "retrain":
        out.update(_checkpoint_unit(retrain_checkpoint(cfg, data, request, ctx), t0))
    elif kind in ("cure", "ga"):
        from recircuit.models import copy_model
        from recircuit.unlearn import get_method

        original = _load(original_checkpoint(cfg, data, ctx), cfg.device)
        model = copy_model(original)
        mcfg = cfg.methods[kind]
        method = get_method(kind, mcfg, **method_kwargs(cfg, mcfg))
        importance: list[float] = []
        if hasattr(method, "resolve_grouping"):          # CURE's importance step, timed apart
            inner = method.resolve_grouping

            def timed(*a, **k):
                t = time.perf_counter()
                try:
                    return inner(*a, **k)
                finally:
                    importance.append(time.perf_counter() - t)

            method.resolve_grouping = timed
        loop = dataclasses.replace(cfg.loop, seed=spec["seed"])
        t = time.perf_counter()
        res = method.run(model, request.forget, request.retain, loop, reference=original, heldout=data.stop,
                         progress=False)
        out.update(seconds=time.perf_counter() - t, run_seconds=res.seconds, steps=res.steps, status=str(res.status),
                   stopped=str(res.stopped))
        if importance:
            out["importance_seconds"] = sum(importance)
    elif kind in ("apa_fit", "apa"):
        base, base_id = base_model()
        before = time.time()
        method = exact_ensemble(cfg, "apa", data, base, base_id, ctx)
        fitted = any(_written_since(m, before) for m in _models_root(ctx).glob("ensemble-*/manifest.json"))
        if kind == "apa_fit":
            out.update(seconds=float(method.fit_seconds), trained_here=fitted,
                       shard_sizes=[len(s) for s in method.ensemble.shards])
        else:
            t = time.perf_counter()
            res = method.run(base, request.forget, request.retain, progress=False)
            audit = res.extra["audit"]
            out.update(seconds=float(res.seconds), wall_seconds=time.perf_counter() - t,
                       fit_seconds=float(method.fit_seconds), fit_here=fitted,
                       runner_seconds=float(audit.get("runner_seconds", 0.0)),
                       shards_retrained=len(res.extra["affected"]), k=method.ensemble.k, status=str(res.status),
                       stopped=str(res.stopped))
    elif kind == "eap":
        from recircuit.circuits import attribute
        from recircuit.circuits.corruptions import corruption_for
        from recircuit.errors import InputError

        if pool:
            model = _load(original_checkpoint(cfg, data, ctx), cfg.device)
        else:
            model, _ = base_model()
            for p in model.parameters():
                p.requires_grad_(False)
        n = int(spec["prompts"])
        if data is not None and n <= len(data.test):
            prompts = data.test[:n]
        else:
            from recircuit.pipeline import data_source

            prompts = data_source(cfg).split("tallrec").test[:n]
        if len(prompts) < n:
            raise InputError(f"the test split has only {len(prompts)} prompts", field="--prompts",
                             fix=f"ask for at most {len(prompts)}")
        c = cfg.circuit
        corrupted = corruption_for(c.corruption, model.tokenizer, cfg.data.data_dir, source=cfg.data.source,
                                   args=c.corruption_args)(list(prompts))
        acfg = dataclasses.replace(c.attribution, method="eap", progress=False)
        attribute(model, prompts[:1], corrupted[:1], acfg)          # warm-up (lazy initialisation), untimed
        t = time.perf_counter()
        res = attribute(model, prompts, corrupted, acfg)
        out.update(seconds=time.perf_counter() - t, edges=int(res.graph.n_edges), batch_size=acfg.batch_size,
                   corruption=c.corruption, model_source="original" if pool else "base model")
    else:
        from recircuit.errors import InputError

        raise InputError(f"unknown kind {kind!r}", field="kind", fix=f"choose from {', '.join(KINDS)}")
    out.update(peak_rss_mb=_rss_mb(), rss_before_work_mb=ready, unit_seconds=time.time() - t0)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out["device"] = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out["torch_threads"] = torch.get_num_threads()
    return out


def code_note() -> dict:
    """The code a unit ran: git commit (and whether tracked files differ from it), recircuit's source sha256."""
    from recircuit.cache import code_fingerprint

    note: dict[str, Any] = {"recircuit_sha256": code_fingerprint()}
    try:
        note["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                        check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        note["dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        note["commit"] = None
    return note


def unit_main(spec_json: str, write: str) -> int:
    """The child's entry point: run the unit, write its file atomically."""
    import logging

    from recircuit._io import atomic_write_json
    from recircuit.errors import InputError, RunFailed, report_error

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        spec = json.loads(spec_json)
        if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
            kind = spec.get("kind") if isinstance(spec, dict) else None
            raise InputError(f"unknown kind {kind!r}", field="kind", fix=f"choose from {', '.join(KINDS)}")
        if int(spec.get("pool", 0)) < 0 or (spec["kind"] != "eap" and int(spec["pool"]) <= 0):
            raise InputError(f"pool {spec.get('pool')} is not a positive count", field="pool",
                             fix="give a pool of at least 1 sample")
        res = run_unit(spec)
    except json.JSONDecodeError as err:
        return report_error(PROG, InputError(f"the unit spec is not JSON: {err}", field="--spec"))
    except (InputError, RunFailed) as err:
        return report_error(PROG, err)
    record = {"unit": unit_name(spec), "kind": spec["kind"], "pool": spec["pool"],
              **({"prompts": spec["prompts"]} if spec["kind"] == "eap" else {"rate": spec["rate"], "seed": spec["seed"]}),
              **res, "key": unit_key(spec), "spec": spec, "code": code_note(),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_json(write, record)
    return 0


# ---------------------------------------------------------------------------------------------
# the parent


def _done(path: Path, key: str) -> bool:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(d, dict) and d.get("key") == key and isinstance(d.get("seconds"), int | float) \
        and d["seconds"] > 0 and isinstance(d.get("peak_rss_mb"), int | float)


def _child(spec: dict, path: Path) -> tuple[int, str]:
    """Run one unit in a fresh process; its exit status and the last line it wrote on stderr."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]),
               TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "unit", "--spec", json.dumps(spec),
                           "--write", str(path.resolve())], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env=env)
    lines = [x for x in (proc.stderr or "").splitlines() if x.strip()]
    return proc.returncode, lines[-1] if lines else ""


def run_all(args: argparse.Namespace) -> int:
    """Run every missing unit in turn; 0 when all finished, 1 when one failed, 2 on bad input."""
    from tqdm.auto import tqdm

    units = plan(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keyed = [(u, out / f"{unit_name(u)}.json", unit_key(u)) for u in units]
    todo = [(u, p, k) for u, p, k in keyed if not _done(p, k)]
    failed: list[str] = []
    blocked: set[tuple[int, str]] = set()        # (pool, kind) that failed or were skipped
    bar = tqdm(total=len(keyed), initial=len(keyed) - len(todo), desc="cost curves", unit="unit")
    for spec, path, _key in todo:
        name = unit_name(spec)
        bar.set_postfix_str(name)
        missing = [k for k in NEEDS.get(spec["kind"], ()) if (spec["pool"], k) in blocked]
        if missing:
            failed.append(f"{name}: skipped ({missing[0]}_pool{spec['pool']} did not finish)")
            blocked.add((spec["pool"], spec["kind"]))
            bar.update()
            continue
        rc, last = _child(spec, path)
        if rc == 2:
            bar.close()
            print(last if last.startswith(PROG) else f"{PROG}: error: {name}: {last}", file=sys.stderr)
            return 2
        if rc != 0 or not path.is_file():
            failed.append(f"{name}: exit status {rc}: {last}")
            blocked.add((spec["pool"], spec["kind"]))
        bar.update()
    bar.close()
    print(f"{len(todo) - len(failed)} units run now, {len(keyed) - len(todo)} reused from {out}")
    if keyed:
        print(report(out, png=not args.no_png))
    if failed:
        print("\nUnits that did not finish:\n" + "\n".join(failed))
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# report


def _read_units(out: Path) -> list[dict]:
    units = []
    for path in sorted(out.glob("*.json")):
        if path.name == "cost_curves.json":
            continue
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(d, dict) and d.get("kind") in KINDS and isinstance(d.get("seconds"), int | float):
            units.append(d)
    return units


def _markdown(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return "" if v is None else str(v).lower()
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    head = "| " + " | ".join(title for _, title in columns) + " |"
    sep = "|" + "|".join("---:" if k not in ("method", "model") else "---" for k, _ in columns) + "|"
    body = ["| " + " | ".join(cell(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def report(out: Path, png: bool = True) -> str:
    """Write ``cost_curves.json`` and the figure from the unit files in ``out``; return the Markdown tables."""
    from recircuit._io import atomic_write_json

    units = _read_units(out)
    order = {k: i for i, k in enumerate(KINDS)}
    retrain = {u["pool"]: u["seconds"] for u in units if u["kind"] == "retrain"}
    rows = []
    for u in sorted((u for u in units if u["kind"] != "eap"), key=lambda u: (u["pool"], order[u["kind"]])):
        rows.append({"pool": u["pool"], "method": u["kind"], "seconds": u["seconds"], "peak_rss_mb": u["peak_rss_mb"],
                     "rss_before_work_mb": u.get("rss_before_work_mb"),
                     "ratio_to_retrain": u["seconds"] / retrain[u["pool"]] if retrain.get(u["pool"]) else None,
                     "trained_here": u.get("trained_here"), "n_forget": u.get("n_forget"),
                     "importance_seconds": u.get("importance_seconds"), "fit_seconds": u.get("fit_seconds"),
                     "peak_cuda_mb": u.get("peak_cuda_mb"), "device": u.get("device"),
                     "threads": u.get("torch_threads"), "model": u["spec"]["config"]["model"]})
    eap = [{"prompts": u["prompts"], "seconds": u["seconds"], "seconds_per_prompt": u["seconds"] / u["prompts"],
            "peak_rss_mb": u["peak_rss_mb"], "rss_before_work_mb": u.get("rss_before_work_mb"), "edges": u.get("edges"), "on": u.get("model_source"),
            "pool": u["pool"], "peak_cuda_mb": u.get("peak_cuda_mb"), "device": u.get("device"),
            "threads": u.get("torch_threads"), "model": u["spec"]["config"]["model"]}
           for u in sorted((u for u in units if u["kind"] == "eap"), key=lambda u: u["prompts"])]
    rows = [{k: v for k, v in r.items() if v is not None} for r in rows]
    eap = [{k: v for k, v in r.items() if v is not None} for r in eap]
    commits = sorted({str((u.get("code") or {}).get("commit")) for u in units})
    atomic_write_json(out / "cost_curves.json", {"rows": rows, "eap": eap, "units": len(units), "commits": commits})
    note = _figure(rows, eap, out, png)
    text = ["Wall time and peak memory against pool size (ratio: seconds / Retrain's at the same pool; "
            "train_base, train_original and apa_fit are prerequisites):", "",
            _markdown(rows, [("pool", "pool"), ("method", "method"), ("seconds", "seconds"),
                             ("peak_rss_mb", "peak RSS MB"), ("ratio_to_retrain", "x Retrain")])]
    if eap:
        text += ["", "EAP attribution against prompt count:", "",
                 _markdown(eap, [("prompts", "prompts"), ("seconds", "seconds"), ("seconds_per_prompt", "s / prompt"),
                                 ("peak_rss_mb", "peak RSS MB")])]
    if any(r.get("trained_here") is False for r in rows):
        text += ["", "trained_here false: the checkpoint came from the cache (its peak RSS is only loading it)."]
    if note:
        text += ["", note]
    return "\n".join(text)


def _figure(rows: list[dict], eap: list[dict], out: Path, png: bool) -> str:
    """Time and peak RSS against pool size (left) and prompt count (right); returns a note when PNG was not written."""
    from plotly.subplots import make_subplots

    from recircuit.viz.export import StaticExportUnavailable, save_figure
    from recircuit.viz.style import PALETTE, apply_paper_style

    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.12, vertical_spacing=0.16,
                        subplot_titles=("wall time vs pool size", "EAP time vs prompts",
                                        "peak RSS vs pool size", "EAP peak RSS vs prompts"))
    colours = {**dict(zip(CURVES, PALETTE)), "train_base": PALETTE[4], "train_original": PALETTE[5]}
    colours["apa_fit"] = colours["apa"]                  # the fit dotted in APA's colour
    for kind in (*CURVES, *PREREQUISITES):
        mine = [r for r in rows if r["method"] == kind]
        if not mine:
            continue
        line = {"color": colours[kind], "dash": "dot" if kind in PREREQUISITES else "solid"}
        for row, key in ((1, "seconds"), (2, "peak_rss_mb")):
            fig.add_scatter(x=[r["pool"] for r in mine], y=[r[key] for r in mine], mode="lines+markers", name=kind,
                            line=line, legendgroup=kind, showlegend=row == 1, row=row, col=1)
    if eap:
        for row, key in ((1, "seconds"), (2, "peak_rss_mb")):
            fig.add_scatter(x=[r["prompts"] for r in eap], y=[r[key] for r in eap], mode="lines+markers", name="eap",
                            line={"color": PALETTE[6]}, legendgroup="eap", showlegend=row == 1, row=row, col=2)
    fig.update_xaxes(title_text="training samples in the pool", row=2, col=1)
    fig.update_xaxes(title_text="test prompts", row=2, col=2)
    fig.update_yaxes(title_text="seconds", row=1, col=1)
    fig.update_yaxes(title_text="peak RSS (MB)", row=2, col=1)
    apply_paper_style(fig, "double", height_in=5.0)
    save_figure(fig, out / "cost_curves.html")
    if not png:
        return ""
    try:
        save_figure(fig, out / "cost_curves.png")
    except StaticExportUnavailable as err:
        return f"no PNG written: {err}"
    return ""


# ---------------------------------------------------------------------------------------------
# command line


class _Parser(argparse.ArgumentParser):
    """argparse, with an error as one line (``cost_curves.py: error: ...``) and status 2."""

    def error(self, message: str):
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    ap = _Parser(prog=PROG, description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run every missing unit, then report")
    run.add_argument("--model", default="smollm2-135m-instruct", help="a model name, or 'tiny' (smoke run)")
    run.add_argument("--data-dir", default=None)
    run.add_argument("--device", default=None)
    run.add_argument("--pools", type=int, nargs="*", default=[96, 256, 512], help="training pool sizes")
    run.add_argument("--prompts", type=int, nargs="*", default=[8, 16, 32, 64], help="EAP prompt counts")
    run.add_argument("--eap-pool", type=int, default=None,
                     help="EAP on Original of this pool (default: the smallest of --pools; 0: the base model)")
    run.add_argument("--kinds", nargs="+", default=[*CURVES, "eap"],
                     help=f"units to run (their prerequisites are added): {', '.join(KINDS)}")
    run.add_argument("--per-user", type=int, default=None,
                     help=f"training windows per user (default: {PER_USER}, tiny 2; see pool_config)")
    run.add_argument("--rate", type=float, default=0.1, help="deletion rate (share of the pool's users)")
    run.add_argument("--seed", type=int, default=0, help="seed of the request (and of the unlearning loop)")
    run.add_argument("--threads", type=int, default=None, help="torch threads per unit (default: torch's)")
    run.add_argument("--cache", default=None, help="cache root (default: $RECIRCUIT_CACHE)")
    run.add_argument("--no-png", action="store_true", help="write the figure as HTML only")
    run.add_argument("--out", default=None,
                     help="unit files (default: benchmarks/results/speed/cost_curves for SmolLM2, "
                          "runs/cost_curves_<model> otherwise)")
    rep = sub.add_parser("report", help="tables and figure from the finished units")
    rep.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "speed" / "cost_curves"))
    rep.add_argument("--no-png", action="store_true")
    unit = sub.add_parser("unit", help="one unit, in this process (what `run` starts for each)")
    unit.add_argument("--spec", required=True, help="the unit as JSON")
    unit.add_argument("--write", required=True, help="where its file goes")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the command asked for (see the module docstring); exit 2 on bad input."""
    from recircuit.errors import InputError, RunFailed, report_error

    args = parser().parse_args(argv)
    if args.command == "unit":
        return unit_main(args.spec, args.write)
    try:
        if args.command == "run":
            if args.out is None:
                args.out = str(REPO / "benchmarks" / "results" / "speed" / "cost_curves") \
                    if args.model == "smollm2-135m-instruct" else f"runs/cost_curves_{Path(args.model).name}"
            return run_all(args)
        out = Path(args.out)
        if not out.is_dir():
            raise InputError("no such folder", path=out, fix="run `cost_curves.py run` first, or pass --out")
        print(report(out, png=not args.no_png))
    except (InputError, RunFailed) as err:
        return report_error(PROG, err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
