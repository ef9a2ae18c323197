"""The Train page's "Pretrain an encoder on unlabelled text" section, and the training form's encoder picker.

The texts (the Data page's text column, its labels unread, and/or an uploaded file of unlabelled
texts) are read in the script thread; the language model trains in a ``core.jobs.PretrainJob``
worker thread registered in the same job registry as training, so a browser session runs one job
at a time and sees only its own. The page reads the job's frozen snapshot only, from a fragment
that reruns every second while it goes on. A finished encoder is offered as the training form's
"Init from".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from core.data import DataError, read_table
from core.jobs import PretrainJob
from core.pretrain import is_encoder_dir
from ui import charts, params
from ui.data import guess_columns
from ui.form import param_widget
from ui.format import duration, md, one_line
from ui.job_view import choose_job, stop_and_follow
from ui.resources import encoder_label, encoders_dir, registry, visible_encoders
from ui.search_view import running_search
from ui.state import PREPARED, RAW, remember, remembered, store_value, stored
from ui.training import running_job

CURRENT_PRETRAIN = "current_pretrain_id"
FINISHED_SEEN = "finished_pretrains_seen"  # job ids whose end already triggered a full rerun
UPLOADED = "pretrain_uploaded"  # UploadedTexts of the last file given to the section's uploader
DATA_TEXTS = "pretrain_data_texts"  # (digest, column, texts): the Data page's text column, read once
INIT_FROM = "pt.pretrain.init_from"  # the encoder pretraining goes on from
TRAIN_INIT_FROM = "hp.run.init_from"  # the training form's Init from (a text field in its Advanced group)
TRAIN_PICKER = "train.init_encoder"
# picking an encoder as Init from sets these training-form fields to the encoder's: the architecture
# its weights need, and the way it reads text (so the two vocabularies share their words)
ENCODER_FORM_FIELDS = (("model", "embedding_dim"), ("model", "hidden_dim"), ("model", "num_layers"),
                       ("model", "bidirectional"), ("model", "layer_norm"), ("model", "residual"),
                       ("text", "tokenizer"), ("text", "lowercase"))
UPLOAD_TYPES = ["csv", "tsv", "txt", "jsonl", "json", "gz"]


# ---- the texts -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TextSource:
    name: str  # where the texts come from, as the user knows it (recorded in the encoder's config)
    column: str
    texts: list[str]

    @property
    def described(self) -> str:
        return f"{self.name} (column {self.column})"


@dataclass(frozen=True)
class UploadedTexts:
    file_id: str
    name: str
    digest: str
    frame: pd.DataFrame
    notes: tuple[str, ...]


def read_texts_upload(content: bytes, name: str, max_bytes: int | None = None, file_id: str = "") -> UploadedTexts:
    """An uploaded file of texts (any columns; one is enough). DataError with a one-line message when unreadable."""
    frame, notes = read_table(content, filename=name, max_bytes=max_bytes)
    return UploadedTexts(file_id, name, hashlib.sha1(content).hexdigest(), frame, tuple(notes))


def guess_text_column(columns: list[str], frame: pd.DataFrame) -> str:
    """'text' when there is one, else the column with the longest values."""
    if "text" in columns:
        return "text"
    return max(columns, key=lambda c: frame[c].astype(str).str.len().mean())


def column_texts(frame: pd.DataFrame, column: str, name: str) -> list[str]:
    """The non-empty texts of ``column``; DataError naming the file and column when there are none."""
    columns = [str(c) for c in frame.columns]
    if not column or column not in columns:
        raise DataError(f"Column {column!r} not found in {name}. Its columns: {', '.join(columns)}. "
                        f"Pick the column that holds the texts.")
    texts = [t for t in frame[column].astype(str).tolist() if t.strip()]
    if not texts:
        raise DataError(f"Column {column!r} of {name} is empty (no row has a text). Pick the column that "
                        f"holds the texts.")
    return texts


def data_page_source() -> TextSource | None:
    """The text column of the data loaded on the Data page (every row that has a text, labelled or not)."""
    raw, prepared = st.session_state.get(RAW), st.session_state.get(PREPARED)
    matches = raw is not None and prepared is not None and prepared.key[0] == raw.digest
    if matches and prepared.report.rows_read == prepared.report.rows_kept:  # every row has its label: no rereading
        return TextSource(prepared.raw_name, prepared.text_col, list(prepared.table.texts))
    if raw is not None:
        column = prepared.text_col if matches else guess_columns(raw)[0]
        cached = st.session_state.get(DATA_TEXTS)
        if cached is None or cached[:2] != (raw.digest, column):
            try:
                frame, _ = read_table(raw.content, filename=raw.name)
                cached = (raw.digest, column, column_texts(frame, column, raw.name))
            except DataError:
                cached = (raw.digest, column, [])
            st.session_state[DATA_TEXTS] = cached
        if cached[2]:
            return TextSource(raw.name, column, cached[2])
    if prepared is not None:
        return TextSource(prepared.raw_name, prepared.text_col, list(prepared.table.texts))
    return None


# ---- starting ------------------------------------------------------------------------------------

def check_encoder(path: str) -> None:
    """ValueError (one line) unless ``path`` is an encoder folder with weights that pretraining can go on from."""
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"Go on from {path}: folder not found. Pick a pretrained encoder from the list, or give "
                         f"the folder that `python -m core pretrain` printed.")
    if not is_encoder_dir(folder):
        what = "a classifier run, not an encoder" if (folder / "labels.json").is_file() \
            else 'not an encoder folder (it has no config.json with "kind": "encoder")'
        raise ValueError(f"Go on from {path}: {what}. Pick a pretrained encoder from the list, or leave it at "
                         f"none to pretrain a new one.")
    if not (folder / "model.safetensors").is_file():
        raise ValueError(f"Go on from {path}: this encoder saved no weights (its pretraining stopped before one "
                         f"epoch ended). Pick another encoder, or leave it at none.")


def start_pretraining(owner: str, sources: list[TextSource], values: dict, init_from: str = "") -> PretrainJob:
    """Validate the texts and settings, then pretrain in the background. Raises ValueError/DataError
    (one line, naming what is wrong) before anything starts."""
    if not sources:
        raise DataError("No texts to pretrain on: load data on the Data page and tick its texts, or upload a "
                        "file of unlabelled texts.")
    cfg = params.build_pretrain_config(values)
    cfg.pretrain.init_from = (init_from or "").strip()
    cfg.pretrain.texts = [s.described for s in sources]  # a record of where they came from
    cfg.validate(in_memory=True)
    if cfg.pretrain.init_from:
        check_encoder(cfg.pretrain.init_from)
    texts = [t for s in sources for t in s.texts]
    if len(texts) < 2:
        raise DataError(f"Only {len(texts)} text to pretrain on: the language model needs at least 2 (one to "
                        f"learn from, one to measure on); thousands help.")
    if running_job(owner) is not None:
        raise ValueError("A job is already running in this browser session: stop it or wait for it to finish.")
    job = PretrainJob(cfg, owner, texts=texts, encoders_dir=encoders_dir())
    registry().add(job)
    return job.start()


def session_pretrains(owner: str) -> list[PretrainJob]:
    """This owner's pretraining jobs, newest first."""
    jobs = [j for j in registry().jobs(owner) if isinstance(j, PretrainJob)]
    return sorted(jobs, key=lambda j: j.snapshot().started, reverse=True)


# ---- the encoder as the training form's Init from -------------------------------------------------

def encoder_form_values(path: str | Path) -> dict:
    """Training-form values (keyed like its widgets) that start a classifier from the encoder at ``path``."""
    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    saved = {"model": config.get("model") or {}, "text": (config.get("run") or {}).get("text") or {}}
    values = {f"hp.{section}.{name}": saved[section][name] for section, name in ENCODER_FORM_FIELDS
              if name in saved[section]}
    values["hp.run.pretrained_vectors"] = str((config.get("run") or {}).get("pretrained_vectors") or "")
    values[TRAIN_INIT_FROM] = str(path)
    return values


def use_encoder(path: str) -> None:
    """A widget callback: the training form starts from this encoder, with its architecture and tokeniser."""
    try:
        values = encoder_form_values(path)
    except (OSError, ValueError):
        values = {TRAIN_INIT_FROM: str(path)}  # the Start button names the problem
    for key, value in values.items():
        st.session_state[key] = value
        store_value(key, value)


def _picked() -> None:
    path = st.session_state.get(TRAIN_PICKER) or ""
    if path:
        use_encoder(path)
    else:
        st.session_state[TRAIN_INIT_FROM] = ""
        store_value(TRAIN_INIT_FROM, "")


def init_from_picker(owner: str) -> None:
    """A select box of this session's visible encoders that fills the training form's Init from (a typed
    folder in Advanced keeps working; the box then shows none)."""
    encoders = visible_encoders(owner)
    if not encoders:
        return
    labels = {str(e.path): encoder_label(e) for e in encoders}
    options = [""] + list(labels)
    current = st.session_state.get(TRAIN_INIT_FROM, stored(TRAIN_INIT_FROM, "")) or ""
    st.session_state[TRAIN_PICKER] = current if current in labels else ""
    st.selectbox("Init from a pretrained encoder", options, key=TRAIN_PICKER, on_change=_picked,
                 format_func=lambda v: labels.get(v) or "none (or the folder typed in Advanced: Init from)",
                 help="Start the classifier from an encoder pretrained below (its LSTM and the vectors of the words "
                      "both vocabularies share). Picking one sets the architecture and tokenizer to the encoder's.")
    if current in labels:
        model = next(e for e in encoders if str(e.path) == current).config.get("model") or {}
        st.caption(f"Starts from {md(Path(current).name)}: hidden dim {model.get('hidden_dim')}, "
                   f"{model.get('num_layers')} layer(s), embedding dim {model.get('embedding_dim')}, "
                   f"{'bidirectional' if model.get('bidirectional') else 'forward only'}; keep these to start from it.")


# ---- drawing -------------------------------------------------------------------------------------

def render(owner: str) -> None:
    """The "Pretrain an encoder on unlabelled text" expander: its controls and this session's pretraining."""
    jobs = session_pretrains(owner)
    with st.expander("Pretrain an encoder on unlabelled text", expanded=bool(jobs)):
        render_controls(owner)
        if jobs:
            st.divider()
            current = choose_job([j.job_id for j in jobs], CURRENT_PRETRAIN, "Pretraining", "pretrain.select")
            stop_and_follow(registry().get(current, owner), "Stop pretraining", "pretrain.stop",
                            "Cancel after the current batch; the encoder keeps what it learned.",
                            "Stopping the pretraining after the current batch...", render_pretrain, owner, current)


def _upload_source() -> tuple[TextSource | None, str]:
    """The uploaded file's texts, or the problem with it ("" when no file is given)."""
    max_mb = int(st.get_option("server.maxUploadSize"))
    upload = st.file_uploader(f"A file of unlabelled texts: CSV, TSV or JSONL (optionally .gz), up to {max_mb} MB",
                              type=UPLOAD_TYPES, key="pt.upload",
                              help="Only the column you pick is read; other columns (labels too) are ignored.")
    if upload is None:
        st.session_state.pop(UPLOADED, None)
        return None, ""
    uploaded = st.session_state.get(UPLOADED)
    if uploaded is None or uploaded.file_id != upload.file_id:
        try:
            uploaded = read_texts_upload(upload.getvalue(), upload.name, max_mb * 1024 * 1024, upload.file_id)
        except (DataError, ValueError) as err:
            return None, one_line(err)
        st.session_state[UPLOADED] = uploaded
    columns = [str(c) for c in uploaded.frame.columns]
    guessed = guess_text_column(columns, uploaded.frame)
    column = st.selectbox(f"Text column of {uploaded.name}", columns, index=columns.index(guessed),
                          key=f"pt.text_col.{uploaded.digest[:12]}", accept_new_options=True,
                          help="Pick the column that holds the texts, or type its name.")
    try:
        texts = column_texts(uploaded.frame, str(column or ""), uploaded.name)
    except DataError as err:
        return None, one_line(err)
    st.caption(f"{md(uploaded.name)}: {len(texts)} texts in column {md(column)}"
               + "".join(f"; {md(n)}" for n in uploaded.notes) + ".")
    return TextSource(uploaded.name, str(column), texts), ""


def render_controls(owner: str) -> None:
    st.caption("Teach the LSTM the language of your texts before it learns your labels: the forward LSTM learns to "
               "predict each next word, the backward LSTM each previous one. Only texts are read, never labels. "
               "The encoder is saved under " + md(encoders_dir()) + "; a classifier then starts from it with "
               "*Init from a pretrained encoder* in the form above.")
    st.markdown("**Texts**")
    data_source = data_page_source()
    data_label = (f"The texts of the Data page: {data_source.name}, column {data_source.column} "
                  f"({len(data_source.texts)} texts)" if data_source else
                  "The texts of the Data page (no data loaded there yet)")
    use_data = st.checkbox(md(data_label), value=data_source is not None, key="pt.use_data",
                           disabled=data_source is None)
    upload_source, upload_problem = _upload_source()
    if upload_problem:
        st.error(md(upload_problem))

    st.markdown("**Settings**")
    all_params = params.pretrain_params()
    columns = st.columns(4)
    for i, p in enumerate(q for q in all_params if q.basic):
        param_widget(p, columns[i % 4])
    if st.toggle("More settings", key="pt.more", value=bool(remembered("pt.more", False))):
        columns = st.columns(4)
        for i, p in enumerate(q for q in all_params if not q.basic):
            param_widget(p, columns[i % 4])
    remember("pt.more")
    encoders = visible_encoders(owner)
    labels = {str(e.path): encoder_label(e) for e in encoders}
    options = [""] + list(labels)
    current = remembered(INIT_FROM, "")
    if current not in options:
        options.append(current)  # a folder typed before
    init_from = st.selectbox("Go on from an encoder", options, index=options.index(current), key=INIT_FROM,
                             accept_new_options=True, format_func=lambda v: labels.get(v, v) or "none: a new encoder",
                             help="Go on pretraining an encoder, e.g. on the texts of your task (domain adaptation). "
                                  "Pick one or type its folder. Its vocabulary, tokenizer and architecture are kept.")
    remember(INIT_FROM)
    if init_from:
        st.caption("Going on from an encoder keeps its vocabulary, tokenizer and architecture: the hidden dim, "
                   "tokenizer, pretrained vectors and the other text and model settings do not apply.")

    busy = running_job(owner) or running_search(owner)
    if st.button("Start pretraining", key="pt.start", disabled=busy is not None,
                 help="Only one job per browser session runs at a time." if busy else None):
        if upload_problem:
            st.error("Not started: the uploaded file of texts has a problem (shown above). Fix it, pick another "
                     "column, or remove the file.")
            return
        sources = ([data_source] if use_data and data_source is not None else []) + \
            ([upload_source] if upload_source is not None else [])
        values = {p.key: st.session_state.get(p.key, stored(p.key, p.default)) for p in all_params}
        try:
            job = start_pretraining(owner, sources, values, str(init_from or ""))
        except (DataError, ValueError, TypeError) as err:
            st.error(md(one_line(err)))
        else:
            st.session_state[CURRENT_PRETRAIN] = job.job_id
            st.rerun()


def history_rows(history) -> list[dict]:
    return [{"epoch": r["epoch"], "steps": r["steps"], "train loss": r["train_loss"], "held-out loss": r["valid_loss"],
             "held-out perplexity": r["valid_perplexity"], "seconds": r["seconds"], "tokens/s": r["tokens_per_s"]}
            for r in history]


def render_pretrain(owner: str, job_id: str) -> None:
    """The live part: reads the job's snapshot only (rerun every second while it runs)."""
    job = registry().get(job_id, owner)
    if job is None:
        st.info("This pretraining is no longer known to the server (it was restarted). Its encoder, if it saved "
                "one, is offered as Init from.")
        return
    snap = job.snapshot()
    text = f"Pretraining: {snap.status}"
    if snap.status == "completed":
        st.success(text)
    elif snap.status == "cancelled":
        st.warning(text + (" (stopped early; the encoder keeps what it learned)" if snap.metrics
                           else " (stopped before an epoch ended: nothing was saved)"))
    elif snap.status in ("failed", "diverged"):
        st.error(f"{text}: {md(snap.message)}")
    else:
        st.info(text)
    parts = [f"Epoch {max(snap.epoch, 1 if snap.step else 0)}/{snap.epochs}",
             f"step {snap.step}/{snap.total_steps or '?'}"]
    if snap.epoch_loss is not None:
        parts.append(f"train loss {snap.epoch_loss:.3f} (perplexity {snap.perplexity:,.1f})")
    if snap.tokens_per_s:
        parts.append(f"{snap.tokens_per_s:,.0f} tokens/s")
    parts += [f"elapsed {duration(snap.elapsed)}", f"ETA {duration(0 if snap.status == 'completed' else snap.eta_seconds)}"]
    st.progress(snap.progress, text=" · ".join(parts))
    if snap.batch_losses or snap.history:
        st.plotly_chart(charts.pretrain_curves(snap.history, snap.batch_losses), key=f"pretrain.curves.{job_id}")
    elif not snap.done:
        st.caption("Reading the texts and building the vocabulary...")
    if snap.history:
        st.dataframe(history_rows(snap.history), hide_index=True, key=f"pretrain.history.{job_id}")
    if snap.done and snap.metrics:
        st.success(f"Encoder saved in {md(snap.run_dir)} (held-out perplexity "
                   f"{snap.metrics.get('valid_perplexity')}). Pick it as *Init from a pretrained encoder* in the "
                   f"training form, or:")
        if st.button("Start the classifier from this encoder", key=f"pretrain.use.{job_id}", on_click=use_encoder,
                     args=(snap.run_dir,), help="Sets Init from and the architecture of the training form to this "
                                                "encoder's."):
            st.rerun()  # the whole page, so the training form shows the new settings
    if snap.log:
        with st.expander("Pretraining log"):
            st.code("\n".join(snap.log[-40:]), language=None)
    seen = st.session_state.setdefault(FINISHED_SEEN, set())
    if snap.done and job_id not in seen:
        seen.add(job_id)
        st.rerun()  # the whole page, so the Start buttons and the encoder lists catch up
