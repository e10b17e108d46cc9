"""GRPO (group relative policy optimisation, Shao et al. 2024, DeepSeekMath): the rollout and the loss, sharded.

**Rollout** (`make_rollout`, one compiled program): every prompt of the step is repeated G times (rows
``p * G .. p * G + G - 1`` are prompt p's group), the current policy samples a response for each row with the
compiled decoding loop (`models.generate`, key ``fold_in(key(rollout.seed), step)``), and one forward pass of
the policy over prompt + response gives the sampling policy's log-probabilities ``old_logp`` and the
activations for the SAE penalty (`posttrain.rl_reward`); a forward pass of the frozen reference model gives
``ref_logp``.

**Advantages** (`group_advantages`), per group of G rewards, with the population standard deviation::

    A_i = (r_i - mean_group(r)) / (std_group(r) + eps)

**Loss** (`grpo_loss_terms`), per response token t of row b (m = the response mask, response tokens up to and
including the stop token)::

    ratio = exp(logp - old_logp)
    pg    = -min(ratio * A_b, clip(ratio, 1 - clip_eps, 1 + clip_eps) * A_b)
    kl    = exp(ref_logp - logp) - (ref_logp - logp) - 1          (k3: unbiased, >= 0)
    loss  = mean_m(pg + beta * kl)

``mean_m`` is the mean over every response token of the global batch (``aggregate=token``) or the mean over
rows of each row's token mean (``sequence``, the GRPO paper's). Both are global means, so the mesh changes where
the work runs, not what it computes. The update (`posttrain.step.make_step`) is the SFT loop's: AdamW,
clipping, parameters and moments donated and sharded as load_model placed them; the batch rows over ``data``.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from qwen_sae_jax.cross_entropy import token_nll


@flax.struct.dataclass
class RLBatch:
    """One rollout batch (global arrays), or the shardings of one (`rl_batch_sharding`)."""

    ids: Any          # [B, P + N] int32: the left-padded prompt, then the response (pad after its end)
    mask: Any         # [B, P + N] int32 (1 = token)
    response: Any     # [B, N] bool: a response token (the stop token included)
    old_logp: Any     # [B, N] float32: log-prob of each response token under the sampling policy
    ref_logp: Any     # [B, N] float32: the same under the reference model
    reward: Any       # [B] float32


def rl_batch_sharding(mesh: Mesh) -> RLBatch:
    rows = NamedSharding(mesh, P("data", None))
    return RLBatch(rows, rows, rows, rows, rows, NamedSharding(mesh, P("data")))


def group_advantages(rewards: jax.Array, group_size: int, eps: float) -> jax.Array:
    """``A [B]`` of ``rewards [B]`` (rows of a group adjacent): (r - group mean) / (group std + eps)."""
    r = rewards.astype(jnp.float32).reshape(-1, group_size)
    mean = jnp.mean(r, axis=1, keepdims=True)
    std = jnp.sqrt(jnp.mean(jnp.square(r - mean), axis=1, keepdims=True))
    return ((r - mean) / (std + eps)).reshape(-1)


def response_logprobs(logits: jax.Array, ids: jax.Array, prompt_len: int) -> jax.Array:
    """``logp [B, N]`` of the response tokens ``ids[:, P:]`` from ``logits [B, P + N, V]`` (position t predicts
    token t + 1), in float32."""
    return -token_nll(logits[:, prompt_len - 1:-1], ids[:, prompt_len:])                    # [B, N]


def k3_kl(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """Per-token k3 estimate of KL(pi || ref): ``exp(ref - logp) - (ref - logp) - 1``."""
    d = ref_logp - logp
    return jnp.exp(d) - d - 1.0


def grpo_loss_terms(logp, old_logp, ref_logp, advantage, response, *, clip_eps: float, kl_coef: float,
                    aggregate: str = "token") -> tuple[jax.Array, dict]:
    """``(loss, {pg_loss, kl, clip_frac, ratio})`` of the module docstring; ``logp``, ``old_logp``, ``ref_logp``,
    ``response`` ``[B, N]``, ``advantage [B]``."""
    m = response.astype(jnp.float32)
    A = advantage[:, None]
    ratio = jnp.exp(logp - old_logp)
    unclipped, clipped = ratio * A, jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * A
    pg = -jnp.minimum(unclipped, clipped)
    kl = k3_kl(logp, ref_logp)

    def mean(x):
        if aggregate == "token":
            return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)
        return jnp.mean(jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0))

    loss = mean(pg + kl_coef * kl)
    return loss, {"pg_loss": mean(pg), "kl": mean(kl), "clip_frac": mean((clipped < unclipped).astype(jnp.float32)),
                  "ratio": mean(ratio)}


def make_rl_loss(lm, grpo, group_size: int, prompt_len: int, remat: str = "none") -> Callable:
    """``loss(params, batch: RLBatch, _) -> (loss, terms)`` for `posttrain.step.make_step` (``grpo``: a
    `GRPOConfig`); the advantages are computed from ``batch.reward`` inside. ``remat``: the gradient-checkpointing
    mode of `posttrain.step.remat_forward`."""
    from qwen_sae_jax.posttrain.step import remat_forward

    forward = remat_forward(lm, remat)

    def loss(params, batch: RLBatch, _unused):
        logp = response_logprobs(forward(params, batch.ids, batch.mask)[0], batch.ids, prompt_len)
        advantage = group_advantages(batch.reward, group_size, grpo.adv_eps)
        return grpo_loss_terms(logp, batch.old_logp, batch.ref_logp, advantage, batch.response,
                               clip_eps=grpo.clip_eps, kl_coef=grpo.kl_coef, aggregate=grpo.aggregate)

    return loss


def make_rollout(lm, rollout, reduce: str, probes: tuple, prompt_len: int, param_sh, mesh: Mesh) -> Callable:
    """Jitted ``fn(params, ref_params, probes, ids [B, P], mask [B, P], key) -> dict``: ``ids``, ``mask``,
    ``response``, ``old_logp``, ``ref_logp`` (rows over ``data``, ready for an `RLBatch`) and, replicated for the
    host, ``tokens [B, N]``, ``lengths [B]`` and ``sae [B]`` (the summed SAE penalty of each response, 0 without
    probes). ``rollout``: a `RolloutConfig`; ``reduce``: the SAE penalty's mean / sum over response tokens."""
    from qwen_sae_jax.models.generate import generate
    from qwen_sae_jax.posttrain.rl_reward import sae_penalty

    N, hooks, stops = rollout.max_new_tokens, tuple(p.hook for p in probes), tuple(lm.stop_token_ids())

    def run(params, ref_params, probes, ids, mask, key):
        tokens, lengths = generate(lm.module, params, ids, mask, max_new_tokens=N, stop_ids=stops,
                                   pad_id=lm.pad_token_id, greedy=False, use_top_p=rollout.top_p < 1.0,
                                   temperature=rollout.temperature, top_p=rollout.top_p, key=key)
        response = jnp.arange(N)[None, :] < lengths[:, None]                                      # [B, N]
        full_ids = jnp.concatenate([ids, jnp.where(response, tokens, lm.pad_token_id)], axis=1)
        full_mask = jnp.concatenate([mask, response.astype(jnp.int32)], axis=1)
        logits, acts = lm.apply(params, full_ids, full_mask, capture=hooks)
        ref_logits = lm.apply(ref_params, full_ids, full_mask)[0]
        in_full = jnp.concatenate([jnp.zeros_like(mask, dtype=bool), response], axis=1)
        sae = sum((sae_penalty(acts[p.hook], p, in_full, reduce) for p in probes), jnp.zeros(ids.shape[0]))
        return {"ids": full_ids, "mask": full_mask, "response": response,
                "old_logp": response_logprobs(logits, full_ids, prompt_len),
                "ref_logp": response_logprobs(ref_logits, full_ids, prompt_len),
                "tokens": tokens, "lengths": lengths, "sae": sae}

    rows, replicated = NamedSharding(mesh, P("data", None)), NamedSharding(mesh, P())
    out_sh = {"ids": rows, "mask": rows, "response": rows, "old_logp": rows, "ref_logp": rows,
              "tokens": replicated, "lengths": replicated, "sae": replicated}
    return jax.jit(run, in_shardings=(param_sh, param_sh, replicated, rows, rows, replicated), out_shardings=out_sh)
