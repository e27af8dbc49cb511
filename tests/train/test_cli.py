import json

from recircuit.cli import main


def test_train_cli_fills_then_reuses_the_cache(shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECIRCUIT_CACHE", str(tmp_path))
    argv = ["train", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"), "--mode", "lora",
            "--n-train", "8", "--n-valid", "8", "--batch-size", "4", "--max-steps", "1", "--cache", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["train_samples"] == 8 and first["steps"] == 1
    assert first["checkpoint"].startswith(str(tmp_path / "models"))
    import recircuit.train.cache as cache

    monkeypatch.setattr(cache, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    assert main(argv + ["--test", "--n-test", "12"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["checkpoint"] == first["checkpoint"]
    assert again["test_samples"] == 12 and 0.0 <= again["test_auc"] <= 1.0
    low, high = again["test_auc_ci95"]
    assert low <= again["test_auc"] <= high


def test_train_cli_continues_from_a_checkpoint_on_new_samples(shared_data, tmp_path, capsys):
    from recircuit.train import read_meta

    base = ["train", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"), "--mode", "full",
            "--n-train", "8", "--n-valid", "8", "--batch-size", "4", "--max-steps", "1", "--json"]
    assert main(base + ["--out", str(tmp_path / "leg1")]) == 0
    leg1 = json.loads(capsys.readouterr().out)["checkpoint"]
    assert main(base + ["--out", str(tmp_path / "leg2"), "--init", leg1, "--train-offset", "8"]) == 0
    meta = read_meta(json.loads(capsys.readouterr().out)["checkpoint"])
    assert meta["init"]["checkpoint"] == leg1 and meta["train_offset"] == 8 and meta["n_train"] == 8


def test_train_cli_refuses_an_offset_past_the_split(shared_data, tmp_path, capsys):
    code = main(["train", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"), "--train-offset", "10000000",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "no training samples left" in err and "--train-offset" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_train_cli_refuses_bad_numbers_before_loading_anything(tmp_path, capsys, monkeypatch):
    import recircuit.data as data

    monkeypatch.setattr(data, "build_split", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded data")))
    for argv, field in [(["--lr", "-1"], "lr"), (["--n-valid", "-3"], "--n-valid"), (["--batch-size", "0"], "batch_size")]:
        assert main(["train", "--model", "tiny", "--out", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err
        assert f"field '{field}'" in err and err.count("\n") == 1


def _train_argv(shared_data, out, *extra):
    return ["train", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"), "--mode", "full",
            "--n-train", "32", "--n-valid", "16", "--batch-size", "8", "--eval-every", "2", "--json",
            "--out", str(out), *extra]


def test_train_cli_lr_1e6_exits_2_and_keeps_the_good_checkpoint(shared_data, tmp_path, capsys):
    from recircuit.models import tiny_model
    from recircuit.train import save_checkpoint

    out = tmp_path / "run"
    save_checkpoint(tiny_model(0), out / "model", {"note": "a good checkpoint"})
    files = {f.name: f.read_bytes() for f in out.iterdir()}
    assert set(files) == {"model.safetensors", "model.json"}
    assert main(_train_argv(shared_data, out, "--lr", "1e6")) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]     # (the progress bar also writes here)
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("recircuit train: error: training destroyed the model") and "chance level" in lines[0]
    assert {f.name: f.read_bytes() for f in out.iterdir()} == files   # byte-identical, nothing added


def test_train_cli_refuses_a_broken_init_checkpoint_in_one_line(shared_data, tmp_path, capsys):
    from recircuit.models import tiny_model
    from recircuit.train import save_checkpoint

    st, _ = save_checkpoint(tiny_model(0), tmp_path / "run" / "model")
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])          # truncated
    assert main(_train_argv(shared_data, tmp_path / "next", "--max-steps", "1", "--init", str(st))) == 2
    err = capsys.readouterr().err
    assert str(st) in err and "sha256" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "next").exists()


def test_train_cli_writes_test_scores_that_reproduce_the_auc(shared_data, tmp_path, capsys):
    from recircuit.metrics import classification_metrics

    out = tmp_path / "run"
    assert main(["train", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"), "--mode", "full",
                 "--n-train", "8", "--n-valid", "8", "--batch-size", "4", "--max-steps", "1", "--test",
                 "--n-test", "16", "--json", "--out", str(out)]) == 0
    row = json.loads(capsys.readouterr().out)
    saved = json.loads((out / "test_scores.json").read_text())
    assert row["test_scores"] == str(out / "test_scores.json")
    assert len(saved["uids"]) == len(set(saved["uids"])) == len(saved["labels"]) == 16
    m = classification_metrics(saved["labels"], saved["p_yes"])
    assert abs(m["auc"] - row["test_auc"]) < 1e-6
    # whether the kept weights answer one way is in the row: every validation, and the test set
    assert row["one_answer"] is bool(json.loads((out / "model.json").read_text())["metrics"].get("one_answer", False))
    assert row["test_yes_share"] == sum(p > 0.5 for p in saved["p_yes"]) / 16
