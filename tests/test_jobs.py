"""Background training jobs and the per-owner registry (core/jobs.py)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from core.jobs import JobRegistry, JobSnapshot, NgramFitJob, PretrainJob, TrainingJob
from core.models import ModelConfig
from core.pipeline import RunResult, load_splits, train_run
from core.predict import Predictor
from core.pretrain import EncoderRunConfig, PretrainConfig, is_encoder_dir
from core.runs import read_status
from core.text import TextConfig
from core.training import AfterBatch, AfterEpoch, AfterFit, BeforeFit
from helpers import tiny_config, write_keyword_csv

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread


def wait_for(job: TrainingJob, condition, timeout: float = 60.0) -> JobSnapshot:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = job.snapshot()
        if condition(snap) or snap.done:
            return snap
        time.sleep(0.005)
    raise AssertionError(f"job never reached the condition; last snapshot {job.snapshot()}")


def test_snapshot_progresses_and_completes(tmp_path):
    registry = JobRegistry()
    job = registry.submit(tiny_config(write_keyword_csv(tmp_path / "t.csv", 200), epochs=4), "alice", runs_dir=tmp_path)
    seen = []
    while not job.snapshot().done:
        seen.append(job.snapshot())
        time.sleep(0.005)
    final = job.join(30)
    assert final.status == "completed" and final.finished is not None and final.progress == 1.0
    assert final.run_dir == str(tmp_path / job.job_id)
    assert read_status(final.run_dir)["status"] == "completed"
    assert (Path(final.run_dir) / "model.safetensors").is_file()
    assert [r["epoch"] for r in final.history] == [1, 2, 3, 4]
    assert final.epochs == 4 and final.steps_per_epoch == 10  # 160 training rows / 16
    assert [step for step, _ in final.batch_losses] == list(range(1, 41))
    assert final.metrics["test"]["primary"]["n"] == 20
    assert any(line.startswith("vocabulary:") for line in final.log)
    running = [s for s in seen if s.status == "running" and s.step > 0]
    assert running, "no snapshot was taken while the job ran"
    progress = [s.progress for s in running]
    assert progress == sorted(progress) and 0 < progress[0] < 1
    assert all(s.eta_seconds is not None and s.eta_seconds >= 0 for s in running)
    with pytest.raises(Exception):  # snapshots are frozen: a UI cannot change the job through one
        final.status = "failed"


def test_stop_cancels_the_job(tmp_path):
    registry = JobRegistry()
    job = registry.submit(tiny_config(write_keyword_csv(tmp_path / "t.csv", 200), epochs=200), "bob", runs_dir=tmp_path)
    wait_for(job, lambda s: s.step >= 2)
    job.stop()
    final = job.join(30)
    assert final.status == "cancelled" and "stopped by the user" in final.message
    assert not job.alive
    assert read_status(final.run_dir)["status"] == "cancelled"
    assert not (Path(final.run_dir) / "model.safetensors").exists()
    assert final.epoch < 200


def test_a_failed_job_records_the_message(tmp_path):
    registry = JobRegistry()
    job = registry.submit(tiny_config(tmp_path / "no-such-file.csv", epochs=3), "carol", runs_dir=tmp_path)
    final = job.join(30)
    assert final.status == "failed" and final.done
    assert "no-such-file.csv" in final.message and final.message.startswith("DataError")
    assert any("Traceback" in line for line in final.log)


def test_owners_only_see_their_own_jobs_and_runs(tmp_path):
    data = write_keyword_csv(tmp_path / "t.csv", 200)
    registry = JobRegistry()
    a1 = registry.submit(tiny_config(data, epochs=1), "alice", runs_dir=tmp_path)
    a2 = registry.submit(tiny_config(data, epochs=500), "alice", runs_dir=tmp_path)
    b1 = registry.submit(tiny_config(data, epochs=500), "bob", runs_dir=tmp_path)
    try:
        assert {j.job_id for j in registry.jobs("alice")} == {a1.job_id, a2.job_id}
        assert [j.job_id for j in registry.jobs("bob")] == [b1.job_id]
        assert registry.jobs("mallory") == []
        assert registry.get(a1.job_id, "alice") is a1
        assert registry.get(a1.job_id, "bob") is None and registry.get(b1.job_id, "alice") is None
        assert registry.get("no-such-job", "alice") is None
        wait_for(b1, lambda s: s.step >= 1)
        # alice's view hides bob's unfinished run folder, and bob's view hides alice's
        assert registry.running_run_dirs(exclude_owner="alice") == {str((tmp_path / b1.job_id).resolve())}
        assert str((tmp_path / b1.job_id).resolve()) not in registry.running_run_dirs(exclude_owner="bob")
    finally:
        for job in (a2, b1):
            job.stop()
    assert a1.join(60).status == "completed"
    assert {job.join(60).status for job in (a2, b1)} == {"cancelled"}
    assert registry.running_run_dirs() == set()


def fake_train(config, *, splits, runs_dir, run_id, callbacks, stop, log):
    """A cheap stand-in for train_run that emits the same events (for the registry stress test)."""
    epochs, steps = 3, 5
    emit = lambda event: [cb(event) for cb in callbacks]  # noqa: E731
    emit(BeforeFit(epochs, steps, 50, 10, "cpu", 100))
    step = 0
    history = []
    for epoch in range(1, epochs + 1):
        for s in range(1, steps + 1):
            step += 1
            emit(AfterBatch(epoch, s, steps, step, 1.0 / step, 0.01, 1000.0, 0.001 * step))
        record = {"epoch": epoch, "train_loss": 1.0 / epoch}
        history.append(record)
        emit(AfterEpoch(epoch, record, True))
        log(f"epoch {epoch}")
    emit(AfterFit("completed", "", epochs, 1.0))
    return RunResult(Path(runs_dir) / run_id, "completed", "", {"owner": config["owner"]}, history)


def test_registry_loses_no_updates_under_32_threads(tmp_path):
    registry = JobRegistry()
    per_thread, n_threads = 4, 32
    submitted: dict[str, list[str]] = {}
    errors = []
    lock = threading.Lock()
    start = threading.Barrier(n_threads)

    def worker(i: int):
        owner = f"owner{i % 5}"
        try:
            start.wait()
            for _ in range(per_thread):
                job = registry.submit({"owner": owner}, owner, runs_dir=tmp_path, train_fn=fake_train)
                with lock:
                    submitted.setdefault(owner, []).append(job.job_id)
                for other in registry.jobs(owner):  # read while others write
                    assert other.owner == owner
                    other.snapshot()
                registry.running_run_dirs(exclude_owner=owner)
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sum(len(ids) for ids in submitted.values()) == n_threads * per_thread
    assert len({j for ids in submitted.values() for j in ids}) == n_threads * per_thread  # unique job ids
    for owner, ids in submitted.items():
        jobs = registry.jobs(owner)
        assert sorted(j.job_id for j in jobs) == sorted(ids)
        for job in jobs:
            final = job.join(30)
            assert final.status == "completed" and final.metrics == {"owner": owner}
            assert [r["epoch"] for r in final.history] == [1, 2, 3]
            assert [s for s, _ in final.batch_losses] == list(range(1, 16))
            assert final.log == ("epoch 1", "epoch 2", "epoch 3")


# ---- language-model pretraining jobs

def cycle_texts(n: int, seed: int = 0) -> list[str]:
    """Runs of consecutive words of w0..w9: each word gives its neighbours away."""
    import random

    rng = random.Random(seed)
    starts = [rng.randrange(10) for _ in range(n)]
    return [" ".join(f"w{(start + k) % 10}" for k in range(12)) for start in starts]


def tiny_encoder_config(epochs: int) -> EncoderRunConfig:
    return EncoderRunConfig(pretrain=PretrainConfig(texts=["in memory"], epochs=epochs, batch_size=16, lr=0.02,
                                                    warmup_steps=0, device="cpu", valid_fraction=0.1),
                            text=TextConfig(tokenizer="whitespace"),
                            model=ModelConfig(embedding_dim=8, hidden_dim=8, dropout=0.0))


def test_a_pretrain_job_learns_an_encoder_and_reports_its_progress(tmp_path):
    registry = JobRegistry()
    job = registry.add(PretrainJob(tiny_encoder_config(epochs=4), "alice", texts=cycle_texts(300),
                                   encoders_dir=tmp_path / "encoders"))
    assert registry.jobs("alice") == [job] and registry.jobs("bob") == []
    job.start()
    seen = []
    while not job.snapshot().done:
        seen.append(job.snapshot())
        time.sleep(0.002)
    final = job.join(60)
    assert final.status == "completed" and final.progress == 1.0 and final.finished is not None, final.message
    folder = Path(final.run_dir)
    assert folder == tmp_path / "encoders" / job.job_id and is_encoder_dir(folder)
    assert (folder / "model.safetensors").is_file() and read_status(folder)["status"] == "completed"
    # 270 texts to learn from in batches of 16: 17 steps per epoch
    assert final.step == final.total_steps == 4 * 17 and final.epochs == 4
    assert [step for step, _ in final.batch_losses] == list(range(1, 69))
    assert [r["epoch"] for r in final.history] == [1, 2, 3, 4]
    perplexities = [r["valid_perplexity"] for r in final.history]
    assert perplexities[-1] < perplexities[0] and perplexities[-1] < 5.0, perplexities  # ten words: ~10 unlearned
    assert final.metrics["valid_perplexity"] == perplexities[-1]
    assert any(line.startswith("300 texts") for line in final.log) and any("status: completed" in l for l in final.log)
    running = [s for s in seen if s.status == "running" and s.step > 0]
    assert running, "no snapshot was taken while the job ran"
    assert [s.progress for s in running] == sorted(s.progress for s in running) and 0 < running[0].progress < 1
    assert all(s.tokens_per_s > 0 and s.eta_seconds is not None and s.perplexity > 1 for s in running)


def test_stopping_a_pretrain_job_keeps_what_it_learned(tmp_path):
    registry = JobRegistry()
    job = registry.add(PretrainJob(tiny_encoder_config(epochs=500), "bob", texts=cycle_texts(300),
                                   encoders_dir=tmp_path / "encoders")).start()
    assert registry.running_run_dirs(exclude_owner="alice") == {str((tmp_path / "encoders" / job.job_id).resolve())}
    wait_for(job, lambda s: len(s.history) >= 1)
    job.stop()
    final = job.join(30)
    assert final.status == "cancelled" and final.message.startswith("stopped after") and not job.alive
    assert final.step < final.total_steps and len(final.history) < 500
    folder = Path(final.run_dir)
    assert read_status(folder)["status"] == "cancelled" and (folder / "model.safetensors").is_file()
    assert final.metrics["epochs_run"] == len(final.history) and final.metrics["valid_perplexity"] < 10
    assert registry.running_run_dirs() == set()


def test_a_pretrain_job_with_too_few_texts_fails_with_the_reason(tmp_path):
    job = PretrainJob(tiny_encoder_config(epochs=1), "carol", texts=["only one", "  "],
                      encoders_dir=tmp_path / "encoders").start()
    final = job.join(30)
    assert final.status == "failed" and "Only 1 non-empty text(s) to pretrain on" in final.message
    assert not (tmp_path / "encoders").exists()  # nothing half-made is left behind


# ---- adding an n-gram part to a finished run

def weak_lstm(train, **overrides):
    """Too small and too briefly trained to read the keywords well: an n-gram part can (as in test_wide)."""
    return tiny_config(train, epochs=1, hidden_dim=4, embedding_dim=4, lr=0.002, valid_fraction=0.2,
                       test_fraction=0.2, seed=7, **overrides)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_an_ngram_fit_job_makes_a_new_run_that_reads_the_keywords(tmp_path):
    data = write_keyword_csv(tmp_path / "reviews.csv", 400, seed=2)
    cfg = weak_lstm(data)
    splits = load_splits(cfg.data, cfg.data.seed_for_split(cfg.train.seed), log=lambda line: None)
    runs = tmp_path / "runs"
    plain = train_run(cfg, splits=splits, runs_dir=runs, run_id="plain", log=lambda line: None)
    before = folder_bytes(plain.run_dir)
    data.unlink()  # as in the app: the in-memory splits are all there is
    registry = JobRegistry()
    job = registry.add(NgramFitJob(plain.run_dir, "alice", ngrams=2, buckets=5000, splits=splits, runs_dir=runs))
    assert job.snapshot().status == "queued" and job.snapshot().run_dir == str(runs / job.job_id)
    job.start()
    assert registry.jobs("bob") == [] and registry.get(job.job_id, "bob") is None
    final = job.join(120)
    assert final.status == "completed" and final.done and final.finished is not None, final.message
    assert final.run_dir == str(runs / job.job_id) and read_status(final.run_dir)["status"] == "completed"
    assert any("n-gram part fitted" in line for line in final.log)
    (gain,) = final.gains
    assert gain["column"] == "label" and gain["weight"] > 0
    # "LSTM alone" is the source run's validation accuracy, which is what the fit started from
    assert gain["valid_accuracy_lstm"] == pytest.approx(plain.metrics["valid"]["accuracy"])
    assert gain["valid_accuracy_lstm"] == pytest.approx(final.metrics["ngram_fit"]["tasks"][0]["valid_lstm"])
    assert gain["valid_accuracy"] == pytest.approx(final.metrics["valid"]["accuracy"])
    assert gain["valid_accuracy"] > gain["valid_accuracy_lstm"] + 0.05
    predictor = Predictor.load(final.run_dir)
    assert predictor.metadata["config"]["model"]["ngrams"] == 2
    assert [p.label for p in predictor.predict(["great", "awful"])] == ["pos", "neg"]
    assert folder_bytes(plain.run_dir) == before  # the source run is never modified
    assert registry.running_run_dirs() == set()


def test_an_ngram_fit_job_that_cannot_fit_says_why_in_one_line(tmp_path):
    data = write_keyword_csv(tmp_path / "reviews.csv", 200, seed=3)
    runs = tmp_path / "runs"
    quiet = {"runs_dir": runs, "log": lambda line: None}
    joint = train_run(weak_lstm(data, ngrams=1), run_id="joint", **quiet)
    ensemble = train_run(weak_lstm(data, ensemble=2), run_id="pair", **quiet)
    moved = tmp_path / "moved.csv"
    shutil.copyfile(data, moved)
    orphan = train_run(weak_lstm(moved), run_id="orphan", **quiet)
    moved.unlink()
    gone = train_run(weak_lstm(data), run_id="gone", **quiet)
    shutil.rmtree(gone.run_dir)
    existing = sorted(p.name for p in runs.iterdir())
    kept = {name: folder_bytes(runs / name) for name in existing}

    for source, expected in ((joint.run_dir, "already has an n-gram part"), (ensemble.run_dir, "is an ensemble"),
                             (orphan.run_dir, "moved.csv"), (gone.run_dir, "not found")):
        final = NgramFitJob(source, "carol", ngrams=3, buckets=5000, runs_dir=runs).start().join(60)
        assert final.status == "failed" and expected in final.message, (source, final.message)
        assert "\n" not in final.message and not any("Traceback" in line for line in final.log)
        assert final.gains == () and final.metrics == {}
    assert sorted(p.name for p in runs.iterdir()) == existing  # no half-made run is left behind
    assert {name: folder_bytes(runs / name) for name in existing} == kept
