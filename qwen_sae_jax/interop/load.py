"""`load_sae(path, format=None)`: read an SAE in any supported format into the JAX `SAE` pytree.

Formats and how they are recognised (``format=None``):

    native      folder with cfg.json (our SAEConfig + format_version) and sae.safetensors (W_enc, ...)
    saelens     folder with cfg.json and sae_weights.safetensors
    sparsify    folder with cfg.json and sae.safetensors holding encoder.weight
    qwen-scope  a layer{N}.sae.pt file

A folder of such SAEs (a training run directory with saes/, a sparsify repository with one folder per
hook point, a multi-SAE SAELens export, a Qwen-Scope folder of layer files) is a collection:
`load_saes` returns all of it, `load_sae` one member chosen with ``hook=`` (the member folder name, or
its canonical / TransformerLens hook name) or ``layer=`` (Qwen-Scope: ``layer{N}.sae.pt``).

A ``path`` that is no existing file or folder but looks like a Hugging Face repo id (``owner/name``) is
loaded from the hub (`qwen_sae_jax.interop.hub`: only the chosen SAE's files are downloaded, into the HF
cache; ``HF_HUB_OFFLINE=1`` resolves from the cache only); ``revision=`` picks a branch, tag or commit.
A local path always wins over a repo id of the same name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from qwen_sae_jax.errors import UserError, did_you_mean
from qwen_sae_jax.interop import qwen_scope, saelens, sparsify
from qwen_sae_jax.interop.hook_names import from_transformer_lens

FORMATS = ("native", "saelens", "sparsify", "qwen-scope")
NATIVE_CFG = "cfg.json"
NATIVE_WEIGHTS = "sae.safetensors"


def _safetensors_keys(path: Path) -> list[str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return list(f.keys())
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from None


def detect_format(path: str | os.PathLike) -> str | None:
    """The format of the single SAE at ``path`` (a file or folder), or None if it is not one."""
    path = Path(path)
    if path.is_file():
        return "qwen-scope" if path.name.endswith(".pt") else None
    if not path.is_dir():
        return None
    if saelens.is_saelens_dir(path):
        return "saelens"
    if (path / NATIVE_CFG).is_file() and (path / NATIVE_WEIGHTS).is_file():
        try:
            cfg = json.loads((path / NATIVE_CFG).read_text())
        except (OSError, json.JSONDecodeError):
            cfg = None
        if isinstance(cfg, dict) and "format_version" in cfg:
            return "native"
        if isinstance(cfg, dict) and ("num_latents" in cfg or "activation" in cfg):
            return "sparsify"
        return "sparsify" if "encoder.weight" in _safetensors_keys(path / NATIVE_WEIGHTS) else "native"
    return None


def _check_format(format: str | None) -> None:
    if format is not None and format not in FORMATS:
        raise UserError(f"unknown SAE format {format!r}{did_you_mean(format, FORMATS)}; valid: {', '.join(FORMATS)}")


def find_saes(path: str | os.PathLike, format: str | None = None) -> dict[str, tuple[Path, str]]:
    """``{name: (location, format)}`` of every SAE at ``path`` (one entry for a single SAE)."""
    _check_format(format)
    path = Path(path)
    if not path.exists():
        raise UserError(f"no such file or folder: {path}")
    found: dict[str, tuple[Path, str]] = {}
    single = detect_format(path)
    if single is None and not path.is_dir():
        raise UserError(f"{path} is a file but not an SAE: expected a native / SAELens / sparsify SAE folder, a "
                        "layer{N}.sae.pt file, or a folder of them (e.g. a run directory with saes/)")
    if single is not None:
        name = f"layers.{qwen_scope.layer_of(path)}" if single == "qwen-scope" else path.name
        found[name] = (path, single)
    else:
        folder = path / "saes" if (path / "saes").is_dir() else path      # a training run directory
        for layer, file in qwen_scope.layer_files(folder).items():
            found[f"layers.{layer}"] = (file, "qwen-scope")
        for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            fmt = detect_format(child)
            if fmt is not None:
                found[child.name] = (child, fmt)
    if format is not None:
        found = {name: v for name, v in found.items() if v[1] == format}
    if not found:
        want = f"{format} " if format else ""
        raise UserError(f"no {want}SAE found at {path}: expected a native / SAELens / sparsify SAE folder, a "
                        "layer{N}.sae.pt file, or a folder of them (e.g. a run directory with saes/)")
    return found


def _load_one(path: Path, fmt: str, *, k: int | None, norm_scaling_factor: float | None):
    if fmt == "native":
        from safetensors import SafetensorError

        from qwen_sae_jax.sae import load_native_sae as load_native

        try:
            return load_native(path)
        except (SafetensorError, OSError) as err:
            raise UserError(f"{path / NATIVE_WEIGHTS} is not a readable safetensors file "
                            f"(truncated or corrupt?): {err}") from None
    from qwen_sae_jax.interop.convert import raw_to_sae

    if fmt == "saelens":
        raw = saelens.read_saelens(path, norm_scaling_factor=norm_scaling_factor)
    elif fmt == "sparsify":
        raw = sparsify.read_sparsify(path)
    else:
        raw = qwen_scope.read_qwen_scope(path, k=k)
    return raw_to_sae(raw)


def hub_repo_id(path: str | os.PathLike, revision: str | None) -> str | None:
    """``path`` as a hub repo id when it names no existing file or folder and looks like ``owner/name``;
    None for a local path (which always wins over a repo id of the same name). A ``revision`` (--revision)
    with anything but a repo id is refused."""
    from qwen_sae_jax.interop import hub

    text = os.fspath(path)
    if not Path(text).exists() and hub.looks_like_repo_id(text):
        return text
    if revision is not None:
        what = "a local path" if Path(text).exists() else "neither an existing path nor a repo id"
        raise UserError(f"revision={revision!r} (--revision) is for Hugging Face repo ids ('owner/name'); "
                        f"{text!r} is {what}")
    return None


def load_saes(path: str | os.PathLike, format: str | None = None, *, k: int | None = None,
              norm_scaling_factor: float | None = None, revision: str | None = None) -> dict:
    """Every SAE at ``path`` (a local path, or a hub repo id at ``revision``) as ``{name: SAE}`` (see the
    module docstring for names)."""
    repo_id = hub_repo_id(path, revision)
    if repo_id is not None:
        from qwen_sae_jax.interop import hub

        _check_format(format)
        return hub.load_saes_from_hub(repo_id, format, k=k, norm_scaling_factor=norm_scaling_factor,
                                      revision=revision)
    return {name: _load_one(p, fmt, k=k, norm_scaling_factor=norm_scaling_factor)
            for name, (p, fmt) in find_saes(path, format).items()}


def matches_hook(name: str, hook: str) -> bool:
    """Whether collection member ``name`` (e.g. ``layers.1.mlp__topk-k32``, ``blocks.1.hook_mlp_out``) is
    the SAE meant by ``hook`` (its full name, or its hook in canonical or TransformerLens naming)."""
    wanted = {hook, from_transformer_lens(hook)}
    base = name.split("__")[0]
    return bool({name, base, from_transformer_lens(name), from_transformer_lens(base), _alias(base)} & wanted)


def _alias(name: str) -> str | None:
    """The SAELens alias of a canonical hook name (``layers.0.linear_attn`` -> ``blocks.0.hook_attn_out``, the
    alias of whichever mixer a layer has), else None."""
    from qwen_sae_jax.hooks import alias_of

    try:
        return alias_of(name)
    except UserError:
        return None


def load_sae(path: str | os.PathLike, format: str | None = None, *, hook: str | None = None,
             layer: int | None = None, k: int | None = None, norm_scaling_factor: float | None = None,
             revision: str | None = None):
    """Load one SAE as the JAX `SAE` pytree, from any supported format (see the module docstring).

    ``hook`` / ``layer``: which member of a collection. ``k``: TopK k of a Qwen-Scope file when neither
    our ``qwen_scope.json``, the README nor the folder name (``...-L0_50``) says. ``norm_scaling_factor``:
    for SAELens SAEs saved with ``normalize_activations="expected_average_only_in"``.
    ``revision``: branch, tag or commit when ``path`` is a hub repo id (``"Qwen/SAE-Res-...", layer=10``);
    an SAE of a Qwen-Scope release (`releases.RELEASES`) gets the release's backbone as ``cfg.model_name``.
    ``.pt`` files are read with ``torch.load(weights_only=True)``: nothing in them is executed.
    """
    if layer is not None:
        if hook is not None:
            raise UserError("give hook= or layer=, not both")
        hook = f"layers.{int(layer)}"
    repo_id = hub_repo_id(path, revision)
    if repo_id is not None:
        from qwen_sae_jax.interop import hub

        _check_format(format)
        return hub.load_sae_from_hub(repo_id, format, hook=hook, k=k, norm_scaling_factor=norm_scaling_factor,
                                     revision=revision)
    found = find_saes(path, format)
    if hook is None:
        if len(found) > 1:
            raise UserError(f"{path} holds {len(found)} SAEs; choose one with hook= (--hook) or layer=: "
                            f"{', '.join(found)}")
        chosen = list(found.values())
    else:
        chosen = [v for name, v in found.items() if matches_hook(name, hook)]
        if not chosen:
            raise UserError(f"no SAE for {hook!r} in {path}{did_you_mean(hook, found)}; "
                            f"available: {', '.join(found)}")
        if len(chosen) > 1:
            names = [n for n, v in found.items() if v in chosen]
            raise UserError(f"several SAEs match {hook!r} in {path}: {', '.join(names)}; give the full name")
    location, fmt = chosen[0]
    return _load_one(location, fmt, k=k, norm_scaling_factor=norm_scaling_factor)
