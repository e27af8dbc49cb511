import pandas as pd
import pytest

from recircuit.circuits.corruptions import (
    CORRUPTIONS,
    corruption_for,
    corruption_names,
    get_corruption,
    label_flip,
    personalized_pagerank,
    register_corruption,
)
from recircuit.data import make_sample
from recircuit.data.prompts import Sample, build_input
from recircuit.models import tiny_tokenizer


def parse_input(text):
    """Test-side reading of a rendered input (checks that structured fields and text agree)."""
    from recircuit.data.prompts import parse_input as parse

    return parse(text)


def fields(s):
    """The structured fields, checked against the rendered text."""
    assert s.input == build_input(s.liked, s.disliked, s.target)
    return list(s.liked), list(s.disliked), s.target


def test_label_flip_swaps_lists(pairs):
    clean, corr = pairs
    for a, b in zip(clean, corr):
        la, da, ta = fields(a)
        lb, db, tb = fields(b)
        assert (lb, db, tb) == (da, la, ta)
        assert (b.liked_ids, b.disliked_ids) == (a.disliked_ids, a.liked_ids)
        assert b.output == a.output and b.uid == a.uid and b.history == a.history
    assert label_flip([corr[0]])[0].input == clean[0].input


def test_label_flip_never_parses_text_so_quoted_titles_survive():
    """A title with a double quote cannot be read back from the prompt; the structured fields keep it."""
    odd = 'Dr. Strangelove or: How I Learned to "Stop" Worrying (1964)'
    s = make_sample(1, [(5, odd, 5), (6, "Heat (1995)", 1)], (7, "Fargo (1996)", 4))
    assert parse_input(s.input)[0] != [odd]          # text parsing would garble it
    out = label_flip([s])[0]
    assert (out.liked, out.disliked, out.target) == (("Heat (1995)",), (odd,), "Fargo (1996)")
    assert (out.liked_ids, out.disliked_ids) == ((6,), (5,))
    assert out.input == build_input(["Heat (1995)"], [odd], "Fargo (1996)")


def test_corruptions_refuse_samples_without_structure():
    s = Sample("instr", "Some book prompt", "Yes.", uid="x:0")
    assert not s.structured
    with pytest.raises(ValueError, match="TALLRec prompts of a registered domain"):
        label_flip([s])


def test_target_swap_matches_token_length():
    tok = tiny_tokenizer()
    titles = {1: "Alpha (1990)", 2: "Delta (1992)", 3: "Delta (1993)", 4: "A much longer movie title here (1980)"}
    s = make_sample(1, [(1, titles[1], 5)], (2, titles[2], 4))
    out = get_corruption("target_swap", titles=titles, tokenizer=tok, seed=0)([s])[0]
    assert fields(out)[2] == titles[3]  # the only other title of the same token length
    assert out.item_id == 3 and out.liked_ids == s.liked_ids
    assert len(tok(out.prompt)["input_ids"]) == len(tok(s.prompt)["input_ids"])


def test_ppr_prefers_far_items_and_keeps_target():
    inter = pd.DataFrame({"user": [1, 1, 2, 2, 3, 3], "item": [10, 11, 11, 12, 13, 14], "rating": [5] * 6})
    ppr = personalized_pagerank(inter, 1)
    assert ppr[10] > ppr[12] > ppr[13] == pytest.approx(0.0)  # 13/14 are unreachable from user 1
    titles = {10: "Ab (1990)", 11: "Cd (1991)", 12: "Ef (1992)", 13: "Gh (1993)", 14: "Ij (1994)"}
    s = make_sample(1, [(10, titles[10], 5), (11, titles[11], 1)], (12, titles[12], 4))
    out = get_corruption("ppr", interactions=inter, titles=titles, seed=0, far_fraction=0.4)([s])[0]
    liked, disliked, target = fields(out)
    assert target == titles[12]
    assert set(liked + disliked) <= {titles[13], titles[14]}
    assert [titles[i] for i in out.liked_ids + out.disliked_ids] == liked + disliked


def test_history_resample_takes_other_users_titles_of_the_same_length():
    tok = tiny_tokenizer()
    titles = ["Alpha (1990)", "Gamma (1990)", "Delta (1992)", "Omega (1991)", "A much longer title (1980)", "Kappa (1993)"]
    samples = [make_sample(u, [(10 * u + i, titles[(2 * u + i) % 6], 5 if i % 2 else 1) for i in range(3)],
                           (99, "Zeta (1999)", 4)) for u in range(4)]
    out = get_corruption("history_resample", tokenizer=tok, seed=1)(samples)
    changed = 0
    for s, o in zip(samples, out):
        lk, dk, tg = fields(s)
        lo, do, to = fields(o)
        assert to == tg and len(lo) == len(lk) and len(do) == len(dk)
        others = {t for x in samples if x.user_id != s.user_id for t in x.liked + x.disliked}
        id_of = {t: i for x in samples for t, i in zip(x.liked + x.disliked, x.liked_ids + x.disliked_ids)}
        assert o.liked_ids == tuple(id_of[t] for t in lo) and o.disliked_ids == tuple(id_of[t] for t in do)
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
        lk, dk, _ = fields(s)
        lo, do, _ = fields(o)
        assert lo + do != lk + dk
        assert all(b not in lk + dk for a, b in zip(lk + dk, lo + do) if a != b)
        assert len(tok(o.prompt)["input_ids"]) == len(tok(s.prompt)["input_ids"])
    with pytest.raises(ValueError, match="unknown corruption"):
        get_corruption("shuffle")


def test_corruption_for_loads_the_catalogue_so_one_users_windows_resample(shared_data, tallrec):
    samples = tallrec.test[:4]                       # consecutive windows of one user
    assert len({s.user_id for s in samples}) == 1
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="Pass the item catalogue"):
        get_corruption("history_resample", tokenizer=tok)(samples)
    out = corruption_for("history_resample", tok, str(shared_data / "ml-100k"))(samples)
    assert all(o.input != s.input for s, o in zip(samples, out))
    assert corruption_for("label_flip") is get_corruption("label_flip")


def test_registry_adding_a_corruption_is_one_function(monkeypatch):
    import recircuit.circuits.corruptions as mod

    monkeypatch.setattr(mod, "_REGISTRY", dict(mod._REGISTRY))
    monkeypatch.setattr(mod, "CORRUPTIONS", mod.MappingProxyType(mod._REGISTRY))
    assert corruption_names()[:4] == ("label_flip", "target_swap", "history_resample", "ppr")

    @register_corruption("reverse_history")
    def reverse_history(seed: int = 0, keep_first: bool = False):
        """Reverse both history lists."""
        def corrupt(samples):
            return [s.with_history(s.liked[::-1], s.disliked[::-1]) for s in samples]
        return corrupt

    assert "reverse_history" in corruption_names() and "reverse_history" in mod.CORRUPTIONS
    assert mod.CORRUPTIONS["reverse_history"].needs == ("seed",)
    assert mod.CORRUPTIONS["reverse_history"].help == "Reverse both history lists."
    s = make_sample(1, [(1, "A (1990)", 5), (2, "B (1991)", 5)], (3, "C (1992)", 1))
    for corrupt in (get_corruption("reverse_history", titles={}, tokenizer=None, seed=1), corruption_for("reverse_history")):
        assert corrupt([s])[0].liked == ("B (1991)", "A (1990)")
    with pytest.raises(ValueError, match="reverse_history"):
        get_corruption("reverse_history", nonsense=1)
    with pytest.raises(ValueError, match="already registered"):
        register_corruption("reverse_history")(reverse_history)
    with pytest.raises(ValueError, match="target_swap"):
        get_corruption("target_swap", tokenizer=None)        # titles or catalogue is required
    assert CORRUPTIONS["ppr"].needs == ("titles", "authors", "tokenizer", "interactions", "seed")
    assert CORRUPTIONS["label_flip"].needs == ()


def test_cli_corruption_choices_come_from_the_registry(monkeypatch):
    import argparse

    import recircuit.circuits.corruptions as mod
    from recircuit.cli.circuit import add_circuit_parser

    monkeypatch.setattr(mod, "_REGISTRY", dict(mod._REGISTRY))
    register_corruption("noop", factory=False)(lambda samples: list(samples))
    parser = argparse.ArgumentParser()
    add_circuit_parser(parser.add_subparsers())
    assert parser.parse_args(["circuit", "--corruption", "noop"]).corruption == "noop"
    with pytest.raises(SystemExit):
        parser.parse_args(["circuit", "--corruption", "label_flop"])


def test_user_facing_corruption_errors_are_one_line_input_errors():
    from recircuit.circuits import AttributionConfig
    from recircuit.errors import InputError

    with pytest.raises(InputError, match=r"field 'corruption'.*unknown corruption 'shuffle'; choose one of label_flip"):
        get_corruption("shuffle")
    with pytest.raises(InputError, match="field 'method'"):
        AttributionConfig(method="eap-ig")
    with pytest.raises(InputError, match="user ids"):
        get_corruption("ppr", interactions=pd.DataFrame({"user": [1], "item": [2]}), titles={2: "A (1990)"})(
            [Sample("i", build_input(["A (1990)"], [], "A (1990)"), "Yes.")])


# ---------------------------------------------------------------------------------------------
# user arguments (a config's corruption_args)

def _bx():
    from pathlib import Path

    from recircuit.data import DataSource

    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    return DataSource("bookcrossing", path=str(fixtures / "bookcrossing"), history_len=3)


def test_corruption_args_are_the_factorys_own_knobs_never_the_data():
    import math

    from recircuit.circuits.corruptions import (
        RESOURCES,
        check_corruption_args,
        corruption_arg_names,
    )
    from recircuit.errors import InputError

    assert corruption_arg_names("ppr") == ("seed", "far_fraction")
    assert corruption_arg_names("target_swap") == ("seed",) == corruption_arg_names("history_resample")
    assert corruption_arg_names("label_flip") == ()
    assert not set(RESOURCES) & {a for n in corruption_names() for a in corruption_arg_names(n)}
    assert check_corruption_args("ppr", {"far_fraction": 0.1, "seed": 2}) == {"far_fraction": 0.1, "seed": 2}
    for bad, key in (({"titles": {}}, "titles"), ({"farfraction": 0.1}, "farfraction")):
        with pytest.raises(InputError) as err:
            check_corruption_args("ppr", bad)
        assert err.value.field == f"corruption_args.{key}" and "seed, far_fraction" in str(err.value)
    for value in ([1], {"a": 1}, math.nan):
        with pytest.raises(InputError) as err:
            check_corruption_args("ppr", {"seed": value})
        assert err.value.field == "corruption_args.seed" and "JSON scalar" in str(err.value)
    with pytest.raises(InputError, match="takes no argument 'seed'"):
        check_corruption_args("label_flip", {"seed": 1})


def test_corruption_for_passes_the_users_args_to_the_factory():
    src, tok = _bx(), tiny_tokenizer()
    samples = src.split().train[:8]

    def inputs(name, **kw):
        return [s.input for s in corruption_for(name, tok, source=src, **kw)(samples)]

    # a seed among the args is the factory's seed (and wins over the seed parameter), deterministically
    assert inputs("target_swap", args={"seed": 3}) == inputs("target_swap", seed=3) \
        == inputs("target_swap", seed=0, args={"seed": 3})
    assert inputs("target_swap", args={"seed": 3}) != inputs("target_swap")
    # far_fraction bounds where ppr draws from: the lowest-PPR share of each user's items
    cat = src.catalogue()
    for ff in (0.05, 1.0):
        out = corruption_for("ppr", tok, source=src, args={"far_fraction": ff})(samples)
        for a, b in zip(samples, out):
            ppr = personalized_pagerank(cat.interactions, a.user_id)
            far = set(sorted(ppr, key=ppr.get)[: max(1, int(len(ppr) * ff))])
            old = set(a.liked_ids + a.disliked_ids)
            assert {i for i in b.liked_ids + b.disliked_ids if i not in old} <= far
    assert inputs("ppr", args={"far_fraction": 0.05}) != inputs("ppr", args={"far_fraction": 1.0})
    with pytest.raises(ValueError, match="far_fraction") as err:
        corruption_for("ppr", tok, source=src, args={"far": 0.1})
    assert err.value.field == "corruption_args.far"
