"""Qwen-Scope's benchmark-redundancy metric from SAE feature footprints.

For a set D of N texts with footprints F(x) (the features that fire on x, see `footprint`):

    F(D)  = union of F(x) over x in D                        the feature footprint of D
    c_n   = E |F(S_n)| / |F(D)|,  n = 1..N                   coverage of a uniformly random n-subset S_n
    AUC   = (1/N) * sum_{n=1..N} c_n                         area under c over x = n/N in (0, 1]
    R(D)  = AUC * N / |F(D)|

The expectation is exact, not sampled: a feature that fires on m of the N texts is missed by a random
n-subset with probability C(N-m, n) / C(N, n), so E|F(S_n)| = sum_f (1 - C(N-m_f, n) / C(N, n)).

Reading it: a redundant set reaches full coverage with few texts (c_n near 1 early, AUC near 1), and
has many texts per footprint feature (N / |F(D)| large). Identical texts with f features each give
c_n = 1 and R = N / f; texts with pairwise disjoint footprints of f features give c_n = n / N,
AUC = (N + 1) / (2N) and R = (N + 1) / (2 N f).
(The paper's exact normalisation of the AUC is not published with the formula; this module states its own.)

`footprint_overlap(A, B)` = |F(A) & F(B)| / |F(A)|: the share of A's footprint that B also covers.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from qwen_sae_jax.errors import UserError


def _check(fired: np.ndarray, what: str = "footprints") -> np.ndarray:
    fired = np.asarray(fired, bool)
    if fired.ndim != 2 or fired.shape[0] == 0:
        raise UserError(f"{what} must be a non-empty [texts, features] matrix, got shape {fired.shape}")
    return fired


def coverage_curve(fired: np.ndarray, chunk: int = 256) -> np.ndarray:
    """[N] exact ``c_n`` for n = 1..N from the footprint matrix ``fired [N, F]``."""
    fired = _check(fired)
    N = fired.shape[0]
    counts = fired.sum(axis=0)                                     # [F] texts each feature fires on
    counts = counts[counts > 0]
    if counts.size == 0:
        raise UserError("no feature fires on any of the texts: the footprint is empty (check the SAE, the "
                        "texts, and the firing threshold)")
    values, weights = np.unique(counts, return_counts=True)       # distinct m and how many features have it
    n = np.arange(1, N + 1, dtype=np.float64)                      # [N]
    missed = np.zeros(N, np.float64)                               # sum_f P(f not in S_n)
    for start in range(0, values.size, chunk):
        m = values[start:start + chunk, None].astype(np.float64)   # [c, 1]
        # P(miss | m, n) = prod_{i=0}^{n-1} (N - m - i) / (N - i), clipped at 0 once n > N - m
        factors = np.clip((N - m - (n - 1)) / (N - (n - 1)), 0.0, None)   # [c, N]
        missed += (weights[start:start + chunk, None] * np.cumprod(factors, axis=1)).sum(axis=0)
    return (counts.size - missed) / counts.size


@dataclasses.dataclass
class Redundancy:
    n_texts: int
    footprint: int              # |F(D)|
    curve: np.ndarray           # [N] c_n, n = 1..N
    auc: float
    redundancy: float           # R(D)

    def to_dict(self) -> dict:
        return {"n_texts": self.n_texts, "footprint": self.footprint, "auc": self.auc,
                "redundancy": self.redundancy, "curve": [float(c) for c in self.curve]}


def redundancy(fired: np.ndarray) -> Redundancy:
    """`Redundancy` (footprint size, coverage curve, AUC, R) of a footprint matrix ``fired [N, F]``."""
    fired = _check(fired)
    curve = coverage_curve(fired)
    footprint = int(fired.any(axis=0).sum())
    auc = float(curve.mean())
    N = fired.shape[0]
    return Redundancy(n_texts=N, footprint=footprint, curve=curve, auc=auc, redundancy=auc * N / footprint)


def footprint_overlap(fired_a: np.ndarray, fired_b: np.ndarray) -> float:
    """|F(A) & F(B)| / |F(A)| for two footprint matrices over the same SAE."""
    a, b = _check(fired_a, "footprints of A").any(axis=0), _check(fired_b, "footprints of B").any(axis=0)
    if a.shape != b.shape:
        raise UserError(f"the two footprints come from SAEs of different widths ({a.size} vs {b.size})")
    if not a.any():
        raise UserError("the first set's footprint is empty: no feature fires on it")
    return float((a & b).sum() / a.sum())
