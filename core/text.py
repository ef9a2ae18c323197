"""Tokenisers (spaCy blank pipelines), the vocabulary, and text -> ids encoding.

A vocabulary is a list of tokens; index 0 is ``<pad>`` and index 1 is ``<unk>``. It is saved as
JSON, never pickled.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
# sentence end marker: only in vocabularies built with sentence_breaks, where it is always id 2
SENT_END, SENT_END_ID = "</s>", 2
TOKENIZERS = ("en", "zh", "xx", "whitespace")
TRUNCATIONS = ("head", "tail", "head+tail")

_BREAK_TAG = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


@dataclass
class TextConfig:
    tokenizer: str = "en"  # en (English), zh (Chinese, jieba), xx (multilingual), whitespace
    lowercase: bool = True
    max_vocab_size: int = 25_000  # most frequent tokens kept, plus <pad> and <unk>
    min_freq: int = 1  # a token seen fewer times becomes <unk>
    max_length: int = 400  # tokens kept per text; longer texts are truncated
    truncate: bool = True  # False reads texts whole, ignoring max_length (set for chunked models)
    # which tokens a text longer than max_length keeps: the first (head), the last (tail), or the
    # first quarter and the last three quarters (head+tail: reviews often end with their verdict)
    truncation: str = "head"
    sentence_breaks: bool = False  # append "</s>" after each sentence (set for hierarchical models)
    # > 0: also add up to this many of the pretrained vectors' most frequent words to the vocabulary
    # (after the training words), so words never seen in training still read as their pretrained
    # vectors instead of <unk>; needs pretrained vectors
    extend_vocab: int = 0

    def validate(self) -> "TextConfig":
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"The 'tokenizer' parameter must be one of {', '.join(TOKENIZERS)}. "
                             f"Got {self.tokenizer!r} instead.")
        for name in ("max_vocab_size", "min_freq", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"The '{name}' parameter must be an int >= 1. Got {value!r} instead.")
        if not isinstance(self.extend_vocab, int) or isinstance(self.extend_vocab, bool) or self.extend_vocab < 0:
            raise ValueError(f"The 'extend_vocab' parameter must be an int >= 0 (0 = off). "
                             f"Got {self.extend_vocab!r} instead.")
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"The 'truncation' parameter must be one of {', '.join(TRUNCATIONS)}. "
                             f"Got {self.truncation!r} instead.")
        return self


def keep_tokens(tokens: list, limit: int | None, truncation: str = "head") -> list:
    """At most ``limit`` tokens: the first, the last, or the first quarter plus the last three quarters."""
    if not limit or len(tokens) <= limit:
        return tokens
    if truncation == "tail":
        return tokens[-limit:]
    if truncation == "head+tail":
        head = limit // 4
        return tokens[:head] + tokens[len(tokens) - (limit - head):]
    return tokens[:limit]


def clean_text(text: str) -> str:
    """Turn HTML line breaks (IMDB's ``<br />``) and entities into plain text."""
    text = _BREAK_TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    return text.replace("\x00", " ")


@lru_cache(maxsize=None)
def _spacy_tokenizer(name: str):
    import spacy  # imported lazily: loading spaCy takes a second

    if name == "zh":
        nlp = spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}})
        return nlp.tokenizer
    return spacy.blank(name).tokenizer


@lru_cache(maxsize=1)
def _sentencizer():
    import spacy

    nlp = spacy.blank("xx")  # rule-based: . ! ? and their CJK and other-script forms end a sentence
    nlp.add_pipe("sentencizer")
    return nlp


def mark_sentences(tokens: Sequence[str]) -> list[str]:
    """``["hi", ".", "bye"]`` -> ``["hi", ".", "</s>", "bye", "</s>"]`` (spaCy sentencizer)."""
    if not tokens:
        return []
    from spacy.tokens import Doc

    nlp = _sentencizer()
    doc = nlp(Doc(nlp.vocab, words=list(tokens)))
    marked: list[str] = []
    for sentence in doc.sents:
        marked.extend(t.text for t in sentence)
        marked.append(SENT_END)
    return marked


class Tokenizer:
    """Splits text into tokens; ``Tokenizer("en")("It's <br />great")`` -> ``["it", "'s", "great"]``."""

    def __init__(self, name: str = "en", lowercase: bool = True):
        if name not in TOKENIZERS:
            raise ValueError(f"Unknown tokenizer {name!r}: choose one of {', '.join(TOKENIZERS)}.")
        self.name = name
        self.lowercase = lowercase

    def __call__(self, text: str) -> list[str]:
        text = clean_text(str(text))
        if self.lowercase:
            text = text.lower()
        if self.name == "whitespace":
            return text.split()
        return [t.text for t in _spacy_tokenizer(self.name)(text) if not t.is_space]

    def many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self(t) for t in texts]


class Vocabulary:
    """Token <-> id mapping. ``itos[0] == "<pad>"``, ``itos[1] == "<unk>"``."""

    def __init__(self, itos: Sequence[str]):
        if len(itos) < 2 or itos[0] != PAD or itos[1] != UNK:
            raise ValueError("A vocabulary must start with '<pad>' and '<unk>'.")
        self.itos = list(itos)
        self.stoi = {token: i for i, token in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("A vocabulary must not contain the same token twice.")

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], max_size: int = 25_000,
              min_freq: int = 1, reserved: Sequence[str] = ()) -> "Vocabulary":
        counts = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        return cls.from_counts(counts, max_size, min_freq, reserved)

    @classmethod
    def from_counts(cls, counts: Counter, max_size: int = 25_000, min_freq: int = 1,
                    reserved: Sequence[str] = ()) -> "Vocabulary":
        """``reserved`` tokens follow ``<unk>`` (ids 2, 3, ...) whatever their counts."""
        for token in (PAD, UNK, *reserved):
            counts.pop(token, None)
        # most frequent first; ties broken alphabetically so the vocabulary is reproducible
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls([PAD, UNK, *reserved] + ranked[:max_size])

    def __len__(self) -> int:
        return len(self.itos)

    def extended(self, words: Iterable[str]) -> "Vocabulary":
        """This vocabulary followed by the ``words`` it lacks, in their order; existing ids keep their meaning."""
        itos, seen = list(self.itos), set(self.itos)
        for word in words:
            if word not in seen:
                seen.add(word)
                itos.append(word)
        return Vocabulary(itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Sequence[str]) -> list[int]:
        # a literal "<pad>" in the text is an unknown word, never padding
        return [self.stoi.get(t, UNK_ID) or UNK_ID for t in tokens]

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.itos[i] if 0 <= i < len(self.itos) else UNK for i in ids]

    def to_json(self) -> dict:
        return {"itos": self.itos}

    @classmethod
    def from_json(cls, data: dict) -> "Vocabulary":
        if not isinstance(data, dict) or not isinstance(data.get("itos"), list) or not all(
                isinstance(t, str) for t in data["itos"]):
            raise ValueError("vocab.json must be an object with a list of strings under 'itos'.")
        return cls(data["itos"])

    def save(self, path: str | Path) -> None:
        from core.runs import atomic_write_text
        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass
class Encoded:
    ids: list[int]  # what the model sees; never empty
    tokens: list[str]  # the tokens behind ``ids`` (after truncation)
    truncated: int  # tokens cut off beyond max_length
    empty: bool  # the text had no tokens; ids holds one <unk>


class TextEncoder:
    """Tokeniser + vocabulary + truncation: the one path from raw text to model input."""

    def __init__(self, config: TextConfig, vocab: Vocabulary):
        self.config = config
        self.vocab = vocab
        self.tokenizer = Tokenizer(config.tokenizer, config.lowercase)

    @classmethod
    def fit(cls, config: TextConfig, texts: Iterable[str]) -> "TextEncoder":
        config.validate()
        encoder = cls(config, Vocabulary([PAD, UNK]))
        reserved = (SENT_END,) if config.sentence_breaks else ()
        encoder.vocab = Vocabulary.build((encoder.tokenize(t) for t in texts), config.max_vocab_size,
                                         config.min_freq, reserved)
        return encoder

    def tokenize(self, text: str) -> list[str]:
        """Tokens, with ``</s>`` after each sentence when ``sentence_breaks`` is on."""
        tokens = self.tokenizer(text)
        if not self.config.sentence_breaks:
            return tokens
        # a literal "</s>" in the text is an unknown word, never a sentence end
        return mark_sentences([UNK if t == SENT_END else t for t in tokens])

    def encode(self, text: str, max_length: int | None = None) -> Encoded:
        limit = self.config.max_length if max_length is None else max_length
        if max_length is None and not self.config.truncate:
            limit = None
        tokens = self.tokenize(text)
        kept = keep_tokens(tokens, limit, self.config.truncation)
        if not kept:
            # a zero-length sequence cannot be packed; the model reads one <unk> instead
            return Encoded([UNK_ID], [UNK], 0, True)
        return Encoded(self.vocab.encode(kept), kept, len(tokens) - len(kept), False)

    def encode_many(self, texts: Iterable[str], max_length: int | None = None) -> list[list[int]]:
        return [self.encode(t, max_length).ids for t in texts]

    def to_json(self) -> dict:
        return {"config": asdict(self.config), **self.vocab.to_json()}
