"""Contrastive feature ranking between two text sets (e.g. harmful vs harmless prompts, Chinese vs English).

For each SAE and each text set the texts are run through the model (left-padded batches, SAE latents
computed on device, only per-feature sums brought back) and two reductions are kept:

``last``   the latents at the **last token** of each text (for chat-templated prompts: the final token of the
           generation prompt ``<|im_start|>assistant\\n``, where the model decides how to answer);
``mean``   the latents **averaged over all real tokens** of each text (chat-template tokens included), then
           averaged over texts, so every text weighs the same whatever its length.

Per feature: the mean activation and the firing rate (``last``: fraction of texts where the feature is > 0
at the last token; ``mean``: mean over texts of the fraction of their tokens where it is > 0). The ranking
scores are ``mean_diff = mean_pos - mean_neg`` and ``rate_diff = rate_pos - rate_neg``. The mean raw
activation at the hook is kept as well, which gives the difference-of-means direction
``resid_pos - resid_neg`` (the classic refusal direction when computed at ``last``).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from qwen_sae_jax.errors import UserError, did_you_mean
from qwen_sae_jax.steer.run import compiled

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE

POSITIONS = ("last", "mean")
SCORES = ("mean_diff", "rate_diff")


@dataclasses.dataclass
class SetStats:
    """Statistics of one text set at one SAE (arrays are float64 numpy; ``[d_sae]`` or ``[D]``)."""

    n_texts: int
    mean: dict[str, np.ndarray]      # position -> [d_sae] mean activation
    rate: dict[str, np.ndarray]      # position -> [d_sae] firing rate
    resid: dict[str, np.ndarray]     # position -> [D] mean raw activation at the hook
    norm: dict[str, float]           # position -> mean L2 norm of the raw activation at the hook


@dataclasses.dataclass
class Contrast:
    """Per-feature contrast of a positive and a negative text set at one SAE and one position."""

    hook: str
    position: str
    pos: SetStats
    neg: SetStats

    @property
    def mean_diff(self) -> np.ndarray:   # [d_sae]
        return self.pos.mean[self.position] - self.neg.mean[self.position]

    @property
    def rate_diff(self) -> np.ndarray:   # [d_sae]
        return self.pos.rate[self.position] - self.neg.rate[self.position]

    @property
    def direction(self) -> np.ndarray:   # [D] difference of mean activations (pos - neg), raw units
        return self.pos.resid[self.position] - self.neg.resid[self.position]

    def ranking(self, by: str = "mean_diff", sign: int = 1) -> np.ndarray:
        """Feature indices sorted by ``sign * score`` descending (ties: smaller index first)."""
        if by not in SCORES:
            raise UserError(f"rank by {by!r} is not valid{did_you_mean(str(by), SCORES)}; valid: {', '.join(SCORES)}")
        score = sign * getattr(self, by)
        return np.lexsort((np.arange(score.size), -score))

    def top(self, n: int = 10, by: str = "mean_diff", sign: int = 1) -> list[dict]:
        """The ``n`` best features as rows: feature, both scores, means and rates of both sets."""
        p = self.position
        return [{"hook": self.hook, "feature": int(i), "mean_diff": float(self.mean_diff[i]),
                 "rate_diff": float(self.rate_diff[i]), "mean_pos": float(self.pos.mean[p][i]),
                 "mean_neg": float(self.neg.mean[p][i]), "rate_pos": float(self.pos.rate[p][i]),
                 "rate_neg": float(self.neg.rate[p][i])}
                for i in self.ranking(by, sign)[:n]]


def _batch_sums(lm, hooks: Sequence[str]):
    """Jitted ``(params, saes, ids, mask, weight) -> {hook: sums}`` for one left-padded batch."""
    def run(params, saes, ids, mask, weight):              # ids, mask [B, T]; weight [B] (0 for filler rows)
        _, acts = lm.apply(params, ids, mask, capture=hooks, stop_after_capture=True)
        real = mask.astype(jnp.float32)                     # [B, T]
        count = jnp.maximum(real.sum(-1, keepdims=True), 1.0)   # [B, 1]
        out = {}
        for hook in hooks:
            h = acts[hook].astype(jnp.float32)              # [B, T, D]
            z = saes[hook].encode(h).astype(jnp.float32)    # [B, T, d_sae]
            fired = (z > 0).astype(jnp.float32)
            w = weight[:, None]
            out[hook] = {
                "mean_last": jnp.sum(z[:, -1] * w, 0), "rate_last": jnp.sum(fired[:, -1] * w, 0),
                "mean_mean": jnp.sum(jnp.einsum("btf,bt->bf", z, real) / count * w, 0),
                "rate_mean": jnp.sum(jnp.einsum("btf,bt->bf", fired, real) / count * w, 0),
                "resid_last": jnp.sum(h[:, -1] * w, 0),
                "resid_mean": jnp.sum(jnp.einsum("btd,bt->bd", h, real) / count * w, 0),
                "norm_last": jnp.sum(jnp.linalg.norm(h[:, -1], axis=-1) * weight),
                "norm_mean": jnp.sum(jnp.sum(jnp.linalg.norm(h, axis=-1) * real, -1) / count[:, 0] * weight),
            }
        return out
    return run


def set_stats(lm, saes: Mapping[str, "SAE"], texts: Sequence[str], *, chat: bool = False,
              batch_size: int = 16, max_tokens: int | None = None) -> dict[str, SetStats]:
    """``{hook: SetStats}`` of ``texts`` for SAEs ``{canonical hook: SAE}`` (see module docstring).

    ``max_tokens`` keeps the first tokens of long texts (the last position is then the last kept token)."""
    texts = list(texts)
    if not texts:
        raise UserError("the text set is empty: nothing to compute feature statistics on")
    if not saes:
        raise UserError("no SAEs given")
    hooks = tuple(saes)
    for hook, sae in saes.items():
        if sae.cfg.d_in != lm.config.hidden_size:
            raise UserError(f"the SAE at {hook} reads {sae.cfg.d_in}-wide activations but the model's are "
                            f"{lm.config.hidden_size} wide")
    fn = compiled(lm, ("set_stats", hooks), lambda: _batch_sums(lm, list(hooks)))
    totals: dict[str, dict[str, np.ndarray]] = {}
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        ids, mask = _left_padded(lm, chunk, chat, max_tokens)
        rows = len(chunk) if len(texts) <= batch_size else batch_size
        weight = np.zeros(rows, np.float32)
        weight[:len(chunk)] = 1.0
        if ids.shape[0] < rows:  # filler rows (weight 0) keep one compiled batch shape
            reps = rows - ids.shape[0]
            ids = np.concatenate([ids, np.repeat(ids[-1:], reps, 0)])
            mask = np.concatenate([mask, np.repeat(mask[-1:], reps, 0)])
        sums = jax.device_get(fn(lm.params, dict(saes), ids, mask, weight))
        for hook, parts in sums.items():
            acc = totals.setdefault(hook, {k: np.zeros(v.shape, np.float64) for k, v in parts.items()})
            for k, v in parts.items():
                acc[k] += np.asarray(v, np.float64)
    n = len(texts)
    return {hook: SetStats(n_texts=n,
                           mean={p: t[f"mean_{p}"] / n for p in POSITIONS},
                           rate={p: t[f"rate_{p}"] / n for p in POSITIONS},
                           resid={p: t[f"resid_{p}"] / n for p in POSITIONS},
                           norm={p: float(t[f"norm_{p}"]) / n for p in POSITIONS})
            for hook, t in totals.items()}


def _left_padded(lm, texts, chat, max_tokens):
    from qwen_sae_jax.lm import pad_batch

    ids, mask = lm.tokenize(texts, padding_side="right", chat=chat)
    seqs = [row[m > 0].tolist() for row, m in zip(ids, mask)]
    if max_tokens is not None:
        seqs = [s[:max_tokens] for s in seqs]
    ids, mask = pad_batch(seqs, pad_id=lm.pad_token_id, side="left")
    extra = -ids.shape[1] % 16  # bucket lengths: fewer compiled shapes
    if extra:
        ids = np.pad(ids, ((0, 0), (extra, 0)), constant_values=lm.pad_token_id)
        mask = np.pad(mask, ((0, 0), (extra, 0)))
    return ids, mask


def rank_features(lm, saes: Mapping[str, "SAE"], pos_texts: Sequence[str], neg_texts: Sequence[str], *,
                  chat: bool = False, batch_size: int = 16, max_tokens: int | None = None
                  ) -> dict[str, dict[str, Contrast]]:
    """``{hook: {"last": Contrast, "mean": Contrast}}`` of ``pos_texts`` against ``neg_texts``."""
    if not list(pos_texts):
        raise UserError("the positive text set is empty")
    if not list(neg_texts):
        raise UserError("the negative text set is empty")
    pos = set_stats(lm, saes, pos_texts, chat=chat, batch_size=batch_size, max_tokens=max_tokens)
    neg = set_stats(lm, saes, neg_texts, chat=chat, batch_size=batch_size, max_tokens=max_tokens)
    return {hook: {p: Contrast(hook, p, pos[hook], neg[hook]) for p in POSITIONS} for hook in saes}


def matched_random_features(rate: np.ndarray, exclude: Sequence[int] | np.ndarray, targets: Sequence[int], n: int,
                            seed: int = 0, pool: int = 20) -> list[int]:
    """``n`` random control features whose firing rate is close to the targets': draw ``j`` takes target
    ``j mod len(targets)`` and samples uniformly among the ``pool`` features with the nearest rate (absolute
    difference), never one of ``exclude`` and without repeats. ``rate [d_sae]`` is the rate used for matching."""
    if not list(targets):
        raise UserError("matched_random_features needs at least one target feature")
    rng = np.random.default_rng(seed)
    rate = np.asarray(rate, np.float64)
    banned = set(int(i) for i in exclude) | set(int(t) for t in targets)
    chosen: list[int] = []
    for draw in range(n):
        target = int(targets[draw % len(targets)])
        nearest = np.argsort(np.abs(rate - rate[target]), kind="stable")
        candidates = [int(i) for i in nearest if int(i) not in banned and int(i) not in chosen][:pool]
        if not candidates:
            break
        chosen.append(int(rng.choice(candidates)))
    return chosen
