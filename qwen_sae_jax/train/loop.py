"""The training loop: ``train(cfg, resume=False)`` runs a whole `TrainConfig` and fills RUN_DIR.

Host-side control flow (all heavy work is in three compiled functions: fill, shuffle, step):

    fill the buffer to `buffer.size` rows          (model forward + filter, or cache rows)
    init every SAE (b_dec from the first rows)     (skipped on resume: the checkpoint has it all)
    for step in steps:
        if the ready batches are used up: fill to `buffer.size`, shuffle (key = fold_in(seed, shuffles))
        step every SAE on ready[cursor]; cursor += 1
        log every `log.every`, checkpoint every `checkpoint.every` (and on SIGTERM / SIGINT, then stop)
    final checkpoint, native SAE folders in RUN_DIR/saes/, the held-out table in RUN_DIR/summary.json

Resume (`resume=True`) restores the latest checkpoint: device state, buffer, filter medians, token iterator
state, cursor and counters; the run then continues exactly as if never interrupted.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from qwen_sae_jax.config import dump_yaml, to_dict
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.train import distributed
from qwen_sae_jax.train.config import TrainConfig

# config keys that may change between a run and its resumption (they do not change what is computed)
RESUMABLE_CHANGES = ("run_dir", "log", "checkpoint", "distributed", "mesh", "eval.tokens")


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    steps: int
    tokens: int
    interrupted: bool                 # stopped by SIGTERM / SIGINT after saving a checkpoint
    summary: dict[str, dict] | None   # per-SAE table (None when interrupted)
    table: str = ""                   # the same as text (process 0 only)
    stopped_by: int | None = None     # the signal number when interrupted


class _Every:
    """Lazy views of a document sequence: every ``k``-th document (held out) or all the others."""

    def __init__(self, docs: Sequence[Any], k: int, held_out: bool):
        self.docs, self.k, self.held_out = docs, k, held_out
        n_held = len(docs) // k
        self.n = n_held if held_out else len(docs) - n_held

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.docs[i * self.k + self.k - 1] if self.held_out else self.docs[i + i // (self.k - 1)]


def _config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        if any(name == r or name.startswith(r + ".") for r in RESUMABLE_CHANGES):
            continue
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            a, b = dict(enumerate(a)), dict(enumerate(b))
        if isinstance(a, dict) and isinstance(b, dict):
            diffs.extend(_config_differences(a, b, name + "."))
        elif a != b:
            diffs.append(f"{name}: checkpoint {a!r} vs now {b!r}")
    return diffs


class _StopRequest:
    """SIGTERM / SIGINT -> save a checkpoint at the next step boundary, then stop."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:   # not the main thread: no handlers (the caller manages stopping)
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt   # a second Ctrl-C stops at once
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _drop_records_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in lines))
    os.replace(tmp, path)


def _stop_signal(signum: int | None) -> int | None:
    """The signal that stops the job: this process's, else the first other process's (a scheduler may signal
    only one process; every process then stops at the same step and reports that signal)."""
    import jax
    if jax.process_count() == 1:
        return signum
    from jax.experimental import multihost_utils
    received = [int(s) for s in np.asarray(multihost_utils.process_allgather(np.asarray([signum or 0]))).ravel() if s]
    return signum or (received[0] if received else None)


def _model_config(cfg: TrainConfig):
    """The model's config (its config.json), without loading weights."""
    from qwen_sae_jax.lm import resolve_model_dir
    from qwen_sae_jax.models.registry import read_config
    return read_config(resolve_model_dir(cfg.model.name))


def train(cfg: TrainConfig, *, resume: bool = False, log_stream=None, device_memory: int | None = None,
          check_memory: bool = True) -> RunResult:
    """Run ``cfg`` (module docstring). ``check_memory``: refuse, before loading the model, a run that the memory
    plan (`train.memory`) says does not fit ``device_memory`` per device (default: the devices' own)."""
    distributed.initialize(cfg.distributed)

    import jax
    import jax.numpy as jnp

    from qwen_sae_jax.data import buffer as mixing
    from qwen_sae_jax.data.cache import CacheReader, CacheWriter
    from qwen_sae_jax.data.stream import ActivationStream
    from qwen_sae_jax.data.text import open_documents
    from qwen_sae_jax.data.tokens import TokenBatches, special_token_ids
    from qwen_sae_jax.sae import save_sae
    from qwen_sae_jax.train.checkpoint import Checkpoints
    from qwen_sae_jax.train.logs import TrainLogger, require_backends
    from qwen_sae_jax.train.mesh import make_mesh, process_batch_rows
    from qwen_sae_jax.train.optim import lr_schedule
    from qwen_sae_jax.train.plan import make_plan
    from qwen_sae_jax.train.step import METRIC_KEYS, Trainer, hook_state
    from qwen_sae_jax.train.summary import evaluate, format_table

    require_backends(cfg.log)
    mesh = make_mesh(cfg.mesh)
    n_data, n_model = mesh.shape["data"], mesh.shape["model"]
    pid, nproc = jax.process_index(), jax.process_count()
    is_main = pid == 0
    run_dir = Path(cfg.run_dir)
    Bt = cfg.train.batch_size
    if Bt % n_data:
        raise UserError(f"train.batch_size={Bt} must be divisible by the 'data' mesh axis ({n_data} devices)")

    # ---------------------------------------------------------------- model, plan, data
    reading_cache = cfg.cache.mode == "read"
    model_config = _model_config(cfg)
    plan = make_plan(cfg, model_config.num_hidden_layers, model_config.hidden_size, n_model)   # bad hooks / SAE
    memory_line = None                                                                          # settings fail
    if check_memory:                                                                            # before loading
        from qwen_sae_jax.train.memory import check_fits
        memory_line = check_fits(cfg, model_config, mesh.size, device_memory)
    lm = None
    if not reading_cache:
        from qwen_sae_jax.lm import load_model
        lm = load_model(cfg.model.name, dtype=cfg.model.dtype, mesh=mesh, rules=cfg.mesh.rules)
    H, D = len(plan.hooks), plan.d_in
    act_dtype = jnp.dtype(cfg.model.dtype)

    writer = None
    eval_docs = None
    if reading_cache:
        reader = CacheReader(cfg.cache.dir, plan.hooks)
        if reader.d != D:
            raise UserError(f"activation cache {cfg.cache.dir!r} has width {reader.d}, the model has {D}")
        act_dtype = jnp.dtype(reader.numpy_dtype)
        rows = cfg.data.batch_size * cfg.data.ctx_len
        rows -= rows % n_data
        stream = ActivationStream(plan.hooks, mesh, cache=reader, cache_rows=max(rows, n_data))
    else:
        if lm.tokenizer is None:
            raise UserError(f"model {cfg.model.name!r} has no tokenizer; train from an activation cache instead")
        docs = open_documents(cfg.data)
        train_docs = docs
        if cfg.eval.holdout_every:
            train_docs = _Every(docs, cfg.eval.holdout_every, held_out=False)
            eval_docs = _Every(docs, cfg.eval.holdout_every, held_out=True)
        if cfg.data.batch_size % n_data:
            raise UserError(f"data.batch_size={cfg.data.batch_size} must be divisible by the 'data' mesh axis "
                            f"({n_data} devices)")
        rows = process_batch_rows(mesh, cfg.data.batch_size)     # the token rows this process's devices hold
        if cfg.cache.mode == "write":
            writer = CacheWriter.for_mesh(cfg.cache.dir, plan.hooks, D, act_dtype, cfg.cache.shard_rows,
                                          cfg.model.name, mesh=mesh, batch_size=cfg.data.batch_size)
        stream = ActivationStream(
            plan.hooks, mesh, lm=lm, tokens=TokenBatches(lm.tokenizer, cfg.data, docs=train_docs, rows=rows),
            special_ids=special_token_ids(lm.tokenizer) if cfg.filter.special_tokens else (),
            drop_first=cfg.filter.first_position, outlier_factor=cfg.filter.norm_outlier_factor,
            writer=writer, global_batch=cfg.data.batch_size, ctx_len=cfg.data.ctx_len)
        if eval_docs is not None:
            try:
                eval_tokens = TokenBatches(lm.tokenizer, cfg.data, docs=eval_docs, rows=rows)
            except UserError as err:
                raise UserError(f"held-out documents (every {cfg.eval.holdout_every}th, eval.holdout_every): "
                                f"{err}; or set eval.holdout_every=0 to evaluate on the training stream") from None
    size = cfg.buffer.size
    params = lm.params if lm is not None else None

    # ---------------------------------------------------------------- run dir, checkpoints, resume
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoints(run_dir / "checkpoints", cfg.checkpoint.keep, cfg.checkpoint.async_save)
    latest = ckpt.latest_step()
    if latest is not None and not resume:
        raise UserError(f"{run_dir} already holds checkpoints (latest step {latest}); pass --resume to continue "
                        "it, or choose another run_dir")
    trainer = Trainer(cfg, plan, mesh)
    total = cfg.total_steps
    config_dict = to_dict(cfg)
    buf_shardings = mixing.buffer_shardings(mesh)
    make_buffer = jax.jit(lambda: mixing.init_buffer(H, D, size, stream.rows_per_fill, Bt, act_dtype),
                          out_shardings=buf_shardings)
    shuffle = jax.jit(mixing.shuffle, static_argnums=(2,), donate_argnums=(0,), out_shardings=buf_shardings)
    init_sample = min(cfg.buffer.init_sample, size)
    base_key = jax.random.key(cfg.train.seed)
    init_key, shuffle_key = jax.random.fold_in(base_key, 0), jax.random.fold_in(base_key, 1)
    S = size // 2 // Bt

    if latest is not None:
        meta = ckpt.read_meta(latest)
        diffs = _config_differences(meta["config"], config_dict)
        if diffs:
            raise UserError(f"the checkpoint in {run_dir} comes from a different config: {'; '.join(diffs[:5])}"
                            f"{' ...' if len(diffs) > 5 else ''}")
        abstract = {"groups": trainer.abstract_state(init_sample),
                    "buffer": jax.eval_shape(lambda: mixing.init_buffer(H, D, size, stream.rows_per_fill, Bt,
                                                                        act_dtype)),
                    "filter": jax.eval_shape(stream.init_filter_state)}
        shardings = {"groups": trainer.shardings(abstract["groups"]), "buffer": buf_shardings,
                     "filter": jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
                                            abstract["filter"])}
        abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
        state, meta = ckpt.restore(latest, abstract, stream)
        groups, buf, fstate = state["groups"], state["buffer"], state["filter"]
        step, cursor, shuffles, tokens_seen = meta["step"], meta["cursor"], meta["shuffles"], meta["tokens"]
        if writer is not None:
            writer.restore(meta["cache_rows"])   # each process truncates its own shards
        if is_main:
            _drop_records_after(run_dir / "metrics.jsonl", step)   # logged after the checkpoint: redone now
    else:
        if is_main:
            (run_dir / "config.yaml").write_text(dump_yaml(cfg))
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        buf, fstate = make_buffer(), stream.init_filter_state()
        buf, fstate = stream.fill_until(params, buf, fstate, size)
        samples = jax.jit(lambda p: p[:, :init_sample].astype(jnp.float32))(buf.pool)
        groups = trainer.init_state(init_key, samples)
        step, cursor, shuffles, tokens_seen = 0, S, 0, 0

    logger = TrainLogger(run_dir, cfg.log, total, step, is_main, config_dict, stream=log_stream)
    if latest is not None:
        logger.message(f"resumed {run_dir} from step {latest}")
    else:
        logger.message(f"training {plan.num_saes} SAE(s) on {H} hook(s) of {cfg.model.name} for {total} steps "
                       f"x {Bt} activations; mesh data={n_data} model={n_model}, {nproc} process(es)")
    if memory_line:
        logger.message(memory_line)

    def meta_now() -> dict:
        return {"step": step, "cursor": cursor, "shuffles": shuffles, "tokens": tokens_seen, "config": config_dict,
                "cache_rows": writer.checkpoint_state() if writer is not None else 0}

    def save() -> None:
        if writer is not None:
            writer.flush()
        ckpt.save(step, {"groups": groups, "buffer": buf, "filter": fstate}, meta_now(), stream)

    lr_fns = [lr_schedule(cfg.saes[g.variant_index].optim, total) for g in plan.groups]
    interrupted = False
    last_time, last_tokens = time.time(), tokens_seen
    saved_step = latest
    stopped_by = None
    with _StopRequest() as stop:
        while step < total:
            stopped_by = _stop_signal(stop.signal)
            if stopped_by is not None:
                if saved_step != step:
                    save()
                    saved_step = step
                interrupted = True
                break
            if cursor == S:
                buf, fstate = stream.fill_until(params, buf, fstate, size)
                buf = shuffle(buf, jax.random.fold_in(shuffle_key, shuffles), size)
                shuffles, cursor = shuffles + 1, 0
            groups, metrics = trainer.step(groups, buf.ready, cursor)
            cursor, step, tokens_seen = cursor + 1, step + 1, tokens_seen + Bt
            logger.advance(step)
            if step % cfg.log.every == 0 or step == total:
                metrics = jax.device_get(metrics)
                now = time.time()
                record = {"step": step, "tokens": tokens_seen,
                          "tokens_per_s": (tokens_seen - last_tokens) / max(now - last_time, 1e-9),
                          "elapsed_s": now - logger.start_time,
                          "lr": {g.name: float(lr_fns[i](step - 1)) for i, g in enumerate(plan.groups)},
                          "saes": {g.folder(h): {k: float(np.asarray(metrics[gi][k])[j]) for k in METRIC_KEYS}
                                   for gi, g in enumerate(plan.groups) for j, h in enumerate(g.hooks)},
                          "dropped": stream.counts}
                last_time, last_tokens = now, tokens_seen
                logger.log(step, record)
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step < total:
                save()
                saved_step = step
        if not interrupted and saved_step != step:
            save()
        ckpt.wait()
    ckpt.close()
    if interrupted:
        logger.message(f"stopped by signal at step {step}; checkpoint saved. Continue with --resume")
        logger.close()
        return RunResult(run_dir, step, tokens_seen, True, None, stopped_by=stopped_by)

    # ---------------------------------------------------------------- final SAEs and table
    host_groups = [distributed.to_host(g.sae) for g in groups]
    if is_main:
        for group, sae in zip(plan.groups, host_groups):
            for j, hook in enumerate(group.hooks):
                one = jax.tree.map(np.asarray, hook_state(sae, j, len(group.hooks))).replace(cfg=group.sae_config(hook))
                save_sae(one, run_dir / "saes" / group.folder(hook), overwrite=True)
    if writer is not None:
        writer.flush()
    n_eval = -(-cfg.eval.tokens // Bt) * Bt
    eval_size = -(-n_eval // (2 * Bt)) * 2 * Bt
    if eval_docs is not None:
        eval_stream = stream.with_tokens(eval_tokens)
    else:
        eval_stream = stream
        eval_stream.writer = None
    eval_buf = jax.jit(lambda: mixing.init_buffer(H, D, eval_size, eval_stream.rows_per_fill, Bt, act_dtype),
                       out_shardings=buf_shardings)()
    eval_buf, _ = eval_stream.fill_until(params, eval_buf, eval_stream.init_filter_state(), n_eval)
    results = evaluate(plan, groups, eval_buf.pool, n_eval, Bt)
    table = format_table(results)
    if is_main:
        summary = {"steps": step, "tokens": tokens_seen, "eval_tokens": n_eval,
                   "eval_source": "held-out documents" if eval_docs is not None else "training stream",
                   "dropped": stream.counts, "saes": results}
        tmp = run_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, run_dir / "summary.json")
    logger.close()
    return RunResult(run_dir, step, tokens_seen, False, results, table if is_main else "")
