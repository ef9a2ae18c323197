"""Classification metrics as pure functions over labels and predicted probabilities."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn import metrics as skm


def classification_report(y_true: Sequence[int], probs: np.ndarray, labels: Sequence[str],
                          threshold: float = 0.5) -> dict:
    """Everything the app and CLI show for one task.

    ``y_true`` holds class indices into ``labels``; ``probs`` is (N, C) with columns in ``labels``
    order. For two classes, ``threshold`` applies to the second class's probability.
    """
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(labels)
    assert probs.shape == (len(y_true), n_classes), f"probs {probs.shape} vs {len(y_true)} x {n_classes}"
    y_pred = predict_from_probs(probs, threshold)
    classes = list(range(n_classes))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0)
    report = {
        "n": int(len(y_true)),
        "labels": list(labels),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_precision": float(np.mean(precision)),
        "macro_recall": float(np.mean(recall)),
        "macro_f1": float(np.mean(f1)),
        "per_class": {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for label, p, r, f, s in zip(labels, precision, recall, f1, support)},
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        "auc": auc(y_true, probs),
        "threshold": threshold if n_classes == 2 else None,
    }
    report["curves"] = curves(y_true, probs, labels)
    return report


def predict_from_probs(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(int)
    return probs.argmax(axis=1)


def auc(y_true: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC AUC: binary on the second class, else one-vs-rest macro. None when undefined."""
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if probs.shape[1] == 2:
        return float(skm.roc_auc_score(y_true, probs[:, 1]))
    if len(present) < probs.shape[1]:
        # classes absent from y_true: average one-vs-rest over the classes that are present
        scores = [skm.roc_auc_score(y_true == c, probs[:, c]) for c in present]
        return float(np.mean(scores))
    return float(skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro"))


def curves(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], max_points: int = 200) -> dict:
    """ROC and precision-recall points per class (one-vs-rest; for two classes only the second)."""
    out = {}
    targets = [1] if probs.shape[1] == 2 else range(probs.shape[1])
    for c in targets:
        positive = (y_true == c)
        if positive.all() or not positive.any():
            continue
        fpr, tpr, roc_thr = skm.roc_curve(positive, probs[:, c])
        precision, recall, pr_thr = skm.precision_recall_curve(positive, probs[:, c])
        out[labels[c]] = {
            "roc": _thin({"fpr": fpr, "tpr": tpr}, max_points),
            "pr": _thin({"precision": precision, "recall": recall}, max_points),
        }
    return out


def _thin(series: dict[str, np.ndarray], max_points: int) -> dict[str, list[float]]:
    n = len(next(iter(series.values())))
    keep = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int))
    return {k: [round(float(v), 5) for v in arr[keep]] for k, arr in series.items()}


def threshold_metrics(y_true: Sequence[int], positive_probs: Sequence[float], threshold: float) -> dict:
    """Precision, recall and F1 of the second class at one decision threshold (binary tasks)."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = (np.asarray(positive_probs) >= threshold).astype(int)
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average="binary", zero_division=0)
    return {"threshold": float(threshold), "precision": float(p), "recall": float(r), "f1": float(f),
            "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0}
