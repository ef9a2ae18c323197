"""Train: hyperparameters, start/stop a background training job, live progress and curves, hyperparameter
search, and language-model pretraining of an encoder that training can start from."""

import streamlit as st

from core.data import DataError
from ui import charts, pretrain_view, search_view
from ui.form import param_widget
from ui.format import duration, md, one_line
from ui.job_view import choose_job, stop_and_follow
from ui.params import cli_args, cli_command, params, torchrun_command
from ui.resources import registry, runs_dir
from ui.state import CURRENT_JOB, FINISHED_SEEN, PREPARED, owner_id, stored
from ui.training import run_config, running_job, session_jobs, start_training


owner = owner_id()
st.title("Train")


def render_form(prepared) -> None:
    labels = ", ".join(prepared.label_cols)
    st.caption(f"Data: {md(prepared.raw_name)}, {len(prepared.table)} rows, text column {md(prepared.text_col)}, "
               f"label column(s) {md(labels)}. Change it on the Data page.")
    all_params = params()
    with st.container(border=True):
        st.markdown("**Basic**")
        columns = st.columns(4)
        for i, p in enumerate(q for q in all_params if q.basic):
            param_widget(p, columns[i % 4])
        pretrain_view.init_from_picker(owner)
    with st.expander("Advanced"):
        columns = st.columns(4)
        for i, p in enumerate(q for q in all_params if not q.basic):
            param_widget(p, columns[i % 4])
    if "glove" in str(stored("hp.run.pretrained_vectors", "")):
        st.caption("With pretrained vectors the embedding size follows the vectors (50 for glove-6b-50d).")

    values = {p.key: st.session_state[p.key] for p in all_params}
    values.update({k: stored(k) for k in ("hp.data.valid_fraction", "hp.data.test_fraction") if stored(k) is not None})
    busy = running_job(owner) or search_view.running_search(owner)
    if st.button("Start training", type="primary", key="train.start", disabled=busy is not None,
                 help="Only one job per browser session runs at a time." if busy else None):
        try:
            job = start_training(owner, prepared, values)
        except (DataError, ValueError) as err:
            st.error(md(one_line(err)))
        else:
            st.session_state[CURRENT_JOB] = job.job_id
            st.rerun()

    with st.expander("Copy as CLI command"):
        try:
            cfg = run_config(prepared, values)
        except (ValueError, TypeError) as err:
            st.error(md(one_line(err)))
            return
        train_file = "" if prepared.builtin else prepared.raw_name
        st.code(cli_command(cfg, train_file, str(runs_dir())), language="bash", wrap_lines=True)
        st.caption("Across 2 GPUs (or 2 CPU processes) with DistributedDataParallel:")
        st.code(torchrun_command(cfg, train_file, str(runs_dir())), language="bash", wrap_lines=True)
        notes = []
        if not prepared.builtin:
            notes.append(f"--train names the file you uploaded ({md(prepared.raw_name)}); give its path on your "
                         "machine.")
        _, missing = cli_args(cfg, train_file)
        if missing:
            notes.append(f"No command-line flag for {md(', '.join(missing))}: put them in a --config FILE.json.")
        for note in notes:
            st.caption(note)


def render_status(snap) -> None:
    text = f"Status: {snap.status}"
    if snap.status == "completed":
        st.success(text)
    elif snap.status == "cancelled":
        st.warning(text + " (stopped before the last epoch; the best weights so far are kept in the run folder)")
    elif snap.status in ("failed", "diverged"):
        st.error(f"{text}: {md(snap.message)}")
    else:
        st.info(text)


def render_job(job_id: str) -> None:
    job = registry().get(job_id, owner)
    if job is None:
        st.info("This job is no longer known to the server (it was restarted). Its run folder is listed on the "
                "Evaluate page if it finished.")
        return
    snap = job.snapshot()
    render_status(snap)
    epochs = snap.epochs or job.config.train.epochs
    progress_text = (f"Epoch {max(snap.epoch, 1 if snap.step else 0)}/{epochs} · step {snap.step}/"
                     f"{snap.steps_per_epoch or '?'} · elapsed {duration(snap.elapsed)} · "
                     f"ETA {duration(0 if snap.status == 'completed' else snap.eta_seconds)}")
    if snap.tokens_per_s:
        progress_text += f" · {snap.tokens_per_s:,.0f} tokens/s"
    st.progress(snap.progress, text=progress_text)
    if snap.batch_losses or snap.history:
        st.plotly_chart(charts.training_curves(snap.history, snap.batch_losses, snap.steps_per_epoch, snap.lr),
                        key=f"curves.{job_id}")
        st.caption(f"{len(snap.batch_losses)} batch points, {len(snap.history)} epochs finished.")
    else:
        st.caption("Waiting for the first batch...")
    if snap.status == "completed" and snap.metrics:
        part = snap.metrics.get("test") or snap.metrics.get("valid") or {}
        primary = part.get("primary", {})
        which = "Test" if snap.metrics.get("test") else "Validation"
        c1, c2, c3 = st.columns(3)
        c1.metric(f"{which} accuracy", f"{primary.get('accuracy', 0):.3f}")
        c2.metric(f"{which} macro-F1", f"{primary.get('macro_f1', 0):.3f}")
        auc = primary.get("auc")
        c3.metric(f"{which} ROC AUC", "n/a" if auc is None else f"{auc:.3f}")
        st.caption(f"Saved in {md(snap.run_dir)}. See the Evaluate and Predict pages.")
    if snap.log:
        with st.expander("Log"):
            st.code("\n".join(snap.log[-40:]), language=None)
    seen = st.session_state.setdefault(FINISHED_SEEN, set())
    if snap.done and job_id not in seen:
        seen.add(job_id)
        st.rerun()  # the whole page, so Start/Stop and the runs list catch up


prepared = st.session_state.get(PREPARED)
if prepared is None:
    st.info("No data yet: load a file or a built-in dataset on the Data page first.")
else:
    render_form(prepared)
search_view.render(owner, prepared)
pretrain_view.render(owner)

jobs = session_jobs(owner)
if not jobs:
    if prepared is None:
        st.stop()
    st.caption("No training runs in this browser session yet.")
    st.stop()

st.divider()
st.subheader("Progress")
current = choose_job([j.job_id for j in jobs], CURRENT_JOB, "Run", "train.job_select")
stop_and_follow(registry().get(current, owner), "Stop", "train.stop", "Cancel after the current batch.",
                "Stopping after the current batch...", render_job, current)

st.subheader("Runs started in this browser session")
rows = []
for j in jobs:
    s = j.snapshot()
    primary = ((s.metrics.get("test") or s.metrics.get("valid") or {}).get("primary") or {})
    rows.append({"run": s.job_id, "status": s.status, "epochs": f"{len(s.history)}/{s.epochs or j.config.train.epochs}",
                 "accuracy": primary.get("accuracy"), "macro-F1": primary.get("macro_f1"),
                 "message": s.message, "folder": s.run_dir})
st.dataframe(rows, hide_index=True)
