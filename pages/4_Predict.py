"""Predict: classify typed text, or a whole file, with a trained run or the demo model."""

import streamlit as st

from core.data import DataError, read_table
from core.runs import RunError
from ui import charts
from ui.format import md, one_line
from ui.predicting import predictions_frame
from ui.resources import demo_run, model_choices, predictor
from ui.state import owner_id

owner = owner_id()
st.title("Predict")

choices = model_choices(owner)
if not choices:
    st.info("No model yet: train one on the Train page (the demo model is not installed).")
    st.stop()
path = st.selectbox("Model", list(choices), format_func=choices.get, key="predict.run")
if demo_run() is None:
    st.caption("The demo model (artifacts/demo) is not installed; choose one of your runs.")

try:
    model = predictor(path)
except (RunError, ValueError, OSError) as err:
    st.error(md(one_line(err)))
    st.stop()
st.caption(f"Classes: {md(', '.join(model.labels[0]))}" +
           (f"; label columns: {md(', '.join(model.label_columns))}" if len(model.label_columns) > 1 else ""))

st.subheader("Type a text")
text = st.text_area("Text to classify", key="predict.text", height=120)
if st.button("Classify", type="primary", key="predict.go"):
    if not text.strip():
        st.warning("Type some text first.")
    else:
        prediction = model.predict([text])[0]
        for column, task in prediction.tasks.items():
            title = column if len(prediction.tasks) > 1 else ""
            label = task["label"]
            st.metric(f"Predicted {md(title) or 'label'}", md(label),
                      f"{task['probs'][label]:.1%} probability", delta_color="off")
            st.plotly_chart(charts.probability_bars(task["probs"], title), key=f"predict.bars.{column}")
        if prediction.empty:
            st.warning("The text has no known tokens; the prediction is only the model's prior.")
        elif prediction.truncated:
            st.caption(f"{prediction.truncated} tokens beyond the model's max length were ignored.")

st.subheader("Classify a file")
max_mb = int(st.get_option("server.maxUploadSize"))
upload = st.file_uploader(f"CSV, TSV or JSONL with a text column, up to {max_mb} MB",
                          type=["csv", "tsv", "txt", "jsonl", "json", "gz"], key="predict.upload")
if upload is None:
    st.stop()
try:
    frame, _ = read_table(upload.getvalue(), filename=upload.name, max_bytes=max_mb * 1024 * 1024)
except (DataError, ValueError) as err:
    st.error(md(one_line(err)))
    st.stop()
columns = [str(c) for c in frame.columns]
text_col = st.selectbox("Text column", columns, index=columns.index("text") if "text" in columns else 0,
                        key="predict.text_col")
if st.button("Predict the file", key="predict.file"):
    with st.spinner(f"Classifying {len(frame)} texts..."):
        st.session_state["predict.result"] = (upload.file_id, text_col, path,
                                              predictions_frame(model, frame[text_col].tolist(), text_col))
result = st.session_state.get("predict.result")
if result is not None and result[:3] == (upload.file_id, text_col, path):
    table = result[3]
    st.dataframe(table.head(200), hide_index=True)
    st.caption(f"{len(table)} predictions" + (" (first 200 shown)" if len(table) > 200 else "") + ".")
    st.download_button("Download predictions (CSV)", table.to_csv(index=False).encode("utf-8"),
                       file_name=f"predictions-{upload.name.rsplit('.', 1)[0]}.csv", mime="text/csv",
                       key="predict.download")
