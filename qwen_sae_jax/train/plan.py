"""The training plan: which SAEs a `TrainConfig` trains on which model, checked without running anything.

SAEs of one variant form a *group*: they share an `SAEConfig` (up to ``hook_name``), so their parameters
are stacked on a leading axis and updated by one loop inside the compiled step (one compiled body per
variant however many hooks; the loop keeps one SAE's temporaries alive at a time).

`make_plan` needs only the model's layer count and width, so configs for full-size models are validated
from their ``config.json`` alone (``tests/train/test_configs.py``).
"""
from __future__ import annotations

import dataclasses
import re

from qwen_sae_jax import hooks as hook_names_mod
from qwen_sae_jax.errors import UserError
from qwen_sae_jax.sae.config import SAEConfig
from qwen_sae_jax.train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Group:
    """One variant trained on several hooks."""

    name: str                   # variant name (folder suffix)
    variant_index: int          # index in TrainConfig.saes
    cfg: SAEConfig              # shared config (hook_name = "")
    hooks: tuple[str, ...]      # canonical hook names, in forward order
    rows: tuple[int, ...]       # index of each hook in Plan.hooks (its row of the stacked activations)

    def sae_config(self, hook: str) -> SAEConfig:
        return self.cfg.replace(hook_name=hook)

    def folder(self, hook: str) -> str:
        return f"{hook}__{self.name}"


@dataclasses.dataclass(frozen=True)
class Plan:
    hooks: tuple[str, ...]      # every hook captured (union over variants), forward order
    d_in: int
    groups: tuple[Group, ...]
    layer_kinds: tuple[str, ...] = ()   # per model layer "full" or "linear" (hooks.layer_kinds)

    @property
    def num_saes(self) -> int:
        return sum(len(g.hooks) for g in self.groups)

    def sae_folders(self) -> list[str]:
        return [g.folder(h) for g in self.groups for h in g.hooks]


def default_variant_name(cfg: SAEConfig) -> str:
    name = cfg.architecture
    if cfg.k is not None:
        name += f"-k{cfg.k}"
    return f"{name}-{cfg.d_sae}"


_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def make_plan(cfg: TrainConfig, num_layers: hook_names_mod.Layers, d_in: int, model_axis: int = 1) -> Plan:
    """Resolve hooks and variants against a model with ``num_layers`` layers of width ``d_in``: the model config's
    ``mixers`` (per layer its token mixer, so ``blocks.N.hook_attn_out`` resolves to the mixer layer N has), or a
    count of full-attention layers.

    Raises UserError for unknown hooks, invalid SAE settings, duplicate names, or a ``d_sae`` that the
    ``model`` mesh axis does not divide."""
    all_hooks = set()
    groups = []
    seen_names: dict[str, int] = {}
    for i, variant in enumerate(cfg.saes):
        where = f"saes.{i}"
        patterns = variant.hooks if variant.hooks is not None else cfg.hooks
        if not patterns:
            raise UserError(f"{where}: no hooks (set {where}.hooks or the top-level hooks)")
        try:
            hooks = hook_names_mod.resolve_hooks(patterns, num_layers)
        except UserError as err:
            raise UserError(f"{where}.hooks: {err}") from None
        try:
            sae_cfg = variant.sae_config(d_in=d_in, hook_name="", model_name=cfg.model.name)
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
        name = variant.name or default_variant_name(sae_cfg)
        if not _SAFE.match(name):
            raise UserError(f"{where}.name={name!r}: use letters, digits and . _ + - only (it names a folder)")
        if name in seen_names:
            raise UserError(f"saes.{seen_names[name]} and {where} are both named {name!r}; give them distinct names")
        seen_names[name] = i
        if sae_cfg.d_sae % model_axis:
            raise UserError(f"{where}: d_sae={sae_cfg.d_sae} is not divisible by the 'model' mesh axis "
                            f"({model_axis} devices); choose mesh.model dividing it")
        all_hooks.update(hooks)
        groups.append((name, i, sae_cfg, tuple(hooks)))
    ordered = tuple(h for h in hook_names_mod.hook_names(num_layers) if h in all_hooks)
    row = {h: r for r, h in enumerate(ordered)}
    return Plan(hooks=ordered, d_in=d_in, groups=tuple(
        Group(name, i, c, hooks, tuple(row[h] for h in hooks)) for name, i, c, hooks in groups),
        layer_kinds=hook_names_mod.layer_kinds(num_layers))
