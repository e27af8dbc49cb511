"""CURE's corruption: a registered name with its arguments in the config, the data set given to the method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recircuit import unlearn as U
from recircuit.circuits.corruptions import corruption_for
from recircuit.data import DataSource
from recircuit.errors import InputError
from recircuit.models import tiny_tokenizer

BX = DataSource("bookcrossing", path=str(Path(__file__).resolve().parents[1] / "fixtures" / "bookcrossing"),
                history_len=3)


def test_corruption_args_round_trip_and_are_left_out_when_empty():
    cfg = U.method_config("cure", corruption="ppr", corruption_args={"far_fraction": 0.1, "seed": 2})
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["corruption_args"] == {"far_fraction": 0.1, "seed": 2}
    assert type(cfg).from_dict(d, method="cure") == cfg
    plain = U.method_config("cure")
    assert "corruption_args" not in plain.to_dict() and plain.corruption_args == {}
    assert type(plain).from_dict(plain.to_dict()) == plain
    # not a --corruption-args flag of its own (recircuit unlearn has --corruption-arg KEY=VALUE)
    assert "--corruption-args" not in [f.flag for f in U.config_fields(type(cfg))]


def test_a_bad_corruption_argument_is_refused_by_name():
    with pytest.raises(InputError) as err:
        U.method_config("cure", corruption="ppr", corruption_args={"interactions": "x"})
    assert err.value.field == "corruption_args.interactions" and "seed, far_fraction" in str(err.value)
    with pytest.raises(InputError) as err:
        U.method_config("cure", corruption_args={"seed": 1})          # label_flip takes none
    assert err.value.field == "corruption_args.seed"
    with pytest.raises(InputError, match="unknown corruption"):
        U.method_config("cure", corruption="magic")


@pytest.mark.parametrize("method", ["cure", "cure-random"])
def test_a_catalogue_corruption_needs_the_data_source(method):
    cfg = U.method_config(method, corruption="ppr", corruption_args={"far_fraction": 0.5})
    with pytest.raises(InputError) as err:
        U.get_method(method, cfg)
    assert err.value.field == "corruption" and "data source" in str(err.value) and "label_flip" in str(err.value)
    m = U.get_method(method, cfg, data_source=BX)
    tok, samples = tiny_tokenizer(), BX.split().train[:6]
    expect = corruption_for("ppr", tok, source=BX, args={"far_fraction": 0.5})(samples)
    got = m.corruption(tok)(samples)
    assert [s.input for s in got] == [s.input for s in expect] != [s.input for s in samples]
    # a self-contained corruption needs no source; with a given grouping the corruption is never built
    assert U.get_method(method, U.method_config(method, corruption="history_resample")).data_source is None
    assert U.get_method(method, cfg, grouping=object()).given


def test_the_importance_step_scores_with_the_source_built_corruption(monkeypatch):
    import recircuit.unlearn.methods.cure as cure

    seen = []
    monkeypatch.setattr(cure, "module_importance", lambda model, samples, **kw: seen.append(kw["corruption"]) or {})
    monkeypatch.setattr(cure, "group_modules", lambda i_f, i_r, config: "grouping")
    cfg = U.method_config("cure", corruption="target_swap", corruption_args={"seed": 4})
    m = U.get_method("cure", cfg, data_source=BX)
    m.loop = U.LoopConfig()
    tok = tiny_tokenizer()
    model = type("Model", (), {"tokenizer": tok})()
    samples = BX.split().train[:6]
    assert m.make_grouping(model, samples, samples) == "grouping" and len(seen) == 2
    expect = [s.input for s in corruption_for("target_swap", tok, source=BX, seed=4)(samples)]
    assert all([s.input for s in c(samples)] == expect for c in seen)


def test_unlearn_cli_takes_corruption_args():
    from recircuit.cli import build_parser
    from recircuit.cli.unlearn import check_args

    def parse(*extra):
        return check_args(build_parser().parse_args(["unlearn", *extra]))

    _, cfg = parse("--method", "cure", "--corruption", "ppr", "--corruption-arg", "far_fraction=0.1",
                   "--corruption-arg", "seed=2")
    assert cfg.corruption_args == {"far_fraction": 0.1, "seed": 2}
    for extra in (("--method", "cure", "--corruption", "ppr", "--corruption-arg", "titles=x"),
                  ("--method", "cure", "--corruption-arg", "seed"),
                  ("--method", "ga", "--corruption-arg", "seed=1")):
        with pytest.raises(InputError) as err:
            parse(*extra)
        assert err.value.field == "--corruption-arg"
