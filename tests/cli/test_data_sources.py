"""The data flags of every data-reading subcommand: BookCrossing, generic CSV and TALLRec JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recircuit.cli import build_parser, main
from recircuit.cli.common import data_source_from_args
from recircuit.data import DataSource
from recircuit.errors import InputError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BX = ["--data-format", "bookcrossing", "--data-path", str(FIXTURES / "bookcrossing"), "--history-len", "3"]


@pytest.mark.parametrize("command", ["score", "circuit", "unlearn", "demo", "data build"])
def test_every_data_command_takes_the_same_data_flags(command):
    args = build_parser().parse_args([*command.split(), *BX, "--like-threshold", "7"])
    assert data_source_from_args(args) == DataSource("bookcrossing", path=str(FIXTURES / "bookcrossing"),
                                                     history_len=3, like_threshold=7.0)
    args = build_parser().parse_args([*command.split(), "--data-json", "x.json"])
    assert data_source_from_args(args) == DataSource("tallrec-json", path="x.json")
    assert data_source_from_args(build_parser().parse_args(command.split())) == DataSource()


@pytest.mark.parametrize("flags, flag", [
    (["--data-json", "a.json", "--data-dir", "d"], "--data-json"),
    (["--data-dir", "d", "--data-format", "csv"], "--data-dir"),
    (["--data-path", "p"], "--data-format"),
    (["--data-format", "csv", "--data-path", "p"], "--items-csv"),
    (["--data-format", "csv", "--data-path", "p", "--items-csv", "i", "--columns", "user"], "--columns"),
    (["--data-format", "csv", "--data-path", "p", "--items-csv", "i", "--domain", "song"], "--domain"),
    (["--data-format", "bookcrossing", "--data-path", "p", "--rating-scale", "1-7"], "--rating-scale"),
])
def test_contradicting_or_bad_data_flags_name_the_flag(flags, flag):
    with pytest.raises(InputError) as err:
        data_source_from_args(build_parser().parse_args(["score", *flags]))
    assert err.value.field == flag


def test_bookcrossing_builds_scores_extracts_a_circuit_and_unlearns_from_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "book"
    assert main(["data", "build", *BX, "--out", str(out), "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["split"]["params"]["domain"] == "book" and built["split"]["params"]["like_threshold"] == 6.0
    test = json.loads((out / "test.json").read_text())
    assert 'written by' in test[0]["input"] and "target book" in test[0]["instruction"]
    # the built TALLRec JSON scores (a single file is used whole)
    assert main(["score", "--model", "tiny", "--data-json", str(out / "test.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == len(test)
    # circuit with a catalogue corruption drawn from the same data set
    assert main(["circuit", "--model", "tiny", *BX, "--n-samples", "4", "--steps", "1", "--top-n", "20",
                 "--corruption", "target_swap", "--out", str(tmp_path / "circ"), "--json"]) == 0
    meta = json.loads((tmp_path / "circ.json").read_text())["metadata"]
    assert meta["corruption"] == "target_swap" and meta["data"]["source"]["format"] == "bookcrossing"
    capsys.readouterr()
    assert main(["unlearn", "--method", "ga", "--model", "tiny", "--data-json", str(out), "--steps", "1",
                 "--forget-fraction", "0.25", "--out", str(tmp_path / "ul"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["forget_samples"] >= 1 and (tmp_path / "ul" / "audit.json").is_file()


def test_demo_passes_a_data_source_and_keeps_movielens_configs_as_before(monkeypatch):
    import recircuit.demo as demo

    seen = {}

    def fake_run_demo(cfg, *args, **kwargs):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    with pytest.raises(SystemExit):
        main(["demo", "--model", "tiny", *BX])
    assert seen["cfg"].data.source == DataSource("bookcrossing", path=str(FIXTURES / "bookcrossing"), history_len=3)
    seen.clear()
    with pytest.raises(SystemExit):
        main(["demo", "--model", "tiny", "--data-dir", "d"])
    assert seen["cfg"].data.source is None and seen["cfg"].data.data_dir == "d"
    assert "source" not in seen["cfg"].to_dict()["data"]          # the MovieLens config (and cache keys) unchanged
