"""Language-model pretraining of the LSTM encoder and classifiers started from it (core/pretrain.py)."""

from __future__ import annotations

import csv
import json
import math
import random
import threading

import pytest
import torch
from safetensors.torch import load_file

from core.data import DataError
from core.models import ModelConfig
from core.pretrain import EncoderRunConfig, PretrainConfig, is_encoder_dir, pretrain
from core.runs import RunError, read_status
from core.text import TextConfig
from helpers import tiny_config, write_keyword_csv

pytestmark = pytest.mark.usefixtures("one_thread")
WORDS = [f"w{i}" for i in range(10)]


def write_texts(path, n: int, kind: str, seed: int = 0, length: int = 12):
    """``cycle``: runs of consecutive words of w0..w9 (each word gives away its neighbours);
    ``random``: words drawn independently (nothing to learn beyond their frequencies)."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "text"])
        for i in range(n):
            if kind == "cycle":
                start = rng.randrange(10)
                words = [WORDS[(start + k) % 10] for k in range(length)]
            else:
                words = rng.choices(WORDS, k=length)
            writer.writerow([i, " ".join(words)])
    return path


def encoder_config(texts, **pretrain_overrides) -> EncoderRunConfig:
    settings = {"texts": [str(texts)], "epochs": 6, "batch_size": 16, "lr": 0.02, "warmup_steps": 0,
                "device": "cpu", "valid_fraction": 0.1, **pretrain_overrides}
    return EncoderRunConfig(pretrain=PretrainConfig(**settings), text=TextConfig(tokenizer="whitespace"),
                            model=ModelConfig(embedding_dim=8, hidden_dim=16, dropout=0.0))


def run(cfg, tmp_path, run_id="enc", **kwargs):
    return pretrain(cfg, out_dir=tmp_path / "encoders", run_id=run_id, log=lambda line: None, **kwargs)


@pytest.fixture(scope="module")
def cycle_encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrain")
    return run(encoder_config(write_texts(folder / "cycle.csv", 400, "cycle")), folder)


def test_it_learns_a_language_whose_words_give_their_neighbours_away(cycle_encoder):
    result = cycle_encoder
    assert result.status == "completed"
    assert sorted(p.name for p in result.run_dir.iterdir()) == [
        "config.json", "history.jsonl", "lm_head.safetensors", "metrics.json", "model.safetensors", "status.json",
        "vocab.json"]
    assert is_encoder_dir(result.run_dir) and read_status(result.run_dir)["status"] == "completed"
    # ten words: a model that learned nothing has perplexity ~10; this language is deterministic
    assert result.metrics["valid_perplexity"] < 2.0, result.metrics
    history = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["valid_loss"] < history[0]["valid_loss"]
    weights = load_file(result.run_dir / "model.safetensors")
    assert "embedding.weight" in weights and any(k.startswith("lstms.0.") for k in weights)
    assert not any(k.startswith(("heads.", "attention.")) for k in weights)  # the classifier's own parts


def test_neither_direction_sees_the_word_it_predicts(tmp_path):
    # independent random words cannot be predicted: a model that peeked would still get close to 1
    result = run(encoder_config(write_texts(tmp_path / "random.csv", 400, "random")), tmp_path)
    assert result.metrics["valid_perplexity"] > 8.0, result.metrics


def test_the_same_seed_gives_the_same_encoder(tmp_path):
    texts = write_texts(tmp_path / "cycle.csv", 100, "cycle")
    first = run(encoder_config(texts, epochs=1), tmp_path, "a")
    second = run(encoder_config(texts, epochs=1), tmp_path, "b")
    a, b = load_file(first.run_dir / "model.safetensors"), load_file(second.run_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_stopped_pretraining_keeps_what_it_learned(tmp_path):
    stop = threading.Event()
    steps = []

    def progress(event):
        steps.append(event["step"])
        if event["step"] == 3:
            stop.set()

    result = run(encoder_config(write_texts(tmp_path / "cycle.csv", 400, "cycle")), tmp_path, stop=stop,
                 progress=progress)
    assert result.status == "cancelled" and steps == [1, 2, 3]
    assert read_status(result.run_dir)["status"] == "cancelled"
    assert (result.run_dir / "model.safetensors").is_file() and math.isfinite(result.metrics["valid_loss"])


def test_texts_in_memory_need_no_file_and_each_epoch_is_reported(tmp_path):
    texts = [" ".join(WORDS[(start + k) % 10] for k in range(12)) for start in range(10)] * 20
    cfg = encoder_config("", epochs=2)
    cfg.pretrain.texts = ["typed in the app"]  # a name only: nothing is read from it
    epochs, events = [], []
    result = run(cfg, tmp_path, texts=texts + ["   "], on_epoch=epochs.append, progress=events.append)
    assert result.status == "completed" and result.metrics["train_texts"] == 180
    history = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert epochs == history and [r["epoch"] for r in epochs] == [1, 2]
    last = events[-1]
    assert last["step"] == last["total_steps"] == history[-1]["steps"] and last["epoch"] == last["epochs"] == 2
    assert last["tokens_per_s"] > 0 and last["elapsed"] > 0 and math.isfinite(last["epoch_loss"])
    with pytest.raises(DataError, match="Only 1 non-empty text"):
        run(encoder_config(""), tmp_path, "one", texts=["just one text", ""])


def write_skip_texts(path, n: int, seed: int = 1, length: int = 12):
    """Another deterministic language over the same words: each word is followed by the one three on."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text"])
        for _ in range(n):
            start = rng.randrange(10)
            writer.writerow([" ".join(WORDS[(start + 3 * k) % 10] for k in range(length))])
    return path


def first_epoch_perplexity(result) -> float:
    return json.loads((result.run_dir / "history.jsonl").read_text().splitlines()[0])["valid_perplexity"]


def test_going_on_from_an_encoder_keeps_what_it_knows(cycle_encoder, tmp_path):
    # the text and model settings given here differ from the encoder's: the encoder's are kept
    cfg = encoder_config(write_texts(tmp_path / "more.csv", 100, "cycle", seed=5), epochs=1, lr=0.002,
                         init_from=str(cycle_encoder.run_dir))
    cfg.model, cfg.text = ModelConfig(embedding_dim=4, hidden_dim=64), TextConfig(tokenizer="en", max_vocab_size=3)
    result = run(cfg, tmp_path, "more")
    fresh = run(encoder_config(write_texts(tmp_path / "more.csv", 100, "cycle", seed=5), epochs=1, lr=0.002),
                tmp_path, "fresh")
    # with its softmax saved, one pass at a small rate starts where the encoder left off
    assert first_epoch_perplexity(result) < 2.0 < first_epoch_perplexity(fresh)
    assert json.loads((result.run_dir / "vocab.json").read_text())["itos"] == \
        json.loads((cycle_encoder.run_dir / "vocab.json").read_text())["itos"]
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["model"]["hidden_dim"] == 16 and config["run"]["pretrain"]["init_from"] == str(cycle_encoder.run_dir)


def test_an_encoder_adapts_to_a_new_domain_with_a_new_softmax(cycle_encoder, tmp_path):
    source = tmp_path / "no-head"
    source.mkdir()
    for name in ("config.json", "vocab.json", "model.safetensors"):  # as encoders saved before the softmax was
        (source / name).write_bytes((cycle_encoder.run_dir / name).read_bytes())
    texts = write_skip_texts(tmp_path / "skip.csv", 400)
    lines = []
    warm = pretrain(encoder_config(texts, init_from=str(source), warmup_steps=5, max_steps=5),
                    out_dir=tmp_path / "encoders", run_id="warm", log=lines.append)
    assert any("a new softmax over" in line and "first 5 batches" in line for line in lines), lines
    theirs, after = load_file(source / "model.safetensors"), load_file(warm.run_dir / "model.safetensors")
    assert all(torch.equal(theirs[k], after[k]) for k in theirs)  # the LSTM waits while the new softmax learns
    adapted = run(encoder_config(texts, init_from=str(source), warmup_steps=5), tmp_path, "adapted")
    assert adapted.metrics["valid_perplexity"] < 2.0, adapted.metrics  # and then learns the new language
    after = load_file(adapted.run_dir / "model.safetensors")
    assert not torch.equal(theirs["lstms.0.weight_ih_l0"], after["lstms.0.weight_ih_l0"])


def test_going_on_from_something_that_is_not_an_encoder_is_refused(tmp_path, capsys):
    from core.cli import main

    texts = write_texts(tmp_path / "texts.csv", 20, "cycle")
    cfg = encoder_config(texts, init_from=str(tmp_path))
    with pytest.raises(RunError, match="not an encoder directory.*python -m core pretrain"):
        run(cfg, tmp_path)
    assert main(["pretrain", "--texts", str(texts), "--init-from", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "enc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an encoder directory" in err[0], err
    assert not (tmp_path / "enc").exists()


def test_a_classifier_starts_from_the_encoders_lstm_and_word_vectors(cycle_encoder, tmp_path):
    from core.pipeline import build_initial_model, fit_encoder, label_sets_for, load_splits

    data = write_keyword_csv(tmp_path / "train.csv", 200, seed=3, filler=WORDS[:6])
    cfg = tiny_config(data, embedding_dim=8, hidden_dim=16, pooling="attention")
    cfg.init_from = str(cycle_encoder.run_dir)
    splits = load_splits(cfg.data, 5, log=lambda line: None)
    encoder = fit_encoder(cfg, splits.train.texts)
    lines = []
    model, _ = build_initial_model(cfg, encoder, label_sets_for(splits.train), lines.append)
    theirs, mine = load_file(cycle_encoder.run_dir / "model.safetensors"), model.state_dict()
    for name in theirs:
        if name.startswith("lstms."):
            assert torch.equal(theirs[name], mine[name]), name
    their_vocab = json.loads((cycle_encoder.run_dir / "vocab.json").read_text())["itos"]
    for word in WORDS[:6]:
        assert torch.equal(mine["embedding.weight"][encoder.vocab.stoi[word]],
                           theirs["embedding.weight"][their_vocab.index(word)])
    line = next(line for line in lines if line.startswith("initialised from"))
    assert "a pretrained encoder has none" in line and "vectors of 6 of" in line


def test_a_classifier_trained_from_an_encoder_is_an_ordinary_run(cycle_encoder, tmp_path):
    from core.pipeline import train_run
    from core.predict import Predictor

    data = write_keyword_csv(tmp_path / "train.csv", 300, seed=4, filler=WORDS)
    cfg = tiny_config(data, epochs=6, embedding_dim=8, hidden_dim=16)
    cfg.init_from = str(cycle_encoder.run_dir)
    result = train_run(cfg, runs_dir=tmp_path / "runs", log=lambda line: None)
    assert result.status == "completed" and result.metrics["test"]["primary"]["accuracy"] >= 0.9
    assert Predictor.load(result.run_dir).predict(["w1 w2 great w3"])[0].label == "pos"


def test_what_does_not_fit_is_named(cycle_encoder, tmp_path):
    from core.pipeline import build_initial_model, fit_encoder, label_sets_for, load_splits
    from core.predict import Predictor

    data = write_keyword_csv(tmp_path / "train.csv", 100, seed=3)
    for overrides, expected in (({"hidden_dim": 32, "embedding_dim": 8}, "--hidden-dim 16"),
                                ({"hidden_dim": 16, "embedding_dim": 8, "hierarchical": True}, "--hierarchical")):
        cfg = tiny_config(data, **overrides)
        cfg.init_from = str(cycle_encoder.run_dir)
        splits = load_splits(cfg.data, 5, log=lambda line: None)
        with pytest.raises(ValueError, match=expected):
            build_initial_model(cfg, fit_encoder(cfg, splits.train.texts), label_sets_for(splits.train),
                                lambda line: None)
    with pytest.raises(RunError, match="pretrained encoder.*--init-from"):
        Predictor.load(cycle_encoder.run_dir)


def test_the_command_line_pretrains_and_a_training_starts_from_it(tmp_path, capsys):
    from core.cli import main

    texts = write_texts(tmp_path / "texts.csv", 200, "cycle")
    assert main(["pretrain", "--texts", str(texts), "--tokenizer", "whitespace", "--epochs", "1",
                 "--hidden-dim", "8", "--embedding-dim", "8", "--warmup-steps", "0", "--device", "cpu",
                 "--out", str(tmp_path / "enc"), "--run-id", "lm"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(tmp_path / "enc" / "lm") and any(line.startswith("epoch=1 ") for line in out)
    data = write_keyword_csv(tmp_path / "train.csv", 100, seed=3, filler=WORDS)
    assert main(["train", "--train", str(data), "--tokenizer", "whitespace", "--hidden-dim", "8",
                 "--embedding-dim", "8", "--epochs", "1", "--device", "cpu", "--init-from", out[-1],
                 "--out", str(tmp_path / "runs")]) == 0
    assert any(line.startswith("initialised from") for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize("argv, expected", [
    (["--texts", "nope.csv"], "--texts nope.csv: file not found"),
    (["--texts", "{texts}", "--text-col", "review"], "Column 'review' not found"),
    (["--texts", "{texts}", "--epochs", "0"], "'epochs' parameter must be an int >= 1"),
    (["--texts", "{texts}", "--hierarchical"], None),  # not a pretraining flag: argparse refuses it
])
def test_command_line_mistakes_are_one_line(tmp_path, capsys, argv, expected):
    from core.cli import main

    texts = write_texts(tmp_path / "texts.csv", 20, "cycle")
    argv = [a.replace("{texts}", str(texts)) for a in argv]
    if expected is None:
        with pytest.raises(SystemExit) as exit_info:
            main(["pretrain", *argv])
        assert exit_info.value.code == 2
        return
    assert main(["pretrain", *argv, "--out", str(tmp_path / "enc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "enc").exists() or not any((tmp_path / "enc").iterdir())
