import pandas as pd
import pytest

from recircuit.circuits.corruptions import (
    get_corruption,
    label_flip,
    parse_input,
    personalized_pagerank,
)
from recircuit.data import make_sample
from recircuit.models import tiny_tokenizer


def test_label_flip_swaps_lists(pairs):
    clean, corr = pairs
    for a, b in zip(clean, corr):
        la, da, ta = parse_input(a.input)
        lb, db, tb = parse_input(b.input)
        assert (lb, db, tb) == (da, la, ta)
        assert b.output == a.output and b.uid == a.uid
    assert label_flip([corr[0]])[0].input == clean[0].input


def test_target_swap_matches_token_length():
    tok = tiny_tokenizer()
    titles = {1: "Alpha (1990)", 2: "Delta (1992)", 3: "Delta (1993)", 4: "A much longer movie title here (1980)"}
    s = make_sample(1, [(1, titles[1], 5)], (2, titles[2], 4))
    out = get_corruption("target_swap", titles=titles, tokenizer=tok, seed=0)([s])[0]
    new_target = parse_input(out.input)[2]
    assert new_target == titles[3]  # the only other title of the same token length
    assert len(tok(out.prompt)["input_ids"]) == len(tok(s.prompt)["input_ids"])


def test_ppr_prefers_far_items_and_keeps_target():
    inter = pd.DataFrame({"user": [1, 1, 2, 2, 3, 3], "item": [10, 11, 11, 12, 13, 14], "rating": [5] * 6})
    ppr = personalized_pagerank(inter, 1)
    assert ppr[10] > ppr[12] > ppr[13] == pytest.approx(0.0)  # 13/14 are unreachable from user 1
    titles = {10: "Ab (1990)", 11: "Cd (1991)", 12: "Ef (1992)", 13: "Gh (1993)", 14: "Ij (1994)"}
    s = make_sample(1, [(10, titles[10], 5), (11, titles[11], 1)], (12, titles[12], 4))
    out = get_corruption("ppr", interactions=inter, titles=titles, seed=0, far_fraction=0.4)([s])[0]
    liked, disliked, target = parse_input(out.input)
    assert target == titles[12]
    assert set(liked + disliked) <= {titles[13], titles[14]}


def test_history_resample_takes_other_users_titles_of_the_same_length():
    tok = tiny_tokenizer()
    titles = ["Alpha (1990)", "Gamma (1990)", "Delta (1992)", "Omega (1991)", "A much longer title (1980)", "Kappa (1993)"]
    samples = [make_sample(u, [(10 * u + i, titles[(2 * u + i) % 6], 5 if i % 2 else 1) for i in range(3)],
                           (99, "Zeta (1999)", 4)) for u in range(4)]
    out = get_corruption("history_resample", tokenizer=tok, seed=1)(samples)
    changed = 0
    for s, o in zip(samples, out):
        lk, dk, tg = parse_input(s.input)
        lo, do, to = parse_input(o.input)
        assert to == tg and len(lo) == len(lk) and len(do) == len(dk)
        others = {t for x in samples if x.user_id != s.user_id for t in sum(parse_input(x.input)[:2], [])}
        for a, b in zip(lk + dk, lo + do):
            if a != b:
                changed += 1
                assert b in others and b not in lk + dk
                assert len(tok.encode(f'"{a}"', add_special_tokens=False)) == len(tok.encode(f'"{b}"', add_special_tokens=False))
        assert len(tok(o.prompt)["input_ids"]) == len(tok(s.prompt)["input_ids"])
    assert changed >= 4
    one_user = [make_sample(7, [(i, titles[i], 5 if i % 2 else 1) for i in range(3)], (99 + k, "Zeta (1999)", 4),
                            timestamp=k) for k in range(3)]
    with pytest.raises(ValueError, match="Pass the item catalogue"):
        get_corruption("history_resample", tokenizer=tok)(one_user)
    catalogue = {i: t for i, t in enumerate(titles + ["Sigma (1990)", "Tau (1992)"])}
    out = get_corruption("history_resample", tokenizer=tok, titles=catalogue)(one_user)
    for s, o in zip(one_user, out):
        lk, dk, _ = parse_input(s.input)
        lo, do, _ = parse_input(o.input)
        assert lo + do != lk + dk
        assert all(b not in lk + dk for a, b in zip(lk + dk, lo + do) if a != b)
        assert len(tok(o.prompt)["input_ids"]) == len(tok(s.prompt)["input_ids"])
    with pytest.raises(ValueError, match="Unknown corruption"):
        get_corruption("shuffle")


def test_corruption_for_loads_the_catalogue_so_one_users_windows_resample(shared_data, tallrec):
    from recircuit.circuits.corruptions import corruption_for
    from recircuit.models import tiny_tokenizer

    samples = tallrec.test[:4]                       # consecutive windows of one user
    assert len({s.user_id for s in samples}) == 1
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="Pass the item catalogue"):
        get_corruption("history_resample", tokenizer=tok)(samples)
    out = corruption_for("history_resample", tok, str(shared_data / "ml-100k"))(samples)
    assert all(o.input != s.input for s, o in zip(samples, out))
    assert corruption_for("label_flip") is get_corruption("label_flip")
