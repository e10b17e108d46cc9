"""SAEs by hook point (variants, aliases, globs, missing hooks) and text files."""
import json

import pytest

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.steer.sources import canonical_hook, load_hook_saes, read_texts

from .conftest import random_sae


@pytest.fixture(scope="module")
def two_variants(tmp_path_factory):
    from qwen_sae_jax.sae import save_sae

    root = tmp_path_factory.mktemp("variants")
    save_sae(random_sae("layers.0", 0), root / "saes" / "layers.0__topk-k8")
    save_sae(random_sae("layers.0", 1, "relu"), root / "saes" / "layers.0__relu")
    save_sae(random_sae("layers.1.mlp", 2), root / "saes" / "layers.1.mlp__topk-k8")
    return str(root)


def test_hooks_variants_aliases_and_globs(two_variants):
    with pytest.raises(UserError, match="several SAEs read layers.0: .*choose one with variant"):
        load_hook_saes([two_variants])
    saes = load_hook_saes([two_variants], variant="topk-k8")
    assert list(saes) == ["layers.0", "layers.1.mlp"]
    assert list(load_hook_saes([two_variants], ["blocks.1.hook_mlp_out"])) == ["layers.1.mlp"]
    assert list(load_hook_saes([two_variants], ["blocks.*.hook_mlp_out"])) == ["layers.1.mlp"]
    assert load_hook_saes([two_variants], ["layers.0"], variant="relu")["layers.0"].cfg.architecture == "relu"
    with pytest.raises(UserError, match=r"no SAE for hook 'layers.2'.*hooks with an SAE: layers.0, layers.1.mlp"):
        load_hook_saes([two_variants], ["layers.2"], variant="topk-k8")
    with pytest.raises(UserError, match="no SAE of variant 'jumprelu'"):
        load_hook_saes([two_variants], variant="jumprelu")
    assert canonical_hook("blocks.3.hook_resid_pre") == "layers.3.input"


def test_read_texts(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text(json.dumps({"prompt": "a"}) + "\n\n" + json.dumps("b") + "\n")
    assert read_texts(str(good), "prompt") == ["a", "b"]
    with pytest.raises(UserError, match=r"p.jsonl:1: no field 'text'.*fields: prompt"):
        read_texts(str(good))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{nope\n")
    with pytest.raises(UserError, match="bad.jsonl:1: not valid JSON"):
        read_texts(str(bad))
    assert len(read_texts("tiny:heldout/harmful_prompts.jsonl", "prompt")) > 10
    latin = tmp_path / "latin.txt"
    latin.write_bytes("ol\u00e9\r\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin.txt: not UTF-8 text \(byte 0xe9 at offset 2\)"):
        read_texts(str(latin))
    windows = tmp_path / "crlf.txt"
    windows.write_bytes("ol\u00e9\r\nsi\r\n".encode("utf-8"))
    assert read_texts(str(windows)) == ["ol\u00e9", "si"]
