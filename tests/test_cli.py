"""``python -m core`` end to end, in a subprocess like a user would run it (core/cli.py)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import TRAIN_FLAGS, main
from core.pipeline import RunConfig
from helpers import write_keyword_csv

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "10000", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "core", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    data = write_keyword_csv(folder / "reviews.csv", 400)
    done = cli("train", "--train", data, "--epochs", 5, "--warmup-steps", 0, "--lr", 0.01, "--hidden-dim", 16,
               "--embedding-dim", 16, "--out", folder / "runs", "--tokenizer", "whitespace")
    assert done.returncode == 0, done.stderr
    return folder, data, done


def test_train_prints_the_run_directory_last(trained):
    folder, _, done = trained
    run_dir = Path(done.stdout.strip().splitlines()[-1])
    assert run_dir.parent == folder / "runs" and run_dir.is_dir()
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "metrics.json").is_file()
    assert "status: completed" in done.stdout
    config = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text())["run"])
    assert (config.train.epochs, config.train.lr, config.model.hidden_dim, config.text.tokenizer) == \
        (5, 0.01, 16, "whitespace")


def test_evaluate_json(trained):
    folder, data, done = trained
    run_dir = done.stdout.strip().splitlines()[-1]
    out = cli("evaluate", "--run", run_dir, "--data", data, "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert set(summary) >= {"accuracy", "macro_f1", "auc", "labels", "confusion_matrix", "n"}
    assert summary["n"] == 400 and summary["labels"] == ["neg", "pos"]
    assert sum(map(sum, summary["confusion_matrix"])) == 400
    assert summary["accuracy"] > 0.8 and 0 <= summary["auc"] <= 1


def test_predict_json_gives_one_object_per_text(trained):
    _, _, done = trained
    run_dir = done.stdout.strip().splitlines()[-1]
    texts = ["a great film", "awful plot really", "  "]
    out = cli("predict", "--run", run_dir, "--json", *texts)
    assert out.returncode == 0, out.stderr
    objects = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [o["text"] for o in objects] == texts
    for o in objects:
        assert o["label"] in {"neg", "pos"} and set(o["probs"]) == {"neg", "pos"}
        assert sum(o["probs"].values()) == pytest.approx(1.0, abs=1e-4)
    assert objects[0]["label"] == "pos" and objects[1]["label"] == "neg"
    assert "note" in objects[2]  # the blank text is flagged


def test_predict_data_writes_a_csv(trained, tmp_path):
    folder, _, done = trained
    run_dir = done.stdout.strip().splitlines()[-1]
    texts = write_keyword_csv(tmp_path / "new.csv", 12, seed=7)
    out_csv = tmp_path / "out" / "predictions.csv"
    out = cli("predict", "--run", run_dir, "--data", texts, "--out", out_csv)
    assert out.returncode == 0, out.stderr
    assert "12 predictions written" in out.stdout
    rows = list(csv.DictReader(open(out_csv, encoding="utf-8")))
    assert len(rows) == 12 and list(rows[0]) == ["text", "label", "confidence", "p_neg", "p_pos"]
    for row in rows:
        assert float(row["confidence"]) == pytest.approx(max(float(row["p_neg"]), float(row["p_pos"])))


def test_train_help_lists_every_flag_with_its_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "10000")  # one option per line, no wrapping
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    helps: dict[str, str] = {}
    current = None
    for line in capsys.readouterr().out.splitlines():
        stripped = line.strip()
        if line.startswith("  -"):
            invocation, _, text = stripped.partition("  ")
            current = invocation.split()[0].rstrip(",")
            helps[current] = text.strip()
        elif current and line.startswith("      ") and stripped:
            helps[current] = (helps[current] + " " + stripped).strip()
    defaults = RunConfig()
    for flag, section, name, _ in TRAIN_FLAGS:
        default = getattr(defaults if section is None else getattr(defaults, section), name)
        assert flag in helps, f"{flag} missing from train --help"
        assert f"(default: {default!r})" in helps[flag], (flag, helps[flag])
        assert "(default: None)" not in helps[flag], (flag, helps[flag])


def test_a_user_error_exits_2_with_one_line_and_no_traceback(tmp_path):
    out = cli("train", "--train", tmp_path / "nope.csv", "--out", tmp_path / "runs")
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert out.stderr.startswith("error: --train ") and "nope.csv: file not found" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


# the same contract in-process (each subprocess costs seconds of imports)
@pytest.mark.parametrize("case", ["unknown column", "invalid pooling", "bad config", "not a run", "unfinished run"])
def test_user_errors_exit_2_with_one_line(case, tmp_path, capsys):
    data = write_keyword_csv(tmp_path / "d.csv", 40)
    bad_config = tmp_path / "config.json"
    bad_config.write_text('{"train": {"epochs": 3,}')
    args, expected = {
        "unknown column": (["train", "--train", data, "--text-col", "review"], "'review'"),
        "invalid pooling": (["train", "--train", data, "--pooling", "sum"], "'pooling' parameter must be one of"),
        "bad config": (["train", "--train", data, "--config", bad_config], "config.json is not valid JSON"),
        "not a run": (["evaluate", "--run", tmp_path / "nothing-here", "--data", data], "nothing-here"),
        "unfinished run": (["predict", "--run", tmp_path, "some text"], "it is not a finished run"),
    }[case]
    if args[0] == "train":
        args += ["--out", tmp_path / "runs", "--epochs", "1"]
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
