"""The JAX gated delta rule against transformers' torch fallbacks, a numpy per-token reference, and itself."""
import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers.models.qwen3_5 import modeling_qwen3_5

from qwen_sae_jax.models.qwen3_5.gated_delta import chunk_gated_delta_rule, recurrent_gated_delta_rule

B, H, DK, DV = 2, 3, 8, 12
RTOL = 1e-5  # max abs error over max abs reference value
# the torch-only paths, never an installed FLA kernel
TORCH_CHUNK = inspect.unwrap(modeling_qwen3_5.torch_chunk_gated_delta_rule)
TORCH_RECURRENT = inspect.unwrap(modeling_qwen3_5.torch_recurrent_gated_delta_rule)
FORMS = {"chunked": chunk_gated_delta_rule, "recurrent": recurrent_gated_delta_rule}


def _inputs(t, seed=0):
    """q, k [B, t, H, DK], v [B, t, H, DV], g, beta [B, t, H] (float32), built like Qwen3.5's GatedDeltaNet does."""
    rng = np.random.RandomState(seed)
    q, k = rng.randn(2, B, t, H, DK)
    v = rng.randn(B, t, H, DV)
    a_exp = np.exp(rng.uniform(-4, 0.5, H))  # exp(A_log): slow and fast decaying heads
    g = -a_exp * np.logaddexp(0, rng.randn(B, t, H) + 0.5)  # -exp(A_log) * softplus(a + dt_bias)
    beta = 1 / (1 + np.exp(-rng.randn(B, t, H)))
    return tuple(x.astype(np.float32) for x in (q, k, v, g, beta))


def _state(seed=1):
    return np.random.RandomState(seed).randn(B, H, DK, DV).astype(np.float32)


def _assert_close(got, want, rtol=RTOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    scale = np.abs(want).max()
    assert scale > 0
    assert np.abs(got - want).max() <= rtol * scale, (np.abs(got - want).max(), scale)


def _torch(fn, inputs, initial_state):
    tensors = [torch.from_numpy(x) for x in inputs]
    state = None if initial_state is None else torch.from_numpy(initial_state)
    out, final = fn(*tensors, initial_state=state, output_final_state=True, use_qk_l2norm_in_kernel=True)
    return out.numpy(), final.numpy()


def _numpy_reference(q, k, v, g, beta, initial_state=None):
    """The recurrence token by token in float64."""
    q, k, v, g, beta = (np.asarray(x, np.float64) for x in (q, k, v, g, beta))
    q = q / np.sqrt((q * q).sum(-1, keepdims=True) + 1e-6) / np.sqrt(q.shape[-1])
    k = k / np.sqrt((k * k).sum(-1, keepdims=True) + 1e-6)
    state = np.zeros((B, H, DK, DV)) if initial_state is None else np.asarray(initial_state, np.float64)
    out = np.zeros(v.shape)
    for t in range(v.shape[1]):
        state = state * np.exp(g[:, t])[..., None, None]
        delta = beta[:, t, :, None] * (v[:, t] - np.einsum("bhk,bhkv->bhv", k[:, t], state))
        state = state + k[:, t, :, :, None] * delta[:, :, None, :]
        out[:, t] = np.einsum("bhk,bhkv->bhv", q[:, t], state)
    return out, state


@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("t", [1, 63, 64, 65, 130])
@pytest.mark.parametrize("form", FORMS)
def test_matches_transformers(form, t, with_state):
    inputs = _inputs(t)
    initial_state = _state() if with_state else None
    reference = TORCH_CHUNK if form == "chunked" else TORCH_RECURRENT
    want_out, want_state = _torch(reference, inputs, initial_state)
    out, state = FORMS[form](*inputs, initial_state=initial_state)
    assert out.dtype == jnp.float32 and state.dtype == jnp.float32
    _assert_close(out, want_out)
    _assert_close(state, want_state)


@pytest.mark.parametrize("t", [5, 130])
@pytest.mark.parametrize("form", FORMS)
def test_matches_numpy_recurrence(form, t):
    inputs, initial_state = _inputs(t, seed=2), _state(seed=3)
    want_out, want_state = _numpy_reference(*inputs, initial_state)
    out, state = FORMS[form](*inputs, initial_state=initial_state)
    _assert_close(out, want_out)
    _assert_close(state, want_state)


def test_chunked_equals_recurrent():
    inputs, initial_state = _inputs(130, seed=4), _state(seed=5)
    chunked = chunk_gated_delta_rule(*inputs, initial_state=initial_state)
    recurrent = recurrent_gated_delta_rule(*inputs, initial_state=initial_state)
    _assert_close(chunked[0], recurrent[0])
    _assert_close(chunked[1], recurrent[1])


def _split(inputs, at):
    return tuple(x[:, :at] for x in inputs), tuple(x[:, at:] for x in inputs)


@pytest.mark.parametrize("at", [1, 64, 70])
def test_two_chunked_calls_equal_one(at):
    inputs = _inputs(130, seed=6)
    first, second = _split(inputs, at)
    out1, state1 = chunk_gated_delta_rule(*first)
    out2, state2 = chunk_gated_delta_rule(*second, initial_state=state1)
    want_out, want_state = chunk_gated_delta_rule(*inputs)
    _assert_close(np.concatenate([out1, out2], axis=1), want_out)
    _assert_close(state2, want_state)


def test_chunked_prefill_then_recurrent_decode_equals_one_call():
    inputs = _inputs(70, seed=7)
    prefill, _ = _split(inputs, 66)
    outs, state = chunk_gated_delta_rule(*prefill)
    outs = [outs]
    for t in range(66, 70):
        out, state = recurrent_gated_delta_rule(*(x[:, t:t + 1] for x in inputs), initial_state=state)
        outs.append(out)
    want_out, want_state = chunk_gated_delta_rule(*inputs)
    _assert_close(np.concatenate(outs, axis=1), want_out)
    _assert_close(state, want_state)


@pytest.mark.parametrize("form", FORMS)
def test_zero_tokens_with_zero_g_and_beta_keep_the_state(form):
    """What the chunked form's right padding relies on: exact no-ops."""
    q, k, v, g, beta = (np.zeros_like(x) for x in _inputs(9))
    initial_state = _state()
    out, state = FORMS[form](q, k, v, g, beta, initial_state=initial_state)
    np.testing.assert_array_equal(np.asarray(state), initial_state)
    np.testing.assert_array_equal(np.asarray(out), 0)


@pytest.mark.parametrize("form", FORMS)
def test_masked_tokens_still_decay_the_state(form):
    """q = k = v = 0 with g < 0 (a masked token after the conv): the state decays by exp(sum g), as in
    transformers, which is why right padding corrupts a state that generation would continue from."""
    _, _, _, g, beta = _inputs(9, seed=8)
    q, k, v = (np.zeros_like(x) for x in _inputs(9)[:3])
    initial_state = _state()
    _, state = FORMS[form](q, k, v, g, beta, initial_state=initial_state)
    want = initial_state * np.exp(g.sum(axis=1))[..., None, None]
    _assert_close(state, want)
    _assert_close(state, _torch(TORCH_CHUNK, (q, k, v, g, beta), initial_state)[1])
    assert np.abs(want - initial_state).max() > 0.1


@pytest.mark.parametrize("form", FORMS)
def test_leading_masked_tokens_change_nothing(form):
    """Left padding: masked tokens (q = k = v = 0, any g and beta) before the text leave the zero state at zero,
    output zero, and the text's outputs and final state equal those of the unpadded call."""
    pads, n = 5, 70
    padded = _inputs(pads + n, seed=9)
    q, k, v = (x.copy() for x in padded[:3])
    for x in (q, k, v):
        x[:, :pads] = 0
    padded = (q, k, v) + padded[3:]
    out, state = FORMS[form](*padded)
    want_out, want_state = FORMS[form](*(x[:, pads:] for x in padded))
    np.testing.assert_array_equal(np.asarray(out[:, :pads]), 0)
    _assert_close(out[:, pads:], want_out)
    _assert_close(state, want_state)
    torch_out, _ = _torch(TORCH_CHUNK, padded, None)
    np.testing.assert_array_equal(torch_out[:, :pads], 0)


@pytest.mark.parametrize("form", FORMS)
def test_bfloat16_inputs(form):
    inputs = tuple(jnp.asarray(x, jnp.bfloat16) for x in _inputs(65, seed=10))
    out, state = FORMS[form](*inputs)
    assert out.dtype == jnp.bfloat16 and state.dtype == jnp.float32
    want_out, want_state = FORMS[form](*(x.astype(jnp.float32) for x in inputs))
    _assert_close(out, want_out, rtol=1e-2)  # only the output's rounding to bfloat16
    _assert_close(state, want_state)  # the arithmetic itself stays float32


def test_jit_and_other_chunk_size():
    inputs, initial_state = _inputs(130, seed=11), _state(seed=12)
    jitted = jax.jit(functools.partial(chunk_gated_delta_rule, chunk_size=16))
    out, state = jitted(*inputs, initial_state=initial_state)
    want_out, want_state = chunk_gated_delta_rule(*inputs, initial_state=initial_state)
    _assert_close(out, want_out)
    _assert_close(state, want_state)
    out, state = jax.jit(recurrent_gated_delta_rule)(*inputs, initial_state=initial_state)
    _assert_close(out, want_out)
    _assert_close(state, want_state)


def test_memory_stays_linear_in_t():
    """A 4096-token call at Qwen3.5-2B width compiles to far less scratch memory than one [H, T, T] array (1 GiB)."""
    t, heads, dim = 4096, 16, 128
    shapes = [jax.ShapeDtypeStruct((1, t, heads, dim), jnp.bfloat16)] * 3
    shapes += [jax.ShapeDtypeStruct((1, t, heads), jnp.float32)] * 2
    memory = jax.jit(chunk_gated_delta_rule).lower(*shapes).compile().memory_analysis()
    assert memory.temp_size_in_bytes < 2**28  # 256 MiB; the f32 copies of q, k, v and the output are 128 MiB


def test_cpu_solve_is_forward_substitution_equal_to_the_triangular_solve():
    """On CPU the chunk's unit-lower solve avoids jaxlib's LAPACK trsm (it deadlocks when several host devices
    run it at once); the forward substitution equals jax.scipy's triangular solve."""
    from jax.scipy.linalg import solve_triangular

    from qwen_sae_jax.models.qwen3_5 import gated_delta

    key_a, key_b = jax.random.split(jax.random.key(3))
    system = jax.random.uniform(key_a, (2, 3, 64, 64), minval=-1.0, maxval=1.0)
    rhs = jax.random.normal(key_b, (2, 3, 64, 40))
    want = solve_triangular(system, rhs, lower=True, unit_diagonal=True)
    got = gated_delta._solve_unit_lower(system, rhs)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))
    lowered = jax.jit(gated_delta._solve_unit_lower).lower(system, rhs).as_text()
    assert "lapack" not in lowered.lower() and "trsm" not in lowered.lower()
