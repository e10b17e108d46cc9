"""The GRPO run: ``run_rl(cfg, resume=False)`` executes an `RLConfig` and fills RUN_DIR like `qwen-sae sft`::

    RUN_DIR/
      config.yaml      the resolved config
      metrics.jsonl    per logging step: reward, repetition, sae, kl, pg_loss, clip_frac, grad_norm, lr, tokens, ...
      checkpoints/     orbax: params + AdamW state (sharded), meta (step, tokens, config), prompt position
      hf/              the trained policy as an HF folder (config.json, safetensors, tokenizer)

One step: the step's prompts (a function of the step, as SFT's batches are) x G rows -> rollout (sampling,
old / reference log-probs, SAE penalty; `posttrain.rl_grpo`) -> rewards on the host (`posttrain.rl_reward`) ->
``grpo.updates_per_rollout`` AdamW updates on the batch. The sampling key is ``fold_in(rollout.seed, step)``, so
a run killed at any point and resumed from its checkpoint redraws the same rollouts and ends with the same
parameters bit for bit. Checkpoints, signals, logging and the export are the SFT loop's (`posttrain.loop`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from qwen_sae_jax.config import to_dict
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.posttrain.data import DataPosition, SFTData
from qwen_sae_jax.posttrain.loop import RunResult, finish_run, load_run_model, run_steps, start_state
from qwen_sae_jax.posttrain.rl_config import RLConfig
from qwen_sae_jax.train import distributed


class PromptPosition(DataPosition):
    """The prompt state saved with a checkpoint: the next step and the number of prompts (a resume on another
    prompt set is refused)."""

    def set_state(self, state: dict) -> None:
        if state["examples"] != self.n_examples:
            raise UserError(f"the checkpoint was trained on {state['examples']} prompts, the prompt set now has "
                            f"{self.n_examples}: resume needs the same prompts")
        self.step = state["step"]


def build_prompts(lm, cfg: RLConfig) -> SFTData:
    """Every prompt tokenised (chat-rendered unless ``prompts.chat`` is false), its first / last
    ``max_prompt_len`` tokens kept (``prompts.keep``), left-padded to the longest; served per step in the order of
    `SFTData.indices`."""
    from qwen_sae_jax.data.text import open_documents
    from qwen_sae_jax.lm import apply_chat_template, pad_batch

    texts = open_documents(cfg.prompts)
    encoded = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise UserError(f"prompt {i} is not a string (prompts.text_column={cfg.prompts.text_column!r} holds "
                            f"{type(text).__name__})")
        rendered = apply_chat_template(lm.tokenizer, text) if cfg.prompts.chat else text
        ids = lm.tokenizer(rendered, add_special_tokens=False, verbose=False)["input_ids"]
        L = cfg.prompts.max_prompt_len
        ids = ids[:L] if cfg.prompts.keep == "first" else ids[-L:]
        if not ids:
            raise UserError(f"prompt {i} encodes to zero tokens")
        encoded.append(ids)
    ids, mask = pad_batch(encoded, pad_id=lm.pad_token_id, side="left")
    return SFTData(ids, mask, reply=np.zeros(ids.shape, bool), language=np.full(len(ids), -1, np.int32),
                   seed=cfg.prompts.seed)


def _load_probes(cfg: RLConfig, lm) -> tuple:
    if cfg.reward.sae.features is None:
        return ()
    from qwen_sae_jax.interop import load_sae
    from qwen_sae_jax.posttrain.rl_reward import build_feature_probes
    from qwen_sae_jax.posttrain.synthesis import read_targets

    features = read_targets(cfg.reward.sae.features)
    return build_feature_probes(lm, {path: load_sae(path) for path in cfg.reward.sae.saes}, features)


def _reference(cfg: RLConfig, lm, param_sh, fresh: bool):
    """The frozen reference parameters: ``grpo.reference`` loaded onto the mesh, or a copy of the starting
    model's (a fresh run's state takes ``lm.params`` themselves, and the update donates them)."""
    import jax
    import jax.numpy as jnp

    if cfg.grpo.reference is not None:
        from qwen_sae_jax.lm import load_model
        ref = load_model(cfg.grpo.reference, dtype=cfg.model.dtype, mesh=lm.mesh, param_dtype=cfg.model.param_dtype)
        shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)  # noqa: E731
        if shapes(ref.params) != shapes(lm.params):
            raise UserError(f"grpo.reference {cfg.grpo.reference!r} does not have the parameter shapes of "
                            f"model.name {cfg.model.name!r}")
        return ref.params
    if not fresh:
        return lm.params
    return jax.jit(lambda t: jax.tree.map(jnp.copy, t), out_shardings=param_sh)(lm.params)


def run_rl(cfg: RLConfig, *, resume: bool = False, log_stream=None) -> RunResult:
    distributed.initialize(cfg.distributed)
    import jax

    from qwen_sae_jax.posttrain.rl_grpo import make_rl_loss, make_rollout, rl_batch_sharding
    from qwen_sae_jax.posttrain.step import make_optimizer, make_step, state_shardings
    from qwen_sae_jax.train.checkpoint import Checkpoints
    from qwen_sae_jax.train.logs import TrainLogger, require_backends
    from qwen_sae_jax.train.mesh import process_batch_rows

    require_backends(cfg.log)
    B, total, mu = cfg.rollout.batch_size, cfg.train.steps, cfg.grpo.updates_per_rollout
    mesh, lm = load_run_model(cfg.model, cfg.mesh, B, "rollout.prompts_per_step x rollout.group_size",
                              "rollouts are decoded to text for the rewards")
    probes = _load_probes(cfg, lm)
    prompts = build_prompts(lm, cfg)
    P = prompts.ids.shape[1]
    if P + cfg.rollout.max_new_tokens > lm.config.max_position_embeddings:
        raise UserError(f"prompt length {P} + rollout.max_new_tokens {cfg.rollout.max_new_tokens} exceeds the "
                        f"model's max_position_embeddings={lm.config.max_position_embeddings}")

    opt = make_optimizer(cfg.optim, total * mu)
    param_sh, opt_sh = state_shardings(lm.params, opt, mesh)
    update = make_step(make_rl_loss(lm, cfg.grpo, cfg.rollout.group_size, P, cfg.train.remat), opt, param_sh, opt_sh,
                       mesh, rl_batch_sharding(mesh))
    rollout = make_rollout(lm, cfg.rollout, cfg.reward.sae.reduce, probes, P, param_sh, mesh)

    run_dir, is_main = Path(cfg.run_dir), jax.process_index() == 0
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoints(run_dir / "checkpoints", cfg.checkpoint.keep, cfg.checkpoint.async_save)
    position = PromptPosition(len(prompts))
    config_dict = to_dict(cfg)
    state, step, tokens = start_state(cfg, lm, opt, opt_sh, ckpt, position, config_dict, resume, run_dir, is_main)
    ref = _reference(cfg, lm, param_sh, fresh=step == 0)
    logger = TrainLogger(run_dir, cfg.log, total, step, is_main, config_dict, stream=log_stream)
    logger.message(f"resumed {run_dir} from step {step}" if step else
                   f"GRPO on {cfg.model.name} from {len(prompts)} prompts for {total} steps x "
                   f"{cfg.rollout.prompts_per_step} prompts x {cfg.rollout.group_size} responses; mesh "
                   f"data={mesh.shape['data']} model={mesh.shape['model']}, {jax.process_count()} process(es)"
                   + (f"; SAE penalty on {', '.join(p.hook for p in probes)}" if probes else ""))

    def save(at: int, state: dict, tokens: int) -> None:
        position.step = at
        ckpt.save(at, state, {"step": at, "tokens": tokens, "config": config_dict}, position)

    steps = _Steps(cfg, lm, prompts, process_batch_rows(mesh, B), mesh, rollout, update, ref, probes, logger)
    result = run_steps(state, step, tokens, total, steps.one_step, steps.log, save, log_every=cfg.log.every,
                       checkpoint_every=cfg.checkpoint.every, logger=logger)
    return finish_run(result, cfg.export, lm, run_dir, ckpt, logger)


class _Steps:
    """One GRPO step (`one_step`) and its log record (`log`), for `posttrain.loop.run_steps`."""

    def __init__(self, cfg: RLConfig, lm, prompts: SFTData, rows: range, mesh, rollout, update, ref, probes, logger):
        from qwen_sae_jax.posttrain.rl_grpo import rl_batch_sharding
        from qwen_sae_jax.train.optim import lr_schedule

        self.cfg, self.lm, self.prompts, self.rows, self.mesh = cfg, lm, prompts, rows, mesh
        self.rollout, self.update, self.ref, self.probes, self.logger = rollout, update, ref, probes, logger
        self.sharding = rl_batch_sharding(mesh)
        self.schedule = lr_schedule(cfg.optim, cfg.train.steps * cfg.grpo.updates_per_rollout)
        self.stops = set(lm.stop_token_ids())

    def _put(self, local: np.ndarray, sharding):
        import jax
        return jax.make_array_from_process_local_data(sharding, local, (self.cfg.rollout.batch_size,) + local.shape[1:])

    def rewards(self, tokens: np.ndarray, lengths: np.ndarray, sae: np.ndarray) -> dict[str, np.ndarray]:
        """``{reward, repetition, sae}`` per row, float64 (module docstring of `posttrain.rl_reward`)."""
        from qwen_sae_jax.posttrain.rl_reward import repetition_score

        rc = self.cfg.reward
        rep = np.zeros(len(tokens))
        for i, (row, n) in enumerate(zip(tokens, lengths)):
            ids = [t for t in row[:n].tolist() if t not in self.stops]
            text = "" if rc.repetition.unit == "token" else self.lm.tokenizer.decode(ids, skip_special_tokens=True)
            rep[i] = repetition_score(text, ids, rc.repetition.n, rc.repetition.unit)
        sae = np.asarray(sae, np.float64)
        return {"reward": -(rc.repetition.coefficient * rep + rc.sae.coefficient * sae), "repetition": rep, "sae": sae}

    def one_step(self, step: int, state: dict):
        import jax

        from qwen_sae_jax.posttrain.rl_grpo import RLBatch

        G, sh = self.cfg.rollout.group_size, self.sharding
        rows = np.repeat(self.prompts.indices(step, self.cfg.rollout.prompts_per_step), G)[list(self.rows)]
        key = jax.random.fold_in(jax.random.key(self.cfg.rollout.seed), step)
        out = self.rollout(state["params"], self.ref, self.probes, self._put(self.prompts.ids[rows], sh.ids),
                           self._put(self.prompts.mask[rows], sh.mask), key)
        lengths = np.asarray(out["lengths"])
        terms = self.rewards(np.asarray(out["tokens"]), lengths, np.asarray(out["sae"]))
        reward = terms["reward"].astype(np.float32)
        batch = RLBatch(out["ids"], out["mask"], out["response"], out["old_logp"], out["ref_logp"],
                        self._put(reward[self.rows.start:self.rows.stop], sh.reward))
        params, opt_state = state["params"], state["opt_state"]
        for _ in range(self.cfg.grpo.updates_per_rollout):
            params, opt_state, metrics = self.update(params, opt_state, batch, None)
        host = {"reward": float(reward.mean()), "reward_std": float(reward.reshape(-1, G).std(axis=1).mean()),
                "repetition": float(terms["repetition"].mean()), "sae": float(terms["sae"].mean()),
                "response_tokens": float(lengths.mean())}
        return {"params": params, "opt_state": opt_state}, (metrics, host), int(lengths.sum())

    def log(self, step: int, metrics, tokens: int, tokens0: int, t0: float) -> dict:
        import time

        import jax

        device, host = metrics
        device = jax.device_get(device)
        now = time.time()
        record = {"step": step, **{k: float(device[k]) for k in ("loss", "pg_loss", "kl", "clip_frac", "ratio",
                                                                 "grad_norm")}, **host,
                  "lr": float(self.schedule(step * self.cfg.grpo.updates_per_rollout - 1)), "tokens": tokens,
                  "tokens_per_s": (tokens - tokens0) / max(now - t0, 1e-9), "elapsed_s": now - self.logger.start_time}
        self.logger.log(step, record, summary=f"reward {record['reward']:.4f} | rep {record['repetition']:.3f} | "
                                              f"sae {record['sae']:.3f} | kl {record['kl']:.4f}")
        return record
