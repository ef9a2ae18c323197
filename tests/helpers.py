"""Tiny generated data files and tiny run configurations shared by the engine tests."""

from __future__ import annotations

import csv
import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path

from core.models import ModelConfig
from core.pipeline import DataConfig, RunConfig
from core.text import TextConfig
from core.training import TrainConfig

FILLER = "the a movie film plot actor scene story time people really quite".split()
# the one word that gives each label away; a list means one of its words, drawn at random
KEYWORDS = {"neg": "awful", "pos": "great", "mixed": "okay", "cat": "meow", "dog": "woof", "bird": "tweet"}
TOPIC_WORDS = {"food": "pizza", "film": "cinema", "tech": "laptop"}


def write_keyword_csv(path: Path, n: int, seed: int = 0, labels: Sequence[str] = ("neg", "pos"),
                      topics: bool = False, length: tuple[int, int] = (2, 8), filler: Sequence[str] = FILLER,
                      keywords: dict[str, str | Sequence[str]] = KEYWORDS, cycle_labels: bool = False) -> Path:
    """A CSV of ``n`` texts (columns text, label): ``length`` filler words plus the label's keyword.

    Labels are drawn at random, or taken in turn with ``cycle_labels``. With ``topics`` a second
    label column 'topic' (food / film / tech) is given away by a word of its own.
    """
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "label"] + (["topic"] if topics else []))
        for i in range(n):
            label = labels[i % len(labels)] if cycle_labels else rng.choice(labels)
            words = rng.choices(filler, k=rng.randint(*length))
            keyword = keywords[label]
            words.append(keyword if isinstance(keyword, str) else rng.choice(keyword))
            row = [label]
            if topics:
                topic = rng.choice(list(TOPIC_WORDS))
                words.append(TOPIC_WORDS[topic])
                row.append(topic)
            rng.shuffle(words)
            writer.writerow([" ".join(words)] + row)
    return path


_SECTIONS = {name: {f.name for f in dataclasses.fields(cls)}
             for name, cls in (("data", DataConfig), ("text", TextConfig), ("model", ModelConfig),
                               ("train", TrainConfig))}


def tiny_config(train: Path | str = "", epochs: int = 4, **overrides) -> RunConfig:
    """A small whitespace-tokenised model trained on the CPU at a fixed learning rate, no warmup.

    Each override goes to the part of the RunConfig that has a field of that name
    (``valid=...`` to DataConfig, ``max_length=...`` to TextConfig, ``hidden_dim=...`` to
    ModelConfig, ``seed=...`` to TrainConfig).
    """
    parts = {"data": {"train": str(train)}, "text": {"tokenizer": "whitespace"},
             "model": {"embedding_dim": 8, "hidden_dim": 8, "dropout": 0.2},
             "train": {"epochs": epochs, "batch_size": 16, "lr": 0.01, "warmup_steps": 0, "device": "cpu",
                       "patience": 100, "seed": 5}}
    for key, value in overrides.items():
        section = next((name for name, fields in _SECTIONS.items() if key in fields), None)
        if section is None:
            raise TypeError(f"tiny_config() got an unknown setting {key!r}")
        parts[section][key] = value
    return RunConfig(data=DataConfig(**parts["data"]), text=TextConfig(**parts["text"]),
                     model=ModelConfig(**parts["model"]), train=TrainConfig(**parts["train"]))
