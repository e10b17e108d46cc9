import json

from qwen_sae_jax.tinymodel import TINY_MODEL_DIR
from qwen_sae_jax.tinymodel.card import render_card


def _committed():
    report = json.loads((TINY_MODEL_DIR / "quality.json").read_text())
    train = json.loads((TINY_MODEL_DIR / "train_summary.json").read_text())
    return report, train


def test_card_states_the_rebuild_command_with_or_without_instruction_tuning():
    report, train = _committed()
    pre_only = {k: v for k, v in train.items() if k != "sft"}
    card = render_card(report, pre_only, None, seed=0)
    assert f"--max-steps {pre_only['total_steps']} --time-budget 0 --sft-steps 0`" in card
    assert "Instruction tuning" not in card
    sft = {"base": "the pre-training run (step 10)", "steps": 7, "tokens": 7 * 4096, "elapsed_s": 60.0,
           "chat_conversations": 123, "harmful_fraction": 0.25,
           "train_config": {"lr": 5e-4, "warmup_steps": 2, "min_lr_ratio": 0.1, "max_steps": 7,
                            "source_weights": {"chat": 0.8, "code": 0.2},
                            "reply_only_sources": ["chat"]}}
    card = render_card(report, dict(pre_only, sft=sft), None, seed=3)
    assert "--seed 3" in card and ("--sft-steps 7 --sft-lr 0.0005 --sft-warmup 2 --sft-chat 123 --sft-chat-share 0.8 "
                                   "--sft-harmful-fraction 0.25 --sft-loss reply`") in card
    assert "Instruction tuning (`sft` stage), from the pre-training run (step 10): 7 steps" in card
    assert "80.0% from 123 freshly synthesised conversations" in card and "25.0% harmful turns" in card
    assert "assistant replies only for chat rows" in card


def test_card_of_the_hybrid_names_its_layer_kinds_and_rebuild_flags():
    from dataclasses import asdict

    from qwen_sae_jax.tinymodel.train import ModelShape, hybrid_layer_types
    report, train = _committed()
    shape = ModelShape(family="qwen3_5", layer_types=hybrid_layer_types(4, 2))
    cfg = shape.config((4093, 4091), 4091).to_hf()
    pre_only = {k: v for k, v in train.items() if k != "sft"}
    hybrid = dict(pre_only, model_shape=asdict(shape), train_config=dict(pre_only["train_config"], lr=2e-3))
    card = render_card(dict(report, config=cfg), hybrid, None, seed=0)
    assert "# tiny-qwen3.5" in card and 'load_model("tiny-qwen3.5")' in card and "tags: [qwen3_5," in card
    assert (f"--seed 0 --family qwen3_5 --layers 4 --full-attention-interval 2 --lr 0.002 --max-steps "
            f"{pre_only['total_steps']} --time-budget 0 --sft-steps 0`") in card
    assert "`linear_attn`) on layers 0, 2; gated full attention" in card and "theta 10000) on layers 1, 3." in card
    assert "--family" not in render_card(report, pre_only, None, seed=0)       # tiny's command is unchanged
