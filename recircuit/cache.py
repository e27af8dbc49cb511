"""The one cache of recircuit: checkpoints and step results, checksummed, reused only when intact.

Usage::

    from recircuit.cache import Cache

    cache = Cache()                                       # $RECIRCUIT_CACHE/results
    key = cache.key(step="circuit", checkpoint=ckpt_sha, config=cfg_dict, samples=uids)
    hit = cache.get("circuit", key, parse=Summary.from_dict, out_dir=out)   # None on a miss
    if hit is None:
        payload = expensive_step(out)                     # writes e.g. circuit.json into out
        cache.put("circuit", key, payload, files=["circuit.json"], out_dir=out)

    models = Cache(subdir="models")                       # checkpoints (moved in, never copied twice)
    entry = models.lookup("smollm2-full", key)            # an Entry: entry.file("model.safetensors")

A key hashes everything a step's output depends on: the inputs the caller names (configs,
sample ids, the checkpoints' sha256) **and recircuit's own source** (the whole package, or the
subpackages the caller names with ``code=``), so editing the code invalidates the results it
produced instead of silently reusing stale numbers.

An entry is ``<root>/<step>-<key>/`` holding ``manifest.json`` (the JSON payload and the sha256
of every stored file) and ``files/``. On reuse every file's sha256 is checked; an entry whose
manifest is unreadable, whose files are missing or altered, or whose payload the caller's
``parse`` rejects (the wrong shape) is a **miss**: it is recomputed and replaced. ``fresh=True``
treats every entry as a miss and overwrites it. Entries are staged in a temporary directory and
renamed into place, so an interrupted write leaves no half entry; payloads are JSON and files
are JSON or safetensors (never pickles). Staging folders carry the writer's pid
(:func:`recircuit._io.temp_prefix`); what a killed writer left under the root is removed when
a :class:`Cache` on that root is made and before each :meth:`Cache.put`.

Why hand-written: ``joblib.Memory`` would pickle the payloads, which the project does not allow.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recircuit._io import (
    atomic_write_bytes,
    atomic_write_json,
    clean_stale_temps,
    sha256_file,
    temp_prefix,
)

logger = logging.getLogger(__name__)

#: Written into every manifest; entries of another format are misses.
FORMAT = "recircuit.cache/1"

#: Exceptions a ``parse`` callable may raise to reject a payload of the wrong shape.
SHAPE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError)


#: sha256 of files already hashed in this process, by (device, inode, size, mtime, ctime).
_DIGESTS: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, reused within the process while its inode, size and times hold.

    A checkpoint is checked on every reuse; this keeps a cached rerun from hashing the same
    hundreds of megabytes several times (any write changes ``mtime``/``ctime``, so an altered
    file is hashed again). The file is known by its device and inode, not its path, so a file
    hashed when :meth:`Cache.put` stored it is not hashed again when its entry is read.
    """
    st = os.stat(path)
    ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if ident not in _DIGESTS:
        _DIGESTS[ident] = sha256_file(path)
    return _DIGESTS[ident]


@functools.cache
def code_fingerprint(parts: tuple[str, ...] = ()) -> str:
    """sha256 of recircuit's ``.py`` source (relative path and content of each file).

    Args:
        parts: subpackages or modules of ``recircuit`` to hash (e.g. ``("train", "models")``
            or ``("_io.py",)``); empty: the whole package.
    """
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    roots = [root / p for p in parts] if parts else [root]
    files: set[Path] = set()
    for r in roots:
        if r.is_file():
            files.add(r)
        elif r.is_dir():
            files.update(r.rglob("*.py"))
    for path in sorted(files):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def cache_key(code: Sequence[str] | None = (), **inputs: Any) -> str:
    """A 16-hex-digit key over ``inputs`` (JSON-able; others by ``str``) and recircuit's source.

    Args:
        code: the parts of the package whose source the result depends on (see
            :func:`code_fingerprint`); ``()`` is the whole package, ``None`` leaves the code out.
        **inputs: everything else the result depends on.
    """
    desc: dict[str, Any] = {"inputs": inputs}
    if code is not None:
        desc["code"] = code_fingerprint(tuple(code))
    blob = json.dumps(desc, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Entry:
    """One verified cache entry.

    Attributes:
        path: the entry directory.
        payload: the JSON payload (after the caller's ``parse``, when one was given).
        files: sha256 of every stored file, by path relative to ``files/``.
    """

    path: Path
    payload: Any
    files: dict[str, str] = field(default_factory=dict)

    def file(self, rel: str) -> Path:
        """Path of a stored file (inside the cache; read it, do not modify it)."""
        return self.path / "files" / rel


class Cache:
    """Checksummed entries under ``root/<step>-<key>/`` (see the module docstring).

    Args:
        root: default ``$RECIRCUIT_CACHE/<subdir>``.
        subdir: ``"results"`` (step results) or ``"models"`` (checkpoints) under the default root.
        fresh: entries written before this cache was made are misses, and :meth:`put` overwrites
            them (``recircuit demo --fresh``); entries written during the run are reused.
        since: with ``fresh``, the start of the run (a ``time.time()``; default now). Pass
            ``cache.since`` to the caches of other processes of the same run (Ray tasks).
    """

    def __init__(self, root: str | os.PathLike | None = None, *, subdir: str = "results", fresh: bool = False,
                 since: float | None = None) -> None:
        if root is None:
            from recircuit.assets import cache_dir

            root = cache_dir() / subdir
        self.root = Path(root)
        self.fresh = fresh
        self.since = (time.time() if since is None else since) if fresh else None
        clean_stale_temps(self.root)  # staging folders of killed writers (it reads nothing else)

    key = staticmethod(cache_key)

    def entry_dir(self, step: str, key: str) -> Path:
        """Where the entry of ``(step, key)`` lives (it may not exist)."""
        return self.root / f"{step}-{key}"

    def lookup(self, step: str, key: str, parse: Callable[[Any], Any] | None = None) -> Entry | None:
        """The verified entry of ``(step, key)``, or None on a miss (see the module docstring).

        Args:
            parse: turns the stored payload into what the caller uses; raising one of
                :data:`SHAPE_ERRORS` (or returning None) marks the payload as the wrong shape.
        """
        entry = self.entry_dir(step, key)
        manifest = entry / "manifest.json"
        if not manifest.is_file():
            return None
        if self.since is not None and manifest.stat().st_mtime < self.since:
            return None  # fresh: only what this run wrote counts
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("files"), dict):
                raise ValueError("not a recircuit cache manifest")
            for rel, digest in meta["files"].items():
                if file_sha256(entry / "files" / rel) != digest:
                    raise ValueError(f"{rel} does not match its recorded sha256")
        except (OSError, UnicodeDecodeError, ValueError) as err:  # json errors are ValueErrors
            logger.warning("cache entry %s is damaged (%s); recomputing it", entry, err)
            return None
        payload = meta.get("payload")
        if parse is not None:
            try:
                payload = parse(payload)
            except SHAPE_ERRORS as err:
                payload, why = None, f"{type(err).__name__}: {err}"
            else:
                why = "rejected by its reader"
            if payload is None:
                logger.warning("cache entry %s has a payload of the wrong shape (%s); recomputing it", entry, why)
                return None
        return Entry(entry, payload, dict(meta["files"]))

    def get(self, step: str, key: str, parse: Callable[[Any], Any] | None = None,
            out_dir: str | os.PathLike | None = None) -> Any | None:
        """The payload of ``(step, key)`` with its files copied into ``out_dir``; None on a miss."""
        entry = self.lookup(step, key, parse)
        if entry is None:
            return None
        if out_dir is not None:
            for rel in sorted(entry.files):
                atomic_write_bytes(Path(out_dir) / rel, entry.file(rel).read_bytes())
        return entry.payload

    def put(self, step: str, key: str, payload: Any, files: Sequence[str] | Mapping[str, str | os.PathLike] = (),
            out_dir: str | os.PathLike | None = None, move: bool = False) -> Entry:
        """Store ``payload`` (JSON-able) and ``files`` as the entry of ``(step, key)``, atomically.

        Args:
            files: paths relative to ``out_dir`` (stored under the same relative name; missing
                ones are skipped, e.g. an optional figure input), or a mapping from the stored
                name to a source path.
            move: move the sources in instead of copying them (large checkpoints).

        Returns:
            The new :class:`Entry` (an existing entry of the same key is replaced).
        """
        if isinstance(files, Mapping):
            sources = {rel: Path(src) for rel, src in files.items()}
        else:
            sources = {rel: Path(out_dir or ".") / rel for rel in files}
        self.root.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(self.root)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(f"{step}-{key}"), dir=self.root))
        try:
            digests: dict[str, str] = {}
            for rel, src in sources.items():
                if not src.is_file():
                    continue
                dst = tmp / "files" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                (shutil.move if move else shutil.copyfile)(src, dst)
                digests[rel] = file_sha256(dst)
            atomic_write_json(tmp / "manifest.json", {"format": FORMAT, "step": step, "key": key,
                                                      "files": digests, "payload": payload}, indent=None)
            entry = self.entry_dir(step, key)
            _replace_dir(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Entry(entry, payload, digests)


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, replacing an existing ``dst`` (another process may race us)."""
    try:
        os.replace(src, dst)  # works when dst is absent (or an empty directory)
        return
    except OSError:
        pass
    trash = Path(tempfile.mkdtemp(prefix=temp_prefix(f"{dst.name}.old"), dir=dst.parent))
    try:
        os.replace(dst, trash / "entry")
    except FileNotFoundError:
        pass
    os.replace(src, dst)
    shutil.rmtree(trash, ignore_errors=True)
