"""``recircuit models convert``: a GGUF file to a Hugging Face directory, errors as one line."""

from __future__ import annotations

import json

import torch

from recircuit.cli import main
from recircuit.models import load_model


def test_models_convert_writes_a_loadable_directory(tiny_gguf, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["models", "convert", str(tiny_gguf), str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["out_dir"] == str(out) and "model.safetensors" in report["files"]
    ids = torch.tensor([[5, 17, 42, 384]])
    with torch.no_grad():
        a = load_model(str(out), device="cpu")(ids, return_type="logits")
        b = load_model(str(tiny_gguf), device="cpu")(ids, return_type="logits")
    assert torch.equal(a, b)

    # an existing, non-empty output: one line naming it and the fix, nothing replaced
    capsys.readouterr()  # drop the loads' progress bars
    assert main(["models", "convert", str(tiny_gguf), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recircuit models: error:") and str(out) in err and "--overwrite" in err and "\n" not in err
    assert main(["models", "convert", str(tiny_gguf), str(out), "--overwrite", "--json"]) == 0


def test_models_convert_reports_a_bad_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "junk.gguf"
    bad.write_bytes(b"\x00" * 64)
    assert main(["models", "convert", str(bad), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "junk.gguf" in err and "not a GGUF file" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
