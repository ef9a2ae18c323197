"""Tiny archives in the official layouts of the built-in datasets, for offline download tests."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

IMDB_REVIEWS = {
    ("train", "pos"): ["A wonderful film.<br />Loved every minute.", "Great acting and a moving story."],
    ("train", "neg"): ["Dull and far too long.", "The worst plot I have seen this year."],
    ("test", "pos"): ["Charming, funny and smart."],
    ("test", "neg"): ["I walked out after twenty minutes."],
}

SST2_ROWS = {
    "train": [("a gorgeous , witty , seductive movie . ", 1), ("the plot is nothing but boilerplate clichés ", 0),
              ("it 's a charming and often affecting journey . ", 1), ("unflinchingly bleak and desperate ", 0)],
    "dev": [("it 's a lovely film with lovely performances ", 1), ("a sometimes tedious film . ", 0)],
}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_imdb_archive(path: Path, extra_members: dict[str, bytes] | None = None) -> Path:
    """aclImdb_v1.tar.gz layout: aclImdb/{train,test}/{pos,neg}/<id>_<stars>.txt (plus unsup/ and a README)."""
    with tarfile.open(path, "w:gz") as tar:
        _add_bytes(tar, "aclImdb/README", b"Large Movie Review Dataset v1.0\n")
        _add_bytes(tar, "aclImdb/train/unsup/0_0.txt", b"unlabelled review, must be ignored")
        for (split, label), reviews in IMDB_REVIEWS.items():
            for review_id, review in enumerate(reviews):
                stars = 9 if label == "pos" else 2
                _add_bytes(tar, f"aclImdb/{split}/{label}/{review_id}_{stars}.txt", review.encode("utf-8"))
        for name, data in (extra_members or {}).items():
            _add_bytes(tar, name, data)
    return path


def make_sst2_archive(path: Path, extra_members: dict[str, bytes] | None = None) -> Path:
    """GLUE SST-2.zip layout: SST-2/{train,dev}.tsv with 'sentence<TAB>label', and an unlabelled test.tsv."""
    with zipfile.ZipFile(path, "w") as bundle:
        for split, rows in SST2_ROWS.items():
            lines = ["sentence\tlabel"] + [f"{sentence}\t{label}" for sentence, label in rows]
            bundle.writestr(f"SST-2/{split}.tsv", "\n".join(lines) + "\n")
        bundle.writestr("SST-2/test.tsv", "index\tsentence\n0\tan unlabelled sentence\n")
        for name, data in (extra_members or {}).items():
            bundle.writestr(name, data)
    return path
