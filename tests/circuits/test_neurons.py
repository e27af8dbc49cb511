"""Node attribution (MLP neurons and heads, both directions): EAP against the derivative of exact
node patching, EAP-IG against the exact effect, per family; saving; bad input."""

import numpy as np
import pytest
import torch

from recircuit.circuits.neurons import (
    NodeAttributionConfig,
    NodeScores,
    node_attribution,
    node_patch_effect,
    top_nodes,
)
from recircuit.errors import InputError
from recircuit.models import tiny_model


def _probe_nodes(model) -> list[tuple[str, int, int]]:
    L, H, D = model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_mlp
    return [("neuron", 0, 3), ("neuron", L - 1, D - 5), ("head", 0, 1), ("head", L - 1, H - 1)]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_eap_is_the_derivative_of_exact_node_patching(pairs, family):
    model = tiny_model(0, family=family)
    clean, corrupted = pairs[0][:2], pairs[1][:2]
    res = node_attribution(model, clean, corrupted, NodeAttributionConfig(method="eap", progress=False))
    eps = 1e-2
    for direction in ("denoising", "noising"):
        for node in _probe_nodes(model):
            up = node_patch_effect(model, clean, corrupted, node, direction, scale=eps)
            down = node_patch_effect(model, clean, corrupted, node, direction, scale=-eps)
            fd = (up - down) / (2 * eps)                      # central difference: error O(eps^2)
            assert res.score(node, direction) == pytest.approx(fd, rel=2e-2, abs=2e-5), (direction, node)


def test_directions_differ_and_eap_ig_follows_the_exact_effect(pairs):
    model = tiny_model(0)
    clean, corrupted = pairs[0][:4], pairs[1][:4]
    eap = node_attribution(model, clean, corrupted, NodeAttributionConfig(method="eap", progress=False))
    ig = node_attribution(model, clean, corrupted, NodeAttributionConfig(method="eap-ig", steps=8, progress=False))
    assert not torch.allclose(eap.neurons["noising"], -eap.neurons["denoising"], atol=1e-6)   # asymmetric
    assert not torch.allclose(ig.neurons["noising"], -ig.neurons["denoising"], atol=1e-6)
    nodes = [n for n, _ in top_nodes(eap, "denoising", 8)]
    exact = [node_patch_effect(model, clean, corrupted, n, "denoising") for n in nodes]
    est = [ig.score(n, "denoising") for n in nodes]
    assert np.corrcoef(exact, est)[0, 1] > 0.9
    assert ig.clean_metric == pytest.approx(eap.clean_metric) and ig.n_samples == 4
    assert ig.neurons["denoising"].shape == (model.cfg.n_layers, model.cfg.d_mlp)
    assert ig.heads["noising"].shape == (model.cfg.n_layers, model.cfg.n_heads)


def test_batching_does_not_change_the_scores(pairs):
    model = tiny_model(0)
    clean, corrupted = pairs[0][:4], pairs[1][:4]
    one = node_attribution(model, clean, corrupted, NodeAttributionConfig(batch_size=4, progress=False))
    two = node_attribution(model, clean, corrupted, NodeAttributionConfig(batch_size=1, progress=False))
    for d in ("denoising", "noising"):
        torch.testing.assert_close(one.neurons[d], two.neurons[d], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(one.heads[d], two.heads[d], rtol=1e-4, atol=1e-6)


def test_scores_round_trip_and_tampering_is_refused(pairs, tmp_path):
    model = tiny_model(0)
    res = node_attribution(model, pairs[0][:2], pairs[1][:2],
                           NodeAttributionConfig(directions=("noising",), progress=False), metadata={"m": "tiny"})
    from recircuit.circuits.engine import make_pair_batch, run_logits
    from recircuit.circuits.metrics import get_metric
    from recircuit.models.scoring import answer_tokens

    pair = make_pair_batch(model.tokenizer, pairs[0][:2], pairs[1][:2], "cpu")
    with torch.no_grad():
        for run, got in ((pair.clean, res.clean_metric), (pair.corrupted, res.corrupted_metric)):
            want = get_metric("logit_diff")(run_logits(model, run), pair.labels, answer_tokens(model.tokenizer))
            assert got == pytest.approx(float(want.mean()), rel=1e-5, abs=1e-7)
    res.save(tmp_path)
    back = NodeScores.load(tmp_path)
    assert torch.equal(back.neurons["noising"], res.neurons["noising"]) and back.metadata == {"m": "tiny"}
    assert "denoising" not in back.heads and back.config == res.config
    raw = bytearray((tmp_path / "nodes.safetensors").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "nodes.safetensors").write_bytes(bytes(raw))
    with pytest.raises(InputError, match="sha256"):
        NodeScores.load(tmp_path)


def test_bad_settings_and_nodes_are_refused_in_one_line(pairs):
    with pytest.raises(InputError, match="method"):
        NodeAttributionConfig(method="acdc")
    with pytest.raises(InputError, match="directions"):
        NodeAttributionConfig(directions=("sideways",))
    with pytest.raises(InputError, match="steps"):
        NodeAttributionConfig(steps=0)
    model = tiny_model(0)
    with pytest.raises(InputError, match="outside the model"):
        node_patch_effect(model, pairs[0][:1], pairs[1][:1], ("neuron", 0, 10_000))
    with pytest.raises(InputError, match="corrupted"):
        node_attribution(model, pairs[0][:2], pairs[1][:1])


def test_pairs_of_different_lengths_left_aligned(pairs):
    """With ``align="left"`` only positions real in both prompts are patched; the longer prompt's own
    prefix keeps its value (EAP-IG must not overwrite it with zeros)."""
    from recircuit.data import make_sample

    model = tiny_model(0)
    clean = pairs[0][:3]
    corrupted = [make_sample(90 + i, [(0, "Omega (2001)", 5)], (900 + i, "Omega (2001)", 1), timestamp=i)
                 for i in range(3)]                                  # shorter prompts, other answers
    cfg = NodeAttributionConfig(method="eap", align="left", progress=False)
    res = node_attribution(model, clean, corrupted, cfg)
    eps = 1e-2
    for node in _probe_nodes(model)[:2]:
        up = node_patch_effect(model, clean, corrupted, node, "noising", align="left", scale=eps)
        down = node_patch_effect(model, clean, corrupted, node, "noising", align="left", scale=-eps)
        assert res.score(node, "noising") == pytest.approx((up - down) / (2 * eps), rel=2e-2, abs=2e-5)
    ig = node_attribution(model, clean, corrupted, NodeAttributionConfig(method="eap-ig", steps=8, align="left",
                                                                         progress=False))
    nodes = [n for n, _ in top_nodes(res, "noising", 8)]
    exact = [node_patch_effect(model, clean, corrupted, n, "noising", align="left") for n in nodes]
    assert np.corrcoef(exact, [ig.score(n, "noising") for n in nodes])[0, 1] > 0.9


def test_setting_every_node_to_its_own_value_changes_nothing_left_aligned(pairs):
    """EAP-IG's value override at alpha = 0 must be the plain run, also where only one prompt is real."""
    from recircuit.circuits.engine import Frozen, make_pair_batch, run_logits
    from recircuit.circuits.metrics import get_metric
    from recircuit.circuits.neurons import _gradient_pass, _names, _record
    from recircuit.data import make_sample
    from recircuit.models.scoring import answer_tokens

    model = tiny_model(0)
    clean = pairs[0][:3]
    corrupted = [make_sample(90 + i, [(0, "Omega (2001)", 5)], (900 + i, "Omega (2001)", 1), timestamp=i)
                 for i in range(3)]
    pair = make_pair_batch(model.tokenizer, clean, corrupted, "cpu", "left")
    assert bool((pair.mask != pair.clean.attention_mask).any())          # the clean prompts are longer
    names, metric, answers = _names(model), get_metric("logit_diff"), answer_tokens(model.tokenizer)
    own = _record(model, pair.clean, names, pair.mask)
    sums = {n: torch.zeros(own[n].shape[2]) for n in names}
    resid = []

    def keep(t, *, hook):
        resid.append(t.detach().clone())
        return t

    with torch.no_grad(), model.hooks(fwd_hooks=[("ln_final.hook_in", keep)]):
        plain = metric(run_logits(model, pair.clean), pair.labels, answers)
    with Frozen(model), model.hooks(fwd_hooks=[("ln_final.hook_in", keep)]):
        m = _gradient_pass(model, pair.clean, pair.labels, answers, metric, {n: torch.zeros_like(own[n]) for n in names},
                           sums, 1.0, values=own, mask=pair.mask)
    torch.testing.assert_close(m, plain, rtol=1e-5, atol=1e-6)
    real = pair.clean.attention_mask > 0          # every real position of the run, the clean-only prefix included
    torch.testing.assert_close(resid[1][real], resid[0][real], rtol=1e-5, atol=1e-5)
