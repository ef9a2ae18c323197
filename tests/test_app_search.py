"""AppTest tests of the Train page's hyperparameter search: start, watch, stop, bad input, owners."""

from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO, keyword_csv, one_torch_thread, rerun_until

TRAIN = str(REPO / "pages" / "2_Train.py")
EVALUATE = str(REPO / "pages" / "3_Evaluate.py")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():
        yield


def texts(at: AppTest, *kinds: str) -> list[str]:
    """Rendered text of the given element kinds, markdown escapes removed."""
    return [re.sub(r"\\(.)", r"\1", str(e.value)) for kind in kinds for e in getattr(at, kind)]


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


def tiny_settings(at: AppTest, epochs: int = 1) -> None:
    at.number_input(key="hp.train.epochs").set_value(epochs)
    at.number_input(key="hp.model.hidden_dim").set_value(8)
    at.number_input(key="hp.model.embedding_dim").set_value(8)
    at.number_input(key="hp.train.warmup_steps").set_value(0)
    at.selectbox(key="hp.text.tokenizer").set_value("whitespace")


def search_job(at: AppTest):
    from ui.resources import search_registry
    return search_registry().get(at.session_state["current_search_id"], at.session_state["owner_id"])


def results_table(at: AppTest):
    return next(d.value for d in at.dataframe if "valid accuracy" in d.value.columns)


def poll(at: AppTest, until, limit: int = 240, pause: float = 0.5) -> AppTest:
    return rerun_until(at, until, lambda a: [str(e.value) for e in (*a.info, *a.success, *a.error)], limit, pause)


def test_grid_search_trains_every_trial_and_names_the_best_run(runs_dir):
    at = train_page(prepared_data(160))
    assert not at.exception
    tiny_settings(at)
    assert at.number_input(key="search.n").disabled  # a grid has as many trials as combinations
    at.text_input(key="search.spec").set_value("lr=0.01,0.03")
    at.button(key="search.start").click().run()
    assert not at.exception and not at.error
    assert at.button(key="train.start").disabled  # one job per browser session at a time
    poll(at, lambda a: search_job(a).snapshot().status == "completed")
    poll(at, lambda a: not [b for b in a.button if b.key == "search.stop"], limit=5)

    table = results_table(at)
    assert len(table) == 2
    assert sorted(table["lr"]) == [0.01, 0.03]
    assert list(table["status"]) == ["completed", "completed"]
    assert (table["best"] != "").sum() == 1
    assert table["valid accuracy"].between(0, 1).all() and table["test accuracy"].between(0, 1).all()
    best = search_job(at).snapshot().best
    best_line = next(t for t in texts(at, "success") if t.startswith("Best run:"))
    assert best.run_id in best_line and "Evaluate" in best_line
    assert table.loc[table["best"] != "", "run"].item() == best.run_id

    # every trial is a normal run trained with the form's settings and the trial's lr
    import json
    for trial in search_job(at).snapshot().trials:
        config = json.loads((runs_dir / trial.run_id / "config.json").read_text())["run"]
        assert config["train"]["epochs"] == 1 and config["model"]["hidden_dim"] == 8
        assert config["train"]["lr"] == trial.params["train.lr"]
    assert (runs_dir.parent / "searches" / search_job(at).search_id / "results.csv").is_file()
    assert not at.button(key="train.start").disabled and not at.button(key="search.start").disabled

    # the best run can be chosen on the Evaluate page
    evaluate = AppTest.from_file(EVALUATE, default_timeout=60)
    evaluate.query_params["owner"] = at.session_state["owner_id"]
    evaluate.run()
    assert not evaluate.exception
    assert any(best.run_id in option for option in evaluate.selectbox(key="eval.run").options)


@pytest.mark.parametrize("mode, spec, message", [
    ("Grid", "lr=fast", "Search parameter 'lr': 'fast' is not a valid float."),
    ("Grid", "learning_speed=1,2", "Unknown search parameter 'learning_speed'"),
    ("Grid", "lr=1e-4:1e-2", "ranges (low:high) need --random"),
    ("Random", "dropout=0.5:0.2", "need low < high"),
    ("Grid", "", "The search space is empty"),
    ("Grid", "hidden_dim=0,8", "hidden_dim"),
])
def test_an_invalid_search_space_shows_one_clear_error_and_starts_nothing(runs_dir, mode, spec, message):
    at = train_page(prepared_data(60))
    at.radio(key="search.mode").set_value(mode)
    at.text_input(key="search.spec").set_value(spec)
    at.button(key="search.start").click().run()
    assert not at.exception
    errors = texts(at, "error")
    assert len(errors) == 1 and message in errors[0] and "\n" not in errors[0]
    assert "current_search_id" not in at.session_state
    assert not list(runs_dir.iterdir())


def test_stop_ends_the_search_and_searches_belong_to_their_browser_session(runs_dir):
    at = train_page(prepared_data(1500))
    at.number_input(key="hp.train.epochs").set_value(200)
    at.number_input(key="hp.train.batch_size").set_value(16)
    at.selectbox(key="hp.text.tokenizer").set_value("whitespace")
    at.radio(key="search.mode").set_value("Random").run()
    assert not at.number_input(key="search.n").disabled  # the number of trials is for random search only
    at.text_input(key="search.spec").set_value("lr=1e-3:1e-2:log")
    at.number_input(key="search.n").set_value(3)
    at.button(key="search.start").click().run()
    assert not at.exception and not at.error
    job = search_job(at)
    try:
        assert len(job.snapshot().trials) == 3
        poll(at, lambda a: job.snapshot().epoch > 0 or job.snapshot().current > 0)
        # another browser sees no search; the same browser (same URL) after a reload does
        stranger = train_page(prepared_data(60))
        assert not [d for d in stranger.dataframe if "valid accuracy" in d.value.columns]
        reloaded = train_page(None, owner=at.session_state["owner_id"])
        assert len(results_table(reloaded)) == 3

        at.button(key="search.stop").click().run()
        poll(at, lambda a: job.snapshot().done, limit=120)
    finally:
        job.stop()
        job.join(60)
    snap = job.snapshot()
    assert snap.status == "cancelled"
    assert [t.status for t in snap.trials][1:] == ["skipped", "skipped"]
    at.run()
    assert not at.exception
    assert len(results_table(at)) == 3 and not [b for b in at.button if b.key == "search.stop"]
