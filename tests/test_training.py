"""The fit loop: reproducibility, losses, schedules, early stopping, events, stop flag (core/training.py)."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from core.models import LSTMClassifier, ModelConfig
from core.training import (AfterBatch, AfterEpoch, AfterFit, BeforeFit, TrainConfig, fit, parse_class_weights,
                           task_loss)

LABELS = [["neg", "pos"]]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models run fastest on one thread; several threads only fight over shared cores
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n: int, seed: int, positive_share: float = 0.5):
    """Id sequences of filler tokens 4..19 with token 2 (negative) or 3 (positive) somewhere inside."""
    rng = np.random.default_rng(seed)
    seqs, y = [], []
    for _ in range(n):
        label = int(rng.random() < positive_share)
        seq = rng.integers(4, 20, rng.integers(2, 9)).tolist()
        seq.insert(int(rng.integers(0, len(seq) + 1)), 2 + label)
        seqs.append(seq)
        y.append([label])
    return seqs, np.array(y, dtype=np.int64)


TRAIN = _data(96, 0)
VALID = _data(32, 1)
# a validation set no model can do better or worse on: the same text labelled both ways
CONSTANT_VALID = ([[5, 6]] * 4, np.array([[0], [1], [0], [1]], dtype=np.int64))


def _model(seed: int = 0, **overrides) -> LSTMClassifier:
    torch.manual_seed(seed)
    return LSTMClassifier(ModelConfig(**{"vocab_size": 20, "embedding_dim": 8, "hidden_dim": 8, "dropout": 0.2,
                                         "num_classes": [2], **overrides}))


def _config(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 16, "lr": 0.01, "warmup_steps": 0, "device": "cpu",
                          "patience": 10, **overrides})


def _fit(model=None, train=TRAIN, valid=VALID, **kwargs):
    config = kwargs.pop("config", None) or _config()
    return fit(model or _model(), train[0], train[1], valid[0], valid[1], LABELS, config, **kwargs)


def _clone(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_two_cpu_runs_with_one_seed_give_identical_weights():
    a, b = _model(), _model()
    ra, rb = _fit(a), _fit(b)
    assert ra.status == rb.status == "completed"
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    for key, value in ra.best_state.items():
        assert torch.equal(value, rb.best_state[key]), key
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_s")} for r in h]  # noqa: E731
    assert strip(ra.history) == strip(rb.history)
    # a different seed trains differently
    c = _model()
    _fit(c, config=_config(seed=99))
    assert not torch.equal(c.lstms[0].weight_ih_l0, a.lstms[0].weight_ih_l0)


def test_training_learns_the_keyword():
    result = _fit(config=_config(epochs=8, batch_size=8))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert max(r["valid_accuracy"] for r in result.history) >= 0.9


@pytest.mark.parametrize("num_classes", [2, 3])
def test_label_smoothing_changes_the_loss(num_classes):
    torch.manual_seed(0)
    logits = torch.randn(6, 1 if num_classes == 2 else 3) * 4
    target = torch.tensor([0, 1, 1, 0, 1, 0]) % num_classes
    plain = task_loss(logits, target, 0.0, None)
    smooth = task_loss(logits, target, 0.2, None)
    assert not math.isclose(float(plain), float(smooth), rel_tol=1e-4)
    if num_classes == 2:  # smoothing moves BCE targets from 0/1 to 0.1/0.9
        soft = target.float() * 0.8 + 0.1
        expected = torch.nn.functional.binary_cross_entropy_with_logits(logits.squeeze(-1), soft)
        assert float(smooth) == pytest.approx(float(expected), rel=1e-6)


def test_class_weights_change_the_loss():
    y = np.array([0, 0, 0, 1])
    balanced = parse_class_weights("balanced", ["neg", "pos"], y)
    assert balanced.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    explicit = parse_class_weights("pos=3", ["neg", "pos"], y)
    assert explicit.tolist() == [1.0, 3.0]
    assert parse_class_weights("none", ["neg", "pos"], y) is None
    logits = torch.tensor([[2.0], [1.0], [-1.0], [-2.0]])  # the one positive is the worst-scored example
    target = torch.tensor(y)
    assert float(task_loss(logits, target, 0.0, explicit)) > float(task_loss(logits, target, 0.0, None))
    with pytest.raises(ValueError, match="unknown classes \\['maybe'\\]"):
        parse_class_weights("maybe=2", ["neg", "pos"], y)
    with pytest.raises(ValueError, match="label=weight pairs"):
        parse_class_weights("pos=heavy", ["neg", "pos"], y)
    # through the fit loop: an imbalanced set trains to a different first-epoch loss
    train = _data(96, 0, positive_share=0.2)
    plain = _fit(train=train, config=_config(epochs=1))
    weighted = _fit(train=train, config=_config(epochs=1, class_weights="balanced"))
    assert plain.history[0]["train_loss"] != weighted.history[0]["train_loss"]


def test_warmup_raises_lr_linearly_then_holds():
    lrs = []
    _fit(config=_config(epochs=1, warmup_steps=4),
         callbacks=[lambda e: lrs.append(e.lr) if isinstance(e, AfterBatch) else None])
    assert len(lrs) == 6  # 96 examples / 16
    assert lrs == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])


def test_plateau_halves_lr_after_a_bad_epoch_and_early_stopping_stops_at_patience():
    result = _fit(valid=CONSTANT_VALID, config=_config(epochs=10, patience=3, plateau_patience=0))
    # epoch 1 improves on nothing; 2, 3, 4 cannot improve: stop after patience=3 bad epochs
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert "early stopping" in result.message and result.status == "completed"
    # the lr is halved after every bad epoch and used from the next one on
    assert [r["lr"] for r in result.history] == pytest.approx([0.01, 0.01, 0.005, 0.0025])
    assert result.best_epoch == 1


def test_plateau_patience_waits_for_more_bad_epochs():
    result = _fit(valid=CONSTANT_VALID, config=_config(epochs=4, patience=10, plateau_patience=1))
    assert [r["lr"] for r in result.history] == pytest.approx([0.01, 0.01, 0.01, 0.005])


@pytest.mark.parametrize("select", ["loss", "accuracy", "macro_f1"])
def test_best_weights_come_from_the_best_epoch_of_the_chosen_metric(select):
    model = _model()
    snapshots, saved = {}, []

    def on_epoch(event):
        if isinstance(event, AfterEpoch):
            snapshots[event.epoch] = _clone(model)

    result = _fit(model, config=_config(epochs=5, select_metric=select), callbacks=[on_epoch],
                  save_best=lambda state: saved.append(state))
    column = {"loss": "valid_loss", "accuracy": "valid_accuracy", "macro_f1": "valid_macro_f1"}[select]
    scores = [(-r[column] if select == "loss" else r[column]) for r in result.history]
    assert result.best_epoch == int(np.argmax(scores)) + 1  # the first epoch with the best score
    for key, value in snapshots[result.best_epoch].items():
        assert torch.equal(value, result.best_state[key]), key
    for key, value in saved[-1].items():
        assert torch.equal(value, result.best_state[key]), key


def test_callbacks_receive_events_in_order():
    events = []
    _fit(config=_config(epochs=2), callbacks=[events.append])
    names = [e.name for e in events]
    assert names[0] == "before_fit" and names[-1] == "after_fit"
    assert names.count("after_epoch") == 2
    epoch_ends = [i for i, n in enumerate(names) if n == "after_epoch"]
    assert set(names[1:epoch_ends[0]]) == {"after_batch"}
    assert set(names[epoch_ends[0] + 1:epoch_ends[1]]) == {"after_batch"}
    before = events[0]
    assert isinstance(before, BeforeFit) and before.epochs == 2 and before.steps_per_epoch == 6
    assert before.n_train == 96 and before.n_valid == 32 and before.device == "cpu"
    batches = [e for e in events if isinstance(e, AfterBatch)]
    assert [e.global_step for e in batches] == list(range(1, 13))
    assert [e.step for e in batches] == list(range(1, 7)) * 2
    assert isinstance(events[-1], AfterFit) and events[-1].status == "completed"
    with pytest.raises(Exception):  # events are frozen records
        events[-1].status = "x"


def test_stop_flag_cancels_within_one_batch():
    stop = threading.Event()
    seen = []

    def on_event(event):
        seen.append(event)
        if isinstance(event, AfterBatch) and event.global_step == 2:
            stop.set()

    result = _fit(config=_config(epochs=5), callbacks=[on_event], stop=stop)
    assert result.status == "cancelled" and "stopped by the user" in result.message
    assert max(e.global_step for e in seen if isinstance(e, AfterBatch)) == 2  # no batch after the stop
    assert result.history == [] and result.best_state is None
    assert isinstance(seen[-1], AfterFit) and seen[-1].status == "cancelled"


def test_nan_loss_ends_as_diverged_with_the_best_weights_intact():
    model = _model()
    epoch_one = {}

    def poison_after_epoch_one(event):
        if isinstance(event, AfterEpoch) and event.epoch == 1:
            epoch_one.update(_clone(model))
            with torch.no_grad():
                model.heads[0].weight.fill_(float("nan"))

    events = []
    result = _fit(model, config=_config(epochs=4), callbacks=[poison_after_epoch_one, events.append])
    assert result.status == "diverged"
    assert "nan" in result.message.lower() and "epoch 2" in result.message
    assert result.best_epoch == 1 and len(result.history) == 1
    for key, value in epoch_one.items():
        assert torch.equal(result.best_state[key], value), key
    assert all(torch.isfinite(v).all() for v in result.best_state.values())
    assert events[-1].status == "diverged"


def test_freeze_embeddings_keeps_the_vectors():
    model = _model()
    before = model.embedding.weight.detach().clone()
    _fit(model, config=_config(epochs=1, freeze_embeddings=True))
    assert torch.equal(model.embedding.weight.detach(), before)
    assert not torch.equal(model.lstms[0].weight_ih_l0.detach(), _model().lstms[0].weight_ih_l0.detach())


@pytest.mark.parametrize("overrides, match", [
    ({"epochs": 0}, "'epochs' parameter must be an int >= 1. Got 0 instead"),
    ({"lr": -1.0}, "'lr' parameter must be a number > 0"),
    ({"optimizer": "sgd"}, "'optimizer' parameter must be one of adam, adamw"),
    ({"select_metric": "auc"}, "'select_metric' parameter must be one of loss, accuracy, macro_f1"),
    ({"dropout_schedule": "half"}, "must look like START:END"),
    ({"label_smoothing": 0.7}, "'label_smoothing' parameter must be in \\[0, 0.5\\)"),
])
def test_invalid_train_config_is_a_clear_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**overrides).validate()
