"""Published Qwen3 sizes (every qwen3 / qwen3_moe config in configs/models/) built with jax.eval_shape (no
weights): parameter counts equal, exactly, transformers' models instantiated on the meta device; and the model
cards' figures."""
import json
import os

import jax
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import Mesh

from qwen_sae_jax.models.qwen3 import Qwen3Config
from qwen_sae_jax.models.qwen3.params import abstract_params, count_params, param_shardings
from tests.models.qwen3.hf_reference import meta_param_counts

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs", "models")


def _read(name):
    with open(os.path.join(CONFIG_DIR, f"{name}.json")) as f:
        return json.load(f)


QWEN3 = sorted(f[:-len(".json")] for f in os.listdir(CONFIG_DIR)
               if f.endswith(".json") and _read(f[:-len(".json")])["model_type"] in ("qwen3", "qwen3_moe"))

# model card figures (billions) at the precision the cards print them: these configs are the published models
CARDS = {
    "Qwen3-0.6B": dict(total=0.6, non_embedding=0.44),
    "Qwen3-1.7B": dict(total=1.7, non_embedding=1.4),
    "Qwen3-4B": dict(total=4.0, non_embedding=3.6),
    "Qwen3-8B": dict(total=8.2, non_embedding=6.95),
    "Qwen3-14B": dict(total=14.8, non_embedding=13.2),
    "Qwen3-32B": dict(total=32.8, non_embedding=31.2),
    "Qwen3-30B-A3B": dict(total=30.5, non_embedding=29.9, activated=3.3),
}


def test_every_qwen3_config_has_its_model_card():
    assert QWEN3 == sorted(CARDS)


@pytest.mark.parametrize("name", QWEN3)
def test_parameter_counts_equal_transformers_on_meta(name):
    """total, non_embedding and activated, exactly; transformers reads the config.json itself (not our to_hf)."""
    config = Qwen3Config.from_hf(os.path.join(CONFIG_DIR, f"{name}.json"))
    counts = count_params(config)
    assert counts == meta_param_counts(_read(name))
    if not config.is_moe:
        assert counts["activated"] == counts["total"]
    for key, billions in CARDS[name].items():
        got = counts[key] / 1e9
        if key == "activated":  # the 30B-A3B card truncates: 3.353B activated is printed as 3.3B
            assert billions <= got < billions + 0.1, (name, key, counts[key])
        else:
            decimals = len(repr(billions).split(".")[1])
            assert round(got, decimals) == billions, (name, key, counts[key])


def test_8b_fits_on_chips_smaller_than_the_model():
    """On a 2x4 mesh every device holds about 1/8 of Qwen3-8B (shapes only, nothing allocated)."""
    config = Qwen3Config.from_hf(os.path.join(CONFIG_DIR, "Qwen3-8B.json"))
    abstract = abstract_params(config, param_dtype=np.dtype("bfloat16"))
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    shardings = traverse_util.flatten_dict(param_shardings(abstract, mesh))
    flat = traverse_util.flatten_dict(abstract)
    total = sum(v.size * 2 for v in flat.values())
    per_device = sum(int(np.prod(shardings[p].shard_shape(v.shape))) * 2 for p, v in flat.items())
    assert total > 16e9 and per_device < total / 7
    q = flat[("model", "layers_0", "self_attn", "q_proj", "kernel")]
    assert q.shape == (4096, 4096) and shardings[("model", "layers_0", "self_attn", "q_proj", "kernel")].shard_shape(
        q.shape) == (2048, 1024)
