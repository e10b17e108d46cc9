"""Write the trained tiny model as an HF directory (config, safetensors, tokenizer, generation config).

The model files are replaced inside ``out_dir``; anything else there (``heldout/``, ``README.md``) is kept.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from qwen_sae_jax.models.registry import save_hf

MODEL_FILES = ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def generation_config(config) -> dict:
    """Greedy decoding, stopping at ``<|im_end|>`` or ``<|endoftext|>``."""
    return {"do_sample": False, "eos_token_id": list(config.eos_token_ids), "pad_token_id": config.pad_token_id,
            "bos_token_id": config.bos_token_id, "max_new_tokens": 64}


def export_model(params, config, tokenizer_dir: Path, out_dir: Path, staging_dir: Path) -> None:
    """Save to ``staging_dir`` with the project's ``save_hf`` of the config's family (atomic), add tokenizer +
    generation config, then copy the model files into ``out_dir``."""
    save_hf(params, config, staging_dir)
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, staging_dir / name)
    (staging_dir / "generation_config.json").write_text(json.dumps(generation_config(config), indent=2) + "\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = out_dir / "chat_template.jinja"   # would override the template in tokenizer_config.json
    if stale.exists():
        stale.unlink()
    for name in MODEL_FILES:
        tmp = out_dir / f".{name}.tmp"
        shutil.copyfile(staging_dir / name, tmp)
        os.replace(tmp, out_dir / name)
