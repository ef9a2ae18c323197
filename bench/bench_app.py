"""Browser app benchmark: training throughput in the app vs the CLI, and how quickly the app responds.

Starts the real Streamlit server and drives it with Chromium (Playwright), as a user would:
upload an SST-2 subset, start training, and watch the page (the curves poll the job every second)
until the run completes. The same configuration is then trained from the command line with the
command the app shows under "Copy as CLI command". Reported:

- app/CLI training throughput (examples per second of the training loop, from each run's
  history.jsonl); target >= 0.9
- seconds from opening the app to an interactive page, and from pressing Start to the first curve
  point

    python bench/bench_app.py --rows 1500 --epochs 2 --hidden-dim 64
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, require_data, update_section  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
THREADS = "1"  # torch threads in both the app server and the CLI: same work, and stable on a shared machine
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(runs_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "LSTM_STUDIO_RUNS_DIR": str(runs_dir), "OMP_NUM_THREADS": THREADS}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"streamlit exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit("streamlit did not start within 90 s")


def run_throughput(run_dir: Path, n_train: int) -> dict:
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
    seconds = sum(r["seconds"] for r in history)
    return {"epochs": len(history), "train_seconds": seconds, "examples_per_s": n_train * len(history) / seconds,
            "tokens_per_s": sum(r["tokens_per_s"] for r in history) / len(history)}


def app_run(data_file: Path, runs_dir: Path, epochs: int, hidden_dim: int, log_path: Path) -> dict:
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    server = start_server(runs_dir, port, log_path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.set_default_timeout(120_000)
            expect.set_options(timeout=120_000)
            opened = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.get_by_test_id("stMetricValue")).to_be_visible()  # the home page has run
            to_interactive = time.perf_counter() - opened

            page.get_by_test_id("stSidebarNavLink").filter(has_text="Data").click()
            page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(data_file))
            expect(page.get_by_text("Ready to train:")).to_be_visible()
            page.get_by_test_id("stSidebarNavLink").filter(has_text="Train").click()
            for label, value in (("Epochs", epochs), ("Hidden dim", hidden_dim), ("Embedding dim", hidden_dim)):
                field = page.get_by_label(label, exact=True)
                field.fill(str(value))
                field.press("Enter")
                expect(field).to_have_value(str(value))
            started = time.perf_counter()
            page.get_by_role("button", name="Start training").click()
            expect(page.get_by_test_id("stPlotlyChart")).to_be_visible()
            to_first_point = time.perf_counter() - started
            expect(page.get_by_text("Status: completed", exact=True).first).to_be_visible(timeout=1_800_000)
            wall = time.perf_counter() - started
            # read after the run: by then every field change has reached the command shown
            page.get_by_text("Copy as CLI command").click()
            command = page.locator("code").filter(has_text="python -m core train").first.inner_text()
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    run_dir = next(p for p in runs_dir.iterdir() if (p / "history.jsonl").exists())
    return {"to_interactive": to_interactive, "to_first_point": to_first_point, "wall": wall,
            "command": " ".join(command.split()), "run_dir": run_dir}


def cli_run(command: str, data_file: Path, out: Path) -> Path:
    tokens = shlex.split(command)
    args = tokens[tokens.index("train") + 1:]
    args[args.index("--train") + 1] = str(data_file)
    args[args.index("--out") + 1] = str(out)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "core", "train", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": THREADS})
    if done.returncode:
        raise SystemExit(f"CLI run failed: {done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def in_process(data_file: Path, tmp: Path, epochs: int, hidden_dim: int) -> tuple[list[float], list[float]]:
    """Server side only: a JobRegistry job polled as often as the Train page's fragment does
    (snapshot + the curve figure) vs ``train_run`` called directly; same splits, alternating, 2 each."""
    import threading

    import torch

    sys.path.insert(0, str(ROOT))
    from core.jobs import JobRegistry
    from core.pipeline import DataConfig, RunConfig, load_splits, train_run
    from ui import charts
    from ui.training import POLL_SECONDS

    torch.set_num_threads(int(THREADS))
    cfg = RunConfig(data=DataConfig(train=str(data_file)))
    cfg.train.epochs, cfg.model.hidden_dim, cfg.model.embedding_dim = epochs, hidden_dim, hidden_dim
    splits = load_splits(cfg.data, cfg.train.seed, log=lambda line: None)
    registry = JobRegistry()
    app, cli = [], []
    for k in range(2):
        job = registry.submit(RunConfig.from_dict(cfg.to_dict()), "bench", runs_dir=tmp / "inproc_app", splits=splits)
        while not job.snapshot().done:
            snap = job.snapshot()
            charts.training_curves(snap.history, snap.batch_losses, snap.steps_per_epoch, snap.lr)
            time.sleep(POLL_SECONDS)
        app.append(run_throughput(Path(job.snapshot().run_dir), len(splits.train))["examples_per_s"])
        result = train_run(RunConfig.from_dict(cfg.to_dict()), splits=splits, runs_dir=tmp / "inproc_cli",
                           log=lambda line: None)
        cli.append(run_throughput(Path(result.run_dir), len(splits.train))["examples_per_s"])
    return app, cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1500, help="SST-2 training rows used (first N)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden-dim", type=int, default=64, help="LSTM units per direction (and embedding size)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    source = require_data("sst2", "train.csv")
    if not Path(CHROMIUM).exists():
        print(f"skipped: {CHROMIUM} not found (apt-get install chromium)")
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_file = tmp / "sst2_subset.csv"
        with open(source, newline="", encoding="utf-8") as f_in, open(data_file, "w", newline="", encoding="utf-8") as f_out:
            reader, writer = csv.reader(f_in), csv.writer(f_out)
            for i, row in enumerate(reader):
                if i > args.rows:
                    break
                writer.writerow(row)
        n_train = args.rows - 2 * round(0.1 * args.rows)

        # app, CLI, app, CLI: alternating runs so that slow drift in machine load affects both sides
        app = app_run(data_file, tmp / "app_runs", args.epochs, args.hidden_dim, tmp / "streamlit.log")
        print("app run 1 done", flush=True)
        cli_dirs = []
        for k in range(2):
            run_dir, _ = cli_run(app["command"], data_file, tmp / f"cli_runs_{k}")
            print(f"cli run {k + 1} done", flush=True)
            cli_dirs.append(run_dir)
            if k == 0:
                app_2 = app_run(data_file, tmp / "app_runs_2", args.epochs, args.hidden_dim, tmp / "streamlit2.log")
        apps = [run_throughput(a["run_dir"], n_train) for a in (app, app_2)]
        clis = [run_throughput(d, n_train) for d in cli_dirs]
        server_app, server_cli = in_process(data_file, tmp, args.epochs, args.hidden_dim)
    server_ratio = sum(server_app) / sum(server_cli)

    app_eps = sum(a["examples_per_s"] for a in apps) / len(apps)
    cli_eps = sum(c["examples_per_s"] for c in clis) / len(clis)
    ratio = app_eps / cli_eps
    interactive = min(app["to_interactive"], app_2["to_interactive"])
    first_point = min(app["to_first_point"], app_2["to_first_point"])
    lines = [
        f"data: first {args.rows} rows of SST-2 train ({n_train} training examples), {args.epochs} epochs, "
        f"hidden and embedding size {args.hidden_dim}, app defaults otherwise; torch threads: {THREADS}",
        "server side, in one process (examples/s): " + ", ".join(
            [f"job+poller {x:.0f}" for x in server_app] + [f"train_run {x:.0f}" for x in server_cli]),
        f"app/CLI throughput, server side: {server_ratio:.3f} (target >= 0.9: "
        f"{'met' if server_ratio >= 0.9 else 'NOT met'})",
        "end to end (streamlit server + Chromium on the same machine vs `python -m core train`): "
        + ", ".join([f"app {a['examples_per_s']:.0f}" for a in apps] + [f"cli {c['examples_per_s']:.0f}" for c in clis]),
        f"app/CLI throughput, end to end: {ratio:.3f} (the browser renders the curves on the same CPU cores)",
        f"open app -> interactive page: {interactive:.2f} s (best of 2 cold server starts)",
        f"press Start -> first curve point: {first_point:.2f} s (best of 2; includes tokenising the data "
        "and building the vocabulary)",
    ]
    print("\n".join(lines))
    print("command:", app["command"])
    if not args.no_write:
        section = ("## Browser app\n\n"
                   "Training in the app (a background job while the browser polls the page every second) vs the "
                   "same configuration trained with the command the app shows under \"Copy as CLI command\"; "
                   "app and CLI runs alternate (app, CLI, app, CLI) and the means are compared. Latencies are "
                   "measured in Chromium driven by Playwright against `streamlit run streamlit_app.py`.\n\n"
                   "```\n" + "\n".join(lines) + "\n```\n\n"
                   f"Reproduce: `python bench/bench_app.py --rows {args.rows} --epochs {args.epochs} --hidden-dim {args.hidden_dim}`")
        update_section("bench_app", section)


if __name__ == "__main__":
    main()
