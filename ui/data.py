"""From uploaded bytes or a built-in dataset to validated texts + labels and train/valid/test splits.

The Data page calls these functions; tests call them too (they take bytes, not Streamlit
objects). Every problem the user can cause surfaces as ``core.data.DataError`` or ``ValueError``
with a one-line message.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field

import pandas as pd

from core import data as data_mod
from core.data import DataError, TextTable, ValidationReport
from core.pipeline import Splits

PREVIEW_ROWS = 50


@dataclass
class RawData:
    """A file or built-in dataset as read: its columns and a preview, before column mapping."""
    name: str  # file name or built-in dataset name
    content: bytes  # the file's bytes (built-ins: their "train"/"all" part as CSV)
    digest: str
    columns: list[str]
    preview: pd.DataFrame
    rows: int
    notes: list[str] = field(default_factory=list)
    builtin: str = ""  # built-in dataset name, "" for uploads
    given_valid: TextTable | None = None  # splits a built-in dataset ships with
    given_test: TextTable | None = None
    file_id: str = ""  # the upload widget's id for this file


@dataclass
class PreparedData:
    """Validated texts + labels: what the Train page trains on."""
    raw_name: str
    builtin: str
    text_col: str
    label_cols: list[str]
    table: TextTable
    report: ValidationReport
    key: tuple
    given_valid: TextTable | None = None
    given_test: TextTable | None = None


def read_upload(content: bytes, filename: str, max_bytes: int | None = None, file_id: str = "") -> RawData:
    """Read an uploaded file's bytes; raises DataError with a one-line message when it cannot."""
    frame, notes = data_mod.read_table(content, filename=filename, max_bytes=max_bytes)
    if frame.shape[1] < 2:
        raise DataError(f"{filename} has only one column ({', '.join(map(str, frame.columns))}): a text column and "
                        f"at least one label column are needed. Add a label column, or check the delimiter.")
    return RawData(filename, content, hashlib.sha1(content).hexdigest(), [str(c) for c in frame.columns],
                   frame.head(PREVIEW_ROWS), len(frame), notes, file_id=file_id)


def read_builtin(name: str) -> RawData:
    """A built-in dataset; raises DataError when it cannot be loaded (e.g. offline)."""
    parts = data_mod.load_builtin(name)
    train = parts.get("train") or parts.get("all")
    frame = train.to_frame("text")
    content = frame.to_csv(index=False).encode("utf-8")
    return RawData(name, content, hashlib.sha1(content).hexdigest(), [str(c) for c in frame.columns],
                   frame.head(PREVIEW_ROWS), len(frame), [], builtin=name,
                   given_valid=parts.get("dev") or parts.get("valid"), given_test=parts.get("test"))


def guess_columns(raw: RawData) -> tuple[str, list[str]]:
    """Starting choices for the mapping: 'text'/'label' when present, else the column with the longest
    values as text and the one with the fewest distinct values as label."""
    columns = raw.columns
    preview = raw.preview.astype(str)
    text_col = "text" if "text" in columns else max(columns, key=lambda c: preview[c].str.len().mean())
    others = [c for c in columns if c != text_col]
    label_col = "label" if "label" in others else min(others, key=lambda c: preview[c].nunique())
    return text_col, [label_col]


def prepare(raw: RawData, text_col: str, label_cols: list[str], max_bytes: int | None = None) -> PreparedData:
    """Validate the mapping; raises DataError/ValueError with a one-line message."""
    if not label_cols:
        raise DataError("Choose at least one label column.")
    if text_col in label_cols:
        raise DataError(f"Column {text_col!r} is chosen as both the text and a label column: choose different columns.")
    table, report = data_mod.load_table(raw.content, text_col, label_cols, filename=raw.name, max_bytes=max_bytes)
    return PreparedData(raw.name, raw.builtin, text_col, list(label_cols), table, report,
                        (raw.digest, text_col, tuple(label_cols)), raw.given_valid, raw.given_test)


def split_sizes(n_rows: int, valid_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Rows in (train, valid, test) as ``core.data.split_table`` makes them."""
    n_test = max(1, round(test_fraction * n_rows)) if test_fraction > 0 else 0
    n_valid = max(1, round(valid_fraction * n_rows)) if valid_fraction > 0 else 0
    return n_rows - n_valid - n_test, n_valid, n_test


def make_splits(prepared: PreparedData, valid_fraction: float, test_fraction: float, seed: int) -> Splits:
    """The same splits ``core.pipeline.load_splits`` makes for the same data, fractions and seed."""
    valid, test = prepared.given_valid, prepared.given_test
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, carved_valid, carved_test = data_mod.split_table(
            prepared.table, 0.0 if valid is not None else valid_fraction,
            0.0 if test is not None else test_fraction, seed)
    notes += [str(w.message) for w in caught]
    valid = valid if valid is not None else carved_valid
    test = test if test is not None else carved_test
    if len(valid) == 0:
        raise DataError("No validation rows: set the validation fraction above 0 on the Data page.")
    for name, table in (("validation", valid), ("test", test)):
        if len(table):
            notes += data_mod.check_same_labels(train, table, name)
    return Splits(train, valid, test, prepared.report, notes)
