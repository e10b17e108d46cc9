"""`qwen-sae capture` with texts: --text, --file (empty lines skipped), --chat (a user turn, generation prompt
appended) and --dtype, checked against the tokenizer itself and a direct `capture` call."""
import numpy as np
import pytest

from qwen_sae_jax.cli import main
from tests.train.tiny_checkpoint import build_checkpoint

TEXTS = ["the cat sat on a mat", "seven quick foxes"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("capture-model") / "model")


def _capture(out, model_dir, *args):
    assert main(["capture", "--model", model_dir, "--hooks", "layers.1.mlp", "--out", str(out), *args]) == 0
    return {name: np.load(out / f"{name}.npy") for name in ("input_ids", "attention_mask", "layers.1.mlp")}


def _right_padded(rows, pad_id):
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, 1
    return ids, mask


def test_capture_texts_file_chat_and_dtype(model_dir, tmp_path):
    from qwen_sae_jax.lm import load_model

    lm = load_model(model_dir)
    tok = lm.tokenizer
    text = _capture(tmp_path / "text", model_dir, *(a for t in TEXTS for a in ("--text", t)))
    ids, mask = _right_padded([tok(t)["input_ids"] for t in TEXTS], tok.pad_token_id)
    np.testing.assert_array_equal(text["input_ids"], ids)
    np.testing.assert_array_equal(text["attention_mask"], mask)
    want = np.asarray(lm.capture(ids, ["layers.1.mlp"], attention_mask=mask)["layers.1.mlp"])
    assert text["layers.1.mlp"].dtype == np.float32 and text["layers.1.mlp"].shape == (2, ids.shape[1], 64)
    np.testing.assert_allclose(text["layers.1.mlp"], want, rtol=1e-5, atol=1e-6)

    lines = tmp_path / "texts.txt"
    lines.write_text(f"{TEXTS[0]}\n\n   \n{TEXTS[1]}\n")
    from_file = _capture(tmp_path / "file", model_dir, "--file", str(lines))
    for key in text:
        np.testing.assert_array_equal(from_file[key], text[key])

    chat = _capture(tmp_path / "chat", model_dir, "--text", TEXTS[0], "--chat")
    turn = tok(f"<|im_start|>user\n{TEXTS[0]}<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    np.testing.assert_array_equal(chat["input_ids"], [turn])
    assert chat["attention_mask"].all()

    bf16 = _capture(tmp_path / "bf16", model_dir, *(a for t in TEXTS for a in ("--text", t)), "--dtype", "bfloat16")
    real = mask.astype(bool)
    got, ref = bf16["layers.1.mlp"][real], text["layers.1.mlp"][real]
    assert bf16["layers.1.mlp"].dtype == np.float32 and not np.array_equal(got, ref)   # computed in bf16, saved f32
    assert np.linalg.norm(got - ref) < 0.05 * np.linalg.norm(ref)
    direct = load_model(model_dir, dtype="bfloat16").capture(ids, ["layers.1.mlp"], attention_mask=mask)
    np.testing.assert_array_equal(bf16["layers.1.mlp"], np.asarray(direct["layers.1.mlp"], np.float32))
