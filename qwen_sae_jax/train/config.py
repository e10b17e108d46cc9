"""`TrainConfig`: the whole training run, loaded from YAML (``qwen-sae train CONFIG.yaml key=value ...``).

Every field's help text is the docstring under it; ``qwen-sae train --help`` prints them all.
An SAE *variant* (``saes[i]``) carries every `SAEConfig` field except the three the trainer fills in
(``d_in`` from the model, ``hook_name`` per hook, ``model_name`` from ``model.name``), plus its own
hooks, optimizer and kernel choice; each variant is trained on each of its hooks.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from qwen_sae_jax.config import field_docs
from qwen_sae_jax.data.tokens import DataConfig
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.sae.config import SAEConfig
from qwen_sae_jax.sharding import DEFAULT_RULES, check_rules

SET_BY_TRAINER = ("d_in", "hook_name", "model_name")


@dataclasses.dataclass
class ModelConfig:
    name: str = "tiny"
    """What load_model takes: 'tiny' (the embedded model), a local HF directory, or a hub id."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute dtype of the model forward; activations reach the buffer in this dtype."""


@dataclasses.dataclass
class OptimConfig:
    lr: float = 4e-4
    """Peak learning rate (Adam)."""
    warmup_steps: int = 100
    """Linear warmup from 0 to `lr` over this many steps."""
    decay: Literal["constant", "cosine", "linear"] = "constant"
    """LR shape after warmup: constant, or cosine / linear decay to `lr * final_lr_ratio` at the last step."""
    decay_steps: int | None = None
    """Decay over the last this-many steps (before that the LR is constant). Null: all steps after warmup."""
    final_lr_ratio: float = 0.0
    """LR at the last step, as a fraction of `lr` (cosine / linear decay)."""
    b1: float = 0.9
    """Adam beta1."""
    b2: float = 0.999
    """Adam beta2."""
    eps: float = 1e-8
    """Adam epsilon."""
    clip_norm: float | None = 1.0
    """Clip each SAE's gradient to this global norm (null: no clipping)."""

    def __post_init__(self):
        if not self.lr > 0:
            raise UserError(f"optim.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0 or (self.decay_steps is not None and self.decay_steps < 1):
            raise UserError("optim.warmup_steps must be >= 0 and optim.decay_steps >= 1")
        if not 0 <= self.final_lr_ratio <= 1:
            raise UserError(f"optim.final_lr_ratio must be in [0, 1], got {self.final_lr_ratio}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise UserError(f"optim.clip_norm must be > 0 or null, got {self.clip_norm}")


def _sae_field(name: str, default: Any = dataclasses.MISSING) -> Any:
    """A variant field mirroring `SAEConfig`'s field ``name``: its default (unless given) and its help text."""
    field = next(f for f in dataclasses.fields(SAEConfig) if f.name == name)
    default = field.default if default is dataclasses.MISSING else default
    return dataclasses.field(default=default, metadata={"help": field_docs(SAEConfig).get(name, "")})


@dataclasses.dataclass
class SAEVariantConfig:
    """One SAE variant: SAEConfig's fields (minus d_in, hook_name, model_name) plus name, hooks, implementation
    and optim.

    The SAEConfig fields are written out (so type checkers and editors see them) but take their default and
    help from SAEConfig; ``tests/train/test_variant_config.py`` fails when the two lists drift apart. Values
    are checked where `sae_config` builds the SAEConfig (`train.plan.make_plan` names the variant).
    """

    name: str | None = None
    """Variant name: the SAE folder is saes/<hook>__<name>. Null: derived from architecture, k and width
    (e.g. topk-k32-512)."""
    hooks: list[str] | None = None
    """Hook points of this variant (names, SAELens aliases or globs). Null: the top-level `hooks`."""
    implementation: Literal["auto", "pallas", "xla", "approx"] = "auto"
    """TopK kernel: auto (Pallas on TPU/GPU, XLA on CPU), pallas, xla, approx (lax.approx_max_k)."""
    architecture: str = _sae_field("architecture", default="topk")
    d_sae: int | None = _sae_field("d_sae")
    expansion_factor: int | None = _sae_field("expansion_factor")
    k: int | None = _sae_field("k")
    apply_b_dec_to_input: bool = _sae_field("apply_b_dec_to_input")
    normalize_activations: bool | None = _sae_field("normalize_activations")
    dtype: str = _sae_field("dtype")
    normalize_decoder: bool | None = _sae_field("normalize_decoder")
    decoder_init_norm: float | None = _sae_field("decoder_init_norm")
    encoder_init_norm: float | None = _sae_field("encoder_init_norm")
    b_dec_init: str = _sae_field("b_dec_init")
    k_aux: int | None = _sae_field("k_aux")
    aux_coefficient: float = _sae_field("aux_coefficient")
    dead_tokens_threshold: int = _sae_field("dead_tokens_threshold")
    batchtopk_threshold_lr: float = _sae_field("batchtopk_threshold_lr")
    l1_coefficient: float = _sae_field("l1_coefficient")
    l0_coefficient: float = _sae_field("l0_coefficient")
    jumprelu_bandwidth: float = _sae_field("jumprelu_bandwidth")
    jumprelu_init_threshold: float = _sae_field("jumprelu_init_threshold")
    pre_act_loss_coefficient: float = _sae_field("pre_act_loss_coefficient")
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    """Optimizer of this variant (each SAE has its own state)."""

    def sae_config(self, d_in: int, hook_name: str, model_name: str) -> SAEConfig:
        """This variant's `SAEConfig` for one hook (validated there: a bad value raises `UserError`)."""
        return SAEConfig(d_in=d_in, hook_name=hook_name, model_name=model_name,
                         **{f.name: getattr(self, f.name) for f in dataclasses.fields(SAEConfig)
                            if f.name not in SET_BY_TRAINER})


@dataclasses.dataclass
class FilterConfig:
    special_tokens: bool = True
    """Drop positions holding special tokens (<|endoftext|>, <|im_start|>, <|im_end|>, BOS, ...)."""
    first_position: bool = True
    """Drop the first position of every sequence (attention-sink activations with huge norms)."""
    norm_outlier_factor: float | None = 10.0
    """Drop a position when its norm at any hook exceeds this factor times that hook's running median norm.
    Null: off. (NaN/inf activations are always dropped.)"""


@dataclasses.dataclass
class BufferConfig:
    size: int = 16384
    """Activations per hook held in the on-device mixing buffer. When full it is shuffled and half of it
    becomes training batches, then it is refilled. A multiple of 2 * train.batch_size."""
    init_sample: int = 4096
    """Activations per hook (from the first full buffer) used to initialise b_dec and the input scale."""


@dataclasses.dataclass
class CacheConfig:
    mode: Literal["off", "write", "read"] = "off"
    """off; write: also save the filtered activations to `dir` while training from the model; read: train
    from the activations in `dir` instead of running the model."""
    dir: str | None = None
    """Activation cache folder: manifest.json + process_NNNNN/<hook>/shard_NNNNN.npy ([rows, d_model] arrays; one
    folder per writing process, docs/training.md)."""
    shard_rows: int = 65536
    """Rows per .npy shard when writing."""


@dataclasses.dataclass
class LoopConfig:
    total_tokens: int = 1_000_000
    """Activations (tokens) each SAE trains on; steps = total_tokens // batch_size."""
    batch_size: int = 1024
    """Activations per SAE step, over all devices (a multiple of the `data` mesh axis)."""
    seed: int = 0
    """Seed of SAE initialisation and of the buffer shuffles."""


@dataclasses.dataclass
class EvalConfig:
    holdout_every: int = 20
    """Hold out every N-th document (not trained on) for the final table. 0: no held-out documents."""
    tokens: int = 16384
    """Held-out activations (after filtering) used for the final per-SAE table."""


@dataclasses.dataclass
class CheckpointConfig:
    every: int = 500
    """Save a checkpoint every N steps (also at the end, and on SIGTERM/SIGINT). 0: only those."""
    keep: int = 2
    """Keep the last N checkpoints."""
    async_save: bool = True
    """Write checkpoints in the background while training goes on."""


@dataclasses.dataclass
class LogConfig:
    every: int = 50
    """Log metrics every N steps (metrics.jsonl, progress line, wandb / tensorboard)."""
    progress: Literal["auto", "bar", "lines"] = "auto"
    """auto: a tqdm bar with ETA on a terminal, plain lines otherwise."""
    wandb: bool = False
    """Also log to Weights & Biases (needs the wandb package)."""
    wandb_project: str = "qwen-sae"
    """wandb project name."""
    tensorboard: bool = False
    """Also write tensorboard event files to RUN_DIR/tensorboard (needs tensorboardX or torch)."""


@dataclasses.dataclass
class MeshConfig:
    data: int = -1
    """Devices on the `data` axis (activation batch). -1: all devices not used by `model`."""
    model: int = 1
    """Devices on the `model` axis (each SAE's latent dimension d_sae is split over it)."""
    rules: dict[str, str | None] = dataclasses.field(default_factory=lambda: dict(DEFAULT_RULES))
    """Logical axis -> mesh axis ('data', 'model', or null: replicated) for every partition rule: the language
    model's parameters, the SAE state, activation batches and logits. Logical axes: batch (rows of token and
    activation batches), embed (d_model of parameters; 'data' = FSDP), vocab, heads (query heads, Gated
    DeltaNet channels), kv_heads, mlp (MLP and expert width), expert (MoE experts; 'model' = expert parallel,
    null = each expert split by mlp instead), latent (SAE latents d_sae). Set one with e.g.
    mesh.rules.expert=data; names left out keep their default. A mesh axis taken by an earlier dimension of
    the same array, or one that does not divide the dimension, is left out (that dimension is replicated)."""

    def __post_init__(self):
        self.rules = check_rules(self.rules, "mesh.rules")


@dataclasses.dataclass
class DistributedConfig:
    initialize: Literal["auto", "yes", "no"] = "auto"
    """Call jax.distributed.initialize: auto = when a coordinator is given or a cluster (TPU pod, SLURM,
    Open MPI) is detected; yes = always (arguments auto-detected if not given); no = never."""
    coordinator: str | None = None
    """host:port of process 0 (e.g. 10.0.0.2:1234)."""
    num_processes: int | None = None
    """Total number of processes."""
    process_id: int | None = None
    """Index of this process (0 .. num_processes-1)."""


def _default_saes():
    return [SAEVariantConfig(architecture="topk", k=32, expansion_factor=8)]


@dataclasses.dataclass
class TrainConfig:
    run_dir: str = "runs/run"
    """Output folder: config.yaml, metrics.jsonl, checkpoints/, saes/, summary.json."""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    """The language model whose activations are trained on."""
    hooks: list[str] = dataclasses.field(default_factory=lambda: ["blocks.*.hook_resid_post"])
    """Hook points (names, SAELens aliases, globs: 'layers.*.mlp', 'blocks.*.hook_resid_post') for every
    variant that does not list its own. Note 'layers.*' matches every hook of every layer."""
    saes: list[SAEVariantConfig] = dataclasses.field(default_factory=_default_saes)
    """SAE variants; each is trained on each of its hooks (one SAE per hook x variant)."""
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    """Text source, tokenisation and packing."""
    filter: FilterConfig = dataclasses.field(default_factory=FilterConfig)
    """Which activations are dropped before training."""
    buffer: BufferConfig = dataclasses.field(default_factory=BufferConfig)
    """On-device mixing buffer."""
    cache: CacheConfig = dataclasses.field(default_factory=CacheConfig)
    """Optional on-disk activation cache."""
    train: LoopConfig = dataclasses.field(default_factory=LoopConfig)
    """Length, batch and seed of the training loop."""
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    """The final per-SAE table (summary.json)."""
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    """Orbax checkpoints in RUN_DIR/checkpoints."""
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    """Logging."""
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    """Device mesh ('data', 'model')."""
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    """Multi-host (multi-process) set-up."""

    def __post_init__(self):
        if not self.saes:
            raise UserError("saes: at least one SAE variant is needed")
        if self.train.batch_size < 1 or self.train.total_tokens < self.train.batch_size:
            raise UserError(f"train.total_tokens ({self.train.total_tokens}) must be >= train.batch_size "
                            f"({self.train.batch_size}) >= 1")
        if self.buffer.size % (2 * self.train.batch_size):
            raise UserError(f"buffer.size={self.buffer.size} must be a multiple of 2 * train.batch_size "
                            f"({2 * self.train.batch_size}): half the buffer is emitted as whole batches")
        if not 0 < self.buffer.init_sample:
            raise UserError("buffer.init_sample must be >= 1")
        if self.cache.mode != "off" and not self.cache.dir:
            raise UserError(f"cache.mode={self.cache.mode} needs cache.dir")
        if self.filter.norm_outlier_factor is not None and not self.filter.norm_outlier_factor > 1:
            raise UserError(f"filter.norm_outlier_factor must be > 1 or null, got {self.filter.norm_outlier_factor}")
        if self.checkpoint.keep < 1 or self.checkpoint.every < 0 or self.log.every < 1:
            raise UserError("checkpoint.keep >= 1, checkpoint.every >= 0 and log.every >= 1 are required")
        if self.eval.holdout_every == 1:
            raise UserError("eval.holdout_every=1 would hold out every document; use 0 (none) or >= 2")

    @property
    def total_steps(self) -> int:
        return self.train.total_tokens // self.train.batch_size
