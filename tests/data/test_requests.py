"""The one sample identity and the one request validator (recircuit.data.requests)."""

from __future__ import annotations

import dataclasses

import pytest

from recircuit.data import RequestError, check_disjoint, check_request, make_sample, sample_key
from recircuit.errors import InputError


def _samples(n: int, user0: int = 0) -> list:
    return [make_sample(user0 + u, [(1, "Alpha (1990)", 5), (2, "Beta (1991)", 1)], (100 + u, f"Gamma {u} (1992)", 4 if u % 2 else 2),
                        timestamp=u) for u in range(n)]


def _bare(s):
    """The same sample as read back from bare TALLRec JSON: no uid, no ids."""
    return dataclasses.replace(s, uid="", user_id=None, item_id=None, history=(), history_ratings=())


def test_sample_key_is_the_uid_when_there_is_one():
    s = _samples(1)[0]
    assert s.uid and sample_key(s) == s.uid


def test_sample_key_without_uid_is_the_prompt_digest():
    a, b = _samples(2)
    ka, kb = sample_key(_bare(a)), sample_key(_bare(b))
    assert ka.startswith("sha256:") and ka != kb
    # the same prompt with the other label is the same query, so the same key
    flipped = dataclasses.replace(_bare(a), output="No." if a.output == "Yes." else "Yes.")
    assert sample_key(flipped) == ka
    # another instruction is another prompt
    assert sample_key(dataclasses.replace(_bare(a), instruction="Other.")) != ka


def test_a_valid_request_passes():
    train = _samples(10)
    forget, retain, test, heldout = train[:3], train[3:], _samples(4, user0=50), _samples(4, user0=80)
    check_request(forget, retain, test=test, heldout=heldout, train=train)
    check_request(forget)  # every set but forget is optional


@pytest.mark.parametrize(
    ("case", "field", "match"),
    [
        ("empty_forget", "forget", "forget set is empty"),
        ("forget_too_large", "forget", "larger than the training set"),
        ("forget_not_trained", "forget", "never trained on"),
        ("empty_test", "test", "test set is empty"),
        ("forget_in_test", "forget", "in the test set"),
        ("retain_in_test", "retain", "retain samples are in the test set"),
        ("empty_retain", "retain", "retain set is empty"),
        ("forget_in_retain", "retain", "both the forget and the retain set"),
        ("retain_not_trained", "retain", "not training samples"),
        ("empty_heldout", "heldout", "held-out set is empty"),
        ("heldout_trained", "heldout", "held-out samples were trained on"),
    ],
)
def test_each_broken_rule_is_refused_with_its_field(case, field, match):
    train = _samples(10)
    forget, retain, test, heldout = train[:3], train[3:], _samples(4, user0=50), _samples(4, user0=80)
    kwargs = {
        "empty_forget": dict(forget=[]),
        "forget_too_large": dict(forget=forget, train_size=2),
        "forget_not_trained": dict(forget=forget + test[:1], train=train),
        "empty_test": dict(forget=forget, test=[]),
        "forget_in_test": dict(forget=forget, test=test + forget[:1]),
        "retain_in_test": dict(forget=forget, retain=retain, test=test + retain[:2]),
        "empty_retain": dict(forget=forget, retain=[]),
        "forget_in_retain": dict(forget=forget, retain=retain + forget[:1]),
        "retain_not_trained": dict(forget=forget, retain=retain + heldout[:1], train=train),
        "empty_heldout": dict(forget=forget, heldout=[]),
        "heldout_trained": dict(forget=forget, retain=retain, heldout=heldout + retain[:1]),
    }[case]
    with pytest.raises(RequestError, match=match) as err:
        check_request(**kwargs)
    assert isinstance(err.value, InputError) and err.value.field == field
    assert "\n" not in str(err.value) and err.value.fix


def test_overlap_is_found_through_the_shared_key_for_uid_less_samples():
    train = [_bare(s) for s in _samples(6)]
    copy_of_first = dataclasses.replace(train[0], meta={"source": "another file"})
    with pytest.raises(RequestError, match="in the test set"):
        check_request(train[:2], test=[copy_of_first])
    with pytest.raises(RequestError, match="overlap in 1 samples"):
        check_disjoint(train=train, test=[copy_of_first])
    check_disjoint(train=train[1:], test=train[:1])


def test_heldout_is_checked_against_train_too():
    train = _samples(6)
    with pytest.raises(RequestError, match="held-out samples were trained on"):
        check_request(train[:1], heldout=train[4:], train=train)
