import json

import pytest

from recircuit.circuits import Circuit
from recircuit.cli import main


def test_circuit_command_writes_a_loadable_circuit(shared_data, tmp_path, capsys):
    out = tmp_path / "circ"
    rc = main(["circuit", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"), "--n-samples", "4",
               "--method", "eap", "--top-n", "20", "--faithfulness", "--out", str(out), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["summary"]["edges_in_circuit"] <= 20 and "CPR" in report["summary"]
    c = Circuit.load(out)
    assert c.metadata["corruption"] == "label_flip" and c.metadata["faithfulness"]["faithfulness"][-1] == 1.0


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
