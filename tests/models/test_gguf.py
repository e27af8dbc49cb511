"""GGUF checkpoints: load_model on a GGUF file (written here from a tiny random Llama), convert_gguf, refusals."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from recircuit.errors import InputError
from recircuit.models import answer_tokens, convert_gguf, load_model, score
from recircuit.models.loading import ModelLoadError, find_gguf
from recircuit.models.tokenize import encode_prompt, prompt_prefix

PROMPTS = [
    "User Preference: \"Alpha (1990)\", \"Beta (1991)\". Will the user like \"Gamma (1992)\"?",
    "User Unpreference: \"Delta (1993)\". Yes. No.",
]


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, return_type="logits")


def test_gguf_loads_with_the_source_models_logits(tiny_gguf, tiny_llama_hf):
    hf, tok = tiny_llama_hf
    model = load_model(str(tiny_gguf), device="cpu")
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 64 and model.cfg.d_vocab == len(tok)
    # the tokenizer comes from the file and tokenizes as the source's does (no BOS: the file says so)
    assert prompt_prefix(model.tokenizer) == []
    for p in PROMPTS:
        assert encode_prompt(model.tokenizer, p) == encode_prompt(tok, p)
    assert answer_tokens(model.tokenizer) == answer_tokens(tok)
    ids = torch.tensor([encode_prompt(tok, PROMPTS[0])])
    ref = copy.deepcopy(hf).eval()
    with torch.no_grad():
        expected = ref(ids).logits
    got = _logits(model, ids)
    assert expected.abs().max() > 0.1, "the reference logits must not be trivially small"
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # a directory holding that one GGUF (and no config.json) names it too
    assert find_gguf(tiny_gguf.parent) == tiny_gguf


def test_gguf_bos_setting_reaches_the_tokenizer(tiny_llama_hf, gguf_writer, tmp_path):
    hf, tok = tiny_llama_hf
    path = gguf_writer(tmp_path / "bos.gguf", hf, tok, add_bos=True)
    model = load_model(str(path), device="cpu")
    assert prompt_prefix(model.tokenizer) == [tok.eos_token_id]
    ids = encode_prompt(model.tokenizer, PROMPTS[0])
    assert ids[0] == tok.eos_token_id and ids.count(tok.eos_token_id) == 1


def test_convert_writes_a_directory_with_the_same_logits(tiny_gguf, tmp_path):
    out = convert_gguf(tiny_gguf, tmp_path / "hf")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names, names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names), "safetensors only, never pickle"
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary directory left behind"

    from_gguf = load_model(str(tiny_gguf), device="cpu")
    from_dir = load_model(str(out), device="cpu")
    ids = torch.tensor([encode_prompt(from_gguf.tokenizer, p) for p in PROMPTS[:1]])
    assert torch.equal(_logits(from_dir, ids), _logits(from_gguf, ids))
    for p in PROMPTS:
        assert encode_prompt(from_dir.tokenizer, p) == encode_prompt(from_gguf.tokenizer, p)
    assert (score(from_dir, PROMPTS, progress=False) == score(from_gguf, PROMPTS, progress=False)).all()


def test_convert_refuses_a_non_empty_output_unless_told(tiny_gguf, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty.*overwrite"):
        convert_gguf(tiny_gguf, out)
    assert (out / "keep.txt").read_text() == "mine"
    convert_gguf(tiny_gguf, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (convert_gguf(tiny_gguf, empty) / "config.json").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        convert_gguf(tiny_gguf, tmp_path / "afile")


def test_garbage_gguf_is_refused(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ModelLoadError, match=r"model\.gguf.*not a GGUF file"):
        load_model(str(bad), device="cpu")
    with pytest.raises(InputError, match="not a GGUF file"):
        convert_gguf(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 12)
    with pytest.raises(ModelLoadError, match=r"cut\.gguf.*not a readable GGUF file"):
        load_model(str(truncated), device="cpu")


def test_unsupported_architecture_is_refused(tiny_llama_hf, gguf_writer, tmp_path):
    hf, tok = tiny_llama_hf
    path = gguf_writer(tmp_path / "odd.gguf", hf, tok, arch="grok")
    with pytest.raises(ModelLoadError) as info:
        load_model(str(path), device="cpu")
    msg = str(info.value)
    assert "odd.gguf" in msg and "'grok'" in msg and "not supported" in msg  # names the file and what transformers said
    assert "llama" in msg and "convert_hf_to_gguf" in msg and "\n" not in msg  # what it reads, and the fix


def test_directory_with_several_ggufs_is_ambiguous(tiny_gguf, tmp_path):
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(tiny_gguf.read_bytes())
    with pytest.raises(ModelLoadError, match="2 GGUF files"):
        load_model(str(tmp_path), device="cpu")
    (tmp_path / "a.gguf").unlink()
    (tmp_path / "b.gguf").unlink()
    with pytest.raises(ModelLoadError, match="neither a Hugging Face model directory.*nor a GGUF file"):
        load_model(str(tmp_path), device="cpu")
