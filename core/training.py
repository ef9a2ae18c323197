"""The fit loop: losses, warmup + ReduceLROnPlateau, clipping, early stopping, events, stop flag.

``fit`` trains a model on encoded examples and reports through small frozen event records
(``before_fit``, ``after_batch``, ``after_epoch``, ``after_fit``), so a background thread can
forward them to a UI without sharing the trainer. A ``threading.Event`` passed as ``stop`` is
checked before every batch; setting it ends the run as ``cancelled`` within one batch.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core.batching import BucketBatchSampler, collate
from core.metrics import classification_report
from core.models import logits_to_probs

OPTIMIZERS = ("adam", "adamw")
SELECT_METRICS = ("loss", "accuracy", "macro_f1")
NGRAM_FITS = ("joint", "separate")
AMP_MODES = ("off", "auto", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"  # adam | adamw
    lr: float = 2e-3
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    warmup_steps: int = 100  # linear warmup from 0 to lr over this many batches
    plateau_factor: float = 0.5  # ReduceLROnPlateau: multiply lr by this ...
    plateau_patience: int = 0  # ... after this many epochs without improvement
    clip_grad_norm: float = 5.0  # 0 turns clipping off
    patience: int = 3  # early stopping: epochs without improvement before stopping
    select_metric: str = "accuracy"  # validation metric that picks the best epoch
    class_weights: str = "none"  # none | balanced | explicit "pos=2,neg=1"
    freeze_embeddings: bool = False
    seed: int = 13
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "off"  # off | auto | fp16 | bf16 (mixed precision; auto: fp16 on CUDA, bf16 on CPU)
    fgm_epsilon: float = 0.0  # > 0 turns on FGM adversarial training on the embedding output
    ema_decay: float = 0.0  # > 0 averages the weights over steps (e.g. 0.99); validation and the saved model use the average
    dropout_schedule: str = ""  # "START:END", e.g. "0.3:0.5": dropout moves linearly over epochs
    task_weights: str = ""  # multi-task loss weights, "1,0.5" (one per label column)
    pool_batches: int = 100  # the bucket sampler sorts lengths inside pools of this many batches
    # > 1: train this many models (seeds seed, seed+1, ...) on one split and save an ensemble run that
    # averages their probabilities (core/ensemble.py); each member is an ordinary run
    ensemble: int = 1
    # how the n-gram part (--ngrams) learns: joint = with the LSTM, by the same gradient steps;
    # separate = the LSTM trains alone, then the n-gram part is fitted as a logistic regression and
    # added with the weight that scores best on validation (core/wide.py)
    ngram_fit: str = "joint"

    def validate(self) -> "TrainConfig":
        ints = {"epochs": 1, "batch_size": 1, "warmup_steps": 0, "plateau_patience": 0, "patience": 1,
                "pool_batches": 1, "ensemble": 1}
        for name, low in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"The '{name}' parameter must be an int >= {low}. Got {value!r} instead.")
        for name in ("lr",):
            if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
                raise ValueError(f"The 'lr' parameter must be a number > 0. Got {self.lr!r} instead.")
        if not 0.0 <= self.weight_decay < 1.0:
            raise ValueError(f"The 'weight_decay' parameter must be in [0, 1). Got {self.weight_decay!r} instead.")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"The 'label_smoothing' parameter must be in [0, 0.5). Got {self.label_smoothing!r} instead.")
        if not 0.0 < self.plateau_factor <= 1.0:
            raise ValueError(f"The 'plateau_factor' parameter must be in (0, 1]. Got {self.plateau_factor!r} instead.")
        if self.clip_grad_norm < 0:
            raise ValueError(f"The 'clip_grad_norm' parameter must be >= 0. Got {self.clip_grad_norm!r} instead.")
        if self.fgm_epsilon < 0:
            raise ValueError(f"The 'fgm_epsilon' parameter must be >= 0. Got {self.fgm_epsilon!r} instead.")
        if not (isinstance(self.ema_decay, (int, float)) and 0.0 <= self.ema_decay < 1.0):
            raise ValueError(f"The 'ema_decay' parameter must be in [0, 1), e.g. 0.99 (0 = off). "
                             f"Got {self.ema_decay!r} instead.")
        for name, choices in (("optimizer", OPTIMIZERS), ("select_metric", SELECT_METRICS),
                              ("amp", AMP_MODES), ("device", DEVICES), ("ngram_fit", NGRAM_FITS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"The '{name}' parameter must be one of {', '.join(choices)}. "
                                 f"Got {getattr(self, name)!r} instead.")
        self.dropout_range()
        return self

    def dropout_range(self) -> tuple[float, float] | None:
        if not self.dropout_schedule:
            return None
        try:
            start, end = (float(x) for x in self.dropout_schedule.split(":"))
        except ValueError:
            raise ValueError(f"The 'dropout_schedule' parameter must look like START:END, e.g. 0.3:0.5. "
                             f"Got {self.dropout_schedule!r} instead.") from None
        if not (0 <= start < 1 and 0 <= end < 1):
            raise ValueError(f"The 'dropout_schedule' values must be in [0, 1). Got {self.dropout_schedule!r}.")
        return start, end

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ---- events -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BeforeFit:
    name = "before_fit"
    epochs: int
    steps_per_epoch: int
    n_train: int
    n_valid: int
    device: str
    parameters: int
    start_epoch: int = 0


@dataclass(frozen=True)
class AfterBatch:
    name = "after_batch"
    epoch: int  # 1-based
    step: int  # 1-based inside the epoch
    steps_per_epoch: int
    global_step: int
    loss: float
    lr: float
    tokens_per_s: float
    elapsed: float


@dataclass(frozen=True)
class AfterEpoch:
    name = "after_epoch"
    epoch: int
    record: dict  # one history.jsonl line
    improved: bool


@dataclass(frozen=True)
class AfterFit:
    name = "after_fit"
    status: str  # completed | cancelled | diverged | failed
    message: str
    best_epoch: int
    best_score: float | None


Event = BeforeFit | AfterBatch | AfterEpoch | AfterFit
Callback = Callable[[Event], None]


class Diverged(RuntimeError):
    pass


@dataclass
class FitResult:
    status: str
    message: str
    best_epoch: int
    best_state: dict[str, torch.Tensor] | None
    history: list[dict] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("The 'device' parameter is 'cuda' but no CUDA GPU is available. Use --device cpu or auto.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))


def parse_class_weights(spec: str, labels: Sequence[str], y: np.ndarray) -> torch.Tensor | None:
    """'none' -> None; 'balanced' -> n / (C * count_c); 'neg=1,pos=2' -> explicit weights."""
    spec = (spec or "none").strip()
    if spec == "none":
        return None
    n_classes = len(labels)
    if spec == "balanced":
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        return torch.tensor(len(y) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    weights = {}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"The 'class_weights' parameter must be none, balanced or label=weight pairs "
                             f"such as {labels[0]}=1,{labels[-1]}=2. Got {spec!r} instead.") from None
    unknown = sorted(set(weights) - set(labels))
    if unknown:
        raise ValueError(f"The 'class_weights' parameter names unknown classes {unknown}; "
                         f"the classes are {list(labels)}.")
    return torch.tensor([weights.get(label, 1.0) for label in labels], dtype=torch.float32)


def parse_task_weights(spec: str, n_tasks: int) -> list[float]:
    if not spec:
        return [1.0] * n_tasks
    try:
        weights = [float(x) for x in spec.split(",")]
    except ValueError:
        raise ValueError(f"The 'task_weights' parameter must be comma-separated numbers. Got {spec!r}.") from None
    if len(weights) != n_tasks:
        raise ValueError(f"The 'task_weights' parameter has {len(weights)} values for {n_tasks} label columns.")
    return weights


def task_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float,
              class_weight: torch.Tensor | None) -> torch.Tensor:
    """BCEWithLogits for one-logit (binary) heads, cross-entropy otherwise; both label-smoothed."""
    logits = logits.float()
    if logits.shape[-1] == 1:
        soft = target.float() * (1 - smoothing) + 0.5 * smoothing
        per_example = F.binary_cross_entropy_with_logits(logits.squeeze(-1), soft, reduction="none")
        if class_weight is None:
            return per_example.mean()
        w = class_weight.to(logits.device)[target]
        return (per_example * w).sum() / w.sum()
    return F.cross_entropy(logits, target, weight=None if class_weight is None else class_weight.to(logits.device),
                           label_smoothing=smoothing)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, sequences: Sequence[Sequence[int]], batch_size: int = 256,
                   device: torch.device | str = "cpu") -> list[np.ndarray]:
    """Logits per task ((N, 1) for two classes, (N, C) for more), in input order. Batches are
    length-sorted for speed."""
    model.eval()
    device = torch.device(device)
    order = np.argsort([len(s) for s in sequences], kind="stable")
    outputs: list[list[np.ndarray]] | None = None
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        ids, lengths = collate([sequences[i] for i in index])
        logits, _ = model(ids.to(device), lengths)
        if outputs is None:
            outputs = [[] for _ in logits]
        for bucket, t in zip(outputs, logits):
            bucket.append(t.float().cpu().numpy())
    if outputs is None:
        return []
    result = []
    for bucket in outputs:
        stacked = np.concatenate(bucket)
        restored = np.empty_like(stacked)
        restored[order] = stacked
        result.append(restored)
    return result


def predict_probs(model: torch.nn.Module, sequences: Sequence[Sequence[int]], batch_size: int = 256,
                  device: torch.device | str = "cpu") -> list[np.ndarray]:
    """Class probabilities per task, in input order."""
    return [logits_to_probs(torch.from_numpy(t)).numpy()
            for t in predict_logits(model, sequences, batch_size, device)]


def evaluate_tasks(model, sequences, y: np.ndarray, label_sets: Sequence[Sequence[str]], device,
                   smoothing: float = 0.0, batch_size: int = 256) -> dict:
    """Loss and metrics per task; the top level repeats the primary task's figures."""
    probs = predict_probs(model, sequences, batch_size, device)
    tasks = {}
    total_loss = 0.0
    for k, (p, labels) in enumerate(zip(probs, label_sets)):
        report = classification_report(y[:, k], p, labels)
        eps = 1e-7
        true_p = np.clip(p[np.arange(len(p)), y[:, k]], eps, 1.0)
        report["loss"] = float(-np.log(true_p).mean())
        total_loss += report["loss"]
        tasks[str(k)] = report
    primary = tasks["0"]
    return {"loss": total_loss / len(tasks), "accuracy": float(np.mean([t["accuracy"] for t in tasks.values()])),
            "macro_f1": float(np.mean([t["macro_f1"] for t in tasks.values()])), "primary": primary,
            "tasks": tasks, "probs": probs}


def _score(metrics: dict, select: str) -> float:
    return -metrics["loss"] if select == "loss" else metrics[select]


@functools.lru_cache(maxsize=1)
def cpu_bf16_lstm_supported() -> bool:
    """Whether this CPU runs an LSTM under bf16 autocast (oneDNN needs bf16 instructions for it)."""
    lstm = torch.nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            out, _ = lstm(torch.zeros(1, 2, 4, requires_grad=True))
        out.float().sum().backward()
    except RuntimeError:
        return False
    return True


def _autocast(device: torch.device, amp: str):
    if amp == "off":
        return contextlib.nullcontext(), False
    requested = amp
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "bf16"
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.bfloat16  # fp16 autocast is a GPU feature
    if device.type == "cpu" and not cpu_bf16_lstm_supported():
        if requested == "auto":
            return contextlib.nullcontext(), False  # auto: full precision where mixed precision cannot run
        raise ValueError(f"Mixed precision (--amp {requested}) cannot run on this CPU: it has no bf16 support "
                         f"for the LSTM. Train with --amp off (or --amp auto), or on a GPU.")
    return torch.autocast(device_type=device.type, dtype=dtype), dtype == torch.float16 and device.type == "cuda"


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def fit(model: torch.nn.Module, train_seqs: Sequence[Sequence[int]], train_y: np.ndarray,
        valid_seqs: Sequence[Sequence[int]], valid_y: np.ndarray, label_sets: Sequence[Sequence[str]],
        config: TrainConfig, *, callbacks: Sequence[Callback] = (), stop: threading.Event | None = None,
        checkpoint: Callable[[dict], None] | None = None, save_best: Callable[[dict], None] | None = None,
        resume: dict | None = None, distributed=None) -> FitResult:
    """Train ``model``; returns the status, best epoch and best weights (by ``select_metric``).

    ``train_y`` is (N, tasks) of class indices. ``checkpoint`` receives the full training state
    after each epoch, ``save_best`` the best weights whenever they improve; ``resume`` is a state
    previously given to ``checkpoint``.
    """
    config.validate()
    device = resolve_device(config.device)
    stop = stop or threading.Event()
    emit = lambda event: [cb(event) for cb in callbacks]  # noqa: E731
    rank_zero = distributed is None or distributed.rank == 0
    n_tasks = train_y.shape[1]
    task_weights = parse_task_weights(config.task_weights, n_tasks)
    class_weights = [parse_class_weights(config.class_weights, label_sets[0], train_y[:, 0])] + \
        [None] * (n_tasks - 1)

    seed_everything(config.seed)
    model.to(device)
    base_model = model.module if hasattr(model, "module") else model
    base_model.embedding.weight.requires_grad_(not config.freeze_embeddings)
    ngrams = getattr(base_model, "ngrams", None)
    if ngrams is not None and config.ngram_fit == "separate":  # fitted after training (core/wide.py)
        ngrams.table.weight.requires_grad_(False)
        ngrams.active = False
    if distributed is not None:  # wrapped after freezing: DDP syncs only parameters that take gradients
        model = distributed.wrap(base_model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=config.lr, weight_decay=config.weight_decay)
    autocast, use_scaler = _autocast(device, config.amp)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    batch_size = config.batch_size
    lengths = [len(s) for s in train_seqs]

    def make_sampler(size):
        return BucketBatchSampler(lengths, size, pool_batches=config.pool_batches, seed=config.seed,
                                  num_replicas=distributed.world_size if distributed else 1,
                                  rank=distributed.rank if distributed else 0)

    sampler = make_sampler(batch_size)
    state = {"epoch": 0, "global_step": 0, "plateau_scale": 1.0, "plateau_best": -math.inf, "plateau_bad": 0,
             "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [], "batch_size": batch_size}
    best_state = None
    if resume:
        base_model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        state.update({k: v for k, v in resume["progress"].items()})
        torch.set_rng_state(resume["rng"])
        if scaler is not None and "scaler" in resume:
            scaler.load_state_dict(resume["scaler"])
        if state["batch_size"] != batch_size:
            batch_size = state["batch_size"]
            sampler = make_sampler(batch_size)
        best_state = resume.get("best")
    history: list[dict] = list(state["history"])
    ema = WeightAverage(base_model, config.ema_decay) if config.ema_decay > 0 else None
    if ema is not None and resume and "ema" in resume:
        ema.load(resume["ema"])

    emit(BeforeFit(config.epochs, len(sampler), len(train_seqs), len(valid_seqs), str(device),
                   sum(p.numel() for p in params), state["epoch"]))
    dropout_range = config.dropout_range()
    status, message = "completed", ""
    started = time.perf_counter()

    def set_lr():
        warm = min(1.0, (state["global_step"] + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        lr = config.lr * warm * state["plateau_scale"]
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_step(ids, lens, targets) -> tuple[float, int]:
        ids, targets = ids.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast:
            if distributed is None:
                embedded = base_model.embed(ids)
                if config.fgm_epsilon > 0:
                    embedded.retain_grad()
                logits, _ = base_model.forward_embedded(embedded, lens)
            else:  # DDP synchronises gradients through its own forward
                embedded = None
                logits, _ = model(ids, lens)
            loss = sum(w * task_loss(lg, targets[:, k], config.label_smoothing, class_weights[k])
                       for k, (w, lg) in enumerate(zip(task_weights, logits)))
        diverged = not bool(torch.isfinite(loss))
        if distributed is not None:  # every rank leaves at the same step, none waits in an all-reduce
            diverged = distributed.any(diverged)
        if diverged:
            raise Diverged(f"loss became {loss.item()} at epoch {state['epoch'] + 1}, step {state['global_step'] + 1}")
        (scaler.scale(loss) if scaler else loss).backward()
        if config.fgm_epsilon > 0 and embedded is not None and embedded.grad is not None:
            fgm_step(base_model, ids, lens, targets, embedded, task_weights, class_weights, config, autocast, scaler)
        if scaler:
            scaler.unscale_(optimizer)
        if config.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, config.clip_grad_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(state["global_step"])
        correct = int((_predict(logits[0]) == targets[:, 0]).sum())
        return float(loss.detach()), correct

    try:
        while state["epoch"] < config.epochs:
            epoch = state["epoch"] + 1
            if dropout_range:
                start_p, end_p = dropout_range
                frac = (epoch - 1) / max(1, config.epochs - 1)
                base_model.set_dropout(start_p + (end_p - start_p) * frac)
            sampler.set_epoch(epoch)
            model.train()
            epoch_start = time.perf_counter()
            loss_sum = tokens = seen = correct = 0
            steps = len(sampler)
            batches = list(sampler)
            step = 0
            while batches:
                if distributed.any(stop.is_set()) if distributed else stop.is_set():
                    raise _Cancelled()
                index = batches.pop(0)
                ids, lens = collate([train_seqs[i] for i in index])
                targets = torch.as_tensor(train_y[index], dtype=torch.long)
                lr = set_lr()
                try:
                    loss, ok = train_step(ids, lens, targets)
                except RuntimeError as err:
                    if not _is_oom(err) or len(index) < 2 or distributed is not None:
                        raise
                    optimizer.zero_grad(set_to_none=True)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    # out of memory: halve this batch and every later one, and carry on
                    half = len(index) // 2
                    state["batch_size"] = batch_size = max(1, batch_size // 2)
                    # this epoch's later batches are split too: at their old size they would fail again
                    batches[:] = [index[:half], index[half:]] + [
                        b[i:i + batch_size] for b in batches for i in range(0, len(b), batch_size)]
                    steps = step + len(batches)
                    continue
                step += 1
                state["global_step"] += 1
                loss_sum += loss * len(index)
                seen += len(index)
                correct += ok
                tokens += int(lens.sum())
                elapsed = time.perf_counter() - epoch_start
                emit(AfterBatch(epoch, step, steps, state["global_step"], loss, lr,
                                tokens / elapsed if elapsed > 0 else 0.0, time.perf_counter() - started))
            if state["batch_size"] != sampler.batch_size:
                sampler = make_sampler(state["batch_size"])
            train_seconds = time.perf_counter() - epoch_start
            train_loss, train_acc = loss_sum / max(seen, 1), correct / max(seen, 1)
            if distributed:
                train_loss, train_acc, tokens = distributed.reduce_train(loss_sum, correct, seen, tokens)
            with ema.applied() if ema is not None else contextlib.nullcontext():  # judge the averaged weights
                valid = evaluate_tasks(base_model, valid_seqs, valid_y, label_sets, device, config.label_smoothing)
                score = _score(valid, config.select_metric)
                if distributed:  # rank 0's score drives every decision, so all ranks stop at the same epoch
                    score = distributed.broadcast(score)
                improved = score > state["best_score"]
                if improved:
                    state["best_score"], state["best_epoch"], state["bad_epochs"] = score, epoch, 0
                    best_state = {k: v.detach().cpu().clone() for k, v in base_model.state_dict().items()}
                    if save_best and rank_zero:
                        save_best(best_state)
                else:
                    state["bad_epochs"] += 1
            # ReduceLROnPlateau on the same validation score
            if score > state["plateau_best"]:
                state["plateau_best"], state["plateau_bad"] = score, 0
            else:
                state["plateau_bad"] += 1
                if state["plateau_bad"] > config.plateau_patience:
                    state["plateau_scale"] *= config.plateau_factor
                    state["plateau_bad"] = 0
            record = {"epoch": epoch, "train_loss": round(train_loss, 6), "train_accuracy": round(train_acc, 6),
                      "valid_loss": round(valid["loss"], 6), "valid_accuracy": round(valid["accuracy"], 6),
                      "valid_macro_f1": round(valid["macro_f1"], 6), "lr": lr, "seconds": round(train_seconds, 3),
                      "tokens_per_s": round(tokens / train_seconds, 1) if train_seconds > 0 else 0.0,
                      "batch_size": state["batch_size"]}
            if n_tasks > 1:
                for k, task in valid["tasks"].items():
                    record[f"valid_accuracy_task{k}"] = round(task["accuracy"], 6)
                    record[f"valid_macro_f1_task{k}"] = round(task["macro_f1"], 6)
            history.append(record)
            state["epoch"] = epoch
            state["history"] = history
            if checkpoint and rank_zero:
                checkpoint({"model": base_model.state_dict(), "optimizer": optimizer.state_dict(),
                            "progress": dict(state), "rng": torch.get_rng_state(), "best": best_state,
                            **({"scaler": scaler.state_dict()} if scaler else {}),
                            **({"ema": ema.state()} if ema is not None else {})})
            emit(AfterEpoch(epoch, record, improved))
            if state["bad_epochs"] >= config.patience:
                message = f"early stopping: no improvement for {config.patience} epochs"
                break
    except _Cancelled:
        status, message = "cancelled", f"stopped by the user at epoch {state['epoch'] + 1}"
    except Diverged as err:
        status, message = "diverged", str(err)
    if best_state is None and status == "completed":
        with ema.applied() if ema is not None else contextlib.nullcontext():
            best_state = {k: v.detach().cpu().clone() for k, v in base_model.state_dict().items()}
    emit(AfterFit(status, message, state["best_epoch"],
                  None if state["best_score"] == -math.inf else float(state["best_score"])))
    return FitResult(status, message, state["best_epoch"], best_state, history)


class _Cancelled(Exception):
    pass


class WeightAverage:
    """Exponential moving average of a model's floating-point weights (Polyak averaging).

    ``update`` follows every optimizer step; inside ``applied()`` the model holds the averaged
    weights (for validation and the checkpoint) and gets its live weights back on exit. The decay
    ramps up as ``min(decay, (1 + step) / (10 + step))`` so early averages are not dominated by the
    random initialisation.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        # state_dict tensors share storage with the parameters and buffers: copying into them changes the model
        self.live = [v for v in model.state_dict().values() if v.is_floating_point()]
        self.average = [v.detach().clone() for v in self.live]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.average, self.live, 1.0 - decay)

    @contextlib.contextmanager
    def applied(self):
        backup = [v.detach().clone() for v in self.live]
        with torch.no_grad():
            torch._foreach_copy_(self.live, self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.live, backup)

    def state(self) -> list[torch.Tensor]:
        return [v.detach().cpu().clone() for v in self.average]

    def load(self, tensors: list[torch.Tensor]) -> None:
        if len(tensors) != len(self.average):
            raise ValueError("the checkpoint's weight average does not match this model")
        with torch.no_grad():
            for target, source in zip(self.average, tensors):
                target.copy_(source)


def _predict(logits: torch.Tensor) -> torch.Tensor:
    return (logits.squeeze(-1) > 0).long() if logits.shape[-1] == 1 else logits.argmax(-1)


def fgm_step(model, ids, lens, targets, embedded, task_weights, class_weights, config, autocast, scaler) -> None:
    """Fast Gradient Method: a second forward/backward on the embedding output moved by
    ``epsilon * g / ||g||`` (per example), accumulating the adversarial gradients."""
    grad = embedded.grad.detach().clone()
    grad[..., model.config.embedding_dim:] = 0  # move the word vectors only, not the sentence marks or n-gram scores
    norm = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1)
    delta = config.fgm_epsilon * grad / norm
    with autocast:
        logits, _ = model.forward_embedded(model.embed(ids) + delta, lens)
        adv_loss = sum(w * task_loss(lg, targets[:, k], config.label_smoothing, class_weights[k])
                       for k, (w, lg) in enumerate(zip(task_weights, logits)))
    (scaler.scale(adv_loss) if scaler else adv_loss).backward()

