"""Feature-guided safety-data synthesis (Qwen-Scope's report): synthesise chat samples that activate the target
SAE features an existing dataset never activates, and a random baseline from the same candidates.

The pieces, each usable alone:

``read_targets``        the target features: (canonical hook, feature) pairs from a features file
``read_dataset``        the existing dataset: JSONL of prompt/completion pairs or chat conversations -> `Sample`s
``activated_targets``   [samples, targets] bool: target t fires (SAE latent > 0) on some token of sample s,
                        measured with the SAE on the model's activations at t's hook (the sample rendered with the
                        model's chat template, every token counted, template tokens included)
``covered_by``          [targets] bool: activated by at least one sample
``greedy_select``       keep candidates one at a time, each time the one that activates the most still-uncovered
                        targets (ties: more targets in total, then the earlier candidate), until ``budget`` are kept
``random_select``       ``budget`` distinct candidates drawn with a seeded generator (the baseline)
``coverage_curve``      covered targets after each kept sample
``generate_candidates`` prompt-completion pairs sampled from the model (see its docstring)

Features file: JSON, one of
  ``{"features": [{"hook": "layers.3", "feature": 115}, ...]}``   (other keys of a row, e.g. SASFT's ``language``
                                                                 / ``tau``, are ignored; so is a ``languages`` list)
  ``[{"hook": ..., "feature": ...}, ...]`` or ``[["layers.3", 115], ...]``
  a ``qwen-sae contrast --json`` file (the features of every hook's ``last`` / ``mean_diff`` list)
  a ``qwen-sae refusal`` ``report.json`` (the features of every hook's ``top`` list)
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from qwen_sae_jax.errors import UserError

if TYPE_CHECKING:
    from qwen_sae_jax.sae.core import SAE

Target = tuple[str, int]     # (canonical hook, feature index)

# Openings of the user turn that the model continues into a whole request (`generate_candidates`): requests of
# the kinds safety data holds (how-to, planning, help for someone else, explanations), harmful or not as the
# model's own continuation decides.
DEFAULT_TEMPLATES = (
    "How do I", "How can I", "What is the best way to", "What tools would I need to", "Explain how to",
    "Write a step-by-step guide to", "Can you help me", "My friend wants to", "Tell me how to",
    "Give me instructions to", "I want to", "Is it possible to",
)


@dataclasses.dataclass
class Sample:
    """One chat sample: ``messages`` ({role, content} dicts); ``source`` is ``dataset``, ``template`` or
    ``free`` (how `generate_candidates` made its prompt)."""

    messages: list[dict]
    source: str = "dataset"

    @property
    def prompt(self) -> str:
        return next((m["content"] for m in self.messages if m["role"] == "user"), "")

    @property
    def completion(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "assistant"), "")

    @staticmethod
    def pair(prompt: str, completion: str, source: str = "dataset") -> Sample:
        messages = [{"role": "user", "content": prompt}]
        if completion:
            messages.append({"role": "assistant", "content": completion})
        return Sample(messages, source)


# ---------------------------------------------------------------------------------------------- inputs

def _target_rows(data: Any, where: str) -> list:
    """The rows naming features in any of the accepted layouts (module docstring)."""
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object with a 'features' list, or a list of features")
    if isinstance(data.get("features"), list):
        return data["features"]
    if isinstance(data.get("top"), dict):        # qwen-sae contrast --json
        rows = []
        for hook, by_position in data["top"].items():
            ranked = by_position.get("last", {}).get("mean_diff") if isinstance(by_position, dict) else None
            if not isinstance(ranked, list):
                raise UserError(f"{where}: contrast file without a 'last' / 'mean_diff' list for {hook}")
            rows += [{"hook": hook, "feature": r.get("feature") if isinstance(r, dict) else r} for r in ranked]
        return rows
    if isinstance(data.get("per_hook"), dict):   # qwen-sae refusal report.json
        return [{"hook": hook, "feature": r.get("feature") if isinstance(r, dict) else r}
                for hook, entry in data["per_hook"].items() for r in (entry or {}).get("top", [])]
    raise UserError(f"{where}: no 'features' list (nor a contrast 'top' or refusal 'per_hook' table)")


def parse_targets(data: Any, where: str = "features file") -> list[Target]:
    """``[(canonical hook, feature)]`` from parsed JSON, in file order, without repeats (UserError naming the
    entry for a malformed one)."""
    from qwen_sae_jax.steer.sources import canonical_hook

    out: list[Target] = []
    for i, row in enumerate(_target_rows(data, where)):
        if isinstance(row, (list, tuple)) and len(row) == 2:
            hook, feature = row
        elif isinstance(row, dict) and {"hook", "feature"} <= set(row):
            hook, feature = row["hook"], row["feature"]
        else:
            raise UserError(f"{where}: feature {i} must be {{hook, feature}} or [hook, feature], got {row!r:.80}")
        if not isinstance(hook, str):
            raise UserError(f"{where}: feature {i}: hook must be a string, got {hook!r:.40}")
        if not isinstance(feature, int) or isinstance(feature, bool) or feature < 0:
            raise UserError(f"{where}: feature {i}: feature must be an integer >= 0, got {feature!r:.40}")
        target = (canonical_hook(hook), int(feature))
        if target not in out:
            out.append(target)
    if not out:
        raise UserError(f"{where}: names no features")
    return out


def read_targets(path: str | os.PathLike) -> list[Target]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UserError(f"features file {os.fspath(path)!r} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"features file {os.fspath(path)!r} is a folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"features file {os.fspath(path)!r} is not valid JSON ({err})") from None
    return parse_targets(data, f"features file {os.fspath(path)!r}")


def check_targets(targets: Sequence[Target], saes: Mapping[str, SAE]) -> None:
    """UserError for a target whose hook no SAE reads or whose feature is outside its SAE."""
    for hook, feature in targets:
        if hook not in saes:
            raise UserError(f"the features file names hook {hook!r} but no --sae reads it; hooks with an SAE: "
                            f"{', '.join(saes) or 'none'}")
        d_sae = saes[hook].cfg.d_sae
        if feature >= d_sae:
            raise UserError(f"feature {feature} of {hook} is outside its SAE (d_sae={d_sae}; valid 0..{d_sae - 1})")


def _row_sample(row: Any, where: str) -> Sample:
    from qwen_sae_jax.posttrain.chat import _check_messages, parse_chatml

    if isinstance(row, str):
        row = {"text": row}
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        _check_messages(row["messages"], where)
        return Sample([{"role": m["role"], "content": m["content"]} for m in row["messages"]])
    if "prompt" in row:
        prompt, completion = row["prompt"], row.get("completion", "")
        if not isinstance(prompt, str) or not isinstance(completion, str) or not prompt.strip():
            raise UserError(f"{where}: 'prompt' must be a non-empty string and 'completion' a string")
        return Sample.pair(prompt, completion)
    if isinstance(row.get("text"), str):
        return Sample(parse_chatml(row["text"], where))
    raise UserError(f"{where}: a sample needs 'prompt' (+ 'completion'), 'messages' or a ChatML 'text'; "
                    f"fields: {', '.join(map(str, row)) or 'none'}")


def read_dataset(path: str) -> list[Sample]:
    """Samples of a JSONL file, one per non-empty line: ``{"prompt", "completion"}`` (completion optional: a
    prompt alone is a user turn), ``{"messages": [{role, content}, ...]}`` or ``{"text": ChatML transcript}``.
    A leading ``tiny:`` is a path inside the embedded model's folder."""
    from qwen_sae_jax.data.text import read_utf8
    from qwen_sae_jax.lm import TINY_DIR

    file = os.path.join(TINY_DIR, path[len("tiny:"):]) if path.startswith("tiny:") else path
    if not os.path.exists(file):
        raise UserError(f"dataset {path!r} does not exist")
    if os.path.isdir(file):
        raise UserError(f"dataset {path!r} is a folder; give a .jsonl file")
    samples = []
    for number, line in enumerate(read_utf8(file).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        samples.append(_row_sample(row, f"{path}:{number}"))
    if not samples:
        raise UserError(f"dataset {path!r} holds no samples (one JSON object per line: prompt/completion, "
                        "messages or a ChatML text)")
    return samples


# ---------------------------------------------------------------------------------------------- coverage

def render(tokenizer: Any, sample: Sample) -> str:
    """The sample as the model sees it: its chat template (with the generation prompt after a final user turn)."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("the model's tokenizer has no chat_template: samples are rendered with it")
    last_user = sample.messages[-1]["role"] != "assistant"
    return tokenizer.apply_chat_template(sample.messages, tokenize=False, add_generation_prompt=last_user)


def _fired_fn(lm, hooks: tuple[str, ...]):
    """``(params, saes, ids, mask, columns) -> [B, n_targets] bool`` for right-padded ``ids [B, T]``;
    ``columns[hook]`` holds the features of that hook's targets (in target order within the hook)."""
    import jax.numpy as jnp

    def run(params, saes, ids, mask, columns):
        _, acts = lm.apply(params, ids, mask, capture=hooks, stop_after_capture=True)
        real = mask[:, :, None] > 0
        out = []
        for hook in hooks:
            z = saes[hook].encode(acts[hook].astype(jnp.float32))[..., columns[hook]]   # [B, T, n_hook]
            out.append(jnp.any((z > 0) & real, axis=1))
        return jnp.concatenate(out, axis=-1)
    return run


def activated_targets(lm, saes: Mapping[str, SAE], targets: Sequence[Target], samples: Sequence[Sample], *,
                      batch_size: int = 32, max_tokens: int = 256) -> np.ndarray:
    """``[len(samples), len(targets)]`` bool: target (hook, feature) has latent > 0 on some token of the sample
    (its first ``max_tokens`` tokens as rendered by `render`)."""
    import jax

    from qwen_sae_jax.lm import pad_batch
    from qwen_sae_jax.steer.run import compiled

    check_targets(targets, saes)
    if not samples:
        return np.zeros((0, len(targets)), bool)
    hooks = tuple(dict.fromkeys(h for h, _ in targets))
    columns = {h: np.asarray([f for g, f in targets if g == h], np.int32) for h in hooks}
    order = np.argsort([hooks.index(h) for h, _ in targets], kind="stable")   # hook-grouped column -> target
    fn = compiled(lm, ("synthesis_fired", hooks), lambda: _fired_fn(lm, hooks))
    tok = lm._require_tokenizer()
    seqs = [tok(render(tok, s), add_special_tokens=False)["input_ids"][:max_tokens] for s in samples]
    out = np.zeros((len(samples), len(targets)), bool)
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        rows = len(chunk) if len(seqs) <= batch_size else batch_size   # one batch shape for every full chunk
        chunk = chunk + [chunk[-1]] * (rows - len(chunk))
        ids, mask = pad_batch(chunk, pad_id=lm.pad_token_id, side="right")
        extra = -ids.shape[1] % 16                                     # bucket lengths: fewer compiled shapes
        ids = np.pad(ids, ((0, 0), (0, extra)), constant_values=lm.pad_token_id)
        mask = np.pad(mask, ((0, 0), (0, extra)))
        fired = np.asarray(jax.device_get(fn(lm.params, {h: saes[h] for h in hooks}, ids, mask, columns)))
        n = min(batch_size, len(seqs) - start)
        out[start:start + n, order] = fired[:n]
    return out


def covered_by(activated: np.ndarray, covered: np.ndarray | None = None) -> np.ndarray:
    """``[targets]`` bool: ``covered`` (default none) or activated by some row of ``activated [n, targets]``."""
    activated = np.asarray(activated, bool)
    base = np.zeros(activated.shape[1], bool) if covered is None else np.asarray(covered, bool)
    return base | activated.any(axis=0)


# ---------------------------------------------------------------------------------------------- selection

def _check_budget(budget: int, n_candidates: int) -> None:
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget < 1:
        raise UserError(f"the budget must be an integer >= 1, got {budget!r}")
    if n_candidates == 0:
        raise UserError("there are no candidates to select from")
    if budget > n_candidates:
        raise UserError(f"the budget {budget} is larger than the {n_candidates} candidates; generate more")


def greedy_select(activated: np.ndarray, covered: np.ndarray | None, budget: int) -> list[int]:
    """Indices of ``budget`` candidates (rows of ``activated [n, targets]`` bool), in the order kept: each time
    the candidate that activates the most targets not yet covered (by ``covered`` or a kept candidate); ties go
    to the one activating more targets in total, then to the earlier one (so once nothing new can be covered the
    budget is filled with the candidates richest in target features)."""
    activated = np.asarray(activated, bool)
    _check_budget(budget, activated.shape[0])
    now = covered_by(activated[:0], covered).copy()
    total = activated.sum(axis=1).astype(np.int64)
    available = np.ones(activated.shape[0], bool)
    chosen: list[int] = []
    for _ in range(budget):
        gain = activated[:, ~now].sum(axis=1).astype(np.int64)
        key = np.where(available, gain * (activated.shape[1] + 1) + total, -1)
        best = int(np.argmax(key))                        # argmax: the first of equal keys
        chosen.append(best)
        available[best] = False
        now |= activated[best]
    return chosen


def random_select(n_candidates: int, budget: int, seed: int) -> list[int]:
    """``budget`` distinct candidate indices drawn uniformly with ``numpy.random.default_rng(seed)``."""
    _check_budget(budget, n_candidates)
    return [int(i) for i in np.random.default_rng(seed).choice(n_candidates, size=budget, replace=False)]


def coverage_curve(activated: np.ndarray, covered: np.ndarray | None, order: Sequence[int]) -> np.ndarray:
    """``[len(order) + 1]`` number of covered targets before and after each kept candidate of ``order``."""
    activated = np.asarray(activated, bool)
    now = covered_by(activated[:0], covered).copy()
    counts = [int(now.sum())]
    for i in order:
        now |= activated[i]
        counts.append(int(now.sum()))
    return np.asarray(counts)


# ---------------------------------------------------------------------------------------------- candidates

def _user_prefix(tokenizer: Any) -> str:
    """What the chat template writes before a user turn's content (``<|im_start|>user\\n`` for ChatML)."""
    marker = "\x00CONTENT\x00"
    text = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                         add_generation_prompt=False)
    return text[:text.index(marker)]


def _seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0] & 0x7FFFFFFF)


def _openings(n: int, templates: Sequence[str], free_fraction: float, rng) -> list[tuple[str, str]]:
    """``n`` (source, opening) pairs: ``free`` with probability ``free_fraction`` (empty opening), otherwise a
    uniformly drawn template."""
    out = []
    for _ in range(n):
        if not templates or rng.random() < free_fraction:
            out.append(("free", ""))
        else:
            out.append(("template", templates[int(rng.integers(len(templates)))]))
    return out


def generate_candidates(lm, n: int, *, seed: int = 0, templates: Sequence[str] = DEFAULT_TEMPLATES,
                        free_fraction: float = 0.25, max_prompt_tokens: int = 32, max_new_tokens: int = 48,
                        temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 32,
                        progress: Callable[[int, int], None] | None = None) -> list[Sample]:
    """Up to ``n`` prompt-completion pairs sampled from the model, seeded by ``seed``:

    1. the prompt: the model continues the user turn of its chat template (``<|im_start|>user\\n`` + opening) until
       it ends the turn or ``max_prompt_tokens``; the opening is a template drawn from ``templates`` (source
       ``template``) or, with probability ``free_fraction``, nothing (source ``free``: the model's own request);
    2. the completion: the model's reply to that prompt (chat template, ``max_new_tokens``).

    Both are sampled at ``temperature`` / ``top_p``. Candidates are made in batches of ``batch_size`` (one
    compiled shape); those whose prompt comes out empty are dropped, so fewer than ``n`` may come back.
    ``progress(done, n)`` is called after each batch."""
    from qwen_sae_jax.lm import pad_batch

    if n < 1:
        raise UserError(f"the number of candidates must be >= 1, got {n}")
    if not 0.0 <= free_fraction <= 1.0:
        raise UserError(f"free_fraction must be in [0, 1], got {free_fraction}")
    if free_fraction < 1.0 and not templates:
        raise UserError("no prompt templates given (and free_fraction < 1)")
    tok = lm._require_tokenizer()
    prefix = _user_prefix(tok)
    rng = np.random.default_rng(seed)
    openings = _openings(n, list(templates), free_fraction, rng)
    out: list[Sample] = []
    for b, start in enumerate(range(0, n, batch_size)):
        chunk = openings[start:start + batch_size]
        chunk = chunk + [chunk[-1]] * (min(batch_size, n) - len(chunk))      # full batches: one compiled shape
        enc = [tok(prefix + opening, add_special_tokens=False)["input_ids"] for _, opening in chunk]
        ids, mask = pad_batch(enc, pad_id=lm.pad_token_id, side="left")
        new, lengths = lm.generate_tokens(ids, mask, max_new_tokens=max_prompt_tokens, temperature=temperature,
                                          top_p=top_p, seed=_seed_of(seed, b, 0))
        prompts = [(opening + tok.decode(row[:k].tolist(), skip_special_tokens=True)).strip()
                   for (_, opening), row, k in zip(chunk, new, lengths)]
        ids, mask = lm.tokenize([p or "?" for p in prompts], padding_side="left", chat=True)
        new, lengths = lm.generate_tokens(ids, mask, max_new_tokens=max_new_tokens, temperature=temperature,
                                          top_p=top_p, seed=_seed_of(seed, b, 1))
        for i, ((source, _), prompt, row, k) in enumerate(zip(chunk, prompts, new, lengths)):
            if start + i < n and prompt:
                reply = tok.decode(row[:k].tolist(), skip_special_tokens=True).strip()
                out.append(Sample.pair(prompt, reply, source))
        if progress is not None:
            progress(min(start + batch_size, n), n)
    return out


def target_rows(targets: Sequence[Target], mask: np.ndarray | Sequence[bool]) -> list[dict]:
    """``[{"hook", "feature"}]`` of the targets where ``mask [targets]`` is true (for JSON output)."""
    return [{"hook": h, "feature": f} for (h, f), on in zip(targets, np.asarray(mask, bool)) if on]
