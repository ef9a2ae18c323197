"""The n-gram part fitted on its own (core/wide.py): --ngram-fit separate and `fit-ngrams`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from core.cli import main
from core.models import LSTMClassifier, ModelConfig
from core.pipeline import load_splits, train_run
from core.predict import Predictor
from core.wide import fit_ngrams_run, ngram_matrix
from helpers import tiny_config, write_keyword_csv


def _weak_lstm(train, **overrides):
    """An LSTM too small and too briefly trained to read the keywords well: the n-grams can."""
    settings = dict(epochs=1, hidden_dim=4, embedding_dim=4, lr=0.002, valid_fraction=0.2, test_fraction=0.2, seed=7)
    settings.update(overrides)
    return tiny_config(train, **settings)


@pytest.fixture(scope="module")
def keyword_csv(tmp_path_factory):
    return write_keyword_csv(tmp_path_factory.mktemp("wide") / "reviews.csv", 400, seed=2)


def test_the_features_are_exactly_what_the_model_adds_to_its_logits():
    torch.manual_seed(0)
    model = LSTMClassifier(ModelConfig(vocab_size=40, embedding_dim=4, hidden_dim=4, ngrams=3, ngram_buckets=97,
                                       num_classes=[3])).eval()
    torch.nn.init.normal_(model.ngrams.table.weight)
    with torch.no_grad():
        model.heads[0].weight.zero_()
        model.heads[0].bias.zero_()  # the logits are now the n-gram part alone
    sequences = [[5, 9, 7, 5, 9], [3], [12, 12, 12, 4], list(range(2, 30))]
    X = ngram_matrix(model, sequences)
    expected = X @ model.ngrams.table.weight.detach().double().numpy()
    for seq, row in zip(sequences, expected):
        logits = model(torch.tensor([seq]), torch.tensor([len(seq)]))[0][0][0]
        np.testing.assert_allclose(logits.detach().numpy(), row, rtol=1e-5, atol=1e-5)


def test_bigrams_of_a_large_vocabulary_get_rows_of_their_own():
    """The hash before ngram_hash 2 put the bigrams of a 25,000-word vocabulary into 100,000 rows."""
    rng = np.random.default_rng(0)
    pairs = torch.from_numpy(rng.integers(2, 25_000, size=(20_000, 2)))
    current = LSTMClassifier(ModelConfig(vocab_size=25_000, embedding_dim=2, hidden_dim=2, ngrams=2))
    rows = current.ngrams.rows(pairs)[1][:, 1]  # the bigram ending at the second token
    distinct_pairs = len({tuple(p) for p in pairs.tolist()})
    assert len(set(rows.tolist())) / distinct_pairs > 0.98
    legacy = ModelConfig.from_dict({"vocab_size": 25_000, "embedding_dim": 2, "hidden_dim": 2, "ngrams": 2})
    assert legacy.ngram_hash == 1 and ModelConfig().ngram_hash == 2  # runs saved before the change keep their rows
    assert not torch.equal(LSTMClassifier(legacy).ngrams.rows(pairs)[1], current.ngrams.rows(pairs)[1])


def test_separate_fit_trains_the_lstm_alone_then_adds_a_better_ngram_part(keyword_csv, tmp_path):
    plain = train_run(_weak_lstm(keyword_csv), runs_dir=tmp_path, run_id="plain", log=lambda line: None)
    wide = train_run(_weak_lstm(keyword_csv, ngrams=2, ngram_buckets=5000, ngram_fit="separate"),
                     runs_dir=tmp_path, run_id="wide", log=lambda line: None)
    assert plain.status == wide.status == "completed"
    # the LSTM trained exactly as without n-grams: same weights, same history
    a, b = load_file(str(plain.run_dir / "model.safetensors")), load_file(str(wide.run_dir / "model.safetensors"))
    for name, tensor in a.items():
        if not name.startswith("heads."):  # the fit adds the intercept there and divides by the temperature
            assert torch.equal(tensor, b[name]), name
    assert [r["valid_accuracy"] for r in plain.history] == [r["valid_accuracy"] for r in wide.history]
    fit = wide.metrics["ngram_fit"]["tasks"][0]
    assert fit["weight"] > 0 and fit["valid_fused"] > fit["valid_lstm"] + 0.05
    assert fit["valid_fused"] == pytest.approx(wide.metrics["valid"]["accuracy"])  # the saved model is the fused one
    # calibrated: the temperature leaves the fused model no more overconfident than the fit found best
    assert fit["valid_loss_fused"] == pytest.approx(wide.metrics["valid"]["loss"], abs=1e-4)
    assert fit["valid_loss_fused"] < fit["valid_loss_lstm"]
    assert wide.metrics["test"]["accuracy"] > plain.metrics["test"]["accuracy"] + 0.05
    # a user sees the keywords carry the n-gram part's weight, with the right signs
    predictor = Predictor.load(wide.run_dir)
    table = predictor.model.ngrams.table.weight.detach()[:, 0]
    stoi = predictor.encoder.vocab.stoi
    assert float(table[stoi["great"]]) > 0 > float(table[stoi["awful"]])
    assert predictor.predict(["great"])[0].label == "pos" and predictor.predict(["awful"])[0].label == "neg"


def test_separate_fit_handles_several_classes(tmp_path):
    data = write_keyword_csv(tmp_path / "pets.csv", 450, seed=4, labels=("cat", "dog", "bird"))
    result = train_run(_weak_lstm(data, ngrams=1, ngram_fit="separate", select_metric="macro_f1"), runs_dir=tmp_path,
                       log=lambda line: None)
    assert result.status == "completed"
    assert Predictor.load(result.run_dir).model.ngrams.table.weight.shape[1] == 3
    assert result.metrics["ngram_fit"]["metric"] == "macro_f1"
    fit = result.metrics["ngram_fit"]["tasks"][0]
    assert fit["valid_fused"] == pytest.approx(result.metrics["valid"]["macro_f1"])
    assert fit["valid_fused"] > fit["valid_lstm"] and result.metrics["test"]["accuracy"] >= 0.9


def test_separate_fit_chosen_by_validation_loss_reports_losses(keyword_csv, tmp_path):
    result = train_run(_weak_lstm(keyword_csv, ngrams=2, ngram_buckets=5000, ngram_fit="separate",
                                  select_metric="loss"), runs_dir=tmp_path, log=lambda line: None)
    fit = result.metrics["ngram_fit"]["tasks"][0]
    assert 0 < fit["valid_loss_fused"] <= fit["valid_fused"] < fit["valid_lstm"]  # lower is better
    assert fit["valid_loss_fused"] == pytest.approx(result.metrics["valid"]["loss"], abs=1e-4)


def test_fit_ngrams_adds_the_same_part_to_a_finished_run(keyword_csv, tmp_path, capsys):
    plain = train_run(_weak_lstm(keyword_csv), runs_dir=tmp_path, run_id="plain", log=lambda line: None)
    trained = train_run(_weak_lstm(keyword_csv, ngrams=2, ngram_buckets=5000, ngram_fit="separate"),
                        runs_dir=tmp_path, run_id="trained", log=lambda line: None)
    assert main(["fit-ngrams", "--run", str(plain.run_dir), "--ngrams", "2", "--ngram-buckets", "5000",
                 "--out", str(tmp_path), "--run-id", "fitted"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    fitted = tmp_path / "fitted"
    assert out[-1] == str(fitted) and any("n-gram part fitted" in line for line in out)
    a, b = load_file(str(trained.run_dir / "model.safetensors")), load_file(str(fitted / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    config = json.loads((fitted / "config.json").read_text())
    assert config["run"]["train"]["ngram_fit"] == "separate" and config["model"]["ngrams"] == 2
    assert config["fitted_from"] == str(plain.run_dir)
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx(trained.metrics["test"]["accuracy"])
    # the new run is an ordinary run: evaluate and predict read it
    assert main(["predict", "--run", str(fitted), "--json", "great film"]) == 0
    assert json.loads(capsys.readouterr().out.strip())["label"] == "pos"


def test_fit_ngrams_on_the_splits_training_used_matches_reading_the_files(keyword_csv, tmp_path):
    """The app passes the in-memory splits it trained on; the result is the run the CLI makes from the file."""
    data = tmp_path / "reviews.csv"
    shutil.copyfile(keyword_csv, data)
    cfg = _weak_lstm(data)
    splits = load_splits(cfg.data, cfg.data.seed_for_split(cfg.train.seed), log=lambda line: None)
    plain = train_run(cfg, splits=splits, runs_dir=tmp_path, run_id="plain", log=lambda line: None)
    by_path = fit_ngrams_run(plain.run_dir, 2, 5000, runs_dir=tmp_path, run_id="by-path", log=lambda line: None)
    data.unlink()  # the splits are used as given: nothing is read from the recorded path
    in_memory = fit_ngrams_run(plain.run_dir, 2, 5000, runs_dir=tmp_path, run_id="in-memory", log=lambda line: None,
                               splits=splits)
    a = load_file(str(by_path.run_dir / "model.safetensors"))
    b = load_file(str(in_memory.run_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    assert in_memory.metrics["ngram_fit"] == by_path.metrics["ngram_fit"]
    assert in_memory.metrics["test"]["accuracy"] == pytest.approx(by_path.metrics["test"]["accuracy"])
    fit = in_memory.metrics["ngram_fit"]["tasks"][0]
    assert fit["weight"] > 0 and fit["valid_fused"] > fit["valid_lstm"]


def test_fit_ngrams_explains_what_is_wrong(keyword_csv, tmp_path, capsys):
    wide = train_run(_weak_lstm(keyword_csv, ngrams=1), runs_dir=tmp_path, run_id="joint", log=lambda line: None)
    assert main(["fit-ngrams", "--run", str(wide.run_dir), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already has an n-gram part" in err[0]

    moved = tmp_path / "moved.csv"
    shutil.copyfile(keyword_csv, moved)
    plain = train_run(_weak_lstm(moved), runs_dir=tmp_path, run_id="plain", log=lambda line: None)
    moved.unlink()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["fit-ngrams", "--run", str(plain.run_dir), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "moved.csv" in err[0] and "where it was trained" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no half-made run left behind

    assert main(["fit-ngrams", "--run", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_ngram_fit_is_validated(keyword_csv, tmp_path, capsys):
    for extra, expected in ((["--ngram-fit", "separate"], "--ngrams 1, 2 or 3"),
                            (["--ngrams", "2", "--ngram-fit", "sideways"], "'ngram_fit' parameter must be one of")):
        assert main(["train", "--train", str(keyword_csv), "--out", str(tmp_path), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
