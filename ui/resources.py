"""Process-wide resources: the job and search registries, loaded predictors, the device name, run and
encoder folders.

``st.cache_resource`` is shared by every browser session, so only read-only things live here
(a loaded model, the device name) plus the job and search registries, which hand each session
only the jobs and searches of its own owner id.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core.jobs import JobRegistry
from core.runs import DEFAULT_RUNS_DIR, RunInfo, list_runs, run_info
from core.search import SearchRegistry

RUNS_DIR_ENV = "LSTM_STUDIO_RUNS_DIR"
DEMO_DIR_ENV = "LSTM_STUDIO_DEMO_DIR"
SEARCH_DIR_ENV = "LSTM_STUDIO_SEARCH_DIR"
ENCODERS_DIR_ENV = "LSTM_STUDIO_ENCODERS_DIR"
DEFAULT_DEMO_DIR = Path("artifacts") / "demo"
MODEL_FILES = ("config.json", "vocab.json", "labels.json", "model.safetensors")


def runs_dir() -> Path:
    """Where the app writes runs: ``$LSTM_STUDIO_RUNS_DIR`` or ``artifacts/runs``."""
    return Path(os.environ.get(RUNS_DIR_ENV) or DEFAULT_RUNS_DIR)


def search_dir() -> Path:
    """Where searches write their results: ``$LSTM_STUDIO_SEARCH_DIR``, else ``searches`` next to the runs."""
    return Path(os.environ.get(SEARCH_DIR_ENV) or runs_dir().parent / "searches")


def encoders_dir() -> Path:
    """Where the app saves pretrained encoders: ``$LSTM_STUDIO_ENCODERS_DIR``, else ``encoders`` next to
    the runs (``artifacts/encoders``, where ``python -m core pretrain`` saves them too)."""
    return Path(os.environ.get(ENCODERS_DIR_ENV) or runs_dir().parent / "encoders")


def demo_dir() -> Path:
    return Path(os.environ.get(DEMO_DIR_ENV) or DEFAULT_DEMO_DIR)


@st.cache_resource(show_spinner=False)
def registry() -> JobRegistry:
    return JobRegistry()


@st.cache_resource(show_spinner=False)
def search_registry() -> SearchRegistry:
    """Hyperparameter searches of all sessions; like ``registry()`` it hands each owner only its own."""
    return SearchRegistry()


@st.cache_resource(show_spinner=False)
def device_name() -> str:
    """'CPU', or the GPU's name when training would run on CUDA."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return "CPU"


def is_model_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in MODEL_FILES)


def model_mtime(path: Path) -> float:
    return (path / "model.safetensors").stat().st_mtime


@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def _predictor(path: str, mtime: float):
    from core.predict import Predictor

    return Predictor.load(path)


def predictor(path: str | Path):
    """A loaded Predictor, shared read-only by all sessions; reloaded when the weights change."""
    path = Path(path).resolve()
    return _predictor(str(path), model_mtime(path))


def visible_runs(owner: str, *, finished_models_only: bool = True) -> list[RunInfo]:
    """Runs on disk, newest first, minus runs that other sessions are still training."""
    hidden = registry().running_run_dirs(exclude_owner=owner)
    runs = [r for r in list_runs(runs_dir()) if str(r.path.resolve()) not in hidden]
    if finished_models_only:
        runs = [r for r in runs if r.status == "completed" and is_model_dir(r.path)]
    return runs


def demo_run() -> RunInfo | None:
    path = demo_dir()
    if path.is_dir() and is_model_dir(path):
        try:
            return run_info(path)
        except (OSError, ValueError):
            return None
    return None


def run_label(run: RunInfo) -> str:
    test = (run.metrics.get("test") or run.metrics.get("valid") or {}).get("primary") or {}
    acc = test.get("accuracy")
    score = f" · accuracy {acc:.3f}" if isinstance(acc, (int, float)) else ""
    return f"{run.run_id}{score}"


def model_choices(owner: str) -> dict[str, str]:
    """Models a page can offer this session: the demo model first, then its finished runs (path -> label)."""
    choices = {}
    demo = demo_run()
    if demo is not None:
        choices[str(demo.path)] = "Demo model (" + run_label(demo) + ")"
    for run in visible_runs(owner):
        choices[str(run.path)] = run_label(run)
    return choices


def visible_encoders(owner: str) -> list[RunInfo]:
    """Pretrained encoders with weights (finished, or stopped after an epoch), newest first, minus
    those that other sessions are still pretraining."""
    hidden = registry().running_run_dirs(exclude_owner=owner)
    return [e for e in list_runs(encoders_dir()) if str(e.path.resolve()) not in hidden
            and e.config.get("kind") == "encoder" and e.status in ("completed", "cancelled") and e.has_model]


def encoder_label(encoder: RunInfo) -> str:
    model = encoder.config.get("model") or {}
    perplexity = encoder.metrics.get("valid_perplexity")
    parts = [f"hidden {model.get('hidden_dim')}"]
    if isinstance(perplexity, (int, float)):
        parts.append(f"perplexity {perplexity:.1f}")
    if encoder.status != "completed":
        parts.append("stopped early")
    return f"{encoder.run_id} · {' · '.join(parts)}"
