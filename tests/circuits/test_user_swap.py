"""The ``user_swap`` corruption: the same target, the history of another user of the same domain."""

from __future__ import annotations

from pathlib import Path

import pytest

from recircuit.circuits.corruptions import (
    CORRUPTIONS,
    check_corruption_args,
    corruption_arg_names,
    corruption_for,
    get_corruption,
    user_swap,
)
from recircuit.data import DataSource, make_sample
from recircuit.data.prompts import Sample
from recircuit.errors import InputError

BX = DataSource("bookcrossing", path=str(Path(__file__).resolve().parents[1] / "fixtures" / "bookcrossing"),
                history_len=3)


def _sample(user: int, hist: list[tuple[int, str, float]], target: tuple[int, str, float], t: int = 0,
            **kw) -> Sample:
    return make_sample(user, hist, target, timestamp=t, **kw)


def _history(s: Sample) -> tuple:
    return s.liked_items, s.disliked_items


# user 1's two samples, and one sample each of users 2, 3 and 4
U1A = _sample(1, [(1, "Alpha (1990)", 5), (2, "Beta (1991)", 1)], (9, "Omega (1999)", 5), t=1)
U1B = _sample(1, [(2, "Beta (1991)", 1), (3, "Gamma (1992)", 4)], (8, "Psi (1998)", 2), t=2)
U2 = _sample(2, [(4, "Delta (1993)", 5), (5, "Epsilon (1994)", 5), (6, "Zeta (1995)", 1)], (7, "Eta (1996)", 5))
U3 = _sample(3, [(10, "Theta (1980)", 2)], (11, "Iota (1981)", 4))
U4 = _sample(4, [(12, "Kappa (1982)", 5), (13, "Lambda (1983)", 5)], (14, "Mu (1984)", 1))


def test_target_kept_history_is_exactly_the_only_donors():
    """One eligible donor (user 2; user 1's own other sample is not one): its lists, items and ids."""
    out = get_corruption("user_swap", donors=[U1B, U2], seed=0)([U1A])
    assert len(out) == 1
    o = out[0]
    assert (o.liked, o.disliked) == (("Delta (1993)", "Epsilon (1994)"), ("Zeta (1995)",))
    assert (o.liked_ids, o.disliked_ids) == ((4, 5), (6,))
    assert o.target_item == U1A.target_item and o.spec.parse_input(o.input)[2].title == "Omega (1999)"
    assert o.input == o.spec.input_text(U2.liked_items, U2.disliked_items, U1A.target_item)
    # the sample's identity and real data stay: only what the prompt shows changes
    assert (o.uid, o.user_id, o.output, o.history, o.item_id) == (U1A.uid, 1, "Yes.", U1A.history, 9)


def test_donors_are_other_users_of_the_same_domain():
    book = _sample(5, [(20, "Some Book", 5)], (21, "Other Book", 5), domain="book", authors={20: "A. B.", 21: "C. D."})
    donors = [U1A, U1B, U2, U3, U4, book]
    others = {_history(d) for d in (U2, U3, U4)}
    for seed in range(12):
        out = user_swap(donors, seed=seed)([U1A, U1B])
        for a, b in zip([U1A, U1B], out):
            assert _history(b) in others and b.target_item == a.target_item
    # a book sample only takes book donors (here the one of another user), with their authors
    book2 = _sample(6, [(22, "Third Book", 1)], (23, "Fourth Book", 5), domain="book", authors={22: "E. F.", 23: "G."})
    o = user_swap(donors, seed=0)([book2])[0]
    assert _history(o) == _history(book) and o.liked_authors == ("A. B.",) and o.target_item == book2.target_item


def test_deterministic_for_a_seed_and_seeds_differ():
    donors, batch = [U1A, U1B, U2, U3, U4], [U1A, U1B, U2, U3]

    def inputs(seed: int) -> list[str]:
        return [s.input for s in user_swap(donors, seed=seed)(batch)]

    assert inputs(3) == inputs(3)
    assert len({tuple(inputs(seed)) for seed in range(8)}) > 1
    # the draw is numpy's default_rng(seed), one integer per sample over its candidates in donor order
    import numpy as np

    rng = np.random.default_rng(5)
    cands = {1: [U2, U3, U4], 2: [U1A, U1B, U3, U4], 3: [U1A, U1B, U2, U4]}
    expect = [_history(cands[s.user_id][int(rng.integers(len(cands[s.user_id])))]) for s in batch]
    assert [_history(s) for s in user_swap(donors, seed=5)(batch)] == expect


def test_batch_only_mode_draws_from_the_batchs_other_users():
    out = get_corruption("user_swap", seed=0)([U1A, U1B, U2])     # no donors: the batch
    assert _history(out[0]) == _history(out[1]) == _history(U2)    # user 2 is user 1's only other user
    assert _history(out[2]) in {_history(U1A), _history(U1B)}
    assert [o.target_item for o in out] == [U1A.target_item, U1B.target_item, U2.target_item]


def test_no_donor_of_another_user_is_a_one_line_error():
    for corrupt in (user_swap(), user_swap(donors=[U1B])):
        with pytest.raises(InputError) as err:
            corrupt([U1A, U1B])
        assert err.value.field == "donors" and "\n" not in str(err.value) and "pass donors=" in str(err.value)
    book = _sample(5, [(20, "Some Book", 5)], (21, "Other Book", 5), domain="book", authors={20: "A.", 21: "B."})
    with pytest.raises(InputError, match="no donor of another user"):
        user_swap(donors=[book])([U1A])                    # another user, but another domain
    # a sample without a donor keeps its history when others have one (a batch of users 1 and 2, donors of 1)
    out = user_swap(donors=[U1B])([U1A, U2])
    assert out[0] == U1A and _history(out[1]) == _history(U1B)


def test_donors_are_context_not_a_corruption_argument():
    assert corruption_arg_names("user_swap") == ("seed",)
    assert CORRUPTIONS["user_swap"].needs == ("donors", "seed")
    assert check_corruption_args("user_swap", {"seed": 1}) == {"seed": 1}
    with pytest.raises(InputError) as err:
        check_corruption_args("user_swap", {"sede": 1})
    assert err.value.field == "corruption_args.sede" and "its arguments: seed" in str(err.value)
    with pytest.raises(InputError, match="comes from the model or data set"):
        check_corruption_args("user_swap", {"donors": []})


def test_corruption_for_takes_donors_from_the_sources_training_split():
    train = BX.split().train
    samples = train[:8]
    out = corruption_for("user_swap", None, source=BX, args={"seed": 2})(samples)
    assert [s.input for s in out] == [s.input for s in user_swap(train, seed=2)(samples)]
    for a, b in zip(samples, out):
        others = {_history(d) for d in train if d.user_id != a.user_id}
        assert _history(b) in others and b.target_item == a.target_item
    assert sum(a.input != b.input for a, b in zip(samples, out)) >= 1


def test_a_donor_whose_history_shows_the_target_is_not_drawn():
    """U1A's target is Omega (id 9): a donor that liked it (by id), or disliked an item of that title, would
    leave the target in the corrupted history; only U3 is eligible, on every seed."""
    by_id = _sample(5, [(9, "Omega (1999)", 5), (30, "Nu (1970)", 4)], (31, "Xi (1971)", 5))
    by_title = _sample(6, [(32, "Omicron (1972)", 5), (33, "Omega (1999)", 1)], (34, "Pi (1973)", 5))
    assert U1A.target_item.id == 9 and by_title.disliked_ids == (33,)      # another id, the same title shown
    for seed in range(10):
        out = user_swap([by_id, by_title, U3], seed=seed)([U1A])[0]
        assert _history(out) == _history(U3) and out.target_item == U1A.target_item
        assert "Omega" not in "".join(out.liked + out.disliked)
    # the draw is over the eligible donors only, in donor order: the same as if the others were absent
    batch = [U1A, U1B, U2]
    assert ([s.input for s in user_swap([by_id, U3, by_title, U4], seed=4)(batch)]
            == [s.input for s in user_swap([U3, U4], seed=4)(batch)])
    # a sample whose only donors show its target keeps its history; none left at all is the one-line error
    for seed in range(4):
        out = user_swap([by_id, U3], seed=seed)([U1A, U2])
        assert _history(out[0]) == _history(U3) and _history(out[1]) in {_history(by_id), _history(U3)}
    with pytest.raises(InputError, match="lacks the target"):
        user_swap([by_id, by_title])([U1A])
    kept = user_swap([by_id])([U1A, U2])
    assert kept[0] == U1A and _history(kept[1]) == _history(by_id)
