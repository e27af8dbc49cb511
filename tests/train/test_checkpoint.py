"""Checkpoints you can trust: sha256 in the sidecar, strict keys, readable errors, atomic saves."""

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from recircuit._io import sha256_file
from recircuit.errors import InputError
from recircuit.models import tiny_model
from recircuit.train import (
    attach_lora,
    load_checkpoint,
    load_trained,
    lora_modules,
    read_meta,
    save_checkpoint,
)
from recircuit.train.checkpoint import FORMAT, LEGACY_FORMATS


def _perturbed(seed: int = 0):
    """A tiny model whose weights differ from ``tiny_model(seed)``, so a load is visible."""
    m = tiny_model(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01)
    return m


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _rehash(js):
    """Make the sidecar agree with the (edited) weights file, to test the checks behind the hash."""
    meta = json.loads(js.read_text())
    meta["weights"]["sha256"] = sha256_file(js.with_suffix(".safetensors"))
    js.write_text(json.dumps(meta))


@pytest.fixture
def full_ckpt(tmp_path):
    m = _perturbed()
    st, js = save_checkpoint(m, tmp_path / "model", {"seed": 0})
    return st, js, _weights(m)


@pytest.fixture
def lora_ckpt(tmp_path):
    m = tiny_model(0)
    for d in attach_lora(m).values():
        torch.nn.init.normal_(d.B, std=0.02)
    return save_checkpoint(m, tmp_path / "adapter")


def test_sidecar_records_the_sha256_of_the_weights(full_ckpt, lora_ckpt):
    for st, js in (full_ckpt[:2], lora_ckpt):
        meta = read_meta(js)
        assert meta["format"] == FORMAT
        assert meta["weights"] == {"file": st.name, "sha256": sha256_file(st), "tensors": len(load_file(str(st)))}
    assert read_meta(full_ckpt[1])["weights"]["tensors"] == 22
    fresh = tiny_model(0)
    load_checkpoint(fresh, full_ckpt[0])
    assert _same(_weights(fresh), full_ckpt[2])


def test_caller_meta_cannot_override_what_save_checkpoint_writes(tmp_path):
    st, js = save_checkpoint(tiny_model(0), tmp_path / "m", {"kind": "lora", "weights": {"sha256": "0" * 64}, "x": 1})
    meta = read_meta(js)
    assert meta["kind"] == "full" and meta["weights"]["sha256"] == sha256_file(st) and meta["x"] == 1


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_a_changed_weights_file_is_refused_by_its_sha256(full_ckpt, lora_ckpt, kind):
    st, js = full_ckpt[:2] if kind == "full" else lora_ckpt
    tensors = load_file(str(st))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1.0                       # a valid file, other numbers
    save_file(tensors, str(st))
    model = tiny_model(0)
    before = _weights(model)
    with pytest.raises(InputError, match=r"sha256 .* does not match") as info:
        load_checkpoint(model, js)
    assert str(st) in str(info.value) and "retrain" in str(info.value)
    assert _same(_weights(model), before) and not lora_modules(model)


def test_a_truncated_weights_file_is_an_input_error_not_a_traceback(full_ckpt):
    st, js, _ = full_ckpt
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    with pytest.raises(InputError, match="sha256") as info:
        load_checkpoint(tiny_model(0), st)
    assert str(info.value).startswith(str(st))
    _rehash(js)                                               # behind the hash: safetensors cannot parse it
    with pytest.raises(InputError, match="not a readable safetensors file, truncated or corrupt") as info:
        load_checkpoint(tiny_model(0), st)
    assert str(info.value).startswith(str(st)) and "\n" not in str(info.value)


@pytest.mark.parametrize("keep", [0, 13])
def test_a_partial_state_dict_is_refused_naming_missing_tensors(full_ckpt, keep):
    st, js, _ = full_ckpt
    tensors = load_file(str(st))
    assert len(tensors) == 22
    kept = dict(sorted(tensors.items())[:keep])
    save_file(kept, str(st))
    _rehash(js)
    model = tiny_model(0)
    before = _weights(model)
    with pytest.raises(InputError, match=f"lacks {22 - keep} of the 22 model tensors") as info:
        load_checkpoint(model, js)
    first_missing = sorted(set(tensors) - set(kept))[0].removeprefix("full.")
    assert str(st) in str(info.value) and first_missing in str(info.value)
    assert _same(_weights(model), before)                     # nothing was half-loaded


def test_unexpected_and_misshaped_tensors_are_refused(full_ckpt):
    st, js, _ = full_ckpt
    tensors = load_file(str(st))
    save_file({**tensors, "full.blocks.9.attn.q.weight": torch.zeros(2, 2)}, str(st))
    _rehash(js)
    with pytest.raises(InputError, match=r"has 1 tensors the model does not \(blocks\.9\.attn\.q\.weight\)"):
        load_checkpoint(tiny_model(0), js)
    save_file({**tensors, "full.ln_final.weight": torch.zeros(3)}, str(st))
    _rehash(js)
    with pytest.raises(InputError, match=r"wrong shape \(ln_final\.weight \(3,\) != "):
        load_checkpoint(tiny_model(0), js)


def test_a_lora_sidecar_without_its_adapter_file_is_an_input_error(lora_ckpt):
    st, js = lora_ckpt
    st.unlink()
    model = tiny_model(0)
    with pytest.raises(InputError, match="LoRA adapter file of sidecar adapter.json .* is missing") as info:
        load_checkpoint(model, js)
    assert str(info.value).startswith(str(st))
    assert not lora_modules(model)


def test_a_lora_sidecar_over_a_file_without_adapters_is_refused(lora_ckpt, full_ckpt):
    st, js = lora_ckpt
    st.write_bytes(full_ckpt[0].read_bytes())                 # full weights where the adapters should be
    _rehash(js)
    model = tiny_model(0)
    with pytest.raises(InputError, match="kind 'lora' but the file holds no adapter tensors"):
        load_checkpoint(model, js)
    assert not lora_modules(model)


def test_missing_adapter_tensors_are_refused_and_the_model_left_as_it_was(lora_ckpt):
    st, js = lora_ckpt
    tensors = load_file(str(st))
    save_file(dict(sorted(tensors.items())[1:]), str(st))
    _rehash(js)
    model = tiny_model(0)
    grads = [p.requires_grad for p in model.parameters()]
    with pytest.raises(InputError, match=f"lacks 1 of the {len(tensors)} adapter tensors"):
        load_checkpoint(model, js)
    assert not lora_modules(model) and [p.requires_grad for p in model.parameters()] == grads


def test_an_invalid_json_sidecar_names_the_file_line_and_column(full_ckpt):
    _, js, _ = full_ckpt
    js.write_text('{\n  "format": "recircuit.checkpoint/2",\n  "kind": full\n}\n')
    with pytest.raises(InputError, match=r"not valid JSON \(Expecting value at line 3 column 11\)") as info:
        read_meta(js)
    assert str(info.value).startswith(f"{js}:3: ") and info.value.line == 3
    js.write_bytes(b'{"format": "\xff"}')
    with pytest.raises(InputError, match="not UTF-8"):
        load_checkpoint(tiny_model(0), js)
    js.write_text("[1, 2]")
    with pytest.raises(InputError, match="not an object"):
        read_meta(js)


@pytest.mark.parametrize(("edit", "field"), [
    ({"format": "something/9"}, "format"),
    ({"kind": "half"}, "kind"),
    ({"base_model": None}, "base_model"),
    ({"weights": None}, "weights"),
    ({"weights": {"sha256": "abc"}}, "weights"),
])
def test_sidecar_fields_are_checked(full_ckpt, edit, field):
    _, js, _ = full_ckpt
    meta = json.loads(js.read_text())
    js.write_text(json.dumps({**meta, **edit}))
    with pytest.raises(InputError, match=f"field '{field}'"):
        load_checkpoint(tiny_model(0), js)


def test_a_lora_sidecar_without_its_config_is_refused(lora_ckpt):
    _, js = lora_ckpt
    meta = json.loads(js.read_text())
    js.write_text(json.dumps({**meta, "lora": None}))
    with pytest.raises(InputError, match="field 'lora'"):
        load_checkpoint(tiny_model(0), js)
    js.write_text(json.dumps({**meta, "lora": {"rank": 8, "colour": "red"}}))
    with pytest.raises(InputError, match="invalid LoRA config"):
        load_checkpoint(tiny_model(0), js)


def test_old_sidecars_without_a_hash_load_with_a_warning(full_ckpt, caplog):
    st, js, want = full_ckpt
    meta = json.loads(js.read_text())
    del meta["weights"]
    js.write_text(json.dumps({**meta, "format": LEGACY_FORMATS[0]}))
    fresh = tiny_model(0)
    with caplog.at_level(logging.WARNING, logger="recircuit.train.checkpoint"):
        load_checkpoint(fresh, js)
    assert _same(_weights(fresh), want)
    assert "carries no sha256" in caplog.text and "re-save" in caplog.text
    # the key checks still run for them
    save_file(dict(sorted(load_file(str(st)).items())[:13]), str(st))
    with pytest.raises(InputError, match="lacks 9 of the 22 model tensors"):
        load_checkpoint(tiny_model(0), js)


def test_a_failed_save_leaves_the_old_checkpoint_byte_identical(full_ckpt, monkeypatch):
    import recircuit.train.checkpoint as ckpt

    st, js, _ = full_ckpt
    before = (st.read_bytes(), js.read_bytes())

    def half_then_fail(tensors, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tiny_model(1), st, {"seed": 1})
    assert (st.read_bytes(), js.read_bytes()) == before
    assert sorted(f.name for f in st.parent.iterdir()) == ["model.json", "model.safetensors"]


def test_new_weights_with_the_old_sidecar_are_refused(full_ckpt, tmp_path):
    """An interrupted save can leave the new weights next to the old sidecar: the hash catches it."""
    st, js, _ = full_ckpt
    st2, _ = save_checkpoint(tiny_model(0), tmp_path / "other")
    st.write_bytes(st2.read_bytes())
    with pytest.raises(InputError, match="does not match"):
        load_checkpoint(tiny_model(0), js)


def test_load_trained_refuses_a_tiny_sidecar_without_its_shape(full_ckpt):
    _, js, want = full_ckpt
    model, _ = load_trained(js)
    assert _same(_weights(model), want)
    meta = json.loads(js.read_text())
    del meta["base_model"]["n_layers"]
    js.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="field 'base_model'"):
        load_trained(js)


@pytest.mark.parametrize("family", ["gpt2", "neox", "phi3"])
def test_full_and_lora_checkpoints_roundtrip_on_other_families(tmp_path, family):
    m = tiny_model(1, family=family)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01)
    save_checkpoint(m, tmp_path / "full")
    built, meta = load_trained(tmp_path / "full")
    assert meta["kind"] == "full" and _same(_weights(built), _weights(m))
    with pytest.raises(InputError, match="trained on base model"):
        load_checkpoint(tiny_model(1), tmp_path / "full")                # a Llama is not a {family}
    a = tiny_model(1, family=family)
    for d in attach_lora(a).values():
        torch.nn.init.normal_(d.B, std=0.02)
    save_checkpoint(a, tmp_path / "lora")
    b, meta = load_trained(tmp_path / "lora")
    assert meta["kind"] == "lora"
    for name, d in lora_modules(a).items():
        assert torch.equal(lora_modules(b)[name].B, d.B) and torch.equal(lora_modules(b)[name].A, d.A)


def test_save_stages_pid_tagged_temporaries_and_load_reuses_a_known_sha256(tmp_path, monkeypatch):
    """A killed save leaves temporaries a later clean_stale_temps can attribute; a verified file is hashed once."""
    import os

    import recircuit.cache as cache_mod
    import recircuit.train.checkpoint as ckpt
    from recircuit._io import temp_owner
    from recircuit.cache import file_sha256

    seen = []

    def killed(tensors, path):
        seen.append(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tiny_model(0), tmp_path / "model")
    assert temp_owner(os.path.basename(seen[0])) == os.getpid()
    assert not list(tmp_path.iterdir())                    # and nothing is left behind
    monkeypatch.undo()

    st, _ = save_checkpoint(tiny_model(0), tmp_path / "model")
    file_sha256(st)                                        # verified once (as a cache lookup does)
    calls = []
    for mod in (cache_mod, ckpt):
        monkeypatch.setattr(mod, "sha256_file", lambda p: calls.append(p) or "0" * 64)
    load_checkpoint(tiny_model(0), tmp_path / "model")
    assert calls == []
