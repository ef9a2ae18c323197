"""What the Train page shows for any background job (a training run or a search): which one the
browser session follows, a Stop button, and a live view that polls the job's snapshot."""

from __future__ import annotations

from typing import Callable

import streamlit as st

from ui.training import POLL_SECONDS


def choose_job(ids: list[str], state_key: str, label: str, key: str) -> str:
    """The job this browser session follows: the remembered one, else the newest; a select box when there are several."""
    current = st.session_state.get(state_key)
    if current not in ids:
        current = ids[0]
    if len(ids) > 1:
        current = st.selectbox(label, ids, index=ids.index(current), key=key)
    st.session_state[state_key] = current
    return current


def stop_and_follow(job, stop_label: str, key: str, stop_help: str, toast: str,
                    render: Callable[..., None], *args) -> None:
    """A Stop button while the job runs, then ``render(*args)`` in a fragment that reruns every
    POLL_SECONDS until the job is done."""
    snap = job.snapshot()
    if not snap.done:
        if st.button(stop_label, key=key, help=stop_help):
            job.stop()
            st.toast(toast)
    st.fragment(run_every=None if snap.done else POLL_SECONDS)(render)(*args)
