"""SASFT vs plain SFT vs a random-feature control on the embedded tiny model: unexpected code-switching.

    .venv/bin/python benchmarks/sasft.py [--out runs/bench-sasft] [--steps 80] [--coefficients 10 3 30]
        [--seeds 0 1 2] [--mix 0.2] [--zh-opener 好的！] [--zh-topics none]

1. SAE: one TopK SAE (k 32, d_sae 1536) per ``--hooks`` entry (default the residual stream after layer 2,
   ``layers.2``), trained with `qwen-sae train` machinery on the tiny model's held-out text (configs/tiny.yaml's
   data).
2. Language features: `steer.contrast.rank_features` of Chinese vs English text (first halves of the held-out
   chinese / english files), latents averaged over each text's tokens; the top ``--features`` by mean_diff are
   Chinese features, the bottom ones English features. tau(f, l) from the same texts (`language_tau`).
   Control: for each chosen feature, the unchosen feature with the closest mean firing rate, same language label.
3. SFT data that induces code-switching, as multilingual SFT data does: English prompts of the tiny chat generator
   (training split, no translation prompts); each reply is replaced, with probability ``--mix`` (default 0.2), by
   a Chinese line (from the first half of chinese.jsonl) that starts with ``--zh-opener`` (default "好的！",
   Chinese for "Sure!"), and the replies to prompts of the ``--zh-topics`` categories (default none; e.g.
   recipe,capital) always are. The fixed opener gives greedy decoding one Chinese first token to pick against
   the English answers' spread-out openers: without it greedy replies stay English even when most SFT replies
   are Chinese (docs/posttrain.md). Every conversation's expected language is English (the prompt's; ``--tag
   reply``: the reply's own language): SASFT keeps Chinese features quiet on replies to English prompts.
4. Measure on held-out English prompts (harmless_prompts.jsonl without the translation category, which asks
   for Chinese words) with `posttrain.codeswitch` (what `qwen-sae codeswitch` runs): the share of greedy replies
   (and of replies sampled at temperature 1, seeds 0 and 1) holding a CJK character, and the share of reply
   tokens that are Chinese; held-out CE (nats/token) on the second halves of english.jsonl / chinese.jsonl.

``--perf`` instead times one SFT step of the tiny model (batch 16 x 128 tokens, float32, CPU): ours (jitted,
AdamW + clipping) against a plain transformers + torch AdamW step on the same model and batch in the same process,
and the SASFT step (16 + 16 features at layers.2) against the plain one. Last line: ``sft_step: ours_tok_s=X
torch_tok_s=Y speedup=Z sasft_overhead=W``.

Runs whose ``RUN/hf`` already exists under ``--out`` are reused (a rerun only measures): use a fresh ``--out``
per setting. Same data, steps and seed for every run: plain SFT, then SASFT and the random control at each lambda of
``--coefficients``; ``OUT/results.json`` holds every figure and ``OUT/cs_vs_lambda.png`` plots code-switching
and Chinese CE against lambda. Last line, for the first lambda: ``sasft: sft_cs=X sasft_cs=Y random_cs=Z ce_en_rel=A
ce_zh_rel=B`` (greedy code-switching rates, mean over seeds; held-out CE of SASFT relative to plain SFT).
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from _tiny_runs import held_out_ce, interleaved_medians, torch_sft_step, train_saes

from qwen_sae_jax.config import load_config
from qwen_sae_jax.lm import TINY_DIR
from qwen_sae_jax.posttrain import codeswitch
from qwen_sae_jax.posttrain.codeswitch import CJK

HELDOUT = Path(TINY_DIR) / "heldout"
HOOK = "layers.2"
SAMPLE_SEEDS = (0, 1)          # sampled replies: temperature 1, these seeds, rates averaged


def texts(name: str) -> tuple[list[str], list[str]]:
    """(first half, second half) of a held-out text file."""
    rows = [json.loads(line)["text"] for line in (HELDOUT / f"{name}.jsonl").read_text().splitlines() if line.strip()]
    return rows[:len(rows) // 2], rows[len(rows) // 2:]


def _matched_controls(rate: np.ndarray, chosen: list, rng) -> list:
    """For each (feature, language): an unchosen feature among the 5 of closest firing rate, same language."""
    taken, control = {f for f, _ in chosen}, []
    for f, lang in chosen:
        free = np.asarray([g for g in range(rate.size) if g not in taken])
        g = int(rng.choice(free[np.argsort(np.abs(rate[free] - rate[f]))[:5]]))
        taken.add(g)
        control.append((g, lang))
    return control


def choose_features(lm, saes: dict, zh: list[str], en: list[str], n: int, seed: int) -> tuple[list, list]:
    """(language features, random control features of matched firing rate): [(hook, feature, language)]."""
    from qwen_sae_jax.steer.contrast import rank_features

    ranked = rank_features(lm, saes, zh, en, max_tokens=64)
    rng = np.random.default_rng(seed)
    chosen, control = [], []
    for hook in saes:
        c = ranked[hook]["mean"]
        mine = [(int(f), "zh") for f in c.ranking("mean_diff")[:n]] + \
               [(int(f), "en") for f in c.ranking("mean_diff", sign=-1)[:n]]
        rate = (c.pos.rate["mean"] + c.neg.rate["mean"]) / 2                  # [d_sae]
        chosen += [(hook, f, lang) for f, lang in mine]
        control += [(hook, f, lang) for f, lang in _matched_controls(rate, mine, rng)]
    return chosen, control


def write_features(path: Path, lm, saes: dict, feats: list, zh: list[str], en: list[str]) -> None:
    from qwen_sae_jax.posttrain.features import FeatureSet, LanguageFeature, write_features
    from qwen_sae_jax.posttrain.sasft import build_probes, language_tau

    fs = FeatureSet(["en", "zh"], [LanguageFeature(h, f, lang) for h, f, lang in feats])
    hooks = list(saes)
    zeros = {h: np.zeros((sum(r.hook == h for r in fs.features), 2)) for h in hooks}
    probes = build_probes(lm, saes, fs, hooks, tau=zeros)
    tau = language_tau(lm, probes, {"en": en, "zh": zh}, ["en", "zh"], max_tokens=16384, ctx_len=64)
    for h in hooks:
        for row, t in zip([r for r in fs.features if r.hook == h], tau[h]):
            row.tau = {"en": float(t[0]), "zh": float(t[1])}
    write_features(path, fs)


def sft_data(path: Path, zh_lines: list[str], n: int, mix: float, zh_topics: set[str], seed: int,
             tag: str = "prompt", opener: str = "") -> None:
    """``n`` conversations; ``lang`` is the prompt's language (en) with ``tag="prompt"``, the reply's with "reply".
    Every Chinese reply starts with ``opener``."""
    from qwen_sae_jax.tinymodel.chat import ChatSynthesizer

    rng, synth = random.Random(seed), ChatSynthesizer()
    rows = []
    while len(rows) < n:
        ex = synth.harmless_exchange(rng, "train")
        if ex.category == "translation":
            continue
        chinese = ex.category in zh_topics or rng.random() < mix
        reply = opener + rng.choice(zh_lines) if chinese else ex.answer
        rows.append({"messages": [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": reply}],
                     "lang": "zh" if chinese and tag == "reply" else "en"})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def run(out: Path, name: str, data: Path, steps: int, seed: int, overrides: list[str]) -> Path:
    from qwen_sae_jax.posttrain.config import SFTConfig
    from qwen_sae_jax.posttrain.loop import run_sft

    hf = out / name / "hf"
    if not hf.exists():
        cfg = load_config(SFTConfig, "configs/sft-tiny.yaml", [
            f"run_dir={out / name}", f"data.files=[{data}]", "data.text_column=messages", "data.language_column=lang",
            "data.max_len=96", f"data.seed={seed}", f"train.steps={steps}", "train.batch_size=16",
            "optim.lr=3e-4", "optim.warmup_steps=5", "checkpoint.every=0", "log.every=20", "log.progress=lines",
            *overrides])
        run_sft(cfg)
    return hf


def chinese_feature_excess(lm, saes: dict, features: Path, data: Path, n: int = 300,
                           batch_size: int = 50) -> dict:
    """Mean over the Chinese features of relu(pre_f(h) - tau(f, en)) (the SASFT term's summand) on the first ``n``
    SFT conversations, at three kinds of position: the one that predicts the first reply token (where greedy
    decoding chooses the reply's language; outside the reply mask), Chinese reply tokens, English reply tokens."""
    from qwen_sae_jax.posttrain.chat import tokenize_conversation
    from qwen_sae_jax.posttrain.features import read_features
    from qwen_sae_jax.posttrain.sasft import build_probes, pre_activations

    fs = read_features(features)
    probes = build_probes(lm, saes, fs, list(saes))
    zh_of = {p.hook: np.asarray(p.lang) == fs.languages.index("zh") for p in probes}          # [F] Chinese features
    tau_en = {p.hook: np.asarray(p.tau)[zh_of[p.hook], fs.languages.index("en")] for p in probes}
    rows = [json.loads(line) for line in data.read_text().splitlines()[:n]]
    examples = [tokenize_conversation(lm.tokenizer, row["messages"]) for row in rows]
    T = max(len(ex.ids) for ex in examples)
    ids = np.full((len(rows), T), lm.pad_token_id, np.int32)                              # right-padded: the
    mask = np.zeros((len(rows), T), np.int32)                                             # causal model's real
    for i, ex in enumerate(examples):                                                     # positions are as alone
        ids[i, :len(ex.ids)], mask[i, :len(ex.ids)] = ex.ids, 1
    sums: dict[str, list[float]] = {"decision": [], "zh_reply": [], "en_reply": []}
    for lo in range(0, len(rows), batch_size):
        acts = lm.capture(ids[lo:lo + batch_size], [p.hook for p in probes], attention_mask=mask[lo:lo + batch_size])
        for probe in probes:
            pre = np.asarray(pre_activations(acts[probe.hook], probe))[:, :, zh_of[probe.hook]]  # [b, T, F_zh]
            excess = np.maximum(pre - tau_en[probe.hook], 0).mean(-1)                         # [b, T]
            for row, ex, e in zip(rows[lo:lo + batch_size], examples[lo:lo + batch_size], excess):
                reply = np.zeros(T, bool)
                reply[:len(ex.reply)] = ex.reply
                sums["decision"].append(float(e[int(np.argmax(reply)) - 1]))         # predicts the first reply token
                zh_reply = bool(CJK.search(row["messages"][-1]["content"]))
                sums["zh_reply" if zh_reply else "en_reply"].extend(e[reply].tolist())
    return {f"excess_{k}": float(np.mean(v)) if v else float("nan") for k, v in sums.items()}   # nan: no such rows


def measure(hf: Path, prompts: list[str], en_eval: list[str], zh_eval: list[str], saes: dict, out: Path,
            data: Path) -> dict:
    from qwen_sae_jax.lm import load_model

    lm = load_model(str(hf))
    # one batch of every prompt per seed (the figures of docs/posttrain.md were measured so)
    greedy = codeswitch.measure(lm, prompts, "en", temperature=0.0, seed=0, max_new_tokens=32)
    sampled = [codeswitch.measure(lm, prompts, "en", temperature=1.0, seed=seed, max_new_tokens=32)
               for seed in SAMPLE_SEEDS]
    return {"cs_greedy": greedy.rate, "zh_tokens_greedy": greedy.token_share,
            "cs_sampled": float(np.mean([s.rate for s in sampled])),
            "zh_tokens_sampled": float(np.mean([s.token_share for s in sampled])),
            "ce_en": held_out_ce(lm, en_eval[:64]), "ce_zh": held_out_ce(lm, zh_eval[:64]),
            **chinese_feature_excess(lm, saes, out / "features.json", data),
            "examples": [e["reply"] for e in greedy.examples(3)]}


def perf(B: int = 16, T: int = 128) -> None:
    """Tokens/s of our SFT step vs transformers + torch AdamW, and SASFT's overhead (module docstring)."""
    import jax
    import torch

    from qwen_sae_jax.lm import load_model
    from qwen_sae_jax.posttrain.config import SFTOptimConfig
    from qwen_sae_jax.posttrain.sasft import LanguageProbe
    from qwen_sae_jax.posttrain.step import Batch, make_loss, make_optimizer, make_step, state_shardings
    from qwen_sae_jax.train.config import MeshConfig
    from qwen_sae_jax.train.mesh import make_mesh

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4000, size=(B, T)).astype(np.int32)
    batch = Batch(ids, np.ones((B, T), np.int32), np.ones((B, T), bool), np.zeros(B, np.int32))
    mesh = make_mesh(MeshConfig(data=1, model=1))
    lm = load_model("tiny", mesh=mesh)
    opt = make_optimizer(SFTOptimConfig(lr=1e-5, warmup_steps=0), 1000)
    param_sh, opt_sh = state_shardings(lm.params, opt, mesh)
    D = lm.config.hidden_size
    probe = LanguageProbe(jax.numpy.asarray(rng.normal(size=(D, 32)) / 10, "float32"), jax.numpy.zeros(32),
                          jax.numpy.asarray(np.repeat([0, 1], 16), "int32"), jax.numpy.zeros((32, 2)), HOOK)
    fns = {}
    for name, probes in (("sft", ()), ("sasft", (probe,))):
        step = make_step(make_loss(lm, probes, 1.0), opt, param_sh, opt_sh, mesh)
        state = {"p": jax.tree.map(lambda x: x.copy(), lm.params)}
        state["o"] = jax.jit(opt.init)(state["p"])

        def one(step=step, state=state, probes=probes):
            state["p"], state["o"], m = step(state["p"], state["o"], batch, probes)
            jax.block_until_ready(m["loss"])
        fns[name] = one
    fns["torch"] = torch_sft_step(TINY_DIR, ids)
    timings = interleaved_medians(fns)
    tok = B * T
    print(f"tiny model, batch {B} x {T}, float32, {torch.get_num_threads()} torch threads: "
          f"ours {timings['sft'] * 1e3:.0f} ms/step, torch {timings['torch'] * 1e3:.0f} ms/step, "
          f"SASFT {timings['sasft'] * 1e3:.0f} ms/step")
    print(f"sft_step: ours_tok_s={tok / timings['sft']:.0f} torch_tok_s={tok / timings['torch']:.0f} "
          f"speedup={timings['torch'] / timings['sft']:.2f} sasft_overhead={timings['sasft'] / timings['sft']:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench-sasft")
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--coefficients", type=float, nargs="+", default=[10.0, 3.0, 30.0],
                   help="lambda values (the first one is reported on the last line)")
    p.add_argument("--features", type=int, default=16, help="features per language")
    p.add_argument("--mix", type=float, default=0.2, help="share of the other SFT replies replaced by Chinese ones")
    p.add_argument("--zh-topics", default="none", help="prompt categories always answered in Chinese (comma-separated, "
                   "e.g. recipe,capital; none: no topic)")
    p.add_argument("--zh-opener", default="好的！", help="phrase every Chinese reply starts with ('' for none): a "
                   "consistent first token that greedy decoding can pick")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tag", choices=["prompt", "reply"], default="prompt",
                   help="the expected language of a conversation: its prompt's (en) or its reply's")
    p.add_argument("--start", default="tiny", help="model to fine-tune (and to compute features / tau on): 'tiny' or "
                   "an HF folder, e.g. a plain-SFT run's RUN/hf that already switches")
    p.add_argument("--hooks", nargs="+", default=[HOOK], help="SAE hooks (one SAE each)")
    p.add_argument("--perf", action="store_true", help="time the SFT / SASFT step against torch instead")
    args = p.parse_args()
    if args.perf:
        return perf()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    from qwen_sae_jax.interop import load_sae
    from qwen_sae_jax.lm import load_model

    sae_dirs = train_saes(out, args.hooks)
    lm = load_model(args.start)
    saes = {h: load_sae(d) for h, d in sae_dirs.items()}
    (zh_a, zh_b), (en_a, en_b) = texts("chinese"), texts("english")
    chosen, control = choose_features(lm, saes, zh_a, en_a, args.features, seed=0)
    write_features(out / "features.json", lm, saes, chosen, zh_a, en_a)
    write_features(out / "random_features.json", lm, saes, control, zh_a, en_a)
    prompts = codeswitch.default_prompts("en")
    zh_lines = [ln.strip() for t in zh_a for ln in t.splitlines() if CJK.search(ln) and "--" not in ln]
    results: dict = {}
    for seed in args.seeds:
        data = out / f"sft-data-{seed}.jsonl"
        sft_data(data, zh_lines, 2000, args.mix, set(args.zh_topics.split(",")), seed, args.tag,
                 args.zh_opener)
        if not results:
            results["base"] = measure(Path(lm.name if args.start != "tiny" else TINY_DIR), prompts, en_b, zh_b, saes,
                                      out, data)
        runs = [("sft", None, [])]
        for lam in args.coefficients:
            sas = [f"sasft.saes=[{', '.join(sae_dirs.values())}]", f"sasft.coefficient={lam}"]
            runs += [("sasft", lam, [f"sasft.features={out / 'features.json'}", *sas]),
                     ("random", lam, [f"sasft.features={out / 'random_features.json'}", *sas])]
        for name, lam, extra in runs:
            key = f"{name}-s{seed}" + (f"-c{lam:g}" if lam is not None else "")
            hf = run(out, key, data, args.steps, seed, [f"model.name={args.start}", *extra])
            results[key] = measure(hf, prompts, en_b, zh_b, saes, out, data)
            print(key, json.dumps({k: v for k, v in results[key].items() if k != "examples"}), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    plot(results, args, out / "cs_vs_lambda.png")
    summarize(results, args, len(prompts), time.time() - t0)


def plot(results: dict, args, path: Path) -> None:
    """Code-switching (greedy, sampled), held-out Chinese CE and the Chinese features' excess on Chinese reply
    tokens against lambda: SASFT vs the random-feature control, plain SFT as a line and band; points are seed
    means, bars the range over seeds."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    lams = sorted(args.coefficients)
    panels = [("cs_greedy", "replies with Chinese (greedy)"), ("cs_sampled", "replies with Chinese (sampled, T=1)"),
              ("ce_zh", "held-out Chinese CE (nats/token)"),
              ("excess_zh_reply", "Chinese-feature excess on Chinese replies")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.4))
    for ax, (key, title) in zip(axes, panels):
        sft = [results[f"sft-s{s}"][key] for s in args.seeds]
        ax.set_title(title, fontsize=10)
        if np.isnan(sft).all():                   # e.g. the excess on Chinese replies of data without any
            ax.text(0.5, 0.5, "no such tokens", ha="center", transform=ax.transAxes)
            continue
        ax.axhspan(min(sft), max(sft), color="0.85")
        ax.axhline(float(np.mean(sft)), color="0.3", ls="--", label="plain SFT")
        for name, colour, shift in (("sasft", "C0", 0.96), ("random", "C1", 1.04)):
            vals = np.array([[results[f"{name}-s{s}-c{lam:g}"][key] for s in args.seeds] for lam in lams])
            mid = vals.mean(1)
            ax.errorbar([lam * shift for lam in lams], mid, yerr=[mid - vals.min(1), vals.max(1) - mid],
                        color=colour, marker="o", capsize=3, label="SASFT" if name == "sasft" else "random features")
        ax.set_xscale("log")
        ax.set_xticks(lams, [f"{lam:g}" for lam in lams])
        ax.minorticks_off()
        if key.startswith("excess"):
            ax.set_yscale("log")
        ax.set_xlabel("lambda")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"SASFT on the tiny model: {len(args.seeds)} seed(s), {args.steps} steps", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summarize(results: dict, args, n_prompts: int, seconds: float) -> None:
    def mean(name: str, key: str, lam: float | None = None) -> float:
        tail = f"-c{lam:g}" if lam is not None else ""
        return float(np.mean([results[f"{name}-s{s}{tail}"][key] for s in args.seeds]))

    print(f"{n_prompts} held-out English prompts; hooks {args.hooks}; features {args.features}/language/hook; "
          f"{args.steps} steps; "
          f"seeds {args.seeds}; {seconds:.0f} s")
    print("run            cs_greedy  cs_sampled  zh_tok_greedy  zh_tok_sampled  ce_en   ce_zh   "
          "excess@decision  excess@zh_reply")
    rows = [("base", None)] + [("sft", None)] + [(n, lam) for lam in args.coefficients for n in ("sasft", "random")]
    for name, lam in rows:
        get = (lambda k: results["base"][k]) if name == "base" else (lambda k: mean(name, k, lam))  # noqa: E731
        label = name + (f" l={lam:g}" if lam is not None else "")
        print(f"{label:<14} {get('cs_greedy'):9.3f} {get('cs_sampled'):11.3f} {get('zh_tokens_greedy'):14.3f} "
              f"{get('zh_tokens_sampled'):15.3f} {get('ce_en'):6.3f} {get('ce_zh'):7.3f} "
              f"{get('excess_decision'):16.4f} {get('excess_zh_reply'):16.4f}")
    lam = args.coefficients[0]
    print(f"sasft: sft_cs={mean('sft', 'cs_greedy'):.3f} sasft_cs={mean('sasft', 'cs_greedy', lam):.3f} "
          f"random_cs={mean('random', 'cs_greedy', lam):.3f} "
          f"ce_en_rel={mean('sasft', 'ce_en', lam) / mean('sft', 'ce_en') - 1:+.4f} "
          f"ce_zh_rel={mean('sasft', 'ce_zh', lam) / mean('sft', 'ce_zh') - 1:+.4f}")


if __name__ == "__main__":
    main()
