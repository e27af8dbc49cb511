"""Per-sample edge scores: each sample's own row, whose mean over samples is the batch score."""

import pytest
import torch

from recircuit.circuits import AttributionConfig, attribute
from recircuit.models import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(0)


@pytest.mark.parametrize("method", ["eap", "eap-ig-inputs", "exact"])
def test_mean_of_per_sample_scores_is_the_batch_score(model, pairs, method):
    clean, corr = pairs
    clean, corr = clean[:5], corr[:5]
    kw = dict(method=method, steps=2, batch_size=3, align="left", progress=False)   # batches of 3 + 2
    batch = attribute(model, clean, corr, AttributionConfig(**kw))
    per = attribute(model, clean, corr, AttributionConfig(per_sample=True, **kw))
    assert batch.per_sample_scores is None
    rows = per.per_sample_scores
    assert rows.shape == (5, *batch.scores.shape)
    torch.testing.assert_close(rows.mean(0), batch.scores, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(per.scores, batch.scores, atol=1e-6, rtol=1e-5)
    assert not rows[:, ~batch.graph.edge_mask].any()                 # 0 where no edge
    # row i is sample i's own score: the same as attributing that sample alone
    alone = attribute(model, clean[3:4], corr[3:4], AttributionConfig(**kw)).scores
    torch.testing.assert_close(rows[3], alone, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(rows[3], rows[4])


def test_per_sample_is_left_out_of_the_config_dict_when_off():
    assert "per_sample" not in AttributionConfig().to_dict()
    assert AttributionConfig(per_sample=True).to_dict()["per_sample"] is True


def test_per_sample_rows_equal_single_sample_attribution_on_every_family(family_model, pairs):
    """Every family (GQA, parallel blocks, post-block norms): the batch keeps each sample's own row."""
    clean, corr = pairs[0][:3], pairs[1][:3]
    kw = dict(method="eap-ig-inputs", steps=2, batch_size=3, align="left", progress=False)
    per = attribute(family_model, clean, corr, AttributionConfig(per_sample=True, **kw))
    for i in range(3):
        alone = attribute(family_model, clean[i:i + 1], corr[i:i + 1], AttributionConfig(**kw)).scores
        torch.testing.assert_close(per.per_sample_scores[i], alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(per.per_sample_scores.mean(0), per.scores, atol=1e-6, rtol=1e-5)
