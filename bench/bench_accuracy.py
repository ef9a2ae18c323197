"""Test accuracy on SST-2, SST-5, TREC-6 and IMDB with the product's recipes, next to a TF-IDF +
logistic regression anchor trained in the same run.

    python bench/bench_accuracy.py --datasets sst2,sst2-random,trec,sst5
    python bench/bench_accuracy.py --datasets imdb --epochs 4
    python bench/bench_accuracy.py --datasets imdb-ngrams   # the recipe plus --ngrams 2
    python bench/bench_accuracy.py --datasets sst2-separate  # plus --ngrams 3 --ngram-fit separate
    python bench/bench_accuracy.py --from-run imdb-ngrams=artifacts/runs/<run_id>  # a run of the printed command

Each recipe is a ``RunConfig`` trained with ``core.pipeline.train_run`` exactly as
``python -m core train`` would (the equivalent command is printed and recorded). Results
accumulate in bench/out/accuracy.json so datasets can be measured in separate invocations; the
BENCHMARKS.md section is rebuilt from all of them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATA, ROOT, require_data, update_section  # noqa: E402
from core.pipeline import DataConfig, RunConfig, load_splits, train_run  # noqa: E402
from core.runs import new_run_id  # noqa: E402
from core.models import ModelConfig  # noqa: E402
from core.text import TextConfig  # noqa: E402
from core.training import TrainConfig  # noqa: E402

RESULTS = ROOT / "bench" / "out" / "accuracy.json"
TARGETS = {"sst2": 0.86, "sst2-random": None, "sst5": 0.48, "trec": 0.93, "imdb": 0.91, "imdb1k": None}
NGRAM_SUFFIX = "-ngrams"  # <recipe>-ngrams: the same recipe with a bag of words + bigrams beside the LSTM
SEPARATE_SUFFIX = "-separate"  # <recipe>-separate: + words, bigrams and trigrams fitted after the LSTM
TRANSFER_SUFFIX = "-transfer"  # <recipe>-transfer: starts from the demo model (IMDB), hidden 128 like it
TRANSFER_SOURCE = "artifacts/demo"
RATINGS_SUFFIX = "-ratings"  # imdb-ratings: the IMDB recipe, 4 epochs, a second head for the 1-10 star rating
RATINGS_TRANSFER_SUFFIX = "-rtransfer"  # <recipe>-rtransfer: starts from the imdb-ratings run
RATINGS_SOURCE = "bench/out/runs/imdb-rating-source"
# <recipe>-lm: starts from an LSTM pretrained as a language model on IMDB's training reviews, their
# labels unread (bench/bench_pretrain.py makes it)
LM_SUFFIX = "-lm"
LM_SOURCE = "bench/out/encoders/imdb-lm"
# <recipe>-lmft: that encoder after more language-model training on the recipe's own training texts
# (their labels unread): bench/out/encoders/imdb-lm-<dataset>, made by bench/bench_pretrain.py
LM_ADAPTED_SUFFIX = "-lmft"
SUFFIXES = (NGRAM_SUFFIX, SEPARATE_SUFFIX, TRANSFER_SUFFIX, RATINGS_SUFFIX, RATINGS_TRANSFER_SUFFIX, LM_SUFFIX,
            LM_ADAPTED_SUFFIX)


def adapted_encoder(dataset: str) -> str:
    return f"{LM_SOURCE}-{dataset}"


def parent_name(name: str) -> tuple[str, str]:
    """``sst5-transfer-separate`` -> (``sst5-transfer``, ``-separate``); a plain recipe -> (name, "")."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[:-len(suffix)], suffix
    return name, ""


def starts_from_another_model(name: str) -> bool:
    return TRANSFER_SUFFIX in name or RATINGS_TRANSFER_SUFFIX in name


def base_name(name: str) -> str:
    """The dataset's plain recipe: every suffix removed."""
    parent, suffix = parent_name(name)
    return base_name(parent) if suffix else name

ANCHORS = {"sst2": "published BiLSTM 85.9% (GLUE)", "sst2-random": "",
           "sst5": "CNN 48.0% (Kim 2014)", "trec": "CNN 93.6% (Kim 2014)",
           "imdb": "word2vec-init LSTM 90.0% (Dai & Le 2015); the guide's BiLSTM+GloVe lineage 85.3%"}


def recipe(name: str, epochs: int | None) -> tuple[RunConfig, dict]:
    """The run configuration and the data files for one benchmark."""
    if name.endswith(NGRAM_SUFFIX):
        cfg, files = recipe(name[:-len(NGRAM_SUFFIX)], epochs)
        cfg.model.ngrams = 2
        return cfg, files
    if name.endswith(TRANSFER_SUFFIX) or name.endswith(RATINGS_TRANSFER_SUFFIX):
        suffix = TRANSFER_SUFFIX if name.endswith(TRANSFER_SUFFIX) else RATINGS_TRANSFER_SUFFIX
        cfg, files = recipe(name[:-len(suffix)], epochs)
        cfg.model.hidden_dim = 128
        cfg.init_from = TRANSFER_SOURCE if suffix == TRANSFER_SUFFIX else RATINGS_SOURCE
        if not (ROOT / cfg.init_from).is_dir():
            raise SystemExit(f"{name} starts from {cfg.init_from}: train it first with "
                             f"`python bench/bench_accuracy.py --datasets imdb-ratings` and move its run there")
        return cfg, files
    if name.endswith(LM_SUFFIX) or name.endswith(LM_ADAPTED_SUFFIX):
        parent, suffix = parent_name(name)
        cfg, files = recipe(parent, epochs)
        cfg.init_from = LM_SOURCE if suffix == LM_SUFFIX else adapted_encoder(base_name(parent))
        if not (ROOT / cfg.init_from).is_dir():
            raise SystemExit(f"{name} starts from {cfg.init_from}: make it first with "
                             f"`python bench/bench_pretrain.py --threads 1 --datasets {name}`")
        return cfg, files
    if name.endswith(RATINGS_SUFFIX):
        cfg, files = recipe(name[:-len(RATINGS_SUFFIX)], epochs)
        cfg.data.label_col, cfg.train.epochs = "label,rating", epochs or 4
        return cfg, files
    if name.endswith(SEPARATE_SUFFIX):
        cfg, files = recipe(name[:-len(SEPARATE_SUFFIX)], epochs)
        cfg.model.ngrams, cfg.train.ngram_fit = 3, "separate"
        return cfg, files
    sentence = dict(text=TextConfig(tokenizer="en", max_length=80, min_freq=1),
                    model=ModelConfig(hidden_dim=256, pooling="attention", dropout=0.5))
    if name in ("sst2", "sst2-random", "sst5"):
        folder = "sst2" if name.startswith("sst2") else "sst5"
        files = {s: str(require_data(folder, f"{s}.csv")) for s in ("train", "dev", "test")}
        cfg = RunConfig(data=DataConfig(train=files["train"], valid=files["dev"], test=files["test"]),
                        train=TrainConfig(epochs=epochs or 12, batch_size=64, lr=2e-3, patience=3,
                                          label_smoothing=0.1, fgm_epsilon=1.0, select_metric="accuracy"),
                        pretrained_vectors="" if name == "sst2-random" else "glove-6b-50d", **sentence)
        if name == "sst2-random":
            cfg.model.embedding_dim = 50
    elif name == "trec":
        files = {"train": str(require_data("trec", "train.csv")), "test": str(require_data("trec", "test.csv"))}
        cfg = RunConfig(data=DataConfig(train=files["train"], test=files["test"], valid_fraction=0.1, test_fraction=0.0),
                        train=TrainConfig(epochs=epochs or 20, batch_size=32, lr=2e-3, patience=4,
                                          label_smoothing=0.1, fgm_epsilon=1.0),
                        pretrained_vectors="glove-6b-50d", **sentence)
    elif name == "imdb":
        files = {"train": str(require_data("imdb", "train.csv.gz")), "test": str(require_data("imdb", "test.csv.gz"))}
        cfg = RunConfig(data=DataConfig(train=files["train"], test=files["test"], valid_fraction=0.1, test_fraction=0.0),
                        text=TextConfig(tokenizer="en", max_length=400, min_freq=2),
                        model=ModelConfig(hidden_dim=128, pooling="attention", dropout=0.5),
                        train=TrainConfig(epochs=epochs or 8, batch_size=64, lr=2e-3, patience=2, label_smoothing=0.1,
                                          fgm_epsilon=1.0),
                        pretrained_vectors="glove-6b-50d")
    elif name == "imdb1k":  # few labels: 1,000 labelled reviews (800 train, 200 validation)
        files = few_label_imdb()
        cfg = RunConfig(data=DataConfig(train=files["train"], test=files["test"], valid_fraction=0.2, test_fraction=0.0),
                        text=TextConfig(tokenizer="en", max_length=400, min_freq=1),
                        model=ModelConfig(hidden_dim=256, pooling="attention", dropout=0.5),
                        train=TrainConfig(epochs=epochs or 15, batch_size=32, lr=2e-3, patience=4,
                                          label_smoothing=0.1, fgm_epsilon=1.0, select_metric="accuracy"),
                        pretrained_vectors="glove-6b-50d")
    else:
        raise SystemExit(f"unknown dataset {name!r}; choose from {', '.join(TARGETS)}")
    return cfg, files


def few_label_imdb(train_size: int = 1_000, test_size: int = 5_000, seed: int = 13) -> dict:
    """Class-balanced random subsets of IMDB's training and test files, written under bench/out/data
    (derived from the shared data, never committed)."""
    import pandas as pd

    out = ROOT / "bench" / "out" / "data"
    files = {"train": out / f"imdb-train-{train_size}.csv", "test": out / f"imdb-test-{test_size}.csv"}
    for part, size in (("train", train_size), ("test", test_size)):
        if files[part].is_file():
            continue
        frame = pd.read_csv(require_data("imdb", f"{part}.csv.gz"))
        subset = pd.concat([frame[frame["label"] == label].sample(size // 2, random_state=seed)
                            for label in sorted(frame["label"].unique())])
        out.mkdir(parents=True, exist_ok=True)
        subset.sample(frac=1.0, random_state=seed)[["text", "label"]].to_csv(files[part], index=False)
    return {k: str(v) for k, v in files.items()}


def cli_command(cfg: RunConfig) -> str:
    d, t, m, tr = cfg.data, cfg.text, cfg.model, cfg.train
    parts = ["python -m core train", f"--train {d.train}"]
    for flag, value in (("--valid", d.valid), ("--test", d.test)):
        if value:
            parts.append(f"{flag} {value}")
    if not d.valid:
        parts.append(f"--valid-fraction {d.valid_fraction} --test-fraction {d.test_fraction}")
    parts += [f"--tokenizer {t.tokenizer}", f"--max-length {t.max_length}", f"--min-freq {t.min_freq}",
              f"--hidden-dim {m.hidden_dim}", f"--pooling {m.pooling}", f"--dropout {m.dropout}",
              f"--epochs {tr.epochs}", f"--batch-size {tr.batch_size}", f"--lr {tr.lr}", f"--patience {tr.patience}",
              f"--label-smoothing {tr.label_smoothing}", f"--fgm-epsilon {tr.fgm_epsilon}",
              f"--seed {tr.seed}"]
    if m.ngrams:
        parts.append(f"--ngrams {m.ngrams}")
    if tr.ngram_fit != "joint":
        parts.append(f"--ngram-fit {tr.ngram_fit}")
    if d.label_col != "label":
        parts.append(f"--label-col {d.label_col}")
    if cfg.init_from:
        parts.append(f"--init-from {cfg.init_from}")
    if cfg.pretrained_vectors:
        parts.append(f"--pretrained-vectors {cfg.pretrained_vectors}")
    else:
        parts.append(f"--embedding-dim {m.embedding_dim}")
    return " ".join(str(p) for p in parts).replace(str(DATA), "../shared/data")


def tfidf_anchor(cfg: RunConfig) -> tuple[float, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    splits = load_splits(cfg.data, cfg.data.seed_for_split(cfg.train.seed), log=lambda _: None)
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vectorizer.fit_transform(splits.train.texts)
    clf = LogisticRegression(C=4.0, max_iter=2000).fit(x_train, splits.train.primary_labels)
    accuracy = clf.score(vectorizer.transform(splits.test.texts), splits.test.primary_labels)
    return float(accuracy), time.perf_counter() - start


def adopt_run(name: str, run_dir: Path, epochs: int | None) -> tuple[RunConfig, dict]:
    """The saved run of ``name``'s command (trained with ``python -m core train``): its config must be
    the recipe's, so the figure is the one this script would have measured."""
    cfg, _ = recipe(name, epochs)
    saved = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text())["run"])
    for part in ("train", "valid", "test"):
        mine, theirs = getattr(cfg.data, part), getattr(saved.data, part)
        if bool(mine) != bool(theirs) or (mine and Path(mine).resolve() != (ROOT / theirs).resolve()
                                          and Path(mine).resolve() != Path(theirs).resolve()):
            raise SystemExit(f"{run_dir}: its {part} file {theirs!r} is not the {name} recipe's {mine!r}")
    for section in ("text", "train"):
        if getattr(saved, section).__dict__ != getattr(cfg, section).__dict__:
            raise SystemExit(f"{run_dir}: its {section} settings differ from the {name} recipe")
    derived = {"vocab_size", "num_classes", "embedding_dim", "padding_idx"}
    mine = {k: v for k, v in cfg.model.to_dict().items() if k not in derived}
    theirs = {k: v for k, v in saved.model.to_dict().items() if k not in derived}
    if mine != theirs or saved.pretrained_vectors != cfg.pretrained_vectors or saved.init_from != cfg.init_from:
        raise SystemExit(f"{run_dir}: its model settings differ from the {name} recipe")
    status = json.loads((run_dir / "status.json").read_text())
    if status.get("status") != "completed":
        raise SystemExit(f"{run_dir}: the run did not complete ({status.get('status')})")
    return cfg, json.loads((run_dir / "metrics.json").read_text())


def previous_rows() -> dict:
    """The rows of the published table, for datasets whose results file is not on this machine."""
    import re
    text = (ROOT / "BENCHMARKS.md").read_text()
    section = text.split("<!-- bench_accuracy:start -->")[1].split("<!-- bench_accuracy:end -->")[0]
    commands = dict(re.findall(r"^- ([\w-]+): `(.+)`$", section, flags=re.M))
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| ([\w-]+) \| \*\*([\d.]+)%\*\* \| ([\d.]*)%? ?\|.*?\| ([\d.]+)% \| (\d+) \(best (\d+)\) "
                     r"\| ([\d.]+) min \|", line)
        if m and m.group(1) in commands:
            rows[m.group(1)] = {"accuracy": float(m.group(2)) / 100, "tfidf_accuracy": float(m.group(4)) / 100,
                                "epochs_run": int(m.group(5)), "best_epoch": int(m.group(6)),
                                "train_seconds": float(m.group(7)) * 60, "command": commands[m.group(1)],
                                "valid_accuracy": float(m.group(3)) / 100 if m.group(3) else None,
                                "measured": "earlier (table)"}
            if m.group(1).endswith(NGRAM_SUFFIX) and "hash before the fix" in line:
                rows[m.group(1)]["ngram_hash"] = 1
    return rows


def render(results: dict) -> str:
    order = ["sst2", "sst2-random", "sst5", "trec", "imdb"]
    results = dict(sorted(results.items(), key=lambda kv: (
        order.index(base_name(kv[0])) if base_name(kv[0]) in order else len(order), kv[0].count("-"), kv[0])))
    rows = []
    for name, r in results.items():
        target = TARGETS.get(base_name(name))
        verdict = "" if target is None else ("met" if r["accuracy"] >= target else "not met")
        valid = "" if r.get("valid_accuracy") is None else f"{r['valid_accuracy']:.2%}"
        note = ANCHORS.get(name, "")
        if r.get("ngram_hash") == 1:
            note = "n-gram hash before the fix (ngram_hash 1)"
        rows.append(f"| {name} | **{r['accuracy']:.2%}** | {valid} | {'' if target is None else f'>= {target:.0%} ({verdict})'} "
                    f"| {r['tfidf_accuracy']:.1%} | {r['epochs_run']} (best {r['best_epoch']}) "
                    f"| {r['train_seconds'] / 60:.1f} min | {note} |")
    commands = "\n".join(f"- {name}: `{r['command']}`" for name, r in results.items())
    pairs = {suffix: [] for suffix in SUFFIXES}
    for name, r in results.items():
        parent, suffix = parent_name(name)
        base = results.get(parent)
        if suffix and base:
            valid = ("validation not recorded for the plain run" if base.get("valid_accuracy") is None else
                     f"validation {base['valid_accuracy']:.2%} -> {r['valid_accuracy']:.2%}")
            pairs[suffix].append(f"{parent}: {valid}, test {base['accuracy']:.2%} -> {r['accuracy']:.2%}")
    chosen = []
    for base in dict.fromkeys(base_name(n) for n in results):
        target = TARGETS.get(base)
        for transfer in (False, True):
            candidates = [n for n in results if base_name(n) == base and results[n].get("valid_accuracy") is not None
                          and starts_from_another_model(n) == transfer]
            if target is None or not candidates:
                continue
            best = max(candidates, key=lambda n: results[n]["valid_accuracy"])
            verdict = "met" if results[best]["accuracy"] >= target else "not met"
            chosen.append(f"{base}, {'starting from the IMDB model' if transfer else 'its own training data only'}: "
                          f"`{best}` (validation {results[best]['valid_accuracy']:.2%}), test "
                          f"**{results[best]['accuracy']:.2%}**, target {target:.0%} {verdict}")
    return f"""## Accuracy (issue: core engine)

Command: `python bench/bench_accuracy.py --threads 1 --datasets {','.join(results)}` (results accumulate in
`bench/out/accuracy.json`). Test accuracy of the checkpoint with the best validation accuracy;
TF-IDF (1-2 grams) + logistic regression trained on the same split in the same run as an anchor.
`sst2-random` is the SST-2 recipe without pretrained vectors (random 50d embeddings).

| dataset | test accuracy | validation accuracy | target | TF-IDF + LR | epochs | training time (CPU) | published anchor |
| --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Per dataset, the recipe with the best validation accuracy (test figures never choose):
{chr(10).join(f"- {line}" for line in chosen) or "- none measured yet"}

Two cautions on that choice. A `-separate` row's validation figure is optimistic: its n-gram weight
and regularisation were picked on that same validation split (on SST-5 it rose by about 0.9 point
over five seeds while test accuracy rose by 0.05). And one seed's validation accuracy on SST's
872 or 1,101 dev sentences moves by a point from seed to seed, so the five-seed means in section
"Starting from the IMDB model" are the sturdier comparison.

The equivalent command lines (the same `RunConfig`, seed 13):

{commands}

A name ending in `-separate` is the recipe plus `--ngrams 3 --ngram-fit separate`: the LSTM trains
exactly as in the plain recipe (same seed, same weights), then a logistic regression on its bag of
words, bigrams and trigrams (hashed into 1,000,000 rows, weighted by inverse document frequency) is
fitted on the training split and added to the LSTM's logits with the regularisation and weight
that score best on validation (`core/wide.py`). The two err on different texts, so the sum beats
both: plain -> separate: {"; ".join(pairs[SEPARATE_SUFFIX]) or "not measured yet"}. A finished run
gets the same part without training again: `python -m core fit-ngrams --run DIR` (the IMDB row
was made that way from the plain IMDB run, the demo model).

A name ending in `-transfer` is the sentence recipe with `--hidden-dim 128 --init-from artifacts/demo`:
it starts from the demo model's LSTM, attention and word vectors, which were trained on IMDB's
labelled reviews, then trains and selects on the dataset's own splits like every other row.
`-rtransfer` starts instead from `imdb-ratings`, the IMDB recipe (4 epochs) with a second head
that predicts each review's 1-10 star rating (`--label-col label,rating`), so its LSTM also learns
how strong a review's sentiment is. Both use more labelled data than the dataset's training split
(IMDB's), so they are listed apart above (their training time leaves out the IMDB model's, 51 and
17 minutes, paid once); section "Starting from the IMDB model" below gives five seeds of each.

A name ending in `-ngrams` is the recipe plus `--ngrams 2` trained jointly with the LSTM ("wide
and deep"): {"; ".join(pairs[NGRAM_SUFFIX]) or "not measured yet"}. Rows marked "hash before the
fix" were trained when the bigram hash put a 25,000-word vocabulary's bigrams into 100,000 of the
1,000,000 rows (its multiplier was 3 modulo 10**6); runs saved then still load and predict as
before (`ngram_hash` 1 in their config), new runs use the corrected hash.

All runs use one CPU thread on a shared 2-core machine (other benchmarks ran beside them, so the
times are upper bounds). The recipes were chosen on SST-2's dev set: attention pooling, label
smoothing 0.1, FGM adversarial training (epsilon 1.0) and 256 hidden units each raised dev accuracy
there (a frozen embedding, dropout 0.3, two layers, batch 32 and weight averaging with
`--ema-decay 0.99` did not), and the sentence recipe was applied unchanged to SST-5 and TREC. IMDB
uses FGM too (its validation accuracy rose from 90.5% to 91.6%, test from 89.9% to 90.2%) but keeps
hidden 128 to fit the CPU budget. No test figure was used to choose anything.

IMDB meets its target with the n-gram part fitted after the LSTM (`imdb-separate`, 91.18%, chosen
by validation; the LSTM alone 90.20%, TF-IDF + LR alone 90.5%): 51 minutes of LSTM training plus
about 5 minutes for the fit on this CPU. On the sentence sets, trained on their own data only,
seed 13 of the plain recipe is a good draw and still short (seeds 14 to 17 score 83.6% to 85.7% on
SST-2 and 44.6% to 47.2% on SST-5; 5 seeds averaged give 85.89% and 46.47%, section "Seed
ensembles"), and the fitted n-grams add little there (a sentence has few n-grams; validation chose
weights of 0.1). On SST-2 the gap closes with SST's own labels when the LSTM starts from a
language model pretrained on unlabelled reviews (IMDB's training texts, labels unread: an outside
unlabelled resource, as the GloVe vectors are), section "Language-model pretraining": five seeds of
`sst2-lm` average 85.65% and their ensemble scores **86.05%** (target met, by one test sentence;
plain five-seed ensemble 85.89%). SST-5 reaches 47.83% that way (five-seed ensemble; plain 46.47%),
short of 48%; it passes 48% only when starting from an IMDB model trained on IMDB's labels
(`-transfer` rows, and five seeds of them in section "Starting from the IMDB model": 48.54% mean,
48.73% ensemble from the rating-aware model). The published figures these targets come from use
300d vectors, SST's phrase-level labels (which the data here does not have), or a pre-trained
language model far larger than one this CPU can train.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="sst2,sst2-random,trec,sst5")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--render-only", action="store_true", help="rebuild the BENCHMARKS.md section from saved results")
    parser.add_argument("--from-run", action="append", default=[], metavar="NAME=DIR",
                        help="record a finished run of NAME's command line instead of training it here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not RESULTS.exists():
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(previous_rows(), indent=2))
    adopted = dict(item.split("=", 1) for item in args.from_run)
    names = list(adopted) if adopted else [] if args.render_only else args.datasets.split(",")
    for name in names:
        if name in adopted:
            run_dir = Path(adopted[name])
            cfg, metrics = adopt_run(name, run_dir, args.epochs)
        else:
            cfg, _ = recipe(name, args.epochs)
        tfidf, tfidf_seconds = tfidf_anchor(cfg)
        print(f"{name}: TF-IDF + LR {tfidf:.4f} ({tfidf_seconds:.0f}s)")
        if name not in adopted:
            out = ROOT / "bench" / "out" / "runs"
            result = train_run(cfg, runs_dir=out, run_id=new_run_id(f"bench-{name}"),
                               log=lambda line: print(f"  {line}", flush=True))
            metrics, run_dir = result.metrics, result.run_dir
        test = metrics["test"]["primary"]
        # re-read before writing: other invocations may have added datasets meanwhile
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        results[name] = {"accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "tfidf_accuracy": tfidf,
                         "valid_accuracy": metrics["valid"]["primary"]["accuracy"],
                         "best_epoch": metrics["best_epoch"], "epochs_run": metrics["epochs_run"],
                         "train_seconds": metrics["train_seconds"] + metrics.get("fit_seconds", 0.0),
                         "command": cli_command(cfg), "run_dir": str(run_dir)}
        if cfg.model.ngrams:
            results[name]["ngram_hash"] = cfg.model.ngram_hash
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2))
        print(f"{name}: test accuracy {test['accuracy']:.4f}")
    results = json.loads(RESULTS.read_text())
    markdown = render(results)
    print(markdown)
    if not args.no_write:
        update_section("bench_accuracy", markdown)


if __name__ == "__main__":
    main()
