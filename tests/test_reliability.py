"""Reliability of the engine: odd text, crashes while saving, cancel/resume, divergence, OOM, concurrency."""

from __future__ import annotations

import json
import logging
import threading
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import core.pipeline as pipeline
from core.batching import collate
from core.jobs import JobRegistry
from core.models import LSTMClassifier, ModelConfig
from core.pipeline import train_run
from core.predict import Predictor
from core.runs import atomic_save, atomic_write_json, read_jsonl, read_status
from core.text import PAD, UNK, UNK_ID, TextConfig, TextEncoder
from core.training import AfterBatch, AfterEpoch
from helpers import tiny_config, write_keyword_csv

TIMING = ("seconds", "tokens_per_s")
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread


def quiet(line: str) -> None:
    pass


def no_temp_files(folder: Path) -> bool:
    return not [p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp")]


def strip_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


# ---- text pipeline: arbitrary Unicode never breaks tokenising, encoding or the model ------------

CORPUS = ["the movie was great", "awful plot", "我喜欢这部电影", "مرحبا بالعالم", "שלום עולם", "café naïve 👍",
          "Привет мир", "e\u0301cole"]
ODD_TEXTS = st.one_of(
    st.text(),  # any code points (no surrogates), including control characters
    st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2028\u2029\u3000\u200b\ufeff"),  # whitespace of every kind
    st.text(alphabet=st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF)),  # emoji
    st.text(alphabet=st.characters(min_codepoint=0x0590, max_codepoint=0x06FF)),  # Hebrew and Arabic (RTL)
    st.text(alphabet=st.characters(categories=("Mn", "Me", "Mc"))),  # combining marks with no base
    st.lists(st.sampled_from(CORPUS + ["<br />", "&amp;", "<pad>", "<unk>", "\x00", "\u202e"]), max_size=20)
    .map(" ".join),
    st.text(min_size=2000, max_size=6000),  # very long
)
ENCODERS = {name: TextEncoder.fit(TextConfig(tokenizer=name, max_length=16), CORPUS)
            for name in ("en", "zh", "xx", "whitespace")}


@pytest.mark.parametrize("name", list(ENCODERS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ODD_TEXTS)
@example(text="")
@example(text="   \n\t ")
@example(text="<pad> <unk> <pad>")
@example(text="<br /><br />")
def test_encoding_arbitrary_unicode_never_fails(name, text):
    encoder = ENCODERS[name]
    tokens = encoder.tokenizer(text)
    enc = encoder.encode(text)
    assert enc.ids, "the model always gets at least one id"
    assert all(isinstance(i, int) and UNK_ID <= i < len(encoder.vocab) for i in enc.ids), enc.ids  # never <pad>
    assert len(enc.ids) == len(enc.tokens) <= encoder.config.max_length
    if tokens:
        assert not enc.empty and enc.tokens == tokens[:16] and enc.truncated == max(0, len(tokens) - 16)
    else:
        assert enc.empty and enc.ids == [UNK_ID] and enc.tokens == [UNK] and enc.truncated == 0
    assert PAD not in encoder.vocab.decode(enc.ids)


MODEL = LSTMClassifier(ModelConfig(vocab_size=len(ENCODERS["en"].vocab), embedding_dim=8, hidden_dim=8,
                                   pooling="attention", num_classes=[2, 3])).eval()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(ODD_TEXTS, min_size=1, max_size=6))
@example(texts=[""])
@example(texts=["", " ", "\u200b"])
def test_model_forward_runs_on_any_batch_of_texts(texts):
    encoder = ENCODERS["en"]
    ids, lengths = collate(encoder.encode_many(texts))
    with torch.no_grad():
        logits, weights = MODEL(ids, lengths)
    assert [t.shape for t in logits] == [(len(texts), 1), (len(texts), 3)]
    assert all(torch.isfinite(t).all() for t in logits)
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(texts)))


def test_zero_length_text_gives_a_clear_result_and_a_prediction():
    encoder = ENCODERS["en"]
    enc = encoder.encode("")
    assert enc.empty and enc.ids == [UNK_ID]
    for pooling in ("last", "mean", "max", "attention"):
        model = LSTMClassifier(ModelConfig(vocab_size=len(encoder.vocab), embedding_dim=8, hidden_dim=8,
                                           pooling=pooling)).eval()
        ids, lengths = collate([enc.ids, encoder.encode("   ").ids])
        logits, _ = model(ids, lengths)
        assert torch.isfinite(logits[0]).all()


# ---- crash safety while saving --------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reliability")
    result = train_run(tiny_config(write_keyword_csv(folder / "train.csv", 200), epochs=2), runs_dir=folder / "runs",
                       run_id="done", log=quiet)
    assert result.status == "completed"
    return result.run_dir


def crash_half_way(write):
    """A writer that writes part of the real file, then fails like a full disk."""
    def writer(path: Path):
        write(path)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2])
        raise OSError(28, "No space left on device")
    return writer


def test_crash_while_saving_weights_keeps_the_previous_model(finished, tmp_path):
    import shutil

    run_dir = shutil.copytree(finished, tmp_path / "run")
    texts = ["a great film", "awful", ""]
    before = Predictor.load(run_dir).probabilities(texts)[0]
    zeros = {k: torch.zeros_like(v) for k, v in load_file(run_dir / "model.safetensors").items()}
    with pytest.raises(OSError, match="No space left"):
        atomic_save(run_dir / "model.safetensors", crash_half_way(lambda p: save_file(zeros, str(p))))
    np.testing.assert_array_equal(Predictor.load(run_dir).probabilities(texts)[0], before)
    assert no_temp_files(run_dir)


def test_crash_while_saving_metrics_keeps_the_previous_metrics(finished, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_bytes((finished / "metrics.json").read_bytes())
    before = json.loads(path.read_text())
    with pytest.raises(OSError):
        atomic_save(path, crash_half_way(lambda p: p.write_text(json.dumps({"valid": {"accuracy": 0.0}} | before))))
    with pytest.raises(ValueError):  # a NaN metric never reaches the disk
        atomic_write_json(path, {"accuracy": float("nan")})
    assert json.loads(path.read_text()) == before
    assert no_temp_files(tmp_path)


def test_crash_while_publishing_marks_the_run_failed_and_keeps_best(tmp_path, monkeypatch):
    real_save = pipeline.save_file

    def failing_save(tensors, filename, *args, **kwargs):
        if "model.safetensors" in Path(filename).name:
            crash_half_way(lambda p: real_save(tensors, str(p)))(Path(filename))
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(pipeline, "save_file", failing_save)
    with pytest.raises(OSError):
        train_run(tiny_config(write_keyword_csv(tmp_path / "t.csv", 120), epochs=1), runs_dir=tmp_path, run_id="r",
                  log=quiet)
    run_dir = tmp_path / "r"
    assert read_status(run_dir)["status"] == "failed" and "No space left" in read_status(run_dir)["message"]
    assert not (run_dir / "model.safetensors").exists() and no_temp_files(run_dir)
    assert Predictor.load(run_dir, weights="best.safetensors").predict(["great"])[0].label in {"neg", "pos"}


# ---- cancel and resume ------------------------------------------------------------------------------

def stop_after(stop: threading.Event, *, epoch: int, step: int | None = None):
    def callback(event):
        if step is None and isinstance(event, AfterEpoch) and event.epoch == epoch:
            stop.set()
        if step is not None and isinstance(event, AfterBatch) and event.epoch == epoch and event.step == step:
            stop.set()
    return callback


def test_cancel_stops_within_one_batch_and_publishes_nothing(tmp_path):
    stop = threading.Event()
    batches = []
    result = train_run(tiny_config(write_keyword_csv(tmp_path / "t.csv", 200), epochs=4), runs_dir=tmp_path, run_id="c",
                       stop=stop, log=quiet,
                       callbacks=[stop_after(stop, epoch=2, step=3),
                                  lambda e: batches.append((e.epoch, e.step)) if isinstance(e, AfterBatch) else None])
    assert result.status == "cancelled" and batches[-1] == (2, 3)  # no batch ran after the stop
    run_dir = tmp_path / "c"
    assert read_status(run_dir)["status"] == "cancelled"
    assert not (run_dir / "model.safetensors").exists() and not (run_dir / "metrics.json").exists()
    checkpoint = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert checkpoint["progress"]["epoch"] == 1 and len(checkpoint["progress"]["history"]) == 1
    assert set(checkpoint["model"]) == set(load_file(run_dir / "best.safetensors"))
    assert len(read_jsonl(run_dir / "history.jsonl")) == 1
    with pytest.raises(Exception):
        Predictor.load(run_dir)  # a cancelled run has no published model


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_after_a_stop_gives_the_same_weights_and_history(tmp_path, ema_decay):
    data = write_keyword_csv(tmp_path / "t.csv", 200)
    config = partial(tiny_config, data, epochs=4, ema_decay=ema_decay)
    full = train_run(config(), runs_dir=tmp_path, run_id="full", log=quiet)
    assert full.status == "completed" and len(full.history) == 4

    stop = threading.Event()
    first = train_run(config(), runs_dir=tmp_path, run_id="split", stop=stop, log=quiet,
                      callbacks=[stop_after(stop, epoch=2)])
    assert first.status == "cancelled" and len(first.history) == 2
    assert torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["progress"]["epoch"] == 2

    resumed = train_run(config(), runs_dir=tmp_path, run_id="split", resume=True, log=quiet)
    assert resumed.status == "completed"
    assert strip_timing(resumed.history) == strip_timing(full.history)
    assert strip_timing(read_jsonl(tmp_path / "split" / "history.jsonl")) == strip_timing(full.history)
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "split" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key]), key
    assert resumed.metrics["test"]["primary"]["accuracy"] == full.metrics["test"]["primary"]["accuracy"]
    assert read_status(tmp_path / "split")["status"] == "completed"


# ---- divergence and out-of-memory ----------------------------------------------------------------

def hooked_build_model(monkeypatch, hook):
    """Make train_run build its real model with a forward hook on the first LSTM layer."""
    built = []

    def build(config):
        model = LSTMClassifier(config)
        model.lstms[0].register_forward_pre_hook(hook)
        built.append(model)
        return model

    monkeypatch.setattr(pipeline, "build_model", build)
    return built


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_loss_ends_as_diverged_with_best_weights_intact(tmp_path, monkeypatch, bad):
    poisoned = threading.Event()

    def poison(module, args):
        if poisoned.is_set() and module.training:
            x = args[0]
            if hasattr(x, "data") and hasattr(x, "batch_sizes"):  # a PackedSequence
                return (x._replace(data=torch.full_like(x.data, bad)), *args[1:])
            return (torch.full_like(x, bad), *args[1:])
        return None

    hooked_build_model(monkeypatch, poison)
    on_epoch = lambda e: poisoned.set() if isinstance(e, AfterEpoch) and e.epoch == 1 else None  # noqa: E731
    result = train_run(tiny_config(write_keyword_csv(tmp_path / "t.csv", 160), epochs=4), runs_dir=tmp_path, run_id="d",
                       callbacks=[on_epoch], log=quiet)
    assert result.status == "diverged" and "epoch 2" in result.message
    run_dir = tmp_path / "d"
    assert read_status(run_dir)["status"] == "diverged"
    assert not (run_dir / "model.safetensors").exists()
    best = load_file(run_dir / "best.safetensors")
    assert all(torch.isfinite(v).all() for v in best.values())
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    for key, value in checkpoint["best"].items():
        assert torch.equal(best[key], value), key
    [probs] = Predictor.load(run_dir, weights="best.safetensors").probabilities(["a great film", "awful"])
    assert np.isfinite(probs).all()


def test_simulated_out_of_memory_halves_the_batch_and_finishes(tmp_path, monkeypatch):
    calls = {"n": 0}

    def oom_once(module, args):
        if module.training:
            calls["n"] += 1
            if calls["n"] == 3:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return None

    hooked_build_model(monkeypatch, oom_once)
    steps = []
    result = train_run(tiny_config(write_keyword_csv(tmp_path / "t.csv", 200), epochs=2), runs_dir=tmp_path, run_id="o",
                       log=quiet, callbacks=[lambda e: steps.append(e) if isinstance(e, AfterBatch) else None])
    assert result.status == "completed"
    assert [r["batch_size"] for r in result.history] == [8, 8]  # 16 halved for the rest of the run
    assert [r["batch_size"] for r in read_jsonl(tmp_path / "o" / "history.jsonl")] == [8, 8]
    # 160 training rows: epoch 1 ran two batches of 16, then every later batch at 8 (the failed one included)
    first_epoch = [e for e in steps if e.epoch == 1]
    assert len(first_epoch) == 2 + (160 - 2 * 16) // 8
    assert [e.step for e in first_epoch] == list(range(1, 19))
    assert {e.steps_per_epoch for e in first_epoch[2:]} == {18}  # progress reports the new step count
    assert len([e for e in steps if e.epoch == 2]) == 160 // 8
    assert calls["n"] == 2 + 1 + 16 + 20  # two batches, the failed one, then batches of 8 (none failed again)
    assert (tmp_path / "o" / "model.safetensors").is_file()


# ---- concurrent jobs -----------------------------------------------------------------------------

def test_three_jobs_from_two_owners_run_at_once(tmp_path, caplog):
    datasets = {"a1": ("neg", "pos"), "a2": ("cat", "dog"), "b1": ("cat", "dog", "bird")}
    owners = {"a1": "alice", "a2": "alice", "b1": "bob"}
    registry = JobRegistry()
    configs = {name: tiny_config(write_keyword_csv(tmp_path / f"{name}.csv", 160, labels=labels), epochs=3)
               for name, labels in datasets.items()}
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        jobs = {name: registry.submit(cfg, owners[name], runs_dir=tmp_path / "runs", run_id=f"job-{name}")
                for name, cfg in configs.items()}
        assert sum(job.alive for job in jobs.values()) >= 2  # they overlap
        finals = {name: job.join(120) for name, job in jobs.items()}

    for name, final in finals.items():
        assert final.status == "completed", (name, final.message, final.log[-3:])
        run_dir = Path(final.run_dir)
        assert run_dir == tmp_path / "runs" / f"job-{name}" and (run_dir / "model.safetensors").is_file()
        assert json.loads((run_dir / "labels.json").read_text())["labels"] == [sorted(datasets[name])]
        assert json.loads((run_dir / "config.json").read_text())["run"]["data"]["train"].endswith(f"{name}.csv")
        assert [r["epoch"] for r in final.history] == [1, 2, 3]
        assert Predictor.load(run_dir).labels == [sorted(datasets[name])]
    assert len({f.run_dir for f in finals.values()}) == 3

    assert {j.job_id for j in registry.jobs("alice")} == {"job-a1", "job-a2"}
    assert [j.job_id for j in registry.jobs("bob")] == ["job-b1"]
    assert registry.get("job-b1", "alice") is None and registry.get("job-a1", "bob") is None
    assert registry.get("job-b1", "bob") is jobs["b1"]

    messages = [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]
    assert not [m for m in messages if "ScriptRunContext" in m], messages
    assert not [r for r in caplog.records if r.name.startswith("core")], caplog.records
