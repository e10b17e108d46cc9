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
import time
from pathlib import Path
from typing import Any, Sequence, overload

import numpy as np

from qwen_sae_jax.config import dump_yaml, to_dict
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.train import distributed
from qwen_sae_jax.train.config import TrainConfig
from qwen_sae_jax.train.run_control import StopRequest, drop_records_after, stop_signal

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


class _Every(Sequence):
    """Lazy views of a document sequence: every ``k``-th document (held out) or all the others."""

    def __init__(self, docs: Sequence[Any], k: int, held_out: bool):
        self.docs, self.k, self.held_out = docs, k, held_out
        n_held = len(docs) // k
        self.n = n_held if held_out else len(docs) - n_held

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> Any: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Any]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
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








def _model_config(cfg: TrainConfig):
    """The model's config (its config.json), without loading weights."""
    from qwen_sae_jax.lm import resolve_model_dir
    from qwen_sae_jax.models.registry import read_config
    return read_config(resolve_model_dir(cfg.model.name))


@dataclasses.dataclass
class _Run:
    """What the stages share and never change: config, mesh, plan, model, streams, trainer, checkpoints."""
    cfg: TrainConfig
    mesh: Any
    plan: Any
    params: Any                # the model's parameters (None when training from a cache)
    act_dtype: Any
    stream: Any                # training activations (ActivationStream)
    eval_stream: Any           # the end-of-run table's activations (held-out documents, or the training stream)
    writer: Any                # CacheWriter or None
    trainer: Any
    ckpt: Any
    run_dir: Path
    is_main: bool
    memory_line: str | None

    @property
    def batches_per_shuffle(self) -> int:
        return self.cfg.buffer.size // 2 // self.cfg.train.batch_size


@dataclasses.dataclass
class _State:
    """What the steps change, all of it in every checkpoint."""
    groups: Any                # per group: GroupState (SAEs, optimizer state, dead-latent counters); None
    buf: Any                   # MixingBuffer                                  once released at the end
    fstate: Any                # FilterState
    step: int
    cursor: int                # next ready batch (== batches_per_shuffle: refill and shuffle first)
    shuffles: int
    tokens: int

    def meta(self, run: _Run) -> dict:
        return {"step": self.step, "cursor": self.cursor, "shuffles": self.shuffles, "tokens": self.tokens,
                "config": to_dict(run.cfg),
                "cache_rows": run.writer.checkpoint_state() if run.writer is not None else 0}


def train(cfg: TrainConfig, *, resume: bool = False, log_stream=None, device_memory: int | None = None,
          check_memory: bool = True) -> RunResult:
    """Run ``cfg`` (module docstring). ``check_memory``: refuse, before loading the model, a run that the memory
    plan (`train.memory`) says does not fit ``device_memory`` per device (default: the devices' own)."""
    distributed.initialize(cfg.distributed)
    from qwen_sae_jax.train.logs import require_backends
    require_backends(cfg.log)
    run = _build_run(cfg, check_memory, device_memory)
    latest = run.ckpt.latest_step()
    if latest is not None and not resume:
        raise UserError(f"{run.run_dir} already holds checkpoints (latest step {latest}); pass --resume to "
                        "continue it, or choose another run_dir")
    state = _restore(run, latest) if latest is not None else _initialise(run)
    logger = _start_logger(run, state, latest, log_stream)
    stopped_by = _run_steps(run, state, logger, saved_step=latest)
    if stopped_by is not None:
        logger.message(f"stopped by signal at step {state.step}; checkpoint saved. Continue with --resume")
        logger.close()
        return RunResult(run.run_dir, state.step, state.tokens, True, None, stopped_by=stopped_by)
    return _finish(run, state, logger)


# ------------------------------------------------------------------------------------ stage 1: the run
def _build_run(cfg: TrainConfig, check_memory: bool, device_memory: int | None) -> _Run:
    """Mesh, plan (bad hooks / SAE settings fail here), the memory plan check, then the model and streams."""
    import jax
    import jax.numpy as jnp

    from qwen_sae_jax.train.checkpoint import Checkpoints
    from qwen_sae_jax.train.mesh import make_mesh
    from qwen_sae_jax.train.plan import make_plan
    from qwen_sae_jax.train.step import Trainer

    mesh = make_mesh(cfg.mesh)
    n_data, n_model = mesh.shape["data"], mesh.shape["model"]
    if cfg.train.batch_size % n_data:
        raise UserError(f"train.batch_size={cfg.train.batch_size} must be divisible by the 'data' mesh axis "
                        f"({n_data} devices)")
    model_config = _model_config(cfg)
    plan = make_plan(cfg, model_config.mixers, model_config.hidden_size, n_model)
    memory_line = None
    if check_memory:
        from qwen_sae_jax.train.memory import check_fits
        memory_line = check_fits(cfg, model_config, mesh.size, device_memory)
    if cfg.cache.mode == "read":
        params, act_dtype, stream, eval_stream, writer = None, *_cache_streams(cfg, plan, mesh)
    else:
        params, act_dtype, stream, eval_stream, writer = _model_streams(cfg, plan, mesh)
    run_dir = Path(cfg.run_dir)
    is_main = jax.process_index() == 0
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoints(run_dir / "checkpoints", cfg.checkpoint.keep, cfg.checkpoint.async_save)
    return _Run(cfg=cfg, mesh=mesh, plan=plan, params=params, act_dtype=jnp.dtype(act_dtype), stream=stream,
                eval_stream=eval_stream, writer=writer, trainer=Trainer(cfg, plan, mesh), ckpt=ckpt,
                run_dir=run_dir, is_main=is_main, memory_line=memory_line)


def _cache_dir(cfg: TrainConfig) -> str:
    if cfg.cache.dir is None:       # TrainConfig refuses it already; kept for the type checker
        raise UserError(f"cache.mode={cfg.cache.mode} needs cache.dir")
    return cfg.cache.dir


def _cache_streams(cfg: TrainConfig, plan, mesh) -> tuple:
    """(activation dtype, stream, eval stream, writer) reading an activation cache."""
    from qwen_sae_jax.data.cache import CacheReader
    from qwen_sae_jax.data.stream import ActivationStream

    reader = CacheReader(_cache_dir(cfg), plan.hooks)
    if reader.d != plan.d_in:
        raise UserError(f"activation cache {cfg.cache.dir!r} has width {reader.d}, the model has {plan.d_in}")
    n_data = mesh.shape["data"]
    rows = cfg.data.batch_size * cfg.data.ctx_len
    rows -= rows % n_data
    stream = ActivationStream(plan.hooks, mesh, cache=reader, cache_rows=max(rows, n_data))
    return reader.numpy_dtype, stream, stream, None


def _model_streams(cfg: TrainConfig, plan, mesh) -> tuple:
    """(params, activation dtype, stream, eval stream, writer) running the model on text."""
    import jax.numpy as jnp

    from qwen_sae_jax.data.cache import CacheWriter
    from qwen_sae_jax.data.stream import ActivationStream
    from qwen_sae_jax.data.text import open_documents
    from qwen_sae_jax.data.tokens import TokenBatches, special_token_ids
    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.train.mesh import process_batch_rows

    lm = load_model(cfg.model.name, dtype=cfg.model.dtype, mesh=mesh, rules=cfg.mesh.rules)
    if lm.tokenizer is None:
        raise UserError(f"model {cfg.model.name!r} has no tokenizer; train from an activation cache instead")
    n_data = mesh.shape["data"]
    if cfg.data.batch_size % n_data:
        raise UserError(f"data.batch_size={cfg.data.batch_size} must be divisible by the 'data' mesh axis "
                        f"({n_data} devices)")
    docs = open_documents(cfg.data)
    train_docs, eval_docs = docs, None
    if cfg.eval.holdout_every:
        train_docs = _Every(docs, cfg.eval.holdout_every, held_out=False)
        eval_docs = _Every(docs, cfg.eval.holdout_every, held_out=True)
    rows = process_batch_rows(mesh, cfg.data.batch_size)     # the token rows this process's devices hold
    writer = None
    if cfg.cache.mode == "write":
        writer = CacheWriter.for_mesh(_cache_dir(cfg), plan.hooks, plan.d_in, jnp.dtype(cfg.model.dtype),
                                      cfg.cache.shard_rows, cfg.model.name, mesh=mesh,
                                      batch_size=cfg.data.batch_size)
    stream = ActivationStream(
        plan.hooks, mesh, lm=lm, tokens=TokenBatches(lm.tokenizer, cfg.data, docs=train_docs, rows=rows),
        special_ids=special_token_ids(lm.tokenizer) if cfg.filter.special_tokens else (),
        drop_first=cfg.filter.first_position, outlier_factor=cfg.filter.norm_outlier_factor,
        writer=writer, global_batch=cfg.data.batch_size, ctx_len=cfg.data.ctx_len)
    eval_stream = stream
    if eval_docs is not None:
        try:
            eval_stream = stream.with_tokens(TokenBatches(lm.tokenizer, cfg.data, docs=eval_docs, rows=rows))
        except UserError as err:
            raise UserError(f"held-out documents (every {cfg.eval.holdout_every}th, eval.holdout_every): "
                            f"{err}; or set eval.holdout_every=0 to evaluate on the training stream") from None
    return lm.params, cfg.model.dtype, stream, eval_stream, writer


# ------------------------------------------------------------------------------------ stage 2: the state
def _buffer_shapes(run: _Run):
    from qwen_sae_jax.data import buffer as mixing
    H, D, cfg = len(run.plan.hooks), run.plan.d_in, run.cfg
    return lambda: mixing.init_buffer(H, D, cfg.buffer.size, run.stream.rows_per_fill, cfg.train.batch_size,
                                      run.act_dtype)


def _initialise(run: _Run) -> _State:
    """A fresh run: config.yaml, the first full buffer, every SAE initialised from its first rows."""
    import jax
    import jax.numpy as jnp

    from qwen_sae_jax.data import buffer as mixing
    if run.is_main:
        (run.run_dir / "config.yaml").write_text(dump_yaml(run.cfg))
        (run.run_dir / "metrics.jsonl").unlink(missing_ok=True)
    buf = jax.jit(_buffer_shapes(run), out_shardings=mixing.buffer_shardings(run.mesh))()
    buf, fstate = run.stream.fill_until(run.params, buf, run.stream.init_filter_state(), run.cfg.buffer.size)
    init_sample = min(run.cfg.buffer.init_sample, run.cfg.buffer.size)
    samples = jax.jit(lambda p: p[:, :init_sample].astype(jnp.float32))(buf.pool)
    init_key = jax.random.fold_in(jax.random.key(run.cfg.train.seed), 0)
    groups = run.trainer.init_state(init_key, samples)
    return _State(groups, buf, fstate, step=0, cursor=run.batches_per_shuffle, shuffles=0, tokens=0)


def _restore(run: _Run, latest: int) -> _State:
    """The state of checkpoint ``latest`` (refused when it comes from a different config)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from qwen_sae_jax.data import buffer as mixing
    meta = run.ckpt.read_meta(latest)
    diffs = _config_differences(meta["config"], to_dict(run.cfg))
    if diffs:
        raise UserError(f"the checkpoint in {run.run_dir} comes from a different config: {'; '.join(diffs[:5])}"
                        f"{' ...' if len(diffs) > 5 else ''}")
    abstract = {"groups": run.trainer.abstract_state(min(run.cfg.buffer.init_sample, run.cfg.buffer.size)),
                "buffer": jax.eval_shape(_buffer_shapes(run)),
                "filter": jax.eval_shape(run.stream.init_filter_state)}
    replicated = NamedSharding(run.mesh, PartitionSpec())
    shardings = {"groups": run.trainer.shardings(abstract["groups"]), "buffer": mixing.buffer_shardings(run.mesh),
                 "filter": jax.tree.map(lambda _: replicated, abstract["filter"])}
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    state, meta = run.ckpt.restore(latest, abstract, run.stream)
    if run.writer is not None:
        run.writer.restore(meta["cache_rows"])   # each process truncates its own shards
    if run.is_main:
        drop_records_after(run.run_dir / "metrics.jsonl", meta["step"])   # logged after the checkpoint: redone
    return _State(state["groups"], state["buffer"], state["filter"], step=meta["step"], cursor=meta["cursor"],
                  shuffles=meta["shuffles"], tokens=meta["tokens"])


def _start_logger(run: _Run, state: _State, latest: int | None, log_stream):
    import jax

    from qwen_sae_jax.train.logs import TrainLogger
    logger = TrainLogger(run.run_dir, run.cfg.log, run.cfg.total_steps, state.step, run.is_main, to_dict(run.cfg),
                         stream=log_stream)
    if latest is not None:
        logger.message(f"resumed {run.run_dir} from step {latest}")
    else:
        n_data, n_model = run.mesh.shape["data"], run.mesh.shape["model"]
        logger.message(f"training {run.plan.num_saes} SAE(s) on {len(run.plan.hooks)} hook(s) of "
                       f"{run.cfg.model.name} for {run.cfg.total_steps} steps x {run.cfg.train.batch_size} "
                       f"activations; mesh data={n_data} model={n_model}, {jax.process_count()} process(es)")
    if run.memory_line:
        logger.message(run.memory_line)
    return logger


# ------------------------------------------------------------------------------------ stage 3: the steps
def _save(run: _Run, state: _State) -> None:
    if run.writer is not None:
        run.writer.flush()
    run.ckpt.save(state.step, {"groups": state.groups, "buffer": state.buf, "filter": state.fstate},
                  state.meta(run), run.stream)


def _run_steps(run: _Run, state: _State, logger, saved_step: int | None) -> int | None:
    """Step until ``train.total_steps`` (updating ``state`` in place), checkpointing as configured; the last
    step is always saved. Returns the signal that stopped it early (after saving), else None."""
    import jax

    from qwen_sae_jax.data import buffer as mixing
    cfg, total, S = run.cfg, run.cfg.total_steps, run.batches_per_shuffle
    shuffle = jax.jit(mixing.shuffle, static_argnums=(2,), donate_argnums=(0,),
                      out_shardings=mixing.buffer_shardings(run.mesh))
    shuffle_key = jax.random.fold_in(jax.random.key(cfg.train.seed), 1)
    record = _Records(run, state)
    with StopRequest() as stop:
        while state.step < total:
            stopped_by = stop_signal(stop.signal)
            if stopped_by is not None:
                if saved_step != state.step:
                    _save(run, state)
                run.ckpt.wait()
                run.ckpt.close()
                return stopped_by
            if state.cursor == S:
                state.buf, state.fstate = run.stream.fill_until(run.params, state.buf, state.fstate, cfg.buffer.size)
                state.buf = shuffle(state.buf, jax.random.fold_in(shuffle_key, state.shuffles), cfg.buffer.size)
                state.shuffles, state.cursor = state.shuffles + 1, 0
            state.groups, metrics = run.trainer.step(state.groups, state.buf.ready, state.cursor)
            state.cursor, state.step = state.cursor + 1, state.step + 1
            state.tokens = state.tokens + cfg.train.batch_size
            logger.advance(state.step)
            if state.step % cfg.log.every == 0 or state.step == total:
                logger.log(state.step, record(metrics))
            if (cfg.checkpoint.every and state.step % cfg.checkpoint.every == 0) or state.step == total:
                if saved_step != state.step:
                    _save(run, state)
                    saved_step = state.step
        run.ckpt.wait()
    run.ckpt.close()
    return None


class _Records:
    """The metrics.jsonl record of a logged step (throughput since the previous record)."""

    def __init__(self, run: _Run, state: _State):
        from qwen_sae_jax.train.optim import lr_schedule
        self.run, self.state = run, state
        self.lr_fns = [lr_schedule(run.cfg.saes[g.variant_index].optim, run.cfg.total_steps) for g in run.plan.groups]
        self.last_time, self.last_tokens, self.start = time.time(), state.tokens, time.time()

    def __call__(self, metrics) -> dict:
        import jax

        from qwen_sae_jax.train.step import METRIC_KEYS
        metrics, plan, state = jax.device_get(metrics), self.run.plan, self.state
        now = time.time()
        record = {"step": state.step, "tokens": state.tokens,
                  "tokens_per_s": (state.tokens - self.last_tokens) / max(now - self.last_time, 1e-9),
                  "elapsed_s": now - self.start,
                  "lr": {g.name: float(self.lr_fns[i](state.step - 1)) for i, g in enumerate(plan.groups)},
                  "saes": {g.folder(h): {k: float(np.asarray(metrics[gi][k])[j]) for k in METRIC_KEYS}
                           for gi, g in enumerate(plan.groups) for j, h in enumerate(g.hooks)},
                  "dropped": self.run.stream.counts}
        self.last_time, self.last_tokens = now, state.tokens
        return record


# ------------------------------------------------------------------------------------ stage 4: the end
def _finish(run: _Run, state: _State, logger) -> RunResult:
    """After the last checkpoint: release the optimizer state and the buffer, write the SAE folders one at a
    time, then the held-out table streamed batch by batch (never more memory than a training step). Each SAE
    folder is written atomically, and a run killed here finishes with --resume (the last step is saved)."""
    from qwen_sae_jax.train.summary import dead_fractions, eval_chunk, evaluate_stream, format_table
    cfg, plan = run.cfg, run.plan
    dead = dead_fractions(plan, state.groups)
    saes = [g.sae for g in state.groups]
    state.groups = state.buf = state.fstate = None           # optimizer state and buffer freed here
    _write_saes(run, saes)
    if run.writer is not None:
        run.writer.flush()
    Bt = cfg.train.batch_size
    n_eval = -(-cfg.eval.tokens // Bt) * Bt
    stream = run.eval_stream
    stream.writer = None                                      # evaluation rows are not cached
    fstate = [stream.init_filter_state()]

    def next_rows():
        rows, keep, fstate[0] = stream.next_rows(run.params, fstate[0], run.act_dtype)
        return rows, keep

    results = evaluate_stream(plan, saes, dead, next_rows, n_eval, eval_chunk(stream.rows_per_fill, Bt))
    if run.is_main:
        summary = {"steps": state.step, "tokens": state.tokens, "eval_tokens": n_eval,
                   "eval_source": "training stream" if stream is run.stream else "held-out documents",
                   "dropped": run.stream.counts, "saes": results}
        tmp = run.run_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1))
        os.replace(tmp, run.run_dir / "summary.json")
    logger.close()
    return RunResult(run.run_dir, state.step, state.tokens, False, results,
                     format_table(results) if run.is_main else "")


def _write_saes(run: _Run, saes: list) -> None:
    """Every SAE's native folder in RUN_DIR/saes/, one SAE on the host at a time (every process joins the
    gather; process 0 writes)."""
    import jax

    from qwen_sae_jax.sae import save_sae
    from qwen_sae_jax.train.step import hook_state
    if run.is_main:
        _remove_partial_folders(run.run_dir / "saes", run.plan.sae_folders())
    for group, sae in zip(run.plan.groups, saes):
        for j, hook in enumerate(group.hooks):
            one = distributed.to_host(hook_state(sae, j, len(group.hooks)))
            if run.is_main:
                one = jax.tree.map(np.asarray, one).replace(cfg=group.sae_config(hook))
                save_sae(one, run.run_dir / "saes" / group.folder(hook), overwrite=True)


def _remove_partial_folders(saes_dir: Path, folders: Sequence[str]) -> None:
    """Delete what a killed writer left of ``folders``: the hidden ``.NAME.tmp-*`` / ``.NAME.old-*`` siblings
    of `atomic.atomic_directory` (the SAE folders themselves are complete or absent)."""
    import shutil
    if not saes_dir.is_dir():
        return
    for name in folders:
        for leftover in list(saes_dir.glob(f".{name}.tmp-*")) + list(saes_dir.glob(f".{name}.old-*")):
            shutil.rmtree(leftover, ignore_errors=True)
