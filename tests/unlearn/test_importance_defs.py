"""CURE's importance definitions: the metric it differentiates, and per-sample module importance."""

import json

import numpy as np
import pytest
import torch

from recircuit import unlearn as U
from recircuit.circuits import Circuit, attribute
from recircuit.circuits.attribute import (
    AttributionConfig,
    collect_writer_outputs,
    make_pair_batch,
    patched_metric,
)
from recircuit.circuits.corruptions import label_flip
from recircuit.circuits.metrics import logprob
from recircuit.errors import InputError
from recircuit.models import answer_tokens, tiny_model
from recircuit.unlearn.importance import module_importance, per_sample_module_importance


@pytest.fixture(scope="module")
def tiny0():
    return tiny_model(0)


def _fd_logprob_scores(model, clean, corr, eps=5e-2):
    """Exact patching of each edge to ``clean -/+ eps (clean - corrupt)`` under the logprob metric:
    the central difference ``(m(+) - m(-)) / 2 eps``, the derivative EAP estimates (error O(eps^2); a
    smaller eps drowns in float32 rounding of log-probs near -log(vocab))."""
    g = attribute(model, clean[:1], corr[:1], AttributionConfig(method="eap", progress=False)).graph
    pair = make_pair_batch(model.tokenizer, clean, corr, "cpu", align="left")
    ca, _ = collect_writer_outputs(model, g, pair.clean, pair.mask)
    ka, _ = collect_writer_outputs(model, g, pair.corrupted, pair.mask)
    ans = answer_tokens(model.tokenizer)
    full = torch.ones_like(g.edge_mask)
    edges = g.edge_mask.nonzero().tolist()
    keeps = full.repeat(len(edges), 1, 1)
    for j, (f, b) in enumerate(edges):
        keeps[j, f, b] = False
    # patching an edge to value k moves its reader's input by k - clean
    up = patched_metric(model, g, pair, ca + eps * (ca - ka), keeps, logprob, ans)
    down = patched_metric(model, g, pair, ca - eps * (ca - ka), keeps, logprob, ans)
    fd = torch.zeros(g.edge_mask.shape)
    for j, (f, b) in enumerate(edges):
        fd[f, b] = (up[j] - down[j]).mean() / (2 * eps)
    return g, fd


def test_logprob_importance_is_the_derivative_of_exact_patching(tiny0, request_data):
    """module_importance(metric="logprob") with EAP = aggregated finite-difference exact patching of log P(answer)."""
    forget = request_data[0][:4]
    corr = label_flip(forget)
    g, fd = _fd_logprob_scores(tiny0, forget, corr)
    eap = attribute(tiny0, forget, corr, AttributionConfig(method="eap", metric="logprob", align="left", progress=False))
    a, x = eap.scores[g.edge_mask], fd[g.edge_mask]
    assert torch.corrcoef(torch.stack([a, x]))[0, 1] > 0.999
    assert (a - x).abs().max() < 0.01 * a.abs().max()
    # the importance path passes the metric through: its modules match the exact reference ...
    imp = module_importance(tiny0, forget, method="eap", steps=1, metric="logprob", progress=False)
    ref = Circuit(g, fd, g.edge_mask.clone(), {}).module_importance()
    got, want = np.array([imp[m] for m in ref]), np.array(list(ref.values()))
    assert np.abs(got - want).max() < 0.015 * want.max()
    # ... and the default metric (logit_diff) does not
    ld = module_importance(tiny0, forget, method="eap", steps=1, progress=False)
    assert np.abs(np.array([ld[m] for m in ref]) - want).max() > 0.2 * want.max()


def test_per_sample_module_importance_rows_are_each_sample_alone(tiny0, request_data):
    samples = request_data[0][:3]
    kw = dict(method="eap-ig-inputs", steps=2, metric="logprob", batch_size=2, progress=False)
    names, rows = per_sample_module_importance(tiny0, samples, **kw)
    assert rows.shape == (3, 10) and rows.dtype == np.float64 and (rows >= 0).all()
    for i, s in enumerate(samples):
        alone = module_importance(tiny0, [s], **kw)
        assert list(alone) == names
        np.testing.assert_allclose(rows[i], [alone[m] for m in names], rtol=1e-5, atol=1e-7)
    # the set's importance takes |mean edge score|, so it is at most the mean of the per-sample rows
    whole = module_importance(tiny0, samples, **kw)
    assert all(whole[m] <= rows[:, j].mean() + 1e-6 for j, m in enumerate(names))
    assert not np.allclose(rows[0], rows[1])


def test_importance_metric_is_validated_and_left_out_of_the_dict_at_its_default():
    with pytest.raises(InputError) as err:
        U.method_config("cure", importance_metric="accuracy")
    assert err.value.field == "importance_metric" and "logit_diff" in str(err.value)
    plain = U.method_config("cure")
    d = plain.to_dict()
    assert "importance_metric" not in d
    assert d["grouping"] == {"top_k": 0.2, "normalize": "share", "mode": "topk", "margin": 0.5}  # pre-contrast form
    lp = U.method_config("cure", importance_metric="logprob")
    back = json.loads(json.dumps(lp.to_dict()))
    assert back["importance_metric"] == "logprob" and type(lp).from_dict(back, method="cure") == lp
    assert type(plain).from_dict(d) == plain
    assert "--importance-metric" in [f.flag for f in U.config_fields(type(lp))]


def test_logprob_eap_is_the_derivative_of_exact_patching_on_every_family(family_model, request_data):
    """The answer log-prob metric on every family (GQA, parallel blocks, post-block norms)."""
    forget = request_data[0][:3]
    corr = label_flip(forget)
    g, fd = _fd_logprob_scores(family_model, forget, corr)
    eap = attribute(family_model, forget, corr,
                    AttributionConfig(method="eap", metric="logprob", align="left", progress=False))
    a, x = eap.scores[g.edge_mask], fd[g.edge_mask]
    assert torch.corrcoef(torch.stack([a, x]))[0, 1] > 0.99
