"""``recircuit train`` reads the same data flags as score/circuit/unlearn."""

from __future__ import annotations

import json
from pathlib import Path

from recircuit.cli import build_parser, main
from recircuit.cli.common import data_source_from_args
from recircuit.data import DataSource

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BX = ["--data-format", "bookcrossing", "--data-path", str(FIXTURES / "bookcrossing"), "--history-len", "3"]


def test_train_takes_the_shared_data_flags():
    args = build_parser().parse_args(["train", *BX, "--like-threshold", "7"])
    assert data_source_from_args(args) == DataSource("bookcrossing", path=str(FIXTURES / "bookcrossing"),
                                                     history_len=3, like_threshold=7.0)
    args = build_parser().parse_args(["train", "--data-json", str(FIXTURES / "book_tallrec")])
    assert data_source_from_args(args) == DataSource("tallrec-json", path=str(FIXTURES / "book_tallrec"))


def test_train_fine_tunes_on_tallrec_json_and_records_its_split(tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["train", "--model", "tiny", "--mode", "full", "--data-json", str(FIXTURES / "book_tallrec"),
                 "--n-train", "8", "--n-valid", "4", "--max-steps", "2", "--eval-every", "1", "--batch-size", "4",
                 "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["train_samples"] == 8
    sidecar = json.loads((out / "model.json").read_text())           # trained on the book data, and says so
    assert sidecar["split"]["params"] == {"source": "tallrec-json", "path": str(FIXTURES / "book_tallrec")}
