"""Streams of deletion requests: each method applies them one after another, and drifts.

Usage::

    from recircuit.pipeline import PipelineConfig
    from recircuit.streams import StreamConfig, run_stream
    res = run_stream(PipelineConfig.tiny(data_dir="../shared/data/ml-100k"),
                     StreamConfig(n_requests=5, users_per_request=1, methods=("cure", "ga", "sisa")), "runs/stream")
    res.table            # one row per (method, request): utility, forgetting, MIA, seconds
    res.audit["cure"]    # one audit record per request, each chained to the one before
    # runs/stream/stream.json (rows and audit chains), stream.html (utility and forgetting per request)

Real deletion requests arrive one at a time. Request ``i`` forgets the pool samples of
``users_per_request`` users drawn (seeded) from those not yet forgotten. Each method applies the
requests in turn to its *current* model: an approximate method (CURE, GA, NPO, ...) unlearns
request ``i`` from the model it left after request ``i - 1`` (with the samples not forgotten so
far as its retain set), an exact method (SISA, APA) retrains the shards that held request ``i``'s
samples in the ensemble it left. After every request the model is measured against **Retrain on
everything not forgotten so far** (one Retrain per request, cached), on the **cumulative** forget
set: forgetting that a later request undoes counts.

Each method's stream is written to ``<out>/stream/<method>.json`` after every request, with the
audit record of each: the forgotten samples, the model's sha256 before and after, the time, and
the sha256 of the previous record, so the records form a chain. A method whose file holds every
request under the same settings is skipped on a rerun; an unfinished one restarts (the models
between requests are not kept).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recircuit._io import atomic_write_json
from recircuit.data.splits import ForgetRetain
from recircuit.errors import InputError
from recircuit.pipeline import (
    Context,
    PipelineConfig,
    PipelineData,
    _fresh_context,
    _load,
    _uids,
    base_checkpoint,
    checkpoint_id,
    exact_ensemble,
    method_kwargs,
    original_checkpoint,
    original_split,
    prepare_data,
    retrain_checkpoint,
    validate,
)

#: Columns of the stream table, besides method and request.
STREAM_COLUMNS = ("test_auc", "forget_jsd", "test_jsd", "mia_auc", "mia_gap_to_retrain", "seconds")


@dataclass
class StreamConfig:
    """A stream of deletion requests.

    Attributes:
        n_requests: requests in the stream.
        users_per_request: users each request forgets (all their pool samples).
        seed: the seed of the user draw (and of every method's loop).
        methods: methods to run through the stream (each with the pipeline config's settings).
    """

    n_requests: int = 5
    users_per_request: int = 1
    seed: int = 0
    methods: tuple[str, ...] = ("cure", "ga", "npo")

    def __post_init__(self) -> None:
        if self.n_requests < 1:
            raise InputError(f"n_requests={self.n_requests}", field="stream.n_requests", fix="use at least 1")
        if self.users_per_request < 1:
            raise InputError(f"users_per_request={self.users_per_request}", field="stream.users_per_request",
                             fix="use at least 1")
        self.methods = tuple(self.methods)

    def to_dict(self) -> dict:
        """JSON-able form."""
        return dataclasses.asdict(self) | {"methods": list(self.methods)}


def stream_requests(data: PipelineData, stream: StreamConfig) -> list[ForgetRetain]:
    """The requests of a stream: request ``i`` forgets the samples of its users; its retain set is
    every pool sample not forgotten by requests ``0..i``.

    Raises:
        InputError: the pool has too few users for the stream (at least one must stay retained).
    """
    users = sorted({s.user_id for s in data.split.train})
    need = stream.n_requests * stream.users_per_request
    if need >= len(users):
        raise InputError(f"a stream of {stream.n_requests} requests of {stream.users_per_request} user(s) needs more "
                         f"than {need} users; the pool has {len(users)}", field="stream.n_requests",
                         fix="shorten the stream, forget fewer users per request, or enlarge the pool")
    order = [users[i] for i in np.random.default_rng(stream.seed).permutation(len(users))]
    out, gone = [], set()
    for i in range(stream.n_requests):
        mine = set(order[i * stream.users_per_request:(i + 1) * stream.users_per_request])
        gone |= mine
        out.append(ForgetRetain([s for s in data.split.train if s.user_id in mine],
                                [s for s in data.split.train if s.user_id not in gone], "user",
                                {"stream_seed": stream.seed, "request": i, "users": sorted(mine)}))
    return out


def cumulative(requests: Sequence[ForgetRetain], i: int) -> ForgetRetain:
    """Everything requests ``0..i`` forgot, as one request (what Retrain after request ``i`` trains without)."""
    forget = [s for r in requests[: i + 1] for s in r.forget]
    return ForgetRetain(forget, list(requests[i].retain), "user",
                        {**requests[i].params, "cumulative": True, "users": sorted({s.user_id for s in forget})})


@dataclass
class StreamResult:
    """A stream's rows (one per method and request, Retrain's included) and each method's audit chain."""

    rows: list[dict]
    audit: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        """``(method, request)`` x metrics."""
        return pd.DataFrame(self.rows).set_index(["method", "request"]).sort_index()


def chain(records: list[dict], record: dict) -> dict:
    """Append ``record`` to ``records`` with ``previous`` (the last record's hash) and its own ``record_hash``."""
    record = {**record, "previous": records[-1]["record_hash"] if records else None}
    record["record_hash"] = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()
    records.append(record)
    return record


def _references(config: PipelineConfig, data: PipelineData, requests: list[ForgetRetain], ctx: Context,
                out: Path) -> list[dict]:
    """Retrain after every request (cached checkpoints) and its outputs on the cumulative forget set."""
    from recircuit.evaluate.metrics import model_outputs
    from recircuit.train.checkpoint import read_meta

    path = out / "references.json"
    done = json.loads(path.read_text()) if path.is_file() else []
    refs: list[dict] = []
    for i in range(len(requests)):
        cum = cumulative(requests, i)
        ckpt = retrain_checkpoint(config, data, cum, ctx)
        cid = checkpoint_id(ckpt)
        ident = {"retrain_id": cid, "eval": config.eval.to_dict(), "forget": _uids(cum.forget),
                 **{k: v for k, v in data.ids().items() if k in ("test", "heldout")}}
        if i < len(done) and done[i].get("identity") == json.loads(json.dumps(ident)):
            refs.append(done[i])
            continue
        gold = _load(ckpt, config.device)
        outs = model_outputs(gold, cum.forget, data.test, data.heldout, config.eval.batch_size)
        secs = float((read_meta(ckpt).get("metrics") or {}).get("seconds") or 0.0) or None
        refs.append({"request": i, "identity": ident, "retrain_seconds": secs,
                     "outputs": {k: np.asarray(v).tolist() for k, v in outs.items()}})
        atomic_write_json(path, refs)
    return refs


def run_stream(config: PipelineConfig, stream: StreamConfig, out_dir: str | Path = "runs/stream",
               cache_root: str | Path | None = None, progress: bool = True) -> StreamResult:
    """Run every method of ``stream`` through its requests (see the module docstring).

    Raises:
        InputError: a bad config or stream (too few users, an unknown method).
    """
    from recircuit.evaluate import evaluate_unlearning, model_hash
    from recircuit.models import copy_model, load_model
    from recircuit.unlearn import get_method, method_config
    from recircuit.unlearn.registry import method_entry

    methods = {m: config.methods.get(m) or method_config(m) for m in stream.methods}
    config = dataclasses.replace(config, methods=methods)
    validate(config)
    ctx = _fresh_context(cache_root, False, progress)
    data = prepare_data(config)
    requests = stream_requests(data, stream)
    out = Path(out_dir) / "stream"
    out.mkdir(parents=True, exist_ok=True)
    refs = _references(config, data, requests, ctx, out)
    orig_path = original_checkpoint(config, data, ctx)
    settings = {"config": config.to_dict(), "stream": stream.to_dict(), "original": checkpoint_id(orig_path)}
    rows: list[dict] = []
    audits: dict[str, list[dict]] = {}
    for i, ref in enumerate(refs):
        rows.append({"method": "retrain", "request": i, "seconds": ref["retrain_seconds"], "forget_jsd": 0.0,
                     "test_jsd": 0.0, "n_forgotten": len(cumulative(requests, i).forget),
                     **_utility(ref["outputs"], data, cumulative(requests, i))})
    for name, mcfg in methods.items():
        path = out / f"{name.replace(':', '-')}.json"
        key = {"method": name, "settings": settings}
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("key") == json.loads(json.dumps(key, default=str)) and len(old["rows"]) == len(requests):
                rows += old["rows"]
                audits[name] = old["audit"]
                continue
        exact = getattr(method_entry(name)[0], "exact", False)
        mine_rows: list[dict] = []
        records: list[dict] = []
        if exact:
            base_path = base_checkpoint(config, data, ctx)
            base = _load(base_path, config.device) if base_path else load_model(config.model, device=config.device)
            method = exact_ensemble(config, name, data, base,
                                    checkpoint_id(base_path) if base_path else f"model:{config.model}", ctx)
            method.ensemble = method.ensemble.copy()
            if getattr(method, "valid_errors", None) is not None:
                method.valid_errors = np.array(method.valid_errors, copy=True)
        else:
            model = copy_model(_load(orig_path, config.device))
            method = get_method(name, mcfg, **method_kwargs(config, mcfg))
        for i, req in enumerate(tqdm(requests, desc=f"stream {name}", unit="request", disable=not progress)):
            if exact:
                before = method.ensemble.state_hash()
                res = method.run(base, req.forget, req.retain, progress=False)
                predictor, after = res.model, method.ensemble.state_hash()
            else:
                before = model_hash(model)
                reference = copy_model(model)
                loop = dataclasses.replace(config.loop, seed=stream.seed + i)
                res = method.run(model, req.forget, req.retain, loop, reference=reference, heldout=data.stop,
                                 progress=False)
                predictor, after = model, model_hash(model)
                del reference
            cum = cumulative(requests, i)
            gold = {k: np.asarray(v) for k, v in refs[i]["outputs"].items()}
            row = evaluate_unlearning(predictor, None, cum.forget, data.test, data.heldout, config.eval.batch_size,
                                      {"retrained": gold}, retain=req.retain, train=original_split(data).train,
                                      seconds=res.seconds, retrain_seconds=refs[i]["retrain_seconds"])
            row = {"method": name, "request": i, "status": res.status, "n_forgotten": len(cum.forget), **row}
            mine_rows.append(row)
            chain(records, {"request": i, "method": name, "status": res.status, "users": req.params["users"],
                            "forgotten": sorted(s.uid for s in req.forget), "before": before, "after": after,
                            "seconds": res.seconds})
            atomic_write_json(path, {"key": key, "rows": mine_rows, "audit": records}, indent=1)
        rows += mine_rows
        audits[name] = records
    result = StreamResult(rows, audits)
    atomic_write_json(Path(out_dir) / "stream.json", {"stream": stream.to_dict(), "rows": rows, "audit": audits})
    from recircuit.viz.export import save_figure
    from recircuit.viz.streams import stream_figure

    save_figure(stream_figure(result.table.reset_index()), Path(out_dir) / "stream.html")
    return result


def _utility(outputs: dict, data: PipelineData, cum: ForgetRetain) -> dict:
    """Retrain's own row: test AUC and the loss attack's AUC on the cumulative forget set."""
    from sklearn.metrics import roc_auc_score

    from recircuit.metrics import classification_metrics

    p = np.asarray(outputs["p_test"])
    lf, lh = np.asarray(outputs["loss_forget"]), np.asarray(outputs["loss_heldout"])
    mia = float(roc_auc_score(np.r_[np.ones(len(lf)), np.zeros(len(lh))], -np.r_[lf, lh]))
    return {"test_auc": classification_metrics([s.label for s in data.test], p)["auc"], "mia_auc": mia,
            "mia_gap_to_retrain": 0.0, "status": "ok"}
