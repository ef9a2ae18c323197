"""The Evaluate page's "Add an n-gram part (words, bigrams, trigrams)" section.

It makes a new run from a finished single-model run: its LSTM plus an idf-weighted logistic
regression on n-grams (``core.wide.fit_ngrams_run``, what ``python -m core fit-ngrams`` does). The
fit needs the run's training data split exactly as training split it. Runs trained in the app were
trained from the Data page's in-memory data, so when the Data page holds that data (same name,
columns, fractions, and the same test split as the run kept) the splits are rebuilt from it with
``ui.data.make_splits``; otherwise the files recorded in the run's config.json are read, as the CLI
does. The fit runs in a ``core.jobs.NgramFitJob`` worker thread registered in the same job registry
as training, so a browser session runs one job at a time and sees only its own; the page polls the
job's snapshot from a fragment. The source run is only read, never changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from core.data import DataError, read_table
from core.jobs import NgramFitJob
from core.models import ModelConfig
from core.pipeline import RunConfig, Splits, label_matrix
from core.runs import RunError, RunInfo
from core.wide import ngram_run_config
from ui.data import PreparedData, make_splits
from ui.format import duration, md, one_line
from ui.resources import is_model_dir, registry, runs_dir
from ui.search_view import running_search
from ui.training import POLL_SECONDS, running_job

TITLE = "Add an n-gram part (words, bigrams, trigrams)"
ORDER_KEY = "eval.ngrams.order"
START_KEY = "eval.ngrams.start"  # + ".<run id>": a click never carries over to another run
RUN_SELECT = "eval.run"  # the Evaluate page's run select box
FINISHED_SEEN = "finished_ngram_fits_seen"  # job ids whose end already triggered a full rerun
ORDERS = {1: "1: words", 2: "2: words and bigrams", 3: "3: words, bigrams and trigrams"}


# ---- which runs, which data ----------------------------------------------------------------------

def eligible(run: RunInfo) -> bool:
    """A single model without an n-gram part (not an ensemble, not ``--ngrams``)."""
    model = run.config.get("model") or {}
    return "ensemble" not in model and not model.get("ngrams")


def _data_config(run: RunInfo) -> tuple[RunConfig | None, str]:
    """The run's RunConfig (None when unreadable) and what it was trained on, as the user knows it."""
    try:
        cfg = RunConfig.from_dict(run.config["run"])
    except (KeyError, TypeError, ValueError):
        return None, "unknown data (its config.json records none)"
    data = cfg.data
    what = f"the built-in dataset {data.dataset}" if data.dataset else (data.train or "no file")
    return cfg, f"{what} (text column {data.text_col}, label column(s) {', '.join(data.label_cols)})"


def data_page_matches(run: RunInfo, prepared: PreparedData | None) -> bool:
    """Whether the Data page's data is named and mapped as the run's training data was (cheap; the
    test split is compared when the fit starts)."""
    cfg, _ = _data_config(run)
    if prepared is None or cfg is None or cfg.data.valid or cfg.data.test:
        return False  # the app never trains with separate validation/test files
    data = cfg.data
    same_source = (prepared.builtin == data.dataset) if data.dataset else \
        (not prepared.builtin and bool(data.train) and prepared.raw_name == Path(data.train).name)
    return same_source and prepared.text_col == data.text_col and list(prepared.label_cols) == data.label_cols


def recorded_data_exists(run: RunInfo) -> bool:
    """Whether the run's training data can be read from where its config.json says it was."""
    cfg, _ = _data_config(run)
    if cfg is None:
        return False
    data = cfg.data
    if data.dataset:
        return True  # built-in datasets load by name
    return bool(data.train) and all(Path(p).is_file() for p in (data.train, data.valid, data.test) if p)


def missing_data_message(run: RunInfo, prepared: PreparedData | None, why: str = "") -> str:
    _, trained_on = _data_config(run)
    loaded = f" The Data page has {prepared.raw_name} loaded." if prepared is not None else ""
    return (f"The training data of run {run.run_id} is not available: load {trained_on} on the Data page, "
            f"mapped the same way.{why or loaded}")


def _kept_test_texts(run: RunInfo) -> list[str] | None:
    """The texts of the test split the run kept (test.csv), or None when it kept none."""
    path = run.path / "test.csv"
    if not path.is_file():
        return None
    try:
        frame, _ = read_table(str(path))
    except DataError:
        return []  # header only: an empty test split
    column = run.config.get("text_col", "text")
    return [str(t) for t in frame[column].tolist()] if column in frame.columns else None


def training_splits(run: RunInfo, prepared: PreparedData | None) -> Splits | None:
    """The splits the run was trained on, rebuilt from the Data page's data; None when the run's
    recorded files are to be read instead. DataError (one line, naming the file) when neither is there."""
    why = ""
    if data_page_matches(run, prepared):
        cfg, _ = _data_config(run)
        try:
            splits = make_splits(prepared, cfg.data.valid_fraction, cfg.data.test_fraction,
                                 cfg.data.seed_for_split(cfg.train.seed))
        except DataError as err:
            splits, why = None, f" The Data page's {prepared.raw_name} does not split as the run did ({one_line(err)})."
        if splits is not None:
            kept = _kept_test_texts(run)
            try:
                labels = json.loads((run.path / "labels.json").read_text(encoding="utf-8"))["labels"]
            except (OSError, KeyError, TypeError, ValueError):
                raise RunError(f"Run {run.run_id}: its labels.json is unreadable. Pick another run.") from None
            _, known = label_matrix(splits.test, labels)  # the run kept the test rows whose labels it knows
            if kept is None or kept == [t for t, k in zip(splits.test.texts, known) if k]:
                return splits
            why = (f" The Data page's {prepared.raw_name} is not the file the run was trained on (its test split "
                   f"differs from the one the run kept).")
    if recorded_data_exists(run):
        return None
    raise DataError(missing_data_message(run, prepared, why))


# ---- starting ------------------------------------------------------------------------------------

def start_ngram_fit(owner: str, run: RunInfo, prepared: PreparedData | None, ngrams: int) -> NgramFitJob:
    """Check the run, the order and the data, then fit in the background. Raises ValueError/DataError/
    RunError (one line) before anything starts."""
    if not is_model_dir(run.path):
        raise RunError(f"Run {run.run_id} is gone: its folder {run.path} no longer holds a model (it was deleted "
                       f"or moved). Pick another run.")
    try:
        saved = json.loads((run.path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RunError(f"Run {run.run_id}: its config.json is unreadable. Pick another run.") from None
    ngram_run_config(run.path, saved, ngrams, ModelConfig.ngram_buckets)
    if running_job(owner) is not None or running_search(owner) is not None:
        raise ValueError("A job is already running in this browser session: stop it or wait for it to finish.")
    splits = training_splits(run, prepared)
    job = NgramFitJob(run.path, owner, ngrams=ngrams, splits=splits, runs_dir=runs_dir())
    registry().add(job)
    return job.start()


def session_fits(owner: str, source: Path) -> list[NgramFitJob]:
    """This owner's n-gram fits of the run at ``source``, newest first."""
    jobs = [j for j in registry().jobs(owner) if isinstance(j, NgramFitJob) and j.source == source]
    return sorted(jobs, key=lambda j: j.snapshot().started, reverse=True)


# ---- drawing -------------------------------------------------------------------------------------

def fitted_caption(run: RunInfo) -> str:
    """What a run's n-gram part bought on validation, or "" for a run without a fitted one."""
    fit = run.metrics.get("ngram_fit") or {}
    tasks = fit.get("tasks") or []
    if not tasks:
        return ""
    columns = run.config.get("label_columns") or []
    metric = fit.get("metric", "accuracy")
    parts = []
    for t in tasks:
        name = f"{columns[t['task']]}: " if len(tasks) > 1 and t["task"] < len(columns) else ""
        parts.append(f"{name}validation {metric} {t['valid_lstm']:.3f} (LSTM alone) -> {t['valid_fused']:.3f} "
                     f"with n-grams (weight {t['weight']:g}, C {t['C']:g})")
    source = run.metrics.get("fitted_from")
    origin = f"fitted onto run {Path(source).name}" if source else "fitted after the LSTM trained"
    return f"N-gram part (order {(run.config.get('model') or {}).get('ngrams')}) {origin}: " + "; ".join(parts) + "."


def render(owner: str, run: RunInfo, prepared: PreparedData | None) -> None:
    """The expander for an eligible run: the order, the data it will use, Start, and this run's fits."""
    if not eligible(run):
        return
    jobs = session_fits(owner, run.path)
    with st.expander(TITLE, expanded=bool(jobs)):
        st.caption("A new run: this run's LSTM as it is, plus a logistic regression on the n-grams of each text "
                   "(weighted by inverse document frequency), added to its logits with the weight and "
                   "regularisation that score best on the validation split. This run is not changed. Like "
                   "`python -m core fit-ngrams`.")
        order = st.radio("N-gram order", list(ORDERS), index=2, format_func=ORDERS.get, key=ORDER_KEY,
                         horizontal=True)
        problem = ""
        if data_page_matches(run, prepared):
            st.caption(f"Training data: the Data page's {md(prepared.raw_name)}, split as the run split it.")
        elif recorded_data_exists(run):
            _, trained_on = _data_config(run)
            st.caption(f"Training data: {md(trained_on)}, read from where the run was trained.")
        else:
            problem = missing_data_message(run, prepared)
            st.error(md(problem))
        busy = running_job(owner) or running_search(owner)
        if busy is not None and not (jobs and busy is jobs[0]):
            st.caption("Another job is running in this browser session: start this when it has finished.")
        if st.button("Fit the n-gram part", key=f"{START_KEY}.{run.run_id}",
                     disabled=bool(problem) or busy is not None,
                     help="Only one job per browser session runs at a time." if busy else None):
            try:
                start_ngram_fit(owner, run, prepared, int(order))
            except (DataError, RunError, ValueError, OSError) as err:
                st.error(md(one_line(err)))
            else:
                st.rerun()
        if jobs:
            job = jobs[0]
            st.fragment(run_every=None if job.snapshot().done else POLL_SECONDS)(render_fit)(owner, job.job_id)


def _select_run(path: str) -> None:
    st.session_state[RUN_SELECT] = path


def render_fit(owner: str, job_id: str) -> None:
    """The live part: reads the job's snapshot only (rerun every POLL_SECONDS while it runs)."""
    job = registry().get(job_id, owner)
    if job is None:
        st.info("This fit is no longer known to the server (it was restarted). Its run is listed above if it "
                "finished.")
        return
    snap = job.snapshot()
    if snap.status == "completed":
        name = Path(snap.run_dir).name
        st.success(f"N-gram fit: completed in {duration(snap.elapsed)}. New run {md(name)} (order {snap.ngrams}).")
        for gain in snap.gains:
            column = f" of {md(gain['column'])}" if len(snap.gains) > 1 else ""
            before, after = gain["valid_accuracy_lstm"], gain["valid_accuracy"]
            before_text = "?" if before is None else f"{before:.3f}"
            after_text = "?" if after is None else f"{after:.3f}"
            st.markdown(f"Validation accuracy{column}: LSTM alone {before_text} -> with n-grams {after_text} "
                        f"(weight {gain['weight']:g}, C {gain['C']:g})")
            if not gain["weight"]:
                st.caption("The n-grams did not help on validation: the new run predicts as the LSTM alone.")
        if st.button("Evaluate the new run", key=f"eval.ngrams.open.{job_id}", on_click=_select_run,
                     args=(snap.run_dir,)):
            st.rerun()  # the whole page, so the run select box shows the new run
    elif snap.status == "failed":
        st.error(f"N-gram fit: failed: {md(snap.message)}")
    else:
        st.info(f"N-gram fit: {snap.status} (order {snap.ngrams}) · elapsed {duration(snap.elapsed)}")
    if snap.log:
        with st.expander("N-gram fit log"):
            st.code("\n".join(snap.log[-40:]), language=None)
    seen = st.session_state.setdefault(FINISHED_SEEN, set())
    if snap.done and job_id not in seen:
        seen.add(job_id)
        st.rerun()  # the whole page, so the run lists and the Start buttons catch up
