"""AppTest tests of the Evaluate page's "Add an n-gram part" section: offered for the runs it suits, fitted
in the background on the Data page's data, a new run with its accuracy shown, and one-line messages when
it cannot be done."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO, keyword_csv, one_torch_thread, rerun_until

TRAIN = str(REPO / "pages" / "2_Train.py")
EVALUATE = str(REPO / "pages" / "3_Evaluate.py")
SECTION = "Add an n-gram part (words, bigrams, trigrams)"


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """The app runs in a folder without the uploaded files: in-app runs' recorded paths lead nowhere."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def texts(at: AppTest, *kinds: str) -> list[str]:
    """Rendered text of the given element kinds, markdown escapes removed."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for kind in kinds for e in getattr(at, kind)]


def section_shown(at: AppTest) -> bool:
    return any(e.label == SECTION for e in at.expander)


def fit_status(at: AppTest) -> list[str]:
    return [t for t in texts(at, "success", "info", "error") if t.startswith("N-gram fit:")]


def prepared_data(csv_bytes: bytes, name: str = "reviews.csv"):
    from ui.data import prepare, read_upload
    return prepare(read_upload(csv_bytes, name), "text", ["label"])


def train_in_app_way(prepared, runs_dir, run_id: str, **values):
    """Train as the Train page does: the form's config, splits made from the Data page's data."""
    from core.pipeline import train_run
    from ui import params
    from ui.data import make_splits
    from ui.training import run_config

    settings = {p.key: p.default for p in params.params()}
    settings.update({"hp.train.epochs": 1, "hp.model.hidden_dim": 4, "hp.model.embedding_dim": 4,
                     "hp.train.warmup_steps": 0, "hp.text.tokenizer": "whitespace", "hp.train.lr": 0.002})
    settings.update(values)
    cfg = run_config(prepared, settings)
    splits = make_splits(prepared, cfg.data.valid_fraction, cfg.data.test_fraction, cfg.train.seed)
    result = train_run(cfg, splits=splits, runs_dir=runs_dir, run_id=run_id, log=lambda line: None)
    assert result.status == "completed", result.message
    return result.run_dir


def evaluate_page(owner: str | None = None, prepared=None, run_dir=None) -> AppTest:
    at = AppTest.from_file(EVALUATE, default_timeout=60)
    if owner:
        at.session_state["owner_id"] = owner
        at.query_params["owner"] = owner
    if prepared is not None:
        at.session_state["prepared_data"] = prepared
    at.run()
    if run_dir is not None:
        at.selectbox(key="eval.run").set_value(str(run_dir)).run()
    assert not at.exception, at.exception
    return at


def poll(at: AppTest, until, limit: int = 240, pause: float = 0.25) -> AppTest:
    return rerun_until(at, until, fit_status, limit, pause)


def folder_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_the_section_is_offered_for_single_models_without_ngrams_only(runs_dir, tmp_path):
    from core.pipeline import train_run
    from helpers import tiny_config

    data = tmp_path / "reviews.csv"
    data.write_bytes(keyword_csv(200))
    quiet = {"runs_dir": runs_dir, "log": lambda line: None}
    for run_id, extra in (("plain", {}), ("joint", {"ngrams": 1}), ("pair", {"ensemble": 2})):
        assert train_run(tiny_config(data, epochs=1, **extra), run_id=run_id, **quiet).status == "completed"

    at = evaluate_page(run_dir=runs_dir / "plain")
    assert section_shown(at)
    assert [o for o in at.radio(key="eval.ngrams.order").options] == \
        ["1: words", "2: words and bigrams", "3: words, bigrams and trigrams"]
    assert at.radio(key="eval.ngrams.order").value == 3
    # trained from a file that is still there: the fit reads it, as `python -m core fit-ngrams` would
    assert any(f"Training data: {data} (text column text, label column(s) label), read from where" in t
               for t in texts(at, "caption"))
    assert not at.button(key="eval.ngrams.start.plain").disabled and not at.error

    for run_id in ("joint", "pair", "pair-m1"):
        at.selectbox(key="eval.run").set_value(str(runs_dir / run_id)).run()
        assert not at.exception
        assert section_shown(at) == (run_id == "pair-m1"), run_id  # an ensemble's members are single models


def test_fitting_on_the_data_page_data_makes_a_new_run_that_shows_its_accuracy(runs_dir, elsewhere):
    prepared = prepared_data(keyword_csv(300))
    train = AppTest.from_file(TRAIN, default_timeout=60)
    train.session_state["prepared_data"] = prepared
    train.run()
    for key, value in (("hp.train.epochs", 1), ("hp.model.hidden_dim", 4), ("hp.model.embedding_dim", 4),
                       ("hp.train.warmup_steps", 0), ("hp.train.lr", 0.002)):
        train.number_input(key=key).set_value(value)
    train.selectbox(key="hp.text.tokenizer").set_value("whitespace")
    train.button(key="train.start").click().run()
    assert not train.exception and not train.error
    owner, source_id = train.session_state["owner_id"], train.session_state["current_job_id"]
    source = runs_dir / source_id
    poll(train, lambda a: (source / "metrics.json").is_file() and any("Status: completed" in t
                                                                       for t in texts(a, "success")))
    before = folder_bytes(source)
    source_valid = json.loads((source / "metrics.json").read_text())["valid"]["accuracy"]

    at = evaluate_page(owner, prepared, source)
    assert section_shown(at) and not at.error
    assert any("Training data: the Data page's reviews.csv, split as the run split it" in t
               for t in texts(at, "caption"))
    at.radio(key="eval.ngrams.order").set_value(2)
    at.button(key=f"eval.ngrams.start.{source_id}").click().run()
    assert not at.exception and not at.error
    poll(at, lambda a: any(s.startswith("N-gram fit: completed") for s in fit_status(a)))

    lines = [t for t in texts(at, "markdown") if t.startswith("Validation accuracy")]
    assert len(lines) == 1, texts(at, "markdown")
    shown = re.fullmatch(r"Validation accuracy: LSTM alone ([\d.]+) -> with n-grams ([\d.]+) "
                         r"\(weight ([\d.]+), C [\d.]+\)", lines[0])
    assert shown, lines[0]
    assert float(shown[1]) == pytest.approx(source_valid, abs=0.0005)
    new_runs = [p for p in runs_dir.iterdir() if p.name != source_id]
    assert len(new_runs) == 1
    new_run = new_runs[0]
    metrics = json.loads((new_run / "metrics.json").read_text())
    assert float(shown[2]) == pytest.approx(metrics["valid"]["accuracy"], abs=0.0005)
    assert float(shown[3]) == metrics["ngram_fit"]["tasks"][0]["weight"]
    assert json.loads((new_run / "config.json").read_text())["model"]["ngrams"] == 2
    assert folder_bytes(source) == before  # the run the part was added to is unchanged

    # the new run is an ordinary run: listed, and one click away; it has its n-gram part already
    assert any(o.startswith(f"{new_run.name} · accuracy") for o in at.selectbox(key="eval.run").options)
    at.button(key=f"eval.ngrams.open.{new_run.name}").click().run()
    assert not at.exception and not at.error
    assert at.selectbox(key="eval.run").value == str(new_run)
    assert not section_shown(at)
    assert any(t.startswith(f"N-gram part (order 2) fitted onto run {source_id}: validation accuracy") and
               "(LSTM alone) ->" in t for t in texts(at, "caption"))
    assert at.dataframe[0].value["split"].tolist() == ["Test", "Validation"]


def test_without_the_training_data_the_section_says_to_load_it(runs_dir, elsewhere):
    prepared = prepared_data(keyword_csv(200))
    source = train_in_app_way(prepared, runs_dir, "in-app")
    expected = ("The training data of run in-app is not available: load reviews.csv (text column text, label "
                "column(s) label) on the Data page, mapped the same way.")

    at = evaluate_page(run_dir=source)  # nothing loaded on the Data page
    assert section_shown(at)
    assert texts(at, "error") == [expected]
    assert at.button(key="eval.ngrams.start.in-app").disabled

    at = evaluate_page(prepared=prepared_data(keyword_csv(200), "other.csv"), run_dir=source)
    assert texts(at, "error") == [expected + " The Data page has other.csv loaded."]

    # the same name and columns, other rows: found out when the fit starts, before anything is made
    impostor = prepared_data(keyword_csv(200, seed=9))
    at = evaluate_page(prepared=impostor, run_dir=source)
    assert not at.error
    at.button(key="eval.ngrams.start.in-app").click().run()
    assert not at.exception
    (error,) = texts(at, "error")
    assert error.startswith("The training data of run in-app is not available") and \
        "is not the file the run was trained on" in error and "\n" not in error
    assert not fit_status(at) and sorted(p.name for p in runs_dir.iterdir()) == ["in-app"]


def test_a_run_folder_that_vanished_is_not_fitted(runs_dir, elsewhere):
    prepared = prepared_data(keyword_csv(200))
    kept = train_in_app_way(prepared, runs_dir, "kept")
    doomed = train_in_app_way(prepared, runs_dir, "doomed")
    at = evaluate_page(prepared=prepared, run_dir=doomed)
    assert section_shown(at)
    from core.runs import RunError, run_info
    from ui.ngrams_view import start_ngram_fit
    info = run_info(doomed)

    shutil.rmtree(doomed)
    at.button(key="eval.ngrams.start.doomed").click().run()
    assert not at.exception and not at.error
    assert [o.split(" ")[0] for o in at.selectbox(key="eval.run").options] == ["kept"]  # what is on disk
    assert not fit_status(at) and sorted(p.name for p in runs_dir.iterdir()) == ["kept"]
    with pytest.raises(RunError, match=r"^Run doomed is gone: its folder .* no longer holds a model"):
        start_ngram_fit("someone", info, prepared, 3)
    assert folder_bytes(kept)  # the other run is untouched
