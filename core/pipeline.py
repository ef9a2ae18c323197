"""From data files to a saved run: load, split, tokenise, embed, train, evaluate, save.

``RunConfig`` gathers the four config dataclasses; its JSON form is ``config.json`` in a run and
what ``--config FILE.json`` reads. ``train_run`` is the one path used by the CLI, the app's
background jobs and the benchmarks.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from core import data as data_mod
from core.data import DataError, TextTable
from core.embeddings import build_embedding_matrix
from core.models import ModelConfig, build_model
from core.runs import (DEFAULT_RUNS_DIR, RunError, append_jsonl, atomic_save, atomic_write_json,
                       new_run_id, safe_run_id, write_status)
from core.text import TextConfig, TextEncoder, Vocabulary
from core.training import AfterEpoch, Callback, FitResult, TrainConfig, evaluate_tasks, fit, resolve_device


@dataclass
class DataConfig:
    train: str = ""  # CSV/TSV/JSONL path (optionally .gz)
    valid: str = ""  # optional; carved from train when empty
    test: str = ""  # optional; carved from train when empty
    dataset: str = ""  # built-in dataset name instead of files: chinese-reviews, imdb, sst2
    text_col: str = "text"
    label_col: str = "label"  # several columns, comma-separated, train one head each
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    # seed of the carved train/valid/test split; -1 = the training seed. Fix it to train several
    # seeds on one split (and one vocabulary), e.g. the members of an ensemble.
    split_seed: int = -1

    @property
    def label_cols(self) -> list[str]:
        return [c.strip() for c in self.label_col.split(",") if c.strip()]

    def seed_for_split(self, train_seed: int) -> int:
        return train_seed if self.split_seed is None or self.split_seed < 0 else self.split_seed


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrained_vectors: str = ""  # glove-6b-50d, or a path to a GloVe/word2vec/fastText text file
    # a finished run to start from (fine-tuning): its LSTM, attention and the vectors of the words
    # both vocabularies share; the heads too when the labels are the same
    init_from: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> "RunConfig":
        """Each section's checks, and those that span sections."""
        self.text.validate()
        self.model.validate()
        self.train.validate()
        if self.train.ngram_fit == "separate" and not self.model.ngrams:
            raise ValueError("The 'ngram_fit' parameter 'separate' fits the n-gram part after the LSTM: "
                             "give --ngrams 1, 2 or 3 too, or leave --ngram-fit at joint.")
        if self.init_from and not Path(self.init_from).is_dir():
            raise ValueError(f"--init-from {self.init_from}: run directory not found. `python -m core runs` "
                             f"lists the runs; the demo model is artifacts/demo.")
        if self.text.extend_vocab and not self.pretrained_vectors:
            raise ValueError("The 'extend_vocab' parameter adds words of the pretrained vectors to the vocabulary: "
                             "give --pretrained-vectors too, or set it to 0.")
        return self

    @classmethod
    def from_dict(cls, raw: dict) -> "RunConfig":
        if not isinstance(raw, dict):
            raise ValueError("A config file must hold one JSON object with sections data, text, model, train.")
        sections = {"data": DataConfig, "text": TextConfig, "model": ModelConfig, "train": TrainConfig}
        unknown = set(raw) - set(sections) - {"pretrained_vectors", "init_from"}
        if unknown:
            raise ValueError(f"Unknown config section(s) {sorted(unknown)}; "
                             f"expected {sorted(sections) + ['pretrained_vectors', 'init_from']}.")
        built = {}
        for name, cls_ in sections.items():
            part = raw.get(name, {}) or {}
            known = {f.name for f in fields(cls_)}
            bad = set(part) - known
            if bad:
                raise ValueError(f"Unknown key(s) {sorted(bad)} in config section '{name}'; "
                                 f"known keys: {sorted(known)}.")
            built[name] = cls_(**part)
        return cls(**built, pretrained_vectors=raw.get("pretrained_vectors", "") or "",
                   init_from=raw.get("init_from", "") or "")

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"Config file {path} not found.") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"Config file {path} is not valid JSON: {err}.") from None
        return cls.from_dict(raw)


@dataclass
class Splits:
    train: TextTable
    valid: TextTable
    test: TextTable
    report: object | None = None  # the training file's ValidationReport
    notes: list[str] = field(default_factory=list)


def download_progress(log: Callable[[str], None]) -> Callable[[int, int], None]:
    """A progress callback for dataset downloads that logs every tenth of the way."""
    shown = {"tenth": -1}

    def report(done: int, total: int) -> None:
        tenth = done * 10 // total if total else 0
        if tenth != shown["tenth"]:
            shown["tenth"] = tenth
            size = f"{done / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
            log(f"downloading: {size}")
    return report


def load_splits(cfg: DataConfig, seed: int = 13, log: Callable[[str], None] = print) -> Splits:
    """Read the training data (files or a built-in dataset) and carve missing splits from train."""
    notes: list[str] = []
    report = None
    if cfg.dataset:
        parts = data_mod.load_builtin(cfg.dataset, progress=download_progress(log))
        train = parts["train"] if "train" in parts else parts["all"]
        valid = parts.get("dev", parts.get("valid"))
        test = parts.get("test")
    elif cfg.train:
        train, report = data_mod.load_table(cfg.train, cfg.text_col, cfg.label_cols)
        notes += report.notes + report.warnings
        valid = data_mod.load_table(cfg.valid, cfg.text_col, cfg.label_cols, held_out=True)[0] if cfg.valid else None
        test = data_mod.load_table(cfg.test, cfg.text_col, cfg.label_cols, held_out=True)[0] if cfg.test else None
    else:
        raise DataError("No training data: give --train PATH (CSV/TSV/JSONL) or --dataset NAME.")
    valid_fraction = 0.0 if valid is not None else cfg.valid_fraction
    test_fraction = 0.0 if test is not None else cfg.test_fraction
    if valid_fraction or test_fraction:
        train, carved_valid, carved_test = data_mod.split_table(train, valid_fraction, test_fraction, seed)
        valid = valid if valid is not None else carved_valid
        test = test if test is not None else carved_test
    if valid is None or len(valid) == 0:
        raise DataError("No validation data: give --valid PATH or a valid_fraction above 0.")
    for name, table in (("validation", valid), ("test", test)):
        if table is not None and len(table):
            notes += data_mod.check_same_labels(train, table, name)
    for note in notes:
        log(f"note: {note}")
    return Splits(train, valid, test if test is not None else train.subset([]), report, notes)


def text_config_for(text: TextConfig, model: ModelConfig) -> TextConfig:
    """What the model needs from the encoder: whole texts when it reads them in chunks, sentence
    marks when it is hierarchical. Saved with the vocabulary, so prediction encodes the same way."""
    if not model.chunk_length and not model.hierarchical:
        return text
    return replace(text, truncate=text.truncate and not model.chunk_length,
                   sentence_breaks=text.sentence_breaks or model.hierarchical)


def label_sets_for(table: TextTable) -> list[list[str]]:
    return [sorted(set(table.labels[col])) for col in table.label_columns]


def label_matrix(table: TextTable, label_sets: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(N, tasks) class indices, and a mask of rows whose labels all exist in ``label_sets``."""
    y = np.zeros((len(table), len(label_sets)), dtype=np.int64)
    keep = np.ones(len(table), dtype=bool)
    for k, (col, labels) in enumerate(zip(table.label_columns, label_sets)):
        index = {label: i for i, label in enumerate(labels)}
        for row, label in enumerate(table.labels[col]):
            if label in index:
                y[row, k] = index[label]
            else:
                keep[row] = False
    return y, keep


@dataclass
class RunResult:
    run_dir: Path
    status: str
    message: str
    metrics: dict
    history: list[dict]


def _save_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_save(path, lambda p: save_file(tensors, str(p)))


def _save_checkpoint(path: Path, state: dict) -> None:
    atomic_save(path, lambda p: torch.save(state, p))


def load_checkpoint(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise RunError(f"{run_dir} has no checkpoint.pt to resume from.")
    return torch.load(path, map_location="cpu", weights_only=True)


def _strip_probs(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "probs"}


def train_run(cfg: RunConfig, *, splits: Splits | None = None, runs_dir: str | Path = DEFAULT_RUNS_DIR,
              run_id: str | None = None, callbacks: Sequence[Callback] = (), stop: threading.Event | None = None,
              log: Callable[[str], None] = print, resume: bool = False, distributed=None) -> RunResult:
    """Train one model and save it as a run. Returns when training ends, whatever the status.

    With ``cfg.train.ensemble > 1`` it trains that many seeds and saves an ensemble run instead
    (``core.ensemble.train_ensemble``)."""
    cfg.validate()
    if cfg.train.ensemble > 1 and not resume:
        if distributed is not None:
            raise ValueError("The 'ensemble' parameter trains its members one after another; it cannot be "
                             "combined with torchrun. Train the members with torchrun one by one (same "
                             "--split-seed), then run `python -m core ensemble --runs ...`.")
        from core.ensemble import train_ensemble
        return train_ensemble(cfg, splits=splits, runs_dir=runs_dir, run_id=run_id, callbacks=callbacks,
                              stop=stop, log=log)
    rank_zero = distributed is None or distributed.rank == 0
    run_id = safe_run_id(run_id) if run_id else new_run_id()
    if distributed is not None:  # every rank works in rank 0's run directory; only rank 0 logs
        run_id = distributed.broadcast(run_id)
        log = log if rank_zero else (lambda line: None)
    run_dir = Path(runs_dir) / run_id
    if rank_zero and not resume and (run_dir / "config.json").exists():
        raise RunError(f"Run {run_dir} already exists: pass --resume to continue it, or another --run-id.")
    if resume:
        cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["run"])
    if splits is None:
        splits = load_splits(cfg.data, cfg.data.seed_for_split(cfg.train.seed), log)
    label_sets = label_sets_for(splits.train)
    cfg.model.validate()
    cfg.text = text_config_for(cfg.text, cfg.model)

    if resume:
        vocab = Vocabulary.load(run_dir / "vocab.json")
        encoder = TextEncoder(cfg.text, vocab)
    elif distributed is not None:
        encoder = distributed.shared_encoder(lambda: fit_encoder(cfg, splits.train.texts), cfg.text)
    else:
        encoder = fit_encoder(cfg, splits.train.texts)
    log(f"vocabulary: {len(encoder.vocab)} tokens (max {cfg.text.max_vocab_size}, min_freq {cfg.text.min_freq}"
        + (f", plus words of {cfg.pretrained_vectors}" if cfg.text.extend_vocab else "") + ")")

    model, coverage = build_initial_model(cfg, encoder, label_sets, log)

    def encode(table: TextTable):
        y, keep = label_matrix(table, label_sets)
        index = np.flatnonzero(keep)
        if len(index) < len(table):
            log(f"note: {len(table) - len(index)} rows dropped: their labels never occur in the training data")
        return encoder.encode_many([table.texts[i] for i in index]), y[index], table.subset(index.tolist())

    train_seqs, train_y, _ = encode(splits.train)
    valid_seqs, valid_y, _ = encode(splits.valid)
    test_seqs, test_y, test_table = encode(splits.test)
    log(f"data: {len(train_seqs)} train, {len(valid_seqs)} valid, {len(test_seqs)} test; "
        f"labels {label_sets if len(label_sets) > 1 else label_sets[0]}")

    if rank_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_run_files(run_dir, cfg, encoder, splits.train.label_columns, label_sets, coverage)
            # the test split is kept so that the app can explain and inspect test examples later
            atomic_write_text_csv(run_dir / "test.csv", test_table, cfg.data.text_col)
        write_status(run_dir, "running", "", created=_created(run_dir), device=str(resolve_device(cfg.train.device)))

    resume_state = load_checkpoint(run_dir) if resume else None
    if resume_state is not None and rank_zero:
        # history.jsonl is rewritten from the checkpoint so it matches the weights exactly
        (run_dir / "history.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in resume_state["progress"]["history"]), encoding="utf-8")
    return fit_and_publish(cfg, run_dir, model, (train_seqs, train_y), (valid_seqs, valid_y), (test_seqs, test_y),
                           label_sets, callbacks=callbacks, stop=stop, log=log, resume_state=resume_state,
                           distributed=distributed)


def fit_encoder(cfg: RunConfig, texts: Sequence[str]) -> TextEncoder:
    """The vocabulary of the training texts, extended with the vectors' most frequent words when asked."""
    encoder = TextEncoder.fit(cfg.text, texts)
    if cfg.text.extend_vocab:
        from core.embeddings import vector_words
        encoder.vocab = encoder.vocab.extended(vector_words(cfg.pretrained_vectors, cfg.text.extend_vocab))
    return encoder


def build_initial_model(cfg: RunConfig, encoder: TextEncoder, label_sets: list[list[str]],
                        log: Callable[[str], None]):
    """The untrained model for ``cfg`` (its embedding from pretrained vectors when asked for).

    Sets ``cfg.model`` to the complete model config (vocabulary size, classes, embedding size)."""
    model_cfg = ModelConfig(**{**asdict(cfg.model), "vocab_size": len(encoder.vocab),
                               "num_classes": [len(s) for s in label_sets]})
    matrix = coverage = None
    if cfg.pretrained_vectors:
        matrix, coverage = build_embedding_matrix(encoder.vocab, cfg.pretrained_vectors, seed=cfg.train.seed)
        if model_cfg.embedding_dim != coverage.dim:
            log(f"note: embedding_dim set to {coverage.dim} to match {cfg.pretrained_vectors}")
            model_cfg.embedding_dim = coverage.dim
        log(str(coverage))
    cfg.model = model_cfg
    torch.manual_seed(cfg.train.seed)
    model = build_model(model_cfg)
    if matrix is not None:
        with torch.no_grad():
            model.embedding.weight.copy_(torch.from_numpy(matrix))
    if cfg.init_from:
        initialise_from_run(model, encoder, label_sets, cfg.init_from, log)
    return model, coverage


# what must match for a run's weights to fit the new model
TRANSFER_FIELDS = ("embedding_dim", "hidden_dim", "num_layers", "bidirectional", "pooling", "layer_norm",
                   "residual", "hierarchical")


def initialise_from_run(model, encoder: TextEncoder, label_sets: list[list[str]], source: str | Path,
                        log: Callable[[str], None]) -> None:
    """Start ``model`` from a finished run: the word vectors of the words both vocabularies hold,
    every LSTM/attention/norm weight, and the heads when the labels are the same. ``source`` may
    also be a pretrained encoder (``python -m core pretrain``): its LSTM and word vectors."""
    from core.pretrain import is_encoder_dir, load_encoder

    if is_encoder_dir(source):
        theirs_cfg, their_vocab, theirs = load_encoder(source)
        their_labels, compared = None, [f for f in TRANSFER_FIELDS if f != "pooling"]
        if getattr(model.config, "hierarchical", False):
            raise ValueError(f"--init-from {source}: a pretrained encoder starts flat models only; "
                             f"train without --hierarchical to start from it.")
    else:
        from core.predict import Predictor
        source_model = Predictor.load(source)
        if not isinstance(source_model.model, type(model)):
            raise RunError(f"--init-from {source}: it is a {type(source_model.model).__name__}; start from a "
                           f"single model run of the same kind (not an ensemble).")
        theirs_cfg, their_vocab, their_labels = source_model.model.config, source_model.encoder.vocab, \
            source_model.labels
        theirs, compared = source_model.model.state_dict(), TRANSFER_FIELDS
    mine_cfg = model.config
    differ = [f for f in compared if getattr(theirs_cfg, f) != getattr(mine_cfg, f)]
    if differ:
        flags = " ".join(f"--{f.replace('_', '-')} {getattr(theirs_cfg, f)}" for f in differ)
        raise ValueError(f"--init-from {source}: its model differs in {', '.join(differ)}; train with the same "
                         f"architecture ({flags}) to start from it.")
    mine = model.state_dict()
    same_labels = their_labels == label_sets
    copied = 0
    for name, tensor in mine.items():
        if name.startswith("embedding.") or name.startswith("ngrams."):
            continue
        if name.startswith("heads.") and not same_labels:
            continue
        if name in theirs and theirs[name].shape == tensor.shape:
            mine[name] = theirs[name].clone()
            copied += 1
    rows = [(i, their_vocab.stoi.get(word)) for i, word in enumerate(encoder.vocab.itos)]
    rows = [(i, j) for i, j in rows if j is not None and i > 1]  # not <pad>, <unk>
    if rows:
        index, their_index = torch.tensor([i for i, _ in rows]), torch.tensor([j for _, j in rows])
        mine["embedding.weight"] = mine["embedding.weight"].clone()
        mine["embedding.weight"][index] = theirs["embedding.weight"][their_index]
    model.load_state_dict(mine)
    log(f"initialised from {source}: {copied} weight tensors"
        + ("" if same_labels else " (new heads: " + ("a pretrained encoder has none)" if their_labels is None
                                                     else "the labels differ)"))
        + f", vectors of {len(rows)} of {len(encoder.vocab)} words")


def write_run_files(run_dir: Path, cfg: RunConfig, encoder: TextEncoder, label_columns: list[str],
                    label_sets: list[list[str]], coverage=None, **extra) -> None:
    """config.json, vocab.json, labels.json and an empty history: what a run needs before training."""
    atomic_write_json(run_dir / "config.json", {
        "run": cfg.to_dict(), "model": cfg.model.to_dict(), "label_columns": label_columns,
        "text_col": cfg.data.text_col, "embedding_coverage": coverage.to_dict() if coverage else None, **extra})
    atomic_write_json(run_dir / "vocab.json", {"tokenizer": asdict(cfg.text), **encoder.vocab.to_json()})
    atomic_write_json(run_dir / "labels.json", {"columns": label_columns, "labels": label_sets})
    (run_dir / "history.jsonl").write_text("", encoding="utf-8")


def fit_and_publish(cfg: RunConfig, run_dir: Path, model, train, valid, test, label_sets, *,
                    callbacks: Sequence[Callback] = (), stop: threading.Event | None = None,
                    log: Callable[[str], None] = print, resume_state: dict | None = None,
                    distributed=None) -> RunResult:
    """Train on encoded ``(sequences, y)`` splits, then publish the best weights and metrics.

    The status file always ends honest: completed, cancelled, diverged, or failed with the error."""
    rank_zero = distributed is None or distributed.rank == 0
    (train_seqs, train_y), (valid_seqs, valid_y), (test_seqs, test_y) = train, valid, test

    def record_history(event):
        if isinstance(event, AfterEpoch) and rank_zero:
            append_jsonl(run_dir / "history.jsonl", event.record)
            log(" ".join(f"{k}={v}" for k, v in event.record.items()) + (" *" if event.improved else ""))

    try:
        result: FitResult = fit(
            model, train_seqs, train_y, valid_seqs, valid_y, label_sets, cfg.train,
            callbacks=[record_history, *callbacks], stop=stop,
            checkpoint=lambda st: _save_checkpoint(run_dir / "checkpoint.pt", st),
            save_best=lambda st: _save_weights(run_dir / "best.safetensors", st),
            resume=resume_state, distributed=distributed)
    except Exception as err:  # a bug or a broken environment: keep the run folder honest
        if rank_zero:
            write_status(run_dir, "failed", f"{type(err).__name__}: {err}", created=_created(run_dir),
                         traceback=traceback.format_exc(limit=5))
        raise

    metrics: dict = {}
    if result.status == "completed" and rank_zero:
        model.load_state_dict(result.best_state)
        device = resolve_device(cfg.train.device)
        model.to(device)
        wide = None
        if cfg.train.ngram_fit == "separate" and getattr(model, "ngrams", None) is not None:
            from core.wide import fit_ngram_part
            fit_started = time.perf_counter()
            wide = fit_ngram_part(model, train_seqs, train_y, valid_seqs, valid_y, label_sets,
                                  cfg.train.select_metric, device, log)
            fit_seconds = round(time.perf_counter() - fit_started, 2)
        valid_metrics = _strip_probs(evaluate_tasks(model, valid_seqs, valid_y, label_sets, device))
        test_metrics = _strip_probs(evaluate_tasks(model, test_seqs, test_y, label_sets, device)) \
            if len(test_seqs) else None
        metrics = {"best_epoch": result.best_epoch, "select_metric": cfg.train.select_metric,
                   "valid": valid_metrics, "test": test_metrics,
                   "epochs_run": len(result.history),
                   "train_seconds": round(sum(r["seconds"] for r in result.history), 2)}
        if wide is not None:
            metrics["ngram_fit"], metrics["fit_seconds"] = wide.to_dict(), fit_seconds
        try:
            _save_weights(run_dir / "model.safetensors", model.state_dict())
            atomic_write_json(run_dir / "metrics.json", metrics)
        except Exception as err:  # e.g. a full disk: the run is not finished, and must not look finished
            (run_dir / "model.safetensors").unlink(missing_ok=True)
            write_status(run_dir, "failed", f"{type(err).__name__}: {err}", created=_created(run_dir),
                         traceback=traceback.format_exc(limit=5))
            raise
        summary = test_metrics["primary"] if test_metrics else valid_metrics["primary"]
        auc = "n/a" if summary["auc"] is None else f"{summary['auc']:.4f}"
        log(f"{'test' if test_metrics else 'valid'}: accuracy={summary['accuracy']:.4f} "
            f"macro_f1={summary['macro_f1']:.4f} auc={auc}")
    if rank_zero:
        write_status(run_dir, result.status, result.message, created=_created(run_dir), best_epoch=result.best_epoch)
    log(f"status: {result.status}{' (' + result.message + ')' if result.message else ''}")
    return RunResult(run_dir, result.status, result.message, metrics, result.history)


def _created(run_dir: Path) -> float:
    try:
        return json.loads((run_dir / "status.json").read_text())["created"]
    except (OSError, KeyError, ValueError):
        return time.time()


def atomic_write_text_csv(path: Path, table: TextTable, text_col: str) -> None:
    from core.runs import atomic_write_text
    atomic_write_text(path, table.to_frame(text_col).to_csv(index=False))


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from safetensors, or a plain state_dict read with ``weights_only=True``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)
