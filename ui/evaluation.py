"""Tables for the Evaluate page: test-set predictions of a run, mistakes, config differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.data import read_table
from core.runs import RunInfo, read_jsonl

SPLITS = (("test", "Test"), ("valid", "Validation"))


def task_names(run: RunInfo) -> list[str]:
    return list(run.config.get("label_columns") or ["label"])


def metrics_table(run: RunInfo, task: int) -> pd.DataFrame:
    rows = []
    for split, title in SPLITS:
        part = run.metrics.get(split)
        if not part:
            continue
        m = part["tasks"][str(task)]
        rows.append({"split": title, "n": m["n"], "accuracy": m["accuracy"], "macro precision": m["macro_precision"],
                     "macro recall": m["macro_recall"], "macro F1": m["macro_f1"], "ROC AUC": m["auc"],
                     "loss": m.get("loss")})
    return pd.DataFrame(rows)


def ensemble_members(run: RunInfo) -> pd.DataFrame | None:
    """One row per member of an ensemble run (its run and test accuracy), or None for a single model."""
    members = (run.metrics.get("ensemble") or {}).get("members")
    if not members:
        return None
    return pd.DataFrame([{"member": Path(m.get("run_dir", "")).name, "seed": m.get("seed"),
                          "test accuracy": m.get("test_accuracy")} for m in members])


def per_class_table(report: dict) -> pd.DataFrame:
    return pd.DataFrame([{"class": label, **values} for label, values in report["per_class"].items()])


def test_predictions(predictor, run_dir: str | Path) -> dict | None:
    """Probabilities of the run's model on its saved test split (test.csv), per task.

    Returns {"texts", "tasks": [{"labels", "y_true" (index, -1 = unknown), "probs" (N, C)}]} or None
    when the run kept no test rows.
    """
    path = Path(run_dir) / "test.csv"
    if not path.is_file():
        return None
    frame, _ = read_table(str(path))
    text_col = predictor.metadata.get("config", {}).get("text_col", "text")
    if text_col not in frame.columns or frame.empty:
        return None
    texts = frame[text_col].tolist()
    probs = predictor.probabilities(texts)
    tasks = []
    for column, labels, p in zip(predictor.label_columns, predictor.labels, probs):
        index = {label: i for i, label in enumerate(labels)}
        truth = frame[column].tolist() if column in frame.columns else [""] * len(texts)
        tasks.append({"column": column, "labels": list(labels), "probs": np.asarray(p),
                      "y_true": np.array([index.get(str(v), -1) for v in truth])})
    return {"texts": texts, "tasks": tasks}


def predicted_classes(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    if probs.shape[1] == 2 and threshold is not None:
        return (probs[:, 1] >= threshold).astype(int)
    return probs.argmax(axis=1)


def mistakes(predictions: dict, task: int, threshold: float | None = None) -> pd.DataFrame:
    """Misclassified test examples, least confident last: text, true, predicted, confidence."""
    t = predictions["tasks"][task]
    pred = predicted_classes(t["probs"], threshold)
    known = t["y_true"] >= 0
    wrong = np.flatnonzero(known & (pred != t["y_true"]))
    labels = t["labels"]
    frame = pd.DataFrame({
        "text": [predictions["texts"][i] for i in wrong],
        "true": [labels[t["y_true"][i]] for i in wrong],
        "predicted": [labels[pred[i]] for i in wrong],
        "confidence": [float(t["probs"][i, pred[i]]) for i in wrong],
    })
    return frame.sort_values("confidence", ascending=False, ignore_index=True)


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_differences(a: RunInfo, b: RunInfo) -> pd.DataFrame:
    fa, fb = flatten(a.config.get("run", {})), flatten(b.config.get("run", {}))
    rows = [{"setting": k, a.run_id: repr(fa.get(k)), b.run_id: repr(fb.get(k))}
            for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    return pd.DataFrame(rows, columns=["setting", a.run_id, b.run_id])


def history(run: RunInfo) -> list[dict]:
    return read_jsonl(run.path / "history.jsonl")
