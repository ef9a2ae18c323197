"""Exported formats give the same answers as the trained model (core/export.py)."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from core.cli import main as cli_main
from core.export import (ExportError, OnnxPredictor, export_bundle, export_int8, export_onnx, export_onnx_int8,
                         export_run, format_parity, load_bundle, load_int8, load_upload, pad_batch, quantize_model)
from core.models import LSTMClassifier, ModelConfig
from core.pipeline import train_run
from core.predict import Predictor
from core.text import TextConfig, TextEncoder, Vocabulary
from conftest import FILLER, NEGATIVE, POSITIVE
from helpers import tiny_config, write_keyword_csv

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    # texts of 1 to 16 words (batches mix lengths), labels in turn, one of five keywords per label
    data = write_keyword_csv(root / "train.csv", 500, labels=("pos", "neg"), cycle_labels=True, length=(0, 15),
                             filler=FILLER, keywords={"pos": POSITIVE, "neg": NEGATIVE})
    cfg = tiny_config(data, epochs=8, test_fraction=0.2, embedding_dim=16, hidden_dim=16, dropout=0.1, batch_size=32,
                      patience=8, seed=13)
    result = train_run(cfg, runs_dir=root / "runs", run_id="keywords", log=lambda line: None)
    assert result.status == "completed", result.message
    return result.run_dir


@pytest.fixture(scope="module")
def fp32(run_dir) -> Predictor:
    return Predictor.load(run_dir)


def read_test_texts(run_dir) -> list[str]:
    with open(run_dir / "test.csv", encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def mixed_batch(predictor, texts):
    seqs = predictor.encoder.encode_many(texts)
    ids, lengths = pad_batch(seqs)
    assert len(set(lengths.tolist())) > 3, "the batch should mix lengths"
    return ids, lengths


def torch_logits(model, ids, lengths) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in model(torch.from_numpy(ids), torch.from_numpy(lengths))[0]]


# ---------------------------------------------------------------------------------------------- ONNX


def test_onnx_matches_fp32_on_mixed_length_batches(run_dir, fp32, tmp_path):
    path = export_onnx(fp32, tmp_path / "clf.onnx")
    assert (tmp_path / "clf.json").is_file()
    onnx = OnnxPredictor.load(path)
    texts = read_test_texts(run_dir)[:40]
    ids, lengths = mixed_batch(fp32, texts)
    expected = torch_logits(fp32.model, ids, lengths)[0]
    got = onnx.run(ids, lengths)[0]
    assert np.abs(expected - got).max() <= 1e-4
    # the short texts in the padded batch score as if each were alone
    for row in np.argsort(lengths)[:3]:
        alone = onnx.run(ids[row:row + 1, :lengths[row]], lengths[row:row + 1])[0]
        assert np.abs(alone - got[row]).max() <= 1e-4
    assert [p.label for p in onnx.predict(texts)] == [p.label for p in fp32.predict(texts)]


@pytest.mark.parametrize("variant", [
    dict(pooling="last"), dict(pooling="mean", bidirectional=False), dict(pooling="attention"),
    dict(pooling="max", num_layers=2, layer_norm=True, residual=True), dict(pooling="last", num_layers=2),
    dict(pooling="attention", ngrams=3, ngram_buckets=101),
])
def test_onnx_export_of_each_architecture_matches_torch(variant, tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=60, embedding_dim=8, hidden_dim=8, dropout=0.0, num_classes=[2, 4], **variant)
    model = LSTMClassifier(config).eval()
    if model.norms is not None:  # non-trivial LayerNorm so that padding handling shows
        for norm in model.norms:
            torch.nn.init.normal_(norm.bias)
    if model.ngrams is not None:  # a trained-looking n-gram table, so that its hashing shows
        torch.nn.init.normal_(model.ngrams.table.weight)
    encoder = TextEncoder(TextConfig(tokenizer="whitespace"), Vocabulary(["<pad>", "<unk>"] + [f"w{i}" for i in range(58)]))
    predictor = Predictor(model, encoder, ["sentiment", "topic"], [["neg", "pos"], ["a", "b", "c", "d"]])
    onnx = OnnxPredictor.load(export_onnx(predictor, tmp_path / "m.onnx"))
    rng = np.random.default_rng(1)
    seqs = [rng.integers(2, 60, size=n).tolist() for n in (9, 1, 4, 7, 2, 9)]
    ids, lengths = pad_batch(seqs)
    for expected, got in zip(torch_logits(model, ids, lengths), onnx.run(ids, lengths)):
        assert np.abs(expected - got).max() <= 1e-4
    texts = ["w1 w2 w3", "w5", "w7 w8 w9 w10 w11 zzz"]
    for a, b in zip(onnx.predict(texts), predictor.predict(texts)):
        assert a.tasks["topic"]["label"] == b.tasks["topic"]["label"]
        assert a.probs == pytest.approx(b.probs, abs=1e-5)


def test_onnx_without_its_sidecar_is_refused_with_a_clear_message(fp32, tmp_path):
    path = export_onnx(fp32, tmp_path / "clf.onnx")
    (tmp_path / "clf.json").unlink()
    with pytest.raises(ExportError, match="sidecar"):
        OnnxPredictor.load(path)


# ---------------------------------------------------------------------------------------------- ONNX int8


def graph_summary(path: Path) -> tuple[set[str], dict[str, tuple[int, tuple[int, ...]]]]:
    """(op types, initializer name -> (ONNX data type, shape)) of an ONNX file."""
    import onnx

    proto = onnx.load(str(path))
    return ({n.op_type for n in proto.graph.node},
            {t.name: (t.data_type, tuple(t.dims)) for t in proto.graph.initializer})


def test_onnx_int8_matches_fp32_on_mixed_length_batches(run_dir, fp32, tmp_path):
    from onnx import TensorProto

    path = export_onnx_int8(fp32, tmp_path / "clf.onnx")
    assert json.loads((tmp_path / "clf.json").read_text())["format"] == "onnx-int8"
    ops, initializers = graph_summary(path)
    assert {"DynamicQuantizeLSTM", "MatMulInteger"} <= ops and "LSTM" not in ops
    vocab_rows = [(dtype, shape) for dtype, shape in initializers.values() if shape[:1] == (fp32.model.config.vocab_size,)]
    assert (TensorProto.INT8, (fp32.model.config.vocab_size, 16)) in vocab_rows  # the embedding table
    assert not any(dtype == TensorProto.FLOAT and len(shape) == 2 and shape[1] == 16 for dtype, shape in vocab_rows)

    onnx_int8 = OnnxPredictor.load(path)
    assert onnx_int8.metadata["format"] == "onnx-int8"
    texts = read_test_texts(run_dir)[:40]
    ids, lengths = mixed_batch(fp32, texts)
    expected = torch_logits(fp32.model, ids, lengths)[0]
    got = onnx_int8.run(ids, lengths)[0]
    # what a user reads is the probability: int8 moves it by a few points at most (a confident logit
    # of -3.3 may come back as -2.4, i.e. p = 0.036 -> 0.087), and never across the decision boundary
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    assert np.abs(sigmoid(expected) - sigmoid(got)).max() < 0.1
    assert (np.sign(expected) == np.sign(got)).all()
    # padding does not leak into the short texts: each scores nearly as if it were alone (dynamic
    # quantisation scales activations per call, so a text's int8 logits move a little with its batch;
    # 0.19 measured with ONNX Runtime 1.32)
    for row in np.argsort(lengths)[:3]:
        alone = onnx_int8.run(ids[row:row + 1, :lengths[row]], lengths[row:row + 1])[0]
        assert np.abs(alone - got[row]).max() < 0.3
        assert np.sign(alone[0, 0]) == np.sign(got[row, 0])


def test_onnx_int8_agrees_with_fp32_on_the_test_set(run_dir, fp32, tmp_path):
    onnx_int8 = OnnxPredictor.load(export_onnx_int8(fp32, tmp_path / "q.onnx"))
    texts = read_test_texts(run_dir) + ["", "a word the model never saw"]
    a = fp32.predict(texts)
    b = onnx_int8.predict(texts)
    assert len(texts) >= 80
    assert np.mean([x.label == y.label for x, y in zip(a, b)]) >= 0.99
    assert max(abs(x.probs["pos"] - y.probs["pos"]) for x, y in zip(a, b)) < 0.05


@pytest.mark.parametrize("variant", [dict(pooling="attention"), dict(pooling="mean", bidirectional=False),
                                     dict(pooling="max", num_layers=2, layer_norm=True, residual=True)])
def test_onnx_int8_is_a_quarter_of_the_size_when_the_embedding_dominates(variant, tmp_path):
    torch.manual_seed(0)
    vocab = ["<pad>", "<unk>"] + [f"w{i}" for i in range(3998)]
    config = ModelConfig(vocab_size=len(vocab), embedding_dim=32, hidden_dim=8, dropout=0.0, num_classes=[2, 3],
                         **variant)
    model = LSTMClassifier(config).eval()
    predictor = Predictor(model, TextEncoder(TextConfig(tokenizer="whitespace"), Vocabulary(vocab)),
                          ["sentiment", "topic"], [["neg", "pos"], ["a", "b", "c"]])
    fp32_size = export_onnx(predictor, tmp_path / "fp32.onnx").stat().st_size
    path = export_onnx_int8(predictor, tmp_path / "int8.onnx")
    assert fp32_size / path.stat().st_size >= 3
    onnx_int8 = OnnxPredictor.load(path)
    rng = np.random.default_rng(2)
    ids, lengths = pad_batch([rng.integers(2, len(vocab), size=n).tolist() for n in (12, 1, 5, 9, 3)])
    # an untrained model: logits near 0 to 2, moved by int8 by up to 0.36 (2 layers + LayerNorm + residual)
    for expected, got in zip(torch_logits(model, ids, lengths), onnx_int8.run(ids, lengths)):
        assert expected.shape == got.shape and np.abs(expected - got).max() < 0.5


def test_onnx_int8_with_external_data_is_refused(fp32, tmp_path):
    import onnx

    proto = onnx.load(str(export_onnx_int8(fp32, tmp_path / "q.onnx")))
    external = tmp_path / "external"
    external.mkdir()
    onnx.save_model(proto, str(external / "q.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    (external / "q.json").write_bytes((tmp_path / "q.json").read_bytes())
    with pytest.raises(ExportError, match="external data"):
        OnnxPredictor.load(external / "q.onnx")
    with pytest.raises(ExportError, match="external data"):
        load_upload({"q.onnx": (external / "q.onnx").read_bytes(), "q.json": (tmp_path / "q.json").read_bytes()})


# ---------------------------------------------------------------------------------------------- int8


def test_int8_file_is_int8_and_reloads_to_the_same_model(run_dir, fp32, tmp_path):
    path = export_int8(fp32, tmp_path / "clf-int8.safetensors")
    with safe_open(str(path), "pt") as handle:
        dtypes = {key: handle.get_tensor(key).dtype for key in handle.keys()}
    assert dtypes["embedding.weight_int8"] == torch.int8
    assert dtypes["lstms.0.weight_ih_l0.int8"] == torch.int8 and dtypes["heads.0.weight.int8"] == torch.int8
    assert path.stat().st_size < (run_dir / "model.safetensors").stat().st_size / 2
    reloaded = load_int8(path)
    ids, lengths = mixed_batch(fp32, read_test_texts(run_dir)[:40])
    in_memory = torch_logits(quantize_model(fp32.model), ids, lengths)[0]
    np.testing.assert_array_equal(torch_logits(reloaded.model, ids, lengths)[0], in_memory)
    assert np.abs(in_memory - torch_logits(fp32.model, ids, lengths)[0]).max() < 0.1


def test_int8_agrees_with_fp32_on_the_test_set(run_dir, fp32, tmp_path):
    int8 = load_int8(export_int8(fp32, tmp_path / "m.safetensors"))
    texts = read_test_texts(run_dir)
    a = [p.label for p in fp32.predict(texts)]
    b = [p.label for p in int8.predict(texts)]
    assert len(texts) >= 80
    assert np.mean([x == y for x, y in zip(a, b)]) >= 0.99


# ---------------------------------------------------------------------------------------------- bundle


def test_bundle_round_trip_predicts_like_the_run(run_dir, fp32, tmp_path):
    path = export_bundle(run_dir, tmp_path / "model.zip")
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        card = zf.read("MODEL_CARD.md").decode()
        config = json.loads(zf.read("config.json"))
    assert {"model.safetensors", "config.json", "vocab.json", "labels.json", "tokenizer.json",
            "metrics.json", "MODEL_CARD.md"} <= names
    assert not any(n.endswith((".pt", ".pkl", ".bin")) for n in names)
    assert "## Intended use" in card and "## Limitations" in card
    test_acc = json.loads((run_dir / "metrics.json").read_text())["test"]["primary"]["accuracy"]
    assert f"{test_acc:.4f}" in card
    assert config["run"]["data"]["train"] == "train.csv"  # no local folder names travel in a bundle
    loaded = load_bundle(path)
    texts = read_test_texts(run_dir)[:30] + ["", "a word the model never saw"]
    for a, b in zip(loaded.predict(texts), fp32.predict(texts)):
        assert (a.label, a.probs) == (b.label, b.probs)
    assert loaded.labels == fp32.labels


def test_bundle_supports_explanations(run_dir, tmp_path):
    from core.explain import Explainer

    predictor = load_bundle(export_bundle(run_dir, tmp_path / "model.zip"))
    explanation = Explainer(predictor).explain("the plot was superb", method="occlusion")
    assert explanation.tokens == ["the", "plot", "was", "superb"]
    assert int(np.argmax(np.abs(explanation.scores))) == 3


def test_upload_of_each_format_gives_a_working_predictor(run_dir, fp32, tmp_path):
    bundle = export_bundle(run_dir, tmp_path / "b.zip")
    onnx = export_onnx(fp32, tmp_path / "m.onnx")
    int8 = export_int8(fp32, tmp_path / "q.safetensors")
    onnx_int8 = export_onnx_int8(fp32, tmp_path / "o8.onnx")
    uploads = [{"b.zip": bundle.read_bytes()},
               {"m.onnx": onnx.read_bytes(), "m.json": (tmp_path / "m.json").read_bytes()},
               {"o8.onnx": onnx_int8.read_bytes(), "o8.json": (tmp_path / "o8.json").read_bytes()},
               {"q.safetensors": int8.read_bytes(), "q.json": (tmp_path / "q.json").read_bytes()}]
    for files in uploads:
        predictor = load_upload(files)
        assert [p.label for p in predictor.predict(["a superb movie", "a dreadful movie"])] == ["pos", "neg"]
    with pytest.raises(ExportError, match="sidecar"):
        load_upload({"m.onnx": onnx.read_bytes()})


# ---------------------------------------------------------------------------------------------- parity + CLI


def test_export_run_writes_a_parity_report(run_dir, tmp_path):
    result = export_run(run_dir, ["bundle", "int8", "onnx", "onnx-int8"], tmp_path / "out", latency_examples=8,
                        repeats=1, log=lambda line: None)
    saved = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert saved == json.loads(json.dumps(result.parity))
    formats = saved["formats"]
    assert set(formats) == {"fp32", "int8", "onnx", "onnx-int8"}
    assert formats["onnx"]["max_logit_diff"] <= 1e-4 and saved["targets"]["onnx"]["logit_ok"]
    for name in ("int8", "onnx-int8"):
        assert formats[name]["agreement"] >= 0.99
        assert formats[name]["size_bytes"] < formats["fp32"]["size_bytes"]
        assert set(saved["targets"][name]) >= {"size_ok", "speed_ok", "accuracy_ok"}
    assert formats["onnx-int8"]["size_bytes"] < formats["onnx"]["size_bytes"]
    assert result.paths["onnx-int8"].name == "model-onnx-int8.onnx"
    assert (tmp_path / "out" / "model-onnx-int8.json").is_file() and (tmp_path / "out" / "model-int8.json").is_file()
    table = format_parity(saved)
    assert "int8 (ONNX Runtime)" in table and "int8 (PyTorch)" in table and "targets" in table
    assert formats["fp32"]["accuracy"] >= 0.9
    assert all(f["p50_ms_batch_1"] > 0 and f["p50_ms_batch_32"] > 0 for f in formats.values())
    for name in ("bundle", "int8", "onnx", "onnx-int8"):
        assert result.paths[name].is_file()
    assert "parity.json" in zipfile.ZipFile(result.paths["bundle"]).namelist()


def test_cli_export_then_predict_from_bundle_onnx_and_onnx_int8(run_dir, tmp_path, capsys):
    assert cli_main(["export", "--run", str(run_dir), "--format", "bundle", "--out", str(tmp_path / "m.zip"),
                     "--no-parity"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "m.zip")
    assert cli_main(["export", "--run", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "max|dlogit|" in out and (tmp_path / "parity.json").is_file()
    assert cli_main(["export", "--run", str(run_dir), "--format", "onnx-int8", "--out", str(tmp_path / "q.onnx"),
                     "--no-parity"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "q.onnx")
    assert json.loads((tmp_path / "q.json").read_text())["format"] == "onnx-int8"
    for flag, path in (("--bundle", "m.zip"), ("--onnx", "m.onnx"), ("--onnx", "q.onnx")):
        assert cli_main(["predict", flag, str(tmp_path / path), "--json", "a superb film", "dreadful"]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
        assert [line["label"] for line in lines] == ["pos", "neg"]


def test_cli_export_rejects_an_unknown_format(run_dir, capsys):
    assert cli_main(["export", "--run", str(run_dir), "--format", "tflite"]) == 2
    err = capsys.readouterr().err
    assert "tflite" in err and "bundle, int8, onnx, onnx-int8" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- page


def test_export_page_exports_and_offers_downloads(run_dir, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LSTM_STUDIO_RUNS_DIR", str(run_dir.parent))
    monkeypatch.setenv("LSTM_STUDIO_DEMO_DIR", str(tmp_path / "no-demo"))
    page = Path(__file__).resolve().parent.parent / "pages" / "6_Export.py"
    at = AppTest.from_file(str(page), default_timeout=300).run()
    assert not at.exception
    assert any("ONNX int8" in option for option in at.multiselect(key="export.formats").options)
    at.multiselect(key="export.formats").set_value(["bundle", "onnx", "onnx-int8"]).run()
    at.button(key="export.go").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert list(table["format"]) == ["fp32 (PyTorch)", "int8 (PyTorch)", "fp32 (ONNX Runtime)", "int8 (ONNX Runtime)"]
    assert table["targets"].iloc[0] == "–" and all(table["targets"].iloc[1:] != "–")
    labels = [b.proto.label for b in at.get("download_button")]
    assert any("model-bundle.zip" in x for x in labels) and any("model.onnx" in x for x in labels)
    assert any("model.json" in x for x in labels)
    assert any("model-onnx-int8.onnx" in x for x in labels) and any("model-onnx-int8.json" in x for x in labels)
    assert any("ONNX logits differ" in s.value for s in at.success)
    checks = [m.value for m in list(at.success) + list(at.warning)]
    assert any(c.startswith("int8 (ONNX Runtime) loses") for c in checks)


def test_onnx_export_refuses_chunked_models_but_bundle_still_works(tmp_path):
    """A chunked model reads long texts in segments the ONNX graph cannot reproduce: ONNX is
    refused with a clear message, and the parity report falls back to fp32 vs int8."""
    from core.export import ExportError, export_run, onnx_model_bytes
    from core.predict import Predictor

    path = write_keyword_csv(tmp_path / "tiny.csv", 120, length=(3, 12))  # most texts span several segments
    cfg = tiny_config(path, epochs=1, chunk_length=4)
    run = train_run(cfg, runs_dir=tmp_path / "runs", log=lambda _: None)
    with pytest.raises(ExportError, match="bundle or int8"):
        onnx_model_bytes(Predictor.load(run.run_dir))
    result = export_run(run.run_dir, ["bundle"], tmp_path / "out")
    assert (tmp_path / "out").exists() and result.parity is not None
    assert "onnx" not in result.parity


def test_a_run_without_a_test_split_still_exports_and_says_why_there_is_no_parity(run_dir, tmp_path):
    """The demo model ships without its dataset's text: every format is written, parity is skipped."""
    import shutil

    from core.export import export_run

    copy = tmp_path / "no-test-split"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("test.csv", "export"))
    lines = []
    result = export_run(copy, ["bundle", "onnx"], tmp_path / "out", log=lines.append)
    assert result.parity is None
    assert any("no test split" in line for line in lines)
    assert (tmp_path / "out" / "model-bundle.zip").is_file() and (tmp_path / "out" / "model.onnx").is_file()


def test_int8_export_of_an_ngram_model_reloads_close_to_fp32(tmp_path):
    torch.manual_seed(0)
    vocab = ["<pad>", "<unk>"] + [f"w{i}" for i in range(400)]
    model = LSTMClassifier(ModelConfig(vocab_size=len(vocab), embedding_dim=16, hidden_dim=8, dropout=0.0,
                                       ngrams=2, ngram_buckets=2000)).eval()
    torch.nn.init.normal_(model.ngrams.table.weight)
    predictor = Predictor(model, TextEncoder(TextConfig(tokenizer="whitespace"), Vocabulary(vocab)), ["label"],
                          [["neg", "pos"]])
    reloaded = load_int8(export_int8(predictor, tmp_path / "wide.safetensors"))
    rng = np.random.default_rng(3)
    ids, lengths = pad_batch([rng.integers(2, len(vocab), size=n).tolist() for n in (12, 1, 5, 9)])
    expected = torch_logits(model, ids, lengths)[0]
    assert np.abs(torch_logits(reloaded.model, ids, lengths)[0] - expected).max() < 0.1
