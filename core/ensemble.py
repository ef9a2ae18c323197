"""Ensembles: several finished runs combined into one run that averages their probabilities.

Members trained with different seeds make different mistakes, so their averaged probabilities
classify better than any one of them (see BENCHMARKS.md). The result is an ordinary run folder:
prediction, evaluation, explanations, the app and every export read it like a single model.

Members must tokenise alike (tokenizer, lowercasing, max_length, truncation) and share their
labels; their vocabularies may differ. The ensemble's vocabulary is the union of theirs, and each
member's embedding table is re-indexed to it, so a token a member never saw still reads as that
member's ``<unk>``: every member sees exactly the ids it would have seen on its own.

    python -m core ensemble --runs artifacts/runs/a artifacts/runs/b artifacts/runs/c
    python -m core train --train reviews.csv --ensemble 3      # trains 3 seeds, then combines them
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch

from core.models import EnsembleClassifier, EnsembleConfig, ModelConfig
from core.runs import DEFAULT_RUNS_DIR, RunError, atomic_write_json, new_run_id, safe_run_id, write_status
from core.text import UNK_ID, TextConfig, Vocabulary

# tokenizer settings that change which tokens a member reads; the vocabulary limits do not
SAME_TOKENS = ("tokenizer", "lowercase", "max_length", "truncate", "truncation", "sentence_breaks")


def union_vocabulary(vocabularies: Sequence[Vocabulary]) -> Vocabulary:
    """The first vocabulary's tokens in its order, then every other token in order of first sight."""
    itos = list(vocabularies[0].itos)
    seen = set(itos)
    for vocab in vocabularies[1:]:
        for token in vocab.itos:
            if token not in seen:
                seen.add(token)
                itos.append(token)
    return Vocabulary(itos)


def reindex_embedding(weight: torch.Tensor, vocab: Vocabulary, union: Vocabulary) -> torch.Tensor:
    """(len(vocab), E) -> (len(union), E): each union token takes the member's row for it, or the
    member's ``<unk>`` row when the member does not know it."""
    index = torch.tensor([vocab.stoi.get(token, UNK_ID) for token in union.itos], dtype=torch.long)
    return weight.detach()[index].clone()


def _check_compatible(predictors: Sequence, run_dirs: Sequence[Path]) -> None:
    first, first_dir = predictors[0], run_dirs[0]
    for predictor, run_dir in zip(predictors[1:], run_dirs[1:]):
        a, b = asdict(first.encoder.config), asdict(predictor.encoder.config)
        differ = [name for name in SAME_TOKENS if a.get(name) != b.get(name)]
        if differ:
            detail = ", ".join(f"{n}={a.get(n)!r} vs {b.get(n)!r}" for n in differ)
            raise RunError(f"{run_dir} reads text differently from {first_dir} ({detail}): ensemble members "
                           f"must share these tokenizer settings. Train them with the same text options.")
        if list(predictor.label_columns) != list(first.label_columns) or \
                [list(s) for s in predictor.labels] != [list(s) for s in first.labels]:
            raise RunError(f"{run_dir} predicts {predictor.labels} for {predictor.label_columns}, but {first_dir} "
                           f"predicts {first.labels} for {first.label_columns}: members must share their labels.")
        if isinstance(predictor.model, EnsembleClassifier):
            raise RunError(f"{run_dir} is already an ensemble: combine its members instead.")
    if isinstance(first.model, EnsembleClassifier):
        raise RunError(f"{first_dir} is already an ensemble: combine its members instead.")


def build_ensemble(predictors: Sequence) -> tuple[EnsembleClassifier, Vocabulary]:
    """One ``EnsembleClassifier`` over the union vocabulary from loaded ``Predictor`` s."""
    union = union_vocabulary([p.encoder.vocab for p in predictors])
    configs, states = [], []
    for predictor in predictors:
        member: ModelConfig = predictor.model.config
        if member.ngrams and list(predictor.encoder.vocab.itos) != list(union.itos):
            raise RunError("An n-gram model (--ngrams) hashes the token ids of its own vocabulary, so it can only "
                           "join an ensemble whose members share that vocabulary. Train the members together "
                           "(train --ensemble N) or on the same data and vocabulary settings.")
        configs.append(ModelConfig(**{**asdict(member), "vocab_size": len(union)}))
        state = {k: v.detach().clone() for k, v in predictor.model.state_dict().items()}
        state["embedding.weight"] = reindex_embedding(state["embedding.weight"], predictor.encoder.vocab, union)
        states.append(state)
    model = EnsembleClassifier(EnsembleConfig(configs))
    model.load_state_dict({f"members.{i}.{k}": v for i, state in enumerate(states) for k, v in state.items()})
    return model.eval(), union


def _file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _read_labelled(path: Path, text_col: str, label_columns: Sequence[str]):
    from core.data import load_table
    return load_table(str(path), text_col, ",".join(label_columns), held_out=True)[0]


def _evaluate(predictor, table) -> dict | None:
    if table is None or not len(table):
        return None
    result = predictor.evaluate(table)
    return {k: v for k, v in result.items() if k not in ("probs", "index")}


def _held_out_tables(run_dirs: Sequence[Path], configs: Sequence[dict], test, text_col: str, label_columns,
                     log: Callable[[str], None]):
    """(valid, test) tables the members share: ``test`` or their common test.csv; their common
    validation file. None where there is no such shared data."""
    if test:
        if not Path(test).is_file():
            raise RunError(f"--test {test}: file not found.")
        test_table = _read_labelled(Path(test), text_col, label_columns)
    elif len(digests := {_file_digest(d / "test.csv") for d in run_dirs}) == 1 and None not in digests:
        test_table = _read_labelled(run_dirs[0] / "test.csv", text_col, label_columns)
    else:
        test_table = None
        log("note: the members hold different test splits (or none); pass --test PATH to evaluate the ensemble")
    valid_paths = {((c.get("run") or {}).get("data") or {}).get("valid") or "" for c in configs}
    valid_path = Path(valid_paths.pop()) if len(valid_paths) == 1 else None
    valid_table = _read_labelled(valid_path, text_col, label_columns) \
        if valid_path and valid_path.name and valid_path.is_file() else None
    return valid_table, test_table


def combine_runs(run_dirs: Sequence[str | Path], *, runs_dir: str | Path = DEFAULT_RUNS_DIR,
                 run_id: str | None = None, test: str | Path | None = None, run_config: dict | None = None,
                 splits=None, log: Callable[[str], None] = print):
    """Combine finished runs into a new run ``runs_dir/run_id`` and evaluate it.

    The test data is ``test`` when given, else the members' ``test.csv`` when they all hold the same
    one; the validation file is evaluated too when every member names the same one. ``splits``
    (a ``core.pipeline.Splits`` the members trained on) gives both instead. ``run_config`` is
    recorded as the ensemble's settings (default: the first member's). Returns a
    ``core.pipeline.RunResult``."""
    from core.pipeline import RunResult, _save_weights, atomic_write_text_csv
    from core.predict import Predictor

    run_dirs = [Path(d) for d in run_dirs]
    if len(run_dirs) < 2:
        raise RunError(f"An ensemble needs at least 2 runs; got {len(run_dirs)}. Pass several --runs.")
    if len({d.resolve() for d in run_dirs}) != len(run_dirs):
        raise RunError("The same run is listed twice: an ensemble of copies is no better than one model.")
    predictors = [Predictor.load(d) for d in run_dirs]
    _check_compatible(predictors, run_dirs)
    first = predictors[0]
    configs = [p.metadata.get("config") or {} for p in predictors]
    text_col = configs[0].get("text_col", "text")
    if splits is not None:
        valid_table, test_table = splits.valid, splits.test if len(splits.test) else None
    else:
        valid_table, test_table = _held_out_tables(run_dirs, configs, test, text_col, first.label_columns, log)
    run_id = safe_run_id(run_id) if run_id else new_run_id("ensemble")
    run_dir = Path(runs_dir) / run_id
    if (run_dir / "config.json").exists():
        raise RunError(f"Run {run_dir} already exists: choose another --run-id.")

    model, union = build_ensemble(predictors)
    text_cfg = TextConfig(**asdict(first.encoder.config))
    text_cfg.max_vocab_size = max(text_cfg.max_vocab_size, len(union) - 2)
    members = [{"run_dir": str(d), "seed": ((c.get("run") or {}).get("train") or {}).get("seed"),
                "test_accuracy": (((p.metadata.get("metrics") or {}).get("test") or {}).get("primary") or {})
                .get("accuracy")} for d, c, p in zip(run_dirs, configs, predictors)]
    run_dir.mkdir(parents=True, exist_ok=True)
    created = time.time()
    write_status(run_dir, "running", "combining", created=created)
    try:
        atomic_write_json(run_dir / "config.json", {
            "run": run_config or configs[0].get("run", {}), "model": model.config.to_dict(),
            "label_columns": list(first.label_columns), "text_col": text_col, "embedding_coverage": None,
            "ensemble_members": members})
        atomic_write_json(run_dir / "vocab.json", {"tokenizer": asdict(text_cfg), **union.to_json()})
        atomic_write_json(run_dir / "labels.json", {"columns": list(first.label_columns),
                                                    "labels": [list(s) for s in first.labels]})
        (run_dir / "history.jsonl").write_text("", encoding="utf-8")
        _save_weights(run_dir / "model.safetensors", model.state_dict())
        log(f"ensemble of {len(predictors)} runs; vocabulary {len(union)} tokens "
            f"(largest member {max(len(p.encoder.vocab) for p in predictors)})")
        if test_table is not None:  # the app shows and explains test examples
            atomic_write_text_csv(run_dir / "test.csv", test_table, text_col)

        ensemble = Predictor.load(run_dir)
        valid_metrics, test_metrics = _evaluate(ensemble, valid_table), _evaluate(ensemble, test_table)
        for member, predictor, config in zip(members, predictors, configs):
            # a member's own figure stands when it was measured on this same test data
            own_test = ((config.get("run") or {}).get("data") or {}).get("test") or ""
            same = splits is not None or (not test and member["test_accuracy"] is not None) or bool(
                test and own_test and Path(own_test).resolve() == Path(test).resolve())
            if test_table is not None and not same:
                member["test_accuracy"] = (_evaluate(predictor, test_table) or {}).get("primary", {}).get("accuracy")
        metrics = {"best_epoch": None, "select_metric": None, "valid": valid_metrics, "test": test_metrics,
                   "epochs_run": 0, "train_seconds": 0.0, "ensemble": {"members": members}}
        atomic_write_json(run_dir / "metrics.json", metrics)
    except Exception as err:  # the folder must not look like a finished run
        (run_dir / "model.safetensors").unlink(missing_ok=True)
        write_status(run_dir, "failed", f"{type(err).__name__}: {err}", created=created)
        raise
    write_status(run_dir, "completed", "", created=created, ensemble_size=len(predictors))
    summary = test_metrics or valid_metrics
    if summary:
        member_acc = ", ".join("n/a" if m["test_accuracy"] is None else f"{m['test_accuracy']:.4f}" for m in members)
        log(f"{'test' if test_metrics else 'valid'}: accuracy={summary['primary']['accuracy']:.4f} "
            f"macro_f1={summary['primary']['macro_f1']:.4f} (members' test accuracy: {member_acc})")
    return RunResult(run_dir, "completed", "", metrics, [])


def train_ensemble(cfg, *, splits=None, runs_dir: str | Path = DEFAULT_RUNS_DIR, run_id: str | None = None,
                   callbacks: Sequence = (), stop=None, log: Callable[[str], None] = print):
    """Train ``cfg.train.ensemble`` runs of ``cfg`` (seeds seed, seed+1, ...) on one split, then combine them.

    The members are ordinary runs named ``<run_id>-m1``, ``-m2``, ...; the ensemble is ``<run_id>``. A
    member that does not complete is left out; with fewer than two the result is that member's
    status (cancelled, diverged) and no ensemble is made. Returns a ``core.pipeline.RunResult``."""
    import copy

    from core.pipeline import RunResult, load_splits, train_run

    cfg.train.validate()
    size = cfg.train.ensemble
    if not isinstance(size, int) or isinstance(size, bool) or size < 2:
        raise ValueError(f"The 'ensemble' parameter must be an int >= 2 to train an ensemble. Got {size!r} instead.")
    run_id = safe_run_id(run_id) if run_id else new_run_id("ensemble")
    if (Path(runs_dir) / run_id / "config.json").exists():
        raise RunError(f"Run {Path(runs_dir) / run_id} already exists: choose another --run-id.")
    split_seed = cfg.data.seed_for_split(cfg.train.seed)
    if splits is None:  # read and split once: every member trains, selects and tests on the same rows
        splits = load_splits(cfg.data, split_seed, log)
    members, history, last = [], [], None
    for i in range(size):
        member = copy.deepcopy(cfg)
        member.train.seed = cfg.train.seed + i
        member.train.ensemble = 1
        member.data.split_seed = split_seed
        log(f"ensemble member {i + 1} of {size} (seed {member.train.seed})")
        last = train_run(member, splits=splits, runs_dir=runs_dir, run_id=f"{run_id}-m{i + 1}", log=log,
                         stop=stop, callbacks=callbacks)
        history += last.history
        if last.status == "completed":
            members.append(last.run_dir)
        else:
            log(f"note: member {i + 1} ended {last.status}; it is left out of the ensemble")
        if stop is not None and stop.is_set():
            break
    if len(members) < 2:
        message = (f"{len(members)} of {size} ensemble members completed; an ensemble needs 2 "
                   f"(the member runs are kept)")
        status = last.status if last is not None and last.status != "completed" else "cancelled"
        log(f"status: {status} ({message})")
        return RunResult(Path(runs_dir) / run_id, status, message, {}, history)
    result = combine_runs(members, runs_dir=runs_dir, run_id=run_id, run_config=cfg.to_dict(), splits=splits,
                          log=log)
    result.history = history
    return result
