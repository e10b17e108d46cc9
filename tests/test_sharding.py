"""Logical axis names -> mesh axes (qwen_sae_jax.sharding) on 8 forced CPU devices: the default table places
every parameter of both families as the former mesh-axis rules did; mapping `expert` to another mesh axis is
a config change that moves the MoE expert weights and leaves the forward unchanged; the logits of the forward
used by training / eval come out with rows over 'data' and the vocabulary over 'model'; the SAE state follows
`latent`; one clear error for an unknown logical or mesh axis."""
import json
import os
import re

import jax
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from qwen_sae_jax.config import format_help, load_config
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.lm import load_model
from qwen_sae_jax.models import registry
from qwen_sae_jax.models.qwen3 import params as qwen3_params
from qwen_sae_jax.models.qwen3_5 import params as qwen3_5_params
from qwen_sae_jax.sharding import DEFAULT_RULES, check_rules, logical_spec
from qwen_sae_jax.train.config import MeshConfig, TrainConfig
from qwen_sae_jax.train.mesh import state_shardings
from tests.test_lm import build_hf

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs", "models")

# the rules as they were written with mesh axes before the logical names: the oracle of the default table
_OLD_QWEN3 = (
    (r"embed_tokens/embedding$", P("model", "data")),
    (r"self_attn/(q|k|v)_proj/kernel$", P("data", "model")),
    (r"self_attn/(q|k|v)_proj/bias$", P("model")),
    (r"self_attn/o_proj/kernel$", P("model", "data")),
    (r"(gate|up)_proj/kernel$", P("data", "model")),
    (r"down_proj/kernel$", P("model", "data")),
    (r"mlp/gate/kernel$", P("data", None)),
    (r"experts/(gate|up)_proj$", P("model", "data", None)),
    (r"experts/down_proj$", P("model", None, "data")),
    (r"lm_head/kernel$", P("data", "model")),
    (r".*", P()),
)
_OLD_QWEN3_5 = (
    (r"linear_attn/in_proj_(qkv|z)/kernel$", P("data", "model")),
    (r"linear_attn/in_proj_(a|b)/kernel$", P("data", None)),
    (r"linear_attn/conv1d/kernel$", P(None, "model")),
    (r"linear_attn/out_proj/kernel$", P("model", "data")),
    (r"shared_expert_gate/kernel$", P("data", None)),
) + _OLD_QWEN3


def _old_spec(rules, path, shape, mesh):
    spec = next(s for pattern, s in rules if re.search(pattern, "/".join(path)))
    padded = tuple(spec) + (None,) * (len(shape) - len(spec))
    return P(*(a if a is not None and dim % mesh.shape[a] == 0 else None for dim, a in zip(shape, padded)))


def _mesh(data, model):
    assert len(jax.devices()) == 8
    return Mesh(np.array(jax.devices()).reshape(data, model), ("data", "model"))


def _small_real_config(name, layers=4):
    """A published config with its first ``layers`` layers (every kind of layer, shapes at full width)."""
    with open(os.path.join(CONFIG_DIR, f"{name}.json")) as f:
        hf = json.load(f)
    text = hf.get("text_config", hf)
    text["num_hidden_layers"] = layers
    if "layer_types" in text:
        text["layer_types"] = text["layer_types"][:layers]
    return registry.read_config(hf)


@pytest.mark.parametrize("name,family,old", [
    ("Qwen3-30B-A3B", qwen3_params, _OLD_QWEN3), ("Qwen3-8B", qwen3_params, _OLD_QWEN3),
    ("Qwen3.5-35B-A3B", qwen3_5_params, _OLD_QWEN3_5), ("Qwen3.5-9B", qwen3_5_params, _OLD_QWEN3_5)])
@pytest.mark.parametrize("shape", [(2, 4), (4, 2), (1, 8)])
def test_default_table_places_every_parameter_as_the_mesh_axis_rules_did(name, family, old, shape):
    mesh = _mesh(*shape)
    abstract = traverse_util.flatten_dict(family.abstract_params(_small_real_config(name)))
    shardings = traverse_util.flatten_dict(family.param_shardings(traverse_util.unflatten_dict(abstract), mesh))
    for path, leaf in abstract.items():
        assert shardings[path].spec == _old_spec(old, path, leaf.shape, mesh), path


def test_logical_spec_leaves_out_taken_and_non_dividing_axes():
    mesh = _mesh(2, 4)
    assert logical_spec(("expert", "embed", "mlp"), (8, 64, 24), mesh) == P("model", "data", None)
    assert logical_spec(("expert", "embed", "mlp"), (6, 64, 24), mesh) == P(None, "data", None)
    assert logical_spec(("expert", "embed", "mlp"), (8, 64, 24), mesh, {"expert": None}) == P(None, "data", "model")
    assert logical_spec(("batch",), (4, 7, 9), mesh) == P("data", None, None)
    with pytest.raises(ValueError, match="3 logical axes"):
        logical_spec(("batch", None, "vocab"), (4, 7), mesh)


def test_expert_axis_is_a_config_change_and_the_forward_is_unchanged(tmp_path):
    """`expert` mapped to 'data' (and `mlp` on 'model'): the stacked expert weights [E, D, I] are split E over
    'data', I over 'model' (D keeps no axis: 'data' is taken); logits equal the single-device model's."""
    build_hf(tmp_path, moe=True, seed=4, hidden_size=64, num_attention_heads=8, num_key_value_heads=4)
    single = load_model(str(tmp_path))
    mesh = _mesh(2, 4)
    rules = MeshConfig(rules={"expert": "data"}).rules
    moved = load_model(str(tmp_path), mesh=mesh, rules=rules)
    experts = moved.params["model"]["layers_1"]["mlp"]["experts"]
    assert experts["gate_proj"].sharding.spec == P("data", None, "model")     # [E=8, D=64, I=24]
    assert experts["gate_proj"].addressable_shards[0].data.shape == (4, 64, 6)
    assert experts["down_proj"].sharding.spec == P("data", "model", None)     # [E, I, D]
    default = load_model(str(tmp_path), mesh=mesh)
    assert default.params["model"]["layers_1"]["mlp"]["experts"]["gate_proj"].sharding.spec == P("model", "data", None)
    q = moved.params["model"]["layers_0"]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.spec == P("data", "model")   # everything else where it was
    ids = np.random.RandomState(5).randint(0, 128, (4, 6)).astype(np.int32)
    np.testing.assert_allclose(np.asarray(moved.logits(ids)), np.asarray(single.logits(ids)), atol=1e-5, rtol=0)


def test_expert_rule_moves_qwen3_5_moe_experts_too():
    """Shapes only: Qwen3.5-35B-A3B's routed experts follow `expert`, its shared expert and router do not."""
    config = _small_real_config("Qwen3.5-35B-A3B")
    abstract = qwen3_5_params.abstract_params(config)
    mesh = _mesh(2, 4)
    flat = traverse_util.flatten_dict(qwen3_5_params.param_shardings(abstract, mesh, {"expert": "data"}))
    mlp = ("model", "layers_0", "mlp")
    assert flat[mlp + ("experts", "gate_proj")].spec == P("data", None, "model")    # [256, 2048, 512]
    assert flat[mlp + ("experts", "down_proj")].spec == P("data", "model", None)    # [256, 512, 2048]
    assert flat[mlp + ("shared_expert", "gate_proj", "kernel")].spec == P("data", "model")
    assert flat[mlp + ("gate", "kernel")].spec == P("data", None)


def test_logits_of_the_training_and_eval_forward_are_sharded_rows_over_data(tmp_path):
    """`lm.apply` under the caller's jit (as eval / splice / steering run it) and `lm.logits`: [B, T, V] logits
    with B over 'data' and V over 'model' on a 2x4 mesh; `vocab` mapped to null keeps V whole."""
    build_hf(tmp_path, seed=1)
    mesh = _mesh(2, 4)
    lm = load_model(str(tmp_path), mesh=mesh)
    ids = jax.device_put(np.arange(4 * 6, dtype=np.int32).reshape(4, 6) % 128, NamedSharding(mesh, P("data", None)))
    logits, acts = jax.jit(lambda p, x: lm.apply(p, x, capture=("layers.1",)))(lm.params, ids)
    assert logits.shape == (4, 6, 128)
    assert logits.sharding.spec == P("data", None, "model")
    assert logits.addressable_shards[0].data.shape == (2, 6, 32)
    assert lm.logits(np.asarray(ids)).sharding.spec == P("data", None, "model")
    whole_vocab = load_model(str(tmp_path), mesh=mesh, rules={"vocab": None})
    assert whole_vocab.logits(np.asarray(ids)).sharding.is_equivalent_to(NamedSharding(mesh, P("data", None, None)), 3)
    np.testing.assert_allclose(np.asarray(whole_vocab.logits(np.asarray(ids))), np.asarray(logits), atol=1e-5)


def test_sae_state_follows_the_latent_rule():
    tree = {"W_enc": jax.ShapeDtypeStruct((2, 16, 64), np.float32), "b_dec": jax.ShapeDtypeStruct((2, 16), np.float32),
            "b_enc": jax.ShapeDtypeStruct((64,), np.float32), "count": jax.ShapeDtypeStruct((), np.int32)}
    mesh = _mesh(4, 2)
    specs = {k: s.spec for k, s in state_shardings(tree, mesh).items()}
    assert specs == {"W_enc": P(None, None, "model"), "b_dec": P(None, None), "b_enc": P("model"), "count": P()}
    specs = {k: s.spec for k, s in state_shardings(tree, mesh, {"latent": "data"}).items()}
    assert specs["W_enc"] == P(None, None, "data") and specs["b_enc"] == P("data")


def test_rules_in_the_mesh_config_are_typed_merged_and_checked(tmp_path):
    cfg = load_config(TrainConfig, None, ["mesh.rules.expert=data", "mesh.rules.vocab=null"])
    assert cfg.mesh.rules == {**DEFAULT_RULES, "expert": "data", "vocab": None}
    partial = tmp_path / "c.yaml"
    partial.write_text("mesh:\n  rules: {expert: data}\n")
    assert load_config(TrainConfig, partial).mesh.rules == {**DEFAULT_RULES, "expert": "data"}
    assert "mesh.rules: dict[str, str | null]" in format_help(TrainConfig)
    with pytest.raises(UserError, match=r"mesh.rules: unknown logical axis 'experts' \(did you mean 'expert'\?\); "
                                        r"valid: batch, embed, vocab, heads, kv_heads, mlp, expert, latent"):
        load_config(TrainConfig, None, ["mesh.rules.experts=data"])
    with pytest.raises(UserError, match=r"mesh.rules.expert: unknown mesh axis 'modle' \(did you mean 'model'\?\); "
                                        r"valid: data, model, null"):
        load_config(TrainConfig, None, ["mesh.rules.expert=modle"])
    with pytest.raises(UserError, match="rules: unknown logical axis 'hidden'"):
        load_model("tiny", rules={"hidden": "data"})
    assert check_rules(None) == dict(DEFAULT_RULES)
