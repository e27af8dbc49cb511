"""benchmarks/cost_curves.py: the tiny smoke run end to end (one process per unit), its resume, its bad input."""

from __future__ import annotations

import json

import pytest

POOLS = (16, 32)
TRAINED = ("train_original", "retrain", "apa_fit")
POOL_UNITS = ("train_original", "retrain", "cure", "ga", "apa_fit", "apa")


def _benchmark():
    """benchmarks/cost_curves.py as a module (the benchmark is a script, not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "cost_curves.py"
    spec = importlib.util.spec_from_file_location("benchmark_cost_curves", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_cost_curves_run_every_unit_report_and_resume(shared_data, tmp_path, monkeypatch, capsys):
    bench = _benchmark()
    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path / "cache"))     # every prerequisite trained by its unit
    out = tmp_path / "cost"
    argv = ["run", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"), "--pools", *map(str, POOLS),
            "--prompts", "2", "--threads", "1", "--no-png", "--out", str(out)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    names = {f"{k}_pool{p}" for k in POOL_UNITS for p in POOLS} | {"eap_prompts2"}
    files = {p.stem: p for p in out.glob("*.json") if p.name != "cost_curves.json"}
    assert set(files) == names
    assert f"{len(names)} units run now, 0 reused" in printed
    for name, path in files.items():
        d = json.loads(path.read_text())
        assert d["seconds"] > 0 and d["peak_rss_mb"] > 0, name
        assert d["key"] == bench.unit_key(d["spec"]) and d["code"]["recircuit_sha256"], name
        assert d["torch_threads"] == 1 and d["spec"]["config"]["model"] == "tiny", name
        if d["kind"] in TRAINED:
            assert d["trained_here"] is True, name          # a fresh cache: the unit did the training
        if d["kind"] in ("retrain", "cure", "ga", "apa"):
            assert d["n_forget"] > 0 and d["rate"] == 0.1, name
    assert json.loads(files["cure_pool16"].read_text())["importance_seconds"] > 0
    apa = json.loads(files["apa_pool32"].read_text())
    assert apa["fit_here"] is False and apa["fit_seconds"] > 0 and apa["shards_retrained"] >= 1
    # the report: the table, the figure, the Markdown with ratios to Retrain
    report = json.loads((out / "cost_curves.json").read_text())
    assert len(report["rows"]) == len(POOL_UNITS) * len(POOLS) and [r["prompts"] for r in report["eap"]] == [2]
    assert all(r["ratio_to_retrain"] == 1.0 for r in report["rows"] if r["method"] == "retrain")
    assert (out / "cost_curves.html").stat().st_size > 0
    assert "| 16 | cure |" in printed and "| 32 | apa |" in printed and "x Retrain" in printed
    # a rerun starts no process and rewrites no unit
    stamps = {p: p.stat().st_mtime_ns for p in files.values()}
    monkeypatch.setattr(bench, "_child", lambda *a, **k: pytest.fail("a finished unit was run again"))
    assert bench.main(argv) == 0
    assert f"0 units run now, {len(names)} reused" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in files.values()} == stamps
    assert bench.main(["report", "--out", str(out), "--no-png"]) == 0
    assert "| 32 | retrain |" in capsys.readouterr().out


@pytest.mark.parametrize("extra, needle", [
    (["--kinds", "cure", "bogus"], "unknown kind 'bogus'"),
    (["--pools", "0", "16"], "'--pools': 0 is not a positive count"),
    (["--prompts", "-2"], "'--prompts': -2 is not a positive count"),
    (["--rate", "1.5"], "outside (0, 1)"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, extra, needle):
    bench = _benchmark()
    assert bench.main(["run", "--model", "tiny", "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cost_curves.py: error:") and needle in err and "\n" not in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_a_bad_flag_value_is_one_line_too(capsys):
    bench = _benchmark()
    with pytest.raises(SystemExit) as exc:
        bench.main(["run", "--pools", "abc"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cost_curves.py: error:") and "\n" not in err
