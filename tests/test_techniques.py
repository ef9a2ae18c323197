"""The advanced techniques: FGM, hierarchical LSTM, chunked encoding (truncated BPTT), multi-task,
layer norm / residual, dropout schedule, mixed precision. Tiny generated data, CPU only."""

from __future__ import annotations

import json
import random
from functools import partial

import numpy as np
import pytest
import torch

from core.cli import build_parser, main
from core.data import TextTable
from core.hierarchical import HierarchicalClassifier
from core.models import LSTMClassifier, ModelConfig, build_model
from core.pipeline import Splits, train_run
from core.predict import Predictor
from core.text import SENT_END, SENT_END_ID, TextConfig, TextEncoder
from core.training import AfterEpoch, TrainConfig, WeightAverage, evaluate_tasks, fgm_step, fit, task_loss
from helpers import tiny_config

POSITIVE, NEGATIVE = ["great", "superb", "lovely"], ["awful", "dull", "poor"]
FILLER = ["the", "film", "was", "a", "story", "with", "some", "scenes", "and", "actors"]


def make_table(n: int = 160, seed: int = 0, sentences: int = 1, multitask: bool = False) -> TextTable:
    """Each text: ``sentences`` filler sentences; one of them holds a sentiment keyword."""
    rng = random.Random(seed)
    texts, labels, topics = [], [], []
    for i in range(n):
        positive = i % 2 == 0
        parts = []
        keyword_at = rng.randrange(sentences)
        for s in range(sentences):
            words = rng.sample(FILLER, 4)
            if s == keyword_at:
                words.insert(rng.randrange(len(words)), rng.choice(POSITIVE if positive else NEGATIVE))
            parts.append(" ".join(words) + " .")
        texts.append(" ".join(parts))
        labels.append("pos" if positive else "neg")
        topics.append(["a", "b", "c"][i % 3])
    columns = {"label": labels, **({"topic": topics} if multitask else {})}
    return TextTable(texts, columns)


def splits_of(table: TextTable) -> Splits:
    n = len(table)
    cut1, cut2 = int(n * 0.7), int(n * 0.85)
    return Splits(table.subset(list(range(cut1))), table.subset(list(range(cut1, cut2))),
                  table.subset(list(range(cut2, n))))


# no data file: these runs get their splits from make_table
run_config = partial(tiny_config, max_length=60, embedding_dim=12, hidden_dim=12, dropout=0.1, lr=0.02, patience=10,
                     seed=3)


def random_model(seed: int = 0, **kwargs) -> LSTMClassifier:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=30, embedding_dim=8, hidden_dim=6, dropout=0.0, **kwargs)
    return build_model(config).eval()


# ---- FGM ----------------------------------------------------------------------------------------

def test_fgm_adds_an_adversarial_gradient_and_leaves_the_embedding_weights_alone():
    model = random_model(pooling="mean").train()
    ids = torch.randint(2, 30, (4, 7))
    lengths = torch.tensor([7, 5, 3, 2])
    targets = torch.tensor([[0], [1], [0], [1]])
    config = TrainConfig(fgm_epsilon=1.0)
    embedded = model.embed(ids)
    embedded.retain_grad()
    logits, _ = model.forward_embedded(embedded, lengths)
    task_loss(logits[0], targets[:, 0], 0.0, None).backward()
    clean_grad = model.embedding.weight.grad.clone()
    weights_before = model.embedding.weight.detach().clone()
    import contextlib
    fgm_step(model, ids, lengths, targets, embedded, [1.0], [None], config, contextlib.nullcontext(), None)
    assert torch.equal(model.embedding.weight.detach(), weights_before), "FGM must perturb the output, not the weights"
    assert not torch.allclose(model.embedding.weight.grad, clean_grad), "the adversarial gradient was not added"


def _count_backward_passes(fgm_epsilon: float) -> tuple[int, int, torch.Tensor]:
    table = make_table(48)
    encoder = TextEncoder.fit(TextConfig(tokenizer="whitespace"), table.texts)
    seqs = encoder.encode_many(table.texts)
    y = np.array([[0 if label == "neg" else 1] for label in table.labels["label"]])
    torch.manual_seed(0)
    model = LSTMClassifier(ModelConfig(vocab_size=len(encoder.vocab), embedding_dim=8, hidden_dim=8))
    calls = []
    model.heads[0].register_full_backward_hook(lambda *args: calls.append(1))
    config = TrainConfig(epochs=1, batch_size=16, warmup_steps=0, fgm_epsilon=fgm_epsilon, seed=1)
    steps = []
    fit(model, seqs, y, seqs[:8], y[:8], [["neg", "pos"]], config,
        callbacks=[lambda e: steps.append(1) if e.name == "after_batch" else None])
    return len(calls), len(steps), model.embedding.weight.detach().clone()


def test_fgm_runs_a_second_backward_pass_per_step():
    plain_calls, plain_steps, plain_weights = _count_backward_passes(0.0)
    fgm_calls, fgm_steps, fgm_weights = _count_backward_passes(0.5)
    assert plain_calls == plain_steps == 3
    assert fgm_calls == 2 * fgm_steps
    # the optimizer step is the only thing that changes the weights, and it saw different gradients
    assert not torch.allclose(plain_weights, fgm_weights)


# ---- weight averaging (EMA) ----------------------------------------------------------------------

def test_weight_average_follows_the_decay_and_applied_restores_the_live_weights():
    layer = torch.nn.Linear(3, 2)
    start = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    average = WeightAverage(layer, decay=0.9)
    with torch.no_grad():
        layer.weight.add_(1.0)
    average.update(step=10_000)  # past the ramp: the full decay applies
    expected = 0.9 * start["weight"] + 0.1 * (start["weight"] + 1.0)
    with average.applied():
        assert torch.allclose(layer.weight, expected)
    assert torch.allclose(layer.weight, start["weight"] + 1.0), "the live weights must come back"
    average.update(step=0)  # the ramp: decay min(0.9, 1/10) keeps 90% of the live weights
    with average.applied():
        assert torch.allclose(layer.weight, 0.1 * expected + 0.9 * (start["weight"] + 1.0))


def test_ema_run_validates_and_keeps_the_averaged_weights():
    table = make_table(64)
    encoder = TextEncoder.fit(TextConfig(tokenizer="whitespace"), table.texts)
    seqs = encoder.encode_many(table.texts)
    y = np.array([[0 if label == "neg" else 1] for label in table.labels["label"]])
    valid_seqs, valid_y = seqs[:16], y[:16]
    torch.manual_seed(0)
    model = LSTMClassifier(ModelConfig(vocab_size=len(encoder.vocab), embedding_dim=8, hidden_dim=8, dropout=0.0))
    config = TrainConfig(epochs=3, batch_size=8, warmup_steps=0, lr=0.01, ema_decay=0.95, patience=10, seed=1)
    result = fit(model, seqs, y, valid_seqs, valid_y, [["neg", "pos"]], config)
    assert result.status == "completed"
    live = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert not torch.allclose(live["heads.0.weight"], result.best_state["heads.0.weight"]), \
        "the saved weights must be the average, not the last step's"
    # the figures in the history are those of the saved (averaged) weights
    model.load_state_dict(result.best_state)
    report = evaluate_tasks(model, valid_seqs, valid_y, [["neg", "pos"]], "cpu", config.label_smoothing)
    best = result.history[result.best_epoch - 1]
    assert report["loss"] == pytest.approx(best["valid_loss"], abs=1e-5)
    assert report["accuracy"] == pytest.approx(best["valid_accuracy"])


def test_ema_decay_outside_zero_to_one_is_a_clear_error():
    with pytest.raises(ValueError, match="'ema_decay' parameter must be in \\[0, 1\\)"):
        TrainConfig(ema_decay=1.0).validate()


# ---- hierarchical -------------------------------------------------------------------------------

def test_sentence_breaks_add_a_reserved_end_token_and_plain_vocabularies_are_unchanged():
    texts = ["good film . bad ending !", "fine"]
    plain = TextEncoder.fit(TextConfig(tokenizer="whitespace"), texts)
    assert SENT_END not in plain.vocab
    marked = TextEncoder.fit(TextConfig(tokenizer="whitespace", sentence_breaks=True), texts)
    assert marked.vocab.itos[:3] == ["<pad>", "<unk>", SENT_END]
    assert marked.encode("good film . bad ending !").tokens == ["good", "film", ".", SENT_END, "bad", "ending",
                                                                "!", SENT_END]
    assert marked.encode("fine").tokens == ["fine", SENT_END]
    # a literal "</s>" typed in the text does not split the sentence
    assert marked.encode("fine </s> film").ids.count(SENT_END_ID) == 1


def test_hierarchical_model_reads_one_and_many_sentence_documents():
    model = random_model(hierarchical=True, num_classes=[2, 3])
    assert isinstance(model, HierarchicalClassifier)
    e = SENT_END_ID
    ids = torch.tensor([[5, 6, 7, e, 0, 0, 0, 0, 0],  # one sentence
                        [5, 6, e, 8, 9, e, 10, 11, e],  # three sentences
                        [5, 6, 7, 8, 9, 0, 0, 0, 0]])  # no end mark (cut by max_length)
    lengths = torch.tensor([4, 9, 5])
    logits, weights = model(ids, lengths)
    assert [tuple(t.shape) for t in logits] == [(3, 1), (3, 3)]
    assert torch.allclose(weights.sum(1), torch.ones(3), atol=1e-5)
    assert torch.all(weights[0, 4:] == 0), "padding got attention"
    # a document's result does not depend on what else is in the batch
    alone, _ = model(ids[1:2], lengths[1:2])
    assert torch.allclose(alone[0], logits[0][1:2], atol=1e-5)
    # the sentence split matters: the same words as one sentence give another result
    merged = torch.tensor([[5, 6, 8, 9, 10, 11, e]])
    split = torch.tensor([[5, 6, e, 8, 9, e, 10, 11, e]])
    assert not torch.allclose(model(merged, torch.tensor([7]))[0][0], model(split, torch.tensor([9]))[0][0])


def test_hierarchical_model_trains_end_to_end_and_predicts(tmp_path):
    table = make_table(200, sentences=3)
    result = train_run(run_config(hierarchical=True), splits=splits_of(table), runs_dir=tmp_path, log=lambda s: None)
    assert result.status == "completed"
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    predictor = Predictor.load(result.run_dir)
    assert isinstance(predictor.model, HierarchicalClassifier)
    assert predictor.encoder.vocab.itos[SENT_END_ID] == SENT_END
    texts = ["the film was dull . some scenes and actors . a story with poor actors .", "superb ."]
    predictions = predictor.predict(texts)
    assert all(abs(sum(p.probs.values()) - 1) < 1e-5 for p in predictions)
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["model"]["hierarchical"] is True


# ---- chunked encoding (truncated BPTT) ----------------------------------------------------------

@pytest.mark.parametrize("pooling", ["max", "last", "attention"])
def test_chunked_encoding_matches_the_plain_model_when_the_text_fits_in_one_chunk(pooling):
    plain = random_model(pooling=pooling, num_layers=2, layer_norm=True, residual=True)
    chunked = build_model(ModelConfig(**{**plain.config.to_dict(), "chunk_length": 10})).eval()
    chunked.load_state_dict(plain.state_dict())
    ids = torch.randint(2, 30, (3, 10))
    lengths = torch.tensor([10, 6, 1])
    assert torch.allclose(plain(ids, lengths)[0][0], chunked(ids, lengths)[0][0], atol=1e-6)


def test_chunked_encoding_carries_the_forward_state_and_truncates_the_gradient():
    plain = random_model(pooling="last", bidirectional=False)
    chunked = build_model(ModelConfig(**{**plain.config.to_dict(), "chunk_length": 3})).eval()
    chunked.load_state_dict(plain.state_dict())
    ids = torch.randint(2, 30, (2, 9))
    lengths = torch.tensor([9, 7])
    # one direction: carrying the state across segments gives exactly the plain forward pass
    assert torch.allclose(plain(ids, lengths)[0][0], chunked(ids, lengths)[0][0], atol=1e-5)
    embedded = chunked.embed(ids).detach().requires_grad_(True)
    chunked.forward_embedded(embedded, lengths)[0][0].sum().backward()
    grad = embedded.grad.abs().sum(-1)  # (B, T)
    assert torch.all(grad[0, :6] == 0), "the gradient crossed a segment boundary"
    assert torch.all(grad[0, 6:] > 0)


def test_bidirectional_chunked_model_reads_long_texts_beyond_max_length(tmp_path):
    table = make_table(120)
    cfg = run_config(chunk_length=4)
    cfg.text.max_length = 5
    result = train_run(cfg, splits=splits_of(table), runs_dir=tmp_path, log=lambda s: None)
    assert result.status == "completed"
    predictor = Predictor.load(result.run_dir)
    long_text = " ".join(["the film was a story"] * 4)  # 20 tokens
    encoded = predictor.encoder.encode(long_text)
    assert encoded.truncated == 0 and len(encoded.ids) == 20
    # the model reads the last token, far beyond max_length: changing it changes the output
    p_a = predictor.probabilities([long_text + " great"])[0]
    p_b = predictor.probabilities([long_text + " awful"])[0]
    assert not np.allclose(p_a, p_b)
    # without chunks the same settings cut the text at max_length
    plain = TextEncoder.fit(TextConfig(tokenizer="whitespace", max_length=5), table.texts)
    assert plain.encode(long_text).truncated == 15


def test_chunk_length_and_hierarchical_are_validated():
    with pytest.raises(ValueError, match="chunk_length"):
        ModelConfig(chunk_length=-1).validate()
    with pytest.raises(ValueError, match="hierarchical"):
        ModelConfig(chunk_length=8, hierarchical=True).validate()


# ---- multi-task ---------------------------------------------------------------------------------

def test_multitask_metrics_exist_per_task(tmp_path):
    table = make_table(150, multitask=True)
    cfg = run_config()
    cfg.train.epochs = 2
    cfg.train.task_weights = "1,0.5"
    result = train_run(cfg, splits=splits_of(table), runs_dir=tmp_path, log=lambda s: None)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["valid"]["tasks"]) == {"0", "1"}
    assert metrics["valid"]["tasks"]["1"]["labels"] == ["a", "b", "c"]
    history = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert all({"valid_accuracy_task0", "valid_accuracy_task1"} <= set(r) for r in history)
    prediction = Predictor.load(result.run_dir).predict(["the film was great"])[0]
    assert set(prediction.tasks) == {"label", "topic"}


def test_task_weights_must_match_the_label_columns(tmp_path):
    cfg = run_config()
    cfg.train.task_weights = "1,0.5,2"
    with pytest.raises(ValueError, match="task_weights"):
        train_run(cfg, splits=splits_of(make_table(60, multitask=True)), runs_dir=tmp_path, log=lambda s: None)


# ---- layer norm, residual -----------------------------------------------------------------------

def test_layer_norm_and_residual_change_outputs():
    plain = random_model(num_layers=2)
    ids, lengths = torch.randint(2, 30, (3, 6)), torch.tensor([6, 4, 2])
    base = plain(ids, lengths)[0][0]
    residual = random_model(num_layers=2, residual=True)
    residual.load_state_dict(plain.state_dict())  # a residual connection adds no weights
    assert not torch.allclose(residual(ids, lengths)[0][0], base)
    normed = random_model(num_layers=2, layer_norm=True)
    missing = normed.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("norms.") for k in missing)
    assert not torch.allclose(normed(ids, lengths)[0][0], base)


def test_layer_norm_and_residual_models_train(tmp_path):
    result = train_run(run_config(num_layers=2, layer_norm=True, residual=True), splits=splits_of(make_table(160)),
                       runs_dir=tmp_path, log=lambda s: None)
    assert result.status == "completed"
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    state = Predictor.load(result.run_dir).model.state_dict()
    assert "norms.1.weight" in state


# ---- dropout schedule, mixed precision ----------------------------------------------------------

def test_dropout_schedule_moves_the_dropout_rate_over_epochs():
    table = make_table(40)
    encoder = TextEncoder.fit(TextConfig(tokenizer="whitespace"), table.texts)
    seqs = encoder.encode_many(table.texts)
    y = np.array([[0 if label == "neg" else 1] for label in table.labels["label"]])
    model = LSTMClassifier(ModelConfig(vocab_size=len(encoder.vocab), embedding_dim=8, hidden_dim=8, dropout=0.5))
    seen = []
    config = TrainConfig(epochs=4, batch_size=16, warmup_steps=0, patience=10, dropout_schedule="0.1:0.4")
    fit(model, seqs, y, seqs[:8], y[:8], [["neg", "pos"]], config,
        callbacks=[lambda e: seen.append(round(model.dropout.p, 4)) if isinstance(e, AfterEpoch) else None])
    assert seen == [0.1, 0.2, 0.3, 0.4]


def test_cpu_bf16_autocast_trains_or_is_refused_with_a_clear_message(tmp_path):
    from core.training import cpu_bf16_lstm_supported
    cfg = run_config(chunk_length=3)
    cfg.train.amp = "bf16"
    cfg.train.epochs = 2
    if not cpu_bf16_lstm_supported():  # a CPU without bf16 instructions
        with pytest.raises(ValueError, match="cannot run on this CPU.*--amp off"):
            train_run(cfg, splits=splits_of(make_table(80)), runs_dir=tmp_path / "bf16", log=lambda s: None)
        cfg.train.amp = "auto"  # auto falls back to full precision
    result = train_run(cfg, splits=splits_of(make_table(80)), runs_dir=tmp_path, log=lambda s: None)
    assert result.status == "completed"
    assert all(np.isfinite(r["train_loss"]) for r in result.history)
    assert Predictor.load(result.run_dir).predict(["superb film"])[0].label in ("neg", "pos")


def test_amp_and_dropout_schedule_values_are_validated(capsys, tmp_path):
    with pytest.raises(ValueError, match="'amp'"):
        TrainConfig(amp="fp8").validate()
    with pytest.raises(ValueError, match="dropout_schedule"):
        TrainConfig(dropout_schedule="0.3-0.5").validate()
    data = tmp_path / "d.csv"
    make_table(40).to_frame("text").to_csv(data, index=False)
    assert main(["train", "--train", str(data), "--amp", "fp8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'amp'" in err[0] and "fp16" in err[0]
    assert main(["train", "--train", str(data), "--hierarchical", "--chunk-length", "8", "--out", str(tmp_path)]) == 2
    assert "cannot be combined" in capsys.readouterr().err
    args = build_parser().parse_args(["train", "--train", "x.csv", "--amp"])
    assert getattr(args, "train.amp") == "auto"


def test_every_technique_flag_is_listed_in_train_help():
    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    text = train.format_help()
    for flag in ("--amp", "--fgm-epsilon", "--label-col", "--task-weights", "--hierarchical", "--chunk-length",
                 "--layer-norm", "--residual", "--dropout-schedule", "--ngrams", "--ngram-buckets"):
        assert flag in text, flag


# ---- n-gram model beside the LSTM (wide and deep) ----------------------------------------------

def _ngram_scores(model: LSTMClassifier, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model.ngrams(torch.tensor([ids]))[0, :, 0]  # (T,) per-token score of the single binary logit


def test_ngram_scores_see_word_order_only_from_order_two_on():
    words = random_model(ngrams=1)
    pairs = random_model(ngrams=2, ngram_buckets=1000)
    for model in (words, pairs):
        torch.nn.init.normal_(model.ngrams.table.weight)
    text, reordered = [5, 9, 7], [7, 5, 9]
    assert float(_ngram_scores(words, text).sum()) == pytest.approx(float(_ngram_scores(words, reordered).sum()))
    assert float(_ngram_scores(pairs, text).sum()) != pytest.approx(float(_ngram_scores(pairs, reordered).sum()))
    # the bigram ending at a token depends on the token before it, and padding scores nothing
    a, b = _ngram_scores(pairs, [5, 9, 0]), _ngram_scores(pairs, [6, 9, 0])
    assert float(a[1]) != pytest.approx(float(b[1])) and float(a[2]) == float(b[2]) == 0.0


def test_an_untrained_ngram_table_leaves_the_lstm_output_unchanged():
    plain = random_model(seed=4)
    wide = LSTMClassifier(ModelConfig(**{**plain.config.to_dict(), "ngrams": 3, "ngram_buckets": 500})).eval()
    missing, unexpected = wide.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["ngrams.table.weight"] and not unexpected
    ids = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    lengths = torch.tensor([4, 2])
    torch.testing.assert_close(wide(ids, lengths)[0][0], plain(ids, lengths)[0][0])
    torch.nn.init.normal_(wide.ngrams.table.weight)
    assert not torch.allclose(wide(ids, lengths)[0][0], plain(ids, lengths)[0][0])


def test_ngram_model_learns_the_keywords_in_its_linear_part(tmp_path):
    table = make_table(240)
    result = train_run(run_config(ngrams=2, ngram_buckets=5000, fgm_epsilon=0.5, epochs=8), splits=splits_of(table),
                       runs_dir=tmp_path, log=lambda line: None)
    assert result.status == "completed", result.message
    predictor = Predictor.load(result.run_dir)
    test = splits_of(table).test
    assert predictor.evaluate(test)["accuracy"] >= 0.9
    # with the LSTM's head silenced, the n-gram part alone still reads the keywords
    with torch.no_grad():
        for head in predictor.model.heads:
            head.weight.zero_()
            head.bias.zero_()
    assert predictor.evaluate(test)["accuracy"] >= 0.8
    vocab = predictor.encoder.vocab
    weights = predictor.model.ngrams.table.weight.detach()[:, 0]
    assert all(float(weights[vocab.stoi[w]]) > 0 for w in POSITIVE)
    assert all(float(weights[vocab.stoi[w]]) < 0 for w in NEGATIVE)


def test_ngram_explanations_add_up_and_include_the_linear_part(tmp_path):
    from core.explain import Explainer

    result = train_run(run_config(ngrams=2, ngram_buckets=5000, epochs=6), splits=splits_of(make_table(200)),
                       runs_dir=tmp_path, log=lambda line: None)
    predictor = Predictor.load(result.run_dir)
    explainer = Explainer(predictor)
    e = explainer.explain("the film was great with some scenes", "ig", n_steps=50)
    assert e.diagnostics["completeness_error"] <= 0.05
    assert e.tokens[e.top(1)[0]] == "great"
    # silencing the LSTM head leaves a purely linear model: IG then gives each token its exact n-gram score
    with torch.no_grad():
        for head in predictor.model.heads:
            head.weight.zero_()
            head.bias.zero_()
    linear = Explainer(predictor).explain("the film was great", "ig", "pos", n_steps=20)
    ids = predictor.encoder.encode("the film was great").ids
    expected = _ngram_scores(predictor.model, ids) / len(ids) ** 0.5
    assert linear.scores == pytest.approx(expected.tolist(), abs=1e-4)


def test_ngram_options_are_validated(tmp_path, capsys):
    with pytest.raises(ValueError, match="'ngrams' parameter must be an int from 0"):
        ModelConfig(ngrams=4).validate()
    with pytest.raises(ValueError, match="'ngram_buckets' parameter must be an int from 1 to"):
        ModelConfig(ngrams=2, ngram_buckets=0).validate()
    with pytest.raises(ValueError, match="'ngrams' and 'hierarchical'"):
        ModelConfig(ngrams=2, hierarchical=True).validate()
    data = tmp_path / "d.csv"
    data.write_text("text,label\n" + "".join(f"good {i},pos\nbad {i},neg\n" for i in range(20)))
    assert main(["train", "--train", str(data), "--ngrams", "5", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ngrams" in err[0]
