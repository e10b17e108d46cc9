"""Fixtures for the post-training tests: the tiny random Qwen3 of the training tests (2 layers, d_model 64,
byte-level tokenizer with a ChatML template), bilingual chat data, a random SAE with non-trivial b_dec /
act_scale / b_enc on layers.1, and a features file for it."""
import json

import numpy as np
import pytest

from tests.train.tiny_checkpoint import build_checkpoint

EN = ["the cat sat on a mat", "seven quick foxes jumped", "lazy dogs near the river bank", "print the value"]
ZH = ["猫 狗 河 山", "水 河 山 猫", "山 水 狗", "河 猫 水 狗"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("sft-model") / "model")


def conversations(n: int) -> list[dict]:
    """``n`` one- or two-turn chats; reply language alternates en / zh; every third one has two turns."""
    out = []
    for i in range(n):
        reply = (EN if i % 2 == 0 else ZH)[i % 4]
        messages = [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": reply}]
        if i % 3 == 0:
            messages += [{"role": "user", "content": "more"}, {"role": "assistant", "content": reply[::-1]}]
        out.append({"messages": messages, "lang": "en" if i % 2 == 0 else "zh"})
    return out


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft-data") / "chat.jsonl"
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in conversations(24)))
    return str(path)


@pytest.fixture(scope="session")
def tau_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tau")
    (root / "en.txt").write_text("\n".join(EN))
    (root / "zh.txt").write_text("\n".join(ZH))
    return {"en": [str(root / "en.txt")], "zh": [str(root / "zh.txt")]}


def random_sae(hook: str = "layers.1", d_in: int = 64, d_sae: int = 32, seed: int = 0):
    import jax.numpy as jnp

    from qwen_sae_jax.sae import SAE, SAEConfig
    rng = np.random.default_rng(seed)
    cfg = SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=4, hook_name=hook)
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    return SAE(W_enc=f(d_in, d_sae) / 8, b_enc=f(d_sae), W_dec=f(d_sae, d_in), b_dec=f(d_in),
               threshold=jnp.zeros(d_sae), act_scale=jnp.float32(1.7), cfg=cfg)


@pytest.fixture(scope="session")
def sae_dir(tmp_path_factory):
    from qwen_sae_jax.sae import save_sae
    return str(save_sae(random_sae(), tmp_path_factory.mktemp("sae") / "layers.1"))


def feature_rows(tau: bool = True) -> dict:
    rows = [{"hook": "layers.1", "feature": f, "language": lang} for f, lang in ((3, "zh"), (7, "zh"), (11, "en"))]
    if tau:
        for r, t in zip(rows, ({"en": -0.5, "zh": 1.0}, {"en": 0.2, "zh": 0.1}, {"en": 0.3, "zh": -1.0})):
            r["tau"] = t
    return {"languages": ["en", "zh"], "features": rows}


@pytest.fixture
def features_file(tmp_path):
    path = tmp_path / "features.json"
    path.write_text(json.dumps(feature_rows()))
    return str(path)
