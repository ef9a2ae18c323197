"""Explain: which words drove a prediction, by attention weights, Integrated Gradients and occlusion."""

import hashlib

import streamlit as st

from core.explain import spearman
from core.render import render_document, render_html, render_png, to_json
from core.runs import RunError
from ui.explain_view import deletion_caption, explainer, explanation, highlight_mistakes, test_examples
from ui.format import md, one_line
from ui.resources import model_choices
from ui.state import owner_id

owner = owner_id()
st.title("Explain")
st.caption("Colours show how much each word pushed the model towards (blue) or away from (red) a class. "
           "Each explanation carries its own deletion test: if removing its top words changes the "
           "prediction much more than removing random words, the explanation found what mattered.")

choices = model_choices(owner)
if not choices:
    st.info("No model yet: train one on the Train page (the demo model is not installed).")
    st.stop()
path = st.selectbox("Model", list(choices), format_func=choices.get, key="explain.run")

try:
    model = explainer(path)
except (RunError, ValueError, OSError) as err:
    st.error(md(one_line(err)))
    st.stop()
labels = model.labels
st.caption(f"Classes: {md(', '.join(labels))}. Pooling: {md(model.model.config.pooling)}.")

# -- the text ---------------------------------------------------------------------------------
try:
    examples = test_examples(path)
except (RunError, ValueError, OSError) as err:
    examples = None
    st.caption(f"The run's test split could not be read: {md(one_line(err))}")
if examples is not None and len(examples):
    with st.expander(f"Pick a text from the run's test split ({len(examples)} texts, "
                     f"{int((~examples['correct']).sum())} misclassified, tinted red)"):
        only_wrong = st.toggle("Only misclassified", key="explain.only_wrong")
        shown = examples[~examples["correct"]] if only_wrong else examples
        shown = shown.head(500)
        event = st.dataframe(highlight_mistakes(shown), hide_index=True, on_select="rerun",
                             selection_mode="single-row", key=f"explain.table.{path}.{only_wrong}")
        rows = event.selection.rows if event else []
        if rows:
            picked = shown.iloc[rows[0]]["text"]
            if st.session_state.get("explain.picked") != picked:
                st.session_state["explain.picked"] = picked
                st.session_state["explain.text"] = picked

text = st.text_area("Text to explain", key="explain.text", height=100,
                    placeholder="Type a sentence, or pick one from the test split above.")
if not text.strip():
    st.info("Type a text (or pick one from the test split) to see which words drove the prediction.")
    st.stop()

controls = st.columns(2)
target_choice = controls[0].selectbox("Explain the class", ["(predicted class)"] + labels, key="explain.target")
target = None if target_choice == "(predicted class)" else target_choice
steps = controls[1].slider("Integrated Gradients steps", 10, 200, 50, step=10, key="explain.steps",
                           help="More steps: a more exact integral (see the completeness error), slower.")

methods = (["attention"] if model.has_attention else []) + ["ig", "occlusion"]
try:
    with st.spinner("Explaining..."):
        results = {m: explanation(path, text, m, target, steps) for m in methods}
except ValueError as err:
    st.warning(md(one_line(err)))
    st.stop()

first = results["ig"]
top = st.columns(3)
top[0].metric("Predicted", md(first.label), f"{first.probs[first.label]:.1%} probability", delta_color="off")
top[1].metric("Explained class", md(first.target))
top[2].metric("Tokens read", len(first.tokens), f"{first.truncated} cut off" if first.truncated else None,
              delta_color="off")
if any(first.unknown):
    st.caption(md("Dotted underlined words are not in the model's vocabulary: the model read them as <unk>."))


def show(e, title: str) -> None:
    st.markdown(f"**{title}**")
    st.html(render_html(e))
    if e.delta is not None:
        st.caption(f"Completeness error {e.diagnostics['completeness_error']:.2%} "
                   f"(convergence delta {e.delta:.1e}, {e.diagnostics['n_steps']} steps).")
    st.caption(md(deletion_caption(e)))


left, right = st.columns(2)
with left:
    if model.has_attention:
        show(results["attention"], "Attention weights")
    else:
        st.markdown("**Attention weights**")
        st.info(f"This model pools with '{md(model.model.config.pooling)}', so it has no attention weights. "
                "Train with pooling 'attention' to compare them with Integrated Gradients.")
with right:
    show(results["ig"], "Integrated Gradients")

pairs = [("ig", "occlusion", "IG vs occlusion")]
if model.has_attention:
    pairs.insert(0, ("attention", "ig", "Attention vs IG"))
cols = st.columns(len(pairs))
for col, (a, b, title) in zip(cols, pairs):
    rho = spearman(results[a].scores, results[b].scores)
    col.metric(f"Rank correlation, {title} (Spearman)", "n/a" if rho is None else f"{rho:+.2f}",
               help="+1: both rank the words the same way; 0: unrelated; -1: opposite. Attention has no sign, "
                    "so compare it with IG's ranking, not its colours.")

with st.expander(md("Model-agnostic check: occlusion (each word replaced by <pad>)")):
    show(results["occlusion"], "Occlusion")

# -- what if ----------------------------------------------------------------------------------
st.subheader("What if?")
st.caption("Edit the text and see how the prediction and the Integrated Gradients attributions change.")
edited = st.text_area("Edited text", value=text, key="explain.whatif." + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12], height=100)
if edited.strip() and edited != text:
    try:
        changed = explanation(path, edited, "ig", target, steps)
    except ValueError as err:
        st.warning(md(one_line(err)))
    else:
        cols = st.columns(2)
        cols[0].metric("Prediction before", md(first.label), f"p({md(first.target)}) = {first.probs[first.target]:.3f}",
                       delta_color="off")
        change = changed.probs[changed.target] - first.probs[first.target] if changed.target == first.target else None
        cols[1].metric("Prediction after", md(changed.label),
                       f"p({md(changed.target)}) = {changed.probs[changed.target]:.3f}"
                       + (f" ({change:+.3f})" if change is not None else ""), delta_color="off")
        show(changed, "Integrated Gradients, edited text")

# -- export -----------------------------------------------------------------------------------
st.subheader("Export")
ordered = [results[m] for m in methods]
cols = st.columns(3)
cols[0].download_button("HTML", render_document(ordered, "Explanation"), file_name="explanation.html",
                        mime="text/html", key="explain.download.html")
cols[1].download_button("JSON", to_json(ordered), file_name="explanation.json", mime="application/json",
                        key="explain.download.json")
cols[2].download_button("PNG (Integrated Gradients)", render_png(results["ig"]), file_name="explanation.png",
                        mime="image/png", key="explain.download.png")
