"""Pretrain the LSTM as a language model on unlabelled text, then start classifiers from it.

The forward direction reads each text left to right and predicts the next token; the backward
direction reads right to left and predicts the previous one (as in ELMo), so neither sees the
token it predicts. Both share one adaptive softmax over the ``output_vocab`` most frequent words
(rarer words are predicted as ``<unk>``). With pretrained vectors the embedding stays frozen by
default, so the LSTM learns to read the vectors the classifier will start from.

The result is an *encoder* directory (default under ``artifacts/encoders/``): config.json
(``"kind": "encoder"``), vocab.json, model.safetensors (embedding, LSTM and norm weights),
lm_head.safetensors (the softmax), metrics.json and history.jsonl.

``init_from`` goes on from an encoder: on more of the same texts, or on the unlabelled texts of
the task at hand (domain adaptation, as in ULMFiT). It keeps that encoder's vocabulary,
tokeniser and architecture; when the encoder has no saved softmax (or predicts another number of
words) a new one learns alone, with the LSTM fixed, for the first ``warmup_steps`` batches. ``python -m core train --init-from DIR`` starts a classifier from
it (core/pipeline.py ``initialise_from_run``): the LSTM weights and the vectors of shared words.
"""

from __future__ import annotations

import json
import math
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

from core.batching import BucketBatchSampler, collate
from core.data import DataError, _missing_column, describe_source, read_table
from core.models import LSTMClassifier, ModelConfig
from core.runs import (RunError, append_jsonl, atomic_save, atomic_write_json, new_run_id, safe_run_id,
                       write_status)
from core.text import UNK_ID, TextConfig, TextEncoder
from core.training import resolve_device, seed_everything

DEFAULT_ENCODERS_DIR = Path("artifacts") / "encoders"
ENCODER_KIND = "encoder"
HEAD_FILE = "lm_head.safetensors"


@dataclass
class PretrainConfig:
    texts: list[str] = field(default_factory=list)  # CSV/TSV/JSONL files (optionally .gz); labels are ignored
    text_col: str = "text"
    max_texts: int = 0  # 0 = every text; else the first N (after shuffling with the seed)
    valid_fraction: float = 0.05  # texts held out to report perplexity
    epochs: int = 1
    max_steps: int = 0  # > 0: stop after this many batches (a time budget that reproduces)
    batch_size: int = 64
    lr: float = 0.002  # Adam: linear warmup, then linear decay to a tenth at the last step
    warmup_steps: int = 200
    clip_grad_norm: float = 1.0
    output_vocab: int = 20_000  # words the model predicts; rarer words are predicted as <unk>
    freeze_embeddings: bool = True  # with pretrained vectors: keep them fixed
    init_from: str = ""  # an encoder directory to go on from (e.g. adapt it to the texts of a new domain)
    seed: int = 13
    device: str = "auto"

    def validate(self, in_memory: bool = False) -> "PretrainConfig":
        """``in_memory``: the texts are handed to ``pretrain(texts=...)``, so ``texts`` only names them."""
        if not self.texts and not in_memory:
            raise ValueError("No texts to pretrain on: give --texts PATH (CSV/TSV/JSONL with a text column).")
        for name in ("epochs", "batch_size", "output_vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"The '{name}' parameter must be an int >= 1. Got {value!r} instead.")
        for name in ("max_texts", "max_steps", "warmup_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"The '{name}' parameter must be an int >= 0 (0 = no limit). Got {value!r} instead.")
        if not 0.0 < self.valid_fraction < 0.5:
            raise ValueError(f"The 'valid_fraction' parameter must be a float in (0, 0.5). "
                             f"Got {self.valid_fraction!r} instead.")
        if not self.lr > 0 or not self.clip_grad_norm > 0:
            raise ValueError(f"The 'lr' and 'clip_grad_norm' parameters must be > 0. "
                             f"Got {self.lr!r} and {self.clip_grad_norm!r}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"The 'device' parameter must be one of auto, cpu, cuda. Got {self.device!r} instead.")
        return self


@dataclass
class EncoderRunConfig:
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    text: TextConfig = field(default_factory=lambda: TextConfig(max_vocab_size=50_000, min_freq=2, max_length=400))
    model: ModelConfig = field(default_factory=lambda: ModelConfig(hidden_dim=256, dropout=0.3))
    pretrained_vectors: str = ""

    def validate(self, in_memory: bool = False) -> "EncoderRunConfig":
        self.pretrain.validate(in_memory)
        self.text.validate()
        self.model.validate()
        if self.model.hierarchical or self.model.chunk_length or self.model.ngrams:
            raise ValueError("A pretrained encoder is a plain (Bi)LSTM: leave --hierarchical, --chunk-length and "
                             "--ngrams off here (they are the classifier's choices).")
        if self.text.sentence_breaks:
            raise ValueError("sentence_breaks marks sentences for hierarchical models; leave it off for pretraining.")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PretrainResult:
    run_dir: Path
    status: str  # completed | cancelled | diverged
    message: str
    metrics: dict


class LanguageModelHead(nn.Module):
    """Adaptive softmax over the ``size`` most frequent words, shared by both directions."""

    def __init__(self, hidden_dim: int, size: int):
        super().__init__()
        self.size = size
        cutoffs = [c for c in (2_000, 10_000) if c < size - 1] or [max(1, size // 2)]
        self.softmax = nn.AdaptiveLogSoftmaxWithLoss(hidden_dim, size, cutoffs=cutoffs, div_value=4.0)

    def loss(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood (nats) of ``targets`` (N,) given ``states`` (N, H)."""
        targets = torch.where(targets >= self.size, torch.full_like(targets, UNK_ID), targets)
        return self.softmax(states.float(), targets).loss


def language_model_loss(model: LSTMClassifier, head: LanguageModelHead, ids: torch.Tensor,
                        lengths: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Next-token loss (forward direction) and previous-token loss (backward), averaged; and the
    number of predictions it averages over."""
    T = ids.shape[1]
    mask = torch.arange(T, device=ids.device).unsqueeze(0) < lengths.to(ids.device).unsqueeze(1)
    states, _, _ = model.encode(model.embedding(ids), lengths)
    states = model.dropout(states)
    H = model.config.hidden_dim
    pairs = mask[:, 1:]  # positions t where t and t+1 are both real tokens
    n = int(pairs.sum())
    if n == 0:  # one-token texts only: nothing to predict
        return states.sum() * 0.0, 0
    losses = [head.loss(states[:, :-1, :H][pairs], ids[:, 1:][pairs])]  # state at t -> token t+1
    if model.config.bidirectional:
        losses.append(head.loss(states[:, 1:, H:][pairs], ids[:, :-1][pairs]))  # state at t+1 -> token t
    return sum(losses) / len(losses), n


def read_texts(paths: Sequence[str], text_col: str, log: Callable[[str], None] = print) -> list[str]:
    """Every non-empty text in ``text_col`` of each file."""
    texts: list[str] = []
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"--texts {path}: file not found. Check the path (it is relative to {Path.cwd()}).")
        frame, notes = read_table(path)
        name = describe_source(path)
        if text_col not in frame.columns:
            raise _missing_column(name, text_col, [str(c) for c in frame.columns], "--text-col")
        column = [str(t) for t in frame[text_col].tolist()]
        kept = [t for t in column if t.strip()]
        log(f"{name}: {len(kept)} texts" + (f" ({len(column) - len(kept)} empty skipped)" if len(kept) < len(column)
                                            else "") + "".join(f"; {n}" for n in notes))
        texts.extend(kept)
    return _enough(texts, "in --texts")


def _enough(texts: list[str], where: str) -> list[str]:
    if len(texts) < 2:
        raise DataError(f"Only {len(texts)} non-empty text(s) {where}: pretraining needs at least 2 "
                        f"(one to learn from, one to measure on); thousands help.")
    return texts


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.1, 1.0 - 0.9 * (step - warmup) / max(1, total - warmup))


@torch.no_grad()
def _validation_loss(model, head, sequences, batch_size: int, device) -> float:
    model.eval()
    total = count = 0.0
    order = np.argsort([len(s) for s in sequences], kind="stable")
    for start in range(0, len(order), batch_size):
        ids, lengths = collate([sequences[i] for i in order[start:start + batch_size]])
        loss, n = language_model_loss(model, head, ids.to(device), lengths)
        total += float(loss) * n
        count += n
    model.train()
    return total / count if count else float("nan")


def pretrain(cfg: EncoderRunConfig, *, texts: Sequence[str] | None = None,
             out_dir: str | Path = DEFAULT_ENCODERS_DIR, run_id: str | None = None,
             stop: threading.Event | None = None, log: Callable[[str], None] = print,
             progress: Callable[[dict], None] | None = None,
             on_epoch: Callable[[dict], None] | None = None) -> PretrainResult:
    """Train an encoder as a bidirectional language model and save it. ``stop`` is checked every
    batch; a stopped run still saves what it learned (status ``cancelled``).

    ``texts``: the texts themselves (then ``cfg.pretrain.texts`` only names where they came from;
    the files are not read). ``progress`` gets a dict after every batch (step, total_steps, epoch,
    epochs, loss, epoch_loss: the epoch's mean so far, lr, tokens_per_s, elapsed seconds);
    ``on_epoch`` each epoch's record as history.jsonl holds it."""
    cfg.validate(in_memory=texts is not None)
    p = cfg.pretrain
    run_id = safe_run_id(run_id) if run_id else new_run_id("encoder")
    run_dir = Path(out_dir) / run_id
    if (run_dir / "config.json").exists():
        raise RunError(f"{run_dir} already exists: choose another --run-id.")
    if texts is None:
        texts = read_texts(p.texts, p.text_col, log)
    else:
        given = len(texts)
        texts = _enough([str(t) for t in texts if str(t).strip()], "to pretrain on")
        log(f"{len(texts)} texts" + (f" ({given - len(texts)} empty skipped)" if len(texts) < given else ""))
    rng = np.random.default_rng(p.seed)
    texts = [texts[i] for i in rng.permutation(len(texts))]
    if p.max_texts:
        texts = texts[:p.max_texts]
    n_valid = max(1, int(round(len(texts) * p.valid_fraction)))
    train_texts, valid_texts = texts[n_valid:], texts[:n_valid]

    source = _source_encoder(p.init_from) if p.init_from else None
    if source is not None:
        encoder = TextEncoder(source["text"], source["vocab"])
        cfg.text, cfg.pretrained_vectors = source["text"], source["pretrained_vectors"]
        log(f"going on from {p.init_from}: its vocabulary ({len(encoder.vocab)} tokens), tokeniser and architecture "
            f"(hidden {source['model'].hidden_dim}, {source['model'].num_layers} layer(s), "
            f"{'bidirectional' if source['model'].bidirectional else 'forward only'})")
    else:
        encoder = TextEncoder.fit(cfg.text, train_texts)
        log(f"vocabulary: {len(encoder.vocab)} tokens (max {cfg.text.max_vocab_size}, min_freq {cfg.text.min_freq}); "
            f"predicting the {min(p.output_vocab, len(encoder.vocab))} most frequent")
    train_seqs = [s for s in encoder.encode_many(train_texts) if len(s) > 1]
    valid_seqs = [s for s in encoder.encode_many(valid_texts) if len(s) > 1]
    if not train_seqs or not valid_seqs:
        raise DataError("The texts have at most one token each: a language model needs texts of two tokens or more.")
    tokens = sum(len(s) for s in train_seqs)
    unknown = sum(int(np.sum(np.asarray(s) == UNK_ID)) for s in train_seqs)
    log(f"data: {len(train_seqs)} texts ({tokens} tokens, {unknown / max(1, tokens):.1%} <unk>) to learn from, "
        f"{len(valid_seqs)} held out")

    coverage = matrix = None  # coverage: a dict, as config.json records it
    if source is not None:
        model_cfg = source["model"]
        coverage = source["coverage"]
    else:
        model_cfg = ModelConfig(**{**asdict(cfg.model), "vocab_size": len(encoder.vocab), "num_classes": [2],
                                   "pooling": "mean"})
        if cfg.pretrained_vectors:
            from core.embeddings import build_embedding_matrix
            matrix, found = build_embedding_matrix(encoder.vocab, cfg.pretrained_vectors, seed=p.seed)
            model_cfg.embedding_dim, coverage = found.dim, found.to_dict()
            log(str(found))
    cfg.model = model_cfg
    seed_everything(p.seed)
    model = LSTMClassifier(model_cfg)
    if matrix is not None:
        with torch.no_grad():
            model.embedding.weight.copy_(torch.from_numpy(matrix))
    head = LanguageModelHead(model_cfg.hidden_dim, min(p.output_vocab, len(encoder.vocab)))
    head_only_steps = 0
    if source is not None:
        mine = model.state_dict()
        mine.update({k: v for k, v in source["weights"].items() if k in mine})
        model.load_state_dict(mine)
        saved_head = source["head"]
        if saved_head is not None and _fits(head, saved_head):
            head.load_state_dict(saved_head)
            log("its language-model softmax goes on learning too")
        else:
            head_only_steps = p.warmup_steps
            log(f"a new softmax over {head.size} words (the encoder " +
                ("predicts another number of words" if saved_head is not None else "saved none") +
                f"): it learns alone, the LSTM fixed, for the first {head_only_steps} batches")
    frozen = bool(cfg.pretrained_vectors) and p.freeze_embeddings
    model.embedding.weight.requires_grad_(not frozen)
    device = resolve_device(p.device)
    model.to(device).train()
    head.to(device).train()
    encoder_params = [q for name, q in model.named_parameters()
                      if q.requires_grad and not name.startswith(("heads.", "attention."))]
    optimiser = torch.optim.Adam(encoder_params + list(head.parameters()), lr=p.lr)

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", {"kind": ENCODER_KIND, "run": cfg.to_dict(), "model": model_cfg.to_dict(),
                                                "embedding_coverage": coverage})
    atomic_write_json(run_dir / "vocab.json", {"tokenizer": asdict(cfg.text), **encoder.vocab.to_json()})
    (run_dir / "history.jsonl").write_text("", encoding="utf-8")
    created = time.time()
    write_status(run_dir, "running", "", created=created, device=str(device))

    sampler = BucketBatchSampler([len(s) for s in train_seqs], p.batch_size, seed=p.seed)
    per_epoch = len(sampler)
    total = min(p.max_steps, per_epoch * p.epochs) if p.max_steps else per_epoch * p.epochs
    status, message, step, history = "completed", "", 0, []
    started = time.perf_counter()
    try:
        for epoch in range(1, p.epochs + 1):
            sampler.set_epoch(epoch)
            epoch_loss = epoch_n = 0.0
            epoch_started, seen = time.perf_counter(), 0
            for batch in sampler:
                if stop is not None and stop.is_set():
                    status, message = "cancelled", f"stopped after {step} steps"
                    break
                if step >= total:
                    break
                if head_only_steps and step in (0, head_only_steps):
                    for q in encoder_params:
                        q.requires_grad_(step >= head_only_steps)
                for group in optimiser.param_groups:
                    group["lr"] = p.lr * _lr_factor(step, total, p.warmup_steps)
                ids, lengths = collate([train_seqs[i] for i in batch])
                loss, n = language_model_loss(model, head, ids.to(device), lengths)
                if not torch.isfinite(loss):
                    status, message = "diverged", f"loss became {float(loss)} at step {step}; lower --lr"
                    break
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([q for q in encoder_params if q.grad is not None]
                                               + list(head.parameters()), p.clip_grad_norm)
                optimiser.step()
                step += 1
                seen += int(lengths.sum())
                epoch_loss += loss.item() * n
                epoch_n += n
                if progress is not None:
                    now = time.perf_counter()
                    progress({"step": step, "total_steps": total, "epoch": epoch, "epochs": p.epochs,
                              "loss": loss.item(), "epoch_loss": epoch_loss / max(1, epoch_n),
                              "lr": optimiser.param_groups[0]["lr"],
                              "tokens_per_s": seen / max(1e-9, now - epoch_started), "elapsed": now - started})
                if step % 100 == 0:
                    rate = seen / max(1e-9, time.perf_counter() - epoch_started)
                    log(f"step {step}/{total}: loss {epoch_loss / max(1, epoch_n):.3f} "
                        f"(perplexity {math.exp(min(50.0, epoch_loss / max(1, epoch_n))):.1f}), {rate:,.0f} tokens/s")
            if status == "diverged" or epoch_n == 0:
                break
            valid = _validation_loss(model, head, valid_seqs, 128, device)
            record = {"epoch": epoch, "steps": step, "train_loss": round(epoch_loss / epoch_n, 4),
                      "valid_loss": round(valid, 4), "valid_perplexity": round(math.exp(min(50.0, valid)), 2),
                      "seconds": round(time.perf_counter() - epoch_started, 2),
                      "tokens_per_s": round(seen / max(1e-9, time.perf_counter() - epoch_started), 1)}
            history.append(record)
            append_jsonl(run_dir / "history.jsonl", record)
            log(" ".join(f"{k}={v}" for k, v in record.items()))
            if on_epoch is not None:
                on_epoch(dict(record))
            if status != "completed" or step >= total:
                break
    except Exception as err:
        write_status(run_dir, "failed", f"{type(err).__name__}: {err}", created=created,
                     traceback=traceback.format_exc(limit=5))
        raise

    metrics: dict = {}
    if history:  # save what was learned, also when stopped early
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
                 if not k.startswith(("heads.", "attention."))}
        atomic_save(run_dir / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
        head_state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
        atomic_save(run_dir / HEAD_FILE, lambda tmp: save_file(head_state, str(tmp)))
        metrics = {"valid_loss": history[-1]["valid_loss"], "valid_perplexity": history[-1]["valid_perplexity"],
                   "steps": step, "train_texts": len(train_seqs), "train_tokens": tokens,
                   "train_seconds": round(time.perf_counter() - started, 2), "epochs_run": len(history)}
        atomic_write_json(run_dir / "metrics.json", metrics)
    elif status == "completed":
        status, message = "cancelled", "no step was taken"
    write_status(run_dir, status, message, created=created)
    log(f"status: {status}{' (' + message + ')' if message else ''}")
    return PretrainResult(run_dir, status, message, metrics)


def is_encoder_dir(path: str | Path) -> bool:
    try:
        return json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("kind") == ENCODER_KIND
    except (OSError, ValueError, AttributeError):
        return False


def load_encoder(path: str | Path) -> tuple[ModelConfig, "Vocabulary", dict[str, torch.Tensor]]:  # noqa: F821
    """The model config, vocabulary and weights of a pretrained encoder directory."""
    from core.pipeline import load_state_dict
    from core.text import Vocabulary

    path = Path(path)
    if not (path / "model.safetensors").is_file():
        raise RunError(f"{path} holds no model.safetensors: the pretraining did not finish a single epoch. "
                       f"Run `python -m core pretrain` again.")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        model_cfg = ModelConfig.from_dict(config["model"])
        vocab = Vocabulary.from_json(json.loads((path / "vocab.json").read_text(encoding="utf-8")))
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise RunError(f"{path}: the encoder files are incomplete or malformed ({err}).") from None
    return model_cfg, vocab, load_state_dict(path / "model.safetensors")



def _fits(module: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    mine = module.state_dict()
    return set(mine) == set(state) and all(mine[k].shape == state[k].shape for k in mine)


def _source_encoder(path: str) -> dict:
    """What ``init_from`` takes from an encoder directory; a clear error for anything else."""
    from core.pipeline import load_state_dict
    from core.text import Vocabulary

    folder = Path(path)
    if not is_encoder_dir(folder):
        what = "a classifier run" if (folder / "labels.json").is_file() else "not an encoder directory"
        raise RunError(f"--init-from {path}: {what}. Give a folder made by `python -m core pretrain` "
                       f"(it holds config.json with \"kind\": \"encoder\").")
    model_cfg, vocab, weights = load_encoder(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        tokenizer = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))["tokenizer"]
        text = TextConfig(**tokenizer)
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise RunError(f"{path}: the encoder files are incomplete or malformed ({err}).") from None
    head = load_state_dict(folder / HEAD_FILE) if (folder / HEAD_FILE).is_file() else None
    return {"model": model_cfg, "vocab": vocab, "weights": weights, "head": head, "text": text,
            "coverage": config.get("embedding_coverage"),
            "pretrained_vectors": str(config.get("run", {}).get("pretrained_vectors", ""))}
