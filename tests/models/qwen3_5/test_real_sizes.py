"""Published Qwen3.5 sizes (configs/models/Qwen3.5-*.json) built with jax.eval_shape, no weights: the text
parameter counts equal transformers' models instantiated on the meta device, and the published figures."""
import os

import jax
import numpy as np
import pytest
from flax import traverse_util
from jax.sharding import Mesh

from qwen_sae_jax.models.qwen3_5.config import Qwen3_5Config
from qwen_sae_jax.models.qwen3_5.params import abstract_params, count_params, param_shardings

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs", "models")
# text parameters in billions (QWEN35-NOTES.md), and the activated parameters per token of the MoE ("A3B")
PUBLISHED = {"Qwen3.5-2B": 1.88, "Qwen3.5-9B": 8.95, "Qwen3.5-27B": 26.9, "Qwen3.5-35B-A3B": 34.7}


def _config(name):
    return Qwen3_5Config.from_hf(os.path.join(CONFIG_DIR, f"{name}.json"))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_transformers_on_meta_and_published(name):
    import torch
    import transformers

    config = _config(name)
    counts = count_params(config)
    with torch.device("meta"):
        hf_config = transformers.AutoConfig.for_model(**config.to_hf())
        model = transformers.AutoModelForCausalLM.from_config(hf_config)
    assert counts["total"] == sum(p.numel() for p in model.parameters())  # tied weights counted once
    billions = PUBLISHED[name]
    decimals = len(repr(billions).split(".")[1])
    assert round(counts["total"] / 1e9, decimals) == billions
    if config.is_moe:
        assert 3.0 <= counts["activated"] / 1e9 < 4.0
    else:
        assert counts["activated"] == counts["total"]


def test_27b_fits_on_chips_smaller_than_the_model():
    """On a 2x4 mesh every device holds about 1/8 of Qwen3.5-27B (shapes only, nothing allocated)."""
    abstract = abstract_params(_config("Qwen3.5-27B"), param_dtype=np.dtype("bfloat16"))
    shardings = traverse_util.flatten_dict(param_shardings(abstract, Mesh(np.array(jax.devices()).reshape(2, 4),
                                                                          ("data", "model"))))
    flat = traverse_util.flatten_dict(abstract)
    total = sum(v.size * 2 for v in flat.values())
    per_device = sum(int(np.prod(shardings[p].shard_shape(v.shape))) * 2 for p, v in flat.items())
    assert total > 50e9 and per_device < total / 7
