"""Classifiers started from an LSTM pretrained as a language model on unlabelled movie reviews:
IMDB with only 1,000 labelled reviews (``imdb1k``), and SST-2.

    python bench/bench_pretrain.py --threads 1 --datasets imdb1k-lm,imdb1k,sst2-lm,sst2 --size 3

First makes the encoder if bench/out/encoders/imdb-lm is missing: ``python -m core pretrain`` on
the texts of IMDB's training file (its labels are never read) with the command recorded below;
for a ``-lmft`` recipe also that encoder adapted to the recipe's training texts
(bench/out/encoders/imdb-lm-<dataset>).
Then each ``<name>`` is bench_accuracy's recipe (``-lm``: plus ``--init-from`` that encoder) with
seeds 13, 14, ...; members are kept in bench/out/ens/ and reused (the plain ``sst2`` members
are the seed-ensemble benchmark's), results go to bench/out/pretrain.json and the
BENCHMARKS.md section is rebuilt from them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_accuracy import (LM_ADAPTED_SUFFIX, LM_SOURCE, TARGETS, adapted_encoder, base_name,  # noqa: E402
                                  cli_command, parent_name, recipe)
from bench.bench_ensemble import measure_and_record  # noqa: E402
from bench.common import DATA, ROOT, require_data, update_section  # noqa: E402

RESULTS = ROOT / "bench" / "out" / "pretrain.json"
SINGLES = ROOT / "bench" / "out" / "pretrain-single.json"  # single runs: {name: {valid, test, train_seconds}}
ENCODER_FLAGS = "--pretrained-vectors glove-6b-50d --hidden-dim 256 --epochs 3 --lr 0.004"
ADAPT_FLAGS = "--epochs 8 --lr 0.001 --warmup-steps 200"  # on a dataset's training texts (a -lmft recipe)


def encoder_command() -> str:
    texts = require_data("imdb", "train.csv.gz")
    source = ROOT / LM_SOURCE
    return (f"python -m core pretrain --texts {texts} {ENCODER_FLAGS} --out {source.parent.relative_to(ROOT)} "
            f"--run-id {source.name}")


def ensure_encoder() -> dict:
    source = ROOT / LM_SOURCE
    if not (source / "model.safetensors").is_file():
        from core.cli import main as cli
        print(f"making the encoder: {encoder_command()}", flush=True)
        if cli(shlex.split(encoder_command())[3:]) != 0:
            raise SystemExit("pretraining failed; see above")
    metrics = json.loads((source / "metrics.json").read_text())
    history = [json.loads(line) for line in (source / "history.jsonl").read_text().splitlines() if line.strip()]
    config = json.loads((source / "config.json").read_text())
    return {**metrics, "tokens_per_s": history[-1]["tokens_per_s"], "vocab_size": config["model"]["vocab_size"],
            "output_vocab": config["run"]["pretrain"]["output_vocab"], "coverage": config["embedding_coverage"]}


def adapt_command(dataset: str) -> str:
    texts = recipe(dataset, None)[1]["train"]
    target = Path(adapted_encoder(dataset))
    return (f"python -m core pretrain --texts {texts} --init-from {LM_SOURCE} {ADAPT_FLAGS} --out {target.parent} "
            f"--run-id {target.name}")


def ensure_adapted(dataset: str) -> dict:
    """The encoder after more language-model training on ``dataset``'s training texts (labels unread)."""
    target = ROOT / adapted_encoder(dataset)
    if not (target / "model.safetensors").is_file():
        from core.cli import main as cli
        print(f"adapting the encoder: {adapt_command(dataset)}", flush=True)
        if cli(shlex.split(adapt_command(dataset))[3:]) != 0:
            raise SystemExit("adapting the encoder failed; see above")
    history = [json.loads(line) for line in (target / "history.jsonl").read_text().splitlines() if line.strip()]
    return {"dataset": dataset, **json.loads((target / "metrics.json").read_text()),
            "first_perplexity": history[0]["valid_perplexity"]}


def render(results: dict, encoder: dict, adapted: list[dict]) -> str:
    rows = []
    for name, r in results.items():
        member, valid = np.array(r["member_test"]) * 100, np.array(r["member_valid"]) * 100
        target = TARGETS.get(base_name(name))
        at_target = "" if target is None else f"{sum(a >= target for a in r['member_test'])} of {r['size']}"
        verdict = "" if target is None else (
            f">= {target:.0%} (members' mean: {'met' if member.mean() >= target * 100 else 'not met'}; "
            f"ensemble: {'met' if r['ensemble_test'] >= target else 'not met'})")
        rows.append(f"| {name} | {r['size']} | {valid.mean():.2f} ± {valid.std(ddof=1):.2f} "
                    f"| {member.mean():.2f} ± {member.std(ddof=1):.2f} ({member.min():.2f} to {member.max():.2f}) "
                    f"| {at_target} | {r['valid_by_size'][-1]:.2%} | **{r['ensemble_test']:.2%}** | {verdict} "
                    f"| {sum(s or 0 for s in r['member_train_seconds']) / 60:.0f} min |")
    pairs = []
    for name in results:
        plain = parent_name(name)[0] if name.endswith(("-lm", LM_ADAPTED_SUFFIX)) else None
        if plain in results:
            a, b = results[plain], results[name]
            pairs.append(f"{plain} -> {name}: mean member validation {np.mean(a['member_valid']):.2%} -> "
                         f"{np.mean(b['member_valid']):.2%}, test {np.mean(a['member_test']):.2%} -> "
                         f"{np.mean(b['member_test']):.2%}, ensemble {a['ensemble_test']:.2%} -> "
                         f"{b['ensemble_test']:.2%}")
    singles = json.loads(SINGLES.read_text()) if SINGLES.exists() else {}
    singles = {name: r for name, r in singles.items() if name not in results}  # measured with more seeds since
    single_lines = "\n".join(f"- {name} (seed 13 only): validation {r['valid']:.2%}, test **{r['test']:.2%}**, "
                              f"{r['train_seconds'] / 60:.0f} min" for name, r in singles.items())
    commands = "\n".join(f"- {name}: `{cli_command(recipe(name, None)[0])}` (seeds {r['seeds'][0]}.."
                         f"{r['seeds'][-1]})" for name, r in results.items())
    commands += "".join(f"\n- {name}: `{cli_command(recipe(name, None)[0])}`" for name in singles)
    command = encoder_command().replace(str(DATA), "../shared/data")
    commands = commands.replace(str(ROOT) + "/", "")
    adapted_lines = "\n".join(
        f"- {a['dataset']}: `{adapt_command(a['dataset']).replace(str(DATA), '../shared/data')}`: "
        f"{a['train_texts']:,} texts ({a['train_tokens']:,} tokens), held-out perplexity on them "
        f"{a['first_perplexity']:.0f} after the first pass (the new softmax alone for most of it) -> "
        f"{a['valid_perplexity']:.0f}, {a['train_seconds'] / 60:.0f} min" for a in adapted)
    return f"""## Language-model pretraining (issue: core engine)

Commands: {'; '.join(f"`python bench/bench_pretrain.py --threads 1 --datasets {','.join(n for n in results if results[n]['size'] == size)} --size {size}`" for size in sorted({r['size'] for r in results.values()}, reverse=True))}
(results in `bench/out/pretrain.json`; members in `bench/out/ens/`).

The encoder: `{command}`. It reads the 25,000 texts of IMDB's training file and never its labels:
the forward LSTM predicts each next token, the backward LSTM each previous one, over the
{encoder['output_vocab']:,} most frequent of its {encoder['vocab_size']:,} words (adaptive softmax), with the GloVe
vectors frozen. {encoder['epochs_run']} pass(es) over {encoder['train_tokens']:,} tokens in {encoder['train_seconds'] / 60:.0f} minutes
({encoder['tokens_per_s']:,.0f} tokens/s on one thread), held-out perplexity {encoder['valid_perplexity']:.0f}.
A `-lm` recipe is the plain recipe plus `--init-from` that encoder: its LSTM starts from the
language model instead of random weights; attention and head start fresh.

A `-lmft` recipe starts from that encoder after more language-model training on the recipe's own
training texts, labels unread (`pretrain --init-from`, domain adaptation as in ULMFiT; this
encoder was saved without its softmax, so a new one learns alone for the first 200 batches while
the LSTM waits):
{adapted_lines or '- none made yet'}

Two more passes over IMDB from that encoder (`pretrain --init-from bench/out/encoders/imdb-lm
--epochs 2 --lr 0.002 --warmup-steps 200`, 31 minutes) ended at held-out perplexity 243 (269 after
the first, with its new softmax): no better than the 242 it started from, so no classifier was
trained from it. The encoder had been saved without its softmax; encoders saved now keep it
(`lm_head.safetensors`), so going on from them starts where they stopped.

`imdb1k` is the case pretraining is for: few labels, many unlabelled texts. 1,000 labelled
training reviews (500 per class, drawn with seed 13; 800 train, 200 validation), tested on 5,000
test reviews (2,500 per class; the encoder never saw test texts): hidden 256, attention, batch
32, up to 15 epochs, patience 4. `sst2` is the SST-2 recipe of the accuracy section; there the
encoder has seen unlabelled text from outside SST (as the GloVe vectors have) and no labels but
SST's own.

| recipe | members | member validation, % (mean ± sd) | member test, % (mean ± sd, range) | members at the target | ensemble validation | ensemble test | target | training time (CPU) |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

{"Measured with one seed only (a run of the command below):" + chr(10) + single_lines if single_lines else ""}

Plain -> pretrained, the same seeds: {'; '.join(pairs) or 'not measured yet'}.

{commands}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="imdb1k-lm,imdb1k,sst2-lm,sst2", help="recipes, or 'none' for the encoder only")
    parser.add_argument("--size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    encoder = ensure_encoder()
    names = [n for n in args.datasets.split(",") if n and n != "none"]
    for name in names:
        if name.endswith(LM_ADAPTED_SUFFIX):
            ensure_adapted(base_name(name))

    for name in names:
        measure_and_record(name, args.size, RESULTS)
    if not RESULTS.exists():
        return
    results = json.loads(RESULTS.read_text())
    adapted = [ensure_adapted(base_name(n)) for n in results if n.endswith(LM_ADAPTED_SUFFIX)]
    markdown = render({n: results[n] for n in sorted(results, key=lambda n: (base_name(n), n.count("-"), n))},
                      encoder, adapted)
    print(markdown)
    if not args.no_write:
        update_section("bench_pretrain", markdown)


if __name__ == "__main__":
    main()
