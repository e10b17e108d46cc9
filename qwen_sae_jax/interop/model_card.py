"""README.md model card for an exported SAE folder, ready to push to the Hugging Face hub."""
from __future__ import annotations

import re
from typing import Sequence

from qwen_sae_jax.interop.raw import RawSAE

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

_LOADING = {
    "saelens": ("SAELens (v6)", """```python
from sae_lens import SAE
sae = SAE.load_from_disk("PATH/TO/SAE_FOLDER")          # or SAE.from_pretrained(repo_id, folder)
```"""),
    "sparsify": ("EleutherAI sparsify", """```python
from sparsify import SparseCoder
saes = SparseCoder.load_many("PATH/TO/THIS_FOLDER", local=True)   # {hook point: SparseCoder}
```"""),
    "qwen-scope": ("Qwen-Scope", """```python
import torch
p = torch.load("layerN.sae.pt", weights_only=True)        # W_enc [d_sae, d_model], W_dec [d_model, d_sae]
pre = torch.relu(x @ p["W_enc"].T + p["b_enc"])
vals, idx = pre.topk(K, dim=-1)
z = torch.zeros_like(pre).scatter_(-1, idx, vals)
x_hat = z @ p["W_dec"].T + p["b_dec"]
```"""),
}

_CONVENTIONS = {
    "saelens": "`b_dec` is subtracted from the input iff `apply_b_dec_to_input` in cfg.json; "
               "`normalize_activations` is `none` (input scaling is folded into the weights).",
    "sparsify": "`b_dec` is always subtracted from the input; latents are TopK of the ReLU'd pre-activations.",
    "qwen-scope": "`b_dec` is never subtracted from the input; latents are TopK of the ReLU'd "
                  "pre-activations; `k` is listed below and in qwen_scope.json.",
}


def render_model_card(format: str, saes: Sequence[tuple[str, RawSAE]], eval_table_md: str | None = None) -> str:
    """Markdown with a hub metadata header, the SAE table, loading code and (optionally) the eval table."""
    title, loading = _LOADING[format]
    model_names = sorted({raw.model_name for _, raw in saes if raw.model_name})
    header = ["---", "library_name: " + {"saelens": "saelens", "sparsify": "sparsify"}.get(format, "pytorch"),
              "tags:", "- sparse-autoencoder", "- sae", "- qwen_sae_jax", f"- {format}"]
    hub_models = [m for m in model_names if _HUB_ID.match(m)]
    if hub_models:
        header.append(f"base_model: {hub_models[0]}")
    header.append("---")
    lines = header + [
        "",
        f"# Sparse autoencoders for {', '.join(model_names) or 'a Qwen3 model'}",
        "",
        f"Trained with qwen_sae_jax (JAX/Flax) and exported in the {title} format. Every SAE takes raw "
        "activations of its hook point (any input normalisation used in training is folded into the "
        f"weights). {_CONVENTIONS[format]}",
        "",
        "| SAE | hook | architecture | d_in | d_sae | k |",
        "|---|---|---|---|---|---|",
    ]
    for name, raw in saes:
        lines.append(f"| {name} | {raw.hook_name or '?'} | {raw.architecture} | {raw.d_in} | {raw.d_sae} | "
                     f"{raw.k if raw.k is not None else '-'} |")
    lines += ["", "## Loading", "", loading, ""]
    if eval_table_md:
        lines += ["## Evaluation", "", eval_table_md.strip(), ""]
    return "\n".join(lines)
