"""Batch predictions for the Predict page."""

from __future__ import annotations

import pandas as pd


def predictions_frame(predictor, texts: list[str], text_col: str = "text") -> pd.DataFrame:
    """One row per text: the text, the predicted label, its probability and every class probability."""
    rows = []
    for p in predictor.predict(texts):
        row = {text_col: p.text, "label": p.label, "confidence": max(p.probs.values())}
        row.update({f"p_{label}": value for label, value in p.probs.items()})
        if len(p.tasks) > 1:
            for column, task in list(p.tasks.items())[1:]:
                row[f"{column}_label"] = task["label"]
        rows.append(row)
    return pd.DataFrame(rows)
