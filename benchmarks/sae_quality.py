"""SAE quality at equal compute: held-out FVU of our SAEs against the peer libraries' on the same data.

    .venv/bin/python benchmarks/sae_quality.py                       # every architecture, 3 hooks, 2 seeds
    .venv/bin/python benchmarks/sae_quality.py --archs topk --hooks layers.2 --seeds 0
    .venv/bin/python benchmarks/sae_quality.py --dry-run             # seconds: tiny budgets, checks the plumbing

Data: the embedded tiny model's activations at ``--hooks`` (residual, MLP out, attention out) on its held-out
texts (packed 128-token rows; the first position and special tokens dropped), split 90/10 at random into
train / test. Every implementation sees the same batches in the same order (epochs of one permutation per
seed), the same d_sae, k, batch, step count, seed and learning-rate schedule (linear warmup, constant, linear
decay to 0 over the last ``--decay-frac`` of the steps, applied to the peers through a LambdaLR with the same
values), and everything else at its own library's defaults:

  * ours      `init_sae` with a sample of the training activations, the trainer's own update
              (`train.step.sae_update`: `sae_loss`, `before_update`, `make_optimizer`, `after_update`),
              dead latents after ``--dead-tokens`` tokens;
  * sparsify  eai-sparsify `SparseCoder` trained as its `Trainer` does (mean `b_dec` at step 0, decoder
              renormalised before each step, loss ``fvu + auxk/32``, decoder-parallel gradient removed, Adam);
  * SAELens   its own `SAETrainer` (Adam, gradient clipping at norm 1) on `TopKTrainingSAE`,
              `BatchTopKTrainingSAE`, `JumpReLUTrainingSAE`, `StandardTrainingSAE`; evaluated through the
              inference SAE it saves (BatchTopK becomes JumpReLU with its learned threshold, as SAELens ships it).
              Its JumpReLU trains on inputs scaled to unit mean norm (the scale its threshold and bandwidth
              defaults are meant for, and ours normalises to) and starts its L0 search from our coefficient;
              on raw inputs its thresholds cannot rise far enough in the budget to reach the target L0.

TopK and BatchTopK fix L0 (k). JumpReLU and ReLU-L1 are compared at matched L0: each implementation's sparsity
coefficient is searched (secant steps in log-log space, kept inside the bracket once the target is bracketed;
``--l0-runs`` runs at most) for L0 = ``--target-l0`` and the held-out FVU is
interpolated log-log between the two runs nearest the target on either side.

Where a search does not reach within 10% of the target L0 on both sides, that implementation's FVU for the
setting is reported as nan (the L0 it reached is shown) and the setting has no ratio.

Settings ``<hook>+offset`` (``--offset-hooks``) add one constant vector to every activation of that hook,
``--offset`` times the mean activation norm with three massive coordinates (see `with_offset`): how
real-model residual streams differ from the tiny model's, and what a decoder-bias initialisation must survive.

Reports per run held-out FVU, L0, the fraction of latents that never fire on the test set and ms per step;
then per setting (architecture x hook) the mean over seeds and ours / best peer. Last line:
``sae_quality: worst_ratio=R`` (our FVU over the best peer's, worst case over settings).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import tempfile
import time
from typing import Callable

os.environ.setdefault("TQDM_DISABLE", "1")   # SAELens' fit() draws a progress bar per run

import jax
import jax.numpy as jnp
import numpy as np
import torch

from qwen_sae_jax import load_model
from qwen_sae_jax.data.text import open_documents
from qwen_sae_jax.data.tokens import DataConfig, make_tokenize, special_token_ids
from qwen_sae_jax.eval.evaluate import DEFAULT_EVAL_FILES
from qwen_sae_jax.sae import SAEConfig, init_sae
from qwen_sae_jax.train.config import OptimConfig
from qwen_sae_jax.train.optim import lr_schedule, make_optimizer
from qwen_sae_jax.train.step import sae_update

ARCHS = ("topk", "batchtopk", "jumprelu", "relu")
PEERS = {"topk": ("sparsify", "saelens"), "batchtopk": ("saelens",), "jumprelu": ("saelens",), "relu": ("saelens",)}
# the sparsity coefficient each implementation starts its L0 search from (its library's default)
COEF_START = {("ours", "jumprelu"): SAEConfig("jumprelu", 1, 1).l0_coefficient,
              ("ours", "relu"): SAEConfig("relu", 1, 1).l1_coefficient,
              ("saelens", "jumprelu"): SAEConfig("jumprelu", 1, 1).l0_coefficient, ("saelens", "relu"): 1.0}


@dataclasses.dataclass(frozen=True)
class Budget:
    d_sae: int
    k: int
    lr: float
    batch: int
    steps: int
    warmup: int
    decay_frac: float
    dead_tokens: int

    def schedule(self) -> Callable[[int], float]:
        """LR at each step (ours' optax schedule; the peers get the same numbers)."""
        sched = lr_schedule(self.optim(), self.steps)
        values = np.asarray([float(sched(i)) for i in range(self.steps + 1)])
        return lambda i: float(values[min(i, self.steps)])

    def optim(self) -> OptimConfig:
        return OptimConfig(lr=self.lr, warmup_steps=self.warmup, decay="linear",
                           decay_steps=max(1, int(round(self.decay_frac * self.steps))))


@dataclasses.dataclass
class Result:
    fvu: float
    l0: float
    dead: float
    ms_per_step: float
    coef: float | None = None


# ------------------------------------------------------------------------------------------------ data
def packed_rows(tokenizer, ctx_len: int = 128) -> np.ndarray:
    """[R, ctx_len] int32: every embedded held-out document once (EOS after each), packed and cut into rows."""
    cfg = DataConfig(files=list(DEFAULT_EVAL_FILES), ctx_len=ctx_len)
    tokenize = make_tokenize(tokenizer, cfg)
    ids = np.concatenate([tokenize(doc) for doc in open_documents(cfg)])
    n_rows = len(ids) // ctx_len
    return ids[: n_rows * ctx_len].reshape(n_rows, ctx_len)


def capture(hooks: list[str], max_rows: int | None = None) -> dict[str, np.ndarray]:
    """{hook: [N, d_in] float32} on the embedded held-out texts, first position and special tokens dropped."""
    lm = load_model("tiny")
    rows = packed_rows(lm.tokenizer)[:max_rows]
    special = np.asarray(special_token_ids(lm.tokenizer))
    capture_fn = jax.jit(lambda t: lm.apply(lm.params, t, capture=tuple(hooks), stop_after_capture=True)[1])
    out = {h: [] for h in hooks}
    for start in range(0, len(rows), 16):
        tokens = rows[start:start + 16]
        keep = ~np.isin(tokens, special)
        keep[:, 0] = False
        acts = capture_fn(jnp.asarray(tokens))
        for h in hooks:
            out[h].append(np.asarray(acts[h], np.float32)[keep])
    return {h: np.concatenate(v) for h, v in out.items()}


def with_offset(x: np.ndarray, factor: float, seed: int = 5) -> np.ndarray:
    """x plus one constant vector: a random direction of norm ``factor`` x the mean activation norm, with three
    coordinates 10x larger (the large constant mean and the few massive dimensions of real LLM residual
    streams, which the tiny model's activations lack)."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(size=x.shape[1])
    offset *= factor * np.linalg.norm(x, axis=1).mean() / np.linalg.norm(offset)
    offset[:3] *= 10
    return (x + offset).astype(np.float32)


def split(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(len(x))
    n_test = len(x) // 10
    return x[perm[n_test:]], x[perm[:n_test]]


def batch_order(n: int, budget: Budget, seed: int) -> np.ndarray:
    """[steps, batch] row indices: consecutive epochs, each a fresh permutation (seeded)."""
    rng = np.random.default_rng(1000 + seed)
    need = budget.steps * budget.batch
    idx = np.concatenate([rng.permutation(n) for _ in range(-(-need // n))])[:need]
    return idx.reshape(budget.steps, budget.batch)


def fvu_l0_dead(x: np.ndarray, x_hat: np.ndarray, fired_per_token: np.ndarray) -> tuple[float, float, float]:
    """Held-out FVU (sum of squared errors / sum of squared deviations from the test mean), mean L0, and the
    fraction of latents that never fire on the test set. ``fired_per_token`` [N, d_sae] bool."""
    err = np.sum((x_hat.astype(np.float64) - x) ** 2)
    var = np.sum((x - x.mean(0)) ** 2)
    return float(err / var), float(fired_per_token.sum(1).mean()), float(1 - fired_per_token.any(0).mean())


def timed_loop(step: Callable[[int], None], steps: int) -> float:
    """Runs step(i) for every i; ms per step over the steps after the first 3 (compilation, warm-up)."""
    start = None
    for i in range(steps):
        if i == min(3, steps - 1):
            start = time.perf_counter()
        step(i)
    return 1000 * (time.perf_counter() - start) / max(steps - min(3, steps - 1), 1)


# ------------------------------------------------------------------------------------------------ ours
OURS_OVERRIDES: dict = {}   # --ours-set


def parse_overrides(items: list[str]) -> dict:
    """["decoder_init_norm=0.577", "optim.eps=1e-6"] -> {name: value} (numbers, true/false/null, else text)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--ours-set expects FIELD=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def train_ours(arch: str, train: np.ndarray, test: np.ndarray, order: np.ndarray, budget: Budget, seed: int,
               coef: float | None) -> Result:
    extra = {}
    if arch in ("topk", "batchtopk"):
        extra["k"] = budget.k
    if arch == "jumprelu" and coef is not None:
        extra["l0_coefficient"] = coef
    if arch == "relu" and coef is not None:
        extra["l1_coefficient"] = coef
    extra.update({k: v for k, v in OURS_OVERRIDES.items() if not k.startswith("optim.")})
    cfg = SAEConfig(arch, d_in=train.shape[1], d_sae=budget.d_sae, dead_tokens_threshold=budget.dead_tokens, **extra)
    sae = init_sae(cfg, jax.random.key(seed), x_sample=jnp.asarray(train[order[:4].reshape(-1)]))
    optim_overrides = {k[6:]: v for k, v in OURS_OVERRIDES.items() if k.startswith("optim.")}
    optim = dataclasses.replace(budget.optim(), **optim_overrides)
    opt = make_optimizer(optim, budget.steps)
    state = [sae, opt.init(sae), jnp.zeros((cfg.d_sae,), jnp.int32)]
    update = jax.jit(functools.partial(sae_update, opt=opt, implementation="xla"), donate_argnums=(0, 1, 2))
    x_all = jnp.asarray(train)

    def step(i):
        new, metrics = update(*state, x_all[order[i]])
        state[:] = new
        if i == budget.steps - 1:
            jax.block_until_ready(metrics["loss"])

    ms = timed_loop(step, budget.steps)
    sae = state[0]
    z = np.asarray(jax.jit(sae.encode)(jnp.asarray(test)))
    x_hat = np.asarray(jax.jit(sae.decode)(jnp.asarray(z)))
    return Result(*fvu_l0_dead(test, x_hat, z != 0), ms, coef)


# ------------------------------------------------------------------------------------------------ sparsify
def train_sparsify(arch: str, train: np.ndarray, test: np.ndarray, order: np.ndarray, budget: Budget, seed: int,
                   coef: float | None) -> Result:
    from sparsify import SparseCoder, SparseCoderConfig

    assert arch == "topk"
    torch.manual_seed(seed)
    sae = SparseCoder(train.shape[1], SparseCoderConfig(num_latents=budget.d_sae, k=budget.k), dtype=torch.float32)
    opt = torch.optim.Adam(sae.parameters(), lr=budget.lr)
    lr_at = budget.schedule()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: lr_at(i) / budget.lr)
    since_fired = torch.zeros(budget.d_sae, dtype=torch.long)
    x_all = torch.from_numpy(train)

    def step(i):   # sparsify/trainer.py's fit(), one hookpoint, loss_fn="fvu", auxk_alpha=1/32
        x = x_all[torch.from_numpy(order[i])]
        if i == 0:
            sae.b_dec.data = x.mean(0)
        sae.set_decoder_norm_to_unit_norm()
        out = sae(x, dead_mask=since_fired > budget.dead_tokens)
        (out.fvu + out.auxk_loss / 32).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        sched.step()
        fired = torch.zeros(budget.d_sae, dtype=torch.bool)
        fired[out.latent_indices.flatten()] = True
        since_fired.add_(x.shape[0])
        since_fired[fired] = 0

    ms = timed_loop(step, budget.steps)
    with torch.no_grad():
        sae.set_decoder_norm_to_unit_norm()
        out = sae(torch.from_numpy(test))
        fired = np.zeros((len(test), budget.d_sae), bool)
        idx = out.latent_indices.numpy()
        np.put_along_axis(fired, idx, out.latent_acts.numpy() > 0, axis=1)
        return Result(*fvu_l0_dead(test, out.sae_out.numpy(), fired), ms, coef)


# ------------------------------------------------------------------------------------------------ SAELens
def train_saelens(arch: str, train: np.ndarray, test: np.ndarray, order: np.ndarray, budget: Budget, seed: int,
                  coef: float | None) -> Result:
    import sae_lens
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    d_in = train.shape[1]
    if arch == "jumprelu":   # at unit mean norm, the scale of its threshold defaults (and of ours); FVU is unchanged
        scale = np.float32(1.0 / np.linalg.norm(train[order[:4].reshape(-1)], axis=1).mean())
        train, test = train * scale, test * scale
    torch.manual_seed(seed)
    common = dict(d_in=d_in, d_sae=budget.d_sae, dtype="float32", device="cpu")
    if arch == "topk":
        sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(k=budget.k, **common))
    elif arch == "batchtopk":
        sae = sae_lens.BatchTopKTrainingSAE(sae_lens.BatchTopKTrainingSAEConfig(k=budget.k, **common))
    elif arch == "jumprelu":
        sae = sae_lens.JumpReLUTrainingSAE(sae_lens.JumpReLUTrainingSAEConfig(l0_coefficient=coef, **common))
    else:
        sae = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(l1_coefficient=coef, **common))
    window = max(1, budget.dead_tokens // budget.batch)   # SAELens counts the dead window in steps
    cfg = SAETrainerConfig(total_training_samples=budget.steps * budget.batch, train_batch_size_samples=budget.batch,
                           lr=budget.lr, lr_end=budget.lr, dead_feature_window=window, device="cpu",
                           logger=LoggingConfig(log_to_wandb=False))
    x_all = torch.from_numpy(train)
    batches = (x_all[torch.from_numpy(order[i])] for i in range(budget.steps))
    trainer = SAETrainer(cfg, sae, data_provider=batches)
    lr_at = budget.schedule()
    trainer.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda i: lr_at(i) / budget.lr)
    timer = {}
    original_step = trainer.step

    def counted_step(batch):   # time the steps after the first 3 (SAELens' fit loop runs them)
        if trainer.n_training_steps == min(3, budget.steps - 1):
            timer["start"] = time.perf_counter()
        return original_step(batch)

    trainer.step = counted_step
    trainer.fit()
    ms = 1000 * (time.perf_counter() - timer["start"]) / max(budget.steps - min(3, budget.steps - 1), 1)
    with tempfile.TemporaryDirectory() as tmp:
        sae.save_inference_model(tmp)
        inference = sae_lens.SAE.load_from_disk(tmp)
    with torch.no_grad():
        z = inference.encode(torch.from_numpy(test))
        x_hat = inference.decode(z)
    return Result(*fvu_l0_dead(test, x_hat.numpy(), (z != 0).numpy()), ms, coef)


TRAINERS = {"ours": train_ours, "sparsify": train_sparsify, "saelens": train_saelens}


# ------------------------------------------------------------------------------------------------ matched L0
def at_target_l0(run: Callable[[float], Result], coef: float, target: float, runs: int) -> tuple[Result, list[Result]]:
    """Search the sparsity coefficient for L0 = target, then interpolate FVU log-log at the target between the
    nearest runs on either side (or the two nearest when the target is not bracketed).

    Each next coefficient is a secant step on log L0 vs log coef through the two runs nearest the target (slope
    -1 where L0 barely responds; a repeated coefficient steps beyond the extreme instead). Once one run lies
    above the target and one below, a step that leaves the tightest such bracket is replaced by the bracket's
    log-midpoint, so the search closes in on a target that a power law misjudges (at the tiny model's attention
    output ReLU's L0 goes 41 -> 2 between coefficients 10 and 20; one log-log interpolation across that gap gave
    an FVU 27% off). Stops at a run within 3% of the target. Returns (interpolated result, every run)."""
    tried: list[Result] = []
    gap = lambda t: math.log(max(t.l0, 1e-3) / target)  # noqa: E731  (> 0: not sparse enough)
    for _ in range(runs):
        r = run(coef)
        tried.append(r)
        if abs(gap(r)) < 0.03:
            break
        near = sorted(tried, key=lambda t: abs(gap(t)))[:2]
        slope = -1.0
        if len(near) == 2 and near[0].coef != near[1].coef and near[0].l0 > 0 and near[1].l0 > 0:
            s = math.log(near[0].l0 / near[1].l0) / math.log(near[0].coef / near[1].coef)
            slope = s if s < -0.05 else slope
        coef = near[0].coef * math.exp(-gap(near[0]) / slope)
        above = [t.coef for t in tried if gap(t) > 0]
        below = [t.coef for t in tried if gap(t) < 0]
        if above and below:   # bracketed: stay strictly inside the tightest bracket
            lo, hi = max(above), min(below)
            if not lo * 1.01 < coef < hi / 1.01:
                coef = math.sqrt(lo * hi)
        elif any(abs(math.log(coef / t.coef)) < 1e-3 for t in tried):   # no repeats: step beyond the extreme
            extreme = (max if near[0].l0 > target else min)(t.coef for t in tried)
            coef = extreme * max(near[0].l0, 1e-3) / target
    return interpolate(tried, target), tried


def interpolate(tried: list[Result], target: float) -> Result:
    live = [t for t in tried if t.l0 > 0]
    below = [t for t in live if t.l0 <= target]
    above = [t for t in live if t.l0 > target]
    bracketed = bool(below and above)
    if bracketed:   # the runs nearest the target on either side
        a, b = max(below, key=lambda t: t.l0), min(above, key=lambda t: t.l0)
    else:
        a, b = sorted(live, key=lambda t: abs(math.log(t.l0 / target)))[:2] if len(live) > 1 else (live[0], live[0])
    if a.l0 == b.l0:
        w = 0.0
    else:
        w = math.log(target / a.l0) / math.log(b.l0 / a.l0)
    if not bracketed and abs(math.log(a.l0 / target)) > 0.1:   # more than 10% off: no extrapolation
        return Result(math.nan, a.l0, a.dead, a.ms_per_step, a.coef)
    w = min(max(w, -1.0), 2.0)
    fvu = math.exp((1 - w) * math.log(a.fvu) + w * math.log(b.fvu))
    dead = (1 - w) * a.dead + w * b.dead
    return Result(fvu, target, dead, (a.ms_per_step + b.ms_per_step) / 2, None)


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Each run's line goes to stderr as it finishes; the table and the last line "
                                       "to stdout.")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS, help="architectures (default: all four)")
    p.add_argument("--hooks", nargs="*", default=["layers.2", "layers.2.mlp", "layers.2.self_attn"],
                   help="hook points of the embedded model (default: layer 2 residual, MLP out, attention out)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="seeds (init and batch order; default 0 1)")
    p.add_argument("--impls", nargs="+", default=["ours", "sparsify", "saelens"], choices=list(TRAINERS),
                   help="implementations to run (default: all; a peer runs only where it has the architecture)")
    p.add_argument("--d-sae", type=int, default=1536, help="latents (default 1536 = 8 x d_in)")
    p.add_argument("--k", type=int, default=32, help="k of topk / batchtopk (default 32)")
    p.add_argument("--target-l0", type=float, default=None, help="L0 that jumprelu / relu are matched at (default: k)")
    p.add_argument("--l0-runs", type=int, default=6,
                   help="runs per implementation in the matched-L0 search, at most (default 6)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, every implementation (default 1e-3)")
    p.add_argument("--batch", type=int, default=1024, help="tokens per step (default 1024)")
    p.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    p.add_argument("--warmup", type=int, default=50, help="linear warmup steps (default 50)")
    p.add_argument("--decay-frac", type=float, default=0.2,
                   help="linear decay to 0 over this last fraction of steps (default 0.2)")
    p.add_argument("--dead-tokens", type=int, default=100_000,
                   help="a latent is dead after this many tokens without firing (default 100000)")
    p.add_argument("--max-rows", type=int, default=None,
                   help="use only this many packed 128-token rows of held-out text (default: all, about 1650)")
    p.add_argument("--ours-set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="override our SAEConfig fields (e.g. decoder_init_norm=0.577) or, as optim.FIELD=VALUE, our "
                        "OptimConfig fields, to try a change against the peers")
    p.add_argument("--offset-hooks", nargs="*", default=["layers.2"],
                   help="also run these hooks with a constant offset added to every activation (setting "
                        "'<hook>+offset'; see with_offset). Default: layers.2; none: --offset-hooks")
    p.add_argument("--offset", type=float, default=3.0, help="offset norm in mean activation norms (default 3)")
    p.add_argument("--json", default=None, help="also write every run and the summary to this JSON file")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny budgets (d_sae 64, k 4, 6 steps, 1 hook, 1 seed, 2 L0 runs): checks the plumbing in "
                        "seconds")
    args = p.parse_args(argv)
    if args.dry_run:
        args.hooks, args.seeds, args.d_sae, args.k, args.steps = args.hooks[:1], args.seeds[:1], 64, 4, 6
        args.offset_hooks = args.offset_hooks[:1]
        args.batch, args.warmup, args.l0_runs, args.max_rows, args.dead_tokens = 256, 2, 2, 64, 512
    if args.target_l0 is None:
        args.target_l0 = float(args.k)
    return args


def run_setting(arch: str, impl: str, train, test, order, budget, seed, args) -> tuple[Result, list[Result]]:
    run = lambda coef: TRAINERS[impl](arch, train, test, order, budget, seed, coef)  # noqa: E731
    if arch in ("topk", "batchtopk"):
        r = run(None)
        return r, [r]
    return at_target_l0(run, COEF_START[(impl, arch)], args.target_l0, args.l0_runs)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    budget = Budget(args.d_sae, args.k, args.lr, args.batch, args.steps, args.warmup, args.decay_frac, args.dead_tokens)
    acts = capture(sorted(set(args.hooks) | set(args.offset_hooks)), args.max_rows)
    settings = [(hook, acts[hook]) for hook in args.hooks]
    settings += [(f"{hook}+offset", with_offset(acts[hook], args.offset)) for hook in args.offset_hooks]
    OURS_OVERRIDES.update(parse_overrides(args.ours_set))
    runs, summary = [], []
    for hook, x in settings:
        train, test = split(x)
        print(f"# {hook}: {len(train)} train / {len(test)} test tokens, d_in {train.shape[1]}", file=sys.stderr)
        for arch in args.archs:
            impls = [i for i in args.impls if i == "ours" or i in PEERS[arch]]
            per_impl: dict[str, list[Result]] = {i: [] for i in impls}
            for seed in args.seeds:
                order = batch_order(len(train), budget, seed)
                for impl in impls:
                    final, tried = run_setting(arch, impl, train, test, order, budget, seed, args)
                    per_impl[impl].append(final)
                    for t in tried:
                        runs.append({"hook": hook, "arch": arch, "seed": seed, "impl": impl, **dataclasses.asdict(t)})
                        coef = "" if t.coef is None else f" coef {t.coef:.4g}"
                        print(f"  {arch:9s} {hook:18s} seed {seed} {impl:8s} fvu {t.fvu:.4f} l0 {t.l0:6.1f} "
                              f"dead {t.dead:6.1%} {t.ms_per_step:7.1f} ms/step{coef}", file=sys.stderr, flush=True)
            mean = {i: float(np.mean([r.fvu for r in rs])) for i, rs in per_impl.items()}
            row = {"arch": arch, "hook": hook, **{f"fvu_{i}": v for i, v in mean.items()},
                   **{f"l0_{i}": float(np.mean([r.l0 for r in rs])) for i, rs in per_impl.items()},
                   **{f"dead_{i}": float(np.mean([r.dead for r in rs])) for i, rs in per_impl.items()},
                   **{f"ms_{i}": float(np.mean([r.ms_per_step for r in rs])) for i, rs in per_impl.items()}}
            peers = [v for i, v in mean.items() if i != "ours" and math.isfinite(v)]
            if "ours" in mean and peers and math.isfinite(mean["ours"]):
                row["ratio"] = mean["ours"] / min(peers)
            summary.append(row)
    print_table(summary, args)
    worst = max((r["ratio"] for r in summary if "ratio" in r), default=float("nan"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs, "summary": summary, "worst_ratio": worst}, f, indent=1)
    print(f"sae_quality: worst_ratio={worst:.4f}")
    return {"runs": runs, "summary": summary, "worst_ratio": worst}


def print_table(summary: list[dict], args) -> None:
    impls = list(TRAINERS)
    print(f"held-out FVU, mean over seeds {args.seeds}; d_sae {args.d_sae}, k {args.k} (jumprelu/relu at L0 "
          f"{args.target_l0:g}), lr {args.lr:g}, batch {args.batch}, {args.steps} steps")
    head = "| arch | hook | " + " | ".join(f"{i} FVU (L0, dead, ms/step)" for i in impls) + " | ours / best peer |"
    print(head)
    print("|" + "---|" * (3 + len(impls)))
    for r in summary:
        cells = []
        for i in impls:
            if f"fvu_{i}" in r:
                cells.append(f"{r[f'fvu_{i}']:.4f} ({r[f'l0_{i}']:.1f}, {r[f'dead_{i}']:.1%}, {r[f'ms_{i}']:.0f})")
            else:
                cells.append("-")
        ratio = f"{r['ratio']:.3f}" if "ratio" in r else "-"
        print(f"| {r['arch']} | {r['hook']} | " + " | ".join(cells) + f" | {ratio} |")


if __name__ == "__main__":
    main()
