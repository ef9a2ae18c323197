"""Load a saved run and classify texts with it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from core.data import TextTable
from core.models import LSTMClassifier, build_model, model_config_from_dict
from core.runs import RunError
from core.text import TextConfig, TextEncoder, Vocabulary
from core.training import predict_probs


@dataclass
class Prediction:
    text: str
    label: str
    probs: dict[str, float]
    tasks: dict[str, dict]  # label column -> {"label", "probs"} (several only for multi-task models)
    truncated: int = 0
    empty: bool = False

    def to_dict(self) -> dict:
        out = {"text": self.text, "label": self.label, "probs": self.probs}
        if len(self.tasks) > 1:
            out["tasks"] = self.tasks
        if self.empty:
            out["note"] = "the text has no tokens; the prediction is the model's prior"
        return out


class Predictor:
    """A model, its text encoder and its labels; everything needed to classify new text."""

    def __init__(self, model: LSTMClassifier, encoder: TextEncoder, label_columns: list[str],
                 labels: list[list[str]], metadata: dict | None = None):
        self.model = model.eval()
        self.encoder = encoder
        self.label_columns = label_columns
        self.labels = labels
        self.metadata = metadata or {}

    @property
    def classes_(self) -> list[str]:
        return self.labels[0]

    @classmethod
    def from_parts(cls, config: dict, vocab: dict, labels: dict, state: dict[str, torch.Tensor],
                   metadata: dict | None = None) -> "Predictor":
        """Build from the JSON parts of a run or bundle and a state dict (already safely loaded)."""
        try:
            model_cfg = model_config_from_dict(config["model"])
            text_cfg = TextConfig(**{k: v for k, v in vocab.get("tokenizer", {}).items()
                                     if k in TextConfig.__dataclass_fields__})
            vocabulary = Vocabulary.from_json(vocab)
            columns, label_sets = labels["columns"], labels["labels"]
        except (KeyError, TypeError, ValueError) as err:
            raise RunError(f"The model files are incomplete or malformed ({err}).") from None
        if len(vocabulary) != model_cfg.vocab_size:
            raise RunError(f"vocab.json has {len(vocabulary)} tokens but the model expects {model_cfg.vocab_size}.")
        model = build_model(model_cfg)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise RunError(f"The weights do not match the model configuration: {str(err).splitlines()[0]}") from None
        return cls(model, TextEncoder(text_cfg, vocabulary), columns, label_sets, metadata)

    @classmethod
    def load(cls, run_dir: str | Path, weights: str = "model.safetensors") -> "Predictor":
        from core.pipeline import load_state_dict

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise RunError(f"Run directory {run_dir} not found. `python -m core train` prints the run directory "
                           f"as its last line; the app lists runs on the Evaluate page.")
        from core.pretrain import is_encoder_dir
        if is_encoder_dir(run_dir):
            raise RunError(f"{run_dir} is a pretrained encoder (`python -m core pretrain`), not a classifier: "
                           f"train one from it with `python -m core train ... --init-from {run_dir}`.")
        missing = [n for n in ("config.json", "vocab.json", "labels.json", weights) if not (run_dir / n).is_file()]
        if missing:
            status = _status(run_dir)
            hint = f" The run's status is '{status}'." if status else ""
            raise RunError(f"{run_dir} has no {', '.join(missing)}: it is not a finished run.{hint}")
        read = lambda name: json.loads((run_dir / name).read_text(encoding="utf-8"))  # noqa: E731
        metrics = read("metrics.json") if (run_dir / "metrics.json").is_file() else {}
        return cls.from_parts(read("config.json"), read("vocab.json"), read("labels.json"),
                              load_state_dict(run_dir / weights),
                              {"run_dir": str(run_dir), "metrics": metrics, "config": read("config.json")})

    def probabilities(self, texts: Sequence[str], batch_size: int = 256) -> list[np.ndarray]:
        """(N, C) probabilities per task; columns follow ``labels[task]``."""
        return predict_probs(self.model, self.encoder.encode_many(texts), batch_size, "cpu")

    def predict(self, texts: Sequence[str], batch_size: int = 256) -> list[Prediction]:
        texts = [str(t) for t in texts]
        encoded = [self.encoder.encode(t) for t in texts]
        probs = predict_probs(self.model, [e.ids for e in encoded], batch_size, "cpu")
        out = []
        for i, (text, enc) in enumerate(zip(texts, encoded)):
            tasks = {}
            for col, labels, p in zip(self.label_columns, self.labels, probs):
                row = {label: round(float(v), 6) for label, v in zip(labels, p[i])}
                tasks[col] = {"label": labels[int(np.argmax(p[i]))], "probs": row}
            primary = tasks[self.label_columns[0]]
            out.append(Prediction(text, primary["label"], primary["probs"], tasks, enc.truncated, enc.empty))
        return out

    def evaluate(self, table: TextTable) -> dict:
        """Metrics per task on a labelled table; rows with unknown labels are counted and skipped."""
        from core.pipeline import label_matrix
        from core.training import evaluate_tasks

        y, keep = label_matrix(table, self.labels)
        index = np.flatnonzero(keep)
        seqs = self.encoder.encode_many([table.texts[i] for i in index])
        result = evaluate_tasks(self.model, seqs, y[index], self.labels, "cpu")
        result["skipped_unknown_labels"] = int(len(table) - len(index))
        result["index"] = index
        return result


def _status(run_dir: Path) -> str:
    try:
        return json.loads((run_dir / "status.json").read_text())["status"]
    except (OSError, KeyError, ValueError):
        return ""
