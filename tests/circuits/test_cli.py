import json

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
