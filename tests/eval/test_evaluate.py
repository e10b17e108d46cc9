"""Model-level evaluation on a tiny random Qwen3: hand-computable SAEs, and splicing checked against the
transformers PyTorch model with a forward hook."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from qwen_sae_jax.eval.evaluate import EvalConfig, evaluate, joint_groups
from qwen_sae_jax.sae import SAE, SAEConfig
from tests.eval.conftest import HIDDEN, token_batches

CFG = EvalConfig(n_tokens=64, batch_size=3, ctx_len=12, exclude_first=True)


def relu_sae(hook, W_enc, W_dec, b_enc=None, b_dec=None):
    d_in, d_sae = W_enc.shape
    cfg = SAEConfig(architecture="relu", d_in=d_in, d_sae=d_sae, hook_name=hook, model_name="x",
                    apply_b_dec_to_input=False)
    z = lambda n: jnp.zeros(n, jnp.float32)  # noqa: E731
    return SAE(W_enc=jnp.asarray(W_enc, jnp.float32), W_dec=jnp.asarray(W_dec, jnp.float32),
               b_enc=z(d_sae) if b_enc is None else jnp.asarray(b_enc, jnp.float32),
               b_dec=z(d_in) if b_dec is None else jnp.asarray(b_dec, jnp.float32), threshold=z(d_sae),
               act_scale=jnp.ones((), jnp.float32), cfg=cfg)


def identity_sae(hook):
    """relu(x) - relu(-x) == x exactly: W_enc = [I, -I], W_dec = [I; -I]."""
    eye = np.eye(HIDDEN)
    return relu_sae(hook, np.concatenate([eye, -eye], 1), np.concatenate([eye, -eye], 0))


def zero_sae(hook, b_dec=None):
    return relu_sae(hook, np.zeros((HIDDEN, 8)), np.zeros((8, HIDDEN)), b_dec=b_dec)


def test_identity_sae_recovers_everything_and_zero_sae_is_the_ablation(tiny_lm):
    saes = {"layers.0.mlp__identity": identity_sae("layers.0.mlp"),
            "layers.0__identity": identity_sae("layers.0"),
            "layers.1.self_attn__zero": zero_sae("layers.1.self_attn")}
    res = evaluate(tiny_lm, saes, token_batches(), CFG)
    rows = {r["name"]: r for r in res.rows()}
    for name in ("layers.0.mlp__identity", "layers.0__identity"):
        r = rows[name]
        assert r["ce_spliced"] == pytest.approx(r["ce_clean"], abs=1e-5)
        assert r["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4)
        assert r["kl_spliced"] == pytest.approx(0.0, abs=1e-6)
        assert r["explained_variance"] == pytest.approx(1.0, abs=1e-6) and r["fvu"] == pytest.approx(0, abs=1e-6)
        assert abs(r["ce_zero_ablated"] - r["ce_clean"]) > 0.01      # the ablation really matters
        assert r["l0_mean"] == pytest.approx(HIDDEN)               # one of relu(x), relu(-x) per dim
        assert r["dead_fraction"] == 0.0
    z = rows["layers.1.self_attn__zero"]
    assert z["ce_spliced"] == pytest.approx(z["ce_zero_ablated"], abs=1e-6)
    assert z["kl_spliced"] == pytest.approx(z["kl_zero_ablated"], abs=1e-6)
    assert z["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-5)
    assert z["l0_mean"] == 0 and z["dead_fraction"] == 1.0
    # the two identity SAEs of layer 0 sit at different hooks: spliced together they still change nothing
    assert [j["name"] for j in res.joint] == ["layer 0 [identity]"]
    assert res.joint[0]["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    # positions: 2 batches x 3 rows x 11 (first excluded)
    assert res.n_tokens == 66 and z["n_tokens"] == 66


def test_mean_ablation_equals_splicing_the_mean(tiny_lm):
    batches = token_batches(seed=3)
    acts = [np.asarray(tiny_lm.capture(b, ["layers.1.mlp"])["layers.1.mlp"]) for b in batches]
    mean = np.concatenate([a[:, 1:].reshape(-1, HIDDEN) for a in acts]).mean(0)   # first position excluded
    res = evaluate(tiny_lm, {"m": zero_sae("layers.1.mlp", b_dec=mean)}, batches, CFG)
    r = res.rows()[0]
    assert r["ce_spliced"] == pytest.approx(r["ce_mean_ablated"], abs=1e-5)
    assert r["ce_loss_recovered_mean_ablation"] == pytest.approx(0.0, abs=1e-4)
    assert r["ce_mean_ablated"] != pytest.approx(r["ce_zero_ablated"], abs=1e-4)


def _torch_ce(model, ids, mask, hook_module=None, replace=None):
    """Mean next-token CE over positions t with mask[t], with an optional forward hook on a module."""
    handle = None
    if hook_module is not None:
        m = torch.tensor(mask)

        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            new = torch.where(m[..., None], replace(out), out)
            return (new,) + tuple(output[1:]) if isinstance(output, tuple) else new
        handle = hook_module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor(ids)).logits
    finally:
        if handle is not None:
            handle.remove()
    logp = torch.log_softmax(logits[:, :-1].double(), -1)
    ce = -logp.gather(-1, torch.tensor(ids[:, 1:]).long()[..., None])[..., 0]
    valid = torch.tensor(mask[:, :-1])
    return ce[valid].sum().item(), valid.sum().item()


def test_splicing_matches_a_torch_forward_hook_with_special_tokens_excluded(tiny_hf, tiny_lm):
    model, _ = tiny_hf
    rng = np.random.default_rng(7)
    cfg = SAEConfig(architecture="topk", d_in=HIDDEN, d_sae=64, k=5, hook_name="layers.1.mlp", model_name="x")
    sae = SAE(W_enc=jnp.asarray(rng.normal(size=(HIDDEN, 64)) / 6, jnp.float32),
              b_enc=jnp.asarray(rng.normal(size=64) * 0.1, jnp.float32),
              W_dec=jnp.asarray(rng.normal(size=(64, HIDDEN)) / 3, jnp.float32),
              b_dec=jnp.asarray(rng.normal(size=HIDDEN) * 0.1, jnp.float32), threshold=jnp.zeros(64),
              act_scale=jnp.asarray(1.7, jnp.float32), cfg=cfg)
    batches = token_batches(seed=5)
    special = [3, 4, 5, 6, 7, 8, 9]
    res = evaluate(tiny_lm, {"s": sae}, batches, CFG, special_ids=special)
    row = res.rows()[0]

    def torch_sae(x):
        w = {k: torch.tensor(np.asarray(getattr(sae, k))) for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
        pre = torch.relu((x * 1.7 - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
        vals, idx = pre.topk(5, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, idx, vals)
        return (z @ w["W_dec"] + w["b_dec"]) / 1.7

    totals = {"clean": [0.0, 0], "spliced": [0.0, 0]}
    for ids in batches:
        mask = ~np.isin(ids, special)
        mask[:, 0] = False
        for key, kwargs in (("clean", {}), ("spliced", dict(hook_module=model.model.layers[1].mlp,
                                                              replace=torch_sae))):
            s, n = _torch_ce(model, ids, mask, **kwargs)
            totals[key][0] += s
            totals[key][1] += n
    assert row["ce_clean"] == pytest.approx(totals["clean"][0] / totals["clean"][1], abs=1e-4)
    assert row["ce_spliced"] == pytest.approx(totals["spliced"][0] / totals["spliced"][1], abs=1e-4)
    assert row["ce_spliced"] != pytest.approx(row["ce_clean"], abs=1e-3)
    expected_positions = sum(int((~np.isin(b, special))[:, 1:].sum()) for b in batches)
    assert row["n_tokens"] == expected_positions < 66


def test_joint_groups_need_distinct_hooks():
    a, b, c = identity_sae("layers.0"), identity_sae("layers.0.mlp"), identity_sae("layers.0.mlp")
    assert joint_groups({"layers.0__v": a, "layers.0.mlp__v": b}) == {"layer 0 [v]": ["layers.0__v",
                                                                                      "layers.0.mlp__v"]}
    assert joint_groups({"x__v": b, "y__v": c}) == {}
    assert joint_groups({"layers.0__v": a, "layers.0.mlp__w": b}) == {}


def test_token_mask_padding_special_first_and_outliers():
    from qwen_sae_jax.eval.splice import loss_mask, outlier_positions, token_mask

    ids = jnp.array([[0, 0, 5, 6, 9, 7], [5, 9, 6, 7, 8, 0]])
    attn = jnp.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])            # left and right padding
    mask = token_mask(ids, attn, jnp.array([9]), exclude_first=True)
    np.testing.assert_array_equal(mask, [[0, 0, 0, 1, 0, 1], [0, 0, 1, 1, 1, 0]])
    np.testing.assert_array_equal(loss_mask(mask, attn), [[0, 0, 0, 1, 0], [0, 0, 1, 1, 0]])
    act = jnp.ones((2, 6, 4)).at[0, 5].set(100.0).at[1, 3].set(3.0)       # norms 2, 200, 6
    out = outlier_positions([act], mask, factor=10.0)
    np.testing.assert_array_equal(out, [[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]])


def test_outlier_filter_changes_the_evaluated_positions(tiny_lm):
    from dataclasses import replace

    batches = token_batches(seed=11)
    sae = {"z": zero_sae("layers.0")}
    plain = evaluate(tiny_lm, sae, batches, replace(CFG, joint=False))
    strict = evaluate(tiny_lm, sae, batches, replace(CFG, joint=False, norm_outlier_factor=1.05))
    assert strict.n_tokens < plain.n_tokens == 66
