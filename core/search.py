"""Hyperparameter search: a grid or random sample of configurations, each trained as a normal run.

    python -m core search --train data.csv --grid "lr=0.001,0.003 hidden_dim=64,128"
    python -m core search --train data.csv --random 6 --space "lr=1e-4:1e-2:log dropout=0.2:0.5 pooling=max,attention"

Parameter names are config field names (``lr``, ``hidden_dim``), optionally with their section
(``train.lr``) or as flags (``hidden-dim``). Every trial is a run in the runs folder; the search
folder (``artifacts/searches/<search_id>/``) holds ``search.json`` (the spec, the base config, the
best trial) and ``results.csv`` / ``results.json`` (one row per trial, the best marked). The best
trial is the one with the best validation ``select_metric``.

``SearchJob`` runs a search in a background thread with a stop event and a lock-protected frozen
snapshot, like ``core.jobs.TrainingJob``; ``SearchRegistry`` keeps each owner's searches apart.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import math
import random
import threading
import time
import traceback
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Sequence

from core.jobs import BackgroundJob
from core.runs import DEFAULT_RUNS_DIR, atomic_write_json, atomic_write_text, new_run_id, safe_run_id

DEFAULT_SEARCH_DIR = Path("artifacts") / "searches"
SECTIONS = ("model", "train", "text")  # where searchable parameters live (plus pretrained_vectors)
NOT_SEARCHABLE = {"vocab_size", "num_classes", "padding_idx", "device", "truncate", "sentence_breaks"}
MAX_TRIALS = 200


# ---- the search space ---------------------------------------------------------------------------

def _field_index() -> dict[str, tuple[str | None, str, object]]:
    """name -> (section, field, default) for every searchable field."""
    from core.pipeline import RunConfig

    defaults = RunConfig()
    index: dict[str, tuple[str | None, str, object]] = {"pretrained_vectors": (None, "pretrained_vectors", "")}
    for section in SECTIONS:
        for f in fields(getattr(defaults, section)):
            if f.name not in NOT_SEARCHABLE:
                index[f"{section}.{f.name}"] = (section, f.name, getattr(getattr(defaults, section), f.name))
    return index


def resolve_name(name: str) -> tuple[str | None, str, object]:
    """``lr``, ``train.lr`` or ``--lr``/``hidden-dim`` -> (section, field, default)."""
    index = _field_index()
    key = name.strip().lstrip("-").replace("-", "_")
    if key in index:
        return index[key]
    matches = [v for k, v in index.items() if k.split(".")[-1] == key]
    if len(matches) == 1:
        return matches[0]
    choices = sorted({k.split(".")[-1] for k in index})
    raise ValueError(f"Unknown search parameter {name!r}. Searchable parameters: {', '.join(choices)}.")


def _convert(name: str, raw: str, default: object):
    raw = raw.strip()
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        kind = "true/false" if isinstance(default, bool) else type(default).__name__
        raise ValueError(f"Search parameter {name!r}: {raw!r} is not a valid {kind}.") from None
    return raw


@dataclass(frozen=True)
class Dimension:
    name: str  # as the user wrote it
    key: str  # "section.field" or "pretrained_vectors"
    values: tuple = ()  # discrete choices
    low: float | None = None  # continuous range (random search only)
    high: float | None = None
    log: bool = False

    def sample(self, rng: random.Random):
        if self.values:
            return rng.choice(self.values)
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        section, name, default = resolve_name(self.key)
        return int(round(value)) if isinstance(default, int) and not isinstance(default, bool) else float(f"{value:.4g}")


def parse_space(spec: str, *, allow_ranges: bool = False) -> list[Dimension]:
    """``"lr=0.001,0.003 hidden_dim=64,128"``; with ``allow_ranges`` also ``lr=1e-4:1e-2:log``."""
    dims: list[Dimension] = []
    for part in (spec or "").split():
        name, sep, raw = part.partition("=")
        if not sep or not name or not raw:
            raise ValueError(f"Search parameter {part!r} must look like name=value1,value2"
                             + (" or name=low:high[:log]" if allow_ranges else "") + ".")
        section, fname, default = resolve_name(name)
        key = fname if section is None else f"{section}.{fname}"
        if any(d.key == key for d in dims):
            raise ValueError(f"Search parameter {name!r} is given twice.")
        if ":" in raw and not isinstance(default, str):  # a range; string values may hold ":" themselves
            if not allow_ranges:
                raise ValueError(f"Search parameter {part!r}: ranges (low:high) need --random; a grid lists "
                                 f"values, e.g. {name}=0.1,0.3.")
            bits = raw.split(":")
            if len(bits) not in (2, 3) or (len(bits) == 3 and bits[2] != "log") or isinstance(default, bool):
                raise ValueError(f"Search parameter {part!r}: a range looks like {name}=low:high or "
                                 f"{name}=low:high:log.")
            low, high = (_convert(name, b, float(default)) for b in bits[:2])
            if not low < high or (len(bits) == 3 and low <= 0):
                raise ValueError(f"Search parameter {part!r}: need low < high" +
                                 (" and low > 0 for :log." if len(bits) == 3 else "."))
            dims.append(Dimension(name, key, (), low, high, len(bits) == 3))
            continue
        values = tuple(_convert(name, v, default) for v in raw.split(",") if v.strip())
        if not values:
            raise ValueError(f"Search parameter {part!r} lists no values.")
        dims.append(Dimension(name, key, values))
    if not dims:
        raise ValueError("The search space is empty: give parameters like \"lr=0.001,0.003 hidden_dim=64,128\".")
    return dims


def grid_trials(dims: Sequence[Dimension]) -> list[dict]:
    """Every combination, in the order written (the last parameter varies fastest)."""
    combos = [dict(zip((d.key for d in dims), values)) for values in itertools.product(*(d.values for d in dims))]
    if len(combos) > MAX_TRIALS:
        raise ValueError(f"The grid has {len(combos)} combinations; the limit is {MAX_TRIALS}. "
                         f"Use fewer values or --random N.")
    return combos


def random_trials(dims: Sequence[Dimension], n: int, seed: int = 0) -> list[dict]:
    """``n`` distinct samples where the space allows it (a small discrete space gives fewer)."""
    if not isinstance(n, int) or n < 1 or n > MAX_TRIALS:
        raise ValueError(f"The number of random trials must be an int in 1..{MAX_TRIALS}. Got {n!r} instead.")
    rng = random.Random(seed)
    trials: list[dict] = []
    for _ in range(n * 20):
        trial = {d.key: d.sample(rng) for d in dims}
        if trial not in trials:
            trials.append(trial)
        if len(trials) == n:
            break
    return trials


def apply_params(base, params: dict):
    """A copy of the RunConfig ``base`` with ``params`` ("section.field" -> value) set; validated."""
    cfg = copy.deepcopy(base)
    for key, value in params.items():
        if "." in key:
            section, name = key.split(".", 1)
            setattr(getattr(cfg, section), name, value)
        else:
            setattr(cfg, key, value)
    return cfg.validate()


# ---- running a search ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TrialResult:
    index: int  # 1-based
    params: dict
    run_id: str
    run_dir: str
    status: str  # queued | running | completed | cancelled | failed | diverged | skipped
    score: float | None = None  # validation select_metric (higher is better; loss is negated)
    valid_accuracy: float | None = None
    valid_macro_f1: float | None = None
    valid_loss: float | None = None
    test_accuracy: float | None = None
    best_epoch: int = 0
    seconds: float = 0.0
    message: str = ""
    best: bool = False

    def row(self) -> dict:
        out = {"trial": self.index, "run_id": self.run_id, "status": self.status, "best": self.best}
        out.update({k: v for k, v in self.params.items()})
        out.update({"score": self.score, "valid_accuracy": self.valid_accuracy, "valid_macro_f1": self.valid_macro_f1,
                    "valid_loss": self.valid_loss, "test_accuracy": self.test_accuracy,
                    "best_epoch": self.best_epoch, "seconds": self.seconds, "run_dir": self.run_dir,
                    "message": self.message})
        return out


def _trial_from_run(trial: TrialResult, result, select_metric: str, seconds: float) -> TrialResult:
    metrics = result.metrics or {}
    valid = metrics.get("valid") or {}
    test = (metrics.get("test") or {}).get("primary") or {}
    score = None
    if result.status == "completed" and valid:
        score = -valid["loss"] if select_metric == "loss" else valid[select_metric]
    return replace(trial, status=result.status, message=result.message, score=score,
                   valid_accuracy=valid.get("accuracy"), valid_macro_f1=valid.get("macro_f1"),
                   valid_loss=valid.get("loss"), test_accuracy=test.get("accuracy"),
                   best_epoch=metrics.get("best_epoch", 0), seconds=round(seconds, 2))


def mark_best(trials: Sequence[TrialResult]) -> list[TrialResult]:
    scored = [t for t in trials if t.score is not None]
    best = max(scored, key=lambda t: t.score, default=None)
    return [replace(t, best=best is not None and t.index == best.index) for t in trials]


def write_results(search_dir: Path, trials: Sequence[TrialResult], summary: dict) -> None:
    rows = [t.row() for t in trials]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(search_dir / "results.csv", buffer.getvalue())
    atomic_write_json(search_dir / "results.json", rows)
    atomic_write_json(search_dir / "search.json", summary)


def run_search(base, trials: Sequence[dict], *, search_id: str | None = None,
               search_dir: str | Path = DEFAULT_SEARCH_DIR, runs_dir: str | Path = DEFAULT_RUNS_DIR,
               splits=None, stop: threading.Event | None = None, log: Callable[[str], None] = print,
               on_update: Callable[[list[TrialResult]], None] | None = None, spec: str = "",
               train_callbacks: Sequence[Callable] = ()) -> tuple[Path, list[TrialResult]]:
    """Train each trial (a dict of parameters applied to ``base``) as a run, one after another.

    All trials share one data split (``splits``, loaded once from ``base.data`` when None). The
    stop event cancels the running trial within one batch and skips the rest. Returns the
    search folder and the trial results (the best one has ``best=True``).
    """
    from core.pipeline import load_splits, train_run

    stop = stop or threading.Event()
    search_id = safe_run_id(search_id) if search_id else new_run_id("search")
    folder = Path(search_dir) / search_id
    configs = [apply_params(base, params) for params in trials]  # every trial is validated up front
    if splits is None:
        splits = load_splits(base.data, base.data.seed_for_split(base.train.seed), log)
    results = [TrialResult(i, dict(params), f"{search_id}-t{i:02d}", str(Path(runs_dir) / f"{search_id}-t{i:02d}"),
                           "queued") for i, params in enumerate(trials, 1)]
    started = time.time()

    def summary(status: str) -> dict:
        best = next((t for t in results if t.best), None)
        return {"search_id": search_id, "status": status, "spec": spec, "select_metric": base.train.select_metric,
                "runs_dir": str(runs_dir), "started": started, "n_trials": len(results),
                "base_config": base.to_dict(),
                "best": None if best is None else {"trial": best.index, "run_id": best.run_id,
                                                   "run_dir": best.run_dir, "params": best.params,
                                                   "score": best.score}}

    def publish(status: str) -> None:
        write_results(folder, results, summary(status))
        if on_update:
            on_update(list(results))

    folder.mkdir(parents=True, exist_ok=True)
    publish("running")
    for i, (cfg, trial) in enumerate(zip(configs, list(results))):
        if stop.is_set():
            results[i] = replace(trial, status="skipped", message="search stopped")
            continue
        shown = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in trial.params.items())
        log(f"trial {trial.index}/{len(results)}: {shown}")
        results[i] = replace(trial, status="running")
        publish("running")
        t0 = time.perf_counter()
        try:
            run = train_run(cfg, splits=splits, runs_dir=runs_dir, run_id=trial.run_id, stop=stop,
                            log=lambda line: log(f"  {line}"), callbacks=train_callbacks)
            results[i] = _trial_from_run(trial, run, base.train.select_metric, time.perf_counter() - t0)
        except Exception as err:  # one broken trial does not end the search
            results[i] = replace(trial, status="failed", message=f"{type(err).__name__}: {err}",
                                 seconds=round(time.perf_counter() - t0, 2))
            log(f"  trial {trial.index} failed: {type(err).__name__}: {err}")
        results[:] = mark_best(results)
        publish("running")
    status = "cancelled" if stop.is_set() else "completed"
    publish(status)
    best = next((t for t in results if t.best), None)
    log(f"search {status}: {sum(t.status == 'completed' for t in results)}/{len(results)} trials completed"
        + (f"; best trial {best.index} ({best.run_id}) {base.train.select_metric}="
           f"{abs(best.score):.4f}" if best else ""))
    return folder, results


def format_table(trials: Sequence[TrialResult], select_metric: str = "accuracy") -> str:
    keys = list(dict.fromkeys(k for t in trials for k in t.params))
    header = ["trial"] + [k.split(".")[-1] for k in keys] + [f"valid_{select_metric}", "test_accuracy", "status", ""]
    lines = [header]
    for t in trials:
        score = "" if t.score is None else f"{abs(t.score):.4f}"
        test = "" if t.test_accuracy is None else f"{t.test_accuracy:.4f}"
        lines.append([str(t.index)] + [str(t.params.get(k, "")) for k in keys] + [score, test, t.status,
                                                                                  "best" if t.best else ""])
    widths = [max(len(row[c]) for row in lines) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in lines)


# ---- background search (for the app) ------------------------------------------------------------

@dataclass(frozen=True)
class SearchSnapshot:
    search_id: str
    owner: str
    status: str  # queued | running | completed | cancelled | failed
    search_dir: str
    trials: tuple[TrialResult, ...] = ()
    current: int = 0  # 1-based index of the running trial, 0 when none
    epoch: int = 0  # progress of the running trial
    epochs: int = 0
    message: str = ""
    log: tuple[str, ...] = ()
    started: float = 0.0
    finished: float | None = None

    @property
    def done(self) -> bool:
        return self.status in ("completed", "cancelled", "failed")

    @property
    def best(self) -> TrialResult | None:
        return next((t for t in self.trials if t.best), None)

    @property
    def progress(self) -> float:
        finished = sum(t.status not in ("queued", "running") for t in self.trials)
        running = self.epoch / self.epochs if self.current and self.epochs else 0.0
        return 1.0 if self.status == "completed" else (finished + running) / max(len(self.trials), 1)


class SearchJob(BackgroundJob):
    """A search in a daemon thread; ``stop()`` cancels the running trial within one batch."""

    MAX_LOG_LINES = 300

    def __init__(self, base, trials: Sequence[dict], owner: str, *, runs_dir: str | Path = DEFAULT_RUNS_DIR,
                 search_dir: str | Path = DEFAULT_SEARCH_DIR, splits=None, search_id: str | None = None,
                 spec: str = ""):
        self.base = base
        for params in trials:  # an invalid trial fails here, in the caller's thread, not later
            apply_params(base, params)
        self.trials = [dict(t) for t in trials]
        if not self.trials:
            raise ValueError("A search needs at least one trial.")
        self.owner = owner
        self.search_id = safe_run_id(search_id) if search_id else new_run_id("search")
        self.runs_dir, self.search_dir = Path(runs_dir), Path(search_dir)
        self._splits, self._spec = splits, spec
        queued = tuple(TrialResult(i, dict(t), f"{self.search_id}-t{i:02d}",
                                   str(self.runs_dir / f"{self.search_id}-t{i:02d}"), "queued")
                       for i, t in enumerate(self.trials, 1))
        self._init_worker(SearchSnapshot(self.search_id, owner, "queued", str(self.search_dir / self.search_id),
                                         queued, started=time.time()), name=f"search-{self.search_id}")

    def _on_trials(self, trials: list[TrialResult]) -> None:
        current = next((t.index for t in trials if t.status == "running"), 0)
        self._update(trials=tuple(trials), current=current, **({} if current else {"epoch": 0}))

    def _on_event(self, event) -> None:
        from core.training import AfterEpoch, BeforeFit
        if isinstance(event, BeforeFit):
            self._update(epoch=event.start_epoch, epochs=event.epochs)
        elif isinstance(event, AfterEpoch):
            self._update(epoch=event.epoch)

    def _run(self) -> None:
        self._update(status="running")
        try:
            _, trials = run_search(self.base, self.trials, search_id=self.search_id, search_dir=self.search_dir,
                                   runs_dir=self.runs_dir, splits=self._splits, stop=self._stop, log=self._log,
                                   on_update=self._on_trials, spec=self._spec, train_callbacks=[self._on_event])
            status = "cancelled" if self._stop.is_set() else "completed"
            self._update(status=status, trials=tuple(trials), current=0, finished=time.time())
        except Exception as err:  # reported in the snapshot; the app keeps running
            self._log(traceback.format_exc(limit=3))
            self._update(status="failed", message=f"{type(err).__name__}: {err}", current=0, finished=time.time())


class SearchRegistry:
    """All searches of this process, by owner; owners only ever see their own."""

    def __init__(self):
        self._lock = threading.Lock()
        self._searches: dict[str, SearchJob] = {}

    def submit(self, base, trials: Sequence[dict], owner: str, **kwargs) -> SearchJob:
        job = SearchJob(base, trials, owner, **kwargs)
        with self._lock:
            self._searches[job.search_id] = job
        return job.start()

    def get(self, search_id: str, owner: str) -> SearchJob | None:
        with self._lock:
            job = self._searches.get(search_id)
        return job if job is not None and job.owner == owner else None

    def searches(self, owner: str) -> list[SearchJob]:
        with self._lock:
            return [j for j in self._searches.values() if j.owner == owner]


# ---- command line -------------------------------------------------------------------------------

def add_search_parser(sub) -> None:
    import argparse

    from core.cli import add_train_flags

    search = sub.add_parser("search", help="grid or random hyperparameter search; every trial is a run",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            description="Train one run per configuration and rank them by the validation "
                                        "select_metric. Parameter names are config fields (lr, hidden_dim, "
                                        "dropout, pooling, ...). Flags below set the base configuration.")
    how = search.add_mutually_exclusive_group(required=True)
    how.add_argument("--grid", metavar="SPEC", help='every combination, e.g. "lr=0.001,0.003 hidden_dim=64,128"')
    how.add_argument("--random", type=int, metavar="N", help="N random configurations drawn from --space")
    search.add_argument("--space", metavar="SPEC", help='for --random: values or ranges, e.g. '
                        '"lr=1e-4:1e-2:log dropout=0.2:0.5 pooling=max,attention"')
    search.add_argument("--search-seed", type=int, default=0, help="seed of the random draw")
    search.add_argument("--search-dir", default=str(DEFAULT_SEARCH_DIR), help="folder that holds search folders")
    search.add_argument("--search-id", default=None, help="name of the search folder (default: generated)")
    search.add_argument("--train", help="training data: CSV, TSV or JSONL (optionally .gz)")
    search.add_argument("--valid", help="validation data (default: carved from --train)")
    search.add_argument("--test", help="test data (default: carved from --train)")
    search.add_argument("--dataset", help="built-in dataset instead of files")
    search.add_argument("--text-col", default=None, help="text column (default: 'text')")
    search.add_argument("--label-col", default=None, help="label column(s), comma-separated (default: 'label')")
    search.add_argument("--valid-fraction", type=float, default=None, help="share of --train used for validation")
    search.add_argument("--test-fraction", type=float, default=None, help="share of --train used for testing")
    search.add_argument("--split-seed", type=int, default=None,
                        help="seed of the carved split; -1 = --seed (default: -1)")
    search.add_argument("--config", help="JSON config file for the base configuration; flags override it")
    search.add_argument("--out", default=str(DEFAULT_RUNS_DIR), help="folder that holds the trials' run directories")
    add_train_flags(search)
    search.set_defaults(func=cmd_search)


def cmd_search(args) -> int:
    from core.cli import UserError, config_from_args

    if args.random is not None and not args.space:
        raise UserError('--random N needs --space, e.g. --space "lr=1e-4:1e-2:log hidden_dim=64,128".')
    if args.grid is not None and args.space:
        raise UserError("--space goes with --random; a grid is given in --grid itself.")
    if args.grid is not None:
        trials, spec = grid_trials(parse_space(args.grid)), f"grid: {args.grid}"
    else:
        trials = random_trials(parse_space(args.space, allow_ranges=True), args.random, args.search_seed)
        spec = f"random {args.random} (seed {args.search_seed}): {args.space}"
    base = config_from_args(args)
    for params in trials:
        apply_params(base, params)
    folder, results = run_search(base, trials, search_id=args.search_id, search_dir=args.search_dir,
                                 runs_dir=args.out, log=lambda line: print(line, flush=True), spec=spec)
    print(format_table(results, base.train.select_metric))
    print(f"results: {folder / 'results.csv'}")
    best = next((t for t in results if t.best), None)
    if best is not None:
        print(best.run_dir)
    return 0 if best is not None else 1
