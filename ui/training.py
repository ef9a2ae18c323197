"""Start and find this session's training jobs. Training runs in ``core.jobs`` worker threads."""

from __future__ import annotations

import json
from pathlib import Path

from core.jobs import BackgroundJob, TrainingJob
from core.pipeline import TRANSFER_FIELDS, DataConfig, RunConfig
from core.pretrain import is_encoder_dir
from ui import params
from ui.data import PreparedData, make_splits
from ui.resources import is_model_dir, registry, runs_dir

# how often the Train page's fragment redraws a running job; building the figure holds the GIL
# that the training thread also needs, so faster polling would slow training down
POLL_SECONDS = 1.0


def data_config(prepared: PreparedData, valid_fraction: float, test_fraction: float) -> DataConfig:
    return DataConfig(train="" if prepared.builtin else prepared.raw_name, dataset=prepared.builtin,
                      text_col=prepared.text_col, label_col=",".join(prepared.label_cols),
                      valid_fraction=float(valid_fraction), test_fraction=float(test_fraction))


def run_config(prepared: PreparedData, values: dict) -> RunConfig:
    data = data_config(prepared, values.get(params.DATA_KEYS["valid_fraction"], DataConfig.valid_fraction),
                       values.get(params.DATA_KEYS["test_fraction"], DataConfig.test_fraction))
    return params.build_config(values, data)


def start_training(owner: str, prepared: PreparedData, values: dict) -> TrainingJob:
    """Validate the settings, split the data and start a background job. Raises ValueError/DataError
    (one line, naming the parameter) before anything starts."""
    cfg = run_config(prepared, values)
    params.validate(cfg)
    check_init_from(cfg)
    if running_job(owner) is not None:
        raise ValueError("A job is already running in this browser session: stop it or wait for it to finish.")
    splits = make_splits(prepared, cfg.data.valid_fraction, cfg.data.test_fraction, cfg.train.seed)
    return registry().submit(cfg, owner, runs_dir=runs_dir(), splits=splits)


def _setting(name: str) -> str:
    return name.replace("_", " ").capitalize()  # as the form labels it (ui.params.Param.label)


def check_init_from(cfg: RunConfig) -> None:
    """Raise ValueError (one line, naming the setting and its value) when Init from names a folder the
    model cannot start from, before anything starts."""
    if not cfg.init_from:
        return
    folder = Path(cfg.init_from)
    encoder = is_encoder_dir(folder)
    if not encoder and not is_model_dir(folder):
        raise ValueError(f"Init from {cfg.init_from}: neither a finished run nor a pretrained encoder (it lacks "
                         f"their config.json and weights). Pick an encoder from the list, or clear Init from.")
    if encoder and not (folder / "model.safetensors").is_file():
        raise ValueError(f"Init from {cfg.init_from}: this encoder saved no weights (its pretraining stopped "
                         f"before one epoch ended). Pretrain it again, or pick another encoder.")
    try:
        theirs = json.loads((folder / "config.json").read_text(encoding="utf-8"))["model"]
    except (OSError, KeyError, TypeError, ValueError):
        raise ValueError(f"Init from {cfg.init_from}: its config.json is unreadable. Pick another run or "
                         f"encoder.") from None
    what = "encoder" if encoder else "run"
    if encoder and cfg.model.hierarchical:
        raise ValueError(f"Init from {cfg.init_from}: a pretrained encoder starts flat models only. Untick "
                         f"Hierarchical, or clear Init from.")
    compared = [f for f in TRANSFER_FIELDS if not (encoder and f in ("pooling", "hierarchical"))]
    if cfg.pretrained_vectors:  # the embedding size follows the vectors; the training checks it when it starts
        compared.remove("embedding_dim")
    differ = [f for f in compared if f in theirs and theirs[f] != getattr(cfg.model, f)]
    if differ:
        has = ", ".join(f"{_setting(f)} {theirs[f]}" for f in differ)
        form = ", ".join(f"{_setting(f)} {getattr(cfg.model, f)}" for f in differ)
        raise ValueError(f"Init from {cfg.init_from}: the {what} has {has} but the form says {form}. Set "
                         f"{has} in the form (or pick another {what}, or clear Init from).")


def session_jobs(owner: str) -> list[TrainingJob]:
    """This owner's training jobs, newest first."""
    jobs = [j for j in registry().jobs(owner) if isinstance(j, TrainingJob)]
    return sorted(jobs, key=lambda j: j.snapshot().started, reverse=True)


def running_job(owner: str) -> BackgroundJob | None:
    """This owner's unfinished job of any kind (training or pretraining): one at a time per session."""
    return next((j for j in registry().jobs(owner) if not j.snapshot().done), None)
