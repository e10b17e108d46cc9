"""Qwen-Scope's feature-based text classifier: a handful of SAE features and an OR rule, no trained head.

1. Split each labelled set (positive / negative texts) into a discovery (train) part and a held-out part
   (seeded, stratified: ``test_fraction`` of each class is held out).
2. Firing rate of feature f on a set = the fraction of its texts on which f fires (see `footprint`).
3. "top1-diff" selection: rank features by ``rate_pos - rate_neg`` on the discovery split (largest first,
   ties by lower index) and keep the top ``n``.
4. OR rule: a text is predicted positive when any kept feature fires on it.
5. ``n`` is given, or chosen in ``1..max_features`` as the value with the best discovery-split F1 (the
   smallest such n on ties); precision / recall / F1 are then reported on the held-out split.

Conventions: the positive class is the first set; precision is 0 when nothing is predicted positive,
F1 is 0 when precision + recall is 0.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from qwen_sae_jax.errors import UserError

SELECTION = "top1-diff"


def firing_rates(fired: np.ndarray) -> np.ndarray:
    """[F] fraction of texts (rows of ``fired [N, F]``) on which each feature fires."""
    fired = np.asarray(fired, bool)
    if fired.ndim != 2 or fired.shape[0] == 0:
        raise UserError(f"firing rates need a non-empty [texts, features] matrix, got shape {fired.shape}")
    return fired.mean(axis=0)


def rank_by_rate_difference(fired_pos: np.ndarray, fired_neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(features, diff)``: every feature ordered by ``rate_pos - rate_neg`` (descending, stable)."""
    if fired_pos.shape[1] != fired_neg.shape[1]:
        raise UserError(f"the two sets have different feature counts: {fired_pos.shape[1]} vs {fired_neg.shape[1]}")
    diff = firing_rates(fired_pos) - firing_rates(fired_neg)
    order = np.argsort(-diff, kind="stable")
    return order, diff[order]


def or_rule(fired: np.ndarray, features) -> np.ndarray:
    """[N] bool: texts on which any of ``features`` fires."""
    features = np.asarray(features, np.int64).reshape(-1)
    return np.asarray(np.asarray(fired, bool)[:, features].any(axis=1))


def binary_metrics(predicted: np.ndarray, label: np.ndarray) -> dict:
    """Precision, recall, F1, accuracy and the confusion counts of boolean predictions against labels."""
    predicted, label = np.asarray(predicted, bool), np.asarray(label, bool)
    tp = int(np.sum(predicted & label))
    fp = int(np.sum(predicted & ~label))
    fn = int(np.sum(~predicted & label))
    tn = int(np.sum(~predicted & ~label))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": (tp + tn) / max(len(label), 1),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def split_indices(n: int, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices of ``n`` items: a seeded permutation, ``round(n * test_fraction)`` held out
    (at least one on each side)."""
    n_test = min(max(int(round(n * test_fraction)), 1), n - 1)
    perm = rng.permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


@dataclasses.dataclass
class ClassifierResult:
    features: list[int]               # the kept features, best first
    rate_diff: list[float]            # their discovery-split firing-rate differences
    rate_pos: list[float]             # their discovery-split firing rates on the positive set
    rate_neg: list[float]             # ... and on the negative set
    n_features: int
    chosen_by: str                    # "given" or "train-f1"
    train: dict                       # metrics on the discovery split
    test: dict                        # metrics on the held-out split
    train_f1_by_n: list[float]        # discovery F1 of the OR rule over the top n, n = 1..max_features
    n_train: tuple[int, int]          # (positive, negative) discovery texts
    n_test: tuple[int, int]           # (positive, negative) held-out texts
    selection: str = SELECTION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def fit_feature_classifier(fired_pos: np.ndarray, fired_neg: np.ndarray, *, n_features: int | None = None,
                           max_features: int = 10, test_fraction: float = 0.3, seed: int = 0) -> ClassifierResult:
    """Fit and evaluate the top1-diff / OR-rule classifier on two footprint matrices ``[N_pos, F]``,
    ``[N_neg, F]`` (see the module docstring)."""
    fired_pos, fired_neg = np.asarray(fired_pos, bool), np.asarray(fired_neg, bool)
    for name, f in (("positive", fired_pos), ("negative", fired_neg)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise UserError(f"the {name} set needs at least 2 texts (one to select features on, one held out); "
                            f"got {f.shape[0] if f.ndim == 2 else 0}")
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction must be in (0, 1), got {test_fraction}")
    d_sae = fired_pos.shape[1]
    limit = n_features if n_features is not None else max_features
    if not 1 <= limit <= d_sae:
        raise UserError(f"the number of features must be in [1, d_sae={d_sae}], got {limit}")

    rng = np.random.default_rng(seed)
    pos_train, pos_test = split_indices(fired_pos.shape[0], test_fraction, rng)
    neg_train, neg_test = split_indices(fired_neg.shape[0], test_fraction, rng)
    order, diff = rank_by_rate_difference(fired_pos[pos_train], fired_neg[neg_train])

    def evaluate(pos_rows, neg_rows, features):
        pred = np.concatenate([or_rule(fired_pos[pos_rows], features), or_rule(fired_neg[neg_rows], features)])
        label = np.concatenate([np.ones(len(pos_rows), bool), np.zeros(len(neg_rows), bool)])
        return binary_metrics(pred, label)

    train_f1 = [evaluate(pos_train, neg_train, order[:n])["f1"] for n in range(1, limit + 1)]
    if n_features is not None:
        n, chosen_by = n_features, "given"
    else:
        n, chosen_by = int(np.argmax(train_f1)) + 1, "train-f1"
    kept = order[:n]
    rate_pos = firing_rates(fired_pos[pos_train])[kept]
    rate_neg = firing_rates(fired_neg[neg_train])[kept]
    return ClassifierResult(
        features=[int(f) for f in kept], rate_diff=[float(d) for d in diff[:n]],
        rate_pos=[float(r) for r in rate_pos], rate_neg=[float(r) for r in rate_neg], n_features=n,
        chosen_by=chosen_by, train=evaluate(pos_train, neg_train, kept), test=evaluate(pos_test, neg_test, kept),
        train_f1_by_n=[float(f) for f in train_f1], n_train=(len(pos_train), len(neg_train)),
        n_test=(len(pos_test), len(neg_test)))
