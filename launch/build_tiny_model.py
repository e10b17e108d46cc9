#!/usr/bin/env python
"""Rebuild an embedded tiny model from scratch, deterministically from a seed: ``tiny`` (Qwen3,
``qwen_sae_jax/assets/tiny-qwen3``) or, with ``--family qwen3_5``, ``tiny-qwen3.5`` (the hybrid Gated DeltaNet +
gated attention Qwen3.5, ``qwen_sae_jax/assets/tiny-qwen3.5``). Both use the same corpora, tokenizer, chat
template, instruction-tuning stage and held-out splits: the stages before ``train`` do not depend on the family.

Stages (run all, or pick with --stages):
  install    apt-get install the text sources: fortunes fortunes-zh python3.11-doc (libpython3.11-stdlib
             comes with them); needs root, skipped when the files are already there
  corpus     gather + split the sources, synthesise chat, write held-out texts and prompt lists
  tokenizer  train the byte-level BPE (HF tokenizers) with Qwen3's special tokens and chat template
  tokenize   token streams per source (uint16 .npy) for training and held-out evaluation
  train      pre-train the project's Flax model of --family with optax (resumes from WORK/run/checkpoint.msgpack)
  sft        instruction-tune the pre-trained weights: freshly synthesised chat in its instruction-tuning
             variant (ChatSynthesizer(instruct=True)) mixed with the pre-training text (WORK/sft/)
  export     write the HF directory into the package assets (the sft weights when that stage ran)
  quality    measure the quality bars, write quality.json and the model card README.md

Examples:
  python launch/build_tiny_model.py                          # everything, 45-minute training budget
  python launch/build_tiny_model.py --max-steps 986 --time-budget 0   # the committed model, bit for bit (see its card)
  python launch/build_tiny_model.py --stages quality         # re-measure the committed model
  python launch/build_tiny_model.py --family qwen3_5          # tiny-qwen3.5 (work dir build/tiny-qwen3.5)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("install", "corpus", "tokenizer", "tokenize", "train", "sft", "export", "quality")
APT_PACKAGES = ("fortunes", "fortunes-zh", "python3.11-doc")
ASSETS = REPO / "qwen_sae_jax" / "assets"
ASSET_NAMES = {"qwen3": "tiny-qwen3", "qwen3_5": "tiny-qwen3.5"}   # --family -> asset folder (and default work dir)
DEFAULT_LAYERS = {"qwen3": 4, "qwen3_5": 4}     # qwen3_5: linear, full, linear, full (interval 2)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stage_install(args) -> None:
    from qwen_sae_jax.tinymodel import corpus
    try:
        corpus.check_sources_installed()
        log("text sources already installed")
        return
    except FileNotFoundError:
        pass
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], check=True, env=env)
    corpus.check_sources_installed()


def stage_corpus(args) -> None:
    from qwen_sae_jax.tinymodel import data
    stats = data.build_corpus(args.work, args.out / "heldout", args.seed, args.chat_train, args.chat_heldout,
                              args.n_prompts)
    (args.work / "corpus_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    log("corpus: " + json.dumps(stats))


def _train_texts(args, name: str) -> list[str]:
    from qwen_sae_jax.tinymodel import data
    return data.load_texts(args.work / "corpus" / f"{name}.train.jsonl")


def stage_tokenizer(args) -> None:
    from qwen_sae_jax.tinymodel import corpus, tokenizer
    sample: list[str] = []
    for name in corpus.SOURCES:       # an equal character budget per source, so no script dominates the merges
        n = 0
        for doc in _train_texts(args, name):
            if n >= args.tokenizer_chars_per_source:
                break
            sample.append(doc)
            n += len(doc)
    tok = tokenizer.train_bpe(sample, args.vocab_size)
    tokenizer.save_tokenizer(tok, args.work / "tokenizer", model_max_length=args.max_position_embeddings)
    log(f"tokenizer: vocab {tok.get_vocab_size()}, special ids {tokenizer.special_token_ids(tok)}")


def stage_tokenize(args) -> None:
    import numpy as np
    from tokenizers import Tokenizer

    from qwen_sae_jax.tinymodel import corpus, data
    tok = Tokenizer.from_file(str(args.work / "tokenizer" / "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    (args.work / "tokens").mkdir(parents=True, exist_ok=True)
    for name in corpus.SOURCES:
        train = data.tokenize_split(tok, _train_texts(args, name), eot)
        held = data.tokenize_split(tok, data.load_texts(args.out / "heldout" / f"{name}.jsonl"), eot)
        np.save(args.work / "tokens" / f"{name}.train.npy", train)
        np.save(args.work / "tokens" / f"{name}.heldout.npy", held)
        log(f"tokens {name}: train {len(train):,} held-out {len(held):,}")


def _model_shape(args):
    from qwen_sae_jax.tinymodel.train import ModelShape, hybrid_layer_types
    hybrid = {}
    if args.family == "qwen3_5":
        hybrid = dict(layer_types=hybrid_layer_types(args.layers, args.full_attention_interval),
                      partial_rotary_factor=args.partial_rotary_factor, linear_num_key_heads=args.linear_key_heads,
                      linear_num_value_heads=args.linear_value_heads, linear_key_head_dim=args.linear_head_dim,
                      linear_value_head_dim=args.linear_head_dim)
    return ModelShape(family=args.family, num_hidden_layers=args.layers, hidden_size=args.hidden,
                      intermediate_size=args.intermediate, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, head_dim=args.head_dim, vocab_size=args.vocab_size,
                      max_position_embeddings=args.max_position_embeddings, **hybrid)


def _special_ids(args) -> tuple[tuple[int, ...], int]:
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(args.work / "tokenizer" / "tokenizer.json"))
    return (tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")), tok.token_to_id("<|endoftext|>")


def stage_train(args) -> None:
    import numpy as np

    from qwen_sae_jax.tinymodel import corpus
    from qwen_sae_jax.tinymodel.train import TrainConfig, train
    streams = {n: np.load(args.work / "tokens" / f"{n}.train.npy") for n in corpus.SOURCES}
    heldout = {n: np.load(args.work / "tokens" / f"{n}.heldout.npy") for n in corpus.SOURCES}
    cfg = TrainConfig(seed=args.seed, ctx_len=args.ctx_len, batch_size=args.batch_size, lr=args.lr,
                      max_steps=args.max_steps, time_budget_s=args.time_budget)
    eos, pad = _special_ids(args)
    _, _, summary = train(args.work / "run", streams, heldout, _model_shape(args), cfg, eos, pad, log=log)
    log("train summary: " + json.dumps({k: v for k, v in summary.items() if k not in ("train_config", "model_shape")}))


def _load_checkpoint(args, run: str):
    """``(params, config, step)`` of ``WORK/<run>/checkpoint.msgpack`` (config of the run's own family)."""
    import pickle

    from flax import serialization

    from qwen_sae_jax.models.registry import init_params
    from qwen_sae_jax.tinymodel.train import ModelShape
    saved = pickle.loads((args.work / run / "checkpoint.msgpack").read_bytes())
    eos, pad = _special_ids(args)
    config = ModelShape(**saved["model_shape"]).config(eos, pad)
    return serialization.from_bytes(init_params(config), saved["params"]), config, saved["state"]["step"]


def stage_sft(args) -> None:
    import random

    import numpy as np
    from tokenizers import Tokenizer

    from qwen_sae_jax.tinymodel import corpus, data
    from qwen_sae_jax.tinymodel.chat import ChatSynthesizer, PythonDocsFacts, render_chatml
    from qwen_sae_jax.tinymodel.train import ChatTokenIds, ModelShape, TrainConfig, train
    if args.sft_steps <= 0:
        log("sft: --sft-steps 0, skipped")
        return
    if args.sft_from is not None:         # an HF directory (e.g. a previously exported pre-trained model)
        from qwen_sae_jax.models.registry import load_hf
        config, params = load_hf(args.sft_from)
        base = f"the weights in {args.sft_from}"
    else:
        params, config, step = _load_checkpoint(args, "run")
        base = f"the pre-training run (step {step})"
    shape = ModelShape.of_config(config)                  # the base's own shape (and family)
    synth = ChatSynthesizer(PythonDocsFacts.from_sources(corpus.PYDOC_SOURCES),
                            harmful_fraction=args.sft_harmful_fraction, instruct=True)
    rng = random.Random(f"{args.seed}-chat-sft")
    chats = [render_chatml(synth.conversation(rng, "train")) for _ in range(args.sft_chat)]
    tok = Tokenizer.from_file(str(args.work / "tokenizer" / "tokenizer.json"))
    streams = {n: np.load(args.work / "tokens" / f"{n}.train.npy") for n in corpus.SOURCES}
    streams["chat"] = data.tokenize_split(tok, chats, tok.token_to_id("<|endoftext|>"))
    heldout = {n: np.load(args.work / "tokens" / f"{n}.heldout.npy") for n in corpus.SOURCES}
    text_share = (1.0 - args.sft_chat_share) / (len(corpus.SOURCES) - 1)
    weights = {n: (args.sft_chat_share if n == "chat" else text_share) for n in corpus.SOURCES}
    cfg = TrainConfig(seed=args.seed, ctx_len=args.ctx_len, batch_size=args.batch_size, lr=args.sft_lr,
                      warmup_steps=args.sft_warmup, max_steps=args.sft_steps, time_budget_s=0.0,
                      eval_every=100, checkpoint_every=100, source_weights=weights,
                      reply_only_sources=("chat",) if args.sft_loss == "reply" else ())
    chat_ids = ChatTokenIds(tok.token_to_id("<|im_start|>"), tok.token_to_id("assistant"),
                            tok.token_to_id("<|im_end|>"))
    eos, pad = _special_ids(args)
    log(f"sft: {len(chats):,} conversations ({len(streams['chat']):,} tokens), from {base}")
    _, _, summary = train(args.work / "sft", streams, heldout, shape, cfg, eos, pad, log=log, base_params=params,
                        chat_ids=chat_ids)
    summary.update(base=base, chat_conversations=len(chats), harmful_fraction=args.sft_harmful_fraction)
    (args.work / "sft" / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log("sft summary: " + json.dumps({k: v for k, v in summary.items() if k not in ("train_config", "model_shape")}))


def _train_summary(args) -> dict | None:
    """The pre-training summary, with the instruction-tuning one under ``"sft"`` when that stage ran."""
    pre, sft = args.work / "run" / "train_summary.json", args.work / "sft" / "train_summary.json"
    summary = json.loads(pre.read_text()) if pre.exists() else None
    if summary is not None and sft.exists():
        summary["sft"] = json.loads(sft.read_text())
    return summary


def stage_export(args) -> None:
    from qwen_sae_jax.tinymodel.export import export_model
    run = "sft" if (args.work / "sft" / "checkpoint.msgpack").exists() else "run"
    params, config, step = _load_checkpoint(args, run)
    export_model(params, config, args.work / "tokenizer", args.out, args.work / "hf")
    log(f"exported {run} step {step} to {args.out}")


def stage_quality(args) -> None:
    from qwen_sae_jax.tinymodel import quality
    train_summary = _train_summary(args)
    corpus_stats = json.loads((args.work / "corpus_stats.json").read_text()) \
        if (args.work / "corpus_stats.json").exists() else None
    report = quality.measure(args.out, max_new_tokens=args.gen_tokens, log=log)
    (args.out / "quality.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if train_summary is not None:
        (args.out / "train_summary.json").write_text(json.dumps(train_summary, indent=2) + "\n")
    quality.write_model_card(args.out, report, train_summary, corpus_stats, seed=args.seed)
    log("quality: " + json.dumps(report["summary"]))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (splits, chat, init, batches)")
    p.add_argument("--family", default="qwen3",
                   help=f"model family: {', '.join(ASSET_NAMES)} "
                        "(qwen3_5: the hybrid Gated DeltaNet + attention model)")
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default build/<asset name>)")
    p.add_argument("--out", type=Path, default=None,
                   help="the HF model directory to write (default qwen_sae_jax/assets/<asset name>)")
    p.add_argument("--chat-train", type=int, default=80_000, help="synthetic training conversations")
    p.add_argument("--chat-heldout", type=int, default=1_000, help="held-out conversations (CE split)")
    p.add_argument("--n-prompts", type=int, default=150, help="held-out harmful and harmless prompts, each")
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size, special tokens included")
    p.add_argument("--tokenizer-chars-per-source", type=int, default=2_500_000,
                   help="training characters per source fed to the BPE trainer")
    p.add_argument("--layers", type=int, default=None,
                   help=f"decoder layers (default by family: {json.dumps(DEFAULT_LAYERS)})")
    p.add_argument("--hidden", type=int, default=192, help="hidden (residual) size")
    p.add_argument("--intermediate", type=int, default=512, help="MLP intermediate size")
    p.add_argument("--heads", type=int, default=4, help="query heads")
    p.add_argument("--kv-heads", type=int, default=2, help="key/value heads (GQA)")
    p.add_argument("--head-dim", type=int, default=48, help="per-head dimension")
    p.add_argument("--full-attention-interval", type=int, default=2,
                   help="qwen3_5: layer i is full attention iff (i + 1) %% interval == 0, else Gated DeltaNet")
    p.add_argument("--partial-rotary-factor", type=float, default=0.25, help="qwen3_5: share of head_dim under RoPE")
    p.add_argument("--linear-key-heads", type=int, default=2, help="qwen3_5: Gated DeltaNet key heads")
    p.add_argument("--linear-value-heads", type=int, default=4, help="qwen3_5: Gated DeltaNet value heads")
    p.add_argument("--linear-head-dim", type=int, default=48, help="qwen3_5: Gated DeltaNet key and value head dim")
    p.add_argument("--max-position-embeddings", type=int, default=512, help="positions the config declares")
    p.add_argument("--ctx-len", type=int, default=256, help="training sequence length (tokens)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per training step")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW, warm-up then cosine)")
    p.add_argument("--max-steps", type=int, default=6000, help="training steps at most (the cosine schedule's length)")
    p.add_argument("--time-budget", type=float, default=2700.0,
                   help="seconds of training; 0 = run exactly --max-steps (the deterministic rebuild)")
    p.add_argument("--sft-steps", type=int, default=700, help="instruction-tuning steps (0: skip the sft stage)")
    p.add_argument("--sft-lr", type=float, default=1e-3, help="peak learning rate of instruction tuning")
    p.add_argument("--sft-warmup", type=int, default=20, help="warm-up steps of instruction tuning")
    p.add_argument("--sft-chat", type=int, default=30_000, help="synthetic instruction-tuning conversations")
    p.add_argument("--sft-chat-share", type=float, default=0.8,
                   help="share of instruction-tuning rows drawn from chat (the rest: the four text sources equally)")
    p.add_argument("--sft-harmful-fraction", type=float, default=0.4,
                   help="share of harmful user turns in the instruction-tuning chat")
    p.add_argument("--sft-loss", choices=("reply", "all"), default="all",
                   help="instruction-tuning loss on chat rows: the assistant replies only (reply), "
                        "or every token (all)")
    p.add_argument("--sft-from", type=Path, default=None,
                   help="instruction-tune this HF model directory instead of the pre-training run's checkpoint "
                        "(same tokenizer as WORK/tokenizer)")
    p.add_argument("--gen-tokens", type=int, default=48, help="new tokens per prompt in the refusal measurement")
    args = p.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        p.error(f"unknown stage(s) {bad}; valid: {', '.join(STAGES)}")
    if args.family not in ASSET_NAMES:
        p.error(f"unknown --family {args.family!r}; valid: {', '.join(ASSET_NAMES)}")
    args.work = args.work or REPO / "build" / ASSET_NAMES[args.family]
    args.out = args.out or ASSETS / ASSET_NAMES[args.family]
    args.layers = args.layers or DEFAULT_LAYERS[args.family]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.work.mkdir(parents=True, exist_ok=True)
    for stage in STAGES:
        if stage in stages:
            log(f"== {stage}")
            globals()[f"stage_{stage}"](args)


if __name__ == "__main__":
    main()
