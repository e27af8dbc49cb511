import json

import pytest

from recircuit.cli import build_parser, main


def _argv(shared_data, out, *extra):
    return ["unlearn", "--method", "npo", "--model", "tiny", "--data-dir", str(shared_data / "ml-100k"),
            "--n-train", "40", "--per-user", "4", "--forget-fraction", "0.2", "--steps", "2", "--out", str(out),
            "--json", *extra]


def test_unlearn_command_writes_model_and_audit_and_a_destroyed_run_replaces_nothing(shared_data, tmp_path, capsys):
    rc = main(_argv(shared_data, tmp_path, "--npo-beta", "0.2"))
    assert rc == 0
    row = json.loads(capsys.readouterr().out)
    audit = json.loads((tmp_path / "audit.json").read_text())
    assert row["forget_samples"] == audit["forgotten"]["n"] > 0
    assert audit["model_sha256"]["before"] != audit["model_sha256"]["after"]
    assert audit["status"] == row["status"] == "ok"
    assert audit["config"]["method"] == {"npo_beta": 0.2, "retain_weight": 1.0}
    good = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert "model.safetensors" in good

    # --lr 1e6 destroys the model (P(Yes) constant): non-zero exit, one line, nothing replaced
    rc = main(_argv(shared_data, tmp_path, "--lr", "1e6"))
    err = capsys.readouterr().err
    assert rc != 0
    lines = [ln for ln in err.splitlines() if ln.startswith("recircuit") or "WARNING" in ln]
    assert len(lines) == 1 and "destroyed" in lines[0] and "not saved" in lines[0], err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "audit.failed.json"} == good
    failed = json.loads((tmp_path / "audit.failed.json").read_text())
    assert failed["status"] == "destroyed" and failed["config"]["loop"]["lr"] == 1e6


def test_unlearn_restored_run_exits_nonzero_with_status(shared_data, tmp_path, capsys):
    rc = main(_argv(shared_data, tmp_path, "--lr", "1e30"))
    err = capsys.readouterr().err
    assert rc != 0 and "status restored" in err and "Traceback" not in err
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "audit.json").exists()
    failed = json.loads((tmp_path / "audit.failed.json").read_text())
    assert failed["status"] == "restored" and "restored the weights" in failed["extra"]["stopped"]


@pytest.mark.parametrize("fraction", ["1.5", "-0.2", "0", "1"])
def test_bad_forget_fraction_is_one_line_before_any_work(tmp_path, capsys, fraction):
    # no --data-dir: the check must come before any data is read
    rc = main(["unlearn", "--model", "tiny", "--forget-fraction", fraction, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--forget-fraction" in err and "between 0 and 1" in err
    assert not (tmp_path / "x").exists()


def test_method_flags_come_from_the_method_configs(tmp_path, capsys):
    from recircuit.cli.unlearn import check_args

    parser = build_parser()
    args = parser.parse_args(["unlearn", "--method", "cure", "--forget-rule", "ga", "--npo-beta", "0.2",
                              "--grouping-top-k", "0.3", "--ga-bound", "none"])
    loop, cfg = check_args(args)
    assert (cfg.forget_rule, cfg.npo_beta, cfg.grouping.top_k, cfg.ga_bound) == ("ga", 0.2, 0.3, None)
    assert cfg.grouping.mode == "topk" and loop.steps == 30
    # a flag of another method is refused, naming it and the method's own flags
    rc = main(["unlearn", "--method", "ga", "--npo-beta", "0.2", "--model", "tiny", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "--npo-beta" in err and "--ga-bound" in err
    # an invalid value names its flag
    rc = main(["unlearn", "--method", "cure", "--forget-rule", "magic", "--model", "tiny", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "--forget-rule" in err and "npo" in err
    # an exact method changes no checkpoint: the command refuses it in one line, before any work
    rc = main(["unlearn", "--method", "apa", "--model", "tiny", "--out", str(tmp_path / "apa")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "exact method" in err and not (tmp_path / "apa").exists()


def test_unlearn_from_a_lora_checkpoint_saves_the_unlearned_model_whole(shared_data, tmp_path, capsys):
    """The methods update base weights: a LoRA checkpoint is merged first and saved full, and the
    saved file is the audited model; a good run removes an earlier run's audit.failed.json."""
    import torch

    from recircuit.evaluate import model_hash
    from recircuit.models import load_model
    from recircuit.train import LoraConfig, attach_lora, lora_modules, save_checkpoint
    from recircuit.train.checkpoint import load_trained, read_meta

    ft = load_model("tiny")
    attach_lora(ft, LoraConfig(rank=2))
    torch.manual_seed(0)
    for d in lora_modules(ft).values():
        torch.nn.init.normal_(d.B, std=0.1)
    save_checkpoint(ft, tmp_path / "ft" / "model")
    out = tmp_path / "out"
    assert main(_argv(shared_data, out, "--checkpoint", str(tmp_path / "ft" / "model"), "--lr", "1e30")) != 0
    assert (out / "audit.failed.json").exists()
    capsys.readouterr()

    rc = main(_argv(shared_data, out, "--checkpoint", str(tmp_path / "ft" / "model"), "--lr", "1e-3"))
    assert rc == 0, capsys.readouterr().err
    audit = json.loads((out / "audit.json").read_text())
    assert read_meta(out / "model")["kind"] == "full"
    saved, _ = load_trained(out / "model")
    assert model_hash(saved) == audit["model_sha256"]["after"] != audit["model_sha256"]["before"]
    assert not (out / "audit.failed.json").exists()
