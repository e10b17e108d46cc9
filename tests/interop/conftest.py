"""Random SAEs with every parameter non-trivial (biases, thresholds, input scale)."""
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.sae import SAE, SAEConfig

D_IN, D_SAE, K = 16, 48, 6


def make_sae(architecture="topk", apply_b_dec=True, act_scale=1.0, hook="layers.2", seed=0,
             model_name="tiny"):
    rng = np.random.default_rng(seed)
    cfg = SAEConfig(architecture=architecture, d_in=D_IN, d_sae=D_SAE,
                    k=K if architecture in ("topk", "batchtopk") else None, hook_name=hook,
                    model_name=model_name, apply_b_dec_to_input=apply_b_dec,
                    normalize_activations=act_scale != 1.0, l1_coefficient=3.5)
    f = lambda *shape, scale=1.0: jnp.asarray(rng.normal(size=shape) * scale, jnp.float32)  # noqa: E731
    threshold = (jnp.asarray(rng.uniform(0.05, 0.4, size=D_SAE), jnp.float32)
                 if architecture in ("jumprelu", "batchtopk") else jnp.zeros(D_SAE, jnp.float32))
    return SAE(W_enc=f(D_IN, D_SAE, scale=D_IN ** -0.5), b_enc=f(D_SAE, scale=0.2), W_dec=f(D_SAE, D_IN),
               b_dec=f(D_IN, scale=0.5), threshold=threshold, act_scale=jnp.asarray(act_scale, jnp.float32),
               cfg=cfg)


def make_inputs(seed=1, n=40):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, D_IN)) * 2.0 + 0.3).astype(np.float32)


@pytest.fixture
def sae_factory():
    return make_sae
