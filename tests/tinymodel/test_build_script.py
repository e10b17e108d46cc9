"""launch/build_tiny_model.py's --family option, driven through its main() at tiny budgets."""
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from qwen_sae_jax.tinymodel import HELDOUT_SOURCES, TINY_MODEL_DIR, heldout_texts

SCRIPT = Path(__file__).resolve().parents[2] / "launch" / "build_tiny_model.py"
TINY_SHAPE = ["--hidden", "32", "--intermediate", "64", "--heads", "2", "--kv-heads", "1", "--head-dim", "16",
              "--linear-head-dim", "8", "--ctx-len", "32", "--batch-size", "2"]


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("build_tiny_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _work_dir(root: Path) -> Path:
    """What the corpus / tokenizer / tokenize stages leave, from the committed tokenizer and held-out texts."""
    from tokenizers import Tokenizer

    from qwen_sae_jax.tinymodel import data
    work = root / "work"
    (work / "tokenizer").mkdir(parents=True)
    (work / "tokens").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(TINY_MODEL_DIR / name, work / "tokenizer" / name)
    tok = Tokenizer.from_file(str(work / "tokenizer" / "tokenizer.json"))
    for source in HELDOUT_SOURCES:
        stream = data.tokenize_split(tok, heldout_texts(source)[:20], tok.token_to_id("<|endoftext|>"))
        np.save(work / "tokens" / f"{source}.train.npy", stream)
        np.save(work / "tokens" / f"{source}.heldout.npy", stream)
    return work


def test_unknown_family_lists_the_valid_ones(build, tmp_path, capsys):
    with pytest.raises(SystemExit):
        build.main(["--family", "qwen4", "--stages", "export", "--work", str(tmp_path)])
    assert "unknown --family 'qwen4'; valid: qwen3, qwen3_5" in capsys.readouterr().err


@pytest.mark.slow
def test_family_qwen3_5_trains_and_exports_a_hybrid_that_transformers_loads(build, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from qwen_sae_jax import load_model
    work, out = _work_dir(tmp_path), tmp_path / "out"
    build.main(["--family", "qwen3_5", "--stages", "train,export", "--work", str(work), "--out", str(out),
                "--max-steps", "3", "--time-budget", "0", *TINY_SHAPE])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "qwen3_5_text"        # the default shape: linear, full, linear, full
    assert cfg["layer_types"] == ["linear_attention", "full_attention"] * 2
    assert (cfg["hidden_size"], cfg["linear_num_value_heads"], cfg["linear_key_head_dim"]) == (32, 4, 8)
    summary = json.loads((work / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["model_shape"]["family"] == "qwen3_5"
    lm = load_model(str(out))
    ids = np.asarray([lm.tokenizer("<|im_start|>user\nHi<|im_end|>\n")["input_ids"]], np.int64)
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)).logits.numpy()
    assert np.abs(np.asarray(lm.logits(ids.astype(np.int32))) - ref).max() <= 1e-4
