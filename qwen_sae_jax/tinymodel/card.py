"""The model cards (``assets/tiny-qwen3/README.md``, ``assets/tiny-qwen3.5/README.md``), rendered from the
measured figures only."""
from __future__ import annotations

import json

from qwen_sae_jax.models import registry
from qwen_sae_jax.tinymodel import chat_content as C

DEFAULT_PRETRAIN_LR = 3e-3        # launch/build_tiny_model.py's --lr default (the card names any other value)

SOURCE_DESCRIPTIONS = {
    "english": "English prose: Debian `fortunes` (one fortune per document; ASCII-art files left out)",
    "chinese": "Chinese: Debian `fortunes-zh` (chinese, tang300, song100)",
    "docs": "technical English: Debian `python3.11-doc` reST sources, cut into ~4 KB pieces",
    "code": "Python code: the standard library of Debian `libpython3.11-stdlib` (tests, encodings, lib2to3 left out)",
    "chat": "synthetic ChatML conversations (`qwen_sae_jax/tinymodel/chat.py`)",
}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _family(cfg: dict) -> str:
    """``qwen3`` or ``qwen3_5``: the build script's ``--family`` of an HF config dict."""
    return registry.family_of(cfg).model_types[0]


def _header(family: str) -> list[str]:
    if family == "qwen3":
        return ["# tiny-qwen3: the embedded default model of qwen_sae_jax", "",
                "A Qwen3-architecture language model trained from scratch by this project (its own Flax Qwen3 and "
                "optax)", "on text obtainable offline, so that demos, tests and case studies run on meaningful "
                "activations without", "downloads or accelerators.", "",
                "Load it with `qwen_sae_jax.load_model(\"tiny\")`, or as-is with `transformers`"]
    return ["# tiny-qwen3.5: the embedded hybrid Qwen3.5 model of qwen_sae_jax", "",
            "A Qwen3.5-architecture (hybrid Gated DeltaNet + gated attention) language model trained from scratch by "
            "this project", "(its own Flax Qwen3.5 and optax) on the same data, tokenizer, chat template, "
            "instruction-tuning stage and", "held-out splits as `tiny` (tiny-qwen3), so that SAEs on linear-attention "
            "and full-attention layers can be", "studied without downloads or accelerators.", "",
            "Load it with `qwen_sae_jax.load_model(\"tiny-qwen3.5\")`, or as-is with `transformers`"]


def _architecture(cfg: dict, family: str) -> str:
    common = (f"{cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, MLP {cfg['intermediate_size']}, "
              f"{cfg['num_attention_heads']} query heads / {cfg['num_key_value_heads']} key-value heads (GQA) of "
              f"head_dim {cfg['head_dim']}")
    tail = f"tied embeddings, vocabulary {cfg['vocab_size']} (byte-level BPE), float32 weights."
    if family == "qwen3":
        return f"`model_type: qwen3`, {common}, q/k RMSNorm, RoPE theta {cfg['rope_theta']:g}, {tail}"
    rope = cfg["rope_parameters"]
    kinds = cfg["layer_types"]
    full = [i for i, t in enumerate(kinds) if t == "full_attention"]
    linear = [i for i, t in enumerate(kinds) if t == "linear_attention"]
    return (f"`model_type: {cfg['model_type']}` (`Qwen3_5ForCausalLM`), {common}. Layer kinds "
            f"(`layer_types`): Gated DeltaNet (`linear_attention`, module `linear_attn`) on layers "
            f"{', '.join(map(str, linear))}; gated full attention (`full_attention`, `self_attn`: output gate, "
            f"q/k RMSNorm, partial RoPE on {rope['partial_rotary_factor']:g} of head_dim, theta "
            f"{rope['rope_theta']:g}) on layers {', '.join(map(str, full))}. Gated DeltaNet: "
            f"{cfg['linear_num_key_heads']} key heads of dim {cfg['linear_key_head_dim']}, "
            f"{cfg['linear_num_value_heads']} value heads of dim {cfg['linear_value_head_dim']}, causal conv kernel "
            f"{cfg['linear_conv_kernel_dim']}. Zero-centred RMSNorms; {tail}")


def _rebuild_flags(train: dict, family: str) -> str:
    """Flags of ``launch/build_tiny_model.py`` that reproduce the run's family, shape and learning rate."""
    flags = ""
    if family != "qwen3":
        kinds = train["model_shape"]["layer_types"]
        interval = kinds.index("full_attention") + 1
        flags += f" --family {family} --layers {len(kinds)} --full-attention-interval {interval}"
    if train["train_config"]["lr"] != DEFAULT_PRETRAIN_LR:
        flags += f" --lr {train['train_config']['lr']:g}"
    return flags


# long: the model card's template, read top to bottom like the card it writes
def render_card(report: dict, train: dict | None, corpus_stats: dict | None, seed: int) -> str:
    s = report["summary"]
    cfg = report["config"]
    family = _family(cfg)
    lines = [
        "---",
        "license: apache-2.0",
        "library_name: transformers",
        f"tags: [{family}, tiny, sparse-autoencoders, qwen_sae_jax]",
        "---",
        "",
        *_header(family),
        "(`AutoModelForCausalLM` / `AutoTokenizer` on this folder). It speaks a little English, Chinese and Python,",
        "follows ChatML chat structure and refuses clearly harmful requests. It is a toy: its answers are",
        "template-like and often wrong. Rebuild it with the command under \"Training run\" (see `docs/tiny_model.md`).",
        "",
        "## Architecture",
        "",
        _architecture(cfg, family),
        "",
        "Tokenizer: byte-level BPE trained with HF `tokenizers` on an equal share of each training source, Qwen2/3",
        "pre-tokenisation regex (digits split one by one), Qwen3 special tokens `<|endoftext|>` (document separator,",
        "padding), `<|im_start|>`, `<|im_end|>` (end of turn, generation stop), `<think>`, `</think>`; no BOS.",
        "The ChatML `chat_template` in `tokenizer_config.json` renders `<|im_start|>{role}\\n{content}<|im_end|>\\n`",
        "and, for generation, `<|im_start|>assistant\\n` (no thinking block).",
        "",
        "## Data",
        "",
        "| source | content | train docs | train chars | held-out docs | held-out chars |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, desc in SOURCE_DESCRIPTIONS.items():
        st = (corpus_stats or {}).get(name, {})
        lines.append(f"| {name} | {desc} | {st.get('train_docs', '?'):,} | {st.get('train_chars', '?'):,} | "
                     f"{st.get('heldout_docs', '?'):,} | {st.get('heldout_chars', '?'):,} |"
                     if st else f"| {name} | {desc} | | | | |")
    n_prompts = next(iter(report["refusal"].values()))["n_harmful"] if report["refusal"] else "?"
    n_harm_train = sum(len(v[0]) for v in C.HARMFUL_REQUESTS.values())
    n_harm_held = sum(len(v[1]) for v in C.HARMFUL_REQUESTS.values())
    lines += [
        "",
        f"Synthetic chat: 1-3 turns, 25% with a system prompt; about 40% of the user turns are harmful requests in "
        f"{len(C.HARMFUL_REQUESTS)} categories ({', '.join(sorted(C.HARMFUL_REQUESTS))}; {n_harm_train} training "
        f"requests) answered with refusals composed from {len(C.REFUSAL_OPENERS)} openers, per-category reasons "
        f"and alternatives; the others are harmless (benign how-to requests using the very same "
        f"{len(C.HOWTO_TEMPLATES_TRAIN)} templates as the harmful ones, recipes, arithmetic, capitals, "
        "translation, Python code, Python glossary and module questions, word games, sorting, unit conversion, "
        "greetings) with computed or templated helpful answers.",
        "",
        "Held out (in `heldout/`, never trained on): about 100 K characters per text source (60 K for Chinese), "
        "1,000 chat conversations of the training distribution that do not occur in training, and the prompt lists "
        f"`harmful_prompts.jsonl` / `harmless_prompts.jsonl` ({n_prompts} each) built only from "
        f"{len(C.HOWTO_TEMPLATES_HELDOUT)} held-out templates and held-out topics ({n_harm_held} harmful requests, "
        "plus held-out dishes, countries, words, code tasks, ...). Each record says its template and topic.",
        "",
    ]
    if train:
        tc = train["train_config"]
        lines += [
            "## Training run",
            "",
            f"Seed {seed}; {train['steps']:,} steps of {tc['batch_size']} x {tc['ctx_len']} tokens "
            f"({train['tokens']:,} tokens) in {train['elapsed_s'] / 60:.1f} minutes on a shared 2-core CPU; AdamW "
            f"(b2 0.95, weight decay {tc['weight_decay']} on matrices), peak LR {tc['lr']:g}, {tc['warmup_steps']} "
            f"warm-up steps, cosine to {tc['min_lr_ratio']:g} x peak, gradient clipping {tc['grad_clip']}; source "
            f"mix {json.dumps(tc['source_weights'])}; stop reason: {train['stop_reason']}.",
        ]
        sft = train.get("sft")
        rebuild = (f"python launch/build_tiny_model.py --seed {seed}{_rebuild_flags(train, family)} "
                   f"--max-steps {train['total_steps']} --time-budget 0")
        if sft:
            sc = sft["train_config"]
            loss = "reply" if sc.get("reply_only_sources") else "all"
            lines += [
                "",
                f"Instruction tuning (`sft` stage), from {sft['base']}: {sft['steps']:,} steps "
                f"({sft['tokens']:,} tokens) in {sft['elapsed_s'] / 60:.1f} minutes, peak LR {sc['lr']:g} "
                f"({sc['warmup_steps']} warm-up steps, cosine to {sc['min_lr_ratio']:g} x peak); rows "
                f"{_pct(sc['source_weights']['chat'])} from {sft['chat_conversations']:,} freshly synthesised "
                "conversations in the instruction-tuning variant (`ChatSynthesizer(instruct=True)`: "
                f"{_pct(sft['harmful_fraction'])} harmful turns, generic greetings / sign-offs around harmful and "
                "harmless prompts alike, helpful answers often opening with \"Sure!\", more benign requests about "
                "people and places), the rest from the four pre-training text sources; loss on "
                + ("the assistant replies only for chat rows, every token for text rows."
                   if loss == "reply" else "every token."),
            ]
            rebuild += (f" --sft-steps {sc['max_steps']} --sft-lr {sc['lr']:g} --sft-warmup {sc['warmup_steps']} "
                        f"--sft-chat {sft['chat_conversations']} --sft-chat-share {sc['source_weights']['chat']:g} "
                        f"--sft-harmful-fraction {sft['harmful_fraction']:g} "
                        f"--sft-loss {loss}")
        else:
            rebuild += " --sft-steps 0"
        lines += [f"Rebuild exactly: `{rebuild}` (same machine type, library versions and `qwen_sae_jax` code: a "
                  "change to the model's arithmetic changes the rounding, and so the trained weights).", ""]
    lines += [
        "## Quality (measured by `qwen_sae_jax/tinymodel/quality.py`)",
        "",
        f"- Flax vs `transformers` PyTorch logits on held-out chat text, float32: max abs diff "
        f"{s['parity_max_abs_diff']:.2e} (bar 1e-4: {'met' if s['parity_ok'] else 'NOT met'}).",
        "- Held-out cross-entropy (nats/token) against the unigram baseline of the same split:",
        "",
        "| source | held-out tokens | model CE | unigram CE | model bits/char |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, v in report["heldout"].items():
        lines.append(f"| {name} | {v['tokens']:,} | {v['model_ce']:.3f} | {v['unigram_ce']:.3f} | "
                     f"{v['model_bits_per_char']:.3f} |")
    lines += ["", f"- Greedy chat generation ({report['max_new_tokens']} new tokens), judged by "
              "`qwen_sae_jax.steer.refusal_matcher.is_refusal`:", "",
              "| generator | harmful refused (bar >= 90%) | harmless refused (bar <= 10%) |", "|---|---:|---:|"]
    for name, r in report["refusal"].items():
        lines.append(f"| {name} | {_pct(r['harmful_refusal_rate'])} of {r['n_harmful']} | "
                     f"{_pct(r['harmless_refusal_rate'])} of {r['n_harmless']} |")
    lines += ["", f"Refusal bars {'met' if s['refusal_bars_met'] else 'NOT met'} "
              f"(figures from {s['refusal_generator']}).", ""]
    first = report["refusal"].get(s["refusal_generator"])
    if first:
        lines += ["Sample generations:", ""]
        for kind in ("harmful", "harmless"):
            for ex in first["examples"][kind][:3]:
                resp = ex["response"].replace("\n", " ")[:160]
                lines.append(f"- ({kind}) **{ex['prompt']}** -> {resp}")
        lines.append("")
    lines += [
        "## Limitations",
        "",
        "Tiny and trained for minutes: fluent only inside the narrow synthetic chat distribution; prose and code",
        "continuations are locally plausible but meaningless; its refusal is keyed to the harmful vocabulary of",
        "its training data and is not a safety mechanism. Context length used in training: 256 tokens.",
        "",
    ]
    return "\n".join(lines)
