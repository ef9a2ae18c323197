"""Plotly figures for the pages. Pure functions: data in, figure out; no Streamlit calls.

Plotly renders a subset of HTML inside text (``<b>``, ``<a>``...), so every string that comes
from the user's data (labels, column names, texts) goes through ``esc`` first.
"""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def esc(value) -> str:
    # plotly renders its own text as HTML but shows entities for quotes literally, so quotes stay as they are
    return html.escape(str(value), quote=False)


def _layout(fig: go.Figure, height: int = 320, **kwargs) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), **kwargs)
    return fig


def class_balance(class_counts: dict[str, dict[str, int]]) -> go.Figure:
    """One bar group per label column: rows per class."""
    fig = go.Figure()
    for column, counts in class_counts.items():
        fig.add_bar(x=[esc(k) for k in counts], y=list(counts.values()), name=esc(column),
                    text=list(counts.values()), textposition="auto")
    return _layout(fig, title="Class balance (rows per class)", barmode="group",
                   xaxis_title="class", yaxis_title="rows", xaxis_type="category",
                   showlegend=len(class_counts) > 1)


def length_histogram(lengths: Sequence[int], max_length: int) -> go.Figure:
    """Words per text, with the chosen max length (tokens kept per text) marked."""
    lengths = np.asarray(lengths)
    fig = go.Figure(go.Histogram(x=lengths, nbinsx=50, name="texts"))
    over = int((lengths > max_length).sum())
    fig.add_vline(x=max_length, line_dash="dash", line_color="red",
                  annotation_text=f"max length {max_length} ({over} texts longer)", annotation_position="top right")
    return _layout(fig, title="Text length (words per text)", xaxis_title="words", yaxis_title="texts")


def dropped_rows(dropped: dict[str, int]) -> go.Figure:
    reasons = list(dropped)
    fig = go.Figure(go.Bar(x=[dropped[r] for r in reasons], y=[esc(r) for r in reasons], orientation="h",
                           text=[dropped[r] for r in reasons], textposition="auto"))
    return _layout(fig, height=max(160, 60 + 40 * len(reasons)), title="Dropped rows by reason",
                   xaxis_title="rows", yaxis_type="category")


MAX_CURVE_POINTS = 400


def training_curves(history: Sequence[dict], batch_losses: Sequence[tuple[int, float]],
                    steps_per_epoch: int, current_lr: float | None = None) -> go.Figure:
    """Loss (batch and per epoch), accuracy/F1 and learning rate against the epoch."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Loss", "Accuracy / macro-F1", "Learning rate"),
                        horizontal_spacing=0.08)
    per_epoch = max(steps_per_epoch, 1)
    if batch_losses:
        stride = -(-len(batch_losses) // MAX_CURVE_POINTS)  # a few hundred points draw the same curve
        points = list(batch_losses[::stride])
        if points[-1] != batch_losses[-1]:
            points.append(batch_losses[-1])
        steps, losses = zip(*points)
        fig.add_scatter(x=[s / per_epoch for s in steps], y=list(losses), mode="lines", name="batch loss",
                        line=dict(width=1, color="rgba(120,120,120,0.5)"), row=1, col=1)
    epochs = [r["epoch"] for r in history]
    series = [("train_loss", "train loss", 1), ("valid_loss", "validation loss", 1),
              ("train_accuracy", "train accuracy", 2), ("valid_accuracy", "validation accuracy", 2),
              ("valid_macro_f1", "validation macro-F1", 2), ("lr", "learning rate", 3)]
    for key, name, col in series:
        ys = [r.get(key) for r in history]
        if any(y is not None for y in ys):
            fig.add_scatter(x=epochs, y=ys, mode="lines+markers", name=name, row=1, col=col)
    if current_lr is not None and batch_losses:
        fig.add_scatter(x=[batch_losses[-1][0] / per_epoch], y=[current_lr], mode="markers", name="current lr",
                        marker=dict(symbol="diamond", size=9), row=1, col=3)
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, height=340, legend=dict(orientation="h", y=-0.25))


def pretrain_curves(history: Sequence[dict], batch_losses: Sequence[tuple[int, float]]) -> go.Figure:
    """Language-model loss per batch and on the held-out texts after each epoch, and the held-out perplexity."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss (nats per word)", "Held-out perplexity"),
                        horizontal_spacing=0.1)
    if batch_losses:
        stride = -(-len(batch_losses) // MAX_CURVE_POINTS)
        points = list(batch_losses[::stride])
        if points[-1] != batch_losses[-1]:
            points.append(batch_losses[-1])
        steps, losses = zip(*points)
        fig.add_scatter(x=list(steps), y=list(losses), mode="lines", name="batch loss",
                        line=dict(width=1, color="rgba(120,120,120,0.6)"), row=1, col=1)
    if history:
        steps = [r["steps"] for r in history]
        fig.add_scatter(x=steps, y=[r["valid_loss"] for r in history], mode="lines+markers", name="held-out loss",
                        row=1, col=1)
        fig.add_scatter(x=[r["epoch"] for r in history], y=[r["valid_perplexity"] for r in history],
                        mode="lines+markers", name="held-out perplexity", row=1, col=2)
    fig.update_xaxes(title_text="step", row=1, col=1)
    fig.update_xaxes(title_text="epoch", dtick=1, row=1, col=2)
    return _layout(fig, height=320, legend=dict(orientation="h", y=-0.25))


def confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], normalise: bool) -> go.Figure:
    counts = np.asarray(matrix, dtype=float)
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalise else counts
    text = [[f"{v:.2f}" if normalise else f"{int(v)}" for v in row] for row in shown]
    names = [esc(x) for x in labels]
    fig = go.Figure(go.Heatmap(z=shown, x=names, y=names, text=text, texttemplate="%{text}",
                               colorscale="Blues", hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title_text="true", type="category")
    fig.update_xaxes(title_text="predicted", type="category")
    return _layout(fig, height=380, title="Confusion matrix" + (" (share of each true class)" if normalise else " (counts)"))


def roc_pr(curves: dict[str, dict]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("ROC", "Precision-recall"))
    for label, c in curves.items():
        fig.add_scatter(x=c["roc"]["fpr"], y=c["roc"]["tpr"], mode="lines", name=f"{esc(label)} ROC", row=1, col=1)
        fig.add_scatter(x=c["pr"]["recall"], y=c["pr"]["precision"], mode="lines", name=f"{esc(label)} PR",
                        row=1, col=2)
    fig.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="gray"), name="chance",
                    row=1, col=1)
    fig.update_xaxes(title_text="false positive rate", row=1, col=1)
    fig.update_yaxes(title_text="true positive rate", row=1, col=1)
    fig.update_xaxes(title_text="recall", row=1, col=2)
    fig.update_yaxes(title_text="precision", row=1, col=2)
    return _layout(fig, height=360)


def compare_histories(histories: dict[str, Sequence[dict]]) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Validation loss", "Validation accuracy"))
    for name, history in histories.items():
        epochs = [r["epoch"] for r in history]
        fig.add_scatter(x=epochs, y=[r.get("valid_loss") for r in history], mode="lines+markers",
                        name=f"{esc(name)} loss", row=1, col=1)
        fig.add_scatter(x=epochs, y=[r.get("valid_accuracy") for r in history], mode="lines+markers",
                        name=f"{esc(name)} accuracy", row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    return _layout(fig, height=340, legend=dict(orientation="h", y=-0.25))


def probability_bars(probs: dict[str, float], title: str = "") -> go.Figure:
    labels = sorted(probs, key=probs.get)
    fig = go.Figure(go.Bar(x=[probs[k] for k in labels], y=[esc(k) for k in labels], orientation="h",
                           text=[f"{probs[k]:.1%}" for k in labels], textposition="auto"))
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(type="category")
    return _layout(fig, height=max(150, 60 + 36 * len(labels)), title=esc(title) if title else None)
