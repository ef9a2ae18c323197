"""``python -m core ...``: a thin command line over the library.

A user error (missing file, unknown column, invalid value) exits with code 2 and one line on
stderr naming the problem and the fix. Defaults come from the config dataclasses.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import fields
from pathlib import Path

from core.data import DataError
from core.embeddings import VectorsError
from core.runs import DEFAULT_RUNS_DIR, RunError

USER_ERRORS = (DataError, VectorsError, RunError, ValueError, FileNotFoundError)


class UserError(Exception):
    """A problem with what the user asked for; printed as one line, exit code 2."""


# flag -> (config section, field, help). Types and defaults come from the dataclasses.
TRAIN_FLAGS = [
    ("--epochs", "train", "epochs", "maximum training epochs"),
    ("--batch-size", "train", "batch_size", "examples per batch"),
    ("--embedding-dim", "model", "embedding_dim", "word vector size (follows --pretrained-vectors when given)"),
    ("--hidden-dim", "model", "hidden_dim", "LSTM hidden units per direction"),
    ("--num-layers", "model", "num_layers", "stacked LSTM layers"),
    ("--bidirectional", "model", "bidirectional", "read the text in both directions"),
    ("--dropout", "model", "dropout", "dropout on embeddings, between layers and before the head"),
    ("--pooling", "model", "pooling", "how token states become one vector: last, mean, max, attention"),
    ("--packed", "model", "packed", "pack sequences so the LSTM never reads padding"),
    ("--pack-min-padding", "model", "pack_min_padding",
     "training batches with less padding than this share run unpacked (faster on CPU); 0 packs all"),
    ("--layer-norm", "model", "layer_norm", "LayerNorm after each LSTM layer"),
    ("--residual", "model", "residual", "residual connections between stacked LSTM layers"),
    ("--hierarchical", "model", "hierarchical", "hierarchical LSTM for long documents: words -> sentences -> document"),
    ("--chunk-length", "model", "chunk_length", "read texts whole in segments of this many tokens, "
     "truncated BPTT (0 = off; max_length is then ignored)"),
    ("--ngrams", "model", "ngrams", "add a linear bag-of-n-grams model beside the LSTM, its scores added to the "
     "logits: 1 = words, 2 = words + bigrams, 3 = + trigrams (0 = off)"),
    ("--ngram-buckets", "model", "ngram_buckets", "hash table rows shared by the n-grams of 2+ words"),
    ("--ngram-fit", "train", "ngram_fit", "how the n-gram part learns: joint (with the LSTM) or separate (the LSTM "
     "trains alone, then the n-grams are fitted as a logistic regression and mixed in with the weight that "
     "scores best on validation)"),
    ("--pretrained-vectors", None, "pretrained_vectors", "glove-6b-50d, or a GloVe/word2vec/fastText .txt/.vec(.gz) path"),
    ("--init-from", None, "init_from", "start from a finished run (fine-tuning): its LSTM, attention and the "
     "vectors of shared words, its heads too when the labels match; or from an encoder made by `python -m core "
     "pretrain` (its LSTM and word vectors); same architecture needed"),
    ("--freeze-embeddings", "train", "freeze_embeddings", "keep the pretrained vectors fixed"),
    ("--max-vocab-size", "text", "max_vocab_size", "most frequent tokens kept"),
    ("--min-freq", "text", "min_freq", "tokens seen fewer times become <unk>"),
    ("--max-length", "text", "max_length", "tokens kept per text (longer texts are truncated)"),
    ("--truncation", "text", "truncation", "which tokens of a longer text are kept: head, tail, or head+tail "
     "(first quarter + last three quarters)"),
    ("--extend-vocab", "text", "extend_vocab", "also add this many of the pretrained vectors' most frequent words "
     "to the vocabulary, so words unseen in training keep their vectors (0 = off; e.g. 100000)"),
    ("--tokenizer", "text", "tokenizer", "en, zh (jieba), xx (multilingual) or whitespace"),
    ("--lowercase", "text", "lowercase", "lowercase text before tokenising"),
    ("--optimizer", "train", "optimizer", "adam or adamw"),
    ("--lr", "train", "lr", "peak learning rate"),
    ("--weight-decay", "train", "weight_decay", "weight decay"),
    ("--label-smoothing", "train", "label_smoothing", "label smoothing (0 = off)"),
    ("--warmup-steps", "train", "warmup_steps", "linear warmup batches"),
    ("--plateau-factor", "train", "plateau_factor", "ReduceLROnPlateau factor"),
    ("--plateau-patience", "train", "plateau_patience", "ReduceLROnPlateau patience (epochs)"),
    ("--clip-grad-norm", "train", "clip_grad_norm", "gradient-norm clipping (0 = off)"),
    ("--patience", "train", "patience", "early stopping patience (epochs)"),
    ("--select-metric", "train", "select_metric", "validation metric that picks the best epoch: loss, accuracy, macro_f1"),
    ("--class-weights", "train", "class_weights", "none, balanced, or label=weight pairs like pos=2,neg=1"),
    ("--seed", "train", "seed", "random seed (same seed, same CPU run, same weights)"),
    ("--device", "train", "device", "auto, cpu or cuda"),
    ("--amp", "train", "amp", "mixed precision: off, auto, fp16 or bf16 (--amp alone means auto)"),
    ("--fgm-epsilon", "train", "fgm_epsilon", "FGM adversarial training step on the embeddings (0 = off)"),
    ("--ema-decay", "train", "ema_decay", "average the weights over steps, e.g. 0.99 (0 = off); the average is validated and saved"),
    ("--dropout-schedule", "train", "dropout_schedule", "START:END dropout over epochs, e.g. 0.3:0.5"),
    ("--task-weights", "train", "task_weights", "loss weights per label column, e.g. 1,0.5"),
    ("--ensemble", "train", "ensemble", "train N models (seeds --seed, --seed+1, ...) on one split and save an "
     "ensemble run that averages their probabilities (1 = one model)"),
]


# ``python -m core pretrain``: (flag, section of EncoderRunConfig, field, help)
PRETRAIN_FLAGS = [
    ("--text-col", "pretrain", "text_col", "text column of the --texts files (other columns are ignored)"),
    ("--max-texts", "pretrain", "max_texts", "use at most this many texts, drawn at random with --seed (0 = all)"),
    ("--valid-fraction", "pretrain", "valid_fraction", "share of the texts held out to report perplexity"),
    ("--epochs", "pretrain", "epochs", "passes over the texts"),
    ("--max-steps", "pretrain", "max_steps", "stop after this many batches (0 = no limit)"),
    ("--batch-size", "pretrain", "batch_size", "texts per batch"),
    ("--lr", "pretrain", "lr", "peak Adam learning rate (after warmup it decays linearly to a tenth)"),
    ("--warmup-steps", "pretrain", "warmup_steps", "linear warmup batches"),
    ("--clip-grad-norm", "pretrain", "clip_grad_norm", "gradient-norm clipping"),
    ("--output-vocab", "pretrain", "output_vocab", "words the language model predicts; rarer ones as <unk>"),
    ("--freeze-embeddings", "pretrain", "freeze_embeddings", "keep the pretrained vectors fixed"),
    ("--init-from", "pretrain", "init_from", "go on from this encoder (e.g. on the texts of your task); its "
     "vocabulary, tokeniser and architecture are kept, so the text and model flags below do not apply"),
    ("--seed", "pretrain", "seed", "random seed"),
    ("--device", "pretrain", "device", "auto, cpu or cuda"),
    ("--pretrained-vectors", None, "pretrained_vectors", "glove-6b-50d, or a GloVe/word2vec/fastText .txt/.vec(.gz) path"),
    ("--embedding-dim", "model", "embedding_dim", "word vector size (follows --pretrained-vectors when given)"),
    ("--hidden-dim", "model", "hidden_dim", "LSTM hidden units per direction (the classifier must use the same)"),
    ("--num-layers", "model", "num_layers", "stacked LSTM layers (the classifier must use the same)"),
    ("--bidirectional", "model", "bidirectional", "a backward language model too (the classifier must match)"),
    ("--dropout", "model", "dropout", "dropout on embeddings, between layers and before the softmax"),
    ("--layer-norm", "model", "layer_norm", "LayerNorm after each LSTM layer"),
    ("--residual", "model", "residual", "residual connections between stacked LSTM layers"),
    ("--tokenizer", "text", "tokenizer", "en, zh (jieba), xx (multilingual) or whitespace"),
    ("--lowercase", "text", "lowercase", "lowercase text before tokenising"),
    ("--max-vocab-size", "text", "max_vocab_size", "most frequent tokens kept (their vectors travel to the classifier)"),
    ("--min-freq", "text", "min_freq", "tokens seen fewer times become <unk>"),
    ("--max-length", "text", "max_length", "tokens kept per text"),
]


def _defaults():
    from core.pipeline import RunConfig
    return RunConfig()


def _field_type(section_obj, name):
    return {f.name: f for f in fields(section_obj)}[name]


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    _add_flags(parser, TRAIN_FLAGS, _defaults())


def _add_flags(parser: argparse.ArgumentParser, table, defaults) -> None:
    group = parser.add_argument_group("hyperparameters (defaults from the config dataclasses)")
    for flag, section, name, help_text in table:
        holder = defaults if section is None else getattr(defaults, section)
        default = getattr(holder, name)
        kwargs = {"dest": f"{section or 'run'}.{name}", "default": None,
                  "help": f"{help_text} (default: {default!r})"}
        if isinstance(default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif flag == "--amp":
            group.add_argument(flag, nargs="?", const="auto", type=str, metavar="MODE", **kwargs)
        else:
            group.add_argument(flag, type=type(default), metavar=type(default).__name__.upper(), **kwargs)


def config_from_args(args: argparse.Namespace):
    from core.pipeline import RunConfig
    cfg = RunConfig.load(args.config) if args.config else RunConfig()
    for key, value in vars(args).items():
        if "." not in key or value is None:
            continue
        section, name = key.split(".", 1)
        setattr(cfg if section == "run" else getattr(cfg, section), name, value)
    d = cfg.data
    for attr, value in (("train", args.train), ("valid", args.valid), ("test", args.test),
                        ("dataset", args.dataset), ("text_col", args.text_col), ("label_col", args.label_col),
                        ("valid_fraction", args.valid_fraction), ("test_fraction", args.test_fraction),
                        ("split_seed", args.split_seed)):
        if value is not None:
            setattr(d, attr, value)
    for flag, value in (("--train", d.train), ("--valid", d.valid), ("--test", d.test)):
        if value and not Path(value).is_file():
            raise UserError(f"{flag} {value}: file not found. Check the path (it is relative to "
                            f"{Path.cwd()}).")
    if not d.train and not d.dataset:
        raise UserError("No training data: give --train PATH (CSV/TSV/JSONL) or --dataset chinese-reviews.")
    cfg.validate()
    return cfg


def cmd_train(args) -> int:
    from core.pipeline import train_run
    cfg = config_from_args(args)
    if cfg.data.dataset == "chinese-reviews" and args.__dict__.get("text.tokenizer") is None \
            and not args.config:
        cfg.text.tokenizer = "zh"
    distributed = None
    if args.distributed_env:
        from core.distributed import from_environment
        distributed = from_environment(cfg.train.device)
    if cfg.train.ensemble > 1 and (args.stream or args.resume):
        raise UserError("--ensemble trains several ordinary runs one after another: it cannot be combined "
                        "with --stream or --resume (resume a member with --run-id <run_id>-m2 --resume).")
    if args.stream:
        if args.resume:
            raise UserError("--resume is not available with --stream: start a new run.")
        from core.streaming import train_streaming
        result = train_streaming(cfg, runs_dir=args.out, run_id=args.run_id,
                                 log=lambda line: print(line, flush=True), distributed=distributed)
    else:
        result = train_run(cfg, runs_dir=args.out, run_id=args.run_id, resume=args.resume,
                           log=lambda line: print(line, flush=True), distributed=distributed)
    if distributed is not None:
        distributed.close()
        if distributed.rank != 0:
            return 0
    print(result.run_dir)
    return 0 if result.status in ("completed", "cancelled") else 1


def cmd_ensemble(args) -> int:
    from core.ensemble import combine_runs
    for run in args.runs:
        if not Path(run).is_dir():
            raise UserError(f"--runs {run}: run directory not found. `python -m core runs` lists the runs.")
    result = combine_runs(args.runs, runs_dir=args.out, run_id=args.run_id, test=args.test,
                          log=lambda line: print(line, flush=True))
    print(result.run_dir)
    return 0


def cmd_fit_ngrams(args) -> int:
    from core.wide import fit_ngrams_run
    if not Path(args.run).is_dir():
        raise UserError(f"--run {args.run}: run directory not found. `python -m core runs` lists the runs.")
    result = fit_ngrams_run(args.run, args.ngrams, args.ngram_buckets, runs_dir=args.out, run_id=args.run_id,
                            log=lambda line: print(line, flush=True))
    print(result.run_dir)
    return 0


def cmd_pretrain(args) -> int:
    from core.pretrain import EncoderRunConfig, pretrain
    cfg = EncoderRunConfig()
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            setattr(cfg if section == "run" else getattr(cfg, section), name, value)
    cfg.pretrain.texts = list(args.texts)
    result = pretrain(cfg, out_dir=args.out, run_id=args.run_id, log=lambda line: print(line, flush=True))
    print(result.run_dir)
    return 0 if result.status in ("completed", "cancelled") else 1


def _load_predictor(args):
    from core.predict import Predictor
    if getattr(args, "bundle", None):
        from core.export import load_bundle
        return load_bundle(args.bundle)
    if getattr(args, "onnx", None):
        from core.export import OnnxPredictor
        return OnnxPredictor.load(args.onnx)
    if not args.run:
        raise UserError("Give --run DIR (a folder printed by `python -m core train`), --bundle PATH or --onnx PATH.")
    return Predictor.load(args.run)


def cmd_evaluate(args) -> int:
    from core.data import load_table
    from core.predict import Predictor
    predictor = Predictor.load(args.run)
    config = predictor.metadata.get("config", {})
    text_col = args.text_col or config.get("text_col", "text")
    label_cols = args.label_col or ",".join(predictor.label_columns)
    table, _ = load_table(args.data, text_col, label_cols, held_out=True)
    result = predictor.evaluate(table)
    primary = result["primary"]
    summary = {"accuracy": primary["accuracy"], "macro_f1": primary["macro_f1"], "auc": primary["auc"],
               "labels": primary["labels"], "confusion_matrix": primary["confusion_matrix"], "n": primary["n"]}
    if len(result["tasks"]) > 1:
        summary["tasks"] = {col: {k: t[k] for k in ("accuracy", "macro_f1", "auc", "labels", "confusion_matrix", "n")}
                            for col, t in zip(predictor.label_columns, result["tasks"].values())}
    if result["skipped_unknown_labels"]:
        print(f"note: {result['skipped_unknown_labels']} rows skipped: labels the model does not know",
              file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
        return 0
    auc = "n/a" if summary["auc"] is None else f"{summary['auc']:.4f}"
    print(f"n={summary['n']} accuracy={summary['accuracy']:.4f} macro_f1={summary['macro_f1']:.4f} auc={auc}")
    labels = summary["labels"]
    width = max(len(x) for x in labels) + 2
    print("confusion matrix (rows = true, columns = predicted):")
    print(" " * width + "".join(f"{x:>{width}}" for x in labels))
    for label, row in zip(labels, summary["confusion_matrix"]):
        print(f"{label:>{width}}" + "".join(f"{v:>{width}}" for v in row))
    for label, m in primary["per_class"].items():
        print(f"  {label}: precision={m['precision']:.4f} recall={m['recall']:.4f} f1={m['f1']:.4f} support={m['support']}")
    return 0


def cmd_predict(args) -> int:
    predictor = _load_predictor(args)
    if args.data:
        from core.data import read_table
        frame, _ = read_table(args.data)
        text_col = args.text_col or "text"
        if text_col not in frame.columns:
            raise UserError(f"Column {text_col!r} not found in {args.data}. Available columns: "
                            f"{', '.join(map(str, frame.columns))}. Choose it with --text-col.")
        texts = frame[text_col].fillna("").astype(str).tolist()
        predictions = predictor.predict(texts)
        if not args.out:
            raise UserError("--data needs --out PATH.csv for the predictions.")
        labels = predictor.labels[0]
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([text_col, "label", "confidence"] + [f"p_{label}" for label in labels])
            for p in predictions:
                writer.writerow([p.text, p.label, max(p.probs.values())] + [p.probs[label] for label in labels])
        print(f"{len(predictions)} predictions written to {out}")
        return 0
    if not args.texts:
        raise UserError("Give one or more texts to classify, or --data PATH --out PATH.csv.")
    for p in predictor.predict(args.texts):
        if args.json:
            print(json.dumps(p.to_dict(), ensure_ascii=False))
        else:
            probs = ", ".join(f"{k}={v:.3f}" for k, v in p.probs.items())
            print(f"{p.label}\t{probs}\t{p.text}")
    return 0


def cmd_runs(args) -> int:
    from core.runs import list_runs
    runs = list_runs(args.dir)
    if args.json:
        print(json.dumps([{"run_id": r.run_id, "path": str(r.path), "status": r.status, "message": r.message,
                           "test_accuracy": ((r.metrics.get("test") or {}).get("primary") or {}).get("accuracy")}
                          for r in runs]))
        return 0
    if not runs:
        print(f"no runs in {args.dir}")
    for r in runs:
        acc = ((r.metrics.get("test") or {}).get("primary") or {}).get("accuracy")
        print(f"{r.path}\t{r.status}\t{'' if acc is None else f'test_accuracy={acc:.4f}'}")
    return 0


def cmd_explain(args) -> int:
    from core.explain import Explainer
    from core.predict import Predictor
    text = " ".join(args.text)
    if not text.strip():
        raise UserError("Give the text to explain, e.g. python -m core explain --run DIR \"a gripping film\".")
    explainer = Explainer(Predictor.load(args.run))
    explanation = explainer.explain(text, args.method, args.target, n_steps=args.steps)
    if args.json:
        from core.render import to_json
        print(to_json(explanation, indent=None))
        return 0
    probs = ", ".join(f"{k}={v:.3f}" for k, v in explanation.probs.items())
    print(f"predicted {explanation.label} ({probs}); {explanation.method} scores for {explanation.target}")
    width = max(len(t) for t in explanation.tokens)
    for token, score in zip(explanation.tokens, explanation.scores):
        print(f"  {token:<{width}}  {score:+.4f}")
    if explanation.truncated:
        print(f"note: {explanation.truncated} tokens beyond max_length were not read by the model")
    if explanation.delta is not None:
        print(f"convergence delta {explanation.delta:.2e} "
              f"(completeness error {explanation.diagnostics['completeness_error']:.2%})")
    return 0


def cmd_export(args) -> int:
    from core.export import FORMATS, export_run, format_parity
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UserError(f"--format {args.format!r}: choose one or more of {', '.join(FORMATS)} (comma-separated).")
    out_dir, names = args.out, None
    if args.out and len(formats) == 1 and Path(args.out).suffix:
        # one format and a file name: write exactly there; parity.json goes beside it
        out_dir, names = str(Path(args.out).parent), {formats[0]: Path(args.out).name}
    if not Path(args.run).is_dir():
        raise UserError(f"--run {args.run}: run directory not found. `python -m core runs` lists the runs.")
    result = export_run(args.run, formats, out_dir, names=names, parity=not args.no_parity,
                        threads=args.threads, log=lambda line: print(line, file=sys.stderr, flush=True))
    if result.parity:
        print(format_parity(result.parity))
        print(f"parity report: {result.parity_path}")
    for fmt in formats:
        print(result.paths[fmt])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="LSTM text classification: train, "
                                     "evaluate, predict from the command line.")
    sub = parser.add_subparsers(dest="command", required=True)

    # no ArgumentDefaultsHelpFormatter: every help text names its own default (flags default to None)
    train = sub.add_parser("train", help="train a model and save it as a run")
    train.add_argument("--train", help="training data: CSV, TSV or JSONL (optionally .gz)")
    train.add_argument("--valid", help="validation data (default: carved from --train)")
    train.add_argument("--test", help="test data (default: carved from --train)")
    train.add_argument("--dataset", help="built-in dataset instead of files: chinese-reviews (offline), imdb, sst2")
    train.add_argument("--text-col", default=None, help="text column (default: 'text')")
    train.add_argument("--label-col", default=None,
                       help="label column; several comma-separated columns train one head each (default: 'label')")
    train.add_argument("--valid-fraction", type=float, default=None, help="share of --train used for validation (default: 0.1)")
    train.add_argument("--test-fraction", type=float, default=None, help="share of --train used for testing (default: 0.1)")
    train.add_argument("--split-seed", type=int, default=None,
                       help="seed of the carved split; -1 = --seed (default: -1). Fix it to train several seeds "
                            "on one split, e.g. ensemble members")
    train.add_argument("--config", help="JSON config file with sections data, text, model, train; flags override it")
    train.add_argument("--out", default=str(DEFAULT_RUNS_DIR), help="folder that holds run directories (default: %(default)s)")
    train.add_argument("--run-id", default=None, help="name of the run directory (default: generated)")
    train.add_argument("--resume", action="store_true", help="continue the run --run-id from its last checkpoint")
    train.add_argument("--stream", action="store_true",
                       help="read --train in chunks into memory-mapped token ids (for files larger than memory)")
    train.add_argument("--distributed-env", action="store_true", default=_under_torchrun(),
                       help=argparse.SUPPRESS)
    add_train_flags(train)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="metrics of a run on a labelled file")
    evaluate.add_argument("--run", required=True, help="run directory")
    evaluate.add_argument("--data", required=True, help="labelled CSV/TSV/JSONL")
    evaluate.add_argument("--text-col", default=None, help="text column (default: the run's)")
    evaluate.add_argument("--label-col", default=None, help="label column(s) (default: the run's)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser("predict", help="classify texts")
    predict.add_argument("--run", help="run directory")
    predict.add_argument("--bundle", help="exported bundle (.zip) instead of a run")
    predict.add_argument("--onnx", help="exported ONNX model (with its .json sidecar) instead of a run")
    predict.add_argument("--data", help="CSV/TSV/JSONL of texts to classify")
    predict.add_argument("--text-col", default=None, help="text column in --data (default: 'text')")
    predict.add_argument("--out", help="where --data predictions go (CSV)")
    predict.add_argument("--json", action="store_true", help="one JSON object per text per line")
    predict.add_argument("texts", nargs="*", help="texts to classify")
    predict.set_defaults(func=cmd_predict)

    from core.search import add_search_parser
    add_search_parser(sub)

    ensemble = sub.add_parser("ensemble", help="combine finished runs into one run that averages their probabilities")
    ensemble.add_argument("--runs", nargs="+", required=True, metavar="DIR",
                          help="two or more run directories with the same tokenizer settings and labels")
    ensemble.add_argument("--test", default=None,
                          help="labelled file to evaluate on (default: the members' test.csv when they share it)")
    ensemble.add_argument("--out", default=str(DEFAULT_RUNS_DIR), help="folder for the new run (default: %(default)s)")
    ensemble.add_argument("--run-id", default=None, help="name of the new run directory (default: generated)")
    ensemble.set_defaults(func=cmd_ensemble)

    fit_ngrams = sub.add_parser(
        "fit-ngrams", help="add a fitted n-gram part to a finished run without training its LSTM again "
        "(the model that --ngrams N --ngram-fit separate trains)")
    fit_ngrams.add_argument("--run", required=True, metavar="DIR", help="a finished run trained without --ngrams")
    fit_ngrams.add_argument("--ngrams", type=int, default=3, help="1 = words, 2 = + bigrams, 3 = + trigrams "
                            "(default: %(default)s)")
    fit_ngrams.add_argument("--ngram-buckets", type=int, default=1_000_000,
                            help="hash table rows shared by the n-grams of 2+ words (default: %(default)s)")
    fit_ngrams.add_argument("--out", default=str(DEFAULT_RUNS_DIR), help="folder for the new run (default: %(default)s)")
    fit_ngrams.add_argument("--run-id", default=None, help="name of the new run directory (default: generated)")
    fit_ngrams.set_defaults(func=cmd_fit_ngrams)

    from core.pretrain import DEFAULT_ENCODERS_DIR, EncoderRunConfig
    pre = sub.add_parser(
        "pretrain", help="pretrain an LSTM encoder as a language model on unlabelled texts; start classifiers "
        "from it with train --init-from DIR")
    pre.add_argument("--texts", nargs="+", required=True, metavar="PATH",
                     help="CSV/TSV/JSONL files (optionally .gz) with a text column; labels are not read")
    pre.add_argument("--out", default=str(DEFAULT_ENCODERS_DIR), help="folder for the encoder (default: %(default)s)")
    pre.add_argument("--run-id", default=None, help="name of the encoder directory (default: generated)")
    _add_flags(pre, PRETRAIN_FLAGS, EncoderRunConfig())
    pre.set_defaults(func=cmd_pretrain)

    runs = sub.add_parser("runs", help="list saved runs")
    runs.add_argument("--dir", default=str(DEFAULT_RUNS_DIR))
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=cmd_runs)

    explain = sub.add_parser("explain", help="which tokens drove a prediction (attention, Integrated Gradients, occlusion)")
    explain.add_argument("--run", required=True, help="run directory")
    explain.add_argument("--method", choices=("ig", "attention", "occlusion"), default="ig",
                         help="ig: Integrated Gradients; attention: the attention weights (attention pooling only); "
                              "occlusion: replace each token by <pad> (default: ig)")
    explain.add_argument("--target", default=None, help="class to explain (default: the predicted class)")
    explain.add_argument("--steps", type=int, default=50, help="Integrated Gradients steps (default: 50)")
    explain.add_argument("--json", action="store_true", help="print one JSON object")
    explain.add_argument("text", nargs="+", help="the text to explain (several words are joined with spaces)")
    explain.set_defaults(func=cmd_explain)

    export = sub.add_parser("export", help="export a run as a bundle, int8 weights or ONNX, with a parity report")
    export.add_argument("--run", required=True, help="run directory")
    export.add_argument("--format", default="bundle",
                        help="bundle, int8, onnx or onnx-int8; several comma-separated (default: bundle)")
    export.add_argument("--out", default=None,
                        help="output file (one format) or folder (default: RUN/export); parity.json goes beside it")
    export.add_argument("--threads", type=int, default=None,
                        help="CPU threads for the latency figures (default: torch's default)")
    export.add_argument("--no-parity", action="store_true", help="skip the fp32/int8/ONNX comparison")
    export.set_defaults(func=cmd_export)
    return parser


def _under_torchrun() -> bool:
    import os
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError):
        text = f"missing key {text}"
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UserError, *USER_ERRORS) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
