"""Hyperparameter search: the space parser, a 2-trial grid from the CLI, the background SearchJob."""

from __future__ import annotations

import csv
import json
import random

import pytest

from core.cli import main
from core.data import TextTable
from core.models import ModelConfig
from core.pipeline import DataConfig, RunConfig, Splits
from core.predict import Predictor
from core.search import (SearchJob, SearchRegistry, apply_params, grid_trials, parse_space, random_trials,
                         run_search)
from core.text import TextConfig
from core.training import TrainConfig


def write_data(path, n: int = 120, seed: int = 0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        words = rng.sample(["the", "film", "was", "a", "story", "with", "actors"], 4)
        words.insert(rng.randrange(5), rng.choice(["great", "superb"] if positive else ["awful", "dull"]))
        rows.append({"text": " ".join(words), "label": "pos" if positive else "neg"})
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_a_two_trial_grid_writes_a_table_and_a_best_run_that_loads(tmp_path, capsys):
    data = write_data(tmp_path / "reviews.csv")
    code = main(["search", "--train", str(data), "--grid", "hidden_dim=4,12", "--epochs", "2", "--lr", "0.02",
                 "--warmup-steps", "0", "--embedding-dim", "8", "--tokenizer", "whitespace",
                 "--out", str(tmp_path / "runs"), "--search-dir", str(tmp_path / "searches"), "--search-id", "s1"])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    with open(tmp_path / "searches" / "s1" / "results.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model.hidden_dim"] for r in rows] == ["4", "12"]
    assert all(r["status"] == "completed" for r in rows)
    best = [r for r in rows if r["best"] == "True"]
    assert len(best) == 1
    assert best[0]["score"] == str(max(float(r["score"]) for r in rows))
    summary = json.loads((tmp_path / "searches" / "s1" / "search.json").read_text())
    assert summary["status"] == "completed" and summary["best"]["run_id"] == best[0]["run_id"]
    assert out[-1] == best[0]["run_dir"]  # the last line is the best run, like `train`
    predictor = Predictor.load(out[-1])
    assert predictor.model.config.hidden_dim == int(best[0]["model.hidden_dim"])
    assert predictor.predict(["a superb film"])[0].label in ("neg", "pos")


def test_search_space_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(ValueError, match="Unknown search parameter 'hiden_dim'"):
        parse_space("hiden_dim=4,8")
    with pytest.raises(ValueError, match="need --random"):
        parse_space("lr=0.001:0.01")
    with pytest.raises(ValueError, match="not a valid int"):
        parse_space("hidden_dim=4,big")
    with pytest.raises(ValueError, match="'pooling'"):
        apply_params(RunConfig(), {"model.pooling": "median"})
    data = write_data(tmp_path / "d.csv", 20)
    assert main(["search", "--train", str(data), "--random", "2", "--out", str(tmp_path)]) == 2
    assert "--space" in capsys.readouterr().err
    assert main(["search", "--train", str(data), "--grid", "dropout=2", "--out", str(tmp_path),
                 "--search-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dropout" in err[0]


def test_grid_and_random_trials():
    dims = parse_space("train.lr=0.001,0.01 hidden-dim=8,16 pooling=max,attention")
    trials = grid_trials(dims)
    assert len(trials) == 8 and trials[0] == {"train.lr": 0.001, "model.hidden_dim": 8, "model.pooling": "max"}
    sampled = random_trials(parse_space("lr=1e-4:1e-2:log dropout=0.1:0.5 hidden_dim=8,16", allow_ranges=True), 5, 1)
    assert len(sampled) == 5 and len({json.dumps(t, sort_keys=True) for t in sampled}) == 5
    assert all(1e-4 <= t["train.lr"] <= 1e-2 and 0.1 <= t["model.dropout"] <= 0.5 for t in sampled)
    assert all(isinstance(t["model.hidden_dim"], int) for t in sampled)
    # a discrete space smaller than N gives every point once
    assert len(random_trials(parse_space("hidden_dim=8,16", allow_ranges=True), 5)) == 2


def _splits():
    rng = random.Random(1)
    texts = [" ".join(rng.sample(["good", "bad", "film", "plot", "was", "the"], 3)) for _ in range(60)]
    labels = ["pos" if "good" in t else "neg" for t in texts]
    table = TextTable(texts, {"label": labels})
    return Splits(table.subset(range(40)), table.subset(range(40, 50)), table.subset(range(50, 60)))


def _base() -> RunConfig:
    return RunConfig(data=DataConfig(), text=TextConfig(tokenizer="whitespace"),
                     model=ModelConfig(embedding_dim=8, hidden_dim=8),
                     train=TrainConfig(epochs=2, batch_size=16, warmup_steps=0, lr=0.02))


def test_search_job_runs_in_the_background_and_is_owner_scoped(tmp_path):
    registry = SearchRegistry()
    job = registry.submit(_base(), [{"model.pooling": "max"}, {"model.pooling": "mean"}], "alice",
                          runs_dir=tmp_path / "runs", search_dir=tmp_path / "searches", splits=_splits())
    assert registry.get(job.search_id, "bob") is None and registry.searches("bob") == []
    assert registry.get(job.search_id, "alice") is job
    snap = job.join(timeout=300)
    assert snap.done and snap.status == "completed"
    assert [t.status for t in snap.trials] == ["completed", "completed"]
    assert snap.best is not None and snap.progress == 1.0
    Predictor.load(snap.best.run_dir)


def test_stopping_a_search_cancels_the_running_trial_and_skips_the_rest(tmp_path):
    import threading
    stop = threading.Event()
    press_stop = lambda event: stop.set() if event.name == "after_batch" else None  # noqa: E731
    folder, trials = run_search(_base(), [{"model.hidden_dim": 4}, {"model.hidden_dim": 8}], stop=stop,
                                runs_dir=tmp_path / "runs", search_dir=tmp_path / "searches", splits=_splits(),
                                log=lambda s: None, train_callbacks=[press_stop])
    assert [t.status for t in trials] == ["cancelled", "skipped"]
    assert not any(t.best for t in trials)
    assert json.loads((folder / "search.json").read_text())["status"] == "cancelled"
    job = SearchJob(_base(), [{"model.hidden_dim": 4}] * 3, "alice", runs_dir=tmp_path / "r2",
                    search_dir=tmp_path / "s2", splits=_splits())
    job.stop()
    job.start()
    snap = job.join(timeout=120)
    assert snap.status == "cancelled" and all(t.status == "skipped" for t in snap.trials)
