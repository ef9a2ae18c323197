"""Shared pieces of the benchmark scripts: dataset paths and BENCHMARKS.md section updates."""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LSTM_STUDIO_DATA", ROOT.parent / "shared" / "data"))
BENCHMARKS = ROOT / "BENCHMARKS.md"


def require_data(*parts: str) -> Path:
    """Path to a shared dataset file; exits cleanly (code 0) with a message when it is missing."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        print(f"skipped: {path} not found (the benchmark datasets live in ../shared/data)")
        sys.exit(0)
    return path


def machine() -> str:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {gpu}"


def update_section(key: str, markdown: str) -> None:
    """Replace the text between ``<!-- key:start -->`` and ``<!-- key:end -->`` in BENCHMARKS.md."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    block = f"{start}\n{markdown.strip()}\n\n_Measured {time.strftime('%Y-%m-%d')} on {machine()}._\n{end}"
    text = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text, encoding="utf-8")
