"""Small text helpers for the pages."""

from __future__ import annotations

import re

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")
# GitHub-flavoured markdown links bare URLs and e-mail addresses after escapes are resolved, so
# escaping cannot stop it; an invisible zero-width space inside "://", "www." and "@" does
_AUTOLINK = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\\\.)|(?=@)", re.IGNORECASE)
ZERO_WIDTH_SPACE = "\u200b"


def md(value) -> str:
    """A user string made literal inside Streamlit markdown (st.write, st.error, st.caption...)."""
    return _AUTOLINK.sub(ZERO_WIDTH_SPACE, _MARKDOWN_SPECIAL.sub(r"\\\1", str(value)))


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
