"""Each intervention kind changes exactly what it should, in forward passes and in generation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.steer import run
from qwen_sae_jax.steer.interventions import (
    ablate_features,
    add_direction,
    clamp_features,
    feature_direction,
    interventions,
    steer_feature,
)

from .conftest import HIDDEN, random_tokens


def _capture(lm, ids, hook, steering=()):
    """Activation at ``hook`` (after the steering), one compiled program per steering structure."""
    def build():
        return lambda params, ids, steering: lm.apply(params, ids, capture=[hook], stop_after_capture=True,
                                                      interventions=interventions(steering))[1][hook]
    return np.asarray(run.compiled(lm, ("test-capture", hook), build)(lm.params, ids, list(steering)))


def test_add_with_alpha_zero_is_the_identity_and_alpha_adds_exactly(lm, saes):
    ids = random_tokens()
    sae = saes["layers.0"]
    clean_logits = np.asarray(lm.logits(ids))
    zero = steer_feature(sae, 5, alpha=0.0)
    np.testing.assert_array_equal(np.asarray(lm.logits(ids, interventions=interventions(zero))), clean_logits)

    h = _capture(lm, ids, "layers.0")
    d = np.asarray(sae.W_dec[5]) / 0.5                     # raw units: W_dec / act_scale
    steered = _capture(lm, ids, "layers.0", [steer_feature(sae, 5, alpha=3.0)])
    np.testing.assert_allclose(steered, h + 3.0 * d / np.linalg.norm(d), atol=1e-5)
    raw = _capture(lm, ids, "layers.0", [steer_feature(sae, 5, alpha=3.0, normalize=False)])
    np.testing.assert_allclose(raw, h + 3.0 * d, atol=1e-5)
    assert not np.allclose(np.asarray(lm.logits(ids, interventions=interventions(steer_feature(sae, 5, 3.0)))),
                           clean_logits, atol=1e-3)


@pytest.mark.parametrize("hook", ["layers.0", "layers.1.mlp"])
def test_clamp_keeps_the_error_term_and_changes_only_the_chosen_feature(lm, saes, hook):
    ids = random_tokens(batch=1, seq=10, seed=1)
    sae = saes[hook]
    h = _capture(lm, ids, hook)                                       # [1, T, D]
    z = np.asarray(sae.encode(jnp.asarray(h)))                        # [1, T, d_sae]
    feat = int(np.argmax(z[0, -1]))                                   # active at the last position
    assert z[0, -1, feat] > 0

    # value equal to the current one (scale by 1; set to the last position's value): h is unchanged there
    same = _capture(lm, ids, hook, [clamp_features(sae, feat, 1.0, mode="scale")])
    np.testing.assert_array_equal(same, h)
    value = float(z[0, -1, feat])
    set_now = _capture(lm, ids, hook, [clamp_features(sae, feat, value)])
    np.testing.assert_array_equal(set_now[0, -1], h[0, -1])

    # independent reference: decode(z') + (h - decode(z)) with z' = z except feature feat
    for steering, new_value in [(clamp_features(sae, feat, 7.5), lambda zi: 7.5),
                                (clamp_features(sae, feat, -2.0, mode="scale"), lambda zi: -2.0 * zi),
                                (ablate_features(sae, feat), lambda zi: 0.0 * zi)]:
        z_new = z.copy()
        z_new[..., feat] = new_value(z[..., feat])
        expected = np.asarray(sae.decode(jnp.asarray(z_new))) + (h - np.asarray(sae.decode(jnp.asarray(z))))
        got = _capture(lm, ids, hook, [steering])
        np.testing.assert_allclose(got, expected, atol=2e-5)
        others = np.ones(z.shape[-1], bool)
        others[feat] = False
        # what the SAE "sees" besides the error term differs from the clean latents in feature feat only
        np.testing.assert_allclose(np.asarray(sae.decode(jnp.asarray(z_new))) - np.asarray(sae.decode(jnp.asarray(z))),
                                   got - h, atol=2e-5)


def test_several_features_and_hooks_at_once_compose_in_order(lm, saes):
    ids = random_tokens(seed=2)
    s0, s1 = saes["layers.0"], saes["layers.1.mlp"]
    steering = [clamp_features(s0, [3, 9], [2.0, 0.0]), steer_feature(s0, 11, alpha=-1.5),
                ablate_features(s1, [0, 1, 2]), add_direction("blocks.1.hook_resid_post", np.ones(HIDDEN), 0.7)]
    got = np.asarray(run.logits(lm, ids, steering=steering))

    first = lambda a: steering[1](steering[0](a))   # noqa: E731  same hook: in the order given
    reference = lm.logits(ids, interventions={"layers.0": first, "layers.1.mlp": steering[2],
                                              "layers.1": steering[3]})
    np.testing.assert_allclose(got, np.asarray(reference), atol=1e-5)
    swapped = lm.logits(ids, interventions={"layers.0": lambda a: steering[0](steering[1](a)),
                                            "layers.1.mlp": steering[2], "layers.1": steering[3]})
    assert not np.allclose(got, np.asarray(swapped), atol=1e-4)      # order matters: clamp then add


def _reference_generation(lm, prompt, new, hook, delta, columns):
    """Greedy continuation checked step by step with full forwards steering only the given columns."""
    @jax.jit
    def forward(ids, colmask):
        fn = lambda a: a + (colmask[None, :, None] * delta).astype(a.dtype)  # noqa: E731
        return lm.apply(lm.params, ids, interventions={hook: fn})[0]
    seq = np.concatenate([prompt, new])[None]                         # [1, P + N]
    P = prompt.size
    colmask = np.zeros(seq.shape[1], np.float32)
    colmask[columns(P, seq.shape[1])] = 1.0
    logits = np.asarray(forward(seq, colmask))                        # causal: one forward checks every step
    return logits[0, P - 1:-1].argmax(-1)


@pytest.mark.slow  # five compiled generation programs (about 6 s each on a busy 2-core CPU)
def test_prompt_only_and_generated_only_steer_the_right_positions(lm, saes):
    sae = saes["layers.0"]
    prompt = random_tokens(batch=1, seq=16, seed=3)[0]                # 16 tokens: no extra left padding
    alpha, n = 40.0, 8
    delta = alpha * np.asarray(feature_direction(sae, 4))
    stops = []
    cols = {"all": lambda P, T: slice(0, T), "prompt": lambda P, T: slice(0, P),
            "generated": lambda P, T: slice(P, T)}
    outputs = {}
    for where in ("all", "prompt", "generated"):
        steering = steer_feature(sae, 4, alpha, where=where)
        out, lengths = run.generate_tokens(lm, prompt[None], steering=steering, max_new_tokens=n)
        new = out[0, :lengths[0]]
        outputs[where] = new.tolist()
        # every generated token is the argmax of a full forward steered at exactly those columns
        expected = _reference_generation(lm, prompt, new, "layers.0", delta, cols[where])
        np.testing.assert_array_equal(new, expected[:new.size])
        if where == "prompt":  # the same through the lm's own generation, the steering as a plain function
            lm_out, _ = lm.generate_tokens(prompt[None], max_new_tokens=n, interventions=interventions(steering))
            np.testing.assert_array_equal(lm_out, out)
        stops.append(lengths[0])
    clean, _ = lm.generate_tokens(prompt[None], max_new_tokens=n)
    assert outputs["generated"][0] == clean[0, 0]      # the first token is predicted from the (unsteered) prompt
    assert len({tuple(v) for v in outputs.values()} | {tuple(clean[0, :stops[0]].tolist())}) >= 3


def test_a_sweep_reuses_one_compiled_program(lm, saes):
    ids = random_tokens(seed=4)
    sae = saes["layers.0"]
    run.logits(lm, ids, steering=steer_feature(sae, 1, 1.0))
    before = run._CACHE[lm][("logits",)]._cache_size()
    for feature, alpha in [(2, 4.0), (30, -8.0)]:
        run.logits(lm, ids, steering=steer_feature(sae, feature, alpha))
    assert run._CACHE[lm][("logits",)]._cache_size() == before


def test_bad_input_gives_one_clear_error(lm, saes):
    sae = saes["layers.0"]
    with pytest.raises(UserError, match=r"feature 64 is out of range .* valid indices are 0\.\.63"):
        steer_feature(sae, 64, 1.0)
    with pytest.raises(UserError, match="out of range"):
        clamp_features(sae, [1, -1], 0.0)
    with pytest.raises(UserError, match="distinct"):
        clamp_features(sae, [1, 1], 0.0)
    with pytest.raises(UserError, match="valid: all, prompt, generated"):
        steer_feature(sae, 1, 1.0, where="prefix")
    with pytest.raises(UserError, match="valid: set, scale"):
        clamp_features(sae, 1, 1.0, mode="add")
    with pytest.raises(UserError, match="2 values for 3 features"):
        clamp_features(sae, [1, 2, 3], [1.0, 2.0])
    with pytest.raises(UserError, match="unknown hook name"):
        run.logits(lm, random_tokens(), steering=add_direction("layers.7", np.ones(HIDDEN), 1.0))
    with pytest.raises(UserError, match="has width 5"):
        run.logits(lm, random_tokens(), steering=add_direction("layers.1", np.ones(5), 1.0))
