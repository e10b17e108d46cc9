"""The memory plan of a training run: the bytes each device needs, from shapes alone.

    plan = plan_memory(cfg, model_config, num_devices=32)     # no weights read, no device memory used
    print(format_plan(plan, device_memory=16e9))

Parts, per device (``Part``):

    model parameters      the abstract parameters placed by the family's partition rules (FSDP over 'data')
    SAE parameters        `Trainer.abstract_state` placed by `train.mesh.state_shardings` (d_sae over 'model')
    optimizer state       Adam moments and counts, and the dead-latent counters, placed the same way
    mixing buffer         pool [H, size + M, D] and ready batches [H, S, Bt, D], rows over 'data'
    fill temporaries      what one fill holds besides the buffer: the forward's activations, the captured
                          [H, B, T, D] stack and the filter's masks
    step temporaries      what one training step holds besides its state: one SAE's pre-activations, gradients
                          and Adam update at a time (plus the copies XLA makes of a stacked group's state)
    evaluation            the end of run: one fill's captured rows and one SAE's evaluation chunk

Arrays are measured exactly (``NamedSharding(AbstractMesh).shard_shape`` of every leaf). The temporaries are
XLA's own buffer assignment (``compiled.memory_analysis().temp_size_in_bytes``) of the real fill / step /
evaluation functions, lowered for ONE device that holds the per-device shapes (``batch / data`` rows,
``d_sae / model`` latents), compiled by the planned platform's compiler when this machine has it (`train`'s own
check on a TPU / GPU host), else by the CPU backend as a stand-in (a bfloat16 forward then compiled in float32:
`_Compiler`). Those parts are estimates, checked against measured peaks in ``tests/train/test_memory.py`` and
``benchmarks/memory_plan.py``. Known over-estimates of the stand-in: the forward is not split over 'model'
(tensor parallelism would split its heads / MLP), and XLA:CPU expands an MoE layer's ``ragged_dot`` densely
over all experts.

The training peak is parameters + state + buffer + the larger of the two temporaries. The end of run first
releases the optimizer state and the buffer (`train.loop`), so its peak is parameters + SAEs + evaluation.
Host memory (checkpoint staging: orbax copies the saved state to host RAM; the process itself) is listed
apart; on CPU, devices and host share the same RAM, and the plan compares their sum with it.
"""
from __future__ import annotations

import dataclasses
import math
import os
import resource
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh, Mesh

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.train.config import TrainConfig
from qwen_sae_jax.train.plan import Plan, make_plan

GB = 1e9


@dataclasses.dataclass(frozen=True)
class Part:
    name: str
    bytes: int       # per device
    note: str = ""


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Per-device bytes of a run on a ``data x model`` mesh (see the module docstring)."""

    n_data: int
    n_model: int
    local_devices: int        # devices of one process (host parts are per process)
    platform: str             # "cpu", "gpu", "tpu": where device memory is host RAM or not
    model_params: Part
    sae_params: Part
    optimizer: Part
    buffer: Part
    fill: Part
    step: Part
    evaluation: Part
    checkpoint_staging: Part  # host, per process
    process: Part             # host, per process
    sizing: dict[str, Any]    # the linear models behind `largest_fitting`

    @property
    def device_parts(self) -> tuple[Part, ...]:
        return (self.model_params, self.sae_params, self.optimizer, self.buffer, self.fill, self.step)

    @property
    def training_peak(self) -> int:
        """Per device, during training."""
        resident = self.model_params.bytes + self.sae_params.bytes + self.optimizer.bytes + self.buffer.bytes
        return resident + max(self.fill.bytes, self.step.bytes)

    @property
    def end_peak(self) -> int:
        """Per device, during the end-of-run evaluation (optimizer state and buffer released)."""
        return self.model_params.bytes + self.sae_params.bytes + self.evaluation.bytes

    @property
    def peak(self) -> int:
        return max(self.training_peak, self.end_peak)

    def host_bytes(self) -> int:
        """Per process: host RAM on top of the devices' memory."""
        return self.checkpoint_staging.bytes + self.process.bytes

    def needed(self) -> int:
        """What is compared with ``device_memory``: per device; on CPU, per device with this process's host RAM
        spread over its local devices (devices and host share the RAM)."""
        if self.platform == "cpu":
            return self.peak + -(-self.host_bytes() // self.local_devices)
        return self.peak

    def fits(self, device_memory: int) -> bool:
        return self.needed() <= device_memory

    def biggest(self) -> Part:
        return max(self.device_parts, key=lambda p: p.bytes)


# ------------------------------------------------------------------------------------------------ sizes
def _bytes_per_device(tree, shardings) -> int:
    leaves, shard_leaves = jax.tree.leaves(tree), jax.tree.leaves(shardings)
    return sum(int(np.prod(s.shard_shape(a.shape))) * jnp.dtype(a.dtype).itemsize
               for a, s in zip(leaves, shard_leaves))


def _one_device_mesh(device=None) -> Mesh:
    """A 1 x 1 mesh ('data', 'model') on ``device`` (default: the first CPU device): the per-device programs are
    traced and compiled on it."""
    device = jax.devices("cpu")[0] if device is None else device
    return Mesh(np.asarray([device]).reshape(1, 1), ("data", "model"))


@dataclasses.dataclass(frozen=True)
class _Compiler:
    """Where the temporaries are compiled: the planned platform's own compiler when this machine has it (a
    plan made on the TPU / GPU host itself), else the CPU backend as a stand-in. The stand-in compiles a bfloat16
    forward in float32: XLA:CPU has no bf16 matmul and would count a float32 copy of every weight, which TPU and
    GPU never make (activations are then counted at 4 bytes: an upper bound)."""
    device: Any
    stand_in: bool

    @classmethod
    def for_platform(cls, platform: str) -> "_Compiler":
        try:
            return cls(jax.devices(platform)[0], False)
        except RuntimeError:
            return cls(jax.devices("cpu")[0], True)

    def forward_dtype(self, dtype):
        return jnp.dtype(jnp.float32) if self.stand_in and jnp.dtype(dtype) == jnp.bfloat16 else jnp.dtype(dtype)

    def describe(self, dtype) -> str:
        stand_in = " in float32" if self.forward_dtype(dtype) != jnp.dtype(dtype) else ""
        return f"XLA:{self.device.platform.upper()}{stand_in}" + (" as a stand-in" if self.stand_in else "")

    def temp_bytes(self, fn: Callable, *args, donate: tuple[int, ...] = ()) -> int:
        """XLA's temporaries of ``fn(*args)`` (abstract args) compiled for one device."""
        with jax.default_device(self.device):
            compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
        stats = compiled.memory_analysis()
        if stats is None:
            raise UserError(f"XLA:{self.device.platform.upper()} reports no memory analysis; plan with "
                            "--platform cpu instead")
        return int(stats.temp_size_in_bytes)


def mesh_shape(cfg: TrainConfig, num_devices: int) -> tuple[int, int]:
    """(data, model) as `train.mesh.make_mesh` would choose them on ``num_devices`` devices."""
    model = cfg.mesh.model
    if model < 1 or num_devices % model:
        raise UserError(f"mesh.model={model} must divide the number of devices ({num_devices})")
    data = num_devices // model if cfg.mesh.data == -1 else cfg.mesh.data
    if data < 1 or data * model > num_devices:
        raise UserError(f"mesh.data x mesh.model = {cfg.mesh.data} x {model} needs more than the {num_devices} "
                        f"device(s); set mesh.data=-1 (all devices) or data * model <= {num_devices}")
    return data, model


def _local_plan(plan: Plan, n_model: int) -> Plan:
    """The plan with every group's d_sae divided over the 'model' axis (one device's latents)."""
    groups = tuple(dataclasses.replace(g, cfg=g.cfg.replace(d_sae=g.cfg.d_sae // n_model, expansion_factor=None,
                                                             k_aux=min(g.cfg.resolved_k_aux,
                                                                       g.cfg.d_sae // n_model)))
                   for g in plan.groups)
    return dataclasses.replace(plan, groups=groups)


def _model_parts(cfg: TrainConfig, model_config, mesh: AbstractMesh, act_dtype) -> Part:
    from qwen_sae_jax.models import registry
    from qwen_sae_jax.models.checkpoint import abstract_params_of
    module = registry.causal_lm(model_config, act_dtype, act_dtype)
    abstract = abstract_params_of(module)
    shardings = registry.param_shardings(model_config, abstract, mesh, cfg.mesh.rules)
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(abstract))
    return Part("model parameters", _bytes_per_device(abstract, shardings),
                f"{n / 1e6:,.1f} M parameters in {jnp.dtype(act_dtype).name}")


def _state_parts(cfg: TrainConfig, plan: Plan, mesh: AbstractMesh) -> tuple[Part, Part]:
    from qwen_sae_jax.train.mesh import state_shardings
    from qwen_sae_jax.train.step import Trainer
    state = Trainer(cfg, plan, _one_device_mesh()).abstract_state(min(cfg.buffer.init_sample, 16))
    shardings = state_shardings(state, mesh, cfg.mesh.rules)
    saes = _bytes_per_device([g.sae for g in state], [s.sae for s in shardings])
    opt = _bytes_per_device([(g.opt_state, g.tokens_since_fired) for g in state],
                            [(s.opt_state, s.tokens_since_fired) for s in shardings])
    widths = ", ".join(f"{len(g.hooks)} x {g.name}" for g in plan.groups)
    return (Part("SAE parameters", saes, f"{plan.num_saes} SAEs ({widths})"),
            Part("optimizer state", opt, "Adam moments + counts, dead-latent counters"))


def _saved_bytes(cfg: TrainConfig, plan: Plan, act_dtype) -> int:
    """Bytes of what a checkpoint saves (every SAE's state and the buffer), each array once: orbax writes
    every shard once over the job, so a process stages about its share of this on the host."""
    from qwen_sae_jax.data import buffer as mixing
    from qwen_sae_jax.train.step import Trainer
    state = Trainer(cfg, plan, _one_device_mesh()).abstract_state(16)
    H, D, Bt = len(plan.hooks), plan.d_in, cfg.train.batch_size
    buffer = jax.eval_shape(lambda: mixing.init_buffer(H, D, cfg.buffer.size, _rows_per_fill(cfg), Bt, act_dtype))
    return sum(int(np.prod(a.shape)) * jnp.dtype(a.dtype).itemsize for a in jax.tree.leaves((state, buffer)))


def _rows_per_fill(cfg: TrainConfig) -> int:
    return cfg.data.batch_size * cfg.data.ctx_len


def _buffer_part(cfg: TrainConfig, plan: Plan, mesh: AbstractMesh, act_dtype, size: int | None = None) -> Part:
    from qwen_sae_jax.data import buffer as mixing
    size = cfg.buffer.size if size is None else size
    H, D, Bt = len(plan.hooks), plan.d_in, cfg.train.batch_size
    abstract = jax.eval_shape(lambda: mixing.init_buffer(H, D, size, _rows_per_fill(cfg), Bt, act_dtype))
    return Part("mixing buffer", _bytes_per_device(abstract, mixing.buffer_shardings(mesh)),
                f"{H} hooks x {size} rows (+ {_rows_per_fill(cfg)} per fill) in {jnp.dtype(act_dtype).name}")


# ------------------------------------------------------------------------------------------------ temporaries
def _fill_temp(cfg: TrainConfig, plan: Plan, model_config, n_data: int, act_dtype, compiler: _Compiler) -> int:
    """The fill compiled at one device's share of a model batch (``data.batch_size / data`` sequences)."""
    from qwen_sae_jax.data import buffer as mixing
    from qwen_sae_jax.data.filter import init_filter_state
    from qwen_sae_jax.data.stream import ActivationStream
    from qwen_sae_jax.lm import LanguageModel
    from qwen_sae_jax.models import registry
    from qwen_sae_jax.models.checkpoint import abstract_params_of
    H, D = len(plan.hooks), plan.d_in
    rows_local = max(cfg.data.batch_size // n_data, 1)
    size_local = max(cfg.buffer.size // n_data, 1)
    if cfg.cache.mode == "read":
        rows = jax.ShapeDtypeStruct((H, rows_local * cfg.data.ctx_len, D), act_dtype)
        buf = jax.eval_shape(lambda: mixing.init_buffer(H, D, size_local, rows.shape[1], 1, act_dtype))
        return compiler.temp_bytes(ActivationStream._fill_rows, buf, rows, donate=(0,))
    act_dtype = compiler.forward_dtype(act_dtype)
    abstract_params = abstract_params_of(registry.causal_lm(model_config, act_dtype, act_dtype))
    lm = LanguageModel(model_config, abstract_params, dtype=act_dtype, param_dtype=act_dtype)
    stream = ActivationStream(plan.hooks, _one_device_mesh(compiler.device), lm=lm,
                              special_ids=(0, 1, 2) if cfg.filter.special_tokens else (),
                              drop_first=cfg.filter.first_position, outlier_factor=cfg.filter.norm_outlier_factor,
                              global_batch=rows_local, ctx_len=cfg.data.ctx_len)
    M = rows_local * cfg.data.ctx_len
    buf = jax.eval_shape(lambda: mixing.init_buffer(H, D, size_local, M, 1, act_dtype))
    fstate = jax.eval_shape(lambda: init_filter_state(H))
    tokens = jax.ShapeDtypeStruct((rows_local, cfg.data.ctx_len), jnp.int32)
    return compiler.temp_bytes(stream._fill_model, abstract_params, buf, fstate, tokens, donate=(1, 2))


def _step_temp(cfg: TrainConfig, local_plan: Plan, n_data: int, act_dtype, compiler: _Compiler) -> int:
    """The training step compiled at one device's shapes (``train.batch_size / data`` rows, local latents)."""
    from qwen_sae_jax.train.step import Trainer
    Bt = cfg.train.batch_size
    trainer = Trainer(cfg, local_plan, _one_device_mesh(compiler.device))
    state = trainer.abstract_state(16)
    S = max(cfg.buffer.size // 2 // Bt, 1)
    ready = jax.ShapeDtypeStruct((len(local_plan.hooks), S, max(Bt // n_data, 1), local_plan.d_in), act_dtype)
    return compiler.temp_bytes(trainer._step_fn, state, ready, jax.ShapeDtypeStruct((), jnp.int32), donate=(0,))


def _eval_temp(cfg: TrainConfig, local_plan: Plan, n_data: int, act_dtype, compiler: _Compiler) -> int:
    """One SAE's evaluation chunk (``train.batch_size / data`` rows) and one fill's captured rows."""
    from qwen_sae_jax.sae import init_sae
    from qwen_sae_jax.train.summary import chunk_sums
    chunk = max(cfg.train.batch_size // n_data, 1)
    x = jax.ShapeDtypeStruct((chunk, local_plan.d_in), act_dtype)
    keep = jax.ShapeDtypeStruct((chunk,), jnp.bool_)
    worst = 0
    for group in local_plan.groups:
        sae = jax.eval_shape(lambda g=group: init_sae(g.cfg, jax.random.key(0)))
        worst = max(worst, compiler.temp_bytes(chunk_sums, sae, x, keep))
    captured = len(local_plan.hooks) * (_rows_per_fill(cfg) // n_data) * local_plan.d_in * jnp.dtype(act_dtype).itemsize
    return worst + captured


# ------------------------------------------------------------------------------------------------ the plan
def plan_memory(cfg: TrainConfig, model_config, num_devices: int, *, local_devices: int | None = None,
                platform: str = "cpu", process_bytes: int | None = None, temporaries: bool = True) -> MemoryPlan:
    """The memory plan of ``cfg`` on ``num_devices`` devices (``local_devices`` of them per process; default
    all), for a model with config ``model_config`` (a family config, e.g. from `models.registry.read_config`).

    ``process_bytes``: host RAM of the process itself (default: this process's resident size now).
    ``temporaries=False``: arrays only (no compiles, well under a second): the three temporaries are 0."""
    n_data, n_model = mesh_shape(cfg, num_devices)
    mesh = AbstractMesh((n_data, n_model), ("data", "model"))
    local = local_devices or n_data * n_model
    plan = make_plan(cfg, model_config.mixers, model_config.hidden_size, n_model)
    act_dtype = jnp.dtype(cfg.model.dtype)
    model_part = _model_parts(cfg, model_config, mesh, act_dtype)
    if cfg.cache.mode == "read":
        model_part = dataclasses.replace(model_part, bytes=0, note="not loaded: training reads the cache")
    sae_part, opt_part = _state_parts(cfg, plan, mesh)
    buffer_part = _buffer_part(cfg, plan, mesh, act_dtype)
    local_plan = _local_plan(plan, n_model)
    fill = step = evaluation = 0
    compiler = _Compiler.for_platform(platform)
    if temporaries:
        fill = _fill_temp(cfg, plan, model_config, n_data, act_dtype, compiler)
        step = _step_temp(cfg, local_plan, n_data, act_dtype, compiler)
        evaluation = _eval_temp(cfg, local_plan, n_data, act_dtype, compiler)
    sizing = _sizing(cfg, plan, local_plan, mesh, n_data, act_dtype, step if temporaries else None, buffer_part,
                     compiler)
    staging = -(-_saved_bytes(cfg, plan, act_dtype) * local // (n_data * n_model))
    if process_bytes is None:
        process_bytes = current_rss()
    return MemoryPlan(
        n_data=n_data, n_model=n_model, local_devices=local, platform=platform, model_params=model_part,
        sae_params=sae_part, optimizer=opt_part, buffer=buffer_part,
        fill=Part("fill temporaries", fill, f"forward + captured activations of {cfg.data.batch_size // n_data} "
                                            f"x {cfg.data.ctx_len} tokens ({compiler.describe(act_dtype)})"),
        step=Part("step temporaries", step, "one SAE's pre-activations, gradients and update at a time "
                                            f"({compiler.describe(jnp.float32)})"),
        evaluation=Part("end-of-run evaluation", evaluation, "one fill's captured rows + one SAE's chunk "
                                                             f"({compiler.describe(jnp.float32)})"),
        checkpoint_staging=Part("checkpoint staging (host)", staging, "this process's share of the saved state, "
                                                                     "copied to host RAM while orbax writes"),
        process=Part("process (host)", process_bytes, "the Python process itself"),
        sizing=sizing)


def _sizing(cfg, plan, local_plan, mesh, n_data, act_dtype, step: int | None, buffer_part: Part,
            compiler: _Compiler) -> dict[str, Any]:
    """What `largest_fitting` extrapolates from: the buffer's bytes per row, and the step compiled with half
    the largest group (skipped when ``step`` is None: no temporaries)."""
    Bt = cfg.train.batch_size
    gi = max(range(len(plan.groups)), key=lambda i: len(plan.groups[i].hooks))
    group = local_plan.groups[gi]
    n = len(group.hooks)
    half_group = max(n // 2, 1)
    step_half_group = step or 0
    if step is not None and half_group < n:
        halved = dataclasses.replace(group, hooks=group.hooks[:half_group], rows=group.rows[:half_group])
        groups = local_plan.groups[:gi] + (halved,) + local_plan.groups[gi + 1:]
        step_half_group = _step_temp(cfg, dataclasses.replace(local_plan, groups=groups), n_data, act_dtype,
                                     compiler)
    more_rows = _buffer_part(cfg, plan, mesh, act_dtype, cfg.buffer.size + 2 * Bt).bytes - buffer_part.bytes
    return {"batch_size": Bt, "buffer_size": cfg.buffer.size, "buffer_bytes_per_row": more_rows / (2 * Bt),
            "num_saes": plan.num_saes, "largest_group": n, "half_group": half_group,
            "step_half_group": step_half_group}


def current_rss() -> int:
    """Resident set size of this process now (bytes; Linux /proc, else the peak from getrusage)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_memory_default(local_devices: int) -> tuple[int, str]:
    """(bytes per device, where the figure comes from): an accelerator's reported limit, or the host RAM
    divided over the ``local_devices`` CPU devices the run uses in this process (the same count the plan
    spreads the host parts over, so a 1-device run on a machine with 8 forced CPU devices gets all the RAM)."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.device_kind} reported limit"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return total // local_devices, f"host RAM {total / GB:.1f} GB / {local_devices} CPU device(s) of this run"


# ------------------------------------------------------------------------------------------------ what fits
def largest_fitting(plan: MemoryPlan, device_memory: int) -> dict[str, int]:
    """The largest ``train.batch_size`` (a power of two), ``buffer.size`` (a multiple of 2 * batch) and number
    of SAEs in the largest group that fit ``device_memory``, each with every other setting unchanged (0: none
    fits). The buffer is exact; the step's temporaries are linear in the group size between the two compiled
    group sizes of `plan_memory`, and taken as proportional to the batch."""
    s = plan.sizing
    spare = device_memory - plan.needed()
    rows = s["buffer_size"] + int(spare // s["buffer_bytes_per_row"]) if s["buffer_bytes_per_row"] else 0
    step2 = 2 * s["batch_size"]
    out = {"buffer.size": max(rows // step2 * step2, 0)}

    # the step's temporaries taken as proportional to the batch (XLA's buffer assignment is not monotone
    # in it; for a larger batch the batch-independent part is over-counted, i.e. the figure is cautious)
    room = device_memory - (plan.needed() - max(plan.fill.bytes, plan.step.bytes))
    if room < plan.fill.bytes or room <= 0:
        out["train.batch_size"] = 0
    elif plan.step.bytes == 0:
        out["train.batch_size"] = s["batch_size"]
    else:
        best = s["batch_size"] * room / plan.step.bytes
        out["train.batch_size"] = 2 ** int(math.log2(best)) if best >= 1 else 0

    n, n_half = s["largest_group"], s["half_group"]
    state_per_sae = (plan.sae_params.bytes + plan.optimizer.bytes) / s["num_saes"]
    temp_per_sae = max(plan.step.bytes - s["step_half_group"], 0) / max(n - n_half, 1)
    per_sae = state_per_sae + (temp_per_sae if plan.step.bytes >= plan.fill.bytes else 0)
    out["SAEs in the largest group"] = max(n + int(spare // per_sae), 0)
    return out


def format_plan(plan: MemoryPlan, device_memory: int, memory_source: str = "") -> str:
    """The plan as a table, the verdict, and what would fit."""
    def row(part: Part) -> str:
        return f"  {part.name:<28} {part.bytes / GB:>9.3f} GB   {part.note}"

    lines = [f"memory plan per device: mesh data={plan.n_data} x model={plan.n_model} "
             f"({plan.local_devices} device(s) per process, {plan.platform})"]
    lines += [row(p) for p in plan.device_parts]
    lines.append(f"  {'training peak':<28} {plan.training_peak / GB:>9.3f} GB   parameters + state + buffer "
                 "+ the larger temporaries")
    lines.append(row(plan.evaluation))
    lines.append(f"  {'end-of-run peak':<28} {plan.end_peak / GB:>9.3f} GB   optimizer state and buffer "
                 "released first")
    lines.append("host, per process:")
    lines += [row(plan.checkpoint_staging), row(plan.process)]
    where = f" ({memory_source})" if memory_source else ""
    verdict = "fits" if plan.fits(device_memory) else "DOES NOT FIT"
    lines.append(f"needed {plan.needed() / GB:.3f} GB of {device_memory / GB:.3f} GB per device{where}: {verdict}"
                 + ("" if plan.platform != "cpu" else " (CPU: host parts spread over the local devices)"))
    fitting = largest_fitting(plan, device_memory)
    lines.append("largest that fits, one setting at a time: "
                 + ", ".join(f"{k}={v}" if v else f"{k}: none" for k, v in fitting.items()))
    return "\n".join(lines)


def refusal(plan: MemoryPlan, device_memory: int) -> str:
    """One line: why the run does not fit, its biggest part, and what would fit."""
    big = plan.biggest()
    fitting = ", ".join(f"{k}<={v}" for k, v in largest_fitting(plan, device_memory).items() if v)
    return (f"this run needs about {plan.needed() / GB:.2f} GB per device, more than the {device_memory / GB:.2f} GB "
            f"available; the biggest part is the {big.name} ({big.bytes / GB:.2f} GB). "
            f"What would fit: {fitting or 'nothing at this mesh; use more devices or a larger mesh.model'}. "
            "See `qwen-sae train CONFIG --plan`; pass --ignore-memory-plan to run anyway")


# ------------------------------------------------------------------------------------------------ entry points
def model_config_of(name: str, config_path: str | None = None):
    """The model config for planning, without weights: ``config_path``, else an embedded model or local
    directory's config.json, else a hub id's config.json alone (HF cache or hub)."""
    from qwen_sae_jax.lm import EMBEDDED_MODELS, resolve_model_dir
    from qwen_sae_jax.models.registry import read_config
    if config_path is not None:
        if not os.path.isfile(config_path):
            raise UserError(f"--model-config {config_path!r} is not a file (expected a model's config.json)")
        return read_config(config_path)
    if name in EMBEDDED_MODELS or os.path.isdir(name):
        return read_config(resolve_model_dir(name))
    try:
        from huggingface_hub import hf_hub_download
        return read_config(hf_hub_download(name, "config.json"))
    except UserError:
        raise
    except Exception as err:   # offline and not cached, unknown repo, ...: one line
        raise UserError(f"cannot read the config.json of model {name!r} ({type(err).__name__}); pass "
                        "--model-config PATH (configs/models/ has the Qwen3 / Qwen3.5 ones)") from None


def report(cfg: TrainConfig, *, num_devices: int | None = None, device_memory: int | None = None,
           model_config_path: str | None = None, platform: str | None = None,
           local_devices: int | None = None) -> str:
    """`qwen-sae train --plan`: the full plan as text (``platform``: planned devices, default this machine's)."""
    planned = platform
    platform = platform or jax.local_devices()[0].platform
    if num_devices is not None and num_devices < 1:
        raise UserError(f"--devices must be >= 1, got {num_devices}")
    n = num_devices or jax.device_count()
    if local_devices is not None and not 1 <= local_devices <= n:
        raise UserError(f"--local-devices must be in [1, --devices={n}], got {local_devices}")
    local = local_devices or min(jax.local_device_count(), n)
    source = "--device-memory"
    if device_memory is None and planned not in (None, jax.local_devices()[0].platform):
        raise UserError(f"--platform {planned} needs --device-memory (this machine has no {planned} devices)")
    if device_memory is None:
        device_memory, source = device_memory_default(local)
    plan = plan_memory(cfg, model_config_of(cfg.model.name, model_config_path), n, local_devices=local,
                       platform=platform)
    return format_plan(plan, device_memory, source)


def check_fits(cfg: TrainConfig, model_config, num_devices: int, device_memory: int | None = None) -> str:
    """Called by `train` before the model is loaded: the arrays alone (no compiles) and, when they reach half
    the device memory, the whole plan. Raises UserError (`refusal`) when the run does not fit; returns a
    one-line summary for the log."""
    platform = jax.local_devices()[0].platform
    local = min(jax.local_device_count(), num_devices)
    source = "given"
    if device_memory is None:
        device_memory, source = device_memory_default(local)
    plan = plan_memory(cfg, model_config, num_devices, local_devices=local, platform=platform, temporaries=False)
    checked = "arrays only: under half the memory, temporaries not compiled"
    if plan.needed() > device_memory // 2:
        plan = plan_memory(cfg, model_config, num_devices, local_devices=local, platform=platform)
        checked = "with XLA temporaries"
    if not plan.fits(device_memory):
        raise UserError(refusal(plan, device_memory))
    return (f"memory plan: {plan.needed() / GB:.2f} GB of {device_memory / GB:.2f} GB per device ({source}; "
            f"{checked})")
