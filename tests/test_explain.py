"""Explanations of a tiny trained model: completeness, alignment, faithfulness, safety, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import NEGATIVE, POSITIVE, keyword_csv
from core.cli import main as cli_main
from core.explain import Explainer, Explanation, deletion_test, explain, spearman
from core.predict import Predictor
from core.text import PAD_ID


def train_keyword_run(root: Path, run_id: str, pooling: str, max_length: int = 12, epochs: int = 10) -> Path:
    from core.models import ModelConfig
    from core.pipeline import DataConfig, RunConfig, train_run
    from core.text import TextConfig
    from core.training import TrainConfig

    data_file = root / "keywords.csv"
    if not data_file.exists():
        data_file.write_bytes(keyword_csv(400))
    cfg = RunConfig(data=DataConfig(train=str(data_file)),
                    text=TextConfig(tokenizer="whitespace", max_length=max_length),
                    model=ModelConfig(embedding_dim=16, hidden_dim=16, pooling=pooling, dropout=0.0),
                    train=TrainConfig(epochs=epochs, warmup_steps=0, lr=0.01, batch_size=32))
    result = train_run(cfg, runs_dir=root / "runs", run_id=run_id, log=lambda line: None)
    assert result.status == "completed", result.message
    return result.run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explain")
    return {"attention": train_keyword_run(root, "attn", "attention"),
            "max": train_keyword_run(root, "maxpool", "max", epochs=2)}


@pytest.fixture(scope="module")
def explainer(runs) -> Explainer:
    return Explainer(Predictor.load(runs["attention"]))


TEXTS = ["the movie was great and the plot", "some people did things terrible story",
         "actors in it about superb", "plot with the story was dreadful in it"]


def test_the_model_learned_the_keywords(explainer):
    # the rest of the file relies on a model that reads the keywords
    for word in POSITIVE[:3]:
        assert explainer.explain(f"the movie was {word}", "attention").label == "pos"
    for word in NEGATIVE[:3]:
        assert explainer.explain(f"the movie was {word}", "attention").label == "neg"


# ---- Integrated Gradients

@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("target", [None, "pos", "neg"])
def test_ig_attributions_add_up_to_the_change_in_log_odds(explainer, text, target):
    e = explainer.explain(text, "ig", target, n_steps=50)
    d = e.diagnostics
    gap = d["f_x"] - d["f_baseline"]
    assert abs(sum(e.scores) - gap) <= 0.05 * abs(gap)
    assert d["completeness_error"] <= 0.05
    assert e.delta == pytest.approx(sum(e.scores) - gap, abs=1e-5)
    # f(x) is the explained class's log-odds, read back from the reported probability
    p = e.probs[e.target]
    assert d["f_x"] == pytest.approx(np.log(p / (1 - p)), abs=1e-3)


def test_ig_delta_matches_captums_own_convergence_delta(explainer):
    from captum.attr import LayerIntegratedGradients

    text = TEXTS[0]
    e = explainer.explain(text, "ig", n_steps=20)
    ids = torch.tensor([explainer.predictor.encoder.encode(text).ids])
    lengths = torch.tensor([ids.shape[1]])
    model = explainer.model

    def forward(x, lens):
        return model(x, lens)[0][0][:, 0]  # the positive class's logit; the label is 'pos'
    assert e.label == "pos"
    lig = LayerIntegratedGradients(forward, model.embedding)
    attributions, delta = lig.attribute(ids, baselines=torch.zeros_like(ids), additional_forward_args=(lengths,),
                                        n_steps=20, return_convergence_delta=True)
    assert e.scores == pytest.approx(attributions.sum(-1)[0].tolist(), abs=1e-5)
    assert e.delta == pytest.approx(float(delta[0]), abs=1e-4)


def test_ig_puts_the_keyword_first_and_flips_sign_for_the_other_class(explainer):
    text = "the plot was superb with actors"
    for_pos = explainer.explain(text, "ig", "pos")
    for_neg = explainer.explain(text, "ig", "neg")
    keyword = for_pos.tokens.index("superb")
    assert for_pos.top(1) == [keyword]
    assert for_pos.scores[keyword] > 0 > for_neg.scores[keyword]
    # binary model: the negative class's log-odds is minus the positive one's
    assert for_neg.scores == pytest.approx([-s for s in for_pos.scores], abs=1e-4)
    assert for_pos.label == for_neg.label == "pos" and for_neg.target == "neg"


def test_ig_steps_and_method_are_validated(explainer):
    with pytest.raises(ValueError, match="'n_steps' parameter must be an int >= 2"):
        explainer.explain("great", "ig", n_steps=1)
    with pytest.raises(ValueError, match="'ig_method' parameter must be one of"):
        explainer.explain("great", "ig", ig_method="simpson")
    with pytest.raises(ValueError, match="'method' parameter must be one of ig, attention, occlusion"):
        explainer.explain("great", "shap")


def test_ig_internal_batching_gives_the_same_attributions(explainer):
    whole = explainer.explain(TEXTS[1], "ig", n_steps=30)
    batched = explainer.explain(TEXTS[1], "ig", n_steps=30, internal_batch_size=7)
    assert batched.scores == pytest.approx(whole.scores, abs=1e-5)


# ---- attention and occlusion

def test_attention_weights_cover_the_tokens_and_sum_to_one(explainer):
    e = explainer.explain("the movie was lovely", "attention")
    assert len(e.scores) == 4 and min(e.scores) >= 0
    assert sum(e.scores) == pytest.approx(1.0, abs=1e-5)
    assert e.delta is None


def test_attention_on_a_model_without_attention_pooling_names_the_fix(runs):
    predictor = Predictor.load(runs["max"])
    with pytest.raises(ValueError, match=r"pools with 'max'.*--pooling attention"):
        explain(predictor, "a great movie", "attention")
    # the other methods still work on it
    assert len(explain(predictor, "a great movie", "ig").scores) == 3


def test_occlusion_score_is_the_log_odds_drop_when_a_token_becomes_pad(explainer):
    text = "plot with the story was dreadful"
    e = explainer.explain(text, "occlusion")
    ids = explainer.predictor.encoder.encode(text).ids
    model = explainer.predictor.model

    def log_odds_neg(seq):
        with torch.no_grad():
            logit = model(torch.tensor([seq]), torch.tensor([len(seq)]))[0][0][0, 0]
        return -float(logit)  # the label is 'neg': minus the positive logit
    assert e.label == "neg" == e.target
    full = log_odds_neg(ids)
    expected = [full - log_odds_neg(ids[:i] + [PAD_ID] + ids[i + 1:]) for i in range(len(ids))]
    assert e.scores == pytest.approx(expected, abs=1e-4)
    assert e.top(1) == [e.tokens.index("dreadful")]


# ---- tokens shown are the tokens read

def test_tokens_are_the_ones_the_model_read_and_truncation_is_counted(explainer):
    words = "the movie was great and the plot with actors in it about some people who did things".split()
    text = " ".join(words)  # 17 words; the run keeps 12
    encoded = explainer.predictor.encoder.encode(text)
    for method in ("ig", "attention", "occlusion"):
        e = explainer.explain(text, method)
        assert e.tokens == encoded.tokens == words[:12]
        assert len(e.scores) == len(e.tokens) == len(e.unknown)
        assert e.truncated == 5


def test_words_outside_the_vocabulary_are_flagged(explainer):
    e = explainer.explain("the movie was zyzzyva great", "ig")
    assert e.tokens == ["the", "movie", "was", "zyzzyva", "great"]
    assert e.unknown == [False, False, False, True, False]


def test_bad_inputs_get_clear_messages(explainer):
    with pytest.raises(ValueError, match=r"Unknown target label 'maybe'.*'neg', 'pos'"):
        explainer.explain("a great movie", "ig", "maybe")
    with pytest.raises(ValueError, match="no tokens"):
        explainer.explain("   ", "ig")


# ---- faithfulness: the deletion test

def test_deleting_the_top_token_hurts_more_and_flips_more_often_than_a_random_one(explainer):
    texts = [f"the movie was {w} and the plot with actors in it" for w in POSITIVE + NEGATIVE]
    for method in ("ig", "occlusion"):
        top_flips = random_flips = 0.0
        for text in texts:
            e = explainer.explain(text, method)
            d = deletion_test(explainer.predictor, text, e, k=1, seed=0)
            assert d["k"] == 1 and d["removed"] == [e.tokens[e.top(1)[0]]]
            assert d["top_drop"] > d["random_drop"], (method, text, d)
            top_flips += d["top_flip"]
            random_flips += d["random_flip_rate"]
        assert top_flips >= 3 and top_flips >= 2 * random_flips, (method, top_flips, random_flips)


def test_deletion_test_is_seeded_and_carried_by_each_explanation(explainer):
    e = explainer.explain(TEXTS[0], "occlusion")
    carried = e.diagnostics["deletion"]
    again = deletion_test(explainer.predictor, TEXTS[0], e, k=3, seed=0)
    assert again == carried
    other_seed = deletion_test(explainer.predictor, TEXTS[0], e, k=3, seed=1)
    assert other_seed["top_drop"] == carried["top_drop"]
    with pytest.raises(ValueError, match="other tokens"):
        deletion_test(explainer.predictor, "a different text entirely", e)


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    a, b = [0.1, 0.4, 0.4, 0.9, -0.2], [1, 3, 2, 5, 0]
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


# ---- the caller's model is never changed (a model may be training on a GPU meanwhile)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the GPU path runs where one is present"))]


@pytest.mark.parametrize("device", DEVICES)
def test_explaining_leaves_a_training_model_untouched(runs, device):
    predictor = Predictor.load(runs["attention"])
    model = predictor.model.to(device)
    model.train()  # as a model in the middle of a training job would be
    model.embedding.weight.requires_grad_(False)  # e.g. frozen pretrained vectors
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    explainer = Explainer(predictor)
    for method in ("ig", "attention", "occlusion"):
        e = explainer.explain("the movie was great", method)
        assert len(e.scores) == 4
    assert model.training and all(m.training for m in model.modules())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(p.device.type == device for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the explainer reads the model in eval mode: same probabilities as the predictor in eval mode
    model.eval()
    expected = predictor.predict(["the movie was great"])[0].probs
    assert e.probs == pytest.approx(expected, abs=1e-5)


# ---- CLI

def test_cli_explain_json(runs, capsys):
    code = cli_main(["explain", "--run", str(runs["attention"]), "--json", "--steps", "20",
                     "the movie was <b>superb</b>"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert {"tokens", "attributions", "method", "label", "target", "probs", "delta"} <= set(out)
    assert out["tokens"] == ["the", "movie", "was", "<b>superb</b>"]
    assert len(out["attributions"]) == 4 and out["method"] == "ig"
    assert out["target"] == out["label"] and set(out["probs"]) == {"neg", "pos"}
    assert isinstance(out["delta"], float)


def test_cli_explain_text_output_and_target(runs, capsys):
    assert cli_main(["explain", "--run", str(runs["attention"]), "--method", "occlusion", "--target", "neg",
                     "the", "movie", "was", "lovely"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("predicted pos") and "occlusion scores for neg" in out[0]
    assert [line.split()[0] for line in out[1:5]] == ["the", "movie", "was", "lovely"]


@pytest.mark.parametrize("args, message", [
    (["--method", "attention"], "pools with 'max'"),
    (["--target", "maybe"], "Unknown target label 'maybe'"),
])
def test_cli_explain_errors_exit_2_with_one_line(runs, capsys, args, message):
    code = cli_main(["explain", "--run", str(runs["max"]), *args, "a great movie"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_explanation_record_serialises_with_the_cli_keys():
    e = Explanation("a b", ["a", "b"], [0.5, -0.5], "ig", "pos", "pos", {"neg": 0.2, "pos": 0.8}, 0.001)
    d = e.to_dict()
    assert d["attributions"] == [0.5, -0.5] and "scores" not in d
    assert list(d)[:3] == ["text", "tokens", "attributions"]
