"""Qwen3.5 (dense and MoE) text configuration, read from and written to Hugging Face ``config.json`` files.

``from_hf`` reads the text config in either of its published forms: the text model itself
(``model_type`` ``qwen3_5_text`` / ``qwen3_5_moe_text``, as ``Qwen3_5ForCausalLM`` saves it) or the
conditional-generation config most hub checkpoints carry (``qwen3_5`` / ``qwen3_5_moe``), whose
``text_config`` holds the language model (the vision tower is not used). Missing optional fields take the
defaults of ``transformers``' ``Qwen3_5TextConfig`` / ``Qwen3_5MoeTextConfig``; a field whose value this
implementation cannot honour raises one ``UserError`` naming the field and the valid values.

Tied embeddings: a conditional-generation model ties its LM head by the top-level ``tie_word_embeddings``
(that is what ``transformers`` reads for ``Qwen3_5ForConditionalGeneration``); the ``text_config`` value is
used only when the top level has none.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.models.qwen3.config import eos_token_id, eos_token_ids, read_json, save_json

TEXT_MODEL_TYPES = {"qwen3_5": "qwen3_5_text", "qwen3_5_moe": "qwen3_5_moe_text"}  # outer -> text model_type
MODEL_TYPES = ("qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text")
LAYER_TYPES = ("linear_attention", "full_attention")
MIXER = {"linear_attention": "linear_attn", "full_attention": "self_attn"}  # layer type -> mixer module name

_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")


@dataclass(frozen=True)
class Qwen3_5Config:
    """Architecture of a Qwen3.5 text decoder (``num_experts == 0`` means dense).

    Field names and meanings are those of the HF text config. ``layer_types[i]`` is ``"linear_attention"``
    (a Gated DeltaNet layer, module ``linear_attn``) or ``"full_attention"`` (gated attention, ``self_attn``).
    Every layer of a MoE model is sparse (routed experts + a gated shared expert).
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    layer_types: tuple[str, ...]
    intermediate_size: int = 0  # dense MLP width (dense models only)
    head_dim: int = 256
    partial_rotary_factor: float = 0.25  # RoPE rotates the first int(head_dim * factor) dims of q and k
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32768  # longest sequence generate() accepts
    initializer_range: float = 0.02  # std of the normal init of matrices (init_params)
    # Gated DeltaNet
    linear_conv_kernel_dim: int = 4
    linear_key_head_dim: int = 128
    linear_value_head_dim: int = 128
    linear_num_key_heads: int = 16
    linear_num_value_heads: int = 32
    # MoE (model_type "qwen3_5_moe_text")
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    shared_expert_intermediate_size: int = 0
    # special tokens (generation stops on any of eos_token_ids)
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    def __post_init__(self):
        errors = []
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "head_dim", "linear_conv_kernel_dim", "linear_key_head_dim", "linear_value_head_dim",
                     "linear_num_key_heads", "linear_num_value_heads"):
            if int(getattr(self, name)) <= 0:
                errors.append(f"{name}={getattr(self, name)} must be > 0")
        for heads, groups in (("num_attention_heads", "num_key_value_heads"),
                              ("linear_num_value_heads", "linear_num_key_heads")):
            if getattr(self, groups) > 0 and getattr(self, heads) % getattr(self, groups):
                errors.append(f"{heads}={getattr(self, heads)} must be a multiple of {groups}={getattr(self, groups)}")
        if len(self.layer_types) != self.num_hidden_layers:
            errors.append(f"layer_types has {len(self.layer_types)} entries for num_hidden_layers="
                          f"{self.num_hidden_layers}")
        bad = sorted({t for t in self.layer_types if t not in LAYER_TYPES})
        if bad:
            errors.append(f"layer_types contains {bad}; valid: {', '.join(LAYER_TYPES)}")
        rotary = self.rotary_dim
        if not (0 < rotary <= self.head_dim and rotary % 2 == 0):
            errors.append(f"partial_rotary_factor={self.partial_rotary_factor} gives rotary dim {rotary}; it must be "
                          f"even and in (0, head_dim={self.head_dim}]")
        if self.is_moe:
            if not 0 < self.num_experts_per_tok <= self.num_experts:
                errors.append(f"num_experts_per_tok={self.num_experts_per_tok} must be in [1, num_experts="
                              f"{self.num_experts}]")
            for name in ("moe_intermediate_size", "shared_expert_intermediate_size"):
                if getattr(self, name) <= 0:
                    errors.append(f"{name}={getattr(self, name)} must be > 0")
        elif self.intermediate_size <= 0:
            errors.append(f"intermediate_size={self.intermediate_size} must be > 0")
        if errors:
            raise UserError("invalid Qwen3.5 config: " + "; ".join(errors))

    # ------------------------------------------------------------------ derived
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def norm_topk_prob(self) -> bool:
        """The router always renormalises its top-k probabilities (as Qwen3-MoE with norm_topk_prob)."""
        return True

    @property
    def model_type(self) -> str:
        return "qwen3_5_moe_text" if self.is_moe else "qwen3_5_text"

    @property
    def mixers(self) -> tuple[str, ...]:
        """Per layer, the name of its token-mixer module: ``linear_attn`` or ``self_attn``."""
        return tuple(MIXER[t] for t in self.layer_types)

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def key_dim(self) -> int:  # Gated DeltaNet: all key heads
        return self.linear_num_key_heads * self.linear_key_head_dim

    @property
    def value_dim(self) -> int:  # Gated DeltaNet: all value heads
        return self.linear_num_value_heads * self.linear_value_head_dim

    @property
    def conv_dim(self) -> int:  # channels of the causal conv: [q | k | v]
        return 2 * self.key_dim + self.value_dim

    def is_dense_mlp(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` uses the dense SwiGLU MLP (else the MoE block)."""
        return not self.is_moe

    def replace(self, **changes) -> "Qwen3_5Config":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ HF conversion
    @classmethod
    def from_hf(cls, source: str | os.PathLike | Mapping[str, Any]) -> "Qwen3_5Config":
        """Build from an HF ``config.json`` (a path to the file or its directory, or the parsed dict)."""
        hf = read_json(source)
        where = f" in {source}" if not isinstance(source, Mapping) else ""
        model_type = hf.get("model_type")
        if model_type not in MODEL_TYPES:
            raise UserError(f"model_type={model_type!r}{where} is not supported; valid: {', '.join(MODEL_TYPES)}")
        if model_type in TEXT_MODEL_TYPES:
            outer, text = hf, hf.get("text_config")
            if not isinstance(text, Mapping):
                raise UserError(f"config{where} (model_type={model_type!r}) lacks its text_config")
            hf = dict(text)
            expected = TEXT_MODEL_TYPES[model_type]
            if hf.get("model_type", expected) != expected:
                raise UserError(f"text_config.model_type={hf['model_type']!r}{where} does not match "
                                f"model_type={model_type!r}; valid: {expected!r}")
            for key in ("tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id"):
                if key in outer and (key == "tie_word_embeddings" or hf.get(key) is None):
                    hf[key] = outer[key]
            where += " (text_config)"
            model_type = expected
        moe = model_type == "qwen3_5_moe_text"
        missing = [k for k in _REQUIRED + (() if moe else ("intermediate_size",)) if k not in hf]
        if missing:
            raise UserError(f"config{where} lacks required field(s): {', '.join(missing)}")
        if hf.get("hidden_act", "silu") != "silu":
            raise UserError(f"hidden_act={hf['hidden_act']!r}{where} is not supported; valid: 'silu'")
        if hf.get("attention_bias", False):
            raise UserError(f"attention_bias=true{where} is not supported (Qwen3.5 has no attention biases)")
        rope = _rope(hf, where)

        n_layers = int(hf["num_hidden_layers"])
        layer_types = hf.get("layer_types")
        if layer_types is None:  # transformers: layer i is full attention iff (i + 1) % interval == 0
            interval = int(hf.get("full_attention_interval", 4))
            if interval <= 0:
                raise UserError(f"full_attention_interval={interval}{where} must be > 0")
            layer_types = ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(n_layers)]
        kwargs: dict[str, Any] = dict(
            vocab_size=int(hf["vocab_size"]),
            hidden_size=int(hf["hidden_size"]),
            num_hidden_layers=n_layers,
            num_attention_heads=int(hf["num_attention_heads"]),
            num_key_value_heads=int(hf.get("num_key_value_heads", 2 if moe else 4)),
            layer_types=tuple(str(t) for t in layer_types),
            intermediate_size=int(hf.get("intermediate_size", 0)) if not moe else 0,
            head_dim=int(hf.get("head_dim", 256)),
            partial_rotary_factor=rope["partial_rotary_factor"],
            rope_theta=rope["rope_theta"],
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_position_embeddings=int(hf.get("max_position_embeddings", 32768)),
            initializer_range=float(hf.get("initializer_range", 0.02)),
            linear_conv_kernel_dim=int(hf.get("linear_conv_kernel_dim", 4)),
            linear_key_head_dim=int(hf.get("linear_key_head_dim", 128)),
            linear_value_head_dim=int(hf.get("linear_value_head_dim", 128)),
            linear_num_key_heads=int(hf.get("linear_num_key_heads", 16)),
            linear_num_value_heads=int(hf.get("linear_num_value_heads", 32)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_ids=eos_token_ids(hf.get("eos_token_id")),
            pad_token_id=hf.get("pad_token_id"),
        )
        if moe:  # defaults of Qwen3_5MoeTextConfig
            kwargs.update(num_experts=int(hf.get("num_experts", 256)),
                          num_experts_per_tok=int(hf.get("num_experts_per_tok", 8)),
                          moe_intermediate_size=int(hf.get("moe_intermediate_size", 512)),
                          shared_expert_intermediate_size=int(hf.get("shared_expert_intermediate_size", 512)))
            if kwargs["num_experts"] <= 0:
                raise UserError(f"num_experts={kwargs['num_experts']}{where} must be > 0 for a MoE model")
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """The HF text ``config.json`` dict of ``Qwen3_5ForCausalLM`` / ``Qwen3_5MoeForCausalLM``."""
        hf: dict[str, Any] = {
            "architectures": ["Qwen3_5MoeForCausalLM" if self.is_moe else "Qwen3_5ForCausalLM"],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "layer_types": list(self.layer_types),
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta,
                                "partial_rotary_factor": self.partial_rotary_factor},
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": self.initializer_range,
            "linear_conv_kernel_dim": self.linear_conv_kernel_dim,
            "linear_key_head_dim": self.linear_key_head_dim,
            "linear_value_head_dim": self.linear_value_head_dim,
            "linear_num_key_heads": self.linear_num_key_heads,
            "linear_num_value_heads": self.linear_num_value_heads,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos_token_id(self.eos_token_ids),
            "pad_token_id": self.pad_token_id,
        }
        if self.is_moe:
            hf.update(num_experts=self.num_experts, num_experts_per_tok=self.num_experts_per_tok,
                      moe_intermediate_size=self.moe_intermediate_size,
                      shared_expert_intermediate_size=self.shared_expert_intermediate_size)
        else:
            hf["intermediate_size"] = self.intermediate_size
        return hf

    def save_hf(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` into directory ``path``."""
        save_json(self.to_hf(), path)


def _rope(hf: Mapping[str, Any], where: str) -> dict[str, float]:
    """``rope_theta`` and ``partial_rotary_factor`` from ``rope_parameters`` (or the legacy top-level fields).

    mRoPE fields (``mrope_section``, ``mrope_interleaved``) are accepted and ignored: for text the temporal,
    height and width position rows are equal, so mRoPE is plain 1-D RoPE over the rotary dims."""
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if not isinstance(params, Mapping):
        raise UserError(f"rope_parameters={params!r}{where} must be a mapping")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise UserError(f"rope_parameters.rope_type={rope_type!r}{where} is not supported; valid: 'default'")
    return {"rope_theta": float(params.get("rope_theta", hf.get("rope_theta", 10000.0))),
            "partial_rotary_factor": float(params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 0.25)))}
