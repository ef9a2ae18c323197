"""Distributed training on CPU (gloo): torchrun end to end, and the collectives ranks rely on."""

from __future__ import annotations

import csv
import json
import os
import random
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.predict import Predictor
from core.runs import read_jsonl, read_status

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # a hung collective fails the test instead of hanging the suite


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keyword_csv(path: Path, rows: int = 400, seed: int = 0) -> Path:
    rng = random.Random(seed)
    filler = "the a film movie story plot actor scene music was is very quite rather".split()
    cue = {"pos": ["great", "wonderful", "superb"], "neg": ["awful", "boring", "terrible"]}
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "label"])
        for _ in range(rows):
            label = rng.choice(["pos", "neg"])
            words = [rng.choice(filler) for _ in range(rng.randint(3, 12))]
            words.insert(rng.randint(0, len(words)), rng.choice(cue[label]))
            writer.writerow([" ".join(words), label])
    return path


def env_for(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_ranks(code: str, world_size: int, out_dir: Path) -> list[dict]:
    """Start ``world_size`` processes that join one gloo group and run ``code``; their JSON results."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out_dir)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env_for(RANK=rank, WORLD_SIZE=world_size, LOCAL_RANK=rank,
                                          MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
             for rank in range(world_size)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, (proc, output) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{output[-3000:]}"
    return [json.loads((out_dir / f"rank{rank}.json").read_text()) for rank in range(world_size)]


def test_torchrun_two_processes_write_one_completed_loadable_run(tmp_path):
    data = keyword_csv(tmp_path / "tiny.csv")
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "core", "train", "--train", str(data), "--epochs", "4", "--patience", "4", "--warmup-steps", "0",
           "--lr", "0.02", "--hidden-dim", "16", "--embedding-dim", "16", "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env_for(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    run_dir = Path(lines[-1])
    assert [p.name for p in out.iterdir()] == [run_dir.name]  # one run, the one printed
    assert lines.count(str(run_dir)) == 1 and sum(l.startswith("vocabulary:") for l in lines) == 1  # rank 0 only
    assert read_status(run_dir)["status"] == "completed"
    history = read_jsonl(run_dir / "history.jsonl")
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    predictor = Predictor.load(run_dir)
    predictions = predictor.predict(["a superb film", "an awful boring film"])
    assert [p.label for p in predictions] == ["pos", "neg"]


COLLECTIVES = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from core.batching import BucketBatchSampler
    from core.distributed import from_environment
    from core.text import TextConfig, TextEncoder

    out = Path(sys.argv[1])
    d = from_environment("cpu")
    run_id = d.broadcast(f"run-from-rank-{d.rank}")
    def build():
        assert d.rank == 0, "the vocabulary must be built on rank 0 only"
        return TextEncoder.fit(TextConfig(tokenizer="whitespace"), ["b a c", "a b", "a"])
    itos = d.shared_encoder(build, TextConfig(tokenizer="whitespace")).vocab.itos
    reduced = d.reduce_train(loss_sum=float(d.rank + 1), correct=d.rank, seen=10, tokens=100)
    anyone = d.any(d.rank == d.world_size - 1)
    nobody = d.any(False)
    lengths = [(i * 7) % 23 + 1 for i in range(103)]
    sampler = BucketBatchSampler(lengths, 8, pool_batches=2, seed=5, num_replicas=d.world_size, rank=d.rank)
    epochs = {}
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        epochs[epoch] = list(sampler)
    d.close()
    (out / f"rank{d.rank}.json").write_text(json.dumps({
        "run_id": run_id, "itos": itos, "reduced": reduced, "anyone": anyone, "nobody": nobody,
        "epochs": epochs}))
""")


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_share_run_id_vocabulary_and_sums_and_split_every_epoch(tmp_path, world_size):
    results = run_ranks(COLLECTIVES, world_size, tmp_path)
    assert {r["run_id"] for r in results} == {"run-from-rank-0"}
    assert all(r["itos"] == ["<pad>", "<unk>", "a", "b", "c"] for r in results)
    n = world_size
    expected = (sum(range(1, n + 1)) / (10 * n), sum(range(n)) / (10 * n), 100 * n)
    for r in results:
        assert r["reduced"] == pytest.approx(expected)
        assert r["anyone"] is True and r["nobody"] is False
    for epoch in ("1", "2"):
        per_rank = [r["epochs"][epoch] for r in results]
        assert len({len(batches) for batches in per_rank}) == 1, "every rank must take the same number of steps"
        seen = sorted(i for batches in per_rank for batch in batches for i in batch)
        assert seen == list(range(103)), f"epoch {epoch}: every example exactly once across ranks"
    assert results[0]["epochs"]["1"] != results[0]["epochs"]["2"], "batches are reshuffled every epoch"


TRAINING = textwrap.dedent("""
    import json, sys, threading
    from pathlib import Path
    from core.distributed import from_environment
    from core.pipeline import RunConfig, train_run
    from core.streaming import train_streaming
    from core.training import AfterBatch

    out = Path(sys.argv[1])
    d = from_environment("cpu")
    def config():
        return RunConfig.from_dict({"data": {"train": str(out / "tiny.csv")},
                                    "model": {"hidden_dim": 8, "embedding_dim": 8},
                                    "train": {"epochs": 2, "batch_size": 16, "warmup_steps": 0, "device": "cpu"}})
    stop = threading.Event()
    def stop_on_last_rank(event):  # the user cancels on one rank only
        if isinstance(event, AfterBatch) and event.step == 2 and d.rank == d.world_size - 1:
            stop.set()
    quiet = lambda line: None
    cancelled = train_run(config(), runs_dir=out / "runs", stop=stop, callbacks=[stop_on_last_rank],
                          log=quiet, distributed=d)
    completed = train_run(config(), runs_dir=out / "runs", log=quiet, distributed=d)
    streamed = train_streaming(config(), runs_dir=out / "runs", log=quiet, distributed=d)
    d.close()
    (out / f"rank{d.rank}.json").write_text(json.dumps({name: [str(r.run_dir), r.status, r.message, len(r.history)]
        for name, r in (("cancelled", cancelled), ("completed", completed), ("streamed", streamed))}))
""")


def test_ranks_agree_on_run_directory_and_a_stop_on_one_rank_stops_all(tmp_path):
    keyword_csv(tmp_path / "tiny.csv", rows=300)
    results = run_ranks(TRAINING, 2, tmp_path)
    for name in ("cancelled", "completed", "streamed"):
        assert results[0][name] == results[1][name], f"{name}: ranks disagree: {results}"
    assert results[0]["cancelled"][1] == "cancelled" and results[0]["cancelled"][3] == 0
    assert "epoch 1" in results[0]["cancelled"][2]
    for name in ("completed", "streamed"):
        run_dir = Path(results[0][name][0])
        assert results[0][name][1] == "completed"
        assert read_status(run_dir)["status"] == "completed"
        assert Predictor.load(run_dir).predict(["superb"])[0].label in ("pos", "neg")
    assert len(list((tmp_path / "runs").iterdir())) == 3
