"""The norm shortcut (``skip_unhooked_norm_stats``): bit-identical outputs, and hooks still see their values."""

import torch

from recircuit.models import copy_model, plain_forward, tokenize_prompts
from recircuit.models.loading import NativeNormBridge, NativeRMSNormBridge, _shortcut_classes


def _library_norms(model):
    """The same model with every shortcut norm put back to TransformerLens' own class."""
    back = {v: k for k, v in _shortcut_classes().items()}
    for m in model.modules():
        if type(m) in back:
            m.__class__ = back[type(m)]
    return model


def test_shortcut_norms_are_bit_identical_and_hooks_still_fire(family_model, toy_samples):
    fast = family_model
    n_fast = sum(isinstance(m, (NativeNormBridge, NativeRMSNormBridge)) for m in fast.modules())
    if fast.cfg.architecture and "GPT2" in str(fast.cfg.architecture):
        assert n_fast == 0                   # GPT-2's norms run the python path: left as they are
    ref = _library_norms(copy_model(fast))
    assert not any(isinstance(m, (NativeNormBridge, NativeRMSNormBridge)) for m in ref.modules())
    b = tokenize_prompts(fast.tokenizer, [s.prompt for s in toy_samples[:4]])
    # training mode with gradients, and plain scoring, both bit-identical
    for plain in (False, True):
        ctx = plain_forward if plain else (lambda m: torch.enable_grad())
        with ctx(fast):
            a = fast(b.input_ids, attention_mask=b.attention_mask, return_type="logits")
        with ctx(ref):
            r = ref(b.input_ids, attention_mask=b.attention_mask, return_type="logits")
        assert torch.equal(a, r)
    # a cache of the norm's hook points holds the same values as the library's path
    names = [n for n in fast.hook_dict if n.endswith("hook_normalized") or n.endswith("hook_scale")]
    assert names
    with torch.no_grad():
        _, ca = fast.run_with_cache(b.input_ids, attention_mask=b.attention_mask, names_filter=names)
        _, cr = ref.run_with_cache(b.input_ids, attention_mask=b.attention_mask, names_filter=names)
    assert set(ca.keys()) == set(cr.keys()) == set(names)
    for n in names:
        assert torch.equal(ca[n], cr[n]), n
    # an editing hook on hook_normalized still changes the output (the library's path runs)
    name = "ln_final.hook_normalized"      # (ln1 edits do not reach split q/k/v inputs in TL 4.3, either path)

    def zero(t, *, hook):
        return torch.zeros_like(t)

    with torch.no_grad(), fast.hooks(fwd_hooks=[(name, zero)]):
        edited = fast(b.input_ids, attention_mask=b.attention_mask, return_type="logits")
    with torch.no_grad():
        plain_out = fast(b.input_ids, attention_mask=b.attention_mask, return_type="logits")
    assert not torch.equal(edited, plain_out)


def test_the_llama_family_gets_the_shortcut(tiny):
    assert sum(isinstance(m, NativeRMSNormBridge) for m in tiny.modules()) == 2 * tiny.cfg.n_layers + 1
