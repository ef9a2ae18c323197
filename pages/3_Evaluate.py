"""Evaluate: metrics, confusion matrix, ROC/PR curves, threshold, mistakes, run comparison, and adding an
n-gram part to a finished run."""

import streamlit as st

from core.metrics import threshold_metrics
from core.runs import RunError
from ui import charts, evaluation, ngrams_view
from ui.format import md, one_line
from ui.resources import demo_run, model_mtime, predictor, run_label, visible_runs
from ui.state import PREDICTIONS, PREPARED, owner_id

owner = owner_id()
st.title("Evaluate")

runs = visible_runs(owner)
demo = demo_run()
if demo is not None:
    runs.append(demo)
if not runs:
    st.info("No finished runs yet: train a model on the Train page.")
    st.stop()

by_path = {str(r.path): r for r in runs}
paths = list(by_path)
choice = st.selectbox("Run", paths, key="eval.run", format_func=lambda p: run_label(by_path[p]))
run = by_path[choice]
if not run.metrics:
    st.warning("This run has no metrics.json: it did not finish evaluating.")
    st.stop()

tasks = evaluation.task_names(run)
task = 0
if len(tasks) > 1:
    task = st.selectbox("Label column", range(len(tasks)), format_func=lambda i: tasks[i], key="eval.task")
split = "test" if run.metrics.get("test") else "valid"
members = evaluation.ensemble_members(run)
if not run.metrics.get(split):
    st.info("This ensemble has no evaluation: its members held different test splits. Evaluate it with "
            "`python -m core evaluate --run RUN --data FILE`, or combine runs trained on one split.")
    st.stop()
report = run.metrics[split]["tasks"][str(task)]
labels = report["labels"]

st.subheader("Metrics")
st.dataframe(evaluation.metrics_table(run, task), hide_index=True)
if members is not None:
    st.caption(f"An ensemble of {len(members)} runs: its probabilities are the mean of theirs. "
               f"Each member on the same test split:")
    st.dataframe(members, hide_index=True)
else:
    st.caption(f"Best epoch {run.metrics.get('best_epoch')} of {run.metrics.get('epochs_run')} "
               f"(chosen by validation {run.metrics.get('select_metric')}); training took "
               f"{run.metrics.get('train_seconds')} s.")
fitted = ngrams_view.fitted_caption(run)
if fitted:
    st.caption(md(fitted))
ngrams_view.render(owner, run, st.session_state.get(PREPARED))

left, right = st.columns(2)
with left:
    normalise = st.toggle("Normalise rows (share of each true class)", key="eval.normalise")
    st.plotly_chart(charts.confusion_matrix(report["confusion_matrix"], labels, normalise), key="eval.cm")
with right:
    if report.get("curves"):
        st.plotly_chart(charts.roc_pr(report["curves"]), key="eval.curves")
    else:
        st.caption("No ROC/PR curves: the evaluation split has a single class.")

st.subheader("Per-class report")
st.dataframe(evaluation.per_class_table(report), hide_index=True)

# predictions on the run's test split: computed once per run (and model file) and kept for this session
cache = st.session_state.setdefault(PREDICTIONS, {})
run_key = (str(run.path), model_mtime(run.path))
if run_key not in cache:
    try:
        with st.spinner("Classifying the test split..."):
            cache[run_key] = evaluation.test_predictions(predictor(run.path), run.path)
    except (RunError, ValueError, OSError) as err:
        st.error(md(one_line(err)))
        cache[run_key] = None
predictions = cache[run_key]

threshold = None
if predictions is not None and len(labels) == 2:
    st.subheader("Decision threshold")
    t = predictions["tasks"][task]
    known = t["y_true"] >= 0
    threshold = st.slider(f"Predict '{md(labels[1])}' when its probability is at least", 0.0, 1.0, 0.5, 0.01,
                          key=f"eval.threshold.{task}")
    m = threshold_metrics(t["y_true"][known], t["probs"][known, 1], threshold)
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Precision", f"{m['precision']:.3f}")
    c2.metric("Recall", f"{m['recall']:.3f}")
    c3.metric("F1", f"{m['f1']:.3f}")
    c4.metric("Accuracy", f"{m['accuracy']:.3f}")
    st.caption(f"Precision, recall and F1 of class {md(labels[1])} on {int(known.sum())} test texts.")

st.subheader("Misclassified examples")
if predictions is None:
    st.caption("This run kept no test split, so there are no examples to show.")
else:
    wrong = evaluation.mistakes(predictions, task, threshold)
    st.caption(f"{len(wrong)} of {len(predictions['texts'])} test texts are misclassified"
               + (f" at threshold {threshold:.2f}" if threshold is not None else "") + ". Click a column to sort.")
    st.dataframe(wrong, hide_index=True, column_config={
        "confidence": st.column_config.ProgressColumn("confidence", min_value=0.0, max_value=1.0, format="%.3f")})
    st.download_button("Download as CSV", wrong.to_csv(index=False).encode("utf-8"),
                       file_name=f"{run.run_id}-misclassified.csv", mime="text/csv", key="eval.download")

st.subheader("Compare with another run")
others = [p for p in paths if p != choice]
if not others:
    st.caption("Train a second run to compare two runs side by side.")
    st.stop()
other_path = st.selectbox("Second run", [""] + others, key="eval.compare",
                          format_func=lambda p: "choose a run" if not p else run_label(by_path[p]))
if not other_path:
    st.stop()
other = by_path[other_path]
a, b = st.columns(2)
for column, r in ((a, run), (b, other)):
    with column:
        st.markdown(f"**{md(r.run_id)}**")
        if len(evaluation.task_names(r)) > task and r.metrics:
            st.dataframe(evaluation.metrics_table(r, task), hide_index=True)
differences = evaluation.config_differences(run, other)
st.markdown("**Settings that differ**")
if differences.empty:
    st.caption("Both runs used the same settings.")
else:
    st.dataframe(differences, hide_index=True)
st.plotly_chart(charts.compare_histories({run.run_id: evaluation.history(run),
                                          other.run_id: evaluation.history(other)}), key="eval.compare_curves")
