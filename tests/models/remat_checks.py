"""Checks shared by the per-layer rematerialisation tests (models, hooks, posttrain): how many ``jax.checkpoint``
equations a jaxpr holds, and how many bytes a function's forward hands its backward."""
import jax
from jax.extend import core as jcore


def checkpoint_equations(jaxpr) -> int:
    """``jax.checkpoint`` (remat) equations of a (closed) jaxpr, nested jaxprs (jit, cond, scan bodies) included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name in ("checkpoint", "remat", "remat2")
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                if isinstance(sub, (jcore.ClosedJaxpr, jcore.Jaxpr)):
                    count += checkpoint_equations(sub)
    return count


def residual_bytes(fn, *args) -> int:
    """Bytes of the residuals ``jax.vjp(fn, *args)`` keeps for the backward pass (shapes only, nothing computed):
    what gradient checkpointing shrinks, independent of the XLA backend."""
    leaves = jax.eval_shape(lambda *a: jax.tree.leaves(jax.vjp(fn, *a)[1]), *args)
    return sum(x.size * x.dtype.itemsize for x in leaves)


def residual_shapes(fn, *args) -> set[tuple[int, ...]]:
    """The shapes of those residuals."""
    return {x.shape for x in jax.eval_shape(lambda *a: jax.tree.leaves(jax.vjp(fn, *a)[1]), *args)}


def assert_remat_layers_changes_nothing_but_memory(model_class, config, params, ids, mask):
    """``model_class(config, remat_layers=True)``: the parameter tree of a fresh init, the logits and the
    gradient of a loss on them (float32) are those of the plain model; the gradient's jaxpr holds one checkpoint
    per decoder layer (none without remat) and keeps far fewer residual bytes."""
    import jax.numpy as jnp
    import numpy as np

    plain, remat = model_class(config), model_class(config, remat_layers=True)
    fresh = jax.eval_shape(lambda: remat.init(jax.random.key(0), ids)["params"])
    assert jax.tree.map(lambda a: (a.shape, a.dtype), fresh) == jax.tree.map(lambda a: (a.shape, a.dtype), params)

    def loss(model):
        def value(p):
            logits = model.apply({"params": p}, ids, mask)
            return jnp.mean(jnp.square(logits)) + jnp.mean(jax.nn.log_softmax(logits)[..., 0])
        return value

    want, want_grad = jax.jit(jax.value_and_grad(loss(plain)))(params)
    got, got_grad = jax.jit(jax.value_and_grad(loss(remat)))(params)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got_grad, want_grad)
    assert checkpoint_equations(jax.make_jaxpr(jax.grad(loss(remat)))(params)) == config.num_hidden_layers
    assert checkpoint_equations(jax.make_jaxpr(jax.grad(loss(plain)))(params)) == 0
    assert residual_bytes(loss(remat), params) < residual_bytes(loss(plain), params)
