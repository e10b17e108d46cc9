"""Language suppression: the Chinese-token set, the metrics against a direct computation, the table."""
import jax
import numpy as np

from qwen_sae_jax.lm import pad_batch
from qwen_sae_jax.steer import run
from qwen_sae_jax.steer.interventions import ablate_features
from qwen_sae_jax.steer.language import chinese_token_ids, language_suppression, measure_language

from .conftest import random_sae

CHINESE = ["白酒酿成缘好客，黄金散尽为收书。", "子谓仲弓曰：犁牛之子骍且角。", "夜来皓月才当午，重帘悄悄无人语。"]
ENGLISH = ["Never ever ask the tough looking gentleman.", "My ritual differs slightly in the morning.",
           "Do you suffer painful elimination?"]
EVAL = ["The shower stall was cold this morning.", "A little plastic robot sat on the floor.",
        "Structured programming with gotos is fun."]


def test_chinese_token_ids_on_the_tiny_tokenizer(lm):
    tok = lm.tokenizer
    ids = set(chinese_token_ids(tok).tolist())
    for text in ["的", "，", "。"]:
        assert tok.convert_tokens_to_ids(tok.tokenize(text))[0] in ids
    for text in [" the", "hello", "123", "\n"]:
        assert not set(tok(text, add_special_tokens=False)["input_ids"]) & ids
    assert not {tok.eos_token_id, tok.pad_token_id} & ids
    # every Chinese text is mostly written with these tokens; English with none of them
    for text in CHINESE:
        enc = tok(text, add_special_tokens=False)["input_ids"]
        assert np.mean([t in ids for t in enc]) > 0.5
    assert not any(t in ids for text in ENGLISH for t in tok(text, add_special_tokens=False)["input_ids"])


def test_measure_language_matches_a_direct_computation(lm):
    tok = lm.tokenizer
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in EVAL]
    chinese = chinese_token_ids(tok)
    got = measure_language(lm, prompts, None, chinese, new_tokens=3, batch_size=2)
    ids, mask = pad_batch(prompts, pad_id=lm.pad_token_id, side="left")
    logp = np.asarray(jax.nn.log_softmax(lm.logits(ids, mask).astype(np.float32), -1), np.float64)
    p, ce, n_p, n_t = 0.0, 0.0, 0, 0
    for row, seq in zip(logp, prompts):
        row = row[len(row) - len(seq):]                                   # the real (left-padded) positions
        p += np.exp(row)[:, chinese].sum()
        n_p += len(seq)
        ce -= sum(row[t, seq[t + 1]] for t in range(len(seq) - 1))
        n_t += len(seq) - 1
    assert np.isclose(got["p_chinese"], p / n_p, rtol=1e-4) and np.isclose(got["ce"], ce / n_t, rtol=1e-4)
    generated = []
    for chunk, real in ((prompts[:2], 2), ([prompts[2], prompts[2]], 1)):   # the batches measure_language ran
        out, lengths = run.generate_tokens(lm, *pad_batch(chunk, pad_id=lm.pad_token_id, side="left"),
                                           max_new_tokens=3)
        generated += [[t for t in row[:k] if t not in lm.stop_token_ids()] for row, k in list(zip(out, lengths))[:real]]
    assert got["gen_chinese"] == np.isin(sum(generated, []), chinese).mean()
    assert got["gen_any"] == np.mean([np.isin(g, chinese).any() for g in generated])


def test_language_suppression_table(lm):
    sae = random_sae("layers.1", seed=3)
    result = language_suppression(lm, sae, CHINESE, ENGLISH, EVAL, ablate=(1,), alphas=(1.0,), new_tokens=0,
                                  batch_size=4)
    names = [r["condition"] for r in result.rows]
    top = result.top[0]["feature"]
    rnd = result.random_controls[0]
    assert names == ["unsteered", "ablate top 1", "ablate 1 random (control)", f"top feature {top}, alpha -1",
                     "diff-of-means, alpha -1", f"random feature {rnd}, alpha -1 (control)"]
    assert top not in result.random_controls and result.top[0]["mean_diff"] >= result.top[1]["mean_diff"]
    tok = lm.tokenizer
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in EVAL]
    again = measure_language(lm, prompts, ablate_features(sae, [top]), chinese_token_ids(tok), 0, batch_size=4)
    assert np.isclose(again["p_chinese"], result.rows[1]["p_chinese"], rtol=1e-6)
    assert result.rows[3]["p_chinese"] != result.rows[0]["p_chinese"]
    md = result.markdown()
    assert "| unsteered |" in md and "| ablate top 1 |" in md and md.count("\n|") == len(names) + 2
