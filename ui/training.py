"""Start and find this session's training jobs. Training runs in ``core.jobs`` worker threads."""

from __future__ import annotations

from core.jobs import TrainingJob
from core.pipeline import DataConfig, RunConfig
from ui import params
from ui.data import PreparedData, make_splits
from ui.resources import registry, runs_dir

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
    splits = make_splits(prepared, cfg.data.valid_fraction, cfg.data.test_fraction, cfg.train.seed)
    return registry().submit(cfg, owner, runs_dir=runs_dir(), splits=splits)


def session_jobs(owner: str) -> list[TrainingJob]:
    """This owner's jobs, newest first."""
    return sorted(registry().jobs(owner), key=lambda j: j.snapshot().started, reverse=True)


def running_job(owner: str) -> TrainingJob | None:
    return next((j for j in session_jobs(owner) if not j.snapshot().done), None)
