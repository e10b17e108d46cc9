"""Hook points of the Qwen3 model: names, SAELens aliases, globs, and the capture/intervention interceptor.

Canonical names (N = decoder layer index, every activation is ``[B, T, D]``):

    layers.N.input       residual stream entering decoder layer N (= embeddings for N = 0)
    layers.N.self_attn   attention output after o_proj (before it is added to the residual)
    layers.N.mlp         MLP output after down_proj (MoE: the router-weighted sum of the experts)
    layers.N             residual stream leaving decoder layer N

SAELens aliases: ``blocks.N.hook_resid_pre | hook_attn_out | hook_mlp_out | hook_resid_post``.
Patterns use ``fnmatch`` globs (``layers.*.mlp``, ``layers.[0-3]``, ``blocks.*.hook_resid_post``).

Capture and intervention never touch model code: ``HookInterceptor`` is installed with
``flax.linen.intercept_methods`` around ``model.apply`` and sees every module ``__call__``. The
decoder layer, its ``self_attn`` and its ``mlp`` submodule are the hook points. An intervention
``fn(act [B, T, D]) -> act [B, T, D]`` replaces the activation that flows on; a capture records the
activation after any intervention at that point.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Callable, Iterable, Mapping

from flax import linen as nn

from qwen_sae_jax.errors import UserError, did_you_mean

SITES = ("input", "self_attn", "mlp", "")  # "" = the layer output ("layers.N")
ALIASES = {"hook_resid_pre": "input", "hook_attn_out": "self_attn", "hook_mlp_out": "mlp", "hook_resid_post": ""}
_SITE_TO_ALIAS = {v: k for k, v in ALIASES.items()}
_CANONICAL = re.compile(r"^layers\.(\d+)(?:\.(input|self_attn|mlp))?$")
_ALIAS = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_attn_out|hook_mlp_out|hook_resid_post)$")

Intervention = Callable  # fn(act [B, T, D]) -> act [B, T, D]


def _name(layer: int, site: str) -> str:
    return f"layers.{layer}" + (f".{site}" if site else "")


def hook_names(num_layers: int) -> list[str]:
    """Every canonical hook name of a model with ``num_layers`` decoder layers, in forward order."""
    return [_name(i, s) for i in range(num_layers) for s in SITES]


def alias_of(name: str) -> str:
    """The SAELens-style alias of a canonical name (``layers.3.mlp`` -> ``blocks.3.hook_mlp_out``)."""
    layer, site = parse(name)
    return f"blocks.{layer}.{_SITE_TO_ALIAS[site]}"


def parse(name: str) -> tuple[int, str]:
    """``(layer, site)`` of a canonical or alias name; site is one of ``SITES``."""
    m = _CANONICAL.match(name)
    if m:
        return int(m.group(1)), m.group(2) or ""
    m = _ALIAS.match(name)
    if m:
        return int(m.group(1)), ALIASES[m.group(2)]
    raise UserError(f"{name!r} is not a hook name; names look like layers.N, layers.N.input, "
                    f"layers.N.self_attn, layers.N.mlp or blocks.N.hook_resid_post|hook_resid_pre|"
                    f"hook_attn_out|hook_mlp_out")


def layers_needed(name: str) -> int:
    """How many decoder layers must run to produce hook ``name`` (``layers.N.input`` needs N, others N+1)."""
    layer, site = parse(name)
    return layer if site == "input" else layer + 1


def _valid_listing(num_layers: int) -> str:
    return (f"valid hook names: layers.N.input, layers.N.self_attn, layers.N.mlp, layers.N for N in "
            f"0..{num_layers - 1} (aliases blocks.N.hook_resid_pre, hook_attn_out, hook_mlp_out, "
            f"hook_resid_post); globs such as layers.*.mlp")


def resolve_hooks(patterns: str | Iterable[str], num_layers: int) -> list[str]:
    """Canonical names for names, aliases and globs, in forward order, without duplicates.

    Raises one UserError naming every pattern that matches nothing, with the valid names."""
    if isinstance(patterns, str):
        patterns = [patterns]
    canonical = hook_names(num_layers)
    by_alias = {alias_of(n): n for n in canonical}
    chosen: set[str] = set()
    bad = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise UserError(f"hook names must be strings, got {pattern!r}")
        hits = fnmatch.filter(canonical, pattern) + [by_alias[a] for a in fnmatch.filter(list(by_alias), pattern)]
        if not hits:
            bad.append(f"{pattern!r}{did_you_mean(pattern, canonical + list(by_alias))}")
        chosen.update(hits)
    if bad:
        raise UserError(f"unknown hook name(s) for this {num_layers}-layer model: {', '.join(bad)}; "
                        + _valid_listing(num_layers))
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

    def at_hook(self, name: str, value):
        """Apply the intervention at ``name`` (if any) to ``value``, record it if captured, return it."""
        fn = self.interventions.get(name)
        if fn is not None:
            new = fn(value)
            if getattr(new, "shape", None) != value.shape:
                raise UserError(f"intervention at {name} returned shape {getattr(new, 'shape', type(new))}, "
                                f"expected {value.shape}")
            value = new.astype(value.dtype)
        if name in self.capture:
            self.captured[name] = value
        return value

    def __call__(self, next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        name = _module_hook_name(context.module)
        if name is None:
            return next_fun(*args, **kwargs)
        if _is_decoder_layer(context.module):
            args = (self.at_hook(name + ".input", args[0]),) + tuple(args[1:])
        return self.at_hook(name, next_fun(*args, **kwargs))

    def run(self, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` with this interceptor installed."""
        with nn.intercept_methods(self):
            return fn(*args, **kwargs)


def _is_decoder_layer(module) -> bool:
    from qwen_sae_jax.models.qwen3.modeling import Qwen3DecoderLayer

    return isinstance(module, Qwen3DecoderLayer)


def _module_hook_name(module) -> str | None:
    """Hook name of a module (decoder layer, its self_attn, its mlp) or None."""
    if _is_decoder_layer(module):
        return f"layers.{module.layer_idx}"
    parent = module.parent
    if module.name in ("self_attn", "mlp") and parent is not None and _is_decoder_layer(parent):
        return f"layers.{parent.layer_idx}.{module.name}"
    return None
