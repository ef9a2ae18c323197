"""Run directories: ``artifacts/runs/<run_id>/`` and atomic writes.

A run directory holds:

- ``config.json``    everything needed to rebuild the model and repeat the run
- ``vocab.json``     the vocabulary (``itos``) and tokenizer settings
- ``labels.json``    class names per task, in probability-column order
- ``status.json``    running | completed | cancelled | failed | diverged (+ message)
- ``history.jsonl``  one JSON object per epoch
- ``best.safetensors``   best weights so far by the validation metric (kept through a crash)
- ``checkpoint.pt``  last epoch's full training state (tensors only; loads with weights_only=True)
- ``model.safetensors``  the published model: written only when training completes
- ``metrics.json``   validation and test metrics of the published model

Every file is written to a temporary name in the same folder and renamed into place, so a crash
mid-write leaves the previous version intact.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DEFAULT_RUNS_DIR = Path("artifacts") / "runs"
STATUSES = ("running", "completed", "cancelled", "failed", "diverged")


class RunError(ValueError):
    """A run directory that is missing, incomplete or not a run."""


def _atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=_jsonable))


def atomic_save(path: str | Path, save: Callable[[Path], None]) -> None:
    """Atomic write through a function that writes a file at a given path (safetensors, torch.save)."""
    _atomic_write(path, save)


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one line; history files are rewritten whole on resume, so appends need no rename."""
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(record, ensure_ascii=False, default=_jsonable) + "\n")
        out.flush()


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line after a crash
    return records


def new_run_id(prefix: str = "run") -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{prefix}-{stamp}-{secrets.token_hex(3)}"


_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def safe_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id or ""):
        raise RunError(f"{run_id!r} is not a valid run id: use letters, digits, '.', '_' and '-'.")
    return run_id


@dataclass
class RunInfo:
    run_id: str
    path: Path
    status: str
    message: str
    created: float
    metrics: dict
    config: dict

    @property
    def has_model(self) -> bool:
        return (self.path / "model.safetensors").exists()


def read_status(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "status.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"status": "unknown", "message": ""}


def write_status(run_dir: str | Path, status: str, message: str = "", **extra) -> None:
    assert status in STATUSES, status
    atomic_write_json(Path(run_dir) / "status.json",
                      {"status": status, "message": message, "updated": time.time(), **extra})


def run_info(run_dir: str | Path) -> RunInfo:
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise RunError(f"{run_dir} is not a run directory (no config.json). Pass the folder that "
                       f"`python -m core train` printed as its last line.")
    status = read_status(run_dir)

    def load(name: str) -> dict:
        try:
            return json.loads((run_dir / name).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    return RunInfo(run_dir.name, run_dir, status.get("status", "unknown"), status.get("message", ""),
                   float(status.get("created", (run_dir / "config.json").stat().st_mtime)),
                   load("metrics.json"), load("config.json"))


def list_runs(runs_dir: str | Path = DEFAULT_RUNS_DIR) -> list[RunInfo]:
    """Runs in ``runs_dir``, newest first; folders that are not runs are skipped."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = []
    for child in runs_dir.iterdir():
        if child.is_dir() and (child / "config.json").is_file():
            try:
                found.append(run_info(child))
            except (RunError, OSError):
                continue
    return sorted(found, key=lambda r: r.created, reverse=True)
