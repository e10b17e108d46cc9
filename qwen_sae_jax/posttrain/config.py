"""`SFTConfig`: a fine-tuning run, loaded from YAML (``qwen-sae sft CONFIG.yaml key=value ...``).

Every field's help text is the docstring under it; ``qwen-sae sft --help`` prints them all. Checkpoint, log,
mesh and distributed sections are the SAE trainer's own classes (`qwen_sae_jax.train.config`), so they mean
the same in both commands.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from qwen_sae_jax.data.text import TextSourceConfig
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.train.config import CheckpointConfig, DistributedConfig, LogConfig, MeshConfig, OptimConfig

REMAT_POLICIES = ("none", "dots", "dots_no_batch", "full")


@dataclasses.dataclass
class SFTModelConfig:
    name: str = "tiny"
    """What load_model takes: 'tiny' (the embedded model), a local HF directory, or a hub id."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute dtype of the forward and backward passes."""
    param_dtype: Literal["float32", "bfloat16"] = "float32"
    """Storage dtype of the parameters and of the AdamW moments (float32 + dtype bfloat16 = mixed precision)."""


@dataclasses.dataclass
class SFTDataConfig(TextSourceConfig):
    """Chat conversations: `text_column` holds a list of {role, content} messages per row."""

    text_column: str = "messages"
    """Column (or JSON key) holding each conversation's message list."""
    chat: bool = True
    """Always true for SFT (conversations are rendered with the model's chat template)."""
    max_len: int = 256
    """Tokens per training sequence: longer conversations are cut at the end, shorter ones padded."""
    language_column: str | None = None
    """SASFT only: column holding each conversation's reply language (a name from the features file). Null:
    detected from the reply's script (zh when CJK ideographs are at least half of its letters, else en)."""
    seed: int = 0
    """Seed of the example order (a new permutation every epoch)."""

    def __post_init__(self):
        if not self.chat:
            raise UserError("data.chat must be true for SFT: conversations are rendered with the chat template")
        if self.max_len < 2:
            raise UserError(f"data.max_len must be >= 2, got {self.max_len}")


@dataclasses.dataclass
class SFTOptimConfig(OptimConfig):
    """AdamW: the SAE optimizer's schedule, clipping and moments, plus decoupled weight decay."""

    lr: float = 2e-5
    """Peak learning rate (AdamW)."""
    warmup_steps: int = 10
    """Linear warmup from 0 to `lr` over this many steps."""
    decay: Literal["constant", "cosine", "linear"] = "cosine"
    """LR shape after warmup: constant, or cosine / linear decay to `lr * final_lr_ratio` at the last step."""
    clip_norm: float | None = 1.0
    """Clip the gradient of all parameters together to this global norm (null: no clipping)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (applied to every parameter)."""

    def __post_init__(self):
        super().__post_init__()
        if self.weight_decay < 0:
            raise UserError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")


@dataclasses.dataclass
class SFTLoopConfig:
    steps: int = 100
    """Optimizer steps."""
    batch_size: int = 8
    """Conversations per step, over all devices (a multiple of the `data` mesh axis)."""
    remat: Literal["none", "layers", "dots", "dots_no_batch", "full"] = "none"
    """Gradient checkpointing: none; layers: every decoder layer is one jax.checkpoint (nn.remat), the backward
    keeps only each layer's input and output and recomputes inside the layer (the per-layer saving; captured
    SASFT activations leave the layer as its outputs); dots / dots_no_batch / full: one jax.checkpoint around
    the whole forward with a policy (dots: keep every matmul output, recompute the rest; dots_no_batch: keep
    only weight matmuls, not attention scores; full: keep nothing)."""

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise UserError(f"train.steps and train.batch_size must be >= 1, got {self.steps} and {self.batch_size}")


@dataclasses.dataclass
class SASFTConfig:
    features: str | None = None
    """Language features file (JSON, see docs/posttrain.md). Null: plain SFT, no SASFT term."""
    saes: list[str] = dataclasses.field(default_factory=list)
    """SAE paths (anything load_sae reads); each SAE serves the features of its own hook."""
    coefficient: float = 0.0
    """lambda: weight of the SASFT term in the loss (>= 0)."""
    variant: Literal["diff-threshold", "zero-threshold"] = "diff-threshold"
    """diff-threshold: penalise pre-activations above tau(f, reply language); zero-threshold: above 0."""
    layers: list[str] | None = None
    """Hooks whose features are used (a subset of the features file's hooks). Null: all of them."""
    tau_files: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """language -> text files (.jsonl `text` / plain lines) to compute tau from when the features file has none."""
    tau_tokens: int = 65536
    """At most this many tokens per language for tau."""

    def __post_init__(self):
        if not self.coefficient >= 0:
            raise UserError(f"sasft.coefficient (lambda) must be >= 0, got {self.coefficient}")
        if self.tau_tokens < 1:
            raise UserError(f"sasft.tau_tokens must be >= 1, got {self.tau_tokens}")

    @property
    def enabled(self) -> bool:
        return self.features is not None


@dataclasses.dataclass
class ExportConfig:
    hf: bool = True
    """Write the fine-tuned model as an HF folder RUN_DIR/hf (config, safetensors, tokenizer) at the end."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Tensor dtype of the export; auto: the parameters' storage dtype."""


def check_run_sections(checkpoint: CheckpointConfig, log: LogConfig) -> None:
    """The checks every post-training config makes of its checkpoint and log sections."""
    if checkpoint.keep < 1 or checkpoint.every < 0 or log.every < 1:
        raise UserError("checkpoint.keep >= 1, checkpoint.every >= 0 and log.every >= 1 are required")


@dataclasses.dataclass
class SFTConfig:
    run_dir: str = "runs/sft"
    """Output folder: config.yaml, metrics.jsonl, checkpoints/, hf/."""
    model: SFTModelConfig = dataclasses.field(default_factory=SFTModelConfig)
    """The model to fine-tune (every parameter is trained)."""
    data: SFTDataConfig = dataclasses.field(default_factory=SFTDataConfig)
    """Chat data."""
    optim: SFTOptimConfig = dataclasses.field(default_factory=SFTOptimConfig)
    """AdamW with warmup / decay and gradient clipping."""
    train: SFTLoopConfig = dataclasses.field(default_factory=SFTLoopConfig)
    """Steps, batch and gradient checkpointing."""
    sasft: SASFTConfig = dataclasses.field(default_factory=SASFTConfig)
    """SAE-guided SFT against unexpected code-switching (off unless sasft.features is set)."""
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    """HF export of the result."""
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    """Orbax checkpoints in RUN_DIR/checkpoints."""
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    """Logging."""
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    """Device mesh ('data', 'model'): batch over data; parameters as load_model places them."""
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    """Multi-host (multi-process) set-up."""

    def __post_init__(self):
        check_run_sections(self.checkpoint, self.log)
        if self.sasft.enabled and not self.sasft.saes:
            raise UserError("sasft.features is set but sasft.saes is empty: name the SAE(s) the features belong to")
