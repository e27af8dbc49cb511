"""Unlearning reports (methods x metrics, mean +- std over seeds) and audit records.

Usage::

    from recircuit.evaluate.report import UnlearningReport, audit_record
    rep = UnlearningReport(meta={"model": "smollm2-135m-instruct", "rate": 0.1})
    rep.add("cure", seed=0, metrics={"forget_jsd": 0.01, "test_auc": 0.71, "seconds": 30})
    rep.meta["notes"] = ["faithfulness: the label_flip corruption moves the metric by only ..."]
    rep.save("runs/report")            # report.json + report.md (atomic; the notes follow the table)
    audit = audit_record(forget, model_before_hash, model_after_hash, config, "cure", seconds, status=res.status)
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recircuit._io import atomic_write_json, atomic_write_text
from recircuit.data.prompts import Sample


def sample_hash(s: Sample) -> str:
    """sha256 of one sample's uid and content (instruction, input, output)."""
    return hashlib.sha256(f"{s.uid}\x1f{s.instruction}\x1f{s.input}\x1f{s.output}".encode()).hexdigest()


def samples_hash(samples: Sequence[Sample]) -> str:
    """sha256 over the samples' uids and content (instruction, input, output), in order."""
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.uid}\x1f{s.instruction}\x1f{s.input}\x1f{s.output}\x1e".encode())
    return h.hexdigest()


def model_hash(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        x = t.detach().cpu().contiguous()
        h.update(f"{x.dtype}{tuple(x.shape)}".encode())
        h.update(x.view(torch.uint8).numpy().tobytes() if x.numel() else b"")
    return h.hexdigest()


AUDIT_FORMAT = "recircuit.audit/1"


def audit_record(forget: Sequence[Sample], before: str, after: str, config: dict, method: str,
                 seconds: float, extra: dict | None = None, status: str = "ok") -> dict:
    """What was forgotten (ids + content hashes), model hashes before/after, config, time and status.

    Each forgotten sample is listed by uid with the sha256 of its content (instruction, input,
    output), and the whole list is hashed once more (``content_sha256``), so a later reader can
    check the record against the data without the record holding the data itself. ``status`` is
    the run's :attr:`~recircuit.unlearn.UnlearnResult.status` (``ok``, ``early_stop``,
    ``restored``, ``destroyed``): only ``ok`` and ``early_stop`` mean the data was forgotten.
    """
    if not forget:
        raise ValueError("An audit record needs the forgotten samples; the forget set is empty.")
    return {"format": AUDIT_FORMAT, "method": method, "status": status,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "forgotten": {"n": len(forget), "uids": [s.uid for s in forget],
                          "sample_sha256": [sample_hash(s) for s in forget],
                          "users": sorted({s.user_id for s in forget if s.user_id is not None}),
                          "content_sha256": samples_hash(forget)},
            "model_sha256": {"before": before, "after": after}, "config": config, "seconds": float(seconds),
            **({"extra": extra} if extra else {})}


@dataclass
class UnlearningReport:
    """Rows of (method, seed, metrics); aggregated as mean +- std per method."""

    rows: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def add(self, method: str, seed: int, metrics: dict) -> None:
        """Record one run."""
        self.rows.append({"method": method, "seed": seed, **metrics})

    def summary(self) -> dict[str, dict[str, tuple[float, float, int]]]:
        """``{method: {metric: (mean, std, n)}}`` over seeds (numeric metrics only; NaN values
        are left out, and ``n`` counts the rest: ``(nan, nan, 0)`` when no run measured it)."""
        out: dict[str, dict[str, tuple[float, float, int]]] = {}
        for method in dict.fromkeys(r["method"] for r in self.rows):
            rs = [r for r in self.rows if r["method"] == method]
            keys = [k for k in rs[0] if k not in ("method", "seed") and isinstance(rs[0][k], int | float)]
            out[method] = {}
            for k in keys:
                v = np.array([r[k] for r in rs if isinstance(r.get(k), int | float)], dtype=float)
                v = v[np.isfinite(v)]           # n counts the runs that measured the metric
                out[method][k] = (float(v.mean()), float(v.std()), int(len(v))) if len(v) else (math.nan, math.nan, 0)
        return out

    def to_markdown(self, columns: Sequence[str] | None = None) -> str:
        """Methods as rows, metrics as columns, ``mean ± std (n)`` over runs; a value measured once
        is shown alone (a spread over one run would read as a certainty it does not have). Rows of
        several deletion rates (a grid) are summarized per rate, as ``method @ rate`` rows, never
        averaged across rates."""
        rates = list(dict.fromkeys(r["rate"] for r in self.rows if isinstance(r.get("rate"), int | float)))
        if len(rates) > 1:
            summ = {}
            for rate in sorted(rates):
                part = UnlearningReport([r for r in self.rows if r.get("rate") == rate])
                summ.update({f"{m} @ {rate:g}": v for m, v in part.summary().items()})
        else:
            summ = self.summary()
        cols = list(columns or dict.fromkeys(k for m in summ.values() for k in m))
        lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]

        def cell(mean: float, std: float, n: int) -> str:
            return "" if n == 0 else f"{mean:.4f}" if n == 1 else f"{mean:.4f} ± {std:.4f} (n={n})"

        for method, m in summ.items():
            cells = [cell(*m[c]) if c in m else "" for c in cols]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def notes_markdown(self) -> str:
        """``meta["notes"]`` (sentences a reader must see, e.g. why there is no faithfulness curve) as a list."""
        notes = [str(n) for n in self.meta.get("notes") or []]
        return "\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes) if notes else ""

    def save(self, stem: str | Path) -> tuple[Path, Path]:
        """Write ``<stem>.json`` and ``<stem>.md`` (the table, then ``meta["notes"]``) atomically."""
        stem = Path(stem)
        js = atomic_write_json(stem.with_name(stem.name + ".json"),
                               {"format": "recircuit.report/1", "meta": self.meta, "rows": self.rows,
                                "summary": {m: {k: list(v) for k, v in d.items()} for m, d in self.summary().items()}})
        md = atomic_write_text(stem.with_name(stem.name + ".md"), self.to_markdown() + self.notes_markdown())
        return js, md

    @classmethod
    def load(cls, path: str | Path) -> UnlearningReport:
        """Read a report JSON."""
        p = Path(path)
        p = p if p.suffix == ".json" else p.with_name(p.name + ".json")
        d = json.loads(p.read_text())
        if d.get("format") != "recircuit.report/1":
            raise ValueError(f"{p} is not a recircuit report.")
        return cls(d["rows"], d["meta"])
