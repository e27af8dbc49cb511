"""Small file helpers shared by every module: atomic writes, checksums, checked text reads.

Usage::

    from recircuit._io import atomic_write_text, read_text, sha256_file
    atomic_write_text(path, json.dumps(obj))   # readers never see a half-written file
    text = read_text(path)                     # bad bytes -> InputError naming file and line
    clean_stale_temps(directory)               # remove what a killed writer left behind

Temporary files and folders made here carry the writer's process id in their name
(``.NAME.tmp-PID-XXXX.tmp``), so a later run can tell a dead writer's leftovers from a live
writer's work in progress (:func:`clean_stale_temps`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recircuit.errors import InputError

#: Marker in every temporary name made here, followed by the writer's pid.
TMP_TAG = ".tmp-"


def temp_prefix(name: str) -> str:
    """The prefix of a temporary sibling of ``name``: ``.NAME.tmp-PID-`` (hidden, tagged with this pid)."""
    return f".{name}{TMP_TAG}{os.getpid()}-"


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically: ``writer`` fills a temporary sibling, which is then renamed.

    Args:
        path: the final destination.
        writer: called with the temporary path; it must create and fill that file.

    Returns:
        The final path.

    The temporary file is removed on any failure or interrupt (``KeyboardInterrupt`` included);
    one left by a killed process is removed by :func:`clean_stale_temps`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Atomically write ``text`` to ``path``."""
    return atomic_write(path, lambda p: p.write_text(text, encoding=encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as JSON to ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_checked_sidecar(meta_path: str | os.PathLike, data_path: str | os.PathLike, fmt: str, what: str,
                         fix: str) -> dict:
    """Read a JSON sidecar that names the format and sha256 of a data file beside it, checking both.

    Args:
        meta_path, data_path: the sidecar and the file whose sha256 it records (key ``sha256``).
        fmt: the expected ``format`` tag.
        what: what the data file holds, for the messages ("score tensors", ...).
        fix: how to make the files again (said when one is missing or does not match).

    Raises:
        InputError: a missing file, another format, or a data file whose hash does not match.
    """
    meta_path, data_path = Path(meta_path), Path(data_path)
    for p in (meta_path, data_path):
        if not p.is_file():
            raise InputError("missing", path=p, fix=fix)
    meta = json.loads(read_text(meta_path))
    if meta.get("format") != fmt:
        raise InputError(f"format {meta.get('format')!r}, expected {fmt!r}", path=meta_path, field="format")
    if sha256_file(data_path) != meta.get("sha256"):
        raise InputError(f"the {what} do not match the sidecar's sha256", path=data_path,
                         fix=f"the file was changed or truncated; {fix}")
    return meta


def _line_and_column(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in bytes) of ``offset`` in ``data``."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, offset - line_start + 1


def decode_text(data: bytes, path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """Decode ``data`` read from ``path``; undecodable bytes raise an error naming the file and line.

    A UTF-8 byte-order mark is dropped. Line ends are normalized to ``\\n`` as ``open()`` would.

    Raises:
        InputError: ``path:LINE: byte 0x.. at column C is not valid ENCODING``, with the fix.
    """
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8") and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line, col = _line_and_column(data, err.start)
        raise InputError(f"byte 0x{data[err.start]:02x} at column {col} is not valid {encoding} ({err.reason})",
                         path=path, line=line, fix=f"save the file as {encoding} or fix that line") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """Read a text file; undecodable bytes raise an error naming the file and line.

    Raises:
        FileNotFoundError: the file is missing.
        InputError: a byte that is not valid ``encoding`` (see :func:`decode_text`).
    """
    return decode_text(Path(path).read_bytes(), path, encoding)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or cannot tell): keep its files
    return True


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for sub in path.rglob("*"):
            try:
                newest = max(newest, sub.lstat().st_mtime)
            except OSError:
                continue
    return newest


def temp_owner(name: str) -> int | None:
    """The pid tagged in a temporary name made by this module, or ``None`` when there is none."""
    if TMP_TAG not in name:
        return None
    rest = name.rsplit(TMP_TAG, 1)[1]
    pid = rest.split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def is_temp_name(name: str) -> bool:
    """Whether ``name`` looks like a temporary made by a writer: tagged by this module, or legacy.

    Legacy names are those of earlier versions: ``.NAME.XXXXXXXX.tmp`` (``atomic_write``) and
    ``tmpXXXXXXXX`` (``tempfile`` folders).
    """
    if temp_owner(name) is not None:
        return True
    if name.startswith(".") and name.endswith(".tmp"):
        return True
    return name.startswith("tmp") and len(name) > 3 and name[3:].replace("_", "").isalnum()


def clean_stale_temps(directory: str | os.PathLike, older_than: float = 600.0) -> list[Path]:
    """Remove temporary files and folders that a killed writer left in ``directory`` (not recursive).

    An entry (see :func:`is_temp_name`) is stale when it carries the pid of a process that no
    longer runs on this machine, or when nothing in it was modified for ``older_than`` seconds
    (names without a pid). Entries of running writers are kept.

    Returns:
        The paths removed.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    now = time.time()
    for entry in d.iterdir():
        if not is_temp_name(entry.name):
            continue
        pid = temp_owner(entry.name)
        try:
            stale = (pid is not None and not _pid_alive(pid)) or (pid is None and now - _newest_mtime(entry) > older_than)
            if not stale:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        removed.append(entry)
    return removed
