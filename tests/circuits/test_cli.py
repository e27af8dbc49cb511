import json

import pytest

from recircuit.circuits import Circuit
from recircuit.cli import main


def test_circuit_command_writes_a_loadable_circuit(shared_data, tmp_path, capsys):
    out = tmp_path / "circ"
    rc = main(["circuit", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"), "--n-samples", "4",
               "--method", "eap", "--top-n", "20", "--faithfulness", "--allow-unreliable", "--out", str(out), "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["summary"]["edges_in_circuit"] <= 20 and "CPR" in report["summary"]
    c = Circuit.load(out)
    assert c.metadata["corruption"] == "label_flip" and c.metadata["faithfulness"]["faithfulness"][-1] == 1.0
    # a random model: label_flip does not move the metric, so the curve is there only because it was
    # allowed, and it says so
    assert report["summary"]["faithfulness_flag"] == "unreliable" == c.metadata["faithfulness"]["flag"]
    assert captured.err.count("note: ") == 1 and "label_flip corruption" in captured.err


@pytest.fixture()
def identity_corruption(monkeypatch):
    """A registered corruption that changes nothing (corrupted = clean)."""
    from recircuit.circuits import corruptions

    spec = corruptions.CorruptionSpec("identity", lambda samples: list(samples), False, "corrupted = clean")
    monkeypatch.setitem(corruptions._REGISTRY, "identity", spec)


def test_circuit_command_skips_the_curve_of_a_corruption_that_does_not_move_the_metric(
        shared_data, tmp_path, capsys, identity_corruption):
    out = tmp_path / "circ"
    args = ["circuit", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"), "--n-samples", "3",
            "--method", "eap", "--top-n", "20", "--corruption", "identity", "--faithfulness", "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "identity corruption moves the metric by only 0" in notes[0]
    assert "faithfulness curve skipped" in notes[0] and "CPR" not in captured.out
    c = Circuit.load(out)                                   # the circuit is still saved, with the note
    assert "faithfulness" not in c.metadata and "identity" in c.metadata["faithfulness_note"]
    # asked to draw it anyway: f = 0/0 is undefined, so the command refuses in one line (exit 2)
    assert main([*args, "--allow-unreliable"]) == 2
    assert "undefined" in capsys.readouterr().err


def test_circuit_metric_choices_are_the_registered_metrics(monkeypatch):
    from recircuit.circuits import metrics
    from recircuit.cli import build_parser

    parser = build_parser()
    for name in metrics.METRICS:                            # yes_logit_diff included
        assert parser.parse_args(["circuit", "--metric", name]).metric == name
    monkeypatch.setitem(metrics.METRICS, "my_metric", metrics.logit_diff)
    assert parser.parse_args(["circuit", "--metric", "my_metric"]).metric == "my_metric"
    with pytest.raises(SystemExit):
        parser.parse_args(["circuit", "--metric", "nope"])


def test_circuit_command_passes_corruption_args_and_refuses_a_bad_one_before_any_model(tmp_path, capsys,
                                                                                        monkeypatch):
    from pathlib import Path

    bx = ["--data-format", "bookcrossing", "--data-path",
          str(Path(__file__).resolve().parents[1] / "fixtures" / "bookcrossing"), "--history-len", "3"]
    base = ["circuit", "--model", "tiny", *bx, "--n-samples", "2", "--method", "eap", "--top-n", "10",
            "--corruption", "ppr"]
    assert main([*base, "--corruption-arg", "far_fraction=0.5", "--corruption-arg", "seed=1",
                 "--out", str(tmp_path / "c"), "--json"]) == 0
    meta = Circuit.load(tmp_path / "c").metadata
    assert meta["corruption"] == "ppr" and meta["corruption_args"] == {"far_fraction": 0.5, "seed": 1}
    capsys.readouterr()
    monkeypatch.setattr("recircuit.models.load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert main([*base, "--corruption-arg", "titles=x", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "--corruption-arg" in err and "'titles'" in err and "seed, far_fraction" in err
