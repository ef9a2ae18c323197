"""The LSTM classifier (core/models.py)."""

from __future__ import annotations

import pytest
import torch

from core.batching import collate
from core.models import POOLINGS, LSTMClassifier, ModelConfig, head_size, logits_to_probs

SEQS = [[2, 3, 4, 5, 6], [7, 3], [9, 9, 9, 2], [4]]

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread


def _model(**overrides) -> LSTMClassifier:
    torch.manual_seed(0)
    config = ModelConfig(**{"vocab_size": 12, "embedding_dim": 8, "hidden_dim": 8, "dropout": 0.0,
                            **overrides})
    return LSTMClassifier(config).eval()


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_each_pooling_and_direction_gives_one_row_per_text(pooling, bidirectional):
    model = _model(pooling=pooling, bidirectional=bidirectional, num_classes=[3])
    ids, lengths = collate(SEQS)
    logits, weights = model(ids, lengths)
    assert len(logits) == 1 and logits[0].shape == (4, 3)
    assert torch.isfinite(logits[0]).all()
    if pooling == "attention":
        assert weights.shape == ids.shape
    else:
        assert weights is None


@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_never_changes_a_packed_models_output(pooling):
    model = _model(pooling=pooling, num_layers=2)
    ids, lengths = collate(SEQS)
    batch_logits = model(ids, lengths)[0][0]
    for row, seq in enumerate(SEQS):
        alone = model(torch.tensor([seq]), torch.tensor([len(seq)]))[0][0]
        torch.testing.assert_close(batch_logits[row:row + 1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_packed_and_padded_agree_on_equal_length_inputs(pooling, bidirectional):
    packed = _model(pooling=pooling, bidirectional=bidirectional, num_layers=2, packed=True)
    padded = _model(pooling=pooling, bidirectional=bidirectional, num_layers=2, packed=False)
    padded.load_state_dict(packed.state_dict())
    ids = torch.tensor([[2, 3, 4, 5], [6, 7, 8, 9], [3, 3, 3, 3]])
    lengths = torch.tensor([4, 4, 4])
    a, wa = packed(ids, lengths)
    b, wb = padded(ids, lengths)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)
    if pooling == "attention":
        torch.testing.assert_close(wa, wb, atol=1e-5, rtol=1e-5)


def test_binary_head_has_one_logit_and_multiclass_one_per_class():
    model = _model(num_classes=[2, 5, 3])
    ids, lengths = collate(SEQS)
    logits, _ = model(ids, lengths)
    assert [t.shape[-1] for t in logits] == [1, 5, 3]
    assert [head_size(n) for n in (2, 5, 3)] == [1, 5, 3]
    probs = [logits_to_probs(t) for t in logits]
    assert [p.shape for p in probs] == [(4, 2), (4, 5), (4, 3)]
    for p in probs:
        torch.testing.assert_close(p.sum(-1), torch.ones(4))
    # binary: the second column is sigmoid(logit)
    torch.testing.assert_close(probs[0][:, 1], torch.sigmoid(logits[0][:, 0]))


def test_attention_weights_sum_to_one_over_real_tokens_and_zero_on_padding():
    model = _model(pooling="attention")
    ids, lengths = collate(SEQS)
    _, weights = model(ids, lengths)
    for row, n in enumerate(lengths.tolist()):
        assert weights[row, :n].sum().item() == pytest.approx(1.0, abs=1e-5)
        assert (weights[row, :n] > 0).all()
        assert (weights[row, n:] == 0).all()


@pytest.mark.parametrize("extra", [{"layer_norm": True}, {"residual": True}, {"layer_norm": True, "residual": True}])
def test_layer_norm_and_residual_keep_shapes_but_change_the_model(extra):
    plain = _model(num_layers=2, pooling="mean")
    fancy = _model(num_layers=2, pooling="mean", **extra)
    ids, lengths = collate(SEQS)
    a, b = plain(ids, lengths)[0][0], fancy(ids, lengths)[0][0]
    assert a.shape == b.shape
    if extra.get("layer_norm"):
        assert fancy.norms is not None and len(fancy.norms) == 2 and plain.norms is None
        assert sum(p.numel() for p in fancy.parameters()) > sum(p.numel() for p in plain.parameters())
    # the residual path adds no weights but changes what the second layer outputs
    fancy.load_state_dict({**fancy.state_dict(), **plain.state_dict()})
    assert not torch.allclose(fancy(ids, lengths)[0][0], a)


def test_two_layers_stack_two_lstms():
    model = _model(num_layers=2, bidirectional=True)
    assert len(model.lstms) == 2
    assert model.lstms[1].input_size == 2 * model.config.hidden_dim


def test_embed_then_forward_embedded_equals_forward():
    model = _model(pooling="attention")
    ids, lengths = collate(SEQS)
    direct, w1 = model(ids, lengths)
    split, w2 = model.forward_embedded(model.embed(ids), lengths)
    torch.testing.assert_close(direct[0], split[0])
    torch.testing.assert_close(w1, w2)


def test_padding_row_of_the_embedding_is_zero():
    model = _model()
    assert not model.embedding.weight[0].any()


@pytest.mark.parametrize("overrides, match", [
    ({"hidden_dim": 0}, "'hidden_dim' parameter must be an int >= 1. Got 0 instead"),
    ({"pooling": "sum"}, "'pooling' parameter must be one of last, mean, max, attention"),
    ({"dropout": 1.0}, "'dropout' parameter must be a float in \\[0, 1\\)"),
    ({"num_classes": [1]}, "at least 2 classes"),
])
def test_invalid_config_is_a_clear_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**overrides).validate()


def test_config_dict_round_trip_ignores_unknown_keys():
    config = ModelConfig(hidden_dim=9, pooling="attention", num_classes=[2, 4])
    assert ModelConfig.from_dict({**config.to_dict(), "from_the_future": 1}) == config
