"""A corpus of broken and awkward files: each loads into a valid table or fails with a one-line DataError."""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import tracemalloc
import zipfile
from dataclasses import dataclass, field
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.data import DataError, TextTable, ValidationReport, load_table

GOOD_ROWS = "great film,pos\nawful plot,neg\nloved it,pos\nboring,neg\n"
GOOD = "text,label\n" + GOOD_ROWS


@dataclass
class Case:
    id: str
    filename: str
    data: bytes
    error: str | None = None  # regex the DataError message must match; None: the file must load
    check: Callable[[TextTable, ValidationReport], None] | None = None
    kwargs: dict = field(default_factory=dict)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def texts_are(*expected):
    def check(table, report):
        assert table.texts == list(expected)
    return check


def note_has(fragment, texts=None):
    def check(table, report):
        assert any(fragment in note for note in report.notes), report.notes
        if texts is not None:
            assert table.texts == texts
    return check


random_bytes = random.Random(1234)
GARBAGE = bytes(random_bytes.randrange(256) for _ in range(5000))
LONG_FIELD = "x" * 200_000
VERY_LONG_LINE = " ".join(["word"] * 250_000)  # ~1.25 MB on one line
NOT_COMPRESSIBLE = "".join(f"{random_bytes.random()},{'ab'[i % 2]}\n" for i in range(2000))
XLSX = zip_bytes({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"})

def _assert(condition):
    assert condition


def dropped_is(expected: dict, kept: int):
    def check(table, report):
        assert report.dropped == expected and len(table) == kept
    return check


def first_text_is(expected: str):
    def check(table, report):
        assert table.texts[0] == expected
    return check


GOOD_TEXTS = ["great film", "awful plot", "loved it", "boring"]
JSONL_4 = (b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n'
           b'{"text": "c", "label": "x"}\n{"text": "d", "label": "y"}\n')
MIXED_LABELS = (b'{"text": "a", "label": 1}\n{"text": "b", "label": "1"}\n{"text": "c", "label": 1.0}\n'
                b'{"text": "d", "label": " 0 "}\n{"text": "e", "label": 0}\n{"text": "f", "label": null}\n')
MISSING_KEYS = (b'{"text": "a", "label": "x"}\n{"text": "b"}\n{"label": "y"}\n'
                b'{"text": "c", "label": "y"}\n{"text": "d", "label": "x"}\n{"text": "e", "label": "y"}\n')

CASES = [
    # ---- empty or no data
    Case("empty-file", "e.csv", b"", error=r"e\.csv is empty"),
    Case("only-whitespace", "w.csv", b"  \n\n\t \r\n  ", error=r"w\.csv is empty"),
    Case("only-bom", "bom-only.csv", b"\xef\xbb\xbf", error="is empty"),
    Case("header-only", "h.csv", b"text,label\n", error=r"h\.csv has a header \(text, label\) but no data rows"),
    Case("header-only-no-newline", "h2.csv", b"text,label", error="but no data rows"),
    Case("header-then-blank-lines", "h3.csv", b"text,label\n\n\n\n", error="but no data rows"),
    Case("only-delimiters", "d.csv", b"text,label\n,\n,\n , \n",
         error=r"No usable rows in d\.csv: all 3 rows.*empty text"),
    # ---- columns
    Case("no-text-column", "nt.csv", b"review,label\na,x\nb,y\n",
         error=r"Column 'text' not found in nt\.csv\. Available columns: review, label\. .*--text-col"),
    Case("no-label-column", "nl.csv", b"text,sentiment\na,x\nb,y\n",
         error=r"Column 'label' not found in nl\.csv\. Available columns: text, sentiment\. .*--label-col"),
    Case("single-column", "one.csv", b"text\nhello\nworld\n",
         error=r"Column 'label' not found.*Available columns: text\."),
    Case("header-case-differs", "case.csv", b"Text,Label\na,x\nb,y\n", error=r"Did you mean 'Text'\?"),
    Case("duplicate-column-names", "dup.csv", b"text,label,label\na,x,y\nb,y,x\n",
         error=r"dup\.csv has duplicate column names: 'label' appears in columns 2, 3"),
    Case("header-with-spaces", "sp.csv", b" text , label \n" + GOOD_ROWS.encode(), check=texts_are(*GOOD_TEXTS)),
    Case("trailing-delimiter-and-unnamed-column", "trail.csv", b"text,label,\na,x,\nb,y,\nc,x,\nd,y,\n",
         check=texts_are("a", "b", "c", "d")),
    Case("html-page-saved-as-csv", "page.csv", b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n",
         error="Column 'text' not found"),
    # ---- labels
    Case("one-class", "oc.csv", b"text,label\na,pos\nb,pos\nc,pos\n",
         error=r"oc\.csv: only one class 'pos' in column 'label': a classifier needs at least two"),
    Case("label-column-all-empty", "le.csv", b"text,label\na,\nb,\nc, \n",
         error=r"No usable rows in le\.csv: all 3 rows were dropped \(3 missing label 'label'\)"),
    Case("labels-all-nan-from-pandas", "nan.csv", b'text,label\na,\nb,\n"c",\n', error="missing label 'label'"),
    Case("labels-all-literal-NaN", "nan2.csv", b"text,label\na,NaN\nb,NaN\n", error=r"only one class 'NaN'"),
    Case("nan-label-next-to-real-ones", "nan3.csv", b"text,label\na,pos\nb,neg\nc,nan\nd,nan\ne,pos\nf,neg\n",
         check=lambda t, r: _assert(len(t) == 6 and any("look like missing values" in w for w in r.warnings))),
    Case("mixed-label-types", "mixed.jsonl", MIXED_LABELS,
         check=lambda t, r: _assert(r.class_counts == {"label": {"0": 2, "1": 3}})),
    Case("too-few-per-class", "few.csv", b"text,label\na,x\nb,x\nc,y\n", error=r"'y' \(1\)"),
    Case("text-column-all-empty", "te.csv", b"text,label\n,x\n  ,y\n",
         error=r"all 2 rows were dropped \(2 empty text\)"),
    Case("short-rows-missing-label", "short.csv", b"text,label\na,x\nb\nc,y\nd,x\ne,y\n",
         check=dropped_is({"missing label 'label'": 1}, kept=4)),
    # ---- delimiters and quoting
    Case("semicolon-named-csv", "semi.csv", b"text;label\ngood, really;1\nbad;0\nfine;1\nmeh;0\n",
         check=note_has("Delimiter detected: semicolon", ["good, really", "bad", "fine", "meh"])),
    Case("tab-named-csv", "tab.csv", b"text\tlabel\nhello, there\tx\nb\ty\nc\tx\nd\ty\n",
         check=note_has("Delimiter detected: tab")),
    Case("space-separated", "space.csv", b"text label\nhello x\nworld y\n",
         error=r"Column 'text' not found in space\.csv\. Available columns: text label\."),
    Case("unterminated-quote", "uq.csv", b'text,label\nfine,x\n"never closed,y\nmore,x\n',
         error=r"uq\.csv: data row 2 starts a quoted field .* never closed"),
    Case("stray-quote-mid-field", "sq.csv", b'text,label\nhe said "hi,x\nb,y\nc,x\nd,y\n',
         check=first_text_is('he said "hi')),
    Case("extra-field", "ef.csv", b"text,label\ngood, bad film,x\nb,y\n",
         error=r"ef\.csv: data row 1 has 3 fields but the header has 2 \(delimiter: comma\)"),
    Case("cr-inside-quoted-field", "cr.csv", b'text,label\n"a\rb",x\n"c\r\nd",y\ne,x\nf,y\n',
         check=texts_are("a\rb", "c\nd", "e", "f")),
    Case("cr-inside-unquoted-field", "cr2.csv", b"text,label\na\rb,x\nc,y\nd,x\ne,y\n", check=first_text_is("a\rb")),
    Case("crlf-line-endings", "crlf.csv", GOOD.replace("\n", "\r\n").encode(), check=texts_are(*GOOD_TEXTS)),
    Case("cr-only-line-endings", "mac.csv", GOOD.replace("\n", "\r").encode(), check=note_has("CR (old Mac)")),
    # ---- control bytes
    Case("nul-bytes-in-text", "nul.csv", GOOD.replace("great", "gre\x00at").replace("awful ", "awful\x00 ").encode(),
         check=note_has("NUL", GOOD_TEXTS)),
    Case("nul-bytes-everywhere", "nuls.csv", b"\x00" * 2000 + GOOD.encode(), error="looks like a binary file"),
    Case("ctrl-z-at-end", "z.csv", GOOD.encode() + b"\x1a", check=note_has("Ctrl-Z", GOOD_TEXTS)),
    Case("ctrl-z-inside-text", "z2.csv", b"text,label\na\x1ab,x\nc,y\nd,x\ne,y\n", check=first_text_is("a\x1ab")),
    # ---- encodings
    Case("utf8-bom", "bom.csv", b"\xef\xbb\xbf" + GOOD.encode(), check=note_has("Stripped UTF-8 BOM", GOOD_TEXTS)),
    Case("utf16-with-bom", "u16.csv", GOOD.encode("utf-16"), check=note_has("UTF-16", GOOD_TEXTS)),
    Case("utf16le-without-bom", "u16le.csv", GOOD.encode("utf-16-le"), check=note_has("UTF-16-LE", GOOD_TEXTS)),
    Case("gbk-bytes", "gbk.csv", "text,label\n这部电影很好看,正面\n太差了,负面\n很喜欢,正面\n浪费时间,负面".encode("gbk"),
         check=note_has("GBK", ["这部电影很好看", "太差了", "很喜欢", "浪费时间"])),
    Case("latin1-bytes", "latin.csv", "text,label\ncafé crème,pos\nnaïve,neg\ngarçon,pos\nà côté,neg".encode("latin-1"),
         check=note_has("Latin-1", ["café crème", "naïve", "garçon", "à côté"])),
    Case("mostly-utf8-one-bad-byte", "bad1.csv",
         ("text,label\n" + "très bien,pos\nmauvais été,neg\n" * 6).encode() + b"caf\xe9,pos\n",
         check=lambda t, r: _assert(t.texts[-1] == "caf\ufffd" and any("not valid UTF-8" in n for n in r.notes))),
    # ---- size
    Case("200k-character-field", "long.csv", f"text,label\n{LONG_FIELD},x\nshort,y\nb,x\nc,y\n".encode(),
         check=lambda t, r: _assert(len(t.texts[0]) == 200_000 and r.length_stats["max"] == 1)),
    Case("very-long-line", "line.tsv", f"text\tlabel\n{VERY_LONG_LINE}\tx\na\ty\nb\tx\nc\ty\n".encode(),
         check=lambda t, r: _assert(r.text_lengths[0] == 250_000)),
    Case("over-max-bytes", "big.csv", GOOD.encode() * 50, error=r"big\.csv is .* but the limit is",
         kwargs={"max_bytes": 500}),
    # ---- not text at all
    Case("binary-garbage", "garbage.csv", GARBAGE, error=r"garbage\.csv looks like a binary file"),
    Case("binary-that-decodes-as-utf16", "u16junk.csv", b"\x00\x01\x02\xff" * 100,
         error=r"u16junk\.csv looks like a binary file"),
    Case("zip-renamed-csv", "data.csv", zip_bytes({"train.csv": GOOD.encode()}),
         error=r"data\.csv looks like a binary file \(a zip archive\).*Unzip it"),
    Case("xlsx-renamed-csv", "sheet.csv", XLSX,
         error=r"sheet\.csv looks like a binary file \(an Excel workbook, \.xlsx\).*CSV UTF-8"),
    Case("xls-renamed-csv", "old.csv", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500),
         error=r"looks like a binary file \(an old Excel/Office file, \.xls\)"),
    Case("pdf-renamed-csv", "doc.csv", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", error=r"binary file \(a PDF\)"),
    Case("gzip-of-xlsx", "sheet.csv.gz", gzip.compress(XLSX), error="Excel workbook"),
    Case("truncated-gzip", "t.csv.gz", gzip.compress(NOT_COMPRESSIBLE.encode())[:500],
         error=r"t\.csv\.gz is not a valid gzip"),
    Case("gzip-csv", "ok.csv.gz", gzip.compress(GOOD.encode()), check=texts_are(*GOOD_TEXTS)),
    # ---- JSON lines
    Case("jsonl-broken-line", "b.jsonl", JSONL_4[:-1] + b'\n{"text": "c", "label"\n',
         error=r"b\.jsonl: line 5 is not valid JSON: .*each line must be one JSON object"),
    Case("jsonl-non-object-line", "l.jsonl", b'{"text": "a", "label": "x"}\n[1, 2]\n',
         error=r"line 2 is a list, not an object"),
    Case("jsonl-string-line", "s.jsonl", b'{"text": "a", "label": "x"}\n\n"just text"\n',
         error=r"line 3 is a string, not an object"),
    Case("jsonl-number-line", "n.jsonl", b"42\n", error=r"line 1 is a number, not an object"),
    Case("jsonl-only-blank-lines", "blank.jsonl", b"\n\n  \n", error="is empty"),
    Case("jsonl-duplicate-keys", "dk.jsonl", b'{"text": "a", "label": "x", "label": "y"}\n',
         error="repeats the key 'label'"),
    Case("jsonl-deeply-nested", "deep.jsonl", b"[" * 100_000 + b"\n", error="line 1"),
    Case("jsonl-missing-keys", "mk.jsonl", MISSING_KEYS,
         check=dropped_is({"missing label 'label'": 1, "empty text": 1}, kept=4)),
    Case("json-nested-object", "o.json", b'{"data": [{"text": "a", "label": "x"}]}',
         error=r"o\.json holds a single JSON value"),
    Case("json-empty-list", "el.json", b"[]", error=r"el\.json is empty"),
    Case("json-list-of-strings", "ls.json", b'["a", "b"]', error=r"item 1 is a string, not an object"),
    Case("json-broken", "br.json", b'[{"text": "a", "label": "x"},', error=r"br\.json is not valid JSON"),
    Case("jsonl-content-named-csv", "j.csv", JSONL_4, check=note_has("JSON Lines", ["a", "b", "c", "d"])),
]


def test_corpus_is_big_enough():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


def assert_friendly(error: DataError, filename: str | None = None):
    message = str(error)
    assert type(error) is DataError
    assert message and "\n" not in message
    assert "Traceback" not in message and "Error tokenizing" not in message and "C error" not in message
    assert not message.startswith(("'", "Expecting", "No columns to parse", "[Errno")), message
    if filename:
        assert filename in message, message


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path):
    path = tmp_path / case.filename
    path.write_bytes(case.data)
    for source in (path, case.data):  # a file on disk and an upload behave the same
        try:
            table, report = load_table(source, filename=case.filename, **case.kwargs)
        except DataError as error:
            assert case.error is not None, f"should have loaded, got: {error}"
            assert_friendly(error, case.filename)
            assert re.search(case.error, str(error)), str(error)
            continue
        assert case.error is None, f"should have raised DataError matching {case.error!r}"
        assert_valid(table)
        assert report.rows_kept == len(table)
        if case.check:
            case.check(table, report)


def assert_valid(table: TextTable):
    assert isinstance(table, TextTable)
    assert table.label_columns
    for column, labels in table.labels.items():
        assert len(labels) == len(table.texts)
        assert len(set(labels)) >= 2
        assert all(isinstance(label, str) and label and label == label.strip() for label in labels)
    assert all(isinstance(text, str) and text.strip() and "\x00" not in text for text in table.texts)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match=r"File not found: .*nope\.csv"):
        load_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a folder, not a file"):
        load_table(tmp_path)


def test_many_tiny_rows_load_with_bounded_memory():
    rows = 300_000
    data = ("text,label\n" + "".join(f"r{i},{'ab'[i % 2]}\n" for i in range(rows))).encode()
    tracemalloc.start()
    try:
        table, report = load_table(data, filename="many.csv")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(table) == rows and report.class_counts == {"label": {"a": rows // 2, "b": rows // 2}}
    assert len(report.text_lengths) == rows
    assert peak < 250 * 2**20, f"peak traced memory {peak / 2**20:.0f} MiB for a {len(data) / 2**20:.1f} MiB file"


# ---------------------------------------------------------------------------------------------- properties


def check_property(data: bytes, filename: str):
    try:
        table, report = load_table(data, filename=filename)
    except DataError as error:
        assert_friendly(error, filename)
        return
    assert_valid(table)
    assert report.rows_kept == len(table) <= report.rows_read
    json.dumps(report.to_dict())


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400), filename=st.sampled_from(["x.csv", "x.tsv", "x.txt", "x.jsonl", "x.gz", "x"]))
def test_arbitrary_bytes_load_or_raise_data_error(data, filename):
    check_property(data, filename)


WILD_FIELD = st.text(alphabet=st.sampled_from(list('ab 1\t,;|"\'\r\n\x00\x1a\ufeff好é-.')), max_size=8)
PLAIN_TEXT = st.text(alphabet=st.sampled_from(list("abc xyz 好评差é")), min_size=1, max_size=12)
LABEL_SPELLINGS = st.sampled_from([["pos", "neg", " pos "], ["1", "0", "1.0", " 0 "], ["好", "差"], ["a", "b", "c"]])


@st.composite
def csv_like(draw):
    """Tables from clean to messy: a per-example share of fields carry quotes, delimiters and control bytes."""
    noise_percent = draw(st.sampled_from([0, 0, 5, 20, 60]))

    def cell(clean):
        return draw(WILD_FIELD) if draw(st.integers(0, 99)) < noise_percent else draw(clean)

    header = draw(st.sampled_from(["text,label"] * 4 + ["label,text", "text,label,text", "txt,label", ""]))
    label = st.one_of(st.sampled_from(draw(LABEL_SPELLINGS)), st.sampled_from(["", "NaN", "other"]))
    rows = []
    for _ in range(draw(st.integers(0, 15))):
        row = [cell(PLAIN_TEXT), cell(label)] + [cell(PLAIN_TEXT) for _ in range(header.count(",") - 1)]
        if header.startswith("label"):
            row.reverse()
        rows.append(row + [draw(WILD_FIELD)] if draw(st.integers(0, 99)) < noise_percent // 4 else row)
    delimiter = draw(st.sampled_from([",", ",", "\t", ";"]))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines = [header.replace(",", delimiter)] + [delimiter.join(row) for row in rows]
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "gbk", "latin-1", "utf-16"]))
    return newline.join(lines).encode(encoding, errors="replace")


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=csv_like(), filename=st.sampled_from(["x.csv", "x.tsv", "x.txt"]))
def test_csv_like_text_loads_or_raises_data_error(data, filename):
    check_property(data, filename)
