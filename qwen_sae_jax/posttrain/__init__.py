"""Post-training: full-parameter supervised fine-tuning of any model `load_model` reads, and SASFT (SAE-guided
SFT against unexpected code-switching).

    chat.py      conversations -> token ids + reply mask, from the model's chat template
    data.py      tokenised examples and deterministic per-step batches (per-process rows)
    features.py  the language features file (hook, feature, language, tau)
    sasft.py     the SASFT term, its thin encoder probes, tau(f, l) from language-tagged text
    step.py      reply-token CE + SASFT, AdamW, clipping, gradient checkpointing, the sharded compiled step
    loop.py      run_sft(): checkpoints, resume, logging, HF export
    config.py    SFTConfig (`qwen-sae sft CONFIG.yaml key=value ...`)
    synthesis.py feature-guided safety-data synthesis: target coverage, greedy selection, candidate generator
"""
