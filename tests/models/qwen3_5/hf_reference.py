"""Tiny random transformers Qwen3.5 checkpoints built in the tests (no download), and the torch references.

The reference is transformers' torch fallback: eager attention, eager experts, and the pure-torch delta rule /
causal conv (the optional fla / causal-conv1d kernels are not installed in this environment; ``build_hf``
checks that).
"""
import numpy as np
import torch

TINY = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, layer_types=["linear_attention", "full_attention"],
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, linear_num_key_heads=2,
            linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=16, linear_conv_kernel_dim=4,
            tie_word_embeddings=False, rope_theta=10000.0, partial_rotary_factor=0.25)
DENSE = dict(intermediate_size=96)
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48)


def text_config(moe=False, **overrides):
    """transformers ``Qwen3_5TextConfig`` / ``Qwen3_5MoeTextConfig`` of the tiny test model."""
    import transformers

    kw = {**TINY, **(MOE if moe else DENSE), **overrides}
    if "full_attention_interval" in overrides:
        kw.pop("layer_types")
    rope = {"rope_type": "default", "rope_theta": kw.pop("rope_theta"),
            "partial_rotary_factor": kw.pop("partial_rotary_factor")}
    cls = transformers.Qwen3_5MoeTextConfig if moe else transformers.Qwen3_5TextConfig
    return cls(**kw, rope_parameters=rope)


def randomize(model, seed=0):
    """Move every parameter that transformers initialises to a constant (zero-centred norms at 0, gated norms
    at 1, dt_bias at 1) to random values, and make the router decisive (a wrong expert shows in the logits)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("norm.weight") or name.endswith("dt_bias"):
                p.add_(0.3 * noise)
            elif name.endswith("A_log"):
                p.copy_(noise)
            elif name.endswith("mlp.gate.weight"):
                p.mul_(50.0)
    return model


def build_hf(tmp_path, name="hf", moe=False, seed=0, **overrides):
    """Save a random HF ``Qwen3_5(Moe)ForCausalLM`` to ``tmp_path/name``; returns (torch model, directory)."""
    import transformers
    from transformers.utils import import_utils

    assert not (import_utils.is_flash_linear_attention_available() or import_utils.is_causal_conv1d_available()), \
        "a kernel package is installed: transformers would not use its torch fallbacks"
    torch.manual_seed(seed)
    config = text_config(moe, **overrides)
    cls = transformers.Qwen3_5MoeForCausalLM if moe else transformers.Qwen3_5ForCausalLM
    model = randomize(cls(config), seed).eval()
    out = tmp_path / name
    model.save_pretrained(out)
    return reference(out, moe), str(out)


def reference(path, moe=False):
    """The checkpoint at ``path`` loaded by transformers with the torch fallbacks (eager attention and experts)."""
    import transformers

    kw = {"experts_implementation": "eager"} if moe else {}
    return transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", **kw).eval()


def hf_logits(model, ids, attention_mask=None, position_ids=None):
    t = lambda a: None if a is None else torch.tensor(np.asarray(a))  # noqa: E731
    with torch.no_grad():
        return model(input_ids=t(ids), attention_mask=t(attention_mask), position_ids=t(position_ids)).logits.numpy()


def assert_close(got, want, rtol=1e-4, where=""):
    """max |got - want| <= rtol * max |want| (the project's parity bar: relative to the reference's scale)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape, where)
    scale = float(np.abs(want).max())
    err = float(np.abs(got - want).max())
    assert scale > 0 and err <= rtol * scale, f"{where}: max error {err:.3g} vs scale {scale:.3g}"
