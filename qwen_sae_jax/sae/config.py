"""`SAEConfig`: everything that fixes an SAE's shapes and its training objective.

The config is a frozen (hashable) dataclass because it rides along in the `SAE` pytree as a static
field: two SAEs with equal configs share compiled code. It is saved verbatim as ``cfg.json`` next to
the weights, so every field is plain JSON (str / int / float / bool / None).

Conventions shared by every architecture (see ``docs/sae.md``):
  * the SAE sees ``x * act_scale`` (input normalisation; ``act_scale == 1`` when off),
  * pre-activations ``pre = (x * act_scale - b_dec [if apply_b_dec_to_input]) @ W_enc + b_enc``,
  * reconstruction ``x_hat = (z @ W_dec + b_dec) / act_scale`` (so ``sae(x)`` is in raw units),
  * losses are computed in the normalised space, ``mse`` = squared error summed over ``d_in`` and
    averaged over tokens (SAELens' convention, so its coefficients transfer).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from qwen_sae_jax.errors import UserError, did_you_mean

ARCHITECTURES = ("topk", "batchtopk", "jumprelu", "relu")
B_DEC_INITS = ("geometric_median", "shrunk_median", "mean", "zeros")
DTYPES = ("float32", "bfloat16")
IMPLEMENTATIONS = ("auto", "pallas", "xla", "approx")

# default initial encoder column norm with unit-norm decoders (benchmarks/sae_quality.py, docs/sae.md)
ENCODER_INIT_NORM = 0.1

# architectures that select a fixed number k of latents per token (k is required)
_K_ARCHITECTURES = ("topk", "batchtopk")


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    architecture: str
    """One of "topk", "batchtopk", "jumprelu", "relu"."""
    d_in: int
    """Width of the hooked activation."""
    d_sae: int = None  # type: ignore[assignment]  # None: from expansion_factor, resolved to an int in __post_init__
    """Number of latents. Give this or ``expansion_factor``; it is resolved to an int on construction."""
    expansion_factor: int | None = None
    """``d_sae = expansion_factor * d_in`` when ``d_sae`` is not given."""
    k: int | None = None
    """Active latents per token (topk; batchtopk: average per token over the batch). Required for both."""
    hook_name: str = ""
    """Canonical hook name this SAE reads (e.g. "layers.10"), as `LanguageModel.resolve_hooks` returns it."""
    model_name: str = ""
    """What `load_model` takes to rebuild the model: "tiny", a local path or a hub id."""
    apply_b_dec_to_input: bool = True
    """Subtract ``b_dec`` from the (normalised) input before the encoder."""
    normalize_activations: bool | None = None
    """Scale inputs to a fixed mean norm: sqrt(d_in) (SAELens' ``expected_average_only_in``), or 1 for jumprelu
    (Gemma Scope's unit scale, the units of the threshold / bandwidth defaults). The factor is estimated at init
    from ``x_sample``, stored in ``SAE.act_scale`` and folded into the weights on export (`fold_act_scale`).
    None = the architecture's default: on for jumprelu (whose thresholds Adam moves by about ``lr`` per step,
    too slowly against raw activations of norm 10-1000), off for the others."""
    dtype: str = "float32"
    """Parameter dtype: "float32" or "bfloat16". Losses are always accumulated in float32."""
    normalize_decoder: bool | None = None
    """Keep decoder rows at unit norm (gradient projection + renormalisation around each update).
    None = the architecture's default: True for topk/batchtopk/jumprelu, False for relu (whose L1 term
    is weighted by the decoder row norms instead)."""
    decoder_init_norm: float | None = None
    """Norm of the initial decoder rows. None = 1.0 when the decoder is kept at unit norm, else 0.1."""
    encoder_init_norm: float | None = None
    """Norm of each latent's initial encoder column ``W_enc[:, j]``, which starts as a scaled copy of its
    decoder row. None = ENCODER_INIT_NORM when the decoder is kept at unit norm, else the decoder's norm
    (tied, ``W_enc = W_dec^T``)."""
    b_dec_init: str = "shrunk_median"
    """How init_sae sets b_dec from ``x_sample``: "shrunk_median" (the geometric median shrunk toward 0 unless it
    stands out from the spread, see init.shrunk_median), "geometric_median" (Weiszfeld), "mean" or "zeros"."""
    # --- TopK / BatchTopK ---------------------------------------------------------------------------
    k_aux: int | None = None
    """Latents used by the AuxK loss on dead latents (Gao et al.). None = d_in // 2 (capped at d_sae)."""
    aux_coefficient: float = 1.0 / 32.0
    """Weight of the AuxK loss (topk, batchtopk)."""
    dead_tokens_threshold: int = 10_000_000
    """A latent is dead when it has not fired in this many training tokens (see
    `training.update_tokens_since_fired` and `training.dead_mask`)."""
    batchtopk_threshold_lr: float = 0.01
    """BatchTopK: EMA rate of the inference threshold toward the smallest selected activation per batch."""
    # --- ReLU + L1 ----------------------------------------------------------------------------------
    l1_coefficient: float = 5.0
    """relu: weight of sum_j z_j * ||W_dec_j|| (mean over tokens)."""
    # --- JumpReLU -----------------------------------------------------------------------------------
    l0_coefficient: float = 0.002
    """jumprelu: weight of the L0 penalty (number of active latents per token), against an mse on inputs of
    mean norm 1 (the default normalisation): 0.002 gives L0 about 30 on the embedded model's residual stream."""
    jumprelu_bandwidth: float = 0.001
    """jumprelu: bandwidth of the rectangle-kernel pseudo-derivative of the threshold."""
    jumprelu_init_threshold: float = 0.001
    """jumprelu: initial threshold of every latent."""
    pre_act_loss_coefficient: float = 0.0
    """jumprelu: weight of the pre-activation loss sum_j dead_j * relu(threshold_j - pre_j) * ||W_dec_j||
    (Anthropic, Jan 2025) that pulls dead latents back; 0 disables it. Reported in ``LossTerms.aux``."""

    def __post_init__(self) -> None:
        _validate(self)

    # ------------------------------------------------------------------------------------------------
    @property
    def decoder_unit_norm(self) -> bool:
        """Whether decoder rows are kept at unit norm (``normalize_decoder`` with its default resolved)."""
        if self.normalize_decoder is None:
            return self.architecture != "relu"
        return self.normalize_decoder

    @property
    def resolved_normalize_activations(self) -> bool:
        """Whether inputs are scaled (``normalize_activations`` with its default resolved)."""
        if self.normalize_activations is None:
            return self.architecture == "jumprelu"
        return self.normalize_activations

    @property
    def normalized_input_norm(self) -> float:
        """The mean input norm that normalisation scales to: 1 for jumprelu, sqrt(d_in) otherwise."""
        return 1.0 if self.architecture == "jumprelu" else float(self.d_in) ** 0.5

    @property
    def resolved_decoder_init_norm(self) -> float:
        if self.decoder_init_norm is None:
            return 1.0 if self.decoder_unit_norm else 0.1
        return self.decoder_init_norm

    @property
    def resolved_encoder_init_norm(self) -> float:
        if self.encoder_init_norm is None:
            return ENCODER_INIT_NORM if self.decoder_unit_norm else self.resolved_decoder_init_norm
        return self.encoder_init_norm

    @property
    def resolved_k_aux(self) -> int:
        k_aux = self.k_aux if self.k_aux is not None else max(self.d_in // 2, 1)
        return min(k_aux, self.d_sae)

    def replace(self, **changes: Any) -> "SAEConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SAEConfig":
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in data if key not in names]
        if unknown:
            key = unknown[0]
            raise UserError(f"unknown SAEConfig field {key!r}{did_you_mean(key, names)}; "
                            f"valid fields: {', '.join(names)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(cfg: SAEConfig) -> None:
    if cfg.architecture not in ARCHITECTURES:
        raise UserError(
            f"unknown SAE architecture {cfg.architecture!r}{did_you_mean(str(cfg.architecture), ARCHITECTURES)}; "
            f"valid: {', '.join(ARCHITECTURES)}"
        )
    if not _is_int(cfg.d_in) or cfg.d_in < 1:
        raise UserError(f"SAEConfig.d_in must be a positive integer, got {cfg.d_in!r}")
    if cfg.d_sae is None:
        if cfg.expansion_factor is None:
            raise UserError("SAEConfig needs d_sae or expansion_factor (d_sae = expansion_factor * d_in)")
        if not _is_int(cfg.expansion_factor) or cfg.expansion_factor < 1:
            raise UserError(f"SAEConfig.expansion_factor must be a positive integer, got {cfg.expansion_factor!r}")
        object.__setattr__(cfg, "d_sae", cfg.expansion_factor * cfg.d_in)
    elif cfg.expansion_factor is not None and cfg.d_sae != cfg.expansion_factor * cfg.d_in:
        raise UserError(
            f"SAEConfig: d_sae={cfg.d_sae} disagrees with expansion_factor={cfg.expansion_factor} * d_in={cfg.d_in}; "
            "give only one of them"
        )
    if not _is_int(cfg.d_sae) or cfg.d_sae < 1:
        raise UserError(f"SAEConfig.d_sae must be a positive integer, got {cfg.d_sae!r}")
    if cfg.architecture in _K_ARCHITECTURES:
        if cfg.k is None:
            raise UserError(f"SAEConfig.k is required for architecture {cfg.architecture!r} (valid: 1 <= k <= d_sae)")
        if not _is_int(cfg.k) or cfg.k < 1:
            raise UserError(f"SAEConfig.k must be an integer >= 1, got {cfg.k!r}")
        if cfg.k > cfg.d_sae:
            raise UserError(f"SAEConfig.k={cfg.k} exceeds d_sae={cfg.d_sae}; valid: 1 <= k <= d_sae")
    elif cfg.k is not None:
        raise UserError(f"SAEConfig.k is only used by topk/batchtopk, not {cfg.architecture!r}; leave it unset")
    if cfg.k_aux is not None and (not _is_int(cfg.k_aux) or cfg.k_aux < 1):
        raise UserError(f"SAEConfig.k_aux must be an integer >= 1, got {cfg.k_aux!r}")
    if cfg.dtype not in DTYPES:
        raise UserError(f"SAEConfig.dtype {cfg.dtype!r} is not supported{did_you_mean(str(cfg.dtype), DTYPES)}; "
                        f"valid: {', '.join(DTYPES)}")
    if cfg.b_dec_init not in B_DEC_INITS:
        raise UserError(
            f"SAEConfig.b_dec_init {cfg.b_dec_init!r} is not valid{did_you_mean(str(cfg.b_dec_init), B_DEC_INITS)}; "
            f"valid: {', '.join(B_DEC_INITS)}"
        )
    if cfg.normalize_activations not in (None, True, False):
        raise UserError(f"SAEConfig.normalize_activations must be true, false or null (the architecture's default), "
                        f"got {cfg.normalize_activations!r}")
    for name in ("decoder_init_norm", "encoder_init_norm"):
        if getattr(cfg, name) is not None and not getattr(cfg, name) > 0:
            raise UserError(f"SAEConfig.{name} must be > 0, got {getattr(cfg, name)!r}")
    for name in ("aux_coefficient", "l1_coefficient", "l0_coefficient", "pre_act_loss_coefficient"):
        if not getattr(cfg, name) >= 0:
            raise UserError(f"SAEConfig.{name} must be >= 0, got {getattr(cfg, name)!r}")
    if not cfg.jumprelu_bandwidth > 0:
        raise UserError(f"SAEConfig.jumprelu_bandwidth must be > 0, got {cfg.jumprelu_bandwidth!r}")
    if not 0 < cfg.batchtopk_threshold_lr <= 1:
        raise UserError(f"SAEConfig.batchtopk_threshold_lr must be in (0, 1], got {cfg.batchtopk_threshold_lr!r}")
    if not _is_int(cfg.dead_tokens_threshold) or not 1 <= cfg.dead_tokens_threshold < 2**31:
        raise UserError(f"SAEConfig.dead_tokens_threshold must be an integer in [1, 2**31), "
                        f"got {cfg.dead_tokens_threshold!r}")


def resolve_implementation(implementation: str) -> str:
    """Map "auto" to a concrete implementation for the default backend: Pallas on TPU/GPU, XLA on CPU."""
    if implementation not in IMPLEMENTATIONS:
        raise UserError(
            f"unknown implementation {implementation!r}{did_you_mean(str(implementation), IMPLEMENTATIONS)}; "
            f"valid: {', '.join(IMPLEMENTATIONS)}"
        )
    if implementation != "auto":
        return implementation
    import jax

    return "pallas" if jax.default_backend() in ("tpu", "gpu", "cuda", "rocm") else "xla"
