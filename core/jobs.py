"""Background training jobs: a worker thread, a stop event and a lock-protected snapshot.

The worker thread runs ``core.pipeline.train_run`` and turns its events into a ``JobSnapshot``
that a UI can poll (``job.snapshot()``) without ever touching the trainer. A ``PretrainJob`` does
the same for ``core.pretrain.pretrain`` (a ``PretrainSnapshot``), a ``NgramFitJob`` for
``core.wide.fit_ngrams_run`` (a ``NgramFitSnapshot``). Jobs belong to an owner (one browser session);
``JobRegistry.jobs(owner)`` never shows another owner's jobs.
"""

from __future__ import annotations

import copy
import math
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from core.runs import DEFAULT_RUNS_DIR, new_run_id, safe_run_id
from core.training import AfterBatch, AfterEpoch, AfterFit, BeforeFit

FINISHED = ("completed", "cancelled", "failed", "diverged")


@dataclass(frozen=True)
class JobSnapshot:
    job_id: str
    owner: str
    status: str  # queued | running | completed | cancelled | failed | diverged
    message: str = ""
    run_dir: str = ""
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    loss: float | None = None
    lr: float | None = None
    tokens_per_s: float = 0.0
    elapsed: float = 0.0
    eta_seconds: float | None = None
    history: tuple[dict, ...] = ()  # one record per finished epoch
    batch_losses: tuple[tuple[int, float], ...] = ()  # (global step, loss), thinned
    log: tuple[str, ...] = ()
    started: float = 0.0
    finished: float | None = None
    metrics: dict = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    @property
    def progress(self) -> float:
        total = self.epochs * max(self.steps_per_epoch, 1)
        if self.status == "completed":
            return 1.0
        return min(1.0, ((max(self.epoch - 1, 0)) * self.steps_per_epoch + self.step) / total) if total else 0.0


class BackgroundJob:
    """A daemon worker thread (the subclass's ``_run``), a stop event and a lock-protected frozen snapshot.

    Any thread may call ``start``, ``stop``, ``snapshot`` and ``join``; only the worker calls
    ``_update`` and ``_log``, which swap in a new snapshot so readers never see one half-written.
    """

    MAX_LOG_LINES = 200

    def _init_worker(self, snapshot, name: str) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._snapshot = snapshot
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def snapshot(self):
        with self._lock:
            return self._snapshot

    def join(self, timeout: float | None = None):
        self._thread.join(timeout)
        return self.snapshot()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _update(self, **changes) -> None:
        with self._lock:
            self._snapshot = replace(self._snapshot, **changes)

    def _log(self, line: str) -> None:
        with self._lock:
            log = (self._snapshot.log + (line,))[-self.MAX_LOG_LINES:]
            self._snapshot = replace(self._snapshot, log=log)


class TrainingJob(BackgroundJob):
    """One training run in a daemon thread. ``stop()`` cancels within one batch."""

    MAX_BATCH_POINTS = 2000

    def __init__(self, config, owner: str, *, runs_dir: str | Path = DEFAULT_RUNS_DIR, splits=None,
                 run_id: str | None = None, train_fn: Callable | None = None):
        self.config = config
        self.owner = owner
        self.job_id = run_id or new_run_id()
        self.runs_dir = Path(runs_dir)
        self._splits = splits
        self._train_fn = train_fn
        self._init_worker(JobSnapshot(self.job_id, owner, "queued", run_dir=str(self.runs_dir / self.job_id),
                                      started=time.time()), name=f"train-{self.job_id}")

    def _on_event(self, event) -> None:
        if isinstance(event, BeforeFit):
            self._update(status="running", epochs=event.epochs, steps_per_epoch=event.steps_per_epoch,
                         epoch=event.start_epoch)
        elif isinstance(event, AfterBatch):
            with self._lock:
                snap = self._snapshot
                points = snap.batch_losses + ((event.global_step, round(event.loss, 5)),)
                if len(points) > self.MAX_BATCH_POINTS:
                    points = points[::2]
                done = (event.epoch - 1) * event.steps_per_epoch + event.step
                total = snap.epochs * event.steps_per_epoch
                eta = event.elapsed / done * (total - done) if done else None
                self._snapshot = replace(snap, epoch=event.epoch, step=event.step,
                                         steps_per_epoch=event.steps_per_epoch, loss=event.loss, lr=event.lr,
                                         tokens_per_s=event.tokens_per_s, elapsed=event.elapsed,
                                         eta_seconds=eta, batch_losses=points)
        elif isinstance(event, AfterEpoch):
            with self._lock:
                self._snapshot = replace(self._snapshot, history=self._snapshot.history + (copy.deepcopy(event.record),))
        elif isinstance(event, AfterFit):
            pass  # the final status is set after the run is saved

    def _run(self) -> None:
        from core.pipeline import train_run

        self._update(status="running")
        train = self._train_fn or train_run
        try:
            result = train(self.config, splits=self._splits, runs_dir=self.runs_dir, run_id=self.job_id,
                           callbacks=[self._on_event], stop=self._stop, log=self._log)
            self._update(status=result.status, message=result.message, run_dir=str(result.run_dir),
                         metrics=result.metrics, finished=time.time())
        except Exception as err:  # the job reports the failure; the app keeps running
            self._log(traceback.format_exc(limit=3))
            self._update(status="failed", message=f"{type(err).__name__}: {err}", finished=time.time())


@dataclass(frozen=True)
class PretrainSnapshot:
    job_id: str
    owner: str
    status: str  # queued | running | completed | cancelled | failed | diverged
    message: str = ""
    run_dir: str = ""  # the encoder folder
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    epochs: int = 0
    loss: float | None = None  # the last batch's
    epoch_loss: float | None = None  # the current epoch's mean so far
    lr: float | None = None
    tokens_per_s: float = 0.0
    elapsed: float = 0.0
    eta_seconds: float | None = None
    history: tuple[dict, ...] = ()  # one record per finished epoch (held-out loss and perplexity)
    batch_losses: tuple[tuple[int, float], ...] = ()  # (step, loss), thinned
    log: tuple[str, ...] = ()
    started: float = 0.0
    finished: float | None = None
    metrics: dict = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    @property
    def perplexity(self) -> float | None:
        """Training perplexity of the current epoch so far."""
        return None if self.epoch_loss is None else math.exp(min(50.0, self.epoch_loss))

    @property
    def progress(self) -> float:
        if self.status == "completed":
            return 1.0
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0


class PretrainJob(BackgroundJob):
    """Language-model pretraining (``core.pretrain.pretrain``) in a daemon thread. ``stop()`` cancels
    within one batch; the encoder keeps what it learned (status ``cancelled``)."""

    MAX_BATCH_POINTS = 2000

    def __init__(self, config, owner: str, *, texts=None, encoders_dir: str | Path | None = None,
                 run_id: str | None = None):
        from core.pretrain import DEFAULT_ENCODERS_DIR

        self.config = config  # an EncoderRunConfig
        self.owner = owner
        self.job_id = safe_run_id(run_id) if run_id else new_run_id("encoder")
        self.encoders_dir = Path(encoders_dir or DEFAULT_ENCODERS_DIR)
        self._texts = None if texts is None else list(texts)
        self._init_worker(PretrainSnapshot(self.job_id, owner, "queued", run_dir=str(self.encoders_dir / self.job_id),
                                           epochs=config.pretrain.epochs, started=time.time()),
                          name=f"pretrain-{self.job_id}")

    def _on_progress(self, event: dict) -> None:
        with self._lock:
            snap = self._snapshot
            points = snap.batch_losses + ((event["step"], round(event["loss"], 5)),)
            if len(points) > self.MAX_BATCH_POINTS:
                points = points[::2]
            step, total, elapsed = event["step"], event["total_steps"], event.get("elapsed", 0.0)
            eta = elapsed / step * (total - step) if step else None
            self._snapshot = replace(snap, step=step, total_steps=total, epoch=event.get("epoch", snap.epoch),
                                     epochs=event.get("epochs", snap.epochs), loss=event["loss"],
                                     epoch_loss=event.get("epoch_loss"), lr=event.get("lr"),
                                     tokens_per_s=event.get("tokens_per_s", 0.0), elapsed=elapsed,
                                     eta_seconds=eta, batch_losses=points)

    def _on_epoch(self, record: dict) -> None:
        with self._lock:
            self._snapshot = replace(self._snapshot, history=self._snapshot.history + (copy.deepcopy(record),))

    def _run(self) -> None:
        from core.pretrain import pretrain

        self._update(status="running")
        try:
            result = pretrain(self.config, texts=self._texts, out_dir=self.encoders_dir, run_id=self.job_id,
                              stop=self._stop, log=self._log, progress=self._on_progress, on_epoch=self._on_epoch)
            self._update(status=result.status, message=result.message, run_dir=str(result.run_dir),
                         metrics=result.metrics, eta_seconds=0.0 if result.status == "completed" else None,
                         finished=time.time())
        except Exception as err:  # the job reports the failure; the app keeps running
            self._log(traceback.format_exc(limit=3))
            self._update(status="failed", message=f"{type(err).__name__}: {err}", finished=time.time())


@dataclass(frozen=True)
class NgramFitSnapshot:
    job_id: str
    owner: str
    status: str  # queued | running | completed | failed
    message: str = ""
    run_dir: str = ""  # the new run's folder
    source: str = ""  # the run whose LSTM the new run keeps (never modified)
    ngrams: int = 0
    log: tuple[str, ...] = ()
    started: float = 0.0
    finished: float | None = None
    metrics: dict = field(default_factory=dict)  # the new run's metrics.json
    # per label column: {"column", "valid_accuracy_lstm", "valid_accuracy", "weight", "C"}
    gains: tuple[dict, ...] = ()

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    @property
    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started


class NgramFitJob(BackgroundJob):
    """``core.wide.fit_ngrams_run`` in a daemon thread: a new run with the finished run ``source``'s
    LSTM plus an n-gram part. It has no stop: the fit takes seconds to minutes and saves at its end."""

    def __init__(self, source: str | Path, owner: str, *, ngrams: int = 3, buckets: int | None = None,
                 splits=None, runs_dir: str | Path = DEFAULT_RUNS_DIR, run_id: str | None = None):
        from core.models import ModelConfig

        self.source = Path(source)
        self.owner = owner
        self.ngrams = ngrams
        self.buckets = ModelConfig.ngram_buckets if buckets is None else buckets
        self.job_id = safe_run_id(run_id) if run_id else new_run_id()
        self.runs_dir = Path(runs_dir)
        self._splits = splits
        self._init_worker(NgramFitSnapshot(self.job_id, owner, "queued", run_dir=str(self.runs_dir / self.job_id),
                                           source=str(self.source), ngrams=ngrams, started=time.time()),
                          name=f"ngrams-{self.job_id}")

    def _run(self) -> None:
        import json

        from core.data import DataError
        from core.runs import RunError
        from core.wide import fit_ngrams_run

        # errors a user can cause (a vanished folder, missing data, an unsuitable run): their one line is the message
        user_errors = (DataError, RunError, ValueError, FileNotFoundError)
        self._update(status="running")
        try:
            try:  # the source run's validation scores: its LSTM alone, on the same split
                before = json.loads((self.source / "metrics.json").read_text(encoding="utf-8")).get("valid") or {}
            except (OSError, ValueError, AttributeError):
                before = {}  # fit_ngrams_run names the problem when the run itself is unreadable
            result = fit_ngrams_run(self.source, self.ngrams, self.buckets, runs_dir=self.runs_dir,
                                    run_id=self.job_id, log=self._log, splits=self._splits)
            config = json.loads((Path(result.run_dir) / "config.json").read_text(encoding="utf-8"))
            gains = self._gains(before, result.metrics, config.get("label_columns") or [])
            self._update(status=result.status, message=result.message, run_dir=str(result.run_dir),
                         metrics=result.metrics, gains=gains, finished=time.time())
        except Exception as err:  # the job reports the failure; the app keeps running
            known = isinstance(err, user_errors)
            if not known:
                self._log(traceback.format_exc(limit=3))
            message = " ".join(str(err).split()) if known else f"{type(err).__name__}: {err}"
            self._update(status="failed", message=message, finished=time.time())

    @staticmethod
    def _gains(before: dict, metrics: dict, columns: list[str]) -> tuple[dict, ...]:
        """Validation accuracy per label column before (the source run: its LSTM alone) and after."""
        after = metrics.get("valid") or {}
        gains = []
        for fit in (metrics.get("ngram_fit") or {}).get("tasks", []):
            key = str(fit["task"])
            old, new = (before.get("tasks") or {}).get(key, {}), (after.get("tasks") or {}).get(key, {})
            gains.append({"column": columns[fit["task"]] if fit["task"] < len(columns) else key,
                          "valid_accuracy_lstm": old.get("accuracy"), "valid_accuracy": new.get("accuracy"),
                          "weight": fit["weight"], "C": fit["C"]})
        return tuple(gains)


class JobRegistry:
    """All jobs of this process (training, pretraining, n-gram fits), by owner. Thread-safe; owners only ever
    see their own jobs."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: dict[str, BackgroundJob] = {}

    def submit(self, config, owner: str, **kwargs) -> TrainingJob:
        job = TrainingJob(config, owner, **kwargs)
        with self._lock:
            self._jobs[job.job_id] = job
        return job.start()

    def add(self, job: BackgroundJob) -> BackgroundJob:
        with self._lock:
            self._jobs[job.job_id] = job
        return job

    def get(self, job_id: str, owner: str) -> BackgroundJob | None:
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    def jobs(self, owner: str) -> list[BackgroundJob]:
        with self._lock:
            return [j for j in self._jobs.values() if j.owner == owner]

    def running_run_dirs(self, exclude_owner: str | None = None) -> set[str]:
        """Run folders of unfinished jobs (of other owners): the app hides these."""
        with self._lock:
            jobs = list(self._jobs.values())
        return {str(Path(j.snapshot().run_dir).resolve()) for j in jobs
                if j.owner != exclude_owner and not j.snapshot().done}
