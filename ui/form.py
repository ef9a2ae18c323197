"""One form field per setting (``ui.params.Param``): the Train page's training and pretraining forms."""

from __future__ import annotations

import math

import streamlit as st

from ui.params import Param
from ui.state import remember, remembered


def param_widget(p: Param, container) -> None:
    """The widget for ``p`` in ``container``, starting at its remembered value (else its default)."""
    value = remembered(p.key, p.default)
    help_text = f"{p.help} Default: {p.default!r}." + (f" CLI: {p.flag}" if p.flag else "")
    if p.choices is not None:
        options = list(p.choices)
        if value not in options:
            options.append(value)
        container.selectbox(p.label, options, index=options.index(value), key=p.key, help=help_text,
                            format_func=(lambda v: v or "none") if p.name == "pretrained_vectors" else str)
    elif isinstance(p.default, bool):
        container.checkbox(p.label, value=bool(value), key=p.key, help=help_text)
    elif isinstance(p.default, int):
        container.number_input(p.label, value=int(value), step=1, key=p.key, help=help_text)
    elif isinstance(p.default, float):
        step = 10 ** math.floor(math.log10(abs(p.default))) if p.default else 0.01
        container.number_input(p.label, value=float(value), step=float(step), format="%g", key=p.key,
                               help=help_text)
    else:
        container.text_input(p.label, value=str(value), key=p.key, help=help_text)
    remember(p.key)
