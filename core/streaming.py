"""Training on a CSV larger than memory: one streaming pass, token ids in memory-mapped files.

``python -m core train --train BIG.csv --stream`` reads the file in chunks of rows and never holds
all texts at once. In that single pass each row is

- kept or dropped by the rules of ``core.data.load_table`` (empty text, missing label);
- assigned to train, validation or test by a seeded hash of its text (so a text that occurs twice
  always lands in the same split, and no second pass is needed to carve the splits);
- tokenised once: training rows add to the vocabulary counts, and every row's tokens (truncated
  to ``max_length``) are written as provisional ids to ``ids.u32``.

After the pass the vocabulary is built from the counts (``Vocabulary.from_counts``, exactly as
``TextEncoder.fit`` builds it) and the provisional ids are rewritten in place to vocabulary ids.
The run directory then holds, under ``data/``::

    ids.u32      all token ids, row after row (uint32)
    offsets.i64  row i's ids are ids[offsets[i]:offsets[i + 1]]
    labels.i64   (rows, label columns) class indices; -1 where a label never occurs in training
    split.u8     0 train, 1 validation, 2 test
    meta.json    label columns and classes, vocabulary, row counts

``TokenSequences`` is a lazy list of id arrays over those files that ``core.training.fit`` reads like
a list. Memory grows with the number of distinct tokens and with a few dozen bytes per row (offsets,
row indexes and labels), not with the text.
"""

from __future__ import annotations

import array
import csv
import hashlib
import json
import os
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from core.data import DataError, normalize_label
from core.runs import DEFAULT_RUNS_DIR, atomic_write_json, new_run_id, safe_run_id, write_status
from core.text import PAD, SENT_END, UNK, UNK_ID, TextConfig, TextEncoder, Vocabulary, keep_tokens
from core.training import Callback, resolve_device

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "valid", "test")
DEFAULT_CHUNK_ROWS = 20_000
_REMAP_BLOCK = 1 << 18  # ids rewritten 256k (1 MB) at a time


class _Ids(dict):
    """token -> id, handing out the next id to a token not seen before."""

    def __missing__(self, token: str) -> int:
        value = self[token] = len(self)
        return value


def split_of(text: str, seed: int, valid_fraction: float, test_fraction: float) -> int:
    """TRAIN, VALID or TEST for ``text``: a seeded hash, uniform in [0, 1), cut at the two fractions."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8,
                             key=str(seed).encode()).digest()
    u = int.from_bytes(digest, "big") / 2.0 ** 64
    return VALID if u < valid_fraction else TEST if u < valid_fraction + test_fraction else TRAIN


class TokenSequences(Sequence):
    """Row ``rows[i]`` of the memory-mapped ids as an int64 array; ``len`` is the number of rows."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray):
        self.ids = ids
        self.offsets = offsets
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return TokenSequences(self.ids, self.offsets, self.rows[i])
        row = self.rows[i]
        return np.asarray(self.ids[self.offsets[row]:self.offsets[row + 1]], dtype=np.int64)

    def lengths(self) -> np.ndarray:
        return self.offsets[self.rows + 1] - self.offsets[self.rows]


@dataclass
class StreamedSplit:
    sequences: TokenSequences
    y: np.ndarray  # (rows, tasks) class indices


@dataclass
class StreamedData:
    folder: Path
    encoder: TextEncoder
    label_columns: list[str]
    label_sets: list[list[str]]
    train: StreamedSplit
    valid: StreamedSplit
    test: StreamedSplit
    meta: dict  # rows read / kept / dropped, per-split counts

    def summary(self) -> str:
        m = self.meta
        dropped = ", ".join(f"{n} {reason}" for reason, n in m["dropped"].items())
        return (f"streamed {m['rows_read']} rows into {self.folder}: {len(self.train.sequences)} train, "
                f"{len(self.valid.sequences)} valid, {len(self.test.sequences)} test"
                + (f"; dropped {dropped}" if dropped else ""))


# ---- reading -------------------------------------------------------------------------------------

def _delimiter_for(path: str) -> str:
    name = path.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        raise DataError(f"{Path(path).name}: --stream reads CSV or TSV files. Convert it to CSV, or train "
                        f"without --stream (JSON Lines files are read into memory).")
    return "\t" if name.endswith((".tsv", ".tab")) else ","


def read_chunks(path: str, text_col: str, label_cols: list[str],
                chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[list[str], list[list[str]]]]:
    """(texts, [labels per column]) for each chunk of ``chunk_rows`` rows of a CSV/TSV (optionally .gz)."""
    name = Path(path).name
    sep = _delimiter_for(path)
    options = dict(sep=sep, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig",
                   encoding_errors="replace", compression="infer", skip_blank_lines=True, engine="c")
    try:
        header = [str(c) for c in pd.read_csv(path, nrows=0, **options).columns]
    except pd.errors.EmptyDataError:
        raise DataError(f"{name} is empty: it has no header and no rows.") from None
    except (pd.errors.ParserError, UnicodeError, OSError) as err:
        raise DataError(f"{name} could not be read as a delimited text file ({err}). Save it as CSV UTF-8.") from None
    stripped = {c.strip(): c for c in header}
    for column, flag in [(text_col, "--text-col")] + [(c, "--label-col") for c in label_cols]:
        if column not in stripped:
            raise DataError(f"Column {column!r} not found in {name}. Available columns: "
                            f"{', '.join(stripped)}. Choose it with {flag}.")
    wanted = [stripped[text_col]] + [stripped[c] for c in label_cols]
    try:
        reader = pd.read_csv(path, usecols=wanted, chunksize=chunk_rows, **options)
        for frame in reader:
            yield frame[wanted[0]].tolist(), [frame[c].tolist() for c in wanted[1:]]
    except pd.errors.ParserError as err:
        detail = str(err).strip().removeprefix("Error tokenizing data. C error: ")
        raise DataError(f"{name} could not be read as a delimited text file: {detail}. "
                        f"Put quotes around text that contains the delimiter.") from None


# ---- ingestion -----------------------------------------------------------------------------------

def _extension_words(cfg) -> list[str]:
    from core.embeddings import vector_words
    return vector_words(cfg.pretrained_vectors, cfg.text.extend_vocab) if cfg.text.extend_vocab else []


def ingest(sources: Sequence[tuple[str, int | None]], folder: str | Path, text_config: TextConfig, *,
           text_col: str = "text", label_cols: Sequence[str] = ("label",), valid_fraction: float = 0.1,
           test_fraction: float = 0.1, seed: int = 13, chunk_rows: int = DEFAULT_CHUNK_ROWS,
           test_csv: str | Path | None = None, extra_words: Sequence[str] = (),
           log: Callable[[str], None] = print) -> StreamedData:
    """Stream ``sources`` into memory-mapped token ids under ``folder``.

    ``sources`` are (path, split) pairs; split None means "assign each row by its hash", which is how
    the training file is read; a separate validation or test file is given with VALID or TEST.
    ``test_csv``, when given, receives the test rows (text + labels) for later inspection.
    """
    text_config.validate()
    label_cols = list(label_cols)
    if not 0 <= valid_fraction < 1 or not 0 <= test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise ValueError(f"valid_fraction ({valid_fraction}) and test_fraction ({test_fraction}) must each be "
                         f"in [0, 1) and leave rows for training.")
    if chunk_rows < 1:
        raise ValueError(f"The 'chunk_rows' parameter must be an int >= 1. Got {chunk_rows!r} instead.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenize = TextEncoder(text_config, Vocabulary([PAD, UNK])).tokenize  # the tokens TextEncoder.fit counts
    max_length = text_config.max_length if text_config.truncate else None
    token_ids = _Ids({UNK: 0})  # provisional id per distinct token; <unk> stands for empty texts
    counts: Counter = Counter()  # training tokens only, untruncated, as TextEncoder.fit counts them
    label_ids = [dict() for _ in label_cols]  # provisional id per distinct label, per column
    train_labels = [set() for _ in label_cols]
    normalized = [dict() for _ in label_cols]  # raw spelling -> normalize_label(...), per column
    dropped: Counter = Counter()
    rows_read = 0
    n_rows = n_ids = 0
    pending_test = folder / "test.rows.csv"

    with open(folder / "ids.u32", "wb") as ids_out, open(folder / "offsets.i64", "wb") as offsets_out, \
            open(folder / "labels.i64", "wb") as labels_out, open(folder / "split.u8", "wb") as split_out, \
            open(pending_test, "w", newline="", encoding="utf-8") as test_out:
        test_writer = csv.writer(test_out)
        offsets_out.write(np.zeros(1, dtype=np.int64).tobytes())
        for path, fixed_split in sources:
            for texts, label_lists in read_chunks(path, text_col, label_cols, chunk_rows):
                flat, lengths, splits, labels = array.array("I"), array.array("q"), array.array("B"), array.array("q")
                for i, text in enumerate(texts):
                    rows_read += 1
                    # the same clean-up as core.data.read_table: CRLF -> LF, NUL removed
                    text = text.replace("\r\n", "\n").replace("\x00", "")
                    if not text.strip():
                        dropped["empty text"] += 1
                        continue
                    row_labels = []
                    for k, column in enumerate(label_cols):
                        raw = label_lists[k][i]
                        label = normalized[k].get(raw, ...)
                        if label is ...:
                            label = normalized[k][raw] = normalize_label(raw)
                        if label is None:
                            dropped[f"missing label {column!r}"] += 1
                            break
                        row_labels.append(label)
                    else:
                        split = fixed_split if fixed_split is not None else \
                            split_of(text, seed, valid_fraction, test_fraction)
                        tokens = tokenize(text)
                        if split == TRAIN:
                            counts.update(tokens)
                            for k, label in enumerate(row_labels):
                                train_labels[k].add(label)
                        kept = keep_tokens(tokens, max_length, text_config.truncation)
                        ids = list(map(token_ids.__getitem__, kept)) or [0]
                        flat.extend(ids)
                        lengths.append(len(ids))
                        splits.append(split)
                        labels.extend(label_ids[k].setdefault(label, len(label_ids[k]))
                                      for k, label in enumerate(row_labels))
                        if split == TEST:
                            test_writer.writerow([text, *row_labels])
                ids_out.write(flat.tobytes())
                offsets_out.write((n_ids + np.cumsum(np.frombuffer(lengths, dtype=np.int64))).tobytes())
                labels_out.write(labels.tobytes())
                split_out.write(splits.tobytes())
                n_rows += len(lengths)
                n_ids += len(flat)
                log(f"streamed {rows_read} rows, {len(token_ids)} distinct tokens")

    if n_rows == 0:
        reasons = ", ".join(f"{n} {reason}" for reason, n in dropped.items())
        raise DataError(f"No usable rows in {Path(sources[0][0]).name}: all {rows_read} rows were dropped "
                        f"({reasons}). Check the --text-col and --label-col columns.")
    vocab = Vocabulary.from_counts(counts, text_config.max_vocab_size, text_config.min_freq,
                                   (SENT_END,) if text_config.sentence_breaks else ()).extended(extra_words)
    del counts
    # provisional ids -> vocabulary ids, as Vocabulary.encode maps them (unknown tokens and a literal
    # "<pad>" become <unk>)
    lookup = np.fromiter((vocab.stoi.get(t, UNK_ID) or UNK_ID for t in token_ids), dtype=np.uint32,
                         count=len(token_ids))
    del token_ids
    if n_ids:
        ids = np.memmap(folder / "ids.u32", dtype=np.uint32, mode="r+", shape=(n_ids,))
        for start in range(0, n_ids, _REMAP_BLOCK):
            ids[start:start + _REMAP_BLOCK] = lookup[ids[start:start + _REMAP_BLOCK]]
        ids.flush()
        del ids

    label_sets = [sorted(seen) for seen in train_labels]
    for column, classes in zip(label_cols, label_sets):
        if len(classes) < 2:
            found = f"only {classes[0]!r}" if classes else "none"
            raise DataError(f"Column {column!r} has {found} among the training rows: a classifier needs at "
                            f"least two classes. Add examples of another class or choose another label column.")
    labels = np.memmap(folder / "labels.i64", dtype=np.int64, mode="r+", shape=(n_rows, len(label_cols)))
    for k, classes in enumerate(label_sets):
        index = {label: i for i, label in enumerate(classes)}
        to_class = np.array([index.get(label, -1) for label in label_ids[k]], dtype=np.int64)
        labels[:, k] = to_class[labels[:, k]]
    labels.flush()
    del labels

    if test_csv is not None:
        _write_test_csv(pending_test, Path(test_csv), text_col, label_cols, label_sets)
    pending_test.unlink()
    meta = {"label_columns": label_cols, "label_sets": label_sets, "itos": vocab.itos,
            "text_config": asdict(text_config), "rows_read": rows_read, "rows": n_rows, "ids": n_ids,
            "dropped": dict(dropped), "sources": [[str(p), s] for p, s in sources],
            "valid_fraction": valid_fraction, "test_fraction": test_fraction, "seed": seed}
    atomic_write_json(folder / "meta.json", meta)
    return open_streamed(folder)


def _write_test_csv(rows_csv: Path, target: Path, text_col: str, label_cols: list[str],
                    label_sets: list[list[str]]) -> None:
    """Copy the test rows whose labels all occur in training, with a header, streaming."""
    known = [set(classes) for classes in label_sets]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with open(rows_csv, newline="", encoding="utf-8") as src, open(partial, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow([text_col, *label_cols])
        for row in csv.reader(src):
            if all(label in classes for label, classes in zip(row[1:], known)):
                writer.writerow(row)
    os.replace(partial, target)


def open_streamed(folder: str | Path) -> StreamedData:
    """The splits of a folder written by ``ingest``; token ids stay on disk (memory-mapped, read-only)."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    n_rows, n_ids, tasks = meta["rows"], meta["ids"], len(meta["label_columns"])
    ids = np.memmap(folder / "ids.u32", dtype=np.uint32, mode="r", shape=(n_ids,)) if n_ids \
        else np.zeros(0, dtype=np.uint32)
    offsets = np.fromfile(folder / "offsets.i64", dtype=np.int64)
    labels = np.memmap(folder / "labels.i64", dtype=np.int64, mode="r", shape=(n_rows, tasks))
    split = np.fromfile(folder / "split.u8", dtype=np.uint8)
    assert len(offsets) == n_rows + 1 and len(split) == n_rows, f"{folder} is incomplete: ingest it again"
    known = (labels >= 0).all(axis=1)
    meta["unknown_label_rows"] = {}
    parts = []
    for code, name in enumerate(SPLIT_NAMES):
        in_split = split == code
        rows = np.flatnonzero(in_split & known)
        meta["unknown_label_rows"][name] = int(in_split.sum()) - len(rows)
        parts.append(StreamedSplit(TokenSequences(ids, offsets, rows), np.asarray(labels[rows])))
    text_config = TextConfig(**meta["text_config"])
    encoder = TextEncoder(text_config, Vocabulary(meta["itos"]))
    return StreamedData(folder, encoder, meta["label_columns"], meta["label_sets"], *parts, meta=meta)


# ---- training ------------------------------------------------------------------------------------

def train_streaming(cfg, *, runs_dir: str | Path = DEFAULT_RUNS_DIR, run_id: str | None = None,
                    callbacks: Sequence[Callback] = (), stop: threading.Event | None = None,
                    log: Callable[[str], None] = print, distributed=None,
                    chunk_rows: int = DEFAULT_CHUNK_ROWS):
    """``core.pipeline.train_run`` for a training file read by streaming; returns a ``RunResult``.

    The run directory has the same files as any other run (so ``Predictor.load`` and the app read it),
    plus ``data/`` with the memory-mapped ids. Under torchrun rank 0 ingests and the other ranks
    open its files, which therefore must be on a file system every rank sees.
    """
    from core.pipeline import _created, build_initial_model, fit_and_publish, write_run_files

    cfg.validate()
    data_cfg = cfg.data
    if data_cfg.dataset or not data_cfg.train:
        raise DataError("--stream reads a --train CSV/TSV file; built-in datasets fit in memory, so drop --stream.")
    rank_zero = distributed is None or distributed.rank == 0
    run_id = safe_run_id(run_id) if run_id else new_run_id()
    if distributed is not None:
        run_id = distributed.broadcast(run_id)
        log = log if rank_zero else (lambda line: None)
    run_dir = Path(runs_dir) / run_id
    sources = [(data_cfg.train, None)] + [(path, split) for path, split in
                                          ((data_cfg.valid, VALID), (data_cfg.test, TEST)) if path]

    failure = None
    if rank_zero:
        try:
            streamed = ingest(sources, run_dir / "data", cfg.text, text_col=data_cfg.text_col,
                              label_cols=data_cfg.label_cols,
                              valid_fraction=0.0 if data_cfg.valid else data_cfg.valid_fraction,
                              test_fraction=0.0 if data_cfg.test else data_cfg.test_fraction,
                              seed=cfg.data.seed_for_split(cfg.train.seed), chunk_rows=chunk_rows,
                              test_csv=run_dir / "test.csv", extra_words=_extension_words(cfg), log=log)
        except (DataError, ValueError) as err:
            failure = str(err)
    if distributed is not None:  # the other ranks wait here for rank 0's files, or its error
        failure = distributed.broadcast(failure)
    if failure:
        raise DataError(failure)
    if not rank_zero:
        streamed = open_streamed(run_dir / "data")
    log(streamed.summary())
    for name, n in streamed.meta["unknown_label_rows"].items():
        if n:
            log(f"note: {n} {name} rows dropped: their labels never occur in the training data")
    if len(streamed.valid.sequences) == 0:
        raise DataError("No validation rows: give --valid PATH or a --valid-fraction above 0.")
    encoder, label_sets = streamed.encoder, streamed.label_sets
    log(f"vocabulary: {len(encoder.vocab)} tokens (max {cfg.text.max_vocab_size}, min_freq {cfg.text.min_freq})")

    model, coverage = build_initial_model(cfg, encoder, label_sets, log)

    train, valid, test = streamed.train, streamed.valid, streamed.test
    log(f"data: {len(train.sequences)} train, {len(valid.sequences)} valid, {len(test.sequences)} test; "
        f"labels {label_sets if len(label_sets) > 1 else label_sets[0]}")
    if rank_zero:
        write_run_files(run_dir, cfg, encoder, streamed.label_columns, label_sets, coverage, streamed=True)
        write_status(run_dir, "running", "", created=_created(run_dir), device=str(resolve_device(cfg.train.device)))
    return fit_and_publish(cfg, run_dir, model, (train.sequences, train.y), (valid.sequences, valid.y),
                           (test.sequences, test.y), label_sets, callbacks=callbacks, stop=stop, log=log,
                           distributed=distributed)
