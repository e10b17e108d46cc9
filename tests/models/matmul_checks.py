"""Shared check for both families: every projection multiplies a ``[B*T, D]`` matrix (`as_matrix`)."""
import jax
import jax.extend.core
import jax.numpy as jnp


def _dot_generals(jaxpr):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _dot_generals(sub)


def assert_weight_gradients_are_matrix_products(model_cls, config, params, ids):
    """The gradient of the summed logits (tied LM head included) has no dot_general with a parameter-shaped
    output that contracts more than one dimension: the weight gradients are 2-D matmuls, not contractions over
    ``(B, T)`` (about 2x slower on XLA:CPU)."""
    model = model_cls(config)

    def loss(p):
        return jnp.sum(model.apply({"params": p}, ids) ** 2)

    jaxpr = jax.make_jaxpr(jax.grad(loss))(params).jaxpr
    param_shapes = {tuple(x.shape) for x in jax.tree.leaves(params) if x.ndim == 2}
    weight_grads = [eqn for eqn in _dot_generals(jaxpr) if tuple(eqn.outvars[0].aval.shape) in param_shapes]
    assert weight_grads, "no weight-gradient dot_general found"
    for eqn in weight_grads:
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        assert len(lhs_contract) == 1, (eqn.outvars[0].aval.shape, eqn.params["dimension_numbers"])
