"""Small text helpers for the pages."""

from __future__ import annotations

import re

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def md(value) -> str:
    """A user string made literal inside Streamlit markdown (st.write, st.error, st.caption...)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(value))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def one_line(err: BaseException) -> str:
    return " ".join((str(err).strip() or type(err).__name__).split())
