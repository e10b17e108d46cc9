"""Training loop of the tiny models: the project's Flax causal LM of the chosen family (``Qwen3ForCausalLM``, or
the hybrid ``Qwen3_5ForCausalLM``, through ``models.registry``) + optax AdamW, next-token loss.

Batches are ``[B, T + 1]`` windows cut at seeded random offsets from one token stream per source, the
source of each row drawn with ``TrainConfig.source_weights``. The learning rate warms up linearly over
``warmup_steps`` and then follows a cosine down to ``min_lr_ratio * lr`` at ``total_steps``.

Run length: with ``time_budget_s > 0`` the loop times steps ``measure_from``..``measure_until`` and then
fixes ``total_steps = min(max_steps, steps that fit in the budget)``; the schedule is step-based from then
on (and ``measure_until < warmup_steps``, so the steps before that choice do not depend on it). Rerunning
with ``max_steps=<that number>`` and ``time_budget_s=0`` therefore repeats the run exactly. The loop also
stops early when the held-out loss plateaus (``plateau_evals`` evaluations in a row improving the mean
held-out loss by less than ``plateau_rel``), and hard-stops at ``1.2 x time_budget_s`` if the machine slows.

State (params, optimizer state, step, total_steps, sampler state) is checkpointed atomically every
``checkpoint_every`` steps to ``WORK/checkpoint.msgpack``; a restarted run resumes from it.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization, traverse_util

from qwen_sae_jax.errors import UserError, did_you_mean
from qwen_sae_jax.models import registry

FAMILIES = tuple(f.model_types[0] for f in registry.FAMILIES)   # "qwen3", "qwen3_5": what --family accepts


def family_name(config) -> str:
    """The ``--family`` name of a model config (its registry family's first model_type)."""
    return registry.family_of(config).model_types[0]


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise UserError(f"unknown model family {family!r}{did_you_mean(family, FAMILIES)}; "
                        f"valid: {', '.join(FAMILIES)}")
    return family


@dataclass
class ModelShape:
    """Architecture of a tiny model: its family's config minus the token ids, which come from the tokenizer.

    Fields a family's config does not have are ignored for it: ``layer_types`` and the ``linear_*`` /
    ``partial_rotary_factor`` fields shape only Qwen3.5's hybrid model (``layer_types[i]`` is
    ``"linear_attention"``, a Gated DeltaNet layer, or ``"full_attention"``)."""

    family: str = "qwen3"
    num_hidden_layers: int = 4
    hidden_size: int = 192
    intermediate_size: int = 512
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 48
    vocab_size: int = 4096
    max_position_embeddings: int = 512
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    # Qwen3.5 only
    layer_types: tuple[str, ...] = ()
    partial_rotary_factor: float = 0.25
    linear_num_key_heads: int = 2
    linear_num_value_heads: int = 4
    linear_key_head_dim: int = 48
    linear_value_head_dim: int = 48
    linear_conv_kernel_dim: int = 4

    def __post_init__(self):
        check_family(self.family)
        self.layer_types = tuple(self.layer_types)       # a list when read back from JSON

    def config(self, eos_token_ids: tuple[int, ...], pad_token_id: int):
        """The family's config object (``Qwen3Config`` or ``Qwen3_5Config``) of this shape."""
        config_class = registry.family_of({"model_type": self.family}).config_class
        names = {f.name for f in fields(config_class)}
        kwargs = {k: v for k, v in asdict(self).items() if k in names}
        return config_class(**kwargs, eos_token_ids=tuple(eos_token_ids), pad_token_id=pad_token_id)

    @classmethod
    def of_config(cls, config) -> "ModelShape":
        """The shape of an existing model config (e.g. a loaded HF directory)."""
        own = {f.name for f in fields(cls)} - {"family"}
        return cls(family=family_name(config), **{k: getattr(config, k) for k in own if hasattr(config, k)})


def hybrid_layer_types(num_layers: int, full_attention_interval: int) -> tuple[str, ...]:
    """Qwen3.5's layout: layer ``i`` is full attention iff ``(i + 1) % interval == 0``, else linear attention."""
    if full_attention_interval <= 0:
        raise UserError(f"full_attention_interval={full_attention_interval} must be > 0")
    return tuple("full_attention" if (i + 1) % full_attention_interval == 0 else "linear_attention"
                 for i in range(num_layers))


@dataclass
class TrainConfig:
    """Optimisation and run-length settings."""

    seed: int = 0
    ctx_len: int = 256
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    max_steps: int = 6000
    time_budget_s: float = 2700.0
    measure_from: int = 10
    measure_until: int = 60
    eval_every: int = 150
    eval_windows: int = 16            # held-out windows of ctx_len per source used during training
    plateau_evals: int = 4
    plateau_rel: float = 0.002
    checkpoint_every: int = 150
    source_weights: dict[str, float] = field(default_factory=lambda: {
        "chat": 0.45, "english": 0.14, "chinese": 0.12, "docs": 0.12, "code": 0.17})
    reply_only_sources: tuple[str, ...] = ()   # rows of these sources are trained on assistant replies only


@dataclass(frozen=True)
class ChatTokenIds:
    """The ChatML token ids that delimit an assistant reply:
    ``<|im_start|>`` ``assistant`` ``\\n`` ... ``<|im_end|>``."""

    im_start: int
    assistant: int
    im_end: int


def reply_mask(rows: np.ndarray, ids: ChatTokenIds) -> np.ndarray:
    """``[B, T]`` float mask over the targets ``rows[:, 1:]``: 1 where the target is a token of an assistant
    reply (its first token after ``<|im_start|>assistant\\n`` through the closing ``<|im_end|>``), else 0.
    A window that starts inside a reply masks that partial reply out (its opening is not visible)."""
    b, w = rows.shape
    idx = np.broadcast_to(np.arange(w), (b, w))
    last_start = np.maximum.accumulate(np.where(rows == ids.im_start, idx, -1), axis=1)   # [B, W]
    last_end = np.maximum.accumulate(np.where(rows == ids.im_end, idx, -1), axis=1)
    start, end = last_start[:, :-1], last_end[:, :-1]      # seen before each target t = 1 .. W-1
    role = np.take_along_axis(rows, np.clip(start + 1, 0, w - 1), axis=1)
    t = idx[:, 1:]
    return ((start >= 0) & (role == ids.assistant) & (t >= start + 3) & (end < start)).astype(np.float32)


class WindowSampler:
    """Seeded random ``[B, T + 1]`` windows; each row from a source drawn with ``weights``."""

    def __init__(self, streams: dict[str, np.ndarray], weights: dict[str, float], seed: int):
        self.names = sorted(weights)
        self.streams = streams
        p = np.asarray([weights[n] for n in self.names], np.float64)
        self.p = p / p.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, batch_size: int, width: int) -> np.ndarray:
        return self.batch_with_sources(batch_size, width)[0]

    def batch_with_sources(self, batch_size: int, width: int) -> tuple[np.ndarray, list[str]]:
        """``(rows [B, width], the source name of each row)``."""
        rows = np.empty((batch_size, width), np.int32)
        sources = []
        for r, s in enumerate(self.rng.choice(len(self.names), size=batch_size, p=self.p)):
            stream = self.streams[self.names[s]]
            start = self.rng.integers(0, len(stream) - width)
            rows[r] = stream[start:start + width]
            sources.append(self.names[s])
        return rows, sources


def heldout_windows(stream: np.ndarray, width: int, n: int) -> np.ndarray:
    """Up to ``n`` consecutive non-overlapping windows ``[n, width]`` from the start of a held-out stream."""
    n = min(n, len(stream) // width)
    return stream[: n * width].reshape(n, width).astype(np.int32)


def lr_at(step, total_steps, cfg: TrainConfig):
    warm = cfg.lr * (step + 1) / cfg.warmup_steps
    frac = jnp.clip((step - cfg.warmup_steps) / jnp.maximum(total_steps - cfg.warmup_steps, 1), 0.0, 1.0)
    cos = cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + jnp.cos(jnp.pi * frac)))
    return jnp.where(step < cfg.warmup_steps, warm, cos)


def _decay_mask(params):
    """Weight decay on matrices only (not on RMSNorm weights)."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: v.ndim >= 2 for k, v in flat.items()})


def make_optimizer(cfg: TrainConfig):
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.inject_hyperparams(optax.adamw, static_args=("mask",))(learning_rate=cfg.lr, b1=0.9, b2=0.95, eps=1e-8,
                                              weight_decay=cfg.weight_decay, mask=_decay_mask),
    )


def make_step_fns(model, optimizer, cfg: TrainConfig):
    """``train_step(params, opt_state, tokens, mask, step, total_steps)`` and ``eval_loss(params, tokens)``;
    ``mask`` is ``None`` (every target counts) or ``[B, T]`` target weights (the loss is their weighted mean)."""
    def loss_fn(params, tokens, mask=None):           # tokens [B, T + 1], mask [B, T] or None
        logits = model.apply({"params": params}, tokens[:, :-1])            # [B, T, V]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])   # [B, T]
        return ce.mean() if mask is None else (ce * mask).sum() / jnp.maximum(mask.sum(), 1.0)

    @jax.jit
    def train_step(params, opt_state, tokens, mask, step, total_steps):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens, mask)
        opt_state[1].hyperparams["learning_rate"] = lr_at(step, total_steps, cfg)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

    @jax.jit
    def eval_loss(params, tokens):
        return loss_fn(params, tokens)

    return train_step, eval_loss


def _atomic_write(path: Path, payload: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


# long: the pre-training loop with its resume, logging, held-out evaluation and time budget in order
def train(work_dir: Path, streams: dict[str, np.ndarray], heldout: dict[str, np.ndarray], shape: ModelShape,
          cfg: TrainConfig, eos_token_ids: tuple[int, ...], pad_token_id: int, log=print, stop_at_step: int = 0,
          base_params=None, chat_ids: ChatTokenIds | None = None):
    """Train (or resume) and return ``(params, config, summary)`` (``config`` of ``shape.family``); the
    best-by-held-out params are also saved as ``WORK/best_params.msgpack``. ``stop_at_step > 0`` interrupts the
    run (checkpointed) after that step, to be resumed by a later call. ``base_params`` (a Flax tree of
    ``shape``) starts from trained weights instead of a fresh init: the instruction-tuning stage continues the
    pre-training run this way.
    ``chat_ids`` is needed when ``cfg.reply_only_sources`` is set (see ``reply_mask``)."""
    if cfg.reply_only_sources and chat_ids is None:
        raise ValueError("reply_only_sources needs the chat token ids (chat_ids=ChatTokenIds(...))")
    work_dir.mkdir(parents=True, exist_ok=True)
    config = shape.config(eos_token_ids, pad_token_id)
    model = registry.causal_lm(config, jnp.float32, jnp.float32)
    optimizer = make_optimizer(cfg)
    train_step, eval_loss = make_step_fns(model, optimizer, cfg)
    width = cfg.ctx_len + 1
    eval_sets = {n: heldout_windows(s, width, cfg.eval_windows) for n, s in sorted(heldout.items())}

    params = registry.init_params(config, seed=cfg.seed) if base_params is None else base_params
    opt_state = optimizer.init(params)
    sampler = WindowSampler(streams, cfg.source_weights, cfg.seed)
    state: dict[str, Any] = {"step": 0, "total_steps": cfg.max_steps, "best": math.inf, "history": [],
                             "elapsed": 0.0, "tokens": 0}
    ckpt, best_path = work_dir / "checkpoint.msgpack", work_dir / "best_params.msgpack"
    log_path = work_dir / "train_log.jsonl"
    if ckpt.exists():
        saved = pickle.loads(ckpt.read_bytes())
        params = serialization.from_bytes(params, saved["params"])
        opt_state = serialization.from_bytes(opt_state, saved["opt_state"])
        sampler.rng.bit_generator.state = saved["sampler"]
        state = saved["state"]
        log(f"resumed from step {state['step']} (total_steps {state['total_steps']})")

    def save_checkpoint():
        payload = {"params": serialization.to_bytes(params), "opt_state": serialization.to_bytes(opt_state),
                   "sampler": sampler.rng.bit_generator.state, "state": state,
                   "train_config": asdict(cfg), "model_shape": asdict(shape)}
        _atomic_write(ckpt, pickle.dumps(payload))

    def evaluate():
        return {n: float(eval_loss(params, jnp.asarray(w))) for n, w in eval_sets.items()}

    t_start = time.time() - state["elapsed"]
    t_measure = None
    stop_reason = "max_steps"
    with open(log_path, "a") as logf:
        while state["step"] < state["total_steps"]:
            step = state["step"]
            rows, sources = sampler.batch_with_sources(cfg.batch_size, width)
            mask = None
            if cfg.reply_only_sources and chat_ids is not None:   # text rows: every target; reply-only rows:
                reply = np.asarray([s in cfg.reply_only_sources for s in sources])[:, None]
                mask = jnp.asarray(np.where(reply, reply_mask(rows, chat_ids), 1.0))     # assistant replies
            params, opt_state, loss, gnorm = train_step(params, opt_state, jnp.asarray(rows), mask, jnp.int32(step),
                                                        jnp.int32(state["total_steps"]))
            state["step"] = step = step + 1
            state["tokens"] += cfg.batch_size * cfg.ctx_len
            elapsed = time.time() - t_start
            state["elapsed"] = elapsed
            if step == cfg.measure_from:
                loss.block_until_ready()
                t_measure = time.time()
            if step == cfg.measure_until and cfg.time_budget_s > 0 and t_measure is not None:
                loss.block_until_ready()
                per_step = (time.time() - t_measure) / (cfg.measure_until - cfg.measure_from)
                fit = int(step + (cfg.time_budget_s - elapsed) / per_step)
                state["total_steps"] = max(cfg.warmup_steps + 1, min(cfg.max_steps, fit))
                log(f"{per_step:.3f} s/step ({cfg.batch_size * cfg.ctx_len / per_step:.0f} tokens/s): "
                    f"total_steps fixed at {state['total_steps']}")
            if step % 25 == 0 or step == 1:
                row = {"step": step, "loss": float(loss), "grad_norm": float(gnorm), "elapsed_s": round(elapsed, 1),
                       "lr": float(lr_at(step - 1, state["total_steps"], cfg))}
                logf.write(json.dumps(row) + "\n")
                logf.flush()
                log(json.dumps(row))
            done = step >= state["total_steps"]
            if step % cfg.eval_every == 0 or done:
                losses = evaluate()
                mean = float(np.mean(list(losses.values())))
                state["history"].append({"step": step, "heldout": losses, "mean": mean})
                logf.write(json.dumps({"step": step, "heldout": losses, "heldout_mean": mean}) + "\n")
                logf.flush()
                log(f"step {step} held-out {json.dumps({k: round(v, 3) for k, v in losses.items()})} mean {mean:.4f}")
                if mean < state["best"]:
                    state["best"] = mean
                    _atomic_write(best_path, serialization.to_bytes(params))
                recent = [h["mean"] for h in state["history"][-(cfg.plateau_evals + 1):]]
                if len(recent) == cfg.plateau_evals + 1 and \
                        all(recent[i] - recent[i + 1] < cfg.plateau_rel * recent[i] for i in range(cfg.plateau_evals)):
                    stop_reason = "plateau"
                    save_checkpoint()
                    break
            if step % cfg.checkpoint_every == 0 or done:
                save_checkpoint()
            if stop_at_step and step >= stop_at_step:
                stop_reason = "interrupted"
                save_checkpoint()
                break
            if cfg.time_budget_s > 0 and elapsed > 1.2 * cfg.time_budget_s:
                stop_reason = "time_budget"
                save_checkpoint()
                break
    summary = {"steps": state["step"], "total_steps": state["total_steps"], "tokens": state["tokens"],
               "elapsed_s": round(state["elapsed"], 1), "stop_reason": stop_reason,
               "final_heldout": state["history"][-1]["heldout"] if state["history"] else None,
               "train_config": asdict(cfg), "model_shape": asdict(shape)}
    (work_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return params, config, summary
