"""Hook points of the language models: names, SAELens aliases, globs, and the capture/intervention interceptor.

Canonical names (N = decoder layer index, every activation is ``[B, T, D]``):

    layers.N.input         residual stream entering decoder layer N (= embeddings for N = 0)
    layers.N.self_attn     token-mixer output of a full-attention layer (after o_proj)
    layers.N.linear_attn   token-mixer output of a Gated DeltaNet layer (Qwen3.5; after out_proj)
    layers.N.mlp           MLP output after down_proj (MoE: the router-weighted sum of the experts, plus the
                           gated shared expert in Qwen3.5)
    layers.N               residual stream leaving decoder layer N

Each layer has exactly one mixer hook: ``self_attn`` on every layer of Qwen3, and on Qwen3.5 by
``config.layer_types`` (``full_attention`` -> ``self_attn``, ``linear_attention`` -> ``linear_attn``). The
functions below take the model's layers as ``mixers`` (``config.mixers``: per layer the mixer's name) or, for a
model whose layers are all full attention, as the number of layers.

SAELens aliases: ``blocks.N.hook_resid_pre | hook_attn_out | hook_mlp_out | hook_resid_post``;
``hook_attn_out`` names whichever mixer layer N has, so ``blocks.*.hook_attn_out`` covers every layer of a
hybrid model. Patterns use ``fnmatch`` globs (``layers.*.mlp``, ``layers.[0-3]``, ``blocks.*.hook_resid_post``).

Capture and intervention never touch model code: ``HookInterceptor`` is installed with
``flax.linen.intercept_methods`` around ``model.apply`` and sees every module ``__call__``. The decoder layer,
its mixer and its ``mlp`` submodule are the hook points. An intervention ``fn(act [B, T, D]) -> act [B, T, D]``
replaces the activation that flows on; a capture records the activation after any intervention at that point.
With per-layer rematerialisation (``remat_layers``: each decoder layer under ``nn.remat``) the interceptor runs
inside each layer's ``jax.checkpoint``, so ``HookInterceptor.apply`` hands the captures out through the mutable
``hooks`` collection (``sow``), which the lifted checkpoint returns as outputs: no tracer leaks, and gradients
flow through the captured activations as through any output.
"""
from __future__ import annotations

import fnmatch
import functools
import re
from typing import Callable, Iterable, Mapping, Sequence

from flax import linen as nn
from flax import traverse_util

from qwen_sae_jax.errors import UserError, did_you_mean

MIXER_SITES = ("self_attn", "linear_attn")
# alias -> site; hook_attn_out reads as self_attn out of context, resolve_hooks maps it to the layer's own mixer
ALIASES = {"hook_resid_pre": "input", "hook_attn_out": "self_attn", "hook_mlp_out": "mlp", "hook_resid_post": ""}
_SITE_TO_ALIAS = {"input": "hook_resid_pre", "self_attn": "hook_attn_out", "linear_attn": "hook_attn_out",
                  "mlp": "hook_mlp_out", "": "hook_resid_post"}
_CANONICAL = re.compile(r"^layers\.(\d+)(?:\.(input|self_attn|linear_attn|mlp))?$")
_ALIAS = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_attn_out|hook_mlp_out|hook_resid_post)$")
_MIXER_KIND = {"self_attn": "full-attention", "linear_attn": "Gated DeltaNet (linear_attention)"}
# the layer kind column of tables and plots: per mixer module, "full" (full attention) or "linear" (Gated DeltaNet)
LAYER_KINDS = {"self_attn": "full", "linear_attn": "linear"}

# the variable collection captures travel in when the apply makes it mutable (HookInterceptor.apply)
CAPTURE_COLLECTION = "hooks"

Intervention = Callable  # fn(act [B, T, D]) -> act [B, T, D]
Layers = int | Sequence[str]  # number of full-attention layers, or per layer the mixer's name


def _mixers(layers: Layers) -> tuple[str, ...]:
    if isinstance(layers, int):
        return ("self_attn",) * layers
    mixers = tuple(layers)
    bad = sorted(set(mixers) - set(MIXER_SITES))
    if bad:
        raise ValueError(f"unknown mixer module names {bad}; valid: {MIXER_SITES}")
    return mixers


def layer_kinds(layers: Layers) -> tuple[str, ...]:
    """Per layer, its kind as tables name it: ``full`` (full attention, every Qwen3 layer) or ``linear`` (Gated
    DeltaNet), from the model's per-layer mixers (``config.mixers``), never from the model family."""
    return tuple(LAYER_KINDS[m] for m in _mixers(layers))


def _name(layer: int, site: str) -> str:
    return f"layers.{layer}" + (f".{site}" if site else "")


def hook_names(layers: Layers) -> list[str]:
    """Every canonical hook name of a model, in forward order."""
    return [_name(i, s) for i, mixer in enumerate(_mixers(layers)) for s in ("input", mixer, "mlp", "")]


def alias_of(name: str) -> str:
    """The SAELens-style alias of a canonical name (``layers.3.mlp`` -> ``blocks.3.hook_mlp_out``,
    ``layers.0.linear_attn`` -> ``blocks.0.hook_attn_out``)."""
    layer, site = parse(name)
    return f"blocks.{layer}.{_SITE_TO_ALIAS[site]}"


def parse(name: str) -> tuple[int, str]:
    """``(layer, site)`` of a canonical or alias name; site is ``input``, ``self_attn``, ``linear_attn``, ``mlp`` or
    ``""`` (the layer output). Without the model at hand the alias ``hook_attn_out`` reads as ``self_attn``;
    ``resolve_hooks`` maps it to the mixer the layer really has."""
    m = _CANONICAL.match(name)
    if m:
        return int(m.group(1)), m.group(2) or ""
    m = _ALIAS.match(name)
    if m:
        return int(m.group(1)), ALIASES[m.group(2)]
    raise UserError(f"{name!r} is not a hook name; names look like layers.N, layers.N.input, "
                    f"layers.N.self_attn, layers.N.linear_attn, layers.N.mlp or blocks.N.hook_resid_post|"
                    f"hook_resid_pre|hook_attn_out|hook_mlp_out")


def layers_needed(name: str) -> int:
    """How many decoder layers must run to produce hook ``name`` (``layers.N.input`` needs N, others N+1)."""
    layer, site = parse(name)
    return layer if site == "input" else layer + 1


def valid_listing(layers: Layers) -> str:
    """One line naming the valid hooks of a model."""
    mixers = _mixers(layers)
    n = len(mixers)
    if set(mixers) == {"self_attn"}:
        mixer_part = "layers.N.self_attn, "
        tail = ""
    else:
        full = [str(i) for i, m in enumerate(mixers) if m == "self_attn"]
        mixer_part = ""
        tail = (f"; the mixer is layers.N.self_attn on full-attention layers N in {{{', '.join(full)}}} and "
                f"layers.N.linear_attn on the other (Gated DeltaNet) layers")
    return (f"valid hook names: layers.N.input, {mixer_part}layers.N.mlp, layers.N for N in 0..{n - 1}{tail} "
            f"(aliases blocks.N.hook_resid_pre, hook_attn_out, hook_mlp_out, hook_resid_post); globs such as "
            f"layers.*.mlp")


def _wrong_kind_hint(pattern: str, mixers: tuple[str, ...]) -> str:
    m = _CANONICAL.match(pattern)
    if not m or m.group(2) not in MIXER_SITES or int(m.group(1)) >= len(mixers):
        return ""
    layer, actual = int(m.group(1)), mixers[int(m.group(1))]
    return f" (layer {layer} is a {_MIXER_KIND[actual]} layer: its mixer is layers.{layer}.{actual})"


def resolve_hooks(patterns: str | Iterable[str], layers: Layers) -> list[str]:
    """Canonical names for names, aliases and globs, in forward order, without duplicates.

    Raises one UserError naming every pattern that matches nothing, with the valid names."""
    if isinstance(patterns, str):
        patterns = [patterns]
    mixers = _mixers(layers)
    canonical = hook_names(mixers)
    by_alias = {alias_of(n): n for n in canonical}
    chosen: set[str] = set()
    bad = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise UserError(f"hook names must be strings, got {pattern!r}")
        hits = fnmatch.filter(canonical, pattern) + [by_alias[a] for a in fnmatch.filter(list(by_alias), pattern)]
        if not hits:
            hint = _wrong_kind_hint(pattern, mixers) or did_you_mean(pattern, canonical + list(by_alias))
            bad.append(f"{pattern!r}{hint}")
        chosen.update(hits)
    if bad:
        raise UserError(f"unknown hook name(s) for this {len(mixers)}-layer model: {', '.join(bad)}; "
                        + valid_listing(mixers))
    return [n for n in canonical if n in chosen]


class HookInterceptor:
    """Interceptor for ``nn.intercept_methods``: applies ``interventions`` and records ``capture`` points.

    After the intercepted ``apply`` ran (inside the same trace), ``self.captured`` maps each captured
    name that was reached to its activation. Names must be canonical (see ``resolve_hooks``).
    """

    def __init__(self, capture: Iterable[str] = (), interventions: Mapping[str, Intervention] | None = None):
        self.capture = frozenset(capture)
        self.interventions = dict(interventions or {})
        self.captured: dict[str, object] = {}

    def at_hook(self, name: str, value, module: nn.Module | None = None):
        """Apply the intervention at ``name`` (if any) to ``value``, record it if captured, return it. A capture
        goes into ``module``'s ``hooks`` collection when the apply made that collection mutable (`apply`), else
        into ``self.captured``."""
        fn = self.interventions.get(name)
        if fn is not None:
            new = fn(value)
            if getattr(new, "shape", None) != value.shape:
                raise UserError(f"intervention at {name} returned shape {getattr(new, 'shape', type(new))}, "
                                f"expected {value.shape}")
            value = new.astype(value.dtype)
        if name in self.capture:
            if module is not None and module.is_mutable_collection(CAPTURE_COLLECTION):
                module.sow(CAPTURE_COLLECTION, name, value, reduce_fn=_latest, init_fn=lambda: None)
            else:
                self.captured[name] = value
        return value

    def __call__(self, next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        name = _module_hook_name(context.module)
        if name is None:
            return next_fun(*args, **kwargs)
        module = context.module
        if _is_decoder_layer(module):
            args = (self.at_hook(name + ".input", args[0], module),) + tuple(args[1:])
        return self.at_hook(name, next_fun(*args, **kwargs), module)

    def run(self, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` with this interceptor installed; captures land in ``self.captured`` directly
        (so they must not be made inside a lifted transform: use `apply` for a model with per-layer remat)."""
        with nn.intercept_methods(self):
            return fn(*args, **kwargs)

    def apply(self, module: nn.Module, variables, *args, **kwargs):
        """``module.apply(variables, *args, **kwargs)`` with this interceptor installed. Captures leave the model
        through the mutable ``hooks`` collection, as outputs of every lifted transform they were made in (a
        decoder layer under ``nn.remat`` hands them out of its ``jax.checkpoint``: no leaked tracers, and
        gradients flow through them), and are in ``self.captured`` afterwards."""
        with nn.intercept_methods(self):
            out, state = module.apply(variables, *args, mutable=[CAPTURE_COLLECTION], **kwargs)
        sown = traverse_util.flatten_dict(dict(state.get(CAPTURE_COLLECTION, {})))
        self.captured.update({path[-1]: value for path, value in sown.items()})
        return out


def _latest(_previous, value):
    return value


@functools.cache
def _decoder_layer_classes() -> tuple[type, ...]:
    from qwen_sae_jax.models.qwen3.modeling import Qwen3DecoderLayer
    from qwen_sae_jax.models.qwen3_5.modeling import Qwen3_5DecoderLayer

    return Qwen3DecoderLayer, Qwen3_5DecoderLayer


def _is_decoder_layer(module) -> bool:
    return isinstance(module, _decoder_layer_classes())


def _module_hook_name(module) -> str | None:
    """Hook name of a module (decoder layer, its mixer, its mlp) or None."""
    if _is_decoder_layer(module):
        return f"layers.{module.layer_idx}"
    parent = module.parent
    if module.name in MIXER_SITES + ("mlp",) and parent is not None and _is_decoder_layer(parent):
        return f"layers.{parent.layer_idx}.{module.name}"
    return None
