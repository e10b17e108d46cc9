"""The fine-tuning run: ``run_sft(cfg, resume=False)`` executes an `SFTConfig` and fills RUN_DIR::

    RUN_DIR/
      config.yaml      the resolved config
      metrics.jsonl    per logging step: loss, ce, sasft, grad_norm, lr, tokens, tokens/s
      checkpoints/     orbax: params + AdamW state (sharded), meta (step, config), data position
      hf/              the fine-tuned model as an HF folder (config.json, safetensors, tokenizer)

Resume (``resume=True``) restores the latest checkpoint; batches are a function of the step
(`posttrain.data`) and nothing is random, so a run killed at any point and resumed ends with the same
parameters bit for bit. SIGTERM / SIGINT save a checkpoint at the next step boundary and stop.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np

from qwen_sae_jax.config import dump_yaml, to_dict
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.posttrain.config import SFTConfig
from qwen_sae_jax.train import distributed

# config sections that may change between a run and its resumption (they do not change what is computed)
RESUMABLE_CHANGES = ("run_dir", "log", "checkpoint", "distributed", "mesh", "export")


@dataclasses.dataclass
class RunResult:
    """What a post-training run (`run_sft`, `posttrain.rl_loop.run_rl`) returns."""

    run_dir: Path
    steps: int
    interrupted: bool
    stopped_by: int | None = None
    hf_dir: Path | None = None
    last: dict | None = None          # the last logged metrics record


SFTResult = RunResult


def _flat(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def config_differences(saved: dict, now: dict) -> list[str]:
    """``key: checkpoint X vs now Y`` for every leaf that differs, outside `RESUMABLE_CHANGES`."""
    a, b = _flat(saved), _flat(now)
    keep = lambda k: not any(k == r or k.startswith(r + ".") for r in RESUMABLE_CHANGES)  # noqa: E731
    return [f"{k}: checkpoint {a.get(k, '<absent>')!r} vs now {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if keep(k) and a.get(k, "<absent>") != b.get(k, "<absent>")]


def _probes(cfg: SFTConfig, lm):
    """``(languages, probes)`` of the SASFT config (empty without one)."""
    if cfg.sasft.features is None:
        return None, ()
    from qwen_sae_jax.data.text import TextSourceConfig, open_documents
    from qwen_sae_jax.interop import load_sae
    from qwen_sae_jax.posttrain.features import read_features
    from qwen_sae_jax.posttrain.sasft import build_probes, check_features, language_tau

    features = read_features(cfg.sasft.features)
    saes = {path: load_sae(path) for path in cfg.sasft.saes}
    hooks = check_features(lm, saes, features, cfg.sasft.layers)
    tau = None
    if not features.has_tau:
        texts = {lang: list(open_documents(TextSourceConfig(files=files, text_unit="line")))
                 for lang, files in cfg.sasft.tau_files.items()}
        untau = build_probes(lm, saes, features, hooks, tau={h: np.zeros((1, 1)) for h in hooks})
        tau = language_tau(lm, untau, texts, features.languages, cfg.sasft.tau_tokens)
    return features.languages, build_probes(lm, saes, features, hooks, tau)


def _device_batch(data, step: int, cfg: SFTConfig, mesh, rows: range):
    """The global `Batch` of ``step``, built from this process's rows."""
    import jax

    from qwen_sae_jax.posttrain.step import Batch, batch_sharding

    local = data.batch(step, cfg.train.batch_size, rows)
    sh = batch_sharding(mesh)
    B = cfg.train.batch_size
    put = lambda x, s: jax.make_array_from_process_local_data(s, x, (B,) + x.shape[1:])  # noqa: E731
    return Batch(put(local["ids"], sh.ids), put(local["mask"], sh.mask), put(local["reply"], sh.reply),
                 put(local["language"], sh.language))


def export_hf(lm, params, out_dir: Path, dtype: str = "auto") -> None:
    """Write ``params`` as an HF folder (with the tokenizer) that transformers and load_model read (process 0)."""
    import jax
    import jax.numpy as jnp

    from qwen_sae_jax.models.registry import save_hf

    host = distributed.to_host(params)
    if jax.process_index() == 0:
        save_hf(host, lm.config, out_dir, tokenizer=lm.tokenizer, dtype=None if dtype == "auto" else jnp.dtype(dtype))


def load_run_model(model, mesh_cfg, batch_size: int, batch_key: str, needs_tokenizer: str):
    """``(mesh, lm)``: the mesh of ``mesh_cfg`` and the model of ``model`` (an `SFTModelConfig`) placed on it;
    ``batch_size`` (config key ``batch_key``) must divide over the ``data`` axis, and the model needs a tokenizer
    (``needs_tokenizer`` says why)."""
    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.train.mesh import make_mesh

    mesh = make_mesh(mesh_cfg)
    if batch_size % mesh.shape["data"]:
        raise UserError(f"{batch_key}={batch_size} must be divisible by the 'data' mesh axis "
                        f"({mesh.shape['data']} devices)")
    lm = load_model(model.name, dtype=model.dtype, mesh=mesh, param_dtype=model.param_dtype)
    if lm.tokenizer is None:
        raise UserError(f"model {model.name!r} has no tokenizer: {needs_tokenizer}")
    return mesh, lm


def run_sft(cfg: SFTConfig, *, resume: bool = False, log_stream=None) -> SFTResult:
    distributed.initialize(cfg.distributed)
    import jax

    from qwen_sae_jax.posttrain.data import DataPosition, build_dataset
    from qwen_sae_jax.posttrain.step import make_loss, make_optimizer, make_step, state_shardings
    from qwen_sae_jax.train.checkpoint import Checkpoints
    from qwen_sae_jax.train.logs import TrainLogger, require_backends
    from qwen_sae_jax.train.mesh import process_batch_rows
    from qwen_sae_jax.train.optim import lr_schedule

    require_backends(cfg.log)
    B, total = cfg.train.batch_size, cfg.train.steps
    mesh, lm = load_run_model(cfg.model, cfg.mesh, B, "train.batch_size", "SFT renders chats with its template")
    languages, probes = _probes(cfg, lm)
    data = build_dataset(lm.tokenizer, cfg.data, lm.pad_token_id, languages)
    rows = process_batch_rows(mesh, B)

    opt = make_optimizer(cfg.optim, total)
    param_sh, opt_sh = state_shardings(lm.params, opt, mesh)
    loss = make_loss(lm, probes, cfg.sasft.coefficient, cfg.sasft.variant == "zero-threshold", cfg.train.remat)
    step_fn = make_step(loss, opt, param_sh, opt_sh, mesh)
    schedule = lr_schedule(cfg.optim, total)

    run_dir, is_main = Path(cfg.run_dir), jax.process_index() == 0
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoints(run_dir / "checkpoints", cfg.checkpoint.keep, cfg.checkpoint.async_save)
    position = DataPosition(len(data))
    config_dict = to_dict(cfg)
    state, step, tokens = start_state(cfg, lm, opt, opt_sh, ckpt, position, config_dict, resume, run_dir, is_main)
    logger = TrainLogger(run_dir, cfg.log, total, step, is_main, config_dict, stream=log_stream)
    logger.message(f"resumed {run_dir} from step {step}" if step else
                   f"fine-tuning {cfg.model.name} on {len(data)} conversations for {total} steps x {B}; "
                   f"mesh data={mesh.shape['data']} model={mesh.shape['model']}, {jax.process_count()} process(es)"
                   + (f"; SASFT on {', '.join(p.hook for p in probes)}" if probes else ""))

    def save(at: int, state: dict, tokens: int) -> None:
        position.step = at
        ckpt.save(at, state, {"step": at, "tokens": tokens, "config": config_dict}, position)

    result = _train_steps(cfg, state, step, tokens, data, rows, mesh, step_fn, probes, schedule, logger, save)
    return finish_run(result, cfg.export, lm, run_dir, ckpt, logger)


def finish_run(result: "StepsOutcome", export, lm, run_dir: Path, ckpt, logger) -> RunResult:
    """Wait for the last checkpoint, export the model as an HF folder (``export``: an `ExportConfig`) unless the
    run was stopped by a signal, close the logs."""
    ckpt.wait()
    ckpt.close()
    if result.interrupted:
        logger.message(f"stopped by signal at step {result.steps}; checkpoint saved. Continue with --resume")
    elif export.hf:
        result.hf_dir = run_dir / "hf"
        export_hf(lm, result.state["params"], result.hf_dir, export.dtype)
        logger.message(f"wrote the fine-tuned model to {result.hf_dir}")
    logger.close()
    return RunResult(run_dir, result.steps, result.interrupted, result.stopped_by, result.hf_dir, result.last)


def start_state(cfg, lm, opt, opt_sh, ckpt, position, config_dict, resume, run_dir, is_main):
    """``(state, step, tokens seen)``: fresh (params from load_model, new AdamW state) or restored from the
    latest checkpoint (refused when ``cfg`` differs from the checkpoint's outside `RESUMABLE_CHANGES`)."""
    import jax

    latest = ckpt.latest_step()
    if latest is not None and not resume:
        raise UserError(f"{run_dir} already holds checkpoints (latest step {latest}); pass --resume to continue "
                        "it, or choose another run_dir")
    if latest is None:
        if is_main:
            (run_dir / "config.yaml").write_text(dump_yaml(cfg))
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        return {"params": lm.params, "opt_state": jax.jit(opt.init, out_shardings=opt_sh)(lm.params)}, 0, 0
    diffs = config_differences(ckpt.read_meta(latest)["config"], config_dict)
    if diffs:
        raise UserError(f"the checkpoint in {run_dir} comes from a different config: {'; '.join(diffs[:5])}"
                        f"{' ...' if len(diffs) > 5 else ''}")
    abstract = {"params": lm.params, "opt_state": jax.eval_shape(opt.init, lm.params)}
    shardings = {"params": jax.tree.map(lambda x: x.sharding, lm.params), "opt_state": opt_sh}
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    state, meta = ckpt.restore(latest, abstract, position)
    if is_main:
        from qwen_sae_jax.train.run_control import drop_records_after
        drop_records_after(run_dir / "metrics.jsonl", meta["step"])   # logged after the checkpoint: redone now
    return state, meta["step"], meta["tokens"]


@dataclasses.dataclass
class StepsOutcome:
    state: dict
    steps: int
    interrupted: bool
    stopped_by: int | None = None
    last: dict | None = None
    hf_dir: Path | None = None


def run_steps(state: dict, step: int, tokens: int, total: int, one_step: Callable, log: Callable, save: Callable,
              *, log_every: int, checkpoint_every: int, logger) -> StepsOutcome:
    """Steps ``step .. total``: ``one_step(step, state) -> (state, metrics, tokens of the step)``; every
    ``log_every`` steps (and the last) ``log(step, metrics, tokens, tokens at the last log, time of the last log)
    -> record``; ``save(step, state, tokens)`` every ``checkpoint_every`` steps (0: never), at the end, and when
    SIGTERM / SIGINT stops the run at a step boundary."""
    from qwen_sae_jax.train.run_control import StopRequest, stop_signal

    saved, last = step, None
    t0, tokens0 = time.time(), tokens
    with StopRequest() as stop:
        while step < total:
            stopped_by = stop_signal(stop.signal)
            if stopped_by is not None:
                if saved != step:
                    save(step, state, tokens)
                return StepsOutcome(state, step, True, stopped_by, last)
            state, metrics, n_tokens = one_step(step, state)
            tokens += n_tokens
            step += 1
            logger.advance(step)
            if step % log_every == 0 or step == total:
                last = log(step, metrics, tokens, tokens0, t0)
                tokens0, t0 = tokens, time.time()
            if checkpoint_every and step % checkpoint_every == 0 and step < total:
                save(step, state, tokens)
                saved = step
        if saved != step:
            save(step, state, tokens)
    return StepsOutcome(state, step, False, None, last)


def _train_steps(cfg, state, step, tokens, data, rows, mesh, step_fn, probes, schedule, logger, save) -> StepsOutcome:
    """Steps ``step .. train.steps``: log, checkpoint, stop on a signal."""
    import jax

    B = cfg.train.batch_size

    def one_step(step: int, state: dict):
        batch = _device_batch(data, step, cfg, mesh, rows)
        params, opt_state, metrics = step_fn(state["params"], state["opt_state"], batch, probes)
        return {"params": params, "opt_state": opt_state}, metrics, int(data.mask[data.indices(step, B)].sum())

    def log(step: int, metrics, tokens: int, tokens0: int, t0: float) -> dict:
        return _log(logger, step, jax.device_get(metrics), float(schedule(step - 1)), tokens, tokens0, t0)

    return run_steps(state, step, tokens, cfg.train.steps, one_step, log, save, log_every=cfg.log.every,
                     checkpoint_every=cfg.checkpoint.every, logger=logger)


def _log(logger, step: int, metrics: dict, lr: float, tokens: int, tokens0: int, t0: float) -> dict:
    now = time.time()
    record = {"step": step, "loss": float(metrics["loss"]), "ce": float(metrics["ce"]),
              "sasft": float(metrics["sasft"]), "grad_norm": float(metrics["grad_norm"]),
              "reply_tokens": int(metrics["targets"]), "lr": lr, "tokens": tokens,
              "tokens_per_s": (tokens - tokens0) / max(now - t0, 1e-9), "elapsed_s": now - logger.start_time}
    logger.log(step, record, summary=f"loss {record['loss']:.4f} | ce {record['ce']:.4f} | sasft {record['sasft']:.4f}")
    return record
