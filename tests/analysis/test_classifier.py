"""The top1-diff / OR-rule classifier on hand-checkable footprints."""
import numpy as np
import pytest

from qwen_sae_jax.analysis.classifier import binary_metrics, fit_feature_classifier, or_rule, rank_by_rate_difference
from qwen_sae_jax.errors import UserError


def test_binary_metrics_by_hand():
    pred = np.array([1, 1, 0, 0, 1], bool)
    label = np.array([1, 0, 1, 0, 1], bool)
    m = binary_metrics(pred, label)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(3 / 5)
    assert binary_metrics(np.zeros(3, bool), np.ones(3, bool))["precision"] == 0.0


def test_rank_and_or_rule():
    # feature 2 fires on every positive and no negative; feature 0 on half of each; feature 1 only on negatives
    pos = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]], bool)
    neg = np.array([[1, 1, 0], [0, 1, 0]], bool)
    order, diff = rank_by_rate_difference(pos, neg)
    assert order.tolist() == [2, 0, 1]
    np.testing.assert_allclose(diff, [1.0, 0.0, -1.0])
    assert or_rule(neg, [2, 0]).tolist() == [True, False]


def test_planted_features_give_perfect_held_out_scores():
    """Positives each carry one of two planted features (0 or 1), negatives neither; everything else is
    noise shared by both sets. Two features are needed; the OR rule over them is perfect."""
    rng = np.random.default_rng(0)
    F = 30
    pos = rng.random((40, F)) < 0.2
    neg = rng.random((40, F)) < 0.2
    pos[:, :2] = False
    neg[:, :2] = False
    pos[:20, 0] = True
    pos[20:, 1] = True
    result = fit_feature_classifier(pos, neg, max_features=6, test_fraction=0.25, seed=1)
    assert sorted(result.features[:2]) == [0, 1]
    assert result.n_features == 2 and result.chosen_by == "train-f1"
    assert result.test["f1"] == 1.0 and result.test["precision"] == 1.0 and result.test["recall"] == 1.0
    assert result.n_test == (10, 10) and result.n_train == (30, 30)
    assert result.train_f1_by_n[1] == 1.0 and result.train_f1_by_n[0] < 1.0

    one = fit_feature_classifier(pos, neg, n_features=1, test_fraction=0.25, seed=1)
    assert one.chosen_by == "given" and one.n_features == 1
    assert one.test["precision"] == 1.0 and one.test["recall"] < 1.0     # one planted feature covers ~half


def test_bad_input():
    ok = np.ones((4, 5), bool)
    with pytest.raises(UserError, match="at least 2 texts"):
        fit_feature_classifier(np.ones((1, 5), bool), ok)
    with pytest.raises(UserError, match="test_fraction"):
        fit_feature_classifier(ok, ok, test_fraction=1.0)
    with pytest.raises(UserError, match=r"\[1, d_sae=5\]"):
        fit_feature_classifier(ok, ok, n_features=9)
    with pytest.raises(UserError, match="different feature counts"):
        rank_by_rate_difference(ok, np.ones((4, 6), bool))
