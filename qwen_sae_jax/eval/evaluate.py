"""Evaluate SAEs on held-out tokens: activation-level metrics and model-level splicing, per SAE and jointly.

Two passes over the same token batches:

1. one clean forward per batch capturing every hooked site: clean next-token CE, each SAE's
   activation-level sums (`metrics.activation_batch_sums`) and each site's mean activation (for
   mean ablation);
2. per batch, the clean logits again, then for every *unit* (one SAE alone, and — with ``joint`` — all
   SAEs of one layer that sit at distinct hooks, spliced together) three forwards: spliced,
   zero-ablated and mean-ablated (`splice.unit_sums`).

Everything is summed over the counted positions (`splice.token_mask`) and divided at the end, so the
numbers are token-weighted means over the whole held-out set.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.eval.metrics import (
    ActivationStats,
    MeanAccumulator,
    activation_batch_sums,
    ce_loss_recovered,
    next_token_ce,
)
from qwen_sae_jax.eval.splice import loss_mask, outlier_positions, token_mask, unit_sums
from qwen_sae_jax.hooks import layer_kinds
from qwen_sae_jax.interop.hook_names import layer_and_site
from qwen_sae_jax.lm import check_saes_fit

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    n_tokens: int = 16384
    """Held-out tokens to evaluate (rounded up to whole batches of batch_size x ctx_len)."""
    batch_size: int = 8
    """Sequences per forward."""
    ctx_len: int = 128
    """Tokens per sequence."""
    exclude_special: bool = True
    """Leave special-token positions (<|im_start|>, EOS, ...) out, as training does."""
    exclude_first: bool = True
    """Leave the first position of each sequence out (attention sink), as training does by default."""
    norm_outlier_factor: float | None = None
    """Also leave out positions whose activation norm at any evaluated hook exceeds this factor times that
    hook's median norm in the batch (training's `filter.norm_outlier_factor`). None: keep them."""
    dense_threshold: float = 0.1
    """A latent firing on more than this fraction of tokens counts as dense."""
    joint: bool = True
    """Also splice all SAEs of each layer (at distinct hooks) together."""

    def __post_init__(self):
        for name in ("n_tokens", "batch_size", "ctx_len"):
            minimum = 2 if name == "ctx_len" else 1
            if int(getattr(self, name)) < minimum:
                raise UserError(f"eval {name} must be an integer >= {minimum}, got {getattr(self, name)}")
        if self.norm_outlier_factor is not None and not self.norm_outlier_factor > 0:
            raise UserError(f"norm_outlier_factor must be > 0 or None, got {self.norm_outlier_factor}")
        if not 0 < self.dense_threshold <= 1:
            raise UserError(f"dense_threshold must be in (0, 1], got {self.dense_threshold}")


@dataclasses.dataclass
class SAEEval:
    """Results of one SAE: ``row`` (flat metrics for tables), density and L0 distribution for plots."""

    name: str
    row: dict
    log10_density: np.ndarray      # [d_sae]
    l0_hist: np.ndarray            # [d_sae + 1] token counts per L0 value


@dataclasses.dataclass
class EvalResults:
    saes: list[SAEEval]
    joint: list[dict]              # one row per layer group spliced together
    ce_clean: float
    n_tokens: int                  # evaluated positions (activation level)
    config: EvalConfig

    def rows(self) -> list[dict]:
        return [s.row for s in self.saes]


def variant_of(name: str, sae) -> str:
    """The variant label of an SAE: the part of its name after ``__``, else ``<architecture>[-k<k>]``."""
    if "__" in name:
        return name.split("__", 1)[1]
    return sae.cfg.architecture + (f"-k{sae.cfg.k}" if sae.cfg.k else "")


def joint_groups(saes: Mapping[str, "SAE"]) -> dict[str, list[str]]:
    """``{group label: [sae names]}``: per (layer, variant), the SAEs at distinct hooks, when more than one."""
    by_key: dict[tuple, list[str]] = defaultdict(list)
    for name, sae in saes.items():
        layer, _ = layer_and_site(sae.cfg.hook_name)
        if layer is not None:
            by_key[(layer, variant_of(name, sae))].append(name)
    groups = {}
    for (layer, variant), names in sorted(by_key.items()):
        hooks = [saes[n].cfg.hook_name for n in names]
        if len(names) > 1 and len(set(hooks)) == len(hooks):
            groups[f"layer {layer} [{variant}]"] = names
    return groups


# long: two passes over the batches that share their accumulators and compiled functions
def evaluate(lm, saes: Mapping[str, "SAE"], batches: Sequence, config: EvalConfig = EvalConfig(),
             special_ids: Iterable[int] = ()) -> EvalResults:
    """Evaluate ``{name: SAE}`` on ``batches`` (each ``input_ids [B, T]`` or ``(input_ids, attention_mask)``)."""
    check_saes_fit(lm, saes)
    batches = [(np.asarray(b[0]), np.asarray(b[1])) if isinstance(b, tuple)
               else (np.asarray(b), np.ones_like(np.asarray(b))) for b in batches]
    if not batches:
        raise UserError("no evaluation batches")
    special = jnp.asarray(sorted(set(int(i) for i in special_ids)) if config.exclude_special else [], jnp.int32)
    names = list(saes)
    hooks = sorted({saes[n].cfg.hook_name for n in names}, key=lm.hook_names.index)

    # ---- pass 1: positions, clean CE, activation metrics, site means ---------------------------------
    @jax.jit
    def capture_step(params, sae_tree, ids, attn):
        logits, acts = lm.apply(params, ids, attn, capture=hooks)
        mask = token_mask(ids, attn, special if special.size else None, config.exclude_first)
        if config.norm_outlier_factor is not None:
            mask = mask & ~outlier_positions([acts[h] for h in hooks], mask, config.norm_outlier_factor)
        valid = loss_mask(mask, attn).astype(jnp.float32)
        out = {"ce": jnp.sum(next_token_ce(logits, ids) * valid), "count": jnp.sum(valid), "sums": {}, "means": {}}
        flat_mask = mask.reshape(-1)
        for name, sae in sae_tree.items():
            x = acts[sae.cfg.hook_name].reshape(-1, sae.cfg.d_in).astype(jnp.float32)   # [N, D]
            z = sae.encode(x)
            out["sums"][name] = activation_batch_sums(x, sae.decode(z), z, flat_mask)
        for hook in hooks:
            x = acts[hook].astype(jnp.float32)
            out["means"][hook] = jnp.sum(x * mask[..., None], axis=(0, 1))
        out["n_mask"] = jnp.sum(mask.astype(jnp.float32))
        out["mask"] = mask
        return out, logits

    stats = {n: ActivationStats(saes[n].cfg.d_in, saes[n].cfg.d_sae) for n in names}
    clean = MeanAccumulator()
    act_sum = {h: np.zeros(lm.config.hidden_size, np.float64) for h in hooks}
    n_mask = 0.0
    masks = []
    for ids, attn in batches:
        out = jax.device_get(capture_step(lm.params, dict(saes), jnp.asarray(ids), jnp.asarray(attn))[0])
        masks.append(out["mask"])
        clean.add(out["ce"], out["count"])
        for name in names:
            stats[name].add(out["sums"][name])
        for hook in hooks:
            act_sum[hook] += out["means"][hook]
        n_mask += float(out["n_mask"])
    if n_mask == 0:
        raise UserError("every position was excluded (special tokens / first position / padding): nothing "
                        "to evaluate")
    means = {h: jnp.asarray(act_sum[h] / n_mask, jnp.float32) for h in hooks}

    # ---- pass 2: splicing ------------------------------------------------------------------------------
    units = {name: [name] for name in names}
    groups = joint_groups(saes) if config.joint else {}
    units.update(groups)

    @jax.jit
    def unit_step(params, group, unit_means, ids, attn, mask, clean_logits):
        return unit_sums(lm, params, group, unit_means, ids, attn, mask, clean_logits)

    totals: dict = {u: defaultdict(float) for u in units}
    for (ids, attn), mask in zip(batches, masks):
        ids_j, attn_j, mask_j = jnp.asarray(ids), jnp.asarray(attn), jnp.asarray(mask)
        clean_logits = capture_step(lm.params, dict(saes), ids_j, attn_j)[1]   # same program as pass 1
        for unit, members in units.items():
            group = {saes[m].cfg.hook_name: saes[m] for m in members}
            sums = jax.device_get(unit_step(lm.params, group, {h: means[h] for h in group}, ids_j, attn_j,
                                            mask_j, clean_logits))
            for key, value in sums.items():
                totals[unit][key] += float(value)

    def model_metrics(unit: str) -> dict:
        t = totals[unit]
        n = max(t["count"], 1.0)
        ce_s, ce_z, ce_m = t["ce_spliced"] / n, t["ce_zero"] / n, t["ce_mean"] / n
        return {
            "ce_clean": clean.mean, "ce_spliced": ce_s, "ce_zero_ablated": ce_z, "ce_mean_ablated": ce_m,
            "delta_lm_loss": ce_s - clean.mean,
            "ce_loss_recovered": ce_loss_recovered(clean.mean, ce_s, ce_z),
            "ce_loss_recovered_mean_ablation": ce_loss_recovered(clean.mean, ce_s, ce_m),
            "kl_spliced": t["kl_spliced"] / n, "kl_zero_ablated": t["kl_zero"] / n,
        }

    kinds = layer_kinds(lm.config.mixers)      # per layer "full" / "linear", from the model's per-layer mixer
    kind_of = lambda layer: kinds[layer] if layer is not None and 0 <= layer < len(kinds) else None  # noqa: E731
    results = []
    for name in names:
        sae = saes[name]
        layer, site = layer_and_site(sae.cfg.hook_name)
        row = {"name": name, "hook": sae.cfg.hook_name, "layer": layer, "site": site, "layer_kind": kind_of(layer),
               "variant": variant_of(name, sae), "architecture": sae.cfg.architecture, "d_sae": sae.cfg.d_sae,
               "k": sae.cfg.k, **stats[name].summary(config.dense_threshold), **model_metrics(name)}
        results.append(SAEEval(name, row, stats[name].log10_density, stats[name].l0_hist.copy()))
    joint_rows = []
    for label, members in groups.items():
        layer, _ = layer_and_site(saes[members[0]].cfg.hook_name)
        joint_rows.append({"name": label, "layer": layer, "layer_kind": kind_of(layer), "saes": members,
                           "hooks": [saes[m].cfg.hook_name for m in members], **model_metrics(label)})
    return EvalResults(saes=results, joint=joint_rows, ce_clean=clean.mean, n_tokens=int(n_mask), config=config)


def heldout_batches(tokenizer, files: Sequence[str], config: EvalConfig, seed: int = 0) -> list[np.ndarray]:
    """Enough packed ``[batch_size, ctx_len]`` token batches from ``files`` for ``config.n_tokens`` tokens."""
    import os

    from qwen_sae_jax.data.text import open_documents
    from qwen_sae_jax.data.tokens import DataConfig, TokenBatches

    for file in files:
        if os.path.isdir(file):
            raise UserError(f"held-out file {file!r} is a folder; give files or globs such as "
                            f"{os.path.join(file, '*.jsonl')}")
    data_cfg = DataConfig(files=list(files), ctx_len=config.ctx_len, batch_size=config.batch_size, seed=seed)
    docs = open_documents(data_cfg)
    if len(docs) < config.batch_size:
        raise UserError(f"the held-out files hold {len(docs)} document(s), fewer than the batch size "
                        f"{config.batch_size} (--batch-size): each row of a batch reads its own documents; lower "
                        "--batch-size or give more text")
    stream = TokenBatches(tokenizer, data_cfg, docs=docs)
    n_batches = -(-config.n_tokens // (config.batch_size * config.ctx_len))
    return [np.asarray(next(stream), np.int32) for _ in range(n_batches)]


DEFAULT_EVAL_FILES = ("tiny:heldout/english.jsonl", "tiny:heldout/chinese.jsonl", "tiny:heldout/code.jsonl",
                      "tiny:heldout/docs.jsonl", "tiny:heldout/chat.jsonl")
