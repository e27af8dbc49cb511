import argparse
import ast
import dataclasses
import json
from pathlib import Path

import pytest

import recircuit.unlearn as U
from recircuit.errors import InputError
from recircuit.unlearn import registry
from recircuit.unlearn.config import MethodConfig, config_fields
from recircuit.unlearn.forget_rules import _RULES, register_forget_rule

PKG = Path(U.__file__).parent


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_registry_is_a_leaf_and_base_does_not_import_methods():
    assert not any(m.startswith("recircuit.unlearn") for m in _imports(PKG / "registry.py"))
    for name in ("base.py", "config.py", "objectives.py", "forget_rules.py"):
        assert not any(m.startswith("recircuit.unlearn.methods") for m in _imports(PKG / name)), name


@pytest.mark.parametrize("name", U.available_methods())
def test_every_method_has_its_own_config_that_round_trips_json(name):
    cls = U.config_class(name)
    assert issubclass(cls, MethodConfig) and dataclasses.is_dataclass(cls)
    cfg = U.method_config(name)
    back = cls.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(U.get_method(name, cfg).config, cls)
    # only that method's knobs: nothing of the shared loop
    assert not {f.name for f in dataclasses.fields(cls)} & {f.name for f in dataclasses.fields(U.LoopConfig)}


def test_unknown_settings_and_configs_are_refused_by_name():
    with pytest.raises(InputError, match="'npo_beta'.*ga_bound"):
        U.method_config("ga", npo_beta=0.2)
    with pytest.raises(InputError, match="GAConfig"):
        U.get_method("ga", U.method_config("npo"))
    with pytest.raises(InputError, match="forget_rule.*npo"):
        U.method_config("cure", forget_rule="magic")
    with pytest.raises(InputError, match="corruption.*label_flip"):
        U.method_config("cure", corruption="magic")
    with pytest.raises(InputError, match="importance_method"):
        U.method_config("cure", importance_method="magic")
    with pytest.raises(InputError, match="lr"):
        U.LoopConfig(lr=-1.0)
    nested = U.method_config("cure", grouping={"top_k": 0.3})
    assert nested.grouping == U.GroupingConfig(top_k=0.3)


def test_a_new_method_is_one_registration_and_gets_its_cli_flags():
    from recircuit.cli import build_parser
    from recircuit.cli.unlearn import add_unlearn_parser, check_args

    @dataclasses.dataclass
    class ToyConfig(MethodConfig):
        """Toy knobs.

        Attributes:
            toy_weight: how hard the toy pushes.
            toy_flag: a switch.
        """

        toy_weight: float = 1.0
        toy_flag: bool = False

    @registry.register("toy-method", ToyConfig)
    class Toy(U.UnlearnMethod):
        def gradients(self, model, original, f_batch, r_batch):
            return {}

    try:
        assert "toy-method" in U.available_methods()
        assert [f.flag for f in config_fields(ToyConfig)] == ["--toy-weight", "--toy-flag"]
        args = build_parser().parse_args(["unlearn", "--method", "toy-method", "--toy-weight", "2.5", "--toy-flag"])
        _, cfg = check_args(args)
        assert cfg == ToyConfig(toy_weight=2.5, toy_flag=True)
        sub = argparse.ArgumentParser().add_subparsers()
        assert "how hard the toy pushes" in add_unlearn_parser(sub).format_help()
    finally:
        registry._METHODS.pop("toy-method", None)


def test_forget_rules_are_a_registry(model, request_data):
    from recircuit.unlearn.methods._common import forget_objective

    assert U.forget_rule_names() == ["e2urec", "ga", "npo"]
    with pytest.raises(InputError, match="e2urec, ga, npo"):
        U.forget_rule("magic")
    seen = []

    @register_forget_rule("toy-rule")
    def toy(model, original, batch, cfg, teacher=None):
        seen.append(len(batch))
        import torch

        return torch.tensor(0.5), {"toy": 1.0}

    try:
        cfg = U.method_config("pcgrad", forget_rule="toy-rule")
        forget, _, _ = request_data
        loss, logs = forget_objective(model, model, forget[:3], cfg)
        assert float(loss) == 0.5 and logs == {"toy": 1.0} and seen == [3]
    finally:
        _RULES.pop("toy-rule", None)


def test_forget_rule_knobs_are_declared_and_checked_once(model, request_data):
    """npo_beta and the e2urec_* teacher fields live in one class each, shared by methods and rules."""
    from recircuit.unlearn.forget_rules import E2URecTeacherConfig, NPOBetaConfig, teacher_for

    for name, base in (("npo", NPOBetaConfig), ("cure", NPOBetaConfig), ("pcgrad", NPOBetaConfig),
                       ("e2urec", E2URecTeacherConfig), ("cure", E2URecTeacherConfig)):
        cls = U.config_class(name)
        assert issubclass(cls, base)
        own = {f.name for f in dataclasses.fields(base)}
        assert not own & set(vars(cls).get("__annotations__", {})), f"{name} redeclares {own}"
    for name in ("npo", "cure", "pcgrad"):
        with pytest.raises(InputError, match="npo_beta"):
            U.method_config(name, npo_beta=0)
    for name in ("e2urec", "cure"):
        with pytest.raises(InputError, match="e2urec_aug_steps"):
            U.method_config(name, e2urec_aug_steps=-1)
    forget, _, _ = request_data
    loop = U.LoopConfig(batch_size=2)
    assert teacher_for(U.method_config("pcgrad"), model, forget, loop) is None
    aug = teacher_for(U.method_config("pcgrad", forget_rule="e2urec", e2urec_aug_steps=1), model, forget, loop)
    assert aug is not None and aug is not model and not aug.training
