"""Loading a saved run and classifying text with it (core/predict.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from core.data import TextTable, load_table
from core.metrics import classification_report
from core.pipeline import train_run
from core.predict import Predictor
from core.runs import RunError
from helpers import tiny_config, write_keyword_csv

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("predict")
    cfg = tiny_config(write_keyword_csv(folder / "train.csv", 300), tokenizer="en", max_length=6,
                      embedding_dim=16, hidden_dim=16, pooling="attention", batch_size=32)
    result = train_run(cfg, runs_dir=folder / "runs", log=lambda line: None)
    assert result.status == "completed"
    return result.run_dir


def test_loaded_predictor_reproduces_the_saved_test_metrics(run_dir):
    predictor = Predictor.load(run_dir)
    assert predictor.labels == [["neg", "pos"]] and predictor.classes_ == ["neg", "pos"]
    table, _ = load_table(run_dir / "test.csv", "text", "label", min_per_class=1)
    [probs] = predictor.probabilities(table.texts)
    y = [predictor.labels[0].index(label) for label in table.primary_labels]
    report = classification_report(y, probs, predictor.labels[0])
    saved = json.loads((run_dir / "metrics.json").read_text())["test"]["primary"]
    assert report["accuracy"] == pytest.approx(saved["accuracy"])
    assert report["auc"] == pytest.approx(saved["auc"])
    assert report["confusion_matrix"] == saved["confusion_matrix"]
    evaluated = predictor.evaluate(table)
    assert evaluated["primary"]["accuracy"] == pytest.approx(saved["accuracy"])
    assert evaluated["loss"] == pytest.approx(saved["loss"])


def test_two_loads_predict_the_same_probabilities(run_dir):
    texts = ["a great movie", "awful plot", "", "the the the"]
    a = Predictor.load(run_dir).probabilities(texts)[0]
    b = Predictor.load(run_dir).probabilities(texts)[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a.sum(1), 1.0, rtol=1e-6)


def test_from_parts_equals_load(run_dir):
    read = lambda name: json.loads((run_dir / name).read_text())  # noqa: E731
    built = Predictor.from_parts(read("config.json"), read("vocab.json"), read("labels.json"),
                                 load_file(run_dir / "model.safetensors"))
    texts = ["great great", "awful film really"]
    np.testing.assert_array_equal(built.probabilities(texts)[0], Predictor.load(run_dir).probabilities(texts)[0])


def test_predictions_name_the_label_and_flag_truncated_and_empty_texts(run_dir):
    predictor = Predictor.load(run_dir)
    great, empty, long = predictor.predict(["a great film", "   ", "the a movie film plot actor scene story great"])
    assert great.label == "pos" and great.probs["pos"] > 0.5
    assert set(great.probs) == {"neg", "pos"} and sum(great.probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert great.to_dict() == {"text": "a great film", "label": "pos", "probs": great.probs}
    assert empty.empty and "no tokens" in empty.to_dict()["note"]
    assert long.truncated == 3  # max_length 6 of 9 tokens


def test_evaluate_skips_unknown_labels(run_dir):
    table = TextTable(["a great film", "awful", "so so"], {"label": ["pos", "neg", "mixed"]})
    result = Predictor.load(run_dir).evaluate(table)
    assert result["skipped_unknown_labels"] == 1 and result["primary"]["n"] == 2
    assert result["index"].tolist() == [0, 1]


def test_load_errors_are_clear(run_dir, tmp_path):
    with pytest.raises(RunError, match="not found.*prints the run directory"):
        Predictor.load(tmp_path / "missing")
    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(RunError, match="has no model.safetensors: it is not a finished run. "
                                       "The run's status is 'completed'"):
        Predictor.load(partial)
    assert Predictor.load(partial, weights="best.safetensors").predict(["great"])[0].label in {"neg", "pos"}
    vocab = json.loads((run_dir / "vocab.json").read_text())
    vocab["itos"] = vocab["itos"][:-1]
    (partial / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(RunError, match="vocab.json has .* tokens but the model expects"):
        Predictor.load(partial, weights="best.safetensors")


def test_the_shipped_demo_model_reads_reviews_and_explains_them():
    """artifacts/demo: the IMDB LSTM with its fitted n-gram part, as a user gets it after install."""
    from core.explain import Explainer

    demo = Path(__file__).resolve().parents[1] / "artifacts" / "demo"
    predictor = Predictor.load(demo)
    assert predictor.model.ngrams is not None and predictor.model.config.ngram_hash == 2
    reviews = ["One of the best films I have seen this year, moving and beautifully acted.",
               "A dull, lifeless waste of time. The plot makes no sense and the acting is wooden.",
               "I expected to hate it, but it was wonderful from start to finish."]
    assert [p.label for p in predictor.predict(reviews)] == ["pos", "neg", "pos"]
    explanation = Explainer(predictor).explain(reviews[1], "ig", n_steps=32)
    assert explanation.diagnostics["completeness_error"] <= 0.05
    top = {explanation.tokens[i] for i in explanation.top(3)}
    assert top & {"dull", "lifeless", "waste", "wooden"}, top
