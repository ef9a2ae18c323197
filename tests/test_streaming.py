"""Streaming ingestion: same vocabulary and ids as in memory, seeded splits, bounded memory, CLI."""

from __future__ import annotations

import csv
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.data import DataError, load_table
from core.predict import Predictor
from core.runs import read_status
from core.streaming import TEST, TRAIN, VALID, ingest, split_of
from core.text import TextConfig, TextEncoder

WORDS = ("the a film movie story plot actor scene music was is very quite rather "
         "great wonderful superb awful boring terrible it's don't (really) well-made").split()


def write_csv(path: Path, rows: list[list[str]], header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def review_rows(n: int, seed: int = 0, words: int = 12) -> list[list[str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(["pos", "neg"])
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, words)))
        cue = rng.choice(["great", "superb"] if label == "pos" else ["awful", "boring"])
        rows.append([f"{text}, {cue}! Rated {i % 7}.", label])
    return rows


def quirky_csv(path: Path) -> Path:
    rows = review_rows(240)
    rows += [["", "pos"], ["   ", "neg"], ["no label here", ""],  # dropped, as load_table drops them
             ["Comma, \"quoted\" and\nsecond line", "pos"], ["?!", "neg"],  # quotes, a newline, punctuation
             [" ".join(["long"] * 30), "pos"],  # truncated by max_length
             ["The Film WAS great", " pos "],  # label spelled with spaces
             ["A literal <pad> and </s> here. Then <unk> too!", "neg"]]  # markup-like words stay words
    rows += rows[:20]  # duplicate texts
    return write_csv(path, rows)


@pytest.mark.parametrize("text_cfg", [
    TextConfig(tokenizer="en", max_length=12, min_freq=2, max_vocab_size=20),
    TextConfig(tokenizer="whitespace", lowercase=False, max_length=5, truncate=False, sentence_breaks=True),
    TextConfig(tokenizer="en", max_length=9, truncation="head+tail"),
], ids=["en-truncated-small-vocab", "whitespace-sentence-breaks-untruncated", "en-head-and-tail"])
def test_streaming_gives_the_in_memory_vocabulary_ids_and_labels(tmp_path, text_cfg):
    path = quirky_csv(tmp_path / "reviews.csv")
    streamed = ingest([(str(path), None)], tmp_path / "data", text_cfg, valid_fraction=0.0, test_fraction=0.0,
                      chunk_rows=37)

    table, _ = load_table(str(path), "text", "label")
    encoder = TextEncoder.fit(text_cfg, table.texts)
    assert streamed.encoder.vocab.itos == encoder.vocab.itos
    assert [list(s) for s in streamed.train.sequences] == encoder.encode_many(table.texts)
    assert streamed.label_sets == [sorted(set(table.labels["label"]))]
    assert [streamed.label_sets[0][k] for k in streamed.train.y[:, 0]] == table.labels["label"]
    assert streamed.meta["dropped"] == {"empty text": 2, "missing label 'label'": 1}
    assert len(streamed.valid.sequences) == len(streamed.test.sequences) == 0


def test_split_is_seeded_by_text_and_vocabulary_counts_training_rows_only(tmp_path):
    path = write_csv(tmp_path / "reviews.csv", review_rows(300, seed=1) + review_rows(30, seed=1))
    text_cfg = TextConfig(tokenizer="whitespace", min_freq=1)
    streamed = ingest([(str(path), None)], tmp_path / "a", text_cfg, valid_fraction=0.2, test_fraction=0.2,
                      seed=7, test_csv=tmp_path / "test.csv")

    table, _ = load_table(str(path), "text", "label")
    splits = [split_of(t, 7, 0.2, 0.2) for t in table.texts]
    by_split = {s: [t for t, code in zip(table.texts, splits) if code == s] for s in (TRAIN, VALID, TEST)}
    assert all(len(by_split[s]) > 30 for s in (VALID, TEST))  # near the fractions, from 330 rows
    assert len({t: s for t, s in zip(table.texts, splits)}) == len(set(table.texts))  # a duplicate shares its split
    encoder = TextEncoder.fit(text_cfg, by_split[TRAIN])
    assert streamed.encoder.vocab.itos == encoder.vocab.itos
    for part, code in ((streamed.train, TRAIN), (streamed.valid, VALID), (streamed.test, TEST)):
        assert [list(s) for s in part.sequences] == encoder.encode_many(by_split[code])
    written, _ = load_table(str(tmp_path / "test.csv"), "text", "label", min_per_class=1)
    assert written.texts == by_split[TEST]

    again = ingest([(str(path), None)], tmp_path / "b", text_cfg, valid_fraction=0.2, test_fraction=0.2, seed=7)
    other = ingest([(str(path), None)], tmp_path / "c", text_cfg, valid_fraction=0.2, test_fraction=0.2, seed=8)
    assert np.array_equal(again.valid.sequences.rows, streamed.valid.sequences.rows)
    assert not np.array_equal(other.valid.sequences.rows, streamed.valid.sequences.rows)


def test_streaming_200k_rows_never_holds_the_texts(tmp_path):
    rows = 200_000
    path = write_csv(tmp_path / "big.csv", review_rows(rows, seed=2, words=16))
    tracemalloc.start()
    try:
        streamed = ingest([(str(path), None)], tmp_path / "data", TextConfig(tokenizer="whitespace"),
                          chunk_rows=5_000, log=lambda line: None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(streamed.train.sequences) + len(streamed.valid.sequences) + len(streamed.test.sequences) == rows
    # in memory, the texts alone take more than the file; streaming keeps a few dozen bytes per row
    # (offsets, row indexes, labels) plus one chunk and the vocabulary
    assert peak < path.stat().st_size, (peak, path.stat().st_size)
    assert peak < 4_000_000 + 48 * rows, peak


def test_cli_stream_trains_a_run_that_loads_and_predicts(tmp_path, capsys):
    path = write_csv(tmp_path / "reviews.csv", review_rows(400, seed=3))
    code = main(["train", "--train", str(path), "--stream", "--epochs", "4", "--warmup-steps", "0", "--lr", "0.02",
                 "--hidden-dim", "16", "--embedding-dim", "16", "--device", "cpu", "--out", str(tmp_path / "runs")])
    assert code == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert read_status(run_dir)["status"] == "completed"
    assert (run_dir / "data" / "ids.u32").stat().st_size > 0
    test_rows, _ = load_table(str(run_dir / "test.csv"), "text", "label", min_per_class=1)
    assert len(test_rows) > 10
    predictor = Predictor.load(run_dir)
    assert [p.label for p in predictor.predict(["superb , great", "awful , boring"])] == ["pos", "neg"]


@pytest.mark.parametrize("args, message", [
    (["--text-col", "review"], "Column 'review' not found in reviews.csv. Available columns: text, label"),
    (["--resume", "--run-id", "x"], "--resume is not available with --stream"),
    (["--dataset", "sst2"], "--stream reads a --train CSV/TSV file"),
])
def test_cli_stream_bad_input_is_one_clear_line(tmp_path, capsys, args, message):
    path = write_csv(tmp_path / "reviews.csv", review_rows(50))
    code = main(["train", "--train", str(path), "--stream", "--out", str(tmp_path / "runs"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_jsonl_and_single_class_files_are_refused_with_a_reason(tmp_path):
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text('{"text": "good", "label": "pos"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="--stream reads CSV or TSV"):
        ingest([(str(jsonl), None)], tmp_path / "a", TextConfig(tokenizer="whitespace"))
    one_class = write_csv(tmp_path / "one.csv", [[f"text {i}", "pos"] for i in range(20)])
    with pytest.raises(DataError, match="needs at least two classes"):
        ingest([(str(one_class), None)], tmp_path / "b", TextConfig(tokenizer="whitespace"))
