"""Logical axis names -> mesh axes: the one table every partition rule goes through.

Partition rules name each dimension of an array by what it holds, never by a mesh axis: a Qwen3 query kernel
``[D, N*hd]`` is ``("embed", "heads")``, a stacked SAE encoder ``[n, d_in, d_sae]`` is ``(None, None,
"latent")``. One table (``MeshConfig.rules`` in training, ``load_model(rules=...)`` elsewhere, ``DEFAULT_RULES``
when nobody gives one) maps each logical name to a mesh axis of ``Mesh(('data', 'model'))`` or to None
(replicated), so moving a kind of dimension to another axis (experts over 'data', say) is a config change:

    spec = logical_spec(("expert", "embed", "mlp"), (128, 2048, 768), mesh, {"expert": "data"})

Turning logical axes into a ``PartitionSpec`` (``logical_spec``), dimension by dimension, left to right:
a mesh axis already taken by an earlier dimension of the same array is left out (experts ``[E, D, I]`` with
``expert`` and ``mlp`` both on 'model' split E only), then a mesh axis that is not in the mesh or whose size
does not divide the dimension is left out too (that dimension is replicated).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Sequence

from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from qwen_sae_jax.errors import UserError, did_you_mean

MESH_AXES = ("data", "model")

# logical name -> what it holds (the help text of MeshConfig.rules lists these)
LOGICAL_AXES: Mapping[str, str] = MappingProxyType({
    "batch": "rows of token and activation batches",
    "embed": "the model width d_model of parameters ('data': FSDP)",
    "vocab": "the vocabulary of the embedding, the LM head and the logits",
    "heads": "query heads x head_dim (and Gated DeltaNet channels)",
    "kv_heads": "key/value heads x head_dim",
    "mlp": "the MLP / expert intermediate width",
    "expert": "the experts of an MoE layer ('model': expert parallel; null: each expert split by mlp instead)",
    "latent": "SAE latents d_sae",
})

DEFAULT_RULES: Mapping[str, str | None] = MappingProxyType({
    "batch": "data", "embed": "data", "vocab": "model", "heads": "model", "kv_heads": "model", "mlp": "model",
    "expert": "model", "latent": "model",
})

LogicalAxes = Sequence[str | None]   # one logical name (or None: never split) per dimension


def check_rules(rules: Mapping[str, str | None] | None, where: str = "rules") -> dict[str, str | None]:
    """The full table: ``DEFAULT_RULES`` updated by ``rules`` (None: the defaults). One UserError names an
    unknown logical axis or mesh axis (``where`` says which setting) and lists the valid ones."""
    if rules is None:
        return dict(DEFAULT_RULES)
    if not isinstance(rules, Mapping):
        raise UserError(f"{where} must map logical axes to mesh axes, got {rules!r}")
    for name, axis in rules.items():
        if name not in LOGICAL_AXES:
            raise UserError(f"{where}: unknown logical axis {name!r}{did_you_mean(str(name), list(LOGICAL_AXES))}; "
                            f"valid: {', '.join(LOGICAL_AXES)}")
        if axis is not None and axis not in MESH_AXES:
            raise UserError(f"{where}.{name}: unknown mesh axis {axis!r}{did_you_mean(str(axis), list(MESH_AXES))}; "
                            f"valid: {', '.join(MESH_AXES)}, null (replicated)")
    return {**DEFAULT_RULES, **rules}


def logical_spec(axes: LogicalAxes, shape: Sequence[int], mesh: Mesh,
                 rules: Mapping[str, str | None] | None = None) -> P:
    """The ``PartitionSpec`` of an array of ``shape`` whose dimensions hold ``axes`` (shorter than the shape:
    the rest are None), by ``rules`` (None: ``DEFAULT_RULES``); see the module docstring for what is left out."""
    table = check_rules(rules)
    if len(axes) > len(shape):
        raise ValueError(f"{len(axes)} logical axes {tuple(axes)} for an array of shape {tuple(shape)}")
    taken: set[str] = set()
    mapped = []
    for name in axes:
        axis = None if name is None else table[name]
        mapped.append(None if axis in taken else axis)
        if axis is not None:
            taken.add(axis)
    fitted = [axis if axis is not None and axis in mesh.shape and dim % mesh.shape[axis] == 0 else None
              for dim, axis in zip(shape, mapped)]
    return P(*fitted, *([None] * (len(shape) - len(axes))))


def logical_sharding(axes: LogicalAxes, shape: Sequence[int], mesh: Mesh,
                     rules: Mapping[str, str | None] | None = None) -> NamedSharding:
    """``NamedSharding(mesh, logical_spec(axes, shape, mesh, rules))``."""
    return NamedSharding(mesh, logical_spec(axes, shape, mesh, rules))
