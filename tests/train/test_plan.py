"""Which SAEs a config trains: hooks resolved per variant, groups, and the bad inputs."""
import pytest

from qwen_sae_jax.config import load_config
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.train.config import TrainConfig
from qwen_sae_jax.train.plan import make_plan


def _cfg(*overrides, **data):
    base = {"hooks": ["layers.*.mlp"], "saes": [{"k": 4, "d_sae": 64}]}
    return load_config(TrainConfig, {**base, **data}, list(overrides))


def test_groups_share_rows_of_the_captured_hooks():
    cfg = _cfg(saes=[{"k": 4, "d_sae": 64}, {"name": "wide", "k": 8, "d_sae": 128, "hooks": ["blocks.1.hook_resid_post",
                                                                                          "layers.0.mlp"]}])
    plan = make_plan(cfg, num_layers=3, d_in=16)
    assert plan.hooks == ("layers.0.mlp", "layers.1.mlp", "layers.1", "layers.2.mlp")   # forward order
    a, b = plan.groups
    assert a.name == "topk-k4-64" and a.hooks == ("layers.0.mlp", "layers.1.mlp", "layers.2.mlp")
    assert a.rows == (0, 1, 3) and b.hooks == ("layers.0.mlp", "layers.1") and b.rows == (0, 2)
    assert b.cfg.d_in == 16
    assert plan.num_saes == 5 and "layers.1__wide" in plan.sae_folders()
    assert b.sae_config("layers.1").hook_name == "layers.1"


@pytest.mark.parametrize("overrides, message", [
    (["hooks=[layers.9.mlp]"], r"saes.0.hooks: unknown hook name\(s\) for this 3-layer model: 'layers.9.mlp'"),
    (["hooks=[layers.1.mpl]"], r"did you mean 'layers.1.mlp'"),
    (["saes.0.k=100"], r"saes.0: SAEConfig.k=100 exceeds d_sae=64"),
    (["saes.0.architecture=topkk"], r"saes.0: unknown SAE architecture 'topkk' \(did you mean 'topk'\?\)"),
    (["saes.0.d_sae=60"], r"d_sae=60 is not divisible by the 'model' mesh axis \(8 devices\)"),
    (["saes.0.name=a/b"], r"saes.0.name='a/b': use letters"),
])
def test_bad_plans(overrides, message):
    with pytest.raises(UserError, match=message):
        make_plan(_cfg(*overrides), num_layers=3, d_in=16, model_axis=8)


def test_duplicate_variant_names():
    with pytest.raises(UserError, match="saes.0 and saes.1 are both named 'topk-k4-64'"):
        make_plan(_cfg(saes=[{"k": 4, "d_sae": 64}, {"k": 4, "d_sae": 64, "dtype": "bfloat16"}]), 3, 16)


def test_config_level_errors():
    with pytest.raises(UserError, match="buffer.size=1000 must be a multiple of 2 \\* train.batch_size"):
        _cfg("buffer.size=1000")
    with pytest.raises(UserError, match=r"unknown config key 'saes.0.kk' \(did you mean 'saes.0.k'\?\)"):
        _cfg("saes.0.kk=3")
    with pytest.raises(UserError, match="cache.mode=read needs cache.dir"):
        _cfg("cache.mode=read")
