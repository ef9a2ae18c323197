"""Session-state keys and the per-browser owner id.

Everything one user has loaded or chosen lives in ``st.session_state`` under the keys below.
The owner id also lives in the URL (``?owner=...``) so that reloading the page finds the same
training jobs.
"""

from __future__ import annotations

import re
import secrets

import streamlit as st

OWNER = "owner_id"
RAW = "raw_data"  # RawData: the file or built-in dataset as read, before column mapping
PREPARED = "prepared_data"  # PreparedData: validated texts + labels for the Train page
UPLOAD_ERROR = "upload_error"  # (file_id, message) of the last upload that could not be read
CURRENT_JOB = "current_job_id"
FINISHED_SEEN = "finished_jobs_seen"  # job ids whose end already triggered a full rerun
PREDICTIONS = "test_predictions"  # run key -> predictions on the run's test.csv
STORE = "widget_store"  # widget key -> last value, so values survive page switches

_OWNER_PATTERN = re.compile(r"^[0-9a-f]{16,64}$")


def owner_id() -> str:
    """This browser's owner id: from session state, else from the URL, else a new random one."""
    owner = st.session_state.get(OWNER)
    if not owner:
        from_url = st.query_params.get("owner", "")
        owner = from_url if _OWNER_PATTERN.match(from_url or "") else secrets.token_hex(8)
        st.session_state[OWNER] = owner
    if st.query_params.get("owner") != owner:
        st.query_params["owner"] = owner
    return owner


def remembered(store_key: str, default):
    """The value a widget showing setting ``store_key`` should start at: its last value, or ``default``.

    Streamlit forgets a widget's value when a page without it runs, so the value is mirrored in a
    plain session-state dict. Pass the result as the widget's ``value`` (with a ``key``) and call
    ``remember(key, store_key)`` after creating the widget. Two pages can show one setting with
    different widget keys and the same ``store_key``.
    """
    return st.session_state.setdefault(STORE, {}).get(store_key, default)


def remember(key: str, store_key: str | None = None) -> None:
    st.session_state.setdefault(STORE, {})[store_key or key] = st.session_state.get(key)


def stored(store_key: str, default=None):
    """The last value of a remembered setting, whichever page showed it."""
    return st.session_state.get(STORE, {}).get(store_key, default)


def store_value(store_key: str, value) -> None:
    """Set a remembered setting from code; widgets showing it pick it up when next created."""
    st.session_state.setdefault(STORE, {})[store_key] = value
