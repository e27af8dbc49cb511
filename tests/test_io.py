"""recircuit._io: atomic writes, checked text reads, stale-temporary cleanup."""

from __future__ import annotations

import os
import time

import pytest

from recircuit._io import (
    atomic_write,
    clean_stale_temps,
    decode_text,
    is_temp_name,
    read_text,
    temp_owner,
    temp_prefix,
)
from recircuit.errors import InputError


def test_atomic_write_keeps_the_good_file_and_leaves_no_temporary_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"good")

    def fails(tmp):
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, fails)
    assert target.read_bytes() == b"good" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_temporaries_carry_this_pid():
    name = temp_prefix("model.gguf") + "abc.tmp"
    assert temp_owner(name) == os.getpid() and is_temp_name(name)
    assert temp_owner(".model.gguf.k3j4.tmp") is None and is_temp_name(".model.gguf.k3j4.tmp")
    assert is_temp_name("tmpab_12cd") and not is_temp_name("u.data") and not is_temp_name("tmp")


def test_decode_text_names_file_line_and_column():
    with pytest.raises(InputError) as err:
        decode_text(b"ok\nfine\nba\xc3d\n", "x.txt")
    assert str(err.value).startswith("x.txt:3: byte 0xc3 at column 3 is not valid utf-8")
    assert err.value.line == 3 and "\n" not in str(err.value)
    assert decode_text(b"\xef\xbb\xbfa\r\nb\rc", "x.txt") == "a\nb\nc"
    assert decode_text(b"caf\xe9", "x.txt", "latin-1") == "café"


def test_read_text_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_text(tmp_path / "nope.txt")


def test_clean_stale_temps_removes_dead_and_old_keeps_live_and_recent(tmp_path):
    old = time.time() - 3600
    dead = 2**22 + 777  # above Linux's pid_max
    dead_dir = tmp_path / f".wheel.tmp-{dead}-abc.tmp"
    dead_dir.mkdir()
    (dead_dir / "part").write_bytes(b"x")  # recent content: the dead pid alone makes it stale
    old_legacy = tmp_path / "tmpq1w2e3r4"
    old_legacy.mkdir()
    (old_legacy / "part").write_bytes(b"x")
    for p in (old_legacy / "part", old_legacy):
        os.utime(p, (old, old))
    busy_legacy = tmp_path / "tmpz9x8c7v6"  # old folder, but a file in it was written just now
    busy_legacy.mkdir()
    os.utime(busy_legacy, (old, old))
    (busy_legacy / "part").write_bytes(b"x")
    live = tmp_path / (temp_prefix("u.data") + "x.tmp")
    live.write_bytes(b"x")
    os.utime(live, (old, old))
    keep = tmp_path / "u.data"
    keep.write_bytes(b"x")
    os.utime(keep, (old, old))
    removed = clean_stale_temps(tmp_path, older_than=600)
    assert sorted(removed) == sorted([dead_dir, old_legacy])
    assert busy_legacy.exists() and live.exists() and keep.exists()
    assert clean_stale_temps(tmp_path / "absent") == []
