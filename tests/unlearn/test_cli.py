import json

from recircuit.cli import main


def test_unlearn_command_writes_model_and_audit(shared_data, tmp_path, capsys):
    rc = main(["unlearn", "--method", "npo", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"),
               "--n-train", "40", "--per-user", "4", "--forget-fraction", "0.2", "--steps", "2", "--out", str(tmp_path), "--json"])
    assert rc == 0
    row = json.loads(capsys.readouterr().out)
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert row["forget_samples"] == audit["forgotten"]["n"] > 0
    assert audit["model_sha256"]["before"] != audit["model_sha256"]["after"]
    assert (tmp_path / "model.safetensors").exists()
