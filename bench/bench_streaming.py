"""Streaming ingestion of a generated 1,000,000-row CSV, then one training epoch over it.

    python bench/bench_streaming.py [--rows 1000000] [--tokenizer en] [--epochs 1]

The CSV is generated (Zipf-distributed words from a 20,000-word vocabulary, 4-40 words per row,
two classes signalled by cue words with 10% label noise) into a temporary folder. A child process
then runs what ``python -m core train --train BIG.csv --stream --epochs 1 ...`` runs
(``core.streaming.train_streaming``) and reports the ingestion time, the peak RSS when ingestion
ends and at the end of training (``resource.getrusage``), and training throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, update_section  # noqa: E402

CHILD = textwrap.dedent("""
    import json, resource, sys, threading, time
    from core.pipeline import RunConfig
    from core.streaming import train_streaming
    from core.training import AfterBatch

    csv_path, runs_dir, tokenizer, epochs, max_steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    peak_mb = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    marks = {"start": time.perf_counter(), "start_rss_mb": peak_mb()}
    def log(line):
        print(line, flush=True)
        if line.startswith("streamed ") and " into " in line:
            marks["ingested"] = time.perf_counter()
            marks["ingest_rss_mb"] = peak_mb()
    cfg = RunConfig.from_dict({
        "data": {"train": csv_path},
        "text": {"tokenizer": tokenizer, "max_length": 64},
        "model": {"embedding_dim": 32, "hidden_dim": 32},
        "train": {"epochs": epochs, "batch_size": 256, "lr": 0.003, "warmup_steps": 50, "device": "cpu"}})
    stop, batches = threading.Event(), []
    def cap(event):  # --max-steps: stop (status cancelled) after that many batches
        if isinstance(event, AfterBatch):
            batches.append((event.global_step, event.elapsed))
            if max_steps and event.global_step >= max_steps:
                stop.set()
    result = train_streaming(cfg, runs_dir=runs_dir, log=log, chunk_rows=20_000, stop=stop, callbacks=[cap])
    marks["end"] = time.perf_counter()
    data = result.run_dir / "data"
    print(json.dumps({
        "ingest_s": marks["ingested"] - marks["start"], "ingest_rss_mb": marks["ingest_rss_mb"],
        "start_rss_mb": marks["start_rss_mb"], "total_s": marks["end"] - marks["start"], "peak_rss_mb": peak_mb(),
        "status": result.status, "history": result.history, "steps": len(batches),
        "step_seconds": batches[-1][1] - batches[0][1] if len(batches) > 1 else 0.0,
        "test_accuracy": (result.metrics.get("test") or {}).get("primary", {}).get("accuracy"),
        "ids_mb": (data / "ids.u32").stat().st_size / 2**20,
        "store_mb": sum(p.stat().st_size for p in data.iterdir()) / 2**20}))
""")


def generate(path: Path, rows: int, seed: int = 0, chunk: int = 50_000) -> None:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(20_000)])
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    cues = {1: np.array(["great", "superb", "wonderful", "moving"]), 0: np.array(["awful", "dull", "boring", "weak"])}
    with open(path, "w", encoding="utf-8") as out:
        out.write("text,label\n")
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            lengths = rng.integers(4, 41, size=n)
            tokens = rng.choice(words, size=int(lengths.sum()), p=weights)
            labels = rng.integers(0, 2, size=n)
            noisy = np.where(rng.random(n) < 0.1, 1 - labels, labels)  # 10% of labels flipped
            cut = np.cumsum(lengths)[:-1]
            lines = []
            for row_tokens, label, shown in zip(np.split(tokens, cut), labels, noisy):
                row = list(row_tokens)
                row.insert(int(rng.integers(0, len(row) + 1)), str(rng.choice(cues[int(label)])))
                lines.append(f"{' '.join(row)},{'pos' if shown else 'neg'}\n")
            out.write("".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tokenizer", default="en", help="en (spaCy, the default of the app) or whitespace")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=0, help="stop training after this many batches (0: no cap)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "big.csv"
        start = time.perf_counter()
        generate(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 2**20
        print(f"generated {args.rows} rows, {size_mb:.0f} MB in {time.perf_counter() - start:.0f}s", flush=True)
        proc = subprocess.run([sys.executable, "-c", CHILD, str(csv_path), str(Path(tmp) / "runs"), args.tokenizer,
                               str(args.epochs), str(args.max_steps)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"training failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        print("\n".join(proc.stdout.strip().splitlines()[-8:-1]))

    history = report["history"]
    train_rows = int(args.rows * 0.8)  # hash split: about 80% of rows train
    if history:
        train_s = sum(r["seconds"] for r in history)
        rows_per_s = train_rows * len(history) / train_s
        training = f"{len(history)} epoch(s): {train_s:.0f} s, {rows_per_s:,.0f} rows/s"
    else:  # capped by --max-steps before the first epoch ended
        steps, seconds = report["steps"], report["step_seconds"]
        training = (f"capped at {steps} batches of 256 (--max-steps): {seconds:.0f} s, "
                    f"{(steps - 1) * 256 / seconds if seconds else 0:,.0f} rows/s")
    accuracy = report["test_accuracy"]
    ok = "within" if report["peak_rss_mb"] <= 2048 else "above"
    markdown = f"""
### Streaming a {args.rows:,}-row CSV (`--stream`)

`python bench/bench_streaming.py --rows {args.rows} --tokenizer {args.tokenizer} --epochs {args.epochs} --max-steps {args.max_steps}`:
a generated CSV of {size_mb:.0f} MB (Zipf words from a 20,000-word vocabulary, 4-40 words per row, two
classes with 10% label noise), read in chunks of 20,000 rows with the `{args.tokenizer}` tokenizer,
max_length 64; then a BiLSTM (embedding 32, hidden 32, batch 256) trained on it in the same process
(~{train_rows:,} training rows; CPU, OMP_NUM_THREADS=1).

| figure | value |
| --- | --- |
| ingestion (read, split, tokenise, count, write ids, remap) | {report['ingest_s']:.0f} s ({args.rows / report['ingest_s']:,.0f} rows/s) |
| peak RSS at the end of ingestion | {report['ingest_rss_mb']:.0f} MB (after imports: {report['start_rss_mb']:.0f} MB) |
| peak RSS over the whole run (ingestion, training, evaluation when completed) | {report['peak_rss_mb']:.0f} MB ({ok} the 2 GB target) |
| memory-mapped store on disk (ids.u32 / all files) | {report['ids_mb']:.0f} MB / {report['store_mb']:.0f} MB |
| training | {training} |
| test accuracy (labels are 10% noisy, so ~0.90 is the ceiling) | {accuracy if accuracy is None else f'{accuracy:.4f}'} |
| status | {report['status']} |

The texts are never all in memory: one chunk of rows, the token counts and a few dozen bytes per row
(offsets, row indexes, labels) are; token ids stay in the memory-mapped file and batches read them
from the page cache. {'The spaCy tokeniser dominates ingestion time.' if args.tokenizer != 'whitespace' else ''}
The machine is a shared 2-core VM that other jobs were loading at the same time: the times are upper
bounds, the memory figures are not affected.
"""
    print(markdown)
    if not args.no_write:
        update_section("bench_streaming", markdown)


if __name__ == "__main__":
    main()
