"""How far can the explanations be trusted? SST-2 test set: IG completeness, deletion flips, latency.

    python bench/bench_explain.py                       # train a model (GloVe 50d, attention pooling)
    python bench/bench_explain.py --run artifacts/runs/X  # explain an existing run instead
    python bench/bench_explain.py --sample 500          # a seeded sample of the test set

For every test sentence and every method (attention, Integrated Gradients at --steps, occlusion):
remove the top-3 tokens and 3 random tokens (20 seeded draws) and count how often the predicted
label flips. IG's completeness error is |sum(attr) - (f(x) - f(baseline))| / |f(x) - f(baseline)|
with f the predicted class's log-odds. Latency: p50 of the full ``Explainer.explain`` call (prediction,
attributions and the deletion test) on a 50-token text, CPU, one thread. Results go to BENCHMARKS.md
between the bench_explain markers.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, require_data, update_section  # noqa: E402

METHODS = ("attention", "ig", "occlusion")


def train_model(folder: Path, epochs: int, seed: int) -> Path:
    from core.models import ModelConfig
    from core.pipeline import DataConfig, RunConfig, train_run
    from core.text import TextConfig
    from core.training import TrainConfig

    cfg = RunConfig(
        data=DataConfig(train=str(folder / "train.csv"), valid=str(folder / "dev.csv"), test=str(folder / "test.csv")),
        # SST-2 is distributed lower-cased and tokenised: whitespace splitting reads it as published
        text=TextConfig(tokenizer="whitespace", max_length=100),
        model=ModelConfig(hidden_dim=64, pooling="attention", dropout=0.3),
        train=TrainConfig(epochs=epochs, lr=3e-3, batch_size=64, warmup_steps=0, seed=seed, device="cpu"),
        pretrained_vectors="glove-6b-50d")
    runs_dir, run_id = ROOT / "bench" / "out" / "runs", f"explain-sst2-{seed}"
    shutil.rmtree(runs_dir / run_id, ignore_errors=True)  # this script's own earlier model
    result = train_run(cfg, runs_dir=runs_dir, run_id=run_id,
                       log=lambda line: print("  " + line, flush=True))
    if result.status != "completed":
        sys.exit(f"training did not complete: {result.status} {result.message}")
    return result.run_dir


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def latency(explainer, text: str, method: str, steps: int, repeats: int) -> float:
    explainer.explain(text, method, n_steps=steps)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        explainer.explain(text, method, n_steps=steps)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="explain this run instead of training one")
    parser.add_argument("--sample", type=int, default=0, help="seeded sample of the test set (0 = all 1,821)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (latency is per thread count)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    folder = require_data("sst2", "train.csv").parent
    import pandas as pd
    import torch

    from core.explain import Explainer
    from core.predict import Predictor

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    run_dir = Path(args.run) if args.run else train_model(folder, args.epochs, args.seed)
    train_seconds = time.perf_counter() - started
    predictor = Predictor.load(run_dir)
    explainer = Explainer(predictor)
    accuracy = (predictor.metadata.get("metrics", {}).get("test") or {}).get("primary", {}).get("accuracy")

    test = pd.read_csv(folder / "test.csv")
    texts = test["text"].astype(str).tolist()
    if args.sample and args.sample < len(texts):
        rng = np.random.default_rng(args.seed)
        texts = [texts[i] for i in sorted(rng.choice(len(texts), args.sample, replace=False))]
    texts = [t for t in texts if not predictor.encoder.encode(t).empty]

    flips = {m: [] for m in METHODS}
    random_flips = {m: [] for m in METHODS}
    drops = {m: [] for m in METHODS}
    random_drops = {m: [] for m in METHODS}
    completeness, seconds = [], {m: [] for m in METHODS}
    started = time.perf_counter()
    for i, text in enumerate(texts):
        for method in METHODS:
            e = explainer.explain(text, method, n_steps=args.steps, deletion_k=args.k, seed=args.seed)
            d = e.diagnostics["deletion"]
            flips[method].append(d["top_flip"])
            random_flips[method].append(d["random_flip_rate"])
            drops[method].append(d["top_drop"])
            random_drops[method].append(d["random_drop"])
            seconds[method].append(e.diagnostics["seconds"])
            if method == "ig":
                completeness.append(e.diagnostics["completeness_error"])
        if (i + 1) % 200 == 0:
            print(f"  {i + 1}/{len(texts)} texts, {time.perf_counter() - started:.0f}s", flush=True)
    explain_seconds = time.perf_counter() - started

    # IG quadrature rules on a sample: is gausslegendre the right default?
    rng = np.random.default_rng(args.seed)
    probe = [texts[i] for i in rng.choice(len(texts), min(200, len(texts)), replace=False)]
    rules = {}
    for rule in ("gausslegendre", "riemann_trapezoid", "riemann_middle"):
        errors = [explainer.explain(t, "ig", n_steps=args.steps, ig_method=rule).diagnostics["completeness_error"]
                  for t in probe]
        rules[rule] = (statistics.mean(errors), percentile(errors, 95), float(np.mean(np.asarray(errors) <= 0.05)))

    # latency on a 50-token text built from test sentences
    words = " ".join(test["text"].astype(str).tolist()[:20]).split()
    text50 = " ".join(words[:50])
    assert len(predictor.encoder.encode(text50).tokens) == 50
    latency_ms = {m: latency(explainer, text50, m, args.steps, 30) for m in METHODS}

    err = np.asarray(completeness)
    lines = [
        f"SST-2 test set: {len(texts)} sentences"
        + (f" (seeded sample, seed {args.seed})" if args.sample else " (all)")
        + (f"; model test accuracy {accuracy:.4f}" if accuracy is not None else "")
        + f"; BiLSTM 64x2, GloVe 6B 50d, attention pooling; {args.steps} IG steps; k = {args.k}.",
        "",
        "| method | top-k flips | random-k flips | ratio | mean p drop, top-k | mean p drop, random-k | latency p50, 50 tokens |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in METHODS:
        top, rand = float(np.mean(flips[m])), float(np.mean(random_flips[m]))
        ratio = f"{top / rand:.1f}x" if rand > 0 else "inf"
        lines.append(f"| {m} | {top:.1%} | {rand:.1%} | {ratio} | {np.mean(drops[m]):.3f} | "
                     f"{np.mean(random_drops[m]):.3f} | {latency_ms[m]:.0f} ms |")
    lines += [
        "",
        f"IG completeness error ({args.steps} steps, gausslegendre, log-odds of the predicted class): "
        f"mean {err.mean():.2e}, p50 {np.median(err):.2e}, p95 {percentile(err, 95):.2e}, "
        f"max {err.max():.2e}; {np.mean(err <= 0.05):.1%} of sentences <= 5%.",
        "",
        f"Quadrature rules on {len(probe)} sentences (mean / p95 / share <= 5%): "
        + "; ".join(f"{rule} {m:.2e} / {p95:.2e} / {share:.1%}" for rule, (m, p95, share) in rules.items()) + ".",
        "",
        f"Latency: the whole `Explainer.explain` call (prediction, attributions, deletion test with 20 random "
        f"draws) on a 50-token text, p50 of 30, CPU, {args.threads} torch thread(s). "
        f"Explaining {len(texts)} sentences x 3 methods took {explain_seconds:.0f}s"
        + ("" if args.run else f"; training took {train_seconds:.0f}s") + ".",
        "",
        "Reproduce: `python bench/bench_explain.py" + (f" --sample {args.sample}" if args.sample else "")
        + (f" --epochs {args.epochs}" if args.epochs != 6 else "") + "`",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        update_section("bench_explain", "## Explanations (attention, Integrated Gradients, occlusion)\n\n" + report)


if __name__ == "__main__":
    main()
