"""Reuse a pipeline step's results when nothing it depends on has changed.

Usage::

    from recircuit.step_cache import StepCache

    cache = StepCache()                                   # $RECIRCUIT_CACHE/results
    key = cache.key(step="circuit", checkpoint=ckpt_id, config=cfg_dict, samples=uids)
    hit = cache.get("circuit", key, out_dir)             # payload dict, files copied into out_dir
    if hit is None:
        payload = expensive_step(out_dir)                 # writes e.g. circuit.json into out_dir
        cache.put("circuit", key, payload, out_dir, ["circuit.json"])

A key hashes everything a step's output depends on: the inputs the caller names (configs,
sample ids, the checkpoints' sidecars) **and the source code of the ``recircuit`` package**, so
editing the code invalidates every cached result instead of silently reusing stale numbers.
Entries are JSON plus copies of the files the step wrote (JSON / safetensors, never pickles),
written to a temporary directory and renamed into place, so an interrupted write leaves no
half entry. Deleting ``$RECIRCUIT_CACHE/results`` (or passing ``--fresh`` to ``recircuit demo``)
recomputes everything.

Why hand-written: the entries are a handful of small JSON files keyed by content hashes;
``joblib.Memory`` would pickle the payloads, which the project does not allow.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from recircuit._io import atomic_write_bytes, atomic_write_json


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of every ``.py`` file of the installed ``recircuit`` package (path and content)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def file_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of a small file's bytes (e.g. a checkpoint's JSON sidecar, which records its config and metrics)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class StepCache:
    """Results of pipeline steps under ``root/<step>-<key>/`` (see the module docstring).

    Args:
        root: default ``$RECIRCUIT_CACHE/results``.
        enabled: when false, :meth:`get` always misses and :meth:`put` stores nothing.
    """

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True) -> None:
        if root is None:
            from recircuit.assets import cache_dir

            root = cache_dir() / "results"
        self.root = Path(root)
        self.enabled = enabled

    @staticmethod
    def key(**inputs: Any) -> str:
        """A 16-hex-digit key over ``inputs`` (JSON-able; others by ``str``) and the package code."""
        blob = json.dumps({"inputs": inputs, "code": code_fingerprint()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _entry(self, step: str, key: str) -> Path:
        return self.root / f"{step}-{key}"

    def get(self, step: str, key: str, out_dir: str | os.PathLike | None = None) -> dict | None:
        """The payload stored for ``(step, key)``, its files copied into ``out_dir``; None on a miss."""
        if not self.enabled:
            return None
        entry = self._entry(step, key)
        meta = entry / "payload.json"
        if not meta.is_file():
            return None
        try:
            payload = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is a miss; put() replaces it
        files = entry / "files"
        if out_dir is not None and files.is_dir():
            for src in sorted(p for p in files.rglob("*") if p.is_file()):
                atomic_write_bytes(Path(out_dir) / src.relative_to(files), src.read_bytes())
        return payload

    def put(self, step: str, key: str, payload: dict, out_dir: str | os.PathLike | None = None,
            files: list[str] | tuple[str, ...] = ()) -> Path | None:
        """Store ``payload`` and copies of ``files`` (paths relative to ``out_dir``) atomically.

        Files that do not exist are skipped (e.g. an optional figure input).
        """
        if not self.enabled:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{step}-", dir=self.root))
        try:
            for rel in files:
                src = Path(out_dir or ".") / rel
                if src.is_file():
                    (tmp / "files" / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, tmp / "files" / rel)
            atomic_write_json(tmp / "payload.json", payload)
            entry = self._entry(step, key)
            if entry.exists():
                shutil.rmtree(entry)
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return entry
