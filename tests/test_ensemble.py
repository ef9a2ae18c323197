"""Ensembles of runs (core/ensemble.py, EnsembleClassifier in core/models.py): combining, the
averaged probabilities, the CLI, explanations and every export format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.ensemble import combine_runs, train_ensemble
from core.predict import Predictor
from core.runs import RunError, list_runs
from helpers import KEYWORDS, tiny_config, write_keyword_csv

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

# a word only the third member has seen: the first two read it as <unk>
EXTRA = {**KEYWORDS, "pos": ["great", "splendid"]}
TEXTS = ["great movie", "awful plot", "the splendid film", "a scene", "really quite awful acting great"]


def _train(folder: Path, data: Path, run_id: str, hidden: int, seed: int = 13, split_seed: int = -1):
    from core.pipeline import train_run
    cfg = tiny_config(data, epochs=10, hidden_dim=hidden, seed=seed, split_seed=split_seed)
    result = train_run(cfg, runs_dir=folder, run_id=run_id, log=lambda line: None)
    assert result.status == "completed", result.message
    return result.run_dir


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Three finished runs: two on one file and one split (seeds 13 and 14), the third on a file with an
    extra positive word."""
    folder = tmp_path_factory.mktemp("ensemble")
    plain = write_keyword_csv(folder / "plain.csv", 300, seed=1)
    extra = write_keyword_csv(folder / "extra.csv", 300, seed=2, keywords=EXTRA)
    runs = folder / "runs"
    dirs = [_train(runs, plain, "a", 16), _train(runs, plain, "b", 8, seed=14, split_seed=13), _train(runs, extra, "c", 12)]
    return folder, runs, dirs


def test_ensemble_probabilities_are_the_mean_of_its_members(members):
    folder, runs, dirs = members
    result = combine_runs(dirs, runs_dir=runs, run_id="abc", test=folder / "plain.csv", log=lambda line: None)
    ensemble = Predictor.load(result.run_dir)
    singles = [Predictor.load(d) for d in dirs]
    assert "splendid" in ensemble.encoder.vocab and "splendid" not in singles[0].encoder.vocab
    expected = np.mean([p.probabilities(TEXTS)[0] for p in singles], axis=0)
    np.testing.assert_allclose(ensemble.probabilities(TEXTS)[0], expected, atol=1e-5)
    predicted = [p.label for p in ensemble.predict(TEXTS)]
    assert predicted == [ensemble.classes_[i] for i in expected.argmax(1)]


def test_ensemble_run_records_members_and_test_metrics(members):
    folder, runs, dirs = members
    result = combine_runs(dirs[:2], runs_dir=runs, run_id="ab", log=lambda line: None)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    # a and b were carved from the same file with the same seed: their test.csv is shared and reused
    assert (result.run_dir / "test.csv").read_bytes() == (dirs[0] / "test.csv").read_bytes()
    assert metrics["test"]["primary"]["n"] == 30
    assert [m["run_dir"] for m in metrics["ensemble"]["members"]] == [str(d) for d in dirs[:2]]
    assert all(0.5 < m["test_accuracy"] <= 1.0 for m in metrics["ensemble"]["members"])
    listed = {r.run_id: r for r in list_runs(runs)}
    assert listed["ab"].status == "completed" and listed["ab"].has_model


def test_members_with_different_test_splits_need_an_explicit_test_file(members):
    folder, runs, dirs = members
    logged = []
    result = combine_runs([dirs[0], dirs[2]], runs_dir=runs, run_id="ac", log=logged.append)
    assert result.metrics["test"] is None and any("--test PATH" in line for line in logged)
    assert Predictor.load(result.run_dir).predict(["great"])[0].label == "pos"


@pytest.mark.parametrize("problem, message", [
    ("one run", "at least 2 runs"), ("twice", "listed twice"), ("labels", "share their labels"),
    ("tokenizer", "reads text differently"), ("nested", "already an ensemble")])
def test_incompatible_runs_are_refused_with_a_reason(members, tmp_path, problem, message):
    from core.pipeline import train_run
    folder, runs, dirs = members
    if problem == "one run":
        chosen = dirs[:1]
    elif problem == "twice":
        chosen = [dirs[0], dirs[0]]
    elif problem == "labels":
        animals = write_keyword_csv(tmp_path / "animals.csv", 120, labels=("cat", "dog"))
        chosen = [dirs[0], _train(tmp_path, animals, "animals", 8)]
    elif problem == "tokenizer":
        cfg = tiny_config(folder / "plain.csv", hidden_dim=8)
        cfg.text.max_length = 5
        other = train_run(cfg, runs_dir=tmp_path, run_id="short", log=lambda line: None).run_dir
        chosen = [dirs[0], other]
    else:
        nested = combine_runs(dirs[:2], runs_dir=tmp_path, run_id="inner", log=lambda line: None).run_dir
        chosen = [nested, dirs[2]]
    with pytest.raises(RunError, match=message):
        combine_runs(chosen, runs_dir=tmp_path, run_id="refused", log=lambda line: None)
    assert not (tmp_path / "refused").exists()


def test_train_ensemble_trains_seeds_on_one_split(tmp_path):
    data = write_keyword_csv(tmp_path / "data.csv", 300, seed=3)
    cfg = tiny_config(data, epochs=10, hidden_dim=8, seed=21, ensemble=2)
    result = train_ensemble(cfg, runs_dir=tmp_path / "runs", run_id="pair", log=lambda line: None)
    m1, m2 = tmp_path / "runs" / "pair-m1", tmp_path / "runs" / "pair-m2"
    seeds = [json.loads((m / "config.json").read_text())["run"]["train"]["seed"] for m in (m1, m2)]
    assert seeds == [21, 22]
    assert json.loads((tmp_path / "runs" / "pair" / "config.json").read_text())["run"]["train"]["ensemble"] == 2
    assert (m1 / "test.csv").read_bytes() == (m2 / "test.csv").read_bytes()
    assert (m1 / "vocab.json").read_bytes() == (m2 / "vocab.json").read_bytes()
    assert result.metrics["test"]["primary"]["accuracy"] > 0.8
    # the validation rows the members selected their epochs on are evaluated too (carved, 10%)
    assert result.metrics["valid"]["primary"]["n"] == 30
    cfg.train.ensemble = 1
    with pytest.raises(ValueError, match="'ensemble' parameter"):
        train_ensemble(cfg, runs_dir=tmp_path / "runs")


def test_split_seed_keeps_the_split_when_the_seed_changes(tmp_path):
    from core.pipeline import load_splits
    data = write_keyword_csv(tmp_path / "data.csv", 200, seed=4)
    cfg = tiny_config(data)
    texts = lambda seed: load_splits(cfg.data, cfg.data.seed_for_split(seed), log=lambda l: None).test.texts  # noqa
    assert texts(1) != texts(2)  # by default the training seed also draws the split
    cfg.data.split_seed = 7
    assert texts(1) == texts(2)


def test_explanations_of_an_ensemble(members):
    from core.explain import Explainer
    folder, runs, dirs = members
    run = combine_runs(dirs[:2], runs_dir=runs, run_id="explain", log=lambda line: None).run_dir
    explainer = Explainer(Predictor.load(run))
    ig = explainer.explain("the movie was great", "ig", n_steps=64)
    assert ig.diagnostics["completeness_error"] < 0.05
    assert ig.tokens[int(np.argmax(ig.scores))] == "great"
    attention = explainer.explain("the movie was great", "attention")
    assert abs(sum(attention.scores) - 1) < 1e-5 and min(attention.scores) >= 0


def test_every_export_format_reproduces_the_ensemble(members, tmp_path):
    from core.export import OnnxPredictor, export_run, load_bundle, load_int8
    folder, runs, dirs = members
    run = combine_runs(dirs, runs_dir=runs, run_id="export", test=folder / "plain.csv", log=lambda line: None).run_dir
    result = export_run(run, ["bundle", "int8", "onnx", "onnx-int8"], tmp_path, log=lambda line: None)
    fp32 = Predictor.load(run).probabilities(TEXTS)[0]
    np.testing.assert_allclose(load_bundle(result.paths["bundle"]).probabilities(TEXTS)[0], fp32, atol=1e-6)
    np.testing.assert_allclose(OnnxPredictor.load(result.paths["onnx"]).probabilities(TEXTS)[0], fp32, atol=1e-4)
    for quantised in (load_int8(result.paths["int8"]), OnnxPredictor.load(result.paths["onnx-int8"])):
        probs = quantised.probabilities(TEXTS)[0]
        assert np.abs(probs - fp32).max() < 0.05
    assert result.parity["formats"]["onnx"]["agreement"] == 1.0


def cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "core", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_ensemble_and_train_ensemble(members, tmp_path):
    folder, runs, dirs = members
    done = cli("ensemble", "--runs", dirs[0], dirs[1], "--out", tmp_path, "--run-id", "cli-ab")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(tmp_path / "cli-ab")
    assert "members' test accuracy:" in done.stdout
    out = cli("predict", "--run", tmp_path / "cli-ab", "--json", "a great film")
    assert json.loads(out.stdout)["label"] == "pos"

    trained = cli("train", "--train", folder / "plain.csv", "--tokenizer", "whitespace", "--embedding-dim", 8,
                  "--hidden-dim", 8, "--epochs", 3, "--warmup-steps", 0, "--lr", 0.01, "--ensemble", 2,
                  "--out", tmp_path, "--run-id", "cli-train")
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.strip().splitlines()[-1] == str(tmp_path / "cli-train")
    assert (tmp_path / "cli-train-m1").is_dir() and (tmp_path / "cli-train-m2").is_dir()


@pytest.mark.parametrize("args, message", [
    (["ensemble", "--runs", "no/such/run", "no/such/other"], "run directory not found"),
    (["train", "--train", "{data}", "--ensemble", "0"], "'ensemble' parameter must be an int >= 1"),
    (["train", "--train", "{data}", "--ensemble", "2", "--stream"], "cannot be combined"),
])
def test_cli_ensemble_mistakes_exit_2_with_one_line(members, args, message):
    folder, runs, dirs = members
    done = cli(*[a.replace("{data}", str(folder / "plain.csv")) for a in args])
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_stopping_an_ensemble_keeps_the_members_and_makes_no_ensemble(tmp_path):
    import threading
    from core.pipeline import train_run
    data = write_keyword_csv(tmp_path / "data.csv", 200, seed=5)
    stop = threading.Event()
    stop.set()  # the Stop button pressed before the first batch
    result = train_run(tiny_config(data, ensemble=3), runs_dir=tmp_path, run_id="stopped", stop=stop,
                       log=lambda line: None)
    assert result.status == "cancelled" and "0 of 3" in result.message
    assert not (tmp_path / "stopped").exists() and (tmp_path / "stopped-m1").is_dir()
    assert not (tmp_path / "stopped-m2").exists()  # nothing more is trained after a stop


def test_ngram_members_ensemble_when_they_share_a_vocabulary_and_are_refused_otherwise(tmp_path):
    from core.export import OnnxPredictor, export_onnx
    from core.explain import Explainer
    data = write_keyword_csv(tmp_path / "data.csv", 300, seed=5)
    cfg = tiny_config(data, epochs=8, hidden_dim=8, seed=31, ensemble=2, ngrams=2, ngram_buckets=3000)
    result = train_ensemble(cfg, runs_dir=tmp_path / "runs", run_id="wide", log=lambda line: None)
    assert result.metrics["test"]["primary"]["accuracy"] > 0.8
    ensemble = Predictor.load(result.run_dir)
    members = [Predictor.load(tmp_path / "runs" / f"wide-m{i}") for i in (1, 2)]
    got = [p.probs["pos"] for p in ensemble.predict(TEXTS)]
    expected = np.mean([[p.probs["pos"] for p in m.predict(TEXTS)] for m in members], axis=0)
    assert got == pytest.approx(expected.tolist(), abs=1e-5)
    onnx = OnnxPredictor.load(export_onnx(ensemble, tmp_path / "wide.onnx"))
    assert [p.probs["pos"] for p in onnx.predict(TEXTS)] == pytest.approx(got, abs=1e-4)
    e = Explainer(ensemble).explain("great movie with a scene", "ig", n_steps=50)
    assert e.diagnostics["completeness_error"] <= 0.05

    other = write_keyword_csv(tmp_path / "other.csv", 300, seed=6, keywords=EXTRA)
    stranger = train_ensemble(tiny_config(other, epochs=2, hidden_dim=8, ensemble=2), runs_dir=tmp_path / "runs",
                              run_id="other", log=lambda line: None)
    with pytest.raises(RunError, match="n-gram model"):
        combine_runs([tmp_path / "runs" / "wide-m1", stranger.run_dir.parent / "other-m1"],
                     runs_dir=tmp_path / "runs", run_id="mixed", log=lambda line: None)
