"""Export: download a model as a bundle, int8 weights, ONNX or ONNX int8, see how each compares, import one back."""

import streamlit as st

from core.export import FORMATS, ExportError, export_run, load_upload
from core.runs import RunError
from ui.export_view import FORMAT_TITLES, UPLOAD_TYPES, downloads, parity_frame, saved_parity, target_checks
from ui.format import md, one_line
from ui.resources import model_choices
from ui.state import owner_id

owner = owner_id()
st.title("Export")

choices = model_choices(owner)

if not choices:
    st.info("No model to export yet: train one on the Train page. You can still import a bundle below.")
else:
    path = st.selectbox("Model", list(choices), format_func=choices.get, key="export.run")
    formats = st.multiselect("Formats", list(FORMATS), default=list(FORMATS), format_func=FORMAT_TITLES.get,
                             key="export.formats")
    st.caption("Every export also compares fp32, int8, ONNX and ONNX int8 on the run's test set (accuracy, "
               "agreement, largest differences, size and CPU latency); this takes a few seconds. For a small, "
               "fast model on CPU choose ONNX int8 (it runs in ONNX Runtime).")
    if st.button("Export", type="primary", key="export.go", disabled=not formats):
        try:
            with st.spinner("Exporting and comparing the formats..."):
                export_run(path, formats, log=lambda line: None)
        except (ExportError, RunError, ValueError, OSError) as err:
            st.error(md(one_line(err)))

    report = saved_parity(path)
    if report is not None:
        st.subheader("Parity with the trained model")
        st.dataframe(parity_frame(report), hide_index=True)
        st.caption(f"{report['n_test']} test texts; latency is the model call alone on "
                   f"{report['threads']} CPU thread(s), p50 over {report.get('latency_examples', 0)} texts.")
        for met, sentence in target_checks(report):
            (st.success if met else st.warning)(sentence, icon=":material/check:" if met else ":material/info:")
    files = downloads(path)
    if files:
        st.subheader("Downloads")
        for i, item in enumerate(files):
            st.download_button(item.label, item.path.read_bytes(), file_name=item.path.name, mime=item.mime,
                               key=f"export.download.{i}")
    elif report is None:
        st.caption("Nothing exported yet for this model: choose formats and press Export.")

st.divider()
st.subheader("Import a model")
st.write("Upload a bundle (.zip), or an ONNX model (fp32 or int8) or PyTorch int8 weights together with their "
         ".json sidecar. "
         "Only safetensors and JSON are read: pickled files (.pt, .pkl, .bin) are refused, and so are ONNX "
         "files that reference external data.")
max_mb = int(st.get_option("server.maxUploadSize"))
uploads = st.file_uploader(f"Model files, up to {max_mb} MB each", type=UPLOAD_TYPES, accept_multiple_files=True,
                           key="export.upload")
if uploads:
    signature = tuple(sorted((u.name, u.file_id) for u in uploads))
    if st.session_state.get("export.imported_from") != signature:
        st.session_state.pop("export.imported", None)
        try:
            with st.spinner("Checking and loading the model..."):
                st.session_state["export.imported"] = load_upload({u.name: u.getvalue() for u in uploads},
                                                                  max_bytes=max_mb * 1024 * 1024)
            st.session_state["export.import_error"] = None
        except (ExportError, RunError, ValueError) as err:
            st.session_state["export.import_error"] = one_line(err)
        st.session_state["export.imported_from"] = signature
    if st.session_state.get("export.import_error"):
        st.error(md(st.session_state["export.import_error"]))

imported = st.session_state.get("export.imported") if uploads else None
if imported is not None:
    kind = imported.metadata.get("format", "model")
    st.success(f"Imported {kind} model: classes {md(', '.join(imported.labels[0]))}.")
    card = imported.metadata.get("model_card")
    if card:
        with st.expander("Model card"):
            st.text(card)  # an uploaded card is untrusted: shown as plain text, no links or images
    text = st.text_input("Try it: a text to classify", key="export.try_text")
    if st.button("Classify", key="export.try_go"):
        if not text.strip():
            st.warning("Type some text first.")
        else:
            prediction = imported.predict([text])[0]
            st.metric("Predicted label", prediction.label,
                      f"{prediction.probs[prediction.label]:.1%} probability", delta_color="off")
            st.dataframe([{"label": k, "probability": v} for k, v in prediction.probs.items()], hide_index=True)
