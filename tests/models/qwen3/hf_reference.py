"""Reference helpers: tiny random transformers Qwen3 / Qwen3-MoE checkpoints built in the tests (no download)."""
import numpy as np
import torch

TINY = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=10000.0)


def build_hf(tmp_path, name="hf", moe=False, seed=0, **overrides):
    """Save a random HF model to ``tmp_path/name``; returns (torch model in eval mode, directory)."""
    import transformers

    torch.manual_seed(seed)
    kwargs = {**TINY, **overrides}
    theta = kwargs.pop("rope_theta")
    if moe:
        kwargs.setdefault("num_experts", 8)
        kwargs.setdefault("num_experts_per_tok", 2)
        kwargs.setdefault("moe_intermediate_size", 24)
        config = transformers.Qwen3MoeConfig(**kwargs, rope_parameters={"rope_type": "default", "rope_theta": theta})
        model = transformers.Qwen3MoeForCausalLM(config)
    else:
        config = transformers.Qwen3Config(**kwargs, rope_parameters={"rope_type": "default", "rope_theta": theta})
        model = transformers.Qwen3ForCausalLM(config)
    with torch.no_grad():  # HF inits norms to ones; randomise them so norm weights are really tested
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
            if n.endswith("mlp.gate.weight"):  # decisive routing: a wrong expert choice shows in the logits
                p.mul_(50.0)
    model.eval()
    out = tmp_path / name
    model.save_pretrained(out)
    return model, str(out)


def hf_logits(model, ids, attention_mask=None, position_ids=None):
    t = lambda a: None if a is None else torch.tensor(np.asarray(a))  # noqa: E731
    with torch.no_grad():
        return model(input_ids=t(ids), attention_mask=t(attention_mask), position_ids=t(position_ids)).logits.numpy()


def meta_param_counts(hf_config: dict) -> dict[str, int]:
    """Exact parameter counts of transformers' ``AutoModelForCausalLM`` for ``hf_config`` (a config.json dict, any
    family transformers knows), built on the meta device (shapes only, nothing allocated): ``total`` (a tied LM
    head counted once), ``non_embedding`` (less the input embedding and an untied LM head) and ``activated`` (per
    token: of the routed experts' weights only ``num_experts_per_tok / num_experts`` counted)."""
    import transformers

    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**hf_config))
    params = dict(model.named_parameters())  # a tied parameter appears once
    total = sum(p.numel() for p in params.values())
    embeddings = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    embedding = sum(p.numel() for p in params.values() if id(p) in embeddings)
    experts = sum(p.numel() for n, p in params.items() if ".mlp.experts." in n)
    inactive = 0
    if experts:
        n, k = model.config.num_experts, model.config.num_experts_per_tok
        assert experts % n == 0
        inactive = experts // n * (n - k)
    return {"total": total, "non_embedding": total - embedding, "activated": total - inactive}
