import json
import math

import numpy as np
import pytest

from recircuit.data import make_sample
from recircuit.evaluate import (
    UnlearningReport,
    audit_record,
    jsd_binary,
    mia_auc,
    model_hash,
    samples_hash,
)
from recircuit.models import tiny_model


def test_jsd_values():
    assert jsd_binary(np.array([0.3, 0.9]), np.array([0.3, 0.9])) == pytest.approx(0.0, abs=1e-12)
    assert jsd_binary(np.array([1.0]), np.array([0.0])) == pytest.approx(math.log(2), rel=1e-6)
    p, q = 0.8, 0.4
    m = 0.6
    ref = 0.5 * (p * math.log(p / m) + (1 - p) * math.log((1 - p) / (1 - m))) + 0.5 * (q * math.log(q / m) + (1 - q) * math.log((1 - q) / (1 - m)))
    assert jsd_binary(np.array([p]), np.array([q])) == pytest.approx(ref)


def test_mia_scores_lower_loss_as_member(monkeypatch):
    import recircuit.evaluate.metrics as em

    losses = {"m": np.array([0.1, 0.2, 0.9]), "n": np.array([0.5, 0.6, 0.7])}
    monkeypatch.setattr(em, "per_sample_loss", lambda model, samples, bs=8: losses[samples[0]])
    # members 0.1, 0.2 beat every non-member, 0.9 beats none: AUC = 6/9
    assert mia_auc(None, ["m"], ["n"]) == pytest.approx(6 / 9)
    with pytest.raises(ValueError, match="non-member"):
        mia_auc(None, ["m"], [])


def test_mia_on_a_real_model_is_near_chance_before_training():
    titles = ["Alpha (1990)", "Delta (1992)", "Iota (1995)", "Theta (1994)"]
    data = [make_sample(u, [(i, titles[(u * 7 + i) % 4], 1 + (u * 3 + i) % 5) for i in range(3)],
                        (500 + u, f"Film {u} ({1950 + u})", 1 + (u * 11) % 5), timestamp=u) for u in range(32)]
    assert 0.3 < mia_auc(tiny_model(0), data[:16], data[16:]) < 0.7


def test_report_and_audit_roundtrip(tmp_path):
    rep = UnlearningReport(meta={"rate": 0.1})
    rep.add("cure", 0, {"forget_jsd": 0.1, "test_auc": 0.7})
    rep.add("cure", 1, {"forget_jsd": 0.3, "test_auc": 0.8})
    rep.add("ga", 0, {"forget_jsd": 0.5, "test_auc": 0.6})
    js, md = rep.save(tmp_path / "report")
    back = UnlearningReport.load(js)
    assert back.rows == rep.rows and back.meta == {"rate": 0.1}
    mean, std, n = back.summary()["cure"]["forget_jsd"]
    assert (mean, std, n) == (pytest.approx(0.2), pytest.approx(0.1), 2)
    assert "| cure | 0.2000 ± 0.1000 (n=2) |" in md.read_text()
    assert "| ga | 0.5000 | 0.6000 |" in md.read_text()      # one run: no spread shown
    nan = UnlearningReport()
    nan.add("x", 0, {"mia_gap": 0.5, "auc": float("nan")})
    nan.add("x", 1, {"mia_gap": float("nan"), "auc": float("nan")})
    assert nan.summary()["x"]["mia_gap"] == (0.5, 0.0, 1)          # a NaN is not a run that measured it
    assert nan.summary()["x"]["auc"][2] == 0 and "| x | 0.5000 |  |" in nan.to_markdown()
    s = [make_sample(1, [(1, "A (1990)", 5)], (2, "B (1991)", 1), timestamp=3)]
    m = tiny_model(0)
    a = audit_record(s, model_hash(m), model_hash(tiny_model(1)), {"lr": 1e-5}, "cure", 1.5)
    a2 = json.loads(json.dumps(a))
    assert a2 == a and a["forgotten"]["uids"] == ["u1:i2:t3"] and a["forgotten"]["content_sha256"] == samples_hash(s)
    assert a["model_sha256"]["before"] != a["model_sha256"]["after"]
    assert model_hash(tiny_model(0)) == model_hash(m)


def test_report_markdown_states_its_notes_after_the_table(tmp_path):
    rep = UnlearningReport(meta={"notes": ["Faithfulness: the label_flip corruption moves the metric by only 0.004."]})
    rep.add("cure", 0, {"forget_jsd": 0.1})
    _, md = rep.save(tmp_path / "report")
    text = md.read_text()
    assert text.index("| cure |") < text.index("## Notes") < text.index("- Faithfulness: the label_flip corruption")
    _, md = UnlearningReport(rows=rep.rows).save(tmp_path / "plain")
    assert "Notes" not in md.read_text()


def _samples(n: int, offset: int = 0):
    titles = ["Alpha (1990)", "Delta (1992)", "Iota (1995)", "Theta (1994)", "Kappa (1989)"]
    return [make_sample(u, [(i, titles[(u * 7 + i) % 5], 1 + (u * 3 + i) % 5) for i in range(1 + u % 4)],
                        (500 + u, f"Film {u} ({1950 + u})", 1 + (u * 11) % 5), timestamp=u)
            for u in range(offset, offset + n)]


def test_score_and_loss_equals_separate_passes():
    from recircuit.evaluate.metrics import per_sample_loss, score_and_loss
    from recircuit.models import score

    model, data = tiny_model(3), _samples(11)  # prompts of different lengths, a ragged last batch
    p, loss = score_and_loss(model, data, batch_size=4)
    np.testing.assert_allclose(p, score(model, data, batch_size=4, progress=False), atol=1e-5)
    np.testing.assert_allclose(loss, per_sample_loss(model, data, batch_size=4), atol=1e-5)
    assert not np.allclose(p, p[0])  # the comparison is not between constants


def test_memorization_gap_reuses_the_evaluation_cache(monkeypatch):
    import recircuit.evaluate.metrics as em

    forget, test, heldout = _samples(6), _samples(8, 10), _samples(6, 30)
    original, retrained = tiny_model(0), tiny_model(1)
    cache: dict = {}
    em.evaluate_unlearning(original, retrained, forget, test, heldout, 4, cache, original=original)
    fresh = em.memorization_gap(original, retrained, forget, heldout, test, 4)

    def boom(*a, **k):
        raise AssertionError("memorization_gap ran a forward pass although the cache holds every output")

    monkeypatch.setattr(em, "score_and_loss", boom)
    cached = em.memorization_gap(original, retrained, forget, heldout, test, 4, cache=cache)
    assert cached["mia_gap_ci95"] == pytest.approx(fresh.pop("mia_gap_ci95"))
    assert {k: v for k, v in cached.items() if k != "mia_gap_ci95"} == pytest.approx(fresh)
    assert cached["mia_auc_retrain"] == pytest.approx(
        em.evaluate_unlearning(retrained, retrained, forget, test, heldout, 4, cache)["mia_auc"])


def test_evaluate_does_not_import_unlearn():
    import ast
    from pathlib import Path

    import recircuit.evaluate as ev

    for path in Path(ev.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any(n.startswith("recircuit.unlearn") for n in names), (path.name, names)


def test_check_protocol_is_the_one_request_validator():
    from recircuit.data.requests import RequestError
    from recircuit.evaluate.metrics import check_protocol

    forget, test, heldout = _samples(4), _samples(6, 10), _samples(4, 30)
    check_protocol(forget, test, heldout)
    with pytest.raises(RequestError, match="held-out samples were trained on"):
        check_protocol(forget, test, heldout + forget[:1])
    with pytest.raises(RequestError, match="test set is empty"):
        check_protocol(forget, [], heldout)
    with pytest.raises(RequestError, match="forget samples are in the test set"):
        check_protocol(forget, test + forget[:2], heldout)


def test_audit_record_carries_the_run_status():
    s = _samples(2)
    assert audit_record(s, "a", "b", {}, "npo", 1.0)["status"] == "ok"
    assert audit_record(s, "a", "a", {}, "npo", 1.0, status="restored")["status"] == "restored"


def test_score_and_loss_and_the_unlearning_objectives_share_one_answer_pass(monkeypatch):
    """One answer forward pass (train.losses.answer_forward) serves evaluation and unlearning."""
    import recircuit.train.losses as losses
    from recircuit.evaluate.metrics import score_and_loss
    from recircuit.unlearn import objectives

    assert objectives.answer_forward is losses.answer_forward
    calls = []
    real = losses.answer_forward
    monkeypatch.setattr(losses, "answer_forward", lambda m, s: calls.append(len(s)) or real(m, s))
    samples = [make_sample(u, [(1, "A (1990)", 5)], (2, "B (1991)", u % 2 * 4 + 1)) for u in range(5)]
    p, loss = score_and_loss(tiny_model(0), samples, batch_size=3)
    assert calls == [3, 2] and p.shape == loss.shape == (5,)


def test_a_grid_table_is_summarized_per_rate_never_across_rates():
    rep = UnlearningReport()
    rep.add("cure", 1, {"forget_jsd": 0.1, "rate": 0.05})
    rep.add("cure", 1, {"forget_jsd": 0.3, "rate": 0.1})
    rep.add("cure", 2, {"forget_jsd": 0.5, "rate": 0.1})
    md = rep.to_markdown(columns=["forget_jsd"])
    assert "| cure @ 0.05 | 0.1000 |" in md and "| cure @ 0.1 | 0.4000 ± 0.1000 (n=2) |" in md
    assert "0.3000 ±" not in md                                     # no mean over 5% and 10%
    one = UnlearningReport()
    one.add("cure", 1, {"forget_jsd": 0.1, "rate": 0.05})
    assert "| cure | 0.1000 |" in one.to_markdown(columns=["forget_jsd"])   # one rate: plain method rows
