"""Does each advanced technique help? Accuracy with and without it on SST-2, same seeds.

Every technique is one change to a fixed baseline (BiLSTM, GloVe 6B 50d, max pooling, dropout 0.5,
lr 2e-3, batch 64), trained with ``core.pipeline.train_run`` on the published SST-2 train/dev/test
split (dev picks the best epoch, test is reported). Results are cached per (configuration, seed)
in ``bench/out/techniques.json``, so an interrupted run continues where it stopped, and the table
is written to BENCHMARKS.md between the ``bench_techniques`` markers.

    python bench/bench_techniques.py --quick --epochs 2 --seeds 3   # the budgeted run in BENCHMARKS.md
    python bench/bench_techniques.py --seeds 5 --epochs 10  # a longer one
    python bench/bench_techniques.py --only fgm,layer_norm  # some techniques only

Needs ../shared/data/sst2/{train,dev,test}.csv; exits with a message when they are missing.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from core.data import TextTable, load_table, split_table  # noqa: E402
from core.pipeline import DataConfig, RunConfig, Splits, train_run  # noqa: E402
from core.models import ModelConfig  # noqa: E402
from core.text import TextConfig  # noqa: E402
from core.training import TrainConfig  # noqa: E402

DATA_DIR = ROOT.parent / "shared" / "data" / "sst2"
CACHE = ROOT / "bench" / "out" / "techniques.json"
MARK_START, MARK_END = "<!-- bench_techniques:start -->", "<!-- bench_techniques:end -->"


@dataclass
class Technique:
    name: str
    title: str
    claim: str  # what the guide says, in points of accuracy
    with_: dict  # overrides that turn the technique on ("section.field": value)
    without: dict = field(default_factory=dict)  # the configuration it is compared with
    claimed: tuple[float, float] | None = None  # claimed gain range in points (None: "helps")
    small: bool = True  # a small effect: run --seeds seeds; otherwise one seed
    dataset: str = "sst2"  # sst2, trec (two label columns) or imdb-subset (multi-sentence documents)


TECHNIQUES = [
    Technique("bidirectional", "Bidirectional LSTM (vs one direction)", "+2 to +4 points",
              {}, {"model.bidirectional": False}, (2.0, 4.0)),
    Technique("glove", "GloVe 6B 50d initialisation (vs random 50d embeddings)", "+3 to +5 points",
              {}, {"pretrained_vectors": ""}, (3.0, 5.0), small=False),
    Technique("label_smoothing", "Label smoothing 0.1", "+0.8 point",
              {"train.label_smoothing": 0.1}, {}, (0.8, 0.8)),
    Technique("attention", "Attention pooling (vs max pooling)", "helps",
              {"model.pooling": "attention"}, {}, None),
    Technique("fgm", "FGM adversarial training, epsilon 1.0", "helps",
              {"train.fgm_epsilon": 1.0}, {}, None),
    Technique("layer_norm", "LayerNorm after each LSTM layer (2 layers)", "helps",
              {"model.num_layers": 2, "model.layer_norm": True}, {"model.num_layers": 2}, None),
    Technique("residual", "Residual connection between LSTM layers (2 layers)", "helps",
              {"model.num_layers": 2, "model.residual": True}, {"model.num_layers": 2}, None),
    Technique("dropout_schedule", "Dropout schedule 0.3 -> 0.5 (vs fixed 0.5)", "helps",
              {"train.dropout_schedule": "0.3:0.5"}, {}, None),
    Technique("attention_vs_last", "Attention pooling (vs last hidden state)", "helps",
              {"model.pooling": "attention"}, {"model.pooling": "last"}, None),
    Technique("chunked", "Truncated BPTT in 16-token chunks (vs whole sentence)", "same accuracy, bounded memory",
              {"model.chunk_length": 16}, {}, (0.0, 0.0), small=False),
    Technique("cpu_bf16", "CPU bf16 autocast (vs fp32)", "same accuracy",
              {"train.amp": "bf16"}, {}, (0.0, 0.0), small=False),
    Technique("multitask", "Multi-task: coarse + fine question type (TREC; vs coarse only)", "helps",
              {"data.label_col": "label,fine_label"}, {}, None, dataset="trec"),
    Technique("hierarchical", "Hierarchical LSTM: words -> sentences -> document (IMDB subset; vs flat)", "helps",
              {"model.hierarchical": True}, {}, None, small=False, dataset="imdb-subset"),
    Technique("ema", "Weight averaging, EMA decay 0.99 (vs the last step's weights)", "not in the guide",
              {"train.ema_decay": 0.99}, {}, None),
    Technique("head_tail", "Keep head+tail of long reviews (IMDB sample; vs the first 400 tokens)", "not in the guide",
              {"text.truncation": "head+tail"}, {}, None, dataset="imdb-subset"),
]

IMDB_SUBSET = (5000, 1000, 5000)  # train, valid (both from IMDB train) and test (from IMDB test) documents


def baseline(epochs: int, quick: bool, dataset: str = "sst2") -> RunConfig:
    cfg = RunConfig(
        data=DataConfig(),
        text=TextConfig(tokenizer="whitespace" if quick else "en", max_length=60 if quick else 400,
                        min_freq=1),
        model=ModelConfig(embedding_dim=50, hidden_dim=64 if quick else 128, bidirectional=True, pooling="max", dropout=0.5),
        train=TrainConfig(epochs=epochs, batch_size=64, lr=2e-3, warmup_steps=100, patience=epochs,
                          label_smoothing=0.0, device="cpu"),
        pretrained_vectors="glove-6b-50d")
    if dataset == "trec":  # 77 batches an epoch: 5 epochs leave it underfitted
        cfg.train.epochs = cfg.train.patience = 3 * epochs
    if dataset == "imdb-subset":
        cfg.text.max_length = 400
        cfg.text.min_freq = 2
    return cfg


def apply(cfg: RunConfig, overrides: dict, seed: int) -> RunConfig:
    cfg = copy.deepcopy(cfg)
    for key, value in overrides.items():
        if "." in key:
            section, name = key.split(".")
            if not hasattr(getattr(cfg, section), name):
                raise KeyError(f"this checkout's config has no field {key}")
            setattr(getattr(cfg, section), name, value)
        else:
            setattr(cfg, key, value)
    cfg.train.seed = seed
    return cfg


# options added after results were first cached: left out of the key while at their default, so a
# new option does not invalidate every cached result
LATER_FIELDS = {("text", "truncation"): "head", ("train", "ema_decay"): 0.0}


def config_key(cfg: RunConfig, dataset: str = "sst2") -> str:
    settings = cfg.to_dict()
    for (section, name), default in LATER_FIELDS.items():
        if settings[section].get(name) == default:
            del settings[section][name]
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return key if dataset == "sst2" else f"{dataset}:{key}"


def load_sst2() -> Splits | None:
    files = {name: DATA_DIR / f"{name}.csv" for name in ("train", "dev", "test")}
    if not all(p.is_file() for p in files.values()):
        return None
    tables = {name: load_table(str(path), "text", "label")[0] for name, path in files.items()}
    return Splits(tables["train"], tables["dev"], tables["test"])


def load_trec() -> Splits | None:
    """TREC-6 with its 50-class fine_label as a second task; 10% of train (seeded, stratified) is dev."""
    folder = DATA_DIR.parent / "trec"
    if not (folder / "train.csv").is_file() or not (folder / "test.csv").is_file():
        return None
    train = load_table(str(folder / "train.csv"), "text", ["label", "fine_label"])[0]
    test = load_table(str(folder / "test.csv"), "text", ["label", "fine_label"], held_out=True)[0]
    train, valid, _ = split_table(train, 0.1, 0.0, seed=13)
    return Splits(train, valid, test)


def load_imdb_subset() -> Splits | None:
    """A seeded, class-balanced sample of IMDB (sizes in IMDB_SUBSET): multi-sentence reviews on a CPU budget."""
    folder = DATA_DIR.parent / "imdb"
    if not (folder / "train.csv.gz").is_file() or not (folder / "test.csv.gz").is_file():
        return None
    n_train, n_valid, n_test = IMDB_SUBSET
    full_train = load_table(str(folder / "train.csv.gz"), "text", "label")[0]
    full_test = load_table(str(folder / "test.csv.gz"), "text", "label", held_out=True)[0]
    _, train_valid, _ = split_table(full_train, (n_train + n_valid) / len(full_train), 0.0, seed=13)
    train, valid, _ = split_table(train_valid, n_valid / len(train_valid), 0.0, seed=13)
    _, test, _ = split_table(full_test, n_test / len(full_test), 0.0, seed=13)
    return Splits(train, valid, test)


LOADERS = {"sst2": load_sst2, "trec": load_trec, "imdb-subset": load_imdb_subset}


def only_columns(splits: Splits, columns: list[str]) -> Splits:
    """The same rows with only the label columns a configuration trains on."""
    def keep(table):
        return TextTable(table.texts, {c: table.labels[c] for c in columns})
    return Splits(keep(splits.train), keep(splits.valid), keep(splits.test))


def run_one(cfg: RunConfig, splits: Splits, cache: dict, dataset: str = "sst2") -> dict:
    key = config_key(cfg, dataset)
    if key in cache:
        return cache[key]
    splits = only_columns(splits, cfg.data.label_cols)
    with tempfile.TemporaryDirectory() as runs_dir:
        started = time.perf_counter()
        result = train_run(cfg, splits=splits, runs_dir=runs_dir, log=lambda line: None)
        seconds = time.perf_counter() - started
    if result.status != "completed":
        raise SystemExit(f"a run ended as {result.status}: {result.message}")
    record = {"test_accuracy": result.metrics["test"]["primary"]["accuracy"],
              "valid_accuracy": result.metrics["valid"]["primary"]["accuracy"],
              "best_epoch": result.metrics["best_epoch"], "train_seconds": result.metrics["train_seconds"],
              "seconds": round(seconds, 1), "seed": cfg.train.seed}
    cache[key] = record
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    # another invocation may have added results meanwhile: keep them
    on_disk = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    cache.update({k: v for k, v in on_disk.items() if k not in cache})
    CACHE.write_text(json.dumps(cache, indent=1))
    return record


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0] * 100:.2f}"
    return f"{statistics.mean(values) * 100:.2f} ± {statistics.stdev(values) * 100:.2f}"


def verdict(t: Technique, deltas: list[float]) -> str:
    """Paired (same-seed) differences in points -> one honest sentence."""
    mean = statistics.mean(deltas)
    spread = statistics.stdev(deltas) if len(deltas) > 1 else None
    # a difference is called real only when it is larger than twice its standard error and 0.5 point
    noise = max(0.5, 2 * spread / len(deltas) ** 0.5) if spread is not None else 1.0
    clear = abs(mean) > noise
    if t.claimed == (0.0, 0.0):
        return ("confirmed: no accuracy change beyond noise" if not clear
                else f"not confirmed: accuracy moved {mean:+.2f} points")
    if not clear:
        effect = f"no clear effect ({mean:+.2f} points, noise ±{noise:.2f})"
        prefix = "" if t.claim == "not in the guide" else "not confirmed here: "
        return f"{prefix}{effect}" + ("" if len(deltas) > 1 else ", one seed")
    if mean < 0:
        return f"not confirmed: it hurts by {-mean:.2f} points here"
    if t.claimed is None:
        return f"{'helps' if t.claim == 'not in the guide' else 'confirmed'}: +{mean:.2f} points"
    low, high = t.claimed
    if mean >= low:
        return f"confirmed: +{mean:.2f} points" + (" (more than claimed)" if mean > high + noise else "")
    return f"partly: it helps (+{mean:.2f} points) but less than the claimed {t.claim}"


def amp_gpu_section(epochs: int, splits: Splits, quick: bool) -> list[str]:
    if not torch.cuda.is_available():
        return ["AMP on GPU (fp16 with GradScaler, bf16): **not measured: no GPU in this session** "
                "(torch.cuda.is_available() is False). Mixed precision on CPU is the `cpu_bf16` row."]
    lines = ["| AMP mode (GPU) | test accuracy | seconds / epoch | peak GPU memory (MiB) |", "|---|---|---|---|"]
    for mode in ("off", "fp16", "bf16"):
        cfg = apply(baseline(epochs, quick), {"train.amp": mode, "train.device": "cuda"}, 13)
        torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as runs_dir:
            result = train_run(cfg, splits=splits, runs_dir=runs_dir, log=lambda line: None)
        per_epoch = result.metrics["train_seconds"] / max(1, result.metrics["epochs_run"])
        lines.append(f"| {mode} | {result.metrics['test']['primary']['accuracy'] * 100:.2f} | {per_epoch:.2f} | "
                     f"{torch.cuda.max_memory_allocated() / 2 ** 20:.0f} |")
    return lines


def write_section(path: Path, body: str) -> None:
    block = f"{MARK_START}\n{body.rstrip()}\n{MARK_END}"
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def spread_note(results: dict, args) -> list[str]:
    """How far apart seeds of the baseline are: the scale below which this table cannot judge."""
    baseline_runs = [b["test_accuracy"] for _, b in results.get("label_smoothing", [])]
    if len(baseline_runs) < 2:
        return []
    spread = statistics.stdev(baseline_runs) * 100
    return [f"Reading the table: the baseline alone varies by {spread:.2f} points (standard deviation) from seed "
            f"to seed at this budget ({args.epochs} epochs), so only effects well above that are resolved here; "
            f"verdicts of \"no clear effect\" mean \"not measurable at this budget\", not \"no effect\". Firmer "
            f"figures: `python bench/bench_techniques.py --epochs 6 --seeds 5` (hidden 128, spaCy tokens)."]


def other_datasets(sizes: dict[str, str]) -> list[str]:
    """How the rows that are not on SST-2 were measured."""
    lines = []
    if "trec" in sizes:
        lines.append(f"Multi-task row: TREC-6 ({sizes['trec']}; dev = 10% of train, seeded and stratified), the "
                     "same baseline trained for 3x the epochs (TREC has 77 batches an epoch); with = one head for the 6 coarse classes and one for the 50 fine classes "
                     "(`--label-col label,fine_label`, equal task weights), without = the coarse head alone; the "
                     "figure is coarse (6-class) test accuracy, which both arms predict.")
    if "imdb-subset" in sizes:
        lines.append(f"Hierarchical row: a seeded, class-balanced IMDB sample ({sizes['imdb-subset']}; train and dev "
                     "from IMDB train, test from IMDB test), max_length 400 tokens, min_freq 2, otherwise the "
                     "baseline; with = `--hierarchical` (spaCy sentencizer, word BiLSTM per sentence, sentence "
                     "BiLSTM, attention over sentences), without = the flat BiLSTM over the same 400 tokens. Its cost on "
                     "a CPU is in the train s column: the word LSTM reads many short, unevenly padded sentence "
                     "batches through packed sequences, so one hierarchical seed takes over an hour here and it "
                     "was run with one seed. The head+tail row uses the same sample.")
    return lines


def render(args, base: RunConfig, splits: Splits, results: dict, amp_lines: list[str],
           sizes: dict[str, str]) -> str:
    rows = []
    for t in TECHNIQUES:
        pairs = results.get(t.name, [])
        if not pairs:
            if not args.only or t.name in args.only.split(","):
                rows.append(f"| {t.title} | {t.claim} | | | | 0 | | not run within this budget |")
            continue
        with_acc = [a["test_accuracy"] for a, _ in pairs]
        without_acc = [b["test_accuracy"] for _, b in pairs]
        deltas = [(a - b) * 100 for a, b in zip(with_acc, without_acc)]
        secs = (statistics.mean(a["train_seconds"] for a, _ in pairs),
                statistics.mean(b["train_seconds"] for _, b in pairs))
        rows.append(f"| {t.title} | {t.claim} | {mean_std(with_acc)} | {mean_std(without_acc)} | "
                    f"{statistics.mean(deltas):+.2f} | {len(pairs)} | {secs[0]:.0f} / {secs[1]:.0f} | "
                    f"{verdict(t, deltas)} |")
    command = "python bench/bench_techniques.py " + " ".join(
        a for a in (f"--seeds {args.seeds}", f"--large-seeds {args.large_seeds}", f"--epochs {args.epochs}",
                    "--quick" if args.quick else "", f"--budget-minutes {args.budget_minutes:g}"
                    if args.budget_minutes else "", f"--only {args.only}" if args.only else "") if a)
    body = [
        "## Advanced techniques on SST-2, TREC and IMDB (`bench/bench_techniques.py`)", "",
        f"Reproduce: `{command}` (results are cached per configuration and seed in `bench/out/techniques.json`; "
        "a second call continues where the first stopped).", "",
        f"Baseline: BiLSTM, hidden {base.model.hidden_dim}, GloVe 6B 50d, max pooling, dropout 0.5, lr 2e-3, "
        f"batch 64, warmup 100 steps, {args.epochs} epochs (best dev epoch kept), max_length "
        f"{base.text.max_length}, {base.text.tokenizer} tokens. Data: SST-2 sentence split "
        f"({len(splits.train)} train / {len(splits.valid)} dev / {len(splits.test)} test); figures are test accuracy "
        f"in %, mean ± standard deviation over seeds; Δ is the mean same-seed difference in points. A difference "
        f"counts as real only when it exceeds 0.5 point and twice its standard error (1 point with one seed). "
        f"Machine: one CPU thread per run on a 2-core machine shared with other work, torch {torch.__version__}: "
        f"the seconds show the extra cost of a technique only roughly (the load changed during the run).", "",
        "| technique | guide's claim | with | without | Δ points | seeds | train s (with / without) | verdict |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        *spread_note(results, args), "",
        *amp_lines, "",
        *other_datasets(sizes),
    ]
    return "\n".join(body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds for techniques with a small effect")
    parser.add_argument("--large-seeds", type=int, default=1, help="seeds for techniques with a large effect")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="hidden 64, max_length 60, whitespace tokens (SST-2 is distributed tokenised)")
    parser.add_argument("--budget-minutes", type=float, default=0,
                        help="start no new training run after this many minutes (0 = no limit)")
    parser.add_argument("--only", default="", help="comma-separated technique names: " +
                        ", ".join(t.name for t in TECHNIQUES))
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--no-write", action="store_true", help="print the section, do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)

    splits = load_sst2()
    if splits is None:
        print(f"skipped: SST-2 not found in {DATA_DIR} (train.csv, dev.csv, test.csv)")
        return 0
    torch.set_num_threads(1)  # the CPU is shared: one thread per run avoids OpenMP spin-waiting
    chosen = [t for t in TECHNIQUES if not args.only or t.name in args.only.split(",")]
    cache = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    base = baseline(args.epochs, args.quick)
    deadline = time.monotonic() + args.budget_minutes * 60 if args.budget_minutes else None
    results: dict[str, list] = {}
    data = {"sst2": splits}
    sizes: dict[str, str] = {}

    def splits_for(dataset: str) -> Splits | None:
        if dataset not in data:
            data[dataset] = LOADERS[dataset]()
            if data[dataset] is None:
                print(f"{dataset}: skipped, its files are not in {DATA_DIR.parent}", flush=True)
        found = data[dataset]
        if found is not None:
            sizes[dataset] = f"{len(found.train)} train / {len(found.valid)} dev / {len(found.test)} test"
        return found

    amp_lines = amp_gpu_section(args.epochs, splits, args.quick)
    # techniques left out by --only keep their cached figures in the table
    for t in TECHNIQUES:
        if t in chosen:
            continue
        for round_ in range(args.seeds if t.small else args.large_seeds):
            t_base = baseline(args.epochs, args.quick, t.dataset)
            keys = [config_key(apply(t_base, o, 13 + 101 * round_), t.dataset) for o in (t.with_, t.without)]
            if all(k in cache for k in keys):
                results.setdefault(t.name, []).append(tuple(cache[k] for k in keys))
                if t.dataset != "sst2":
                    splits_for(t.dataset)

    def publish():
        text = render(args, base, splits, results, amp_lines, sizes)
        if not args.no_write:
            write_section(Path(args.out), text)
        return text

    # seed rounds: every technique gets its first seed before any gets a second, so a run cut
    # short by the budget still covers every technique
    for round_ in range(max(args.seeds, args.large_seeds)):
        seed = 13 + 101 * round_
        for t in chosen:
            if round_ >= (args.seeds if t.small else args.large_seeds):
                continue
            try:
                t_base = baseline(args.epochs, args.quick, t.dataset)
                configs = apply(t_base, t.with_, seed), apply(t_base, t.without, seed)
            except KeyError as err:
                print(f"{t.name}: skipped, {err.args[0]}", flush=True)
                continue
            if deadline and time.monotonic() > deadline and not all(config_key(c, t.dataset) in cache for c in configs):
                continue
            t_splits = splits_for(t.dataset)
            if t_splits is None:
                continue
            a, b = (run_one(c, t_splits, cache, t.dataset) for c in configs)
            results.setdefault(t.name, []).append((a, b))
            print(f"{t.name} seed {seed}: with {a['test_accuracy']:.4f} ({a['train_seconds']}s) "
                  f"without {b['test_accuracy']:.4f} ({b['train_seconds']}s)", flush=True)
            publish()
    print(publish())
    if not args.no_write:
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
