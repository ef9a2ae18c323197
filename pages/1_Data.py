"""Data: upload a file or pick a built-in dataset, map columns, check the data, set the splits."""

import streamlit as st

from core.data import BUILTIN_DATASETS, DataError
from core.pipeline import DataConfig
from core.text import TextConfig
from core.training import TrainConfig
from ui import charts
from ui.data import guess_columns, prepare, read_builtin, read_upload, split_sizes
from ui.format import md, one_line
from ui.params import DATA_KEYS
from ui.state import PREPARED, RAW, UPLOAD_ERROR, owner_id, remember, remembered, store_value

owner_id()
max_mb = int(st.get_option("server.maxUploadSize"))
max_bytes = max_mb * 1024 * 1024

st.title("Data")
st.write("Upload a table with one text column and one or more label columns, or pick a built-in dataset.")

source = st.radio("Source", ["Upload a file", "Built-in dataset"], horizontal=True, key="data.source")
if source == "Upload a file":
    upload = st.file_uploader(f"CSV, TSV or JSONL file (optionally .gz), up to {max_mb} MB",
                              type=["csv", "tsv", "txt", "jsonl", "json", "gz"], key="data.upload",
                              help="The first row names the columns. Files larger than the limit set as "
                                   "server.maxUploadSize in .streamlit/config.toml are refused.")
    st.caption(f"Upload limit: {max_mb} MB.")
    if upload is not None:
        raw = st.session_state.get(RAW)
        failed = st.session_state.get(UPLOAD_ERROR)
        if failed and failed[0] == upload.file_id:
            st.error(md(failed[1]))
        elif raw is None or raw.file_id != upload.file_id:
            try:
                new_raw = read_upload(upload.getvalue(), upload.name, max_bytes, file_id=upload.file_id)
            except (DataError, ValueError) as err:
                st.session_state[UPLOAD_ERROR] = (upload.file_id, one_line(err))
                st.error(md(one_line(err)))
            else:
                st.session_state[RAW] = new_raw
                st.session_state.pop(UPLOAD_ERROR, None)
else:
    names = list(BUILTIN_DATASETS)
    name = st.selectbox("Built-in dataset", names, key="data.builtin",
                        format_func=lambda n: f"{n} ({'offline' if BUILTIN_DATASETS[n]['offline'] else 'download'})")
    st.caption(BUILTIN_DATASETS[name]["description"])
    if st.button("Load dataset", key="data.load_builtin"):
        try:
            with st.spinner(f"Loading {name}..."):
                new_raw = read_builtin(name)
        except (DataError, ValueError, OSError) as err:
            st.error(md(one_line(err)))
        else:
            st.session_state[RAW] = new_raw
            tokenizer = BUILTIN_DATASETS[name].get("tokenizer")
            if tokenizer:
                store_value("hp.text.tokenizer", tokenizer)

raw = st.session_state.get(RAW)
if raw is None:
    st.info("No data loaded yet: upload a file or load a built-in dataset.")
    st.stop()

st.subheader("Preview")
st.caption(f"{md(raw.name)}: {raw.rows} rows, columns {md(', '.join(raw.columns))}. First {len(raw.preview)} rows:")
st.dataframe(raw.preview, hide_index=True)
for note in raw.notes:
    st.caption(md(note))

st.subheader("Columns")
text_default, label_default = guess_columns(raw)
mapping_key = f"{raw.digest[:12]}"
left, right = st.columns(2)
text_col = left.selectbox("Text column", raw.columns, index=raw.columns.index(text_default),
                          key=f"data.text_col.{mapping_key}")
label_cols = right.multiselect("Label column(s)", raw.columns, default=label_default,
                               key=f"data.label_cols.{mapping_key}",
                               help="Several label columns train one classification head each (multi-task).")

prepared = st.session_state.get(PREPARED)
wanted = (raw.digest, text_col, tuple(label_cols))
if prepared is None or prepared.key != wanted:
    try:
        prepared = prepare(raw, text_col, label_cols, max_bytes)
    except (DataError, ValueError) as err:
        st.error(md(one_line(err)))
        if prepared is not None:
            st.caption(f"The Train page keeps using the previous data: {md(prepared.raw_name)} "
                       f"(text {md(prepared.text_col)}, labels {md(', '.join(prepared.label_cols))}).")
        st.stop()
    st.session_state[PREPARED] = prepared

report = prepared.report
st.subheader("Validation report")
c1, c2, c3, c4 = st.columns(4)
c1.metric("Rows read", report.rows_read)
c2.metric("Rows kept", report.rows_kept)
c3.metric("Rows dropped", report.rows_read - report.rows_kept)
c4.metric("Duplicate texts", report.duplicate_texts)
for warning in report.warnings:
    st.warning(md(warning))

st.plotly_chart(charts.class_balance(report.class_counts), key="chart.balance")
max_length = st.number_input("Max length (tokens kept per text; longer texts are truncated)", min_value=1,
                             step=10, value=remembered("hp.text.max_length", TextConfig.max_length),
                             key="data.max_length")
remember("data.max_length", "hp.text.max_length")
st.plotly_chart(charts.length_histogram(report.text_lengths, int(max_length)), key="chart.lengths")
stats = report.length_stats
st.caption(f"Words per text: min {stats['min']:.0f}, median {stats['median']:.0f}, mean {stats['mean']:.1f}, "
           f"95th percentile {stats['p95']:.0f}, max {stats['max']:.0f}.")
if report.dropped:
    st.plotly_chart(charts.dropped_rows(report.dropped), key="chart.dropped")
    st.dataframe(report.dropped_examples, hide_index=True, column_config={"row": "data row", "reason": "reason"})
else:
    st.caption("No rows were dropped.")

st.subheader("Splits")
given = [name for name, part in (("validation", prepared.given_valid), ("test", prepared.given_test)) if part is not None]
if given:
    st.caption(f"{prepared.builtin} ships its own {' and '.join(given)} split; the fractions below apply only "
               "to the splits it does not have.")
s1, s2, s3 = st.columns(3)
valid_fraction = s1.number_input("Validation fraction", 0.0, 0.9, step=0.05, format="%.2f", key="data.valid_fraction",
                                 value=remembered(DATA_KEYS["valid_fraction"], DataConfig.valid_fraction))
test_fraction = s2.number_input("Test fraction", 0.0, 0.9, step=0.05, format="%.2f", key="data.test_fraction",
                                value=remembered(DATA_KEYS["test_fraction"], DataConfig.test_fraction))
s3.number_input("Seed (also seeds training)", min_value=0, step=1, key="data.seed",
                value=remembered("hp.train.seed", TrainConfig.seed))
for key, store_key in (("data.valid_fraction", DATA_KEYS["valid_fraction"]),
                       ("data.test_fraction", DATA_KEYS["test_fraction"]), ("data.seed", "hp.train.seed")):
    remember(key, store_key)
n_rows = len(prepared.table)
if valid_fraction + test_fraction >= 1:
    st.error("Validation fraction + test fraction must be below 1 to leave training rows.")
else:
    n_train, n_valid, n_test = split_sizes(n_rows, 0.0 if prepared.given_valid is not None else valid_fraction,
                                           0.0 if prepared.given_test is not None else test_fraction)
    n_valid = len(prepared.given_valid) if prepared.given_valid is not None else n_valid
    n_test = len(prepared.given_test) if prepared.given_test is not None else n_test
    st.success(f"Ready to train: {n_train} training, {n_valid} validation and {n_test} test rows "
               f"(stratified on {md(prepared.label_cols[0])}). Go to the Train page.")
