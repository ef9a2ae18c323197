"""The Explain page's cached explainers, explanations and test-set table.

An ``Explainer`` holds its own CPU copy of a run's model and a lock, so one per model file is
shared read-only by every session (``st.cache_resource``). Explanations are pure functions of
(model file, text, method, target, steps) and are cached as data.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core.explain import Explainer, Explanation
from ui import evaluation
from ui.resources import model_mtime, predictor
from ui.state import PREDICTIONS


@st.cache_resource(show_spinner="Preparing the explainer...", max_entries=4)
def _explainer(path: str, mtime: float) -> Explainer:
    return Explainer(predictor(path))


def explainer(path: str | Path) -> Explainer:
    """The shared explainer of a run; rebuilt when the run's weights change."""
    path = Path(path).resolve()
    return _explainer(str(path), model_mtime(path))


@st.cache_data(show_spinner=False, max_entries=256)
def _explanation(path: str, mtime: float, text: str, method: str, target: str | None, steps: int) -> Explanation:
    return _explainer(path, mtime).explain(text, method, target, n_steps=steps)


def explanation(path: str | Path, text: str, method: str, target: str | None = None, steps: int = 50) -> Explanation:
    path = Path(path).resolve()
    return _explanation(str(path), model_mtime(path), text, method, target, steps)


def test_examples(path: str | Path) -> pd.DataFrame | None:
    """The run's test split with the model's predictions: text, true, predicted, confidence, correct.

    Computed once per run and model file per session (shared with the Evaluate page's cache).
    """
    path = Path(path)
    cache = st.session_state.setdefault(PREDICTIONS, {})
    key = (str(path), model_mtime(path))
    if key not in cache:
        cache[key] = evaluation.test_predictions(predictor(path), path)
    predictions = cache[key]
    if not predictions:
        return None
    task = predictions["tasks"][0]
    predicted = task["probs"].argmax(axis=1)
    labels = task["labels"]
    return pd.DataFrame({
        "text": predictions["texts"],
        "true": [labels[i] if i >= 0 else "" for i in task["y_true"]],
        "predicted": [labels[i] for i in predicted],
        "confidence": task["probs"].max(axis=1).astype(float),
        "correct": task["y_true"] == predicted,
    })


def highlight_mistakes(frame: pd.DataFrame):
    """A Styler that tints misclassified rows."""
    def tint(row):
        return ["background-color: rgba(178, 24, 43, 0.15)" if not row["correct"] else ""] * len(row)
    return frame.style.apply(tint, axis=1).format({"confidence": "{:.3f}"})


def deletion_caption(e: Explanation) -> str:
    """One sentence on the explanation's own deletion test (plain text; the caller escapes it)."""
    d = e.diagnostics.get("deletion")
    if not d:
        return ""
    flip = "flips the prediction" if d["top_flip"] else "does not flip the prediction"
    return (f"Deletion test: removing the top {d['k']} tokens lowers p({e.target}) by {d['top_drop']:+.3f} "
            f"and {flip}; {d['k']} random tokens lower it by {d['random_drop']:+.3f} on average "
            f"(flip rate {d['random_flip_rate']:.0%}). Score {d['score']:+.3f}.")
