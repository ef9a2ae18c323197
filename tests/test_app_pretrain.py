"""AppTest tests of the Train page's language-model pretraining: start it on the loaded data, watch it,
stop it, name bad input, and start a classifier from the encoder it made."""

from __future__ import annotations

import json
import re

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO, keyword_csv, one_torch_thread, rerun_until

TRAIN = str(REPO / "pages" / "2_Train.py")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture
def encoders_dir(runs_dir):
    """Where the app saves encoders: next to its runs (nothing is written under artifacts/)."""
    return runs_dir.parent / "encoders"


def texts(at: AppTest, *kinds: str) -> list[str]:
    """Rendered text of the given element kinds, markdown escapes removed."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for kind in kinds for e in getattr(at, kind)]


def pretrain_status(at: AppTest) -> list[str]:
    return [t for t in texts(at, "success", "info", "warning", "error") if t.startswith("Pretraining:")]


def prepared_data(rows: int):
    from ui.data import prepare, read_upload
    return prepare(read_upload(keyword_csv(rows), "reviews.csv"), "text", ["label"])


def train_page(prepared, owner: str | None = None) -> AppTest:
    at = AppTest.from_file(TRAIN, default_timeout=60)
    if owner:
        at.query_params["owner"] = owner
    if prepared is not None:
        at.session_state["prepared_data"] = prepared
    return at.run()


def tiny_pretraining(at: AppTest, epochs: int = 3, batch_size: int = 16) -> None:
    at.number_input(key="pt.pretrain.epochs").set_value(epochs)
    at.number_input(key="pt.pretrain.batch_size").set_value(batch_size)
    at.number_input(key="pt.model.hidden_dim").set_value(8)
    at.selectbox(key="pt.text.tokenizer").set_value("whitespace")
    at.toggle(key="pt.more").set_value(True).run()
    at.number_input(key="pt.model.embedding_dim").set_value(8)
    at.number_input(key="pt.pretrain.warmup_steps").set_value(0)
    at.selectbox(key="pt.pretrain.device").set_value("cpu")


def poll(at: AppTest, until, limit: int = 240, pause: float = 0.25) -> AppTest:
    return rerun_until(at, until, pretrain_status, limit, pause)


def pretrain_job(at: AppTest):
    from ui.resources import registry
    return registry().get(at.session_state["current_pretrain_id"], at.session_state["owner_id"])


def test_pretrain_on_the_loaded_data_then_train_a_classifier_from_the_encoder(runs_dir, encoders_dir):
    at = train_page(prepared_data(300))
    assert not at.exception
    data_box = at.checkbox(key="pt.use_data")
    assert data_box.value and "reviews.csv, column text (300 texts)" in re.sub(r"\\(.)", r"\1", data_box.label)
    tiny_pretraining(at, epochs=3)
    at.button(key="pt.start").click().run()
    assert not at.exception and not at.error
    poll(at, lambda a: "Pretraining: completed" in pretrain_status(a))

    # what was learned is on show: the steps, perplexity, speed, one row per epoch, the folder
    folder = encoders_dir / at.session_state["current_pretrain_id"]
    progress = at.get("progress")[0].proto.text
    assert re.search(r"Epoch 3/3 · step (\d+)/\1 · train loss [\d.]+ \(perplexity [\d.,]+\) · [\d,]+ tokens/s", progress), \
        progress
    history = next(d.value for d in at.dataframe if "held-out perplexity" in d.value.columns)
    assert history["epoch"].tolist() == [1, 2, 3] and (history["held-out perplexity"] > 1).all()
    assert at.get("plotly_chart"), "the loss and perplexity curves are drawn"
    assert any(f"Encoder saved in {folder}" in t for t in texts(at, "success"))
    assert json.loads((folder / "config.json").read_text())["kind"] == "encoder"
    assert (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())["run"]["pretrain"]
    assert config["texts"] == ["reviews.csv (column text)"] and config["epochs"] == 3

    # the encoder is offered as the classifier's Init from; picking it matches the architecture
    picker = at.selectbox(key="train.init_encoder")
    assert picker.options[1].startswith(folder.name) and "hidden 8" in picker.options[1]
    picker.set_value(str(folder)).run()
    assert not at.exception
    assert at.text_input(key="hp.run.init_from").value == str(folder)
    assert at.number_input(key="hp.model.hidden_dim").value == 8
    assert at.number_input(key="hp.model.embedding_dim").value == 8
    assert at.selectbox(key="hp.text.tokenizer").value == "whitespace"
    at.number_input(key="hp.train.epochs").set_value(1)
    at.number_input(key="hp.train.warmup_steps").set_value(0)
    at.button(key="train.start").click().run()
    assert not at.exception and not at.error
    poll(at, lambda a: "Status: completed" in texts(a, "success"))
    from ui.resources import registry
    job = registry().get(at.session_state["current_job_id"], at.session_state["owner_id"])
    assert job.config.init_from == str(folder)
    assert any(line.startswith(f"initialised from {folder}") for line in job.snapshot().log), job.snapshot().log


def test_the_finished_encoder_button_sets_the_training_form(runs_dir, encoders_dir):
    at = train_page(prepared_data(120))
    tiny_pretraining(at, epochs=1)
    at.button(key="pt.start").click().run()
    poll(at, lambda a: "Pretraining: completed" in pretrain_status(a))
    folder = encoders_dir / at.session_state["current_pretrain_id"]
    at.button(key=f"pretrain.use.{folder.name}").click().run()
    assert not at.exception
    assert at.text_input(key="hp.run.init_from").value == str(folder)
    assert at.selectbox(key="train.init_encoder").value == str(folder)
    assert at.number_input(key="hp.model.hidden_dim").value == 8


def test_stop_keeps_what_the_encoder_learned_and_jobs_stay_in_their_session(runs_dir, encoders_dir):
    at = train_page(prepared_data(1500))
    tiny_pretraining(at, epochs=300, batch_size=8)
    at.button(key="pt.start").click().run()
    job = pretrain_job(at)
    try:
        poll(at, lambda a: len(job.snapshot().history) >= 1)
        assert "Pretraining: running" in pretrain_status(at)
        # one job per browser session: training and searching wait for it
        assert at.button(key="train.start").disabled and at.button(key="search.start").disabled
        assert at.button(key="pt.start").disabled
        # another browser sees neither the job nor its unfinished encoder
        stranger = train_page(prepared_data(100))
        assert not pretrain_status(stranger) and not [s for s in stranger.selectbox if s.key == "train.init_encoder"]
        from ui.resources import visible_encoders
        assert not visible_encoders(stranger.session_state["owner_id"])

        at.button(key="pretrain.stop").click().run()
        poll(at, lambda a: any(s.startswith("Pretraining: cancelled") for s in pretrain_status(a)), limit=120)
    finally:
        job.stop()
        job.join(30)
    assert "the encoder keeps what it learned" in pretrain_status(at)[0]
    snapshot = job.snapshot()
    assert snapshot.status == "cancelled" and snapshot.step < snapshot.total_steps
    folder = encoders_dir / snapshot.job_id
    assert (folder / "model.safetensors").is_file()
    assert json.loads((folder / "status.json").read_text())["status"] == "cancelled"
    assert not at.button(key="pt.start").disabled and not at.button(key="train.start").disabled
    assert any("stopped early" in o for o in at.selectbox(key="train.init_encoder").options)


def test_bad_pretraining_input_is_named_and_nothing_starts(runs_dir, encoders_dir, tmp_path):
    at = train_page(None)
    assert not at.exception
    assert at.checkbox(key="pt.use_data").disabled  # no data on the Data page
    at.button(key="pt.start").click().run()
    assert not at.exception
    assert texts(at, "error") == ["No texts to pretrain on: load data on the Data page and tick its texts, or upload "
                                  "a file of unlabelled texts."]

    # an uploaded file whose text column is empty
    at.file_uploader(key="pt.upload").set_value(("unlabelled.csv", b"id,text,note\n1,,a\n2,,b\n", "text/csv")).run()
    assert not at.exception
    assert texts(at, "error") == ["Column 'text' of unlabelled.csv is empty (no row has a text). Pick the column "
                                  "that holds the texts."]
    at.button(key="pt.start").click().run()
    assert any(t.startswith("Not started: the uploaded file of texts has a problem") for t in texts(at, "error"))

    # a readable file, then a bad value
    at.file_uploader(key="pt.upload").set_value(
        ("unlabelled.jsonl", b'{"review": "a fine day out"}\n{"review": "the rain came down"}\n'
                             b'{"review": "we stayed in and read"}\n', "application/json")).run()
    assert not at.exception and not at.error
    assert any("unlabelled.jsonl: 3 texts in column review" in t for t in texts(at, "caption"))
    at.number_input(key="pt.pretrain.epochs").set_value(0)
    at.button(key="pt.start").click().run()
    assert texts(at, "error") == ["The 'epochs' parameter must be an int >= 1. Got 0 instead."]
    at.number_input(key="pt.pretrain.epochs").set_value(1)

    # going on from folders that are not encoders
    run_like = tmp_path / "a-run"
    run_like.mkdir()
    (run_like / "labels.json").write_text("{}")
    for folder, expected in ((tmp_path / "nowhere", "folder not found"),
                             (tmp_path, "not an encoder folder"), (run_like, "a classifier run, not an encoder")):
        at = AppTest.from_file(TRAIN, default_timeout=60)
        at.session_state["prepared_data"] = prepared_data(60)
        at.session_state["widget_store"] = {"pt.pretrain.init_from": str(folder)}  # as typed before
        at.run()
        assert at.selectbox(key="pt.pretrain.init_from").value == str(folder)
        at.button(key="pt.start").click().run()
        assert not at.exception
        errors = texts(at, "error")
        assert len(errors) == 1 and errors[0].startswith(f"Go on from {folder}: {expected}"), errors
    assert not encoders_dir.exists() or not any(encoders_dir.iterdir())
    assert "current_pretrain_id" not in at.session_state


def make_encoder(encoders_dir, hidden_dim: int = 8):
    from core.models import ModelConfig
    from core.pretrain import EncoderRunConfig, PretrainConfig, pretrain
    from core.text import TextConfig

    texts = [row.split(",")[0] for row in keyword_csv(100).decode().splitlines()[1:]]
    cfg = EncoderRunConfig(pretrain=PretrainConfig(texts=["keywords"], epochs=1, batch_size=16, warmup_steps=0,
                                                   device="cpu"),
                           text=TextConfig(tokenizer="whitespace"),
                           model=ModelConfig(embedding_dim=8, hidden_dim=hidden_dim))
    return pretrain(cfg, texts=texts, out_dir=encoders_dir, run_id="enc-small", log=lambda line: None).run_dir


def test_training_from_an_encoder_of_another_size_is_refused_with_the_fix(runs_dir, encoders_dir, tmp_path):
    folder = make_encoder(encoders_dir, hidden_dim=8)
    at = train_page(prepared_data(100))
    at.selectbox(key="train.init_encoder").set_value(str(folder)).run()
    assert any("Starts from enc-small: hidden dim 8" in t for t in texts(at, "caption"))
    at.number_input(key="hp.model.hidden_dim").set_value(16)
    at.button(key="train.start").click().run()
    assert not at.exception
    assert texts(at, "error") == [f"Init from {folder}: the encoder has Hidden dim 8 but the form says Hidden dim 16. "
                                  f"Set Hidden dim 8 in the form (or pick another encoder, or clear Init from)."]
    # a typed folder that holds neither a run nor an encoder
    at.text_input(key="hp.run.init_from").set_value(str(tmp_path)).run()
    assert at.selectbox(key="train.init_encoder").value == ""  # the picker follows what was typed
    at.button(key="train.start").click().run()
    assert texts(at, "error")[0].startswith(f"Init from {tmp_path}: neither a finished run nor a pretrained encoder")
    assert not any(runs_dir.iterdir())  # nothing started
    assert (folder / "model.safetensors").is_file()  # and nothing saved was touched


def test_the_data_pages_unlabelled_rows_count_for_pretraining(runs_dir):
    home = str(REPO / "streamlit_app.py")
    body = keyword_csv(100) + b"".join(b"an unlabelled review number %d,\n" % i for i in range(20))
    at = AppTest.from_file(home, default_timeout=60).run()
    at.switch_page("pages/1_Data.py").run()
    at.file_uploader[0].set_value(("reviews.csv", body, "text/csv")).run()
    assert not at.exception
    assert len(at.session_state["prepared_data"].table) == 100  # classification drops the rows without a label
    at.switch_page("pages/2_Train.py").run()
    assert not at.exception
    label = re.sub(r"\\(.)", r"\1", at.checkbox(key="pt.use_data").label)
    assert "reviews.csv, column text (120 texts)" in label, label  # pretraining reads only the texts
