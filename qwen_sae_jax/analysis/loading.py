"""Loading what the analysis commands work on: SAEs from any supported location (a run directory, a native /
SAELens / sparsify folder, a Qwen-Scope file) and the model they belong to.

The model is, in order: the one given, the run directory's ``config.yaml`` ``model.name``, or the SAEs'
own ``cfg.model_name``.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Sequence

from qwen_sae_jax.errors import UserError, did_you_mean


def run_config(path: str | Path):
    """The `TrainConfig` of a run directory, or None when ``path`` is not one."""
    path = Path(path)
    if not (path / "config.yaml").is_file() or not (path / "saes").is_dir():
        return None
    from qwen_sae_jax.config import load_config
    from qwen_sae_jax.train.config import TrainConfig

    return load_config(TrainConfig, path / "config.yaml")


def _hook_and_alias(hook_name: str) -> tuple[str, ...]:
    """A hook name and its SAELens-style alias (``layers.0.linear_attn`` -> ``blocks.0.hook_attn_out``); only the
    name when it is neither form."""
    from qwen_sae_jax.hooks import alias_of

    try:
        return hook_name, alias_of(hook_name)
    except UserError:
        return (hook_name,)


def select_saes(saes: dict, patterns: Sequence[str] | None) -> dict:
    """The SAEs whose name, canonical hook name or its SAELens-style alias (``blocks.N.hook_resid_post``, ...)
    matches one of the glob ``patterns`` (all when None). A pattern that matches nothing is a UserError naming the
    SAEs and hooks there are."""
    if not patterns:
        return dict(saes)
    chosen, bad = {}, []
    for pattern in patterns:
        hits = [n for n, s in saes.items()
                if fnmatch.fnmatchcase(n, pattern)
                or any(fnmatch.fnmatchcase(h, pattern) for h in _hook_and_alias(s.cfg.hook_name))]
        if not hits:
            valid = list(saes) + [s.cfg.hook_name for s in saes.values()]
            bad.append(f"{pattern!r}{did_you_mean(pattern, valid)}")
        chosen.update({n: saes[n] for n in hits})
    if bad:
        hooks = sorted({s.cfg.hook_name for s in saes.values()})
        raise UserError(f"no SAE for {', '.join(bad)}; SAEs here: {', '.join(saes)} (hooks: {', '.join(hooks)})")
    return {n: s for n, s in saes.items() if n in chosen}


def model_name_for(path: str | Path, saes: dict, model: str | None) -> str:
    if model:
        return model
    cfg = run_config(path)
    if cfg is not None:
        return cfg.model.name
    names = sorted({s.cfg.model_name for s in saes.values() if s.cfg.model_name})
    if len(names) == 1:
        return names[0]
    if not names:
        raise UserError(f"the SAE(s) at {path} do not record which model they belong to; pass --model "
                        "('tiny', a local HF directory or a hub id)")
    raise UserError(f"the SAEs at {path} belong to different models ({', '.join(names)}); pass --model")


def _with_model(path: str, saes: dict, model: str | None, dtype: str):
    from qwen_sae_jax.analysis.collect import check_saes_fit
    from qwen_sae_jax.lm import load_model

    lm = load_model(model_name_for(path, saes, model), dtype=dtype)
    check_saes_fit(lm, saes)
    return lm, saes


def load_model_and_saes(path: str, patterns: Sequence[str] | None = None, model: str | None = None,
                        dtype: str = "float32"):
    """``(lm, {name: SAE})`` for the SAEs at ``path`` matching ``patterns``, checked against the model."""
    from qwen_sae_jax.interop.load import load_saes

    return _with_model(path, select_saes(load_saes(path), patterns), model, dtype)


def load_model_and_sae(path: str, hook: str | None = None, model: str | None = None, dtype: str = "float32"):
    """``(lm, name, SAE)`` for exactly one SAE at ``path`` (``hook``: its name, hook name or a glob)."""
    from qwen_sae_jax.interop.load import load_saes

    saes = select_saes(load_saes(path), [hook] if hook else None)
    if len(saes) != 1:
        raise UserError(f"{path} holds {len(saes)} SAEs{' matching ' + repr(hook) if hook else ''}; choose one "
                        f"with --hook: {', '.join(saes)}")
    lm, saes = _with_model(path, saes, model, dtype)
    name, sae = next(iter(saes.items()))
    return lm, name, sae
