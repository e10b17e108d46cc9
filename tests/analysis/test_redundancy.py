"""The redundancy metric on hand-checkable footprints, and the exact curve against sampling."""
import numpy as np
import pytest

from qwen_sae_jax.analysis.redundancy import coverage_curve, footprint_overlap, redundancy
from qwen_sae_jax.errors import UserError


def test_identical_texts_give_a_flat_curve():
    N, f = 6, 3
    fired = np.zeros((N, 10), bool)
    fired[:, [1, 4, 7]] = True
    r = redundancy(fired)
    np.testing.assert_allclose(r.curve, np.ones(N))
    assert r.footprint == f and r.auc == pytest.approx(1.0) and r.redundancy == pytest.approx(N / f)


def test_disjoint_footprints_give_a_known_r():
    N, f = 5, 2
    fired = np.zeros((N, N * f + 3), bool)
    for i in range(N):
        fired[i, i * f:(i + 1) * f] = True
    r = redundancy(fired)
    np.testing.assert_allclose(r.curve, np.arange(1, N + 1) / N)
    assert r.footprint == N * f
    assert r.auc == pytest.approx((N + 1) / (2 * N))
    assert r.redundancy == pytest.approx((N + 1) / (2 * N * f))


def test_exact_curve_matches_random_subsets():
    rng = np.random.default_rng(0)
    fired = rng.random((9, 40)) < rng.uniform(0.02, 0.5, size=40)
    curve = coverage_curve(fired)
    total = fired.any(axis=0).sum()
    for n in (1, 3, 8):
        draws = [fired[rng.choice(9, n, replace=False)].any(axis=0).sum() / total for _ in range(20000)]
        assert curve[n - 1] == pytest.approx(np.mean(draws), abs=0.01)
    assert curve[-1] == pytest.approx(1.0) and (np.diff(curve) >= -1e-12).all()


def test_one_text_and_overlap():
    r = redundancy(np.array([[True, False, True]]))
    assert r.curve.tolist() == [1.0] and r.redundancy == pytest.approx(0.5)
    a = np.array([[1, 1, 0, 0], [0, 1, 1, 0]], bool)      # F(A) = {0, 1, 2}
    b = np.array([[0, 0, 1, 1]], bool)                    # F(B) = {2, 3}
    assert footprint_overlap(a, b) == pytest.approx(1 / 3)
    assert footprint_overlap(b, a) == pytest.approx(1 / 2)


def test_bad_input():
    with pytest.raises(UserError, match="footprint is empty"):
        redundancy(np.zeros((3, 4), bool))
    with pytest.raises(UserError, match="non-empty"):
        redundancy(np.zeros((0, 4), bool))
    with pytest.raises(UserError, match="different widths"):
        footprint_overlap(np.ones((2, 3), bool), np.ones((2, 4), bool))
