"""Shared fixtures: tiny generated data sets and tiny trained runs."""

from __future__ import annotations

import contextlib
import csv
import io
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

POSITIVE = ["great", "excellent", "lovely", "wonderful", "superb"]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "poor"]
FILLER = "the movie was a story with plot and actors in it about some people who did things".split()


def keyword_rows(n: int = 400, seed: int = 0, extra_label: bool = False) -> list[dict]:
    """Rows whose label ('pos'/'neg') is signalled by one keyword among filler words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(FILLER, 6) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        row = {"text": " ".join(words), "label": label}
        if extra_label:
            row["length"] = "long" if len(row["text"]) > 40 else "short"
        rows.append(row)
    return rows


def keyword_csv(n: int = 400, seed: int = 0, extra_label: bool = False) -> bytes:
    rows = keyword_rows(n, seed, extra_label)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """An empty folder the app writes its runs to (LSTM_STUDIO_RUNS_DIR), and no demo model."""
    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.setenv("LSTM_STUDIO_RUNS_DIR", str(folder))
    monkeypatch.setenv("LSTM_STUDIO_DEMO_DIR", str(tmp_path / "no-demo"))
    return folder


def train_tiny_run(runs_dir: Path, data_file: Path, run_id: str, hidden_dim: int = 16, epochs: int = 10):
    from core.pipeline import DataConfig, RunConfig, train_run
    from core.models import ModelConfig
    from core.text import TextConfig
    from core.training import TrainConfig

    cfg = RunConfig(data=DataConfig(train=str(data_file)),
                    text=TextConfig(tokenizer="whitespace"),
                    model=ModelConfig(embedding_dim=16, hidden_dim=hidden_dim),
                    train=TrainConfig(epochs=epochs, warmup_steps=0, lr=0.01, batch_size=32))
    result = train_run(cfg, runs_dir=runs_dir, run_id=run_id, log=lambda line: None)
    assert result.status == "completed", result.message
    return result.run_dir


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory) -> Path:
    """A runs folder with two tiny completed runs (hidden size 16 and 8) on keyword data."""
    root = tmp_path_factory.mktemp("trained")
    data_file = root / "keywords.csv"
    data_file.write_bytes(keyword_csv(400))
    runs = root / "runs"
    with one_torch_thread():
        train_tiny_run(runs, data_file, "tiny-a", hidden_dim=16)
        train_tiny_run(runs, data_file, "tiny-b", hidden_dim=8)
    return runs


@contextlib.contextmanager
def one_torch_thread():
    """Tiny models train fastest on one thread, and far faster than with several on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """``pytestmark = pytest.mark.usefixtures("one_thread")``: a whole test module on one torch thread."""
    with one_torch_thread():
        yield


def rerun_until(at, until, seen, limit: int = 240, pause: float = 0.25):
    """Rerun a Streamlit AppTest page (as its fragment timer would) until ``until(at)`` holds; on
    giving up, the error shows ``seen(at)`` (the statuses the page showed)."""
    import time

    for _ in range(limit):
        at.run()
        assert not at.exception, at.exception
        if until(at):
            return at
        time.sleep(pause)
    raise AssertionError(f"gave up waiting; the page showed: {seen(at)}")

