"""`RLConfig`: a GRPO run with repetition rewards, loaded from YAML (``qwen-sae rl CONFIG.yaml key=value ...``).

Every field's help text is the docstring under it; ``qwen-sae rl --help`` prints them all. The model, optimizer,
export, checkpoint, log, mesh and distributed sections are the SFT command's (`posttrain.config`), so they mean
the same in both commands.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from qwen_sae_jax.data.text import TextSourceConfig
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.posttrain.config import ExportConfig, SFTModelConfig, SFTOptimConfig, check_run_sections
from qwen_sae_jax.train.config import CheckpointConfig, DistributedConfig, LogConfig, MeshConfig


@dataclasses.dataclass
class RLPromptConfig(TextSourceConfig):
    """The prompts rollouts start from: one text per row of `text_column`."""

    text_column: str = "prompt"
    """Column (or JSON key) holding each prompt's text."""
    chat: bool = True
    """Render each prompt as one user turn with the model's chat template (generation prompt appended); false:
    the prompt is raw text the model continues."""
    text_unit: Literal["document", "paragraph", "line"] = "line"
    """How a plain text file is cut into prompts: whole file, blank-line separated paragraphs, or lines."""
    max_prompt_len: int = 64
    """Tokens kept of a longer prompt (see `keep`); prompts are left-padded to the longest."""
    keep: Literal["last", "first"] = "last"
    """Which tokens of a longer prompt are kept: the last (the chat generation prompt stays at the end) or the
    first (raw-text documents, chat false: the model continues their opening)."""
    seed: int = 0
    """Seed of the prompt order (a new permutation every epoch)."""

    def __post_init__(self):
        if self.max_prompt_len < 1:
            raise UserError(f"prompts.max_prompt_len must be >= 1, got {self.max_prompt_len}")


@dataclasses.dataclass
class RolloutConfig:
    group_size: int = 4
    """G: responses sampled per prompt; rewards are normalised within each group (>= 2)."""
    prompts_per_step: int = 4
    """Prompts per step; the rollout batch is prompts_per_step x group_size (a multiple of the 'data' axis)."""
    max_new_tokens: int = 48
    """Response length limit in tokens (a response also ends at the model's stop tokens)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (> 0)."""
    top_p: float = 1.0
    """Nucleus sampling mass of the rollouts, in (0, 1]."""
    seed: int = 0
    """Seed of the rollout sampling (step s samples with key fold_in(seed, s): a resumed run redraws the same)."""

    def __post_init__(self):
        if self.group_size < 2:
            raise UserError(f"rollout.group_size must be >= 2 (GRPO normalises rewards within a group of "
                            f"responses to the same prompt), got {self.group_size}")
        if self.prompts_per_step < 1 or self.max_new_tokens < 1:
            raise UserError("rollout.prompts_per_step and rollout.max_new_tokens must be >= 1, got "
                            f"{self.prompts_per_step} and {self.max_new_tokens}")
        if not self.temperature > 0:
            raise UserError(f"rollout.temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"rollout.top_p must be in (0, 1], got {self.top_p}")

    @property
    def batch_size(self) -> int:
        return self.prompts_per_step * self.group_size


@dataclasses.dataclass
class GRPOConfig:
    clip_eps: float = 0.2
    """PPO ratio clipping: the ratio pi / pi_old is clipped to [1 - clip_eps, 1 + clip_eps]."""
    kl_coef: float = 0.04
    """beta: weight of the KL penalty to the frozen reference model (k3 estimator), >= 0."""
    updates_per_rollout: int = 1
    """mu: optimizer updates on each rollout batch (the ratio moves away from 1 after the first)."""
    adv_eps: float = 1e-4
    """eps of the advantages (r - mean_group) / (std_group + eps)."""
    aggregate: Literal["token", "sequence"] = "token"
    """Loss mean: token (over every response token of the batch) or sequence (per response, then over them)."""
    reference: str | None = None
    """The frozen reference model (what load_model takes). Null: model.name, the starting point."""

    def __post_init__(self):
        if not self.clip_eps > 0 or not self.kl_coef >= 0 or not self.adv_eps > 0:
            raise UserError(f"grpo.clip_eps > 0, grpo.kl_coef >= 0 and grpo.adv_eps > 0 are required, got "
                            f"{self.clip_eps}, {self.kl_coef}, {self.adv_eps}")
        if self.updates_per_rollout < 1:
            raise UserError(f"grpo.updates_per_rollout must be >= 1, got {self.updates_per_rollout}")


@dataclasses.dataclass
class RepetitionRewardConfig:
    coefficient: float = 1.0
    """Weight of the text repetition penalty: reward -= coefficient * (fraction of repeated n-grams)."""
    n: int = 4
    """n of the n-grams."""
    unit: Literal["token", "word", "char"] = "token"
    """What an n-gram is made of: the response's tokens, its whitespace-separated words, or its characters."""


@dataclasses.dataclass
class SAERewardConfig:
    coefficient: float = 0.0
    """Weight of the SAE penalty: reward -= coefficient * (activation of the features file's features)."""
    features: str | None = None
    """Features file of (hook, feature) pairs (JSON {"features": [{"hook", "feature"}, ...]}, docs/posttrain.md),
    e.g. repetition features found by `qwen-sae contrast` between repetitive and non-repetitive generations."""
    saes: list[str] = dataclasses.field(default_factory=list)
    """SAE paths (anything load_sae reads); each SAE serves the features of its own hook."""
    reduce: Literal["mean", "sum"] = "mean"
    """Over the response tokens: mean or sum of the summed feature activations."""


@dataclasses.dataclass
class RewardConfig:
    """reward = -(repetition.coefficient * repetition + sae.coefficient * sae_penalty); either term may be 0."""

    repetition: RepetitionRewardConfig = dataclasses.field(default_factory=RepetitionRewardConfig)
    """The text-level repetition score of each response."""
    sae: SAERewardConfig = dataclasses.field(default_factory=SAERewardConfig)
    """The SAE-derived term: features' activations in the policy's own forward pass."""

    def __post_init__(self):
        rep, sae = self.repetition, self.sae
        if not rep.coefficient >= 0 or not sae.coefficient >= 0:
            raise UserError(f"reward coefficients must be >= 0, got reward.repetition.coefficient="
                            f"{rep.coefficient} and reward.sae.coefficient={sae.coefficient}")
        if rep.coefficient == 0 and sae.coefficient == 0:
            raise UserError("every reward coefficient is 0 (reward.repetition.coefficient, reward.sae.coefficient): "
                            "there is nothing to optimise")
        if rep.n < 1:
            raise UserError(f"reward.repetition.n must be >= 1, got {rep.n}")
        if sae.coefficient > 0 and sae.features is None:
            raise UserError("reward.sae.coefficient > 0 needs reward.sae.features (and reward.sae.saes)")
        if sae.features is not None and not sae.saes:
            raise UserError("reward.sae.features is set but reward.sae.saes is empty: name the SAE(s) the features "
                            "belong to")


@dataclasses.dataclass
class RLOptimConfig(SFTOptimConfig):
    """SFT's AdamW, with an RL-sized default learning rate."""

    lr: float = 1e-6
    """Peak learning rate (AdamW)."""


@dataclasses.dataclass
class RLLoopConfig:
    steps: int = 100
    """Steps; each samples one rollout batch and makes grpo.updates_per_rollout optimizer updates on it."""
    remat: Literal["none", "layers", "dots", "dots_no_batch", "full"] = "none"
    """Gradient checkpointing in the update (as for sft): none; layers: each decoder layer is one jax.checkpoint
    (recomputed from its input in the backward); dots / dots_no_batch / full: one jax.checkpoint with that
    policy around the whole forward."""

    def __post_init__(self):
        if self.steps < 1:
            raise UserError(f"train.steps must be >= 1, got {self.steps}")


@dataclasses.dataclass
class RLConfig:
    run_dir: str = "runs/rl"
    """Output folder: config.yaml, metrics.jsonl, checkpoints/, hf/."""
    model: SFTModelConfig = dataclasses.field(default_factory=SFTModelConfig)
    """The policy's starting point (every parameter is trained)."""
    prompts: RLPromptConfig = dataclasses.field(default_factory=RLPromptConfig)
    """Prompts."""
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)
    """Sampling the groups of responses."""
    grpo: GRPOConfig = dataclasses.field(default_factory=GRPOConfig)
    """The clipped policy-gradient loss and its KL penalty."""
    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
    """Reward terms and their coefficients."""
    optim: RLOptimConfig = dataclasses.field(default_factory=RLOptimConfig)
    """AdamW with warmup / decay and gradient clipping (the schedule counts optimizer updates)."""
    train: RLLoopConfig = dataclasses.field(default_factory=RLLoopConfig)
    """Steps and gradient checkpointing."""
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    """HF export of the result."""
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    """Orbax checkpoints in RUN_DIR/checkpoints."""
    log: LogConfig = dataclasses.field(default_factory=LogConfig)
    """Logging."""
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    """Device mesh ('data', 'model'): rollout rows over data; parameters as load_model places them."""
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
    """Multi-host (multi-process) set-up."""

    def __post_init__(self):
        check_run_sections(self.checkpoint, self.log)
