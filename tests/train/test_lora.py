import pytest
import torch

from recircuit.models import family_of, projections, tiny_model
from recircuit.train import (
    LoraConfig,
    attach_lora,
    combine_adapters,
    detach_lora,
    load_combined,
    lora_modules,
    lora_state_dict,
    merge_lora,
    set_lora_enabled,
    unmerge_lora,
)


def _ids(m):
    return m.tokenizer(["User Preference: \"Alpha (1990)\" Yes No"], return_tensors="pt")["input_ids"]


def _randomize(adapters):
    for d in adapters.values():
        torch.nn.init.normal_(d.B, std=0.05)


def test_lora_output_equals_merged_weights():
    m = tiny_model(0)
    ids = _ids(m)
    base = m(ids, return_type="logits").detach()
    ad = attach_lora(m, LoraConfig(targets=("q", "k", "v", "o", "gate", "up", "down")))
    _randomize(ad)
    m.eval()
    with torch.no_grad():
        adapted = m(ids, return_type="logits")
        assert (adapted - base).abs().max() > 1e-3
        set_lora_enabled(m, False)
        torch.testing.assert_close(m(ids, return_type="logits"), base)  # unmerged, switched off
        set_lora_enabled(m, True)
        merge_lora(m)
        assert not lora_modules(m)
        torch.testing.assert_close(m(ids, return_type="logits"), adapted, atol=1e-5, rtol=1e-5)


def test_detach_restores_base_and_double_attach_refused():
    m = tiny_model(0)
    ids = _ids(m)
    base = m(ids, return_type="logits").detach()
    _randomize(attach_lora(m))
    with pytest.raises(RuntimeError, match="already has LoRA"):
        attach_lora(m)
    detach_lora(m)
    with torch.no_grad():
        assert torch.equal(m(ids, return_type="logits"), base)


def test_hooks_fire_and_only_adapters_get_gradients():
    m = tiny_model(0)
    ad = attach_lora(m, LoraConfig(targets=("q", "v", "o")))
    _randomize(ad)
    fired = []
    hooks = [(f"blocks.{i}.{h}", lambda t, hook: fired.append(hook.name)) for i in range(2)
             for h in ("attn.hook_result", "hook_q_input", "hook_k_input", "hook_v_input", "hook_mlp_in")]
    with m.hooks(fwd_hooks=hooks):
        out = m(_ids(m), return_type="logits")
    assert len(set(fired)) == 10
    out.sum().backward()
    adapter_params = {id(p) for d in ad.values() for p in d.parameters()}
    for p in m.parameters():
        if id(p) in adapter_params:
            assert p.grad is not None and p.grad.abs().sum() > 0
        else:
            assert p.grad is None


def test_adapter_combination_matches_formulas():
    torch.manual_seed(0)
    a1 = {"blocks.0.q.A": torch.randn(2, 5), "blocks.0.q.B": torch.randn(3, 2)}
    a2 = {"blocks.0.q.A": torch.randn(2, 5), "blocks.0.q.B": torch.randn(3, 2)}
    w = [0.25, 0.75]
    ab = combine_adapters([a1, a2], w, level="ab")
    torch.testing.assert_close(ab["blocks.0.q.A"], 0.25 * a1["blocks.0.q.A"] + 0.75 * a2["blocks.0.q.A"])
    torch.testing.assert_close(ab["blocks.0.q.B"], 0.25 * a1["blocks.0.q.B"] + 0.75 * a2["blocks.0.q.B"])
    ba = combine_adapters([a1, a2], w, level="ba")
    ref = 0.25 * a1["blocks.0.q.B"] @ a1["blocks.0.q.A"] + 0.75 * a2["blocks.0.q.B"] @ a2["blocks.0.q.A"]
    torch.testing.assert_close(ba["blocks.0.q.delta"], ref)
    assert not torch.allclose(ab["blocks.0.q.B"] @ ab["blocks.0.q.A"], ref)  # the two levels differ
    with pytest.raises(ValueError, match="one weight per adapter"):
        combine_adapters([a1], w)


def test_state_dict_names():
    m = tiny_model(0)
    attach_lora(m, LoraConfig(rank=4, targets=("q",)))
    sd = lora_state_dict(m)
    assert sorted(sd) == ["blocks.0.q.A", "blocks.0.q.B", "blocks.1.q.A", "blocks.1.q.B"]
    assert sd["blocks.0.q.A"].shape == (4, 64)


def test_unmerge_restores_adapters_and_base():
    m = tiny_model(0)
    ids = _ids(m)
    base = m(ids, return_type="logits").detach()
    _randomize(attach_lora(m, LoraConfig(targets=("q", "v", "up"))))
    m.eval()
    state = lora_state_dict(m)
    with torch.no_grad():
        adapted = m(ids, return_type="logits")
        merge_lora(m)
        unmerge_lora(m)
        assert sorted(lora_modules(m)) == sorted(k[:-2] for k in state if k.endswith(".A"))
        for k, v in lora_state_dict(m).items():
            assert torch.equal(v, state[k])
        torch.testing.assert_close(m(ids, return_type="logits"), adapted, atol=1e-5, rtol=1e-5)
        detach_lora(m)
        torch.testing.assert_close(m(ids, return_type="logits"), base, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="No merged LoRA"):
        unmerge_lora(m)


def _trained_adapter(seed: int, cfg: LoraConfig) -> dict:
    m = tiny_model(0)
    torch.manual_seed(seed)
    ad = attach_lora(m, cfg)
    _randomize(ad)
    return lora_state_dict(m)


def test_combined_adapters_load_into_a_model():
    cfg = LoraConfig(rank=4, alpha=8, targets=("q", "v"))
    s1, s2 = _trained_adapter(1, cfg), _trained_adapter(2, cfg)
    w = (0.3, 0.7)
    ids = _ids(tiny_model(0))
    # reference for the BA level: fold w_i-scaled adapters into the weights one after the other
    ref = tiny_model(0)
    for s, wi in zip((s1, s2), w):
        attach_lora(ref, cfg)
        scaled = {k: v * wi if k.endswith(".B") else v for k, v in s.items()}
        for name, d in lora_modules(ref).items():
            d.A.data.copy_(scaled[f"{name}.A"])
            d.B.data.copy_(scaled[f"{name}.B"])
        merge_lora(ref)
    ba = tiny_model(0)
    load_combined(ba, combine_adapters([s1, s2], w, level="ba"), cfg)
    assert not lora_modules(ba)
    with torch.no_grad():
        torch.testing.assert_close(ba(ids, return_type="logits"), ref(ids, return_type="logits"), atol=1e-5, rtol=1e-5)
    # the A/B level becomes one ordinary (trainable) adapter with the combined tensors
    ab = tiny_model(0)
    combined = combine_adapters([s1, s2], w, level="ab")
    load_combined(ab, combined, cfg)
    got = lora_state_dict(ab)
    assert sorted(got) == sorted(combined)
    for k in got:
        torch.testing.assert_close(got[k], combined[k])
    assert all(p.requires_grad for d in lora_modules(ab).values() for p in d.parameters())


def _all_targets(m):
    return family_of(m).projections


def test_lora_on_every_family_equals_its_merged_weights(family_model):
    """Linear and Conv1D layouts: the adapted forward, the merged weights and unmerge agree."""
    m = family_model
    ids = _ids(m)
    with torch.no_grad():
        base = m(ids, return_type="logits")
    ad = attach_lora(m, LoraConfig(targets=_all_targets(m)))
    assert len(ad) == 2 * len(_all_targets(m))
    _randomize(ad)
    m.eval()
    with torch.no_grad():
        adapted = m(ids, return_type="logits")
        assert (adapted - base).abs().max() > 1e-3
        projs = projections(m)
        for name, d in ad.items():                # A is [rank, in], B [out, rank] in every layout
            assert d.A.shape == (8, projs[name].in_features) and d.B.shape == (projs[name].out_features, 8)
        merge_lora(m)
        torch.testing.assert_close(m(ids, return_type="logits"), adapted, atol=1e-5, rtol=1e-5)
        unmerge_lora(m)
        torch.testing.assert_close(m(ids, return_type="logits"), adapted, atol=1e-5, rtol=1e-5)
        detach_lora(m)
        torch.testing.assert_close(m(ids, return_type="logits"), base, atol=1e-5, rtol=1e-5)


def test_ba_combination_on_a_conv1d_family():
    cfg = LoraConfig(rank=4, alpha=8, targets=("q", "o", "down"))
    m = tiny_model(0, family="gpt2")
    _randomize(attach_lora(m, cfg))
    m.eval()
    ids = _ids(m)
    state = lora_state_dict(m)
    with torch.no_grad():
        adapted = m(ids, return_type="logits")
        fresh = tiny_model(0, family="gpt2")
        load_combined(fresh, combine_adapters([state], [1.0], level="ba"), cfg)
        torch.testing.assert_close(fresh(ids, return_type="logits"), adapted, atol=1e-5, rtol=1e-5)


def test_a_target_the_family_lacks_is_refused_before_any_change():
    from recircuit.errors import InputError

    m = tiny_model(0, family="gpt2")
    with pytest.raises(InputError, match=r"'gpt2' has no \['gate'\]"):
        attach_lora(m, LoraConfig(targets=("q", "gate")))
    assert not lora_modules(m) and all(p.requires_grad for p in m.parameters())
    with pytest.raises(InputError, match="unknown LoRA targets"):
        LoraConfig(targets=("qkv",))


def test_lora_fine_tune_runs_on_every_family(family_model, toy_samples):
    from recircuit.train import TrainConfig, train

    m = family_model
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    cfg = TrainConfig(mode="lora", lr=1e-2, batch_size=4, max_steps=2, warmup_ratio=0.0,
                      lora=LoraConfig(rank=4, targets=("q", "v")))
    res = train(m, toy_samples[:8], toy_samples[8:], cfg, progress=False)
    assert len(res.history) >= 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)
    # only the adapters trained: every base parameter (adapted ones under their parametrization) is bit-identical
    after = {n.replace("parametrizations.weight.original", "weight"): p for n, p in m.named_parameters()}
    assert set(before) <= set(after)
    assert all(torch.equal(before[n], after[n]) for n in before)
    ad = lora_modules(m)
    assert len(ad) == 4 and any(d.B.abs().sum() > 0 for d in ad.values())   # the adapters moved
