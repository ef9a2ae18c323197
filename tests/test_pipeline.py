"""From a data file to a saved run (core/pipeline.py)."""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.data import DataError
from core.pipeline import DataConfig, RunConfig, label_matrix, label_sets_for, load_splits, train_run
from core.runs import read_jsonl, read_status
from helpers import tiny_config, write_keyword_csv

RUN_FILES = ["best.safetensors", "checkpoint.pt", "config.json", "history.jsonl", "labels.json",
             "metrics.json", "model.safetensors", "status.json", "test.csv", "vocab.json"]
# a little wider than the default tiny model, and seed 3 (the saved config is checked for it)
run_config = partial(tiny_config, embedding_dim=16, hidden_dim=16, dropout=0.1, batch_size=32, seed=3, patience=10)
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    cfg = run_config(write_keyword_csv(folder / "train.csv", 300))
    lines = []
    result = train_run(cfg, runs_dir=folder / "runs", run_id="tiny", log=lines.append)
    return result, lines


def test_train_run_writes_every_file_of_the_run_layout(finished_run):
    result, lines = finished_run
    assert result.status == "completed" and result.run_dir.name == "tiny"
    assert sorted(p.name for p in result.run_dir.iterdir()) == RUN_FILES
    assert read_status(result.run_dir)["status"] == "completed"
    history = read_jsonl(result.run_dir / "history.jsonl")
    assert history == result.history and [r["epoch"] for r in history] == [1, 2, 3, 4]
    config = json.loads((result.run_dir / "config.json").read_text())
    assert RunConfig.from_dict(config["run"]).train.seed == 3
    assert config["model"]["vocab_size"] == len(json.loads((result.run_dir / "vocab.json").read_text())["itos"])
    labels = json.loads((result.run_dir / "labels.json").read_text())
    assert labels == {"columns": ["label"], "labels": [["neg", "pos"]]}
    assert any(line.startswith("vocabulary:") for line in lines) and lines[-1] == "status: completed"
    assert any(line.startswith("test: accuracy=") for line in lines)


def test_the_published_model_is_the_best_epoch(finished_run):
    result, _ = finished_run
    published, best = load_file(result.run_dir / "model.safetensors"), load_file(result.run_dir / "best.safetensors")
    assert published.keys() == best.keys()
    assert all(torch.equal(published[k], best[k]) for k in published)
    assert result.metrics["best_epoch"] == read_status(result.run_dir)["best_epoch"]
    checkpoint = torch.load(result.run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["progress"]["epoch"] == 4


def test_metrics_json_matches_the_result(finished_run):
    result, _ = finished_run
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["epochs_run"] == 4 and metrics["select_metric"] == "accuracy"
    for split in ("valid", "test"):
        primary = metrics[split]["primary"]
        assert primary["n"] == 30 and primary["labels"] == ["neg", "pos"]
        assert 0.0 <= primary["accuracy"] <= 1.0 and "confusion_matrix" in primary
    assert metrics["test"]["primary"]["accuracy"] >= 0.8  # the keyword is easy to learn


def test_test_split_is_saved_for_later_inspection(finished_run):
    result, _ = finished_run
    rows = list(csv.DictReader(open(result.run_dir / "test.csv", encoding="utf-8")))
    assert len(rows) == 30 and set(rows[0]) == {"text", "label"}


def test_unknown_labels_in_valid_are_dropped_with_a_note(tmp_path):
    train = write_keyword_csv(tmp_path / "train.csv", 200, seed=1)
    valid = write_keyword_csv(tmp_path / "valid.csv", 40, seed=2, labels=("neg", "pos", "mixed"))
    n_mixed = sum(1 for r in csv.DictReader(open(valid)) if r["label"] == "mixed")
    assert n_mixed > 0
    cfg = run_config(train, valid=str(valid))
    cfg.train.epochs = 1
    lines = []
    result = train_run(cfg, runs_dir=tmp_path / "runs", log=lines.append)
    assert result.status == "completed"
    notes = [line for line in lines if line.startswith("note:")]
    assert any("'mixed'" in line for line in notes), notes
    assert any(f"{n_mixed} rows dropped" in line for line in notes), notes
    assert result.metrics["valid"]["primary"]["n"] == 40 - n_mixed
    assert result.metrics["valid"]["primary"]["labels"] == ["neg", "pos"]


def test_multi_task_gives_metrics_and_predictions_per_task(tmp_path):
    from core.predict import Predictor

    cfg = run_config(write_keyword_csv(tmp_path / "train.csv", 300, topics=True), label_col="label,topic")
    cfg.train.epochs = 6
    result = train_run(cfg, runs_dir=tmp_path / "runs", log=lambda line: None)
    assert result.status == "completed"
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    tasks = metrics["test"]["tasks"]
    assert sorted(tasks) == ["0", "1"]
    assert tasks["0"]["labels"] == ["neg", "pos"] and tasks["1"]["labels"] == ["film", "food", "tech"]
    assert len(tasks["1"]["confusion_matrix"]) == 3
    assert {"valid_accuracy_task0", "valid_accuracy_task1"} <= set(result.history[-1])
    predictor = Predictor.load(result.run_dir)
    assert predictor.label_columns == ["label", "topic"]
    [prediction] = predictor.predict(["great pizza really"])
    assert set(prediction.tasks) == {"label", "topic"}
    assert set(prediction.tasks["topic"]["probs"]) == {"film", "food", "tech"}
    assert prediction.label == prediction.tasks["label"]["label"]
    assert prediction.to_dict()["tasks"]["topic"]["label"] in {"film", "food", "tech"}
    probs = predictor.probabilities(["great pizza really", "awful laptop"])
    assert [p.shape for p in probs] == [(2, 2), (2, 3)]


def test_load_splits_carves_valid_and_test(tmp_path):
    path = write_keyword_csv(tmp_path / "t.csv", 100)
    splits = load_splits(DataConfig(train=str(path)), seed=1, log=lambda line: None)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (80, 10, 10)
    rows = sorted((r["text"], r["label"]) for r in csv.DictReader(open(path, encoding="utf-8")))
    parts = [(text, label) for part in (splits.train, splits.valid, splits.test)
             for text, label in zip(part.texts, part.primary_labels)]
    assert sorted(parts) == rows  # every row in exactly one split
    with pytest.raises(DataError, match="No training data"):
        load_splits(DataConfig(), log=lambda line: None)


def test_label_matrix_marks_unknown_labels():
    from core.data import TextTable

    table = TextTable(["a", "b", "c"], {"label": ["pos", "meh", "neg"]})
    y, keep = label_matrix(table, [["neg", "pos"]])
    assert y[:, 0].tolist()[::2] == [1, 0] and keep.tolist() == [True, False, True]
    assert label_sets_for(table) == [["meh", "neg", "pos"]]


def test_run_config_json_round_trip_and_unknown_keys(tmp_path):
    cfg = run_config(Path("x.csv"))
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert RunConfig.load(path) == cfg
    with pytest.raises(ValueError, match="Unknown key\\(s\\) \\['hiden_dim'\\] in config section 'model'"):
        RunConfig.from_dict({"model": {"hiden_dim": 3}})
    with pytest.raises(ValueError, match="Unknown config section"):
        RunConfig.from_dict({"optimiser": {}})
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        RunConfig.load(path)


def test_extend_vocab_lets_unseen_words_keep_their_pretrained_vectors(tmp_path):
    from core.predict import Predictor
    data = write_keyword_csv(tmp_path / "train.csv", 200)
    # a vectors file whose most frequent words include two the training data never uses
    vectors = tmp_path / "vectors.txt"
    lines = [f"{w} " + " ".join(f"{(i * 7 + j) % 5 - 2}.5" for j in range(8))
             for i, w in enumerate(["the", "superb", "great", "dire", "awful", "film", "rare"])]
    vectors.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = tiny_config(data, embedding_dim=8, extend_vocab=6)
    cfg.pretrained_vectors = str(vectors)
    run = train_run(cfg, runs_dir=tmp_path / "runs", run_id="ext", log=lambda line: None)
    assert run.status == "completed"
    predictor = Predictor.load(run.run_dir)
    vocab = predictor.encoder.vocab
    assert "superb" in vocab and "dire" in vocab and "rare" not in vocab  # the first 6 words only
    assert vocab.itos.index("superb") > vocab.itos.index("awful")  # after the training words
    weights = load_file(str(run.run_dir / "model.safetensors"))["embedding.weight"]
    # never seen in training: the row is still exactly the pretrained vector
    assert weights[vocab.stoi["superb"]].tolist() == [float(x) for x in lines[1].split()[1:]]
    assert predictor.encoder.encode("a superb film").ids != predictor.encoder.encode("a unknownword film").ids

    cfg.pretrained_vectors = ""
    with pytest.raises(ValueError, match="'extend_vocab' parameter"):
        train_run(cfg, runs_dir=tmp_path / "runs", run_id="no-vectors", log=lambda line: None)


# ---- starting from a finished run (--init-from) -------------------------------------------------

def _source_run(tmp_path, labels=("neg", "pos")):
    data = write_keyword_csv(tmp_path / "source.csv", 300, seed=1, labels=labels)
    result = train_run(tiny_config(data, epochs=6, seed=2), runs_dir=tmp_path / "runs", run_id="source",
                       log=lambda line: None)
    assert result.status == "completed"
    return result.run_dir


def test_init_from_starts_with_the_runs_lstm_and_the_vectors_of_shared_words(tmp_path):
    from core.pipeline import build_initial_model, fit_encoder
    from core.predict import Predictor

    source = Predictor.load(_source_run(tmp_path))
    # new labels and a vocabulary of its own, partly shared with the source's
    data = write_keyword_csv(tmp_path / "target.csv", 200, seed=3, filler=["the", "movie", "brand", "new", "words"],
                             labels=("negative", "positive"), keywords={"negative": "awful", "positive": "great"})
    cfg = tiny_config(data)
    cfg.init_from = str(source.metadata["run_dir"])
    splits = load_splits(cfg.data, 5, log=lambda line: None)
    encoder = fit_encoder(cfg, splits.train.texts)
    lines = []
    model, _ = build_initial_model(cfg, encoder, label_sets_for(splits.train), lines.append)
    theirs, mine = source.model.state_dict(), model.state_dict()
    for name in theirs:
        if name.startswith("lstms.") or name.startswith("attention."):
            assert torch.equal(theirs[name], mine[name]), name
    for word in ("great", "awful", "the"):
        assert torch.equal(mine["embedding.weight"][encoder.vocab.stoi[word]],
                           theirs["embedding.weight"][source.encoder.vocab.stoi[word]])
    assert not torch.equal(mine["heads.0.weight"], theirs["heads.0.weight"])  # labels differ: a new head
    assert any("new heads" in line and "initialised from" in line for line in lines)


def test_init_from_with_the_same_labels_starts_from_a_model_that_already_works(tmp_path):
    from core.predict import Predictor

    source_dir = _source_run(tmp_path)
    data = write_keyword_csv(tmp_path / "more.csv", 200, seed=9)
    cfg = tiny_config(data, epochs=1, lr=1e-6)
    cfg.init_from = str(source_dir)
    result = train_run(cfg, runs_dir=tmp_path / "runs", log=lambda line: None)
    # one epoch at a learning rate too small to learn anything: the accuracy is the source model's
    assert result.metrics["valid"]["accuracy"] >= 0.95
    assert Predictor.load(result.run_dir).predict(["great"])[0].label == "pos"
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["run"]["init_from"] == str(source_dir)


def test_init_from_explains_what_does_not_fit(tmp_path, capsys):
    from core.cli import main

    source_dir = _source_run(tmp_path)
    data = write_keyword_csv(tmp_path / "more.csv", 100, seed=9)
    assert main(["train", "--train", str(data), "--init-from", str(source_dir), "--hidden-dim", "32",
                 "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hidden_dim" in err[0] and "--hidden-dim 8" in err[0], err
    assert main(["train", "--train", str(data), "--init-from", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run directory not found" in err[0]
