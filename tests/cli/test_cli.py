import json

from recircuit.cli import main


def test_data_build_writes_tallrec_files(shared_data, tmp_path, capsys):
    assert main(["data", "build", "--data-dir", str(shared_data / "ml-100k"), "--out", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"]["sizes"] == {"train": 8000, "valid": 1000, "test": 1000}
    assert (tmp_path / "test.json").read_bytes() == (shared_data / "tallrec-movie" / "test.json").read_bytes()


def test_score_tiny_model_prints_auc(shared_data, capsys):
    rc = main(["score", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"), "--limit", "16", "--json"])
    assert rc == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n"] == 16 and 0.0 <= m["auc"] <= 1.0 and m["samples_per_s"] > 0


def test_score_writes_per_sample_scores_and_an_auc_interval(shared_data, tmp_path, capsys):
    from recircuit.metrics import auc

    out = tmp_path / "scores.json"
    assert main(["score", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"), "--limit", "24",
                 "--scores-out", str(out), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert len(saved["uids"]) == 24 and saved["uids"][0]
    assert abs(auc(saved["labels"], saved["p_yes"]) - m["auc"]) < 1e-6
    assert m["auc_ci95"][0] <= m["auc"] <= m["auc_ci95"][1]


def test_errors_are_reported_not_raised(tmp_path, capsys):
    rc = main(["data", "build", "--data-dir", str(tmp_path)])
    assert rc == 2
    assert "neither GroupLens" in capsys.readouterr().err
