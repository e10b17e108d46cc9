"""Qwen3 / Qwen3-MoE configuration, read from and written to Hugging Face ``config.json`` files.

Every field the Flax model uses is read from the HF config. Missing optional fields take the same
default as ``transformers``' ``Qwen3Config`` / ``Qwen3MoeConfig``; a field whose value this
implementation cannot honour (sliding-window attention, a non-default RoPE type, another model type,
an activation other than SiLU) raises one ``UserError`` naming the field.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

from qwen_sae_jax.errors import UserError

MODEL_TYPES = ("qwen3", "qwen3_moe")

# fields without a default in transformers' config classes that we insist on finding in the file
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")


@dataclass(frozen=True)
class Qwen3Config:
    """Architecture of a Qwen3 dense or MoE decoder (``num_experts == 0`` means dense).

    Field names and meanings are those of the HF config. ``mlp_only_layers`` and
    ``decoder_sparse_step`` follow ``Qwen3MoeDecoderLayer``: layer ``i`` is sparse iff
    ``num_experts > 0 and i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0``.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int  # dense MLP width (dense model, and MoE layers listed in mlp_only_layers)
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    max_position_embeddings: int = 32768  # longest sequence generate() accepts
    initializer_range: float = 0.02  # std of the normal init used by Qwen3ForCausalLM.init
    # MoE (model_type "qwen3_moe")
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    # special tokens (generation stops on any of eos_token_ids)
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    def __post_init__(self):
        errors = []
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim"):
            if int(getattr(self, name)) <= 0:
                errors.append(f"{name}={getattr(self, name)} must be > 0")
        if self.num_key_value_heads > 0 and self.num_attention_heads % self.num_key_value_heads:
            errors.append(f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                          f"num_key_value_heads={self.num_key_value_heads}")
        if self.is_moe:
            if not 0 < self.num_experts_per_tok <= self.num_experts:
                errors.append(f"num_experts_per_tok={self.num_experts_per_tok} must be in "
                              f"[1, num_experts={self.num_experts}]")
            if self.moe_intermediate_size <= 0:
                errors.append(f"moe_intermediate_size={self.moe_intermediate_size} must be > 0")
            if self.decoder_sparse_step <= 0:
                errors.append(f"decoder_sparse_step={self.decoder_sparse_step} must be > 0")
        if any(self.is_dense_mlp(i) for i in range(self.num_hidden_layers)) and self.intermediate_size <= 0:
            errors.append(f"intermediate_size={self.intermediate_size} must be > 0")
        if errors:
            raise UserError("invalid Qwen3 config: " + "; ".join(errors))

    # ------------------------------------------------------------------ derived
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def model_type(self) -> str:
        return "qwen3_moe" if self.is_moe else "qwen3"

    @property
    def mixers(self) -> tuple[str, ...]:
        """Per layer, the name of its token-mixer module (always ``self_attn`` in Qwen3)."""
        return ("self_attn",) * self.num_hidden_layers

    def is_dense_mlp(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` uses the dense SwiGLU MLP (else the sparse MoE block)."""
        if not self.is_moe:
            return True
        return layer in self.mlp_only_layers or (layer + 1) % self.decoder_sparse_step != 0

    def replace(self, **changes) -> "Qwen3Config":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ HF conversion
    @classmethod
    def from_hf(cls, source: str | os.PathLike | Mapping[str, Any]) -> "Qwen3Config":
        """Build from an HF ``config.json`` (a path to the file or its directory, or the parsed dict)."""
        hf = read_json(source)
        where = f" in {source}" if not isinstance(source, Mapping) else ""

        model_type = hf.get("model_type")
        if model_type not in MODEL_TYPES:
            raise UserError(f"model_type={model_type!r}{where} is not supported; valid: {', '.join(MODEL_TYPES)}")
        missing = [k for k in _REQUIRED if k not in hf]
        if model_type == "qwen3" or hf.get("mlp_only_layers"):
            missing += [k for k in ("intermediate_size",) if k not in hf]
        if missing:
            raise UserError(f"config{where} lacks required field(s): {', '.join(missing)}")

        if hf.get("hidden_act", "silu") != "silu":
            raise UserError(f"hidden_act={hf['hidden_act']!r}{where} is not supported; valid: 'silu'")
        if hf.get("use_sliding_window", False):
            raise UserError(f"use_sliding_window=true{where} is not supported (sliding-window attention)")
        layer_types = hf.get("layer_types") or []
        bad_types = sorted(set(layer_types) - {"full_attention"})
        if bad_types:
            raise UserError(f"layer_types{where} contains {bad_types}; only 'full_attention' is supported")
        rope_theta = _rope_theta(hf, where)

        n_heads = int(hf["num_attention_heads"])
        # transformers: absent -> class default (32 dense, 4 MoE); explicit null -> num_attention_heads
        kv_heads = hf.get("num_key_value_heads", 32 if model_type == "qwen3" else 4)
        if model_type == "qwen3":
            head_dim = hf.get("head_dim", 128)  # transformers' Qwen3Config default
        else:  # Qwen3MoeAttention: getattr(config, "head_dim", hidden_size // num_attention_heads)
            head_dim = hf.get("head_dim") or int(hf["hidden_size"]) // n_heads
        eos_ids = eos_token_ids(hf.get("eos_token_id"))

        kwargs: dict[str, Any] = dict(
            vocab_size=int(hf["vocab_size"]),
            hidden_size=int(hf["hidden_size"]),
            intermediate_size=int(hf.get("intermediate_size", 0)),
            num_hidden_layers=int(hf["num_hidden_layers"]),
            num_attention_heads=n_heads,
            num_key_value_heads=int(n_heads if kv_heads is None else kv_heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            attention_bias=bool(hf.get("attention_bias", False)),
            max_position_embeddings=int(hf.get("max_position_embeddings", 32768)),
            initializer_range=float(hf.get("initializer_range", 0.02)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=eos_ids,
            pad_token_id=hf.get("pad_token_id"),
        )
        if model_type == "qwen3_moe":
            # defaults are those of transformers' Qwen3MoeConfig
            kwargs.update(
                # transformers >= 5 writes num_local_experts (its alias of num_experts)
                num_experts=int(hf.get("num_experts", hf.get("num_local_experts", 128))),
                num_experts_per_tok=int(hf.get("num_experts_per_tok", 8)),
                moe_intermediate_size=int(hf.get("moe_intermediate_size", 768)),
                norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
                decoder_sparse_step=int(hf.get("decoder_sparse_step", 1)),
                mlp_only_layers=tuple(int(i) for i in (hf.get("mlp_only_layers") or ())),
            )
            if kwargs["num_experts"] <= 0:
                raise UserError(f"num_experts={kwargs['num_experts']}{where} must be > 0 for model_type 'qwen3_moe'")
            if "intermediate_size" not in hf:
                kwargs["intermediate_size"] = 6144  # Qwen3MoeConfig default; only used by mlp_only_layers
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """The HF ``config.json`` dict (loadable by ``transformers.AutoConfig``)."""
        hf: dict[str, Any] = {
            "architectures": ["Qwen3MoeForCausalLM" if self.is_moe else "Qwen3ForCausalLM"],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            # both spellings: transformers >= 5 reads rope_parameters, 4.x reads rope_theta
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "attention_dropout": 0.0,
            "use_sliding_window": False,
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": self.initializer_range,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos_token_id(self.eos_token_ids),
            "pad_token_id": self.pad_token_id,
        }
        if self.is_moe:
            hf.update(
                num_experts=self.num_experts,
                num_experts_per_tok=self.num_experts_per_tok,
                moe_intermediate_size=self.moe_intermediate_size,
                norm_topk_prob=self.norm_topk_prob,
                decoder_sparse_step=self.decoder_sparse_step,
                mlp_only_layers=list(self.mlp_only_layers),
            )
        return hf

    def save_hf(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` into directory ``path``."""
        save_json(self.to_hf(), path)


def eos_token_ids(value) -> tuple[int, ...]:
    """HF ``eos_token_id`` (None, an int or a list) -> a tuple of ids."""
    return () if value is None else tuple(int(e) for e in (value if isinstance(value, list) else [value]))


def eos_token_id(ids: tuple[int, ...]) -> Any:
    """A tuple of ids -> HF ``eos_token_id`` (None, an int, or a list for several)."""
    return None if not ids else ids[0] if len(ids) == 1 else list(ids)


def save_json(hf: dict[str, Any], path: str | os.PathLike) -> None:
    """Write the config dict ``hf`` as ``config.json`` into directory ``path``."""
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf, f, indent=2, sort_keys=True)
        f.write("\n")


def read_json(source) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    path = os.fspath(source)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.isfile(path):
        raise UserError(f"no config.json at {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON: {err}") from None


def _rope_theta(hf: Mapping[str, Any], where: str) -> float:
    """rope_theta from ``rope_parameters`` (transformers >= 5) or the 4.x ``rope_theta``/``rope_scaling`` pair."""
    params = hf.get("rope_parameters")
    scaling = hf.get("rope_scaling")
    for name, spec in (("rope_parameters", params), ("rope_scaling", scaling)):
        if spec is None:
            continue
        if not isinstance(spec, Mapping):
            raise UserError(f"{name}={spec!r}{where} must be a mapping")
        rope_type = spec.get("rope_type", spec.get("type", "default"))
        if rope_type != "default":
            raise UserError(f"{name}.rope_type={rope_type!r}{where} is not supported; valid: 'default'")
    if params is not None and "rope_theta" in params:
        return float(params["rope_theta"])
    return float(hf.get("rope_theta", 10000.0))  # transformers' default
