"""SASFT against plain numpy: the folded probe columns, the loss (both variants), its gradient, tau(f, l) from
language-tagged text; and one error per bad features / SAE input."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.posttrain.features import parse_features
from qwen_sae_jax.posttrain.sasft import (
    LanguageProbe,
    build_probes,
    check_features,
    language_tau,
    probe_columns,
    sasft_term,
)
from tests.posttrain.conftest import EN, ZH, feature_rows, random_sae

FEATS, FLANG = [3, 7, 11, 20], [1, 1, 0, 0]
TAU = np.array([[-0.5, 1.0], [0.2, 0.1], [0.3, -1.0], [0.0, 0.4]])   # [F, L]


def np_pre(sae, acts, feats):
    """The SAE's own convention, written out: (s * h - b_dec) @ W_enc[:, f] + b_enc[f]."""
    x = acts.astype(np.float64) * float(sae.act_scale) - np.asarray(sae.b_dec, np.float64)
    return x @ np.asarray(sae.W_enc, np.float64)[:, feats] + np.asarray(sae.b_enc, np.float64)[feats]


def np_loss_and_grad(sae, acts, reply, lang, zero):
    pre = np_pre(sae, acts, FEATS)                                        # [B, T, F]
    total, count = 0.0, 0
    grad = np.zeros_like(acts, np.float64)
    for b in range(acts.shape[0]):
        for t in range(acts.shape[1]):
            for j, f in enumerate(FEATS):
                if not reply[b, t] or FLANG[j] == lang[b]:
                    continue
                thr = 0.0 if zero else TAU[j, lang[b]]
                count += 1
                total += max(pre[b, t, j] - thr, 0.0)
                if pre[b, t, j] > thr:
                    grad[b, t] += float(sae.act_scale) * np.asarray(sae.W_enc, np.float64)[:, f]
    return total / count, grad / count


def probe_of(sae):
    W, b = probe_columns(sae, FEATS)
    return LanguageProbe(jnp.asarray(W, jnp.float32), jnp.asarray(b, jnp.float32), jnp.asarray(FLANG, jnp.int32),
                         jnp.asarray(TAU, jnp.float32), "layers.1")


@pytest.mark.parametrize("zero", [False, True])
def test_loss_and_gradient_match_numpy(zero):
    sae = random_sae()
    rng = np.random.default_rng(1)
    acts = rng.normal(size=(3, 5, 64)).astype(np.float32)
    reply = rng.random((3, 5)) < 0.6
    lang = np.array([0, 1, 1], np.int32)
    want, want_grad = np_loss_and_grad(sae, acts, reply, lang, zero)
    fn = lambda a: sasft_term(a, probe_of(sae), jnp.asarray(reply), jnp.asarray(lang), zero)  # noqa: E731
    got, grad = jax.value_and_grad(fn)(jnp.asarray(acts))
    assert want > 0
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4, atol=1e-6)
    # finite differences along a random direction (float64 numpy loss)
    d = rng.normal(size=acts.shape)
    eps = 1e-4
    fd = (np_loss_and_grad(sae, acts + eps * d, reply, lang, zero)[0]
          - np_loss_and_grad(sae, acts - eps * d, reply, lang, zero)[0]) / (2 * eps)
    np.testing.assert_allclose(np.sum(np.asarray(grad, np.float64) * d), fd, rtol=1e-3, atol=1e-5)


def test_no_reply_tokens_gives_zero():
    sae = random_sae()
    acts = jnp.ones((2, 4, 64))
    out = sasft_term(acts, probe_of(sae), jnp.zeros((2, 4), bool), jnp.array([0, 1]))
    assert float(out) == 0.0


def test_tau_matches_numpy(tiny_model, sae_dir):
    from qwen_sae_jax.interop import load_sae
    from qwen_sae_jax.lm import load_model, pad_batch
    lm = load_model(tiny_model)
    sae = load_sae(sae_dir)
    features = parse_features(feature_rows(tau=False))
    probes = build_probes(lm, {"s": sae}, features, ["layers.1"], tau={"layers.1": np.zeros((3, 2))})
    texts = {"en": EN, "zh": ZH}
    got = language_tau(lm, probes, texts, ["en", "zh"], max_tokens=60, ctx_len=16, batch_size=2)["layers.1"]
    for j, lang in enumerate(["en", "zh"]):
        seqs, budget = [], 60
        for text in texts[lang]:
            ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"][:16][:budget]
            seqs, budget = seqs + [ids] * bool(ids), budget - len(ids)
            if budget <= 0:
                break
        ids, mask = pad_batch(seqs, lm.pad_token_id)       # one right-padded forward; padding dropped below
        acts = np.asarray(lm.capture(ids, ["layers.1"], attention_mask=mask)["layers.1"])
        pres = [np_pre(sae, acts[r, :len(seq)], [3, 7, 11]) for r, seq in enumerate(seqs)]
        np.testing.assert_allclose(got[:, j], np.concatenate(pres).mean(0), rtol=1e-4, atol=1e-5)


def test_bad_inputs_are_one_line_each(tiny_model, sae_dir):
    from qwen_sae_jax.interop import load_sae
    from qwen_sae_jax.lm import load_model
    lm = load_model(tiny_model)
    saes = {"s": load_sae(sae_dir)}
    rows = feature_rows()
    check = lambda rows, layers=None, saes=saes: check_features(lm, saes, parse_features(rows), layers)  # noqa: E731
    assert check(rows) == ["layers.1"]
    with pytest.raises(UserError, match=r"outside its SAE \(d_sae=32\)"):
        check({**rows, "features": [{**rows["features"][0], "feature": 32}]})
    with pytest.raises(UserError, match="names hook 'layers.0' but no SAE in sasft.saes reads it"):
        check({**rows, "features": [{**rows["features"][0], "hook": "layers.0"}]})
    with pytest.raises(UserError, match="unknown hook name"):
        check({**rows, "features": [{**rows["features"][0], "hook": "layers.9"}]})
    with pytest.raises(UserError, match="has d_in=32 but model"):
        check(rows, saes={"s": random_sae(d_in=32)})
    with pytest.raises(UserError, match=r"sasft.layers \['layers.0'\] have no features"):
        check(rows, ["layers.0"])


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(languages=["en"]), "at least two distinct"),
    (lambda d: d["features"][0].update(language="fr"), "language 'fr' is not one of"),
    (lambda d: d["features"][0].update(feature=-1), "integer >= 0"),
    (lambda d: d["features"][0].update(extra=1), "unknown key"),
    (lambda d: d["features"][0].update(tau={"en": 1.0}), "must map every language"),
    (lambda d: d["features"][0].pop("tau"), "for every feature or for none"),
    (lambda d: d["features"].append(dict(d["features"][0])), "listed twice"),
])
def test_features_file_errors(edit, match):
    data = json.loads(json.dumps(feature_rows()))
    edit(data)
    with pytest.raises(UserError, match=match):
        parse_features(data)


def test_features_round_trip_and_from_contrast(tmp_path):
    from qwen_sae_jax.posttrain.features import FeatureSet, from_contrast, read_features, write_features
    fs = parse_features(feature_rows())
    write_features(tmp_path / "f.json", fs)
    assert read_features(tmp_path / "f.json") == fs
    contrast = {"top": {"layers.2": {"mean": {"mean_diff": [{"hook": "layers.2", "feature": 9},
                                                            {"hook": "layers.2", "feature": 4}]}}}}
    (tmp_path / "c.json").write_text(json.dumps(contrast))
    got = from_contrast(tmp_path / "c.json", "zh", top=1)
    assert [(f.hook, f.feature, f.language) for f in got] == [("layers.2", 9, "zh")]
    assert FeatureSet(["en", "zh"], got).hooks == ["layers.2"]
