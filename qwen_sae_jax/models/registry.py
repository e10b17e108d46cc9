"""The model families, dispatched on the HF ``model_type`` (reading) or the config's class (everything else).

    config = read_config(path)                  # Qwen3Config or Qwen3_5Config, by config.json's model_type
    config, params = load_hf(path, param_dtype=jnp.float32, mesh=None, rules=None)
    module = causal_lm(config, dtype, param_dtype)      # Qwen3ForCausalLM or Qwen3_5ForCausalLM
    save_hf(params, config, out_dir)

Every family's module takes the same call (``input_ids, attention_mask, position_ids, *, num_layers,
cache_index``), has ``init_cache(batch, length, dtype)``, names its decoder layers ``model/layers_N`` and lists
per layer the name of its token mixer in ``config.mixers``, so nothing downstream branches on the family.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.models.qwen3 import config as qwen3_config
from qwen_sae_jax.models.qwen3 import params as qwen3_params
from qwen_sae_jax.models.qwen3.config import read_json
from qwen_sae_jax.models.qwen3.modeling import Qwen3ForCausalLM
from qwen_sae_jax.models.qwen3_5 import config as qwen3_5_config
from qwen_sae_jax.models.qwen3_5 import params as qwen3_5_params
from qwen_sae_jax.models.qwen3_5.modeling import Qwen3_5ForCausalLM


@dataclass(frozen=True)
class Family:
    model_types: tuple[str, ...]
    config_class: type[qwen3_config.Qwen3Config] | type[qwen3_5_config.Qwen3_5Config]
    module_class: type
    load_hf: Callable
    save_hf: Callable
    init_params: Callable
    count_params: Callable
    param_shardings: Callable


FAMILIES = (
    Family(qwen3_config.MODEL_TYPES, qwen3_config.Qwen3Config, Qwen3ForCausalLM, qwen3_params.load_hf,
           qwen3_params.save_hf, qwen3_params.init_params, qwen3_params.count_params,
           qwen3_params.param_shardings),
    Family(qwen3_5_config.MODEL_TYPES, qwen3_5_config.Qwen3_5Config, Qwen3_5ForCausalLM, qwen3_5_params.load_hf,
           qwen3_5_params.save_hf, qwen3_5_params.init_params, qwen3_5_params.count_params,
           qwen3_5_params.param_shardings),
)
MODEL_TYPES = tuple(t for f in FAMILIES for t in f.model_types)


def family_of(config_or_hf: Any) -> Family:
    """The family of a config object, or of a parsed ``config.json`` (by its ``model_type``)."""
    if isinstance(config_or_hf, Mapping):
        model_type = config_or_hf.get("model_type")
        for fam in FAMILIES:
            if model_type in fam.model_types:
                return fam
        raise UserError(f"model_type={model_type!r} is not supported; valid: {', '.join(MODEL_TYPES)}")
    for fam in FAMILIES:
        if isinstance(config_or_hf, fam.config_class):
            return fam
    raise TypeError(f"not a model config: {type(config_or_hf).__name__}")


def read_config(source: str | os.PathLike | Mapping[str, Any]):
    """The config of an HF directory / ``config.json`` path / parsed dict, of whichever family it belongs to."""
    hf = read_json(source)
    try:
        fam = family_of(hf)
    except UserError as err:
        where = "" if isinstance(source, Mapping) else f" in {source}"
        raise UserError(f"{err}{where}") from None
    return fam.config_class.from_hf(source)


def load_hf(path: str | os.PathLike, *, param_dtype=None, mesh=None, rules=None):
    """``(config, params)`` of a local HF directory, by its family's ``load_hf`` (``rules``: logical -> mesh
    axes for the parameters' shardings, see ``qwen_sae_jax.sharding``)."""
    kwargs = {} if param_dtype is None else {"param_dtype": param_dtype}
    return family_of(read_config(path)).load_hf(path, mesh=mesh, rules=rules, **kwargs)


def save_hf(params, config, out_dir, **kwargs) -> None:
    """Write an HF directory that ``transformers`` loads, by the config's family."""
    family_of(config).save_hf(params, config, out_dir, **kwargs)


def causal_lm(config, dtype, param_dtype):
    """The linen causal-LM module of ``config``'s family."""
    return family_of(config).module_class(config, dtype=dtype, param_dtype=param_dtype)


def init_params(config, seed: int = 0, **kwargs) -> dict:
    """Random parameters of ``config``'s family, as ``transformers`` initialises them."""
    return family_of(config).init_params(config, seed, **kwargs)


def count_params(config) -> dict[str, int]:
    """``total``, ``non_embedding`` and ``activated`` parameter counts of ``config``'s model."""
    return family_of(config).count_params(config)


def param_shardings(config, abstract: dict, mesh, rules=None) -> dict:
    """NamedSharding per parameter of ``config``'s model on ``mesh`` (a ``Mesh`` or an ``AbstractMesh``), as
    ``load_hf(mesh=...)`` places them (``rules``: logical -> mesh axes, None: the default table)."""
    return family_of(config).param_shardings(abstract, mesh, rules)
