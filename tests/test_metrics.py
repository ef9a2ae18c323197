"""Classification metrics against small hand-computed cases (core/metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from core.metrics import auc, classification_report, curves, predict_from_probs, threshold_metrics

# binary: the positive class's probabilities 0.1, 0.4 (negatives) and 0.35, 0.8 (positives)
Y_BIN = [0, 0, 1, 1]
P_POS = np.array([0.1, 0.4, 0.35, 0.8])
P_BIN = np.stack([1 - P_POS, P_POS], axis=1)

# three classes, no ties in any row
Y_MULTI = [0, 0, 1, 1, 2, 2]
P_MULTI = np.array([
    [0.70, 0.20, 0.10],
    [0.30, 0.40, 0.30],
    [0.20, 0.50, 0.30],
    [0.50, 0.30, 0.20],
    [0.10, 0.30, 0.60],
    [0.45, 0.35, 0.20],
])


def test_binary_report_by_hand():
    report = classification_report(Y_BIN, P_BIN, ["neg", "pos"])
    # predictions at 0.5: [0, 0, 0, 1]
    assert report["n"] == 4 and report["labels"] == ["neg", "pos"]
    assert report["accuracy"] == pytest.approx(3 / 4)
    assert report["confusion_matrix"] == [[2, 0], [1, 1]]
    # neg: precision 2/3, recall 1 -> F1 0.8; pos: precision 1, recall 1/2 -> F1 2/3
    assert report["per_class"]["neg"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert report["per_class"]["pos"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert report["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    # positive/negative pairs ranked right: 0.35 > 0.1, 0.8 > 0.1, 0.8 > 0.4 (not 0.35 > 0.4) -> 3/4
    assert report["auc"] == pytest.approx(0.75)
    assert report["threshold"] == 0.5


def test_binary_threshold_moves_the_decisions():
    report = classification_report(Y_BIN, P_BIN, ["neg", "pos"], threshold=0.3)
    assert report["confusion_matrix"] == [[1, 1], [0, 2]]
    assert report["auc"] == pytest.approx(0.75)  # AUC does not depend on the threshold


def test_multiclass_report_by_hand():
    report = classification_report(Y_MULTI, P_MULTI, ["a", "b", "c"])
    # argmax predictions: [0, 1, 1, 0, 2, 0]
    assert report["accuracy"] == pytest.approx(0.5)
    assert report["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [1, 0, 1]]
    # F1: a 2*(1/3*1/2)/(1/3+1/2) = 0.4; b 0.5; c 2/3
    assert report["macro_f1"] == pytest.approx((0.4 + 0.5 + 2 / 3) / 3)
    # one-vs-rest AUC: a 6/8, b 5.5/8 (one tie), c 5.5/8 (one tie) -> macro mean
    assert report["auc"] == pytest.approx((6 / 8 + 5.5 / 8 + 5.5 / 8) / 3)
    assert report["threshold"] is None


def test_auc_with_a_class_absent_from_the_labels_averages_the_present_ones():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1]])
    # class 0 vs rest: 0.6, 0.2 against 0.3, 0.1 -> 3/4; class 1: 0.6, 0.8 against 0.3, 0.5 -> 1
    assert auc(y, probs) == pytest.approx((0.75 + 1.0) / 2)


def test_auc_is_none_when_only_one_class_is_present():
    assert auc(np.array([1, 1, 1]), P_BIN[:3]) is None
    assert classification_report([1, 1], P_BIN[2:], ["neg", "pos"])["auc"] is None


def test_predict_from_probs():
    assert predict_from_probs(P_BIN).tolist() == [0, 0, 0, 1]
    assert predict_from_probs(P_BIN, threshold=0.3).tolist() == [0, 1, 1, 1]
    assert predict_from_probs(P_MULTI).tolist() == [0, 1, 1, 0, 2, 0]


def test_curve_points():
    out = curves(np.array(Y_BIN), P_BIN, ["neg", "pos"])
    assert list(out) == ["pos"]  # binary: only the positive class
    roc, pr = out["pos"]["roc"], out["pos"]["pr"]
    assert (roc["fpr"][0], roc["tpr"][0]) == (0.0, 0.0) and (roc["fpr"][-1], roc["tpr"][-1]) == (1.0, 1.0)
    assert roc["fpr"] == sorted(roc["fpr"]) and roc["tpr"] == sorted(roc["tpr"])
    assert len(pr["precision"]) == len(pr["recall"]) and pr["recall"][-1] == 0.0
    # the area under the ROC points is the AUC
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(0.75)
    multi = curves(np.array(Y_MULTI), P_MULTI, ["a", "b", "c"])
    assert list(multi) == ["a", "b", "c"]


def test_curves_are_thinned_to_max_points():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000)
    p = rng.random(5000)
    out = curves(y, np.stack([1 - p, p], 1), ["n", "p"], max_points=50)
    assert len(out["p"]["roc"]["fpr"]) <= 50 and len(out["p"]["pr"]["precision"]) <= 50


def test_threshold_metrics_by_hand():
    # threshold 0.3: predictions [0, 1, 1, 1] -> TP 2, FP 1, FN 0
    m = threshold_metrics(Y_BIN, P_POS, 0.3)
    assert m == pytest.approx({"threshold": 0.3, "precision": 2 / 3, "recall": 1.0, "f1": 0.8, "accuracy": 0.75})
    # threshold 0.9: nothing predicted positive -> precision 0 by convention, recall 0
    m = threshold_metrics(Y_BIN, P_POS, 0.9)
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 0.5)


def test_shape_mismatch_is_caught():
    with pytest.raises(AssertionError, match="probs"):
        classification_report([0, 1, 2], P_BIN[:3], ["neg", "pos", "other"])
