"""Export parity and speed on SST-2: fp32 PyTorch vs int8 vs ONNX Runtime.

    python bench/bench_export.py [--run DIR] [--epochs 4] [--threads 1] [--examples 400]

Without --run it trains a realistic model on SST-2 (../shared/data/sst2; skipped when absent):
GloVe 6B 50d embeddings over the full training vocabulary, BiLSTM with 128 units per direction,
max pooling. It then exports int8, ONNX and a bundle and prints the parity table (the same one
``python -m core export`` prints), measured on the SST-2 test set; latency is the model call
alone (tokenisation excluded), the three formats taking turns on the same inputs in one process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import require_data, update_section  # noqa: E402
from core.export import export_run, format_parity  # noqa: E402


def train_sst2(runs_dir: Path, epochs: int) -> Path:
    from core.models import ModelConfig
    from core.pipeline import DataConfig, RunConfig, train_run
    from core.text import TextConfig
    from core.training import TrainConfig

    train = require_data("sst2", "train.csv")
    cfg = RunConfig(data=DataConfig(train=str(train), valid=str(train.parent / "dev.csv"),
                                    test=str(train.parent / "test.csv")),
                    text=TextConfig(tokenizer="whitespace", max_vocab_size=25_000),
                    model=ModelConfig(embedding_dim=50, hidden_dim=128, bidirectional=True, pooling="max"),
                    train=TrainConfig(epochs=epochs, lr=2e-3, batch_size=64, warmup_steps=50, device="cpu"),
                    pretrained_vectors="glove-6b-50d")
    result = train_run(cfg, runs_dir=runs_dir, run_id="sst2-export-bench", log=lambda line: print(line, flush=True))
    if result.status != "completed":
        sys.exit(f"training ended with status {result.status}: {result.message}")
    return result.run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="an existing run directory (default: train one on SST-2)")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs when no --run is given")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and ONNX Runtime intra-op threads for the latency figures")
    parser.add_argument("--examples", type=int, default=400, help="test texts timed at batch 1 (and in batches of 32)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the timed texts")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(args.run) if args.run else train_sst2(Path(scratch) / "runs", args.epochs)
        result = export_run(run_dir, ["bundle", "int8", "onnx"], Path(scratch) / "export",
                            latency_examples=args.examples, repeats=args.repeats, threads=args.threads)
        table = format_parity(result.parity)
    print(table)
    if args.no_write:
        return
    model = result.parity.get("model", {})
    command = "python bench/bench_export.py" + (f" --run {args.run}" if args.run else f" --epochs {args.epochs}") \
        + f" --threads {args.threads} --examples {args.examples}"
    update_section("bench_export", "\n".join([
        "## Export: fp32 vs int8 vs ONNX Runtime (SST-2 test set)", "",
        f"Model: {model.get('description', 'see the run config')}. Latency is the p50 of the model call "
        "alone on CPU (tokenisation excluded), the three formats taking turns on the same test texts in "
        "one process; size is the weights file (fp32 safetensors, int8 safetensors, .onnx).", "",
        "```", table, "```", "",
        f"Reproduce: `{command}`",
    ]))


if __name__ == "__main__":
    main()
