"""`SAEVariantConfig` is an ordinary dataclass whose SAE fields stay in step with `SAEConfig`'s."""
import ast
import dataclasses
import inspect

import pytest

from qwen_sae_jax.config import field_docs, format_help, load_config
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.sae.config import SAEConfig
from qwen_sae_jax.train import config as train_config
from qwen_sae_jax.train.config import SET_BY_TRAINER, SAEVariantConfig, TrainConfig
from qwen_sae_jax.train.plan import make_plan

OWN_FIELDS = ("name", "hooks", "implementation", "optim")


def _sae_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(SAEConfig) if f.name not in SET_BY_TRAINER]


def test_it_is_a_class_statement_that_tools_can_read():
    tree = ast.parse(inspect.getsource(train_config))
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert "SAEVariantConfig" in classes   # not built at run time (dataclasses.make_dataclass)
    written = [s.target.id for s in classes["SAEVariantConfig"].body if isinstance(s, ast.AnnAssign)]
    assert written == [f.name for f in dataclasses.fields(SAEVariantConfig)]
    assert SAEVariantConfig.__module__ == "qwen_sae_jax.train.config"


def test_every_sae_field_but_the_trainers_is_mirrored_in_order_with_its_type_default_and_help():
    variant = {f.name: f for f in dataclasses.fields(SAEVariantConfig)}
    assert list(variant) == ["name", "hooks", "implementation"] + [f.name for f in _sae_fields()] + ["optim"]
    sae_docs, variant_docs = field_docs(SAEConfig), field_docs(SAEVariantConfig)
    for f in _sae_fields():
        mirror = variant[f.name]
        # SAEConfig.d_sae is typed int (resolved from expansion_factor on construction); a variant may leave it null
        assert mirror.type == ("int | None" if f.name == "d_sae" else f.type), f.name
        assert mirror.default == ("topk" if f.name == "architecture" else f.default), f.name
        assert variant_docs[f.name] == sae_docs[f.name] != "", f.name
    for name in OWN_FIELDS:
        assert variant_docs[name], name


def test_train_help_lists_every_variant_key():
    text = format_help(TrainConfig)
    for name in [f.name for f in _sae_fields()] + ["name", "hooks", "implementation", "optim.lr"]:
        assert f"  saes.N.{name}: " in text, name
    assert "saes.N.d_in" not in text and "saes.N.hook_name" not in text


def test_sae_config_fills_the_trainers_fields_and_keeps_the_rest():
    variant = SAEVariantConfig(architecture="jumprelu", d_sae=32, l0_coefficient=0.01, name="j")
    cfg = variant.sae_config(d_in=8, hook_name="layers.1", model_name="tiny")
    assert cfg == SAEConfig(architecture="jumprelu", d_in=8, d_sae=32, l0_coefficient=0.01,
                            hook_name="layers.1", model_name="tiny")


def test_bad_values_are_reported_where_the_plan_builds_the_sae_config():
    cfg = load_config(TrainConfig, {"saes": [{"architecture": "relu", "d_sae": 64, "k": 4}]})
    with pytest.raises(UserError, match=r"^saes.0: SAEConfig.k is only used by topk/batchtopk, not 'relu'"):
        make_plan(cfg, 4, 192)
