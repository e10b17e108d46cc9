"""The format-neutral, raw-input form of an SAE that every reader returns and every writer takes.

``RawSAE`` holds float32 numpy arrays in SAELens layout (``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``)
with input normalisation already folded in, so it takes raw activations ``x``:

    pre   = (x - b_dec * apply_b_dec_to_input) @ W_enc + b_enc        # [..., d_sae]
    z     = relu(pre)                                   (relu)
          = TopK_k(relu(pre))                           (topk; same dense z as relu(TopK_k(pre)))
          = relu(pre) * (pre > threshold)               (jumprelu; also batchtopk at inference)
    x_hat = z @ W_dec + b_dec                                          # [..., d_in]

The formats differ only in two conventions, and both can be changed without changing the function:
whether ``b_dec`` is subtracted from the input (:func:`with_b_dec_convention` folds it into ``b_enc``)
and the input scale (:func:`fold_input_scale`). The ReLU/TopK order needs no folding: TopK of the
ReLU'd pre-activations and ReLU of the TopK pre-activations give the same dense latents.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from qwen_sae_jax.errors import UserError

ARCHITECTURES = ("topk", "batchtopk", "jumprelu", "relu")


@dataclass(frozen=True)
class RawSAE:
    architecture: str                 # one of ARCHITECTURES
    W_enc: np.ndarray                 # [d_in, d_sae]
    b_enc: np.ndarray                 # [d_sae]
    W_dec: np.ndarray                 # [d_sae, d_in]
    b_dec: np.ndarray                 # [d_in]
    apply_b_dec_to_input: bool
    k: int | None = None              # topk / batchtopk
    threshold: np.ndarray | None = None   # [d_sae], jumprelu / batchtopk
    hook_name: str | None = None      # canonical hook name (layers.N, layers.N.mlp, ...)
    model_name: str | None = None     # what load_model() takes
    native_cfg: dict | None = None    # the SAEConfig fields recorded at export (training settings), if any

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise UserError(f"unknown SAE architecture {self.architecture!r}; valid: {list(ARCHITECTURES)}")
        if self.W_enc.ndim != 2:
            raise UserError(f"W_enc must be 2-D [d_in, d_sae], got shape {self.W_enc.shape}")
        d_in, d_sae = self.W_enc.shape
        expected = {"b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
        if self.threshold is not None:
            expected["threshold"] = (d_sae,)
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise UserError(f"{name} has shape {got} but W_enc {tuple(self.W_enc.shape)} implies {shape}")
        if self.architecture in ("topk", "batchtopk") and (self.k is None or not 0 < int(self.k) <= d_sae):
            raise UserError(f"{self.architecture} SAE needs 0 < k <= d_sae={d_sae}, got k={self.k}")
        if self.architecture in ("jumprelu", "batchtopk") and self.threshold is None:
            raise UserError(f"{self.architecture} SAE needs a threshold tensor [d_sae]")

    def replace(self, **changes) -> "RawSAE":
        return dataclasses.replace(self, **changes)


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def fold_input_scale(raw: RawSAE, act_scale: float) -> RawSAE:
    """Fold an input scale ``s`` (the SAE saw ``x * s`` and returned ``x_hat`` in scaled units, divided
    back by ``s``) into the weights, so the result takes raw ``x``. Latents are unchanged:

        (x*s - b_dec) @ W_enc  ==  (x - b_dec/s) @ (s*W_enc);   (z @ W_dec + b_dec)/s == z @ (W_dec/s) + b_dec/s
    """
    s = float(act_scale)
    if not np.isfinite(s) or s <= 0:
        raise UserError(f"act_scale must be a positive finite number, got {act_scale}")
    if s == 1.0:
        return raw
    s64 = np.float64(s)
    return raw.replace(
        W_enc=_f32(raw.W_enc.astype(np.float64) * s64),
        W_dec=_f32(raw.W_dec.astype(np.float64) / s64),
        b_dec=_f32(raw.b_dec.astype(np.float64) / s64),
    )


def with_b_dec_convention(raw: RawSAE, apply_b_dec_to_input: bool) -> RawSAE:
    """The same function with ``b_dec`` subtracted from the input (True) or not (False), folding
    ``b_dec @ W_enc`` into ``b_enc`` (computed in float64)."""
    if raw.apply_b_dec_to_input == apply_b_dec_to_input:
        return raw
    shift = raw.b_dec.astype(np.float64) @ raw.W_enc.astype(np.float64)   # [d_sae]
    b_enc = raw.b_enc.astype(np.float64) + (shift if apply_b_dec_to_input else -shift)
    return raw.replace(b_enc=_f32(b_enc), apply_b_dec_to_input=apply_b_dec_to_input)


def topk_from_relu(raw: RawSAE) -> RawSAE:
    """A ReLU SAE written as TopK with k = d_sae (exactly the same latents), for TopK-only formats."""
    if raw.architecture != "relu":
        return raw
    return raw.replace(architecture="topk", k=raw.d_sae)
