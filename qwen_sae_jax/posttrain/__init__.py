"""Post-training: full-parameter supervised fine-tuning of any model `load_model` reads, SASFT (SAE-guided
SFT against unexpected code-switching), GRPO with SAE-derived rewards, and feature-guided data synthesis.

    chat.py      conversations -> token ids + reply mask, from the model's chat template
    data.py      tokenised examples and deterministic per-step batches (per-process rows)
    features.py  the language features file (hook, feature, language, tau)
    sasft.py     the SASFT term, its thin encoder probes, tau(f, l) from language-tagged text
    step.py      reply-token CE + SASFT, AdamW, clipping, gradient checkpointing, the sharded compiled step
    loop.py      run_sft(): checkpoints, resume, logging, HF export
    config.py    SFTConfig (`qwen-sae sft CONFIG.yaml key=value ...`)
    synthesis.py feature-guided safety-data synthesis: target coverage, greedy selection, candidate generator
    codeswitch.py  measuring unexpected code-switching of a model's chat replies (`qwen-sae codeswitch`)
    rl_config.py, rl_grpo.py, rl_reward.py, rl_loop.py  GRPO (`qwen-sae rl`): config, rollout + loss, rewards
                 (repeated n-grams, SAE feature penalty), the run loop
"""
