"""The n-gram part of a "wide and deep" model, fitted on its own (``--ngram-fit separate``).

The LSTM trains first, alone. Then the bag of words and hashed n-grams that the model reads
(``NgramScores``: each text's n-gram counts divided by sqrt(length)) is fitted as an
L2-regularised logistic regression, its features weighted by inverse document frequency, and
added to the LSTM's logits with the weight that scores best on the validation split. The inverse
document frequencies and the weight fold into the n-gram table, so the result is an ordinary
``--ngrams`` model: it predicts, explains and exports like one.

The two parts err on different texts (the LSTM reads word order and context, the linear model
every n-gram of the text), which is why their sum beats either: see BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from core.batching import collate
from core.models import head_size
from core.training import predict_logits

# regularisation strengths (inverse) and mixing weights tried; 0 leaves the LSTM alone
C_GRID = (2.0, 8.0, 32.0)
WEIGHT_GRID = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


@dataclass
class WideFit:
    """What the fit chose, per task, and the validation score before and after."""
    metric: str
    tasks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"metric": self.metric, "tasks": self.tasks}

    def describe(self) -> str:
        parts = []
        for t in self.tasks:
            parts.append(f"C={t['C']:g}, weight {t['weight']:g}, temperature {t['temperature']:g}: validation "
                         f"{self.metric} {t['valid_lstm']:.4f} (LSTM alone) -> {t['valid_fused']:.4f}, "
                         f"log loss {t['valid_loss_lstm']:.4f} -> {t['valid_loss_fused']:.4f}")
        return "n-gram part fitted: " + "; ".join(parts)


def ngram_matrix(model, sequences: Sequence[Sequence[int]], batch_size: int = 512) -> sp.csr_matrix:
    """(texts, table rows) features such that ``X @ table`` is what the model adds to its logits.

    Rows come from the model's own hashing (``NgramScores.rows``), so they can never disagree."""
    ngrams = model.ngrams
    n_rows = ngrams.table.num_embeddings
    pad = ngrams.table.padding_idx
    docs, cols, vals = [], [], []
    for start in range(0, len(sequences), batch_size):
        ids, lengths = collate([sequences[i] for i in range(start, min(start + batch_size, len(sequences)))])
        T = ids.shape[1]
        keep = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)) & (ids != pad)  # (B, T)
        scale = 1.0 / lengths.clamp(min=1).double().sqrt()  # (B,)
        doc = torch.arange(start, start + len(lengths)).unsqueeze(1).expand(-1, T)
        for rows in ngrams.rows(ids):
            docs.append(doc[keep].numpy())
            cols.append(rows[keep].numpy())
            vals.append(scale.unsqueeze(1).expand(-1, T)[keep].numpy())
    if not docs:
        return sp.csr_matrix((len(sequences), n_rows))
    X = sp.csr_matrix((np.concatenate(vals), (np.concatenate(docs), np.concatenate(cols))),
                      shape=(len(sequences), n_rows))
    X.sum_duplicates()
    return X


def idf_weights(X: sp.csr_matrix) -> np.ndarray:
    """Smoothed inverse document frequency per column (rows never seen get the largest value)."""
    df = np.bincount(X.indices, minlength=X.shape[1])  # X has no duplicates: one entry per text and row
    return np.log((1.0 + X.shape[0]) / (1.0 + df)) + 1.0


def _probs(logits: np.ndarray) -> np.ndarray:
    if logits.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _score(logits: np.ndarray, y: np.ndarray, metric: str) -> tuple[float, float]:
    """(selection score, log loss): higher is better for the first, the second breaks ties."""
    probs = _probs(logits)
    loss = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)).mean())
    if metric == "loss":
        return -loss, -loss
    predicted = probs.argmax(1)
    if metric == "macro_f1":
        from sklearn.metrics import f1_score
        return float(f1_score(y, predicted, average="macro", labels=np.arange(probs.shape[1]),
                              zero_division=0)), -loss
    return float((predicted == y).mean()), -loss


def fit_ngram_part(model, train_seqs: Sequence[Sequence[int]], train_y: np.ndarray,
                   valid_seqs: Sequence[Sequence[int]], valid_y: np.ndarray, label_sets: Sequence[Sequence[str]],
                   metric: str = "accuracy", device: torch.device | str = "cpu",
                   log: Callable[[str], None] = print, c_grid: Sequence[float] = C_GRID,
                   weight_grid: Sequence[float] = WEIGHT_GRID) -> WideFit:
    """Fit ``model.ngrams`` (in place) for every task. The LSTM's weights stay as they are; each
    head gains the regression's intercept and, with the n-gram table, is divided by the temperature.

    ``train_y``/``valid_y`` are (N, tasks) class indices. Choices are made on validation only."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    ngrams = model.ngrams
    if ngrams is None:
        raise ValueError("The model has no n-gram part: train it with --ngrams 1, 2 or 3.")
    model.to(device)
    ngrams.active = False  # the LSTM's own logits, before anything is added
    valid_lstm = predict_logits(model, valid_seqs, device=device)
    X_train, X_valid = ngram_matrix(model, train_seqs), ngram_matrix(model, valid_seqs)
    idf = idf_weights(X_train)
    X_train, X_valid = X_train @ sp.diags(idf), X_valid @ sp.diags(idf)
    log(f"n-gram part: {X_train.nnz / max(X_train.shape[0], 1):.0f} distinct n-grams per training text; "
        f"fitting a logistic regression for each of C={', '.join(f'{c:g}' for c in c_grid)}")

    table = np.zeros((ngrams.table.num_embeddings, ngrams.table.embedding_dim), dtype=np.float64)
    biases, temperatures = [], []
    report = WideFit(metric)
    start = 0
    for k, labels in enumerate(label_sets):
        width, y, yv = head_size(len(labels)), train_y[:, k], valid_y[:, k]
        deep = valid_lstm[k].astype(np.float64)
        before = _score(deep, yv, metric)
        best = (before, 0.0, c_grid[0], None, deep)  # weight 0: the LSTM alone
        for C in c_grid:
            if len(np.unique(y)) < 2:
                break  # nothing to fit: one class only
            lr = LogisticRegression(C=C, max_iter=1000, solver="liblinear" if width == 1 else "lbfgs")
            with warnings.catch_warnings():  # an unconverged fit is still a fit; validation judges it
                warnings.simplefilter("ignore", ConvergenceWarning)
                lr.fit(X_train, y)
            coef, intercept = _full_coef(lr, len(labels), width, X_train.shape[1])
            wide = np.asarray(X_valid @ coef.T) + intercept  # (N, width)
            for weight in weight_grid:
                if weight == 0:
                    continue
                fused = deep + weight * wide
                score = _score(fused, yv, metric)
                if score > best[0]:
                    best = (score, weight, C, (coef, intercept), fused)
        score, weight, C, fitted, fused = best
        # two models' evidence added up is overconfident: one temperature for the sum, fitted to the
        # validation log loss (it never changes which class wins)
        temperature = _temperature(fused, yv) if fitted is not None else 1.0
        if fitted is not None:
            coef, intercept = fitted
            table[:, start:start + width] = weight * (coef.T * idf[:, None]) / temperature
            biases.append(weight * intercept)
        else:
            biases.append(np.zeros(width))
        temperatures.append(temperature)
        sign = -1 if metric == "loss" else 1  # report losses as losses
        report.tasks.append({"task": k, "C": C, "weight": weight, "temperature": round(temperature, 4),
                             "valid_lstm": sign * before[0], "valid_fused": sign * score[0],
                             "valid_loss_lstm": -before[1],
                             "valid_loss_fused": -_score(fused / temperature, yv, "loss")[0]})
        start += width
    table[ngrams.table.padding_idx] = 0.0
    with torch.no_grad():
        ngrams.table.weight.copy_(torch.from_numpy(table).to(ngrams.table.weight))
        for head, bias, temperature in zip(model.heads, biases, temperatures):
            head.bias.add_(torch.from_numpy(np.asarray(bias, dtype=np.float64)).to(head.bias))
            head.weight.div_(temperature)
            head.bias.div_(temperature)
    ngrams.active = True
    log(report.describe())
    return report


def _temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The divisor of ``logits`` with the lowest log loss on (logits, y), from 0.5 to 4."""
    grid = np.geomspace(0.5, 4.0, 61)
    losses = [-_score(logits / t, y, "loss")[0] for t in grid]
    return float(grid[int(np.argmin(losses))])


def _full_coef(lr, n_classes: int, width: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """(width, features) weights and (width,) intercepts in class order, including classes the
    training labels of this task never use (their logits stay at the intercept's floor)."""
    coef = np.zeros((width, n_features))
    intercept = np.zeros(width)
    if width == 1:
        coef[0], intercept[0] = lr.coef_[0], lr.intercept_[0]
        return coef, intercept
    intercept[:] = lr.intercept_.min() - 10.0  # a class absent from training stays unlikely
    if len(lr.classes_) == 2:  # only two of the classes occur: one weight vector, for the second
        first, second = (int(c) for c in lr.classes_)
        intercept[first], coef[second], intercept[second] = 0.0, lr.coef_[0], lr.intercept_[0]
        return coef, intercept
    for row, cls in enumerate(lr.classes_):
        coef[int(cls)], intercept[int(cls)] = lr.coef_[row], lr.intercept_[row]
    return coef, intercept


def ngram_run_config(source: str | Path, saved: dict, ngrams: int = 3, buckets: int = 1_000_000):
    """The RunConfig of the run that adds an n-gram part to ``source`` (whose config.json is ``saved``).

    Raises RunError when ``source`` cannot have one (an ensemble, or n-grams already) and
    ValueError when ``ngrams``/``buckets`` are invalid; nothing is read but ``saved``."""
    from core.models import ModelConfig
    from core.pipeline import RunConfig
    from core.runs import RunError

    if "ensemble" in saved.get("model", {}):  # an EnsembleConfig: its members' configs under "ensemble"
        raise RunError(f"{source} is an ensemble: fit the n-grams of each member run, then combine those "
                       f"with `python -m core ensemble --runs ...`.")
    if saved["model"].get("ngrams"):
        raise RunError(f"{source} already has an n-gram part (--ngrams {saved['model']['ngrams']}); "
                       f"fit-ngrams adds one to a run trained without --ngrams.")
    cfg = RunConfig.from_dict(saved["run"])
    model_cfg = ModelConfig.from_dict({**saved["model"], "ngrams": ngrams, "ngram_buckets": buckets, "ngram_hash": 2})
    model_cfg.validate()
    cfg.model, cfg.train.ngram_fit = model_cfg, "separate"
    return cfg.validate()


def fit_ngrams_run(source: str | Path, ngrams: int = 3, buckets: int = 1_000_000, *,
                   runs_dir: str | Path = "artifacts/runs", run_id: str | None = None,
                   log: Callable[[str], None] = print, splits=None):
    """A new run: the finished run ``source``'s LSTM plus a fitted n-gram part.

    The same model as training with ``--ngrams N --ngram-fit separate`` from the start (that
    trains the LSTM alone too, with the same seed), without training the LSTM again. The run's
    training data is read from where it was trained (its config.json), split as it was split;
    or pass ``splits``, the ``core.pipeline.Splits`` the run was trained on (the app's in-memory data)."""
    import shutil
    import time

    from core.data import DataError
    from core.models import build_model
    from core.pipeline import RunResult, _save_weights, label_matrix, load_splits, load_state_dict
    from core.predict import Predictor
    from core.runs import DEFAULT_RUNS_DIR, RunError, atomic_write_json, new_run_id, safe_run_id, write_status
    from core.training import evaluate_tasks

    source = Path(source)
    predictor = Predictor.load(source)
    saved = predictor.metadata["config"]
    cfg = ngram_run_config(source, saved, ngrams, buckets)
    model_cfg = cfg.model

    started = time.perf_counter()
    if splits is None:
        try:
            splits = load_splits(cfg.data, cfg.data.seed_for_split(cfg.train.seed), log)
        except DataError as err:
            raise DataError(f"{err} fit-ngrams reads the training data of {source} from where it was trained "
                            f"(data.train in its config.json); run it from the same folder, with the files "
                            f"there.") from None
    if splits.train.label_columns != predictor.label_columns:
        raise RunError(f"The training data's label columns {splits.train.label_columns} are not the run's "
                       f"{predictor.label_columns}: the file changed since the run was trained.")
    model = build_model(model_cfg)
    missing, unexpected = model.load_state_dict(load_state_dict(source / "model.safetensors"), strict=False)
    if unexpected or missing != ["ngrams.table.weight"]:
        raise RunError(f"The weights of {source} do not match its configuration ({missing or unexpected}).")

    def encode(table):
        y, keep = label_matrix(table, predictor.labels)
        index = np.flatnonzero(keep)
        return predictor.encoder.encode_many([table.texts[i] for i in index]), y[index]

    (train_seqs, train_y), (valid_seqs, valid_y), (test_seqs, test_y) = (
        encode(splits.train), encode(splits.valid), encode(splits.test))
    report = fit_ngram_part(model, train_seqs, train_y, valid_seqs, valid_y, predictor.labels,
                            cfg.train.select_metric, "cpu", log)
    valid_metrics = evaluate_tasks(model, valid_seqs, valid_y, predictor.labels, "cpu")
    test_metrics = evaluate_tasks(model, test_seqs, test_y, predictor.labels, "cpu") if len(test_seqs) else None
    strip = lambda m: {k: v for k, v in m.items() if k != "probs"}  # noqa: E731
    old_metrics = predictor.metadata.get("metrics", {})
    metrics = {**old_metrics, "valid": strip(valid_metrics), "test": strip(test_metrics) if test_metrics else None,
               "ngram_fit": report.to_dict(), "fitted_from": str(source),
               "fit_seconds": round(time.perf_counter() - started, 2)}

    run_dir = Path(runs_dir or DEFAULT_RUNS_DIR) / (safe_run_id(run_id) if run_id else new_run_id())
    if (run_dir / "config.json").exists():
        raise RunError(f"Run {run_dir} already exists: choose another --run-id.")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_status(run_dir, "running", "fitting the n-gram part", created=time.time())
    for name in ("vocab.json", "labels.json", "history.jsonl", "test.csv"):
        if (source / name).is_file():
            shutil.copyfile(source / name, run_dir / name)
    atomic_write_json(run_dir / "config.json", {**saved, "run": cfg.to_dict(), "model": model_cfg.to_dict(),
                                                "fitted_from": str(source)})
    _save_weights(run_dir / "model.safetensors", model.state_dict())
    atomic_write_json(run_dir / "metrics.json", metrics)
    write_status(run_dir, "completed", "", created=time.time(), best_epoch=old_metrics.get("best_epoch"))
    summary = (test_metrics or valid_metrics)["primary"]
    log(f"{'test' if test_metrics else 'valid'}: accuracy={summary['accuracy']:.4f} "
        f"macro_f1={summary['macro_f1']:.4f}")
    return RunResult(run_dir, "completed", "", metrics, [])
