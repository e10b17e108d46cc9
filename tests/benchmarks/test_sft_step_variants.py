"""benchmarks/sft_step_variants.py: every swapped formulation computes what the committed code computes (values
and gradients), so the benchmark times equal work."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.models.qwen3 import modeling
from qwen_sae_jax.posttrain import step
from tests.benchmarks.loader import load_benchmark


@pytest.fixture(scope="module")
def swaps():
    return load_benchmark("sft_step_variants")._formulations()


def _value_and_grad(fn, *args):
    return jax.value_and_grad(lambda *a: jnp.sum(fn(*a) ** 2))(*args)


@pytest.mark.parametrize("name", ["attention-heads", "attention-rows", "softmax-by-hand"])
def test_attention_variants_match_grouped_attention(swaps, name):
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, 5, 4, 8)), jnp.float32)             # [B, T, H, hd]
    k, v = (jnp.asarray(rng.normal(size=(2, 5, 2, 8)), jnp.float32) for _ in range(2))
    bias = modeling.attention_bias(jnp.asarray([[1] * 5, [0, 1, 1, 1, 1]]), 5)
    [(_, attr, fn)] = swaps[name]
    assert attr == "grouped_attention"
    got, got_grad = _value_and_grad(lambda x: fn(x, k, v, bias, jnp.float32), q)
    want, want_grad = _value_and_grad(lambda x: modeling.grouped_attention(x, k, v, bias, jnp.float32), q)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-5)


def test_norm_silu_and_loss_variants_match(swaps):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 7)) * 2, jnp.float32)
    [(_, _, rms)] = swaps["rmsnorm-vjp"]
    for got, want in zip(_value_and_grad(lambda a: rms(a, 1e-6), x),
                         _value_and_grad(lambda a: modeling.rms_normalize(a, 1e-6), x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    [(_, _, silu)] = swaps["silu-vjp"]
    for got, want in zip(_value_and_grad(silu, x), _value_and_grad(jax.nn.silu, x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    logits = jnp.asarray(rng.normal(size=(2, 6, 11)), jnp.float32)
    ids = jnp.asarray(rng.integers(0, 11, size=(2, 6)), jnp.int32)
    reply = jnp.asarray(rng.random((2, 6)) < 0.6)
    [_, (_, attr, old_ce)] = swaps["before"]
    assert attr == "reply_ce"
    np.testing.assert_allclose(old_ce(logits, ids, reply)[0], step.reply_ce(logits, ids, reply)[0], rtol=1e-6)
    assert int(old_ce(logits, ids, reply)[1]) == int(step.reply_ce(logits, ids, reply)[1])
