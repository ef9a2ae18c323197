"""The Train page's hyperparameter search: a grid or random sample of the form's settings.

Each trial is a normal run (it shows up on the Evaluate and Predict pages). The search runs in a
``core.search.SearchJob`` worker thread; the page only reads its frozen snapshot, from a fragment
that reruns every second while the search is going.
"""

from __future__ import annotations

import streamlit as st

from core.data import DataError
from core.search import SearchJob, grid_trials, parse_space, random_trials
from ui import params
from ui.data import PreparedData, make_splits
from ui.format import md, one_line
from ui.job_view import choose_job, stop_and_follow
from ui.resources import runs_dir, search_dir, search_registry
from ui.state import remember, remembered, stored
from ui.training import run_config, running_job

CURRENT_SEARCH = "current_search_id"
FINISHED_SEEN = "finished_searches_seen"  # search ids whose end already triggered a full rerun
MODES = ("Grid", "Random")
EXAMPLES = {"Grid": "lr=0.001,0.003 hidden_dim=64,128",
            "Random": "lr=1e-4:1e-2:log dropout=0.2:0.5 pooling=max,attention"}


# ---- starting a search ---------------------------------------------------------------------------

def form_values() -> dict:
    """The Train form's current values, keyed like the form's widgets (the form is drawn first)."""
    values = {p.key: st.session_state[p.key] for p in params.params() if p.key in st.session_state}
    values.update({k: stored(k) for k in params.DATA_KEYS.values() if stored(k) is not None})
    return values


def make_trials(mode: str, spec: str, n: int = 1, seed: int = 0) -> list[dict]:
    """Trials from the space spec; ValueError (one line, naming the parameter) when it is invalid."""
    if mode == "Grid":
        return grid_trials(parse_space(spec))
    return random_trials(parse_space(spec, allow_ranges=True), int(n), int(seed))


def start_search(owner: str, prepared: PreparedData, values: dict, mode: str, spec: str, n: int = 1) -> SearchJob:
    """Validate the base settings and the space, split the data once and start the search in the
    background. Raises ValueError/DataError before anything starts."""
    cfg = run_config(prepared, values)
    params.validate(cfg)
    trials = make_trials(mode, spec, n, cfg.train.seed)
    splits = make_splits(prepared, cfg.data.valid_fraction, cfg.data.test_fraction, cfg.train.seed)
    described = f"grid: {spec}" if mode == "Grid" else f"random {int(n)} (seed {cfg.train.seed}): {spec}"
    return search_registry().submit(cfg, trials, owner, runs_dir=runs_dir(), search_dir=search_dir(),
                                    splits=splits, spec=described)


def session_searches(owner: str) -> list[SearchJob]:
    """This owner's searches, newest first."""
    return sorted(search_registry().searches(owner), key=lambda j: j.snapshot().started, reverse=True)


def running_search(owner: str) -> SearchJob | None:
    return next((j for j in session_searches(owner) if not j.snapshot().done), None)


# ---- drawing -------------------------------------------------------------------------------------

def results_rows(snap, select_metric: str) -> list[dict]:
    """One row per trial: its parameters, status, validation score, test accuracy, best marked."""
    rows = []
    for t in snap.trials:
        row = {"trial": t.index}
        row.update({key.split(".")[-1]: value for key, value in t.params.items()})
        score = None if t.score is None else abs(t.score)  # a loss is stored negated (higher is better)
        row.update({"status": t.status, f"valid {select_metric}": score, "test accuracy": t.test_accuracy,
                    "best": "★ best" if t.best else "", "run": t.run_id})
        rows.append(row)
    return rows


def render_search(owner: str, search_id: str) -> None:
    """The live part: reads the search's snapshot only (rerun every second while it runs)."""
    job = search_registry().get(search_id, owner)
    if job is None:
        st.info("This search is no longer known to the server (it was restarted). Its finished trials are "
                "listed on the Evaluate page.")
        return
    snap = job.snapshot()
    select_metric = job.base.train.select_metric
    finished = sum(t.status not in ("queued", "running") for t in snap.trials)
    text = f"Search {snap.status}: {finished}/{len(snap.trials)} trials finished"
    if snap.current:
        text += f" · trial {snap.current} epoch {snap.epoch}/{snap.epochs or job.base.train.epochs}"
    if snap.status == "failed":
        st.error(f"Search failed: {md(snap.message)}")
    st.progress(min(max(snap.progress, 0.0), 1.0), text=text)
    st.dataframe(results_rows(snap, select_metric), hide_index=True, key=f"search.results.{search_id}")
    best = snap.best
    if best is not None:
        shown = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in best.params.items())
        st.success(f"Best run: {md(best.run_id)} (trial {best.index}: {md(shown)}), validation "
                   f"{md(select_metric)} {abs(best.score):.4f}. It is a normal run: open it on the Evaluate "
                   f"and Predict pages.")
    elif snap.done:
        st.warning("No trial finished, so there is no best run.")
    st.caption(f"Results table: {md(snap.search_dir)}/results.csv")
    if snap.log:
        with st.expander("Search log"):
            st.code("\n".join(snap.log[-40:]), language=None)
    seen = st.session_state.setdefault(FINISHED_SEEN, set())
    if snap.done and search_id not in seen:
        seen.add(search_id)
        st.rerun()  # the whole page, so the Start/Stop buttons catch up


def render(owner: str, prepared: PreparedData | None) -> None:
    """The "Hyperparameter search" expander: controls (when data is loaded) and this session's searches."""
    searches = session_searches(owner)
    if prepared is None and not searches:
        return
    with st.expander("Hyperparameter search", expanded=bool(searches)):
        if prepared is not None:
            render_controls(owner, prepared)
        if searches:
            render_progress(owner, searches)


def render_controls(owner: str, prepared: PreparedData) -> None:
    st.caption("Train one run per configuration: the form above is the base, the space below overrides "
               "some of its settings. Runs are ranked by the validation select metric.")
    mode = st.radio("Search", MODES, index=MODES.index(remembered("search.mode", "Grid")), key="search.mode",
                    horizontal=True, help="Grid: every combination of the listed values. Random: N configurations "
                                          "drawn from values or ranges (low:high, or low:high:log).")
    remember("search.mode")
    left, right = st.columns([3, 1])
    spec = left.text_input("Search space", value=remembered("search.spec", ""), key="search.spec",
                           placeholder=f"e.g. {EXAMPLES[mode]}",
                           help="Space-separated name=values. Names are settings of the form (lr, hidden_dim, "
                                "dropout, pooling, ...).")
    remember("search.spec")
    n = right.number_input("Trials", min_value=1, max_value=200, value=int(remembered("search.n", 6)), step=1,
                           key="search.n", disabled=mode == "Grid", help="How many random configurations.")
    remember("search.n")
    st.caption(f"Example: `{EXAMPLES[mode]}`")
    busy = running_job(owner) or running_search(owner)
    if st.button("Start search", key="search.start", disabled=busy is not None,
                 help="Only one job per browser session runs at a time." if busy else None):
        try:
            job = start_search(owner, prepared, form_values(), mode, spec, n)
        except (DataError, ValueError, TypeError) as err:
            st.error(md(one_line(err)))
        else:
            st.session_state[CURRENT_SEARCH] = job.search_id
            st.rerun()


def render_progress(owner: str, searches: list[SearchJob]) -> None:
    current = choose_job([j.search_id for j in searches], CURRENT_SEARCH, "Search", "search.select")
    stop_and_follow(search_registry().get(current, owner), "Stop search", "search.stop",
                    "Cancel the running trial and skip the rest.", "Stopping the search after the current batch...",
                    render_search, owner, current)
