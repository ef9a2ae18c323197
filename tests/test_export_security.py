"""Model files from elsewhere are read as safetensors and JSON only (core/export.py).

A pickle disguised as a model must be refused before it runs; ONNX files must not reach outside
themselves; bundle zips must not write or read outside the bundle.
"""

from __future__ import annotations

import io
import json
import pathlib
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from core.cli import main as cli_main
from core.export import (ExportError, OnnxPredictor, check_onnx, export_bundle, export_onnx, load_bundle,
                         load_upload, read_bundle_members)
from core.models import LSTMClassifier, ModelConfig
from core.predict import Predictor

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread


class _Payload:
    """Unpickling this creates a file: the stand-in for arbitrary code."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return pathlib.Path.touch, (self.sentinel,)


def malicious_pickle(sentinel: Path) -> bytes:
    return pickle.dumps({"embedding.weight": _Payload(sentinel)}, protocol=4)


def malicious_torch_zip(sentinel: Path) -> bytes:
    """The torch.save layout: a zip whose data.pkl is the payload."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("archive/data.pkl", malicious_pickle(sentinel))
        zf.writestr("archive/version", "3\n")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder written by hand from an untrained tiny model (no training needed to test loading)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=6, embedding_dim=4, hidden_dim=4, num_classes=[2])
    model = LSTMClassifier(config)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model": config.to_dict(), "run": {}}))
    (folder / "vocab.json").write_text(json.dumps({"tokenizer": {"tokenizer": "whitespace"},
                                                   "itos": ["<pad>", "<unk>", "good", "bad", "film", "plot"]}))
    (folder / "labels.json").write_text(json.dumps({"columns": ["label"], "labels": [["neg", "pos"]]}))
    return folder


def bundle_with(run_dir: Path, tmp_path: Path, replace: dict[str, bytes] | None = None,
                extra: dict[str, bytes] | None = None) -> bytes:
    """A genuine bundle with some members replaced or added."""
    good = zipfile.ZipFile(export_bundle(run_dir, tmp_path / "good.zip"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in good.namelist():
            zf.writestr(name, (replace or {}).get(name, good.read(name)))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_the_payload_is_live(tmp_path):
    # proves the refusal tests below could fail: unpickling really runs the payload
    sentinel = tmp_path / "ran"
    pickle.loads(malicious_pickle(sentinel))
    assert sentinel.exists()


@pytest.mark.parametrize("make", [malicious_pickle, malicious_torch_zip])
def test_pickle_disguised_as_bundle_weights_is_refused_unrun(make, run_dir, tmp_path):
    sentinel = tmp_path / "ran"
    data = bundle_with(run_dir, tmp_path, replace={"model.safetensors": make(sentinel)})
    with pytest.raises(ExportError, match="pickle") as err:
        load_bundle(data, name="model.zip")
    assert "model.safetensors" in str(err.value)
    assert not sentinel.exists()


def test_pickled_checkpoint_inside_a_bundle_is_refused_unrun(run_dir, tmp_path):
    sentinel = tmp_path / "ran"
    data = bundle_with(run_dir, tmp_path, extra={"model.pt": malicious_torch_zip(sentinel)})
    with pytest.raises(ExportError, match="pickle"):
        load_bundle(data)
    assert not sentinel.exists()


@pytest.mark.parametrize("filename", ["model.pt", "model.safetensors", "bundle.zip", "model.onnx"])
def test_pickle_uploaded_under_any_name_is_refused_unrun(filename, tmp_path):
    sentinel = tmp_path / "ran"
    files = {filename: malicious_pickle(sentinel), "model.json": b"{}"}
    with pytest.raises(ExportError, match="pickle"):
        load_upload(files)
    assert not sentinel.exists()


def test_cli_refuses_a_pickled_bundle_with_one_line(tmp_path, capsys):
    sentinel = tmp_path / "ran"
    path = tmp_path / "model.zip"
    path.write_bytes(malicious_pickle(sentinel))
    assert cli_main(["predict", "--bundle", str(path), "hello"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "pickle" in err and len(err.strip().splitlines()) == 1
    assert not sentinel.exists()


def test_json_member_that_is_a_pickle_is_refused_unrun(run_dir, tmp_path):
    sentinel = tmp_path / "ran"
    data = bundle_with(run_dir, tmp_path, replace={"labels.json": malicious_pickle(sentinel)})
    with pytest.raises(ExportError, match="labels.json"):
        load_bundle(data)
    assert not sentinel.exists()


# ---------------------------------------------------------------------------------------------- ONNX


def small_onnx(run_dir: Path, tmp_path: Path) -> Path:
    return export_onnx(Predictor.load(run_dir), tmp_path / "model.onnx")


def test_onnx_with_external_data_is_refused(run_dir, tmp_path):
    import onnx

    path = small_onnx(run_dir, tmp_path)
    proto = onnx.load(str(path))
    external = tmp_path / "external"
    external.mkdir()
    onnx.save_model(proto, str(external / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    (external / "model.json").write_bytes((tmp_path / "model.json").read_bytes())
    with pytest.raises(ExportError, match="external data") as err:
        OnnxPredictor.load(external / "model.onnx")
    assert "weights.bin" in str(err.value)


def test_onnx_pointing_outside_its_folder_is_refused_before_any_read(run_dir, tmp_path):
    from onnx import TensorProto

    import onnx

    proto = onnx.load(str(small_onnx(run_dir, tmp_path)))
    tensor = proto.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/passwd"
    with pytest.raises(ExportError, match="external data"):
        check_onnx(proto.SerializeToString(), "evil.onnx")


def test_self_contained_onnx_passes_the_check(run_dir, tmp_path):
    path = small_onnx(run_dir, tmp_path)
    assert check_onnx(path.read_bytes()).graph.node
    predictor = OnnxPredictor.load(path)
    assert predictor.predict(["good film"])[0].label in ("neg", "pos")


def test_garbage_onnx_gives_a_clear_message(tmp_path):
    with pytest.raises(ExportError, match="not an ONNX model"):
        check_onnx(b"\x12\x34 this is not protobuf \xff\xff", "junk.onnx")


# ---------------------------------------------------------------------------------------------- zips


@pytest.mark.parametrize("member", ["../escape.json", "/etc/evil.json", "sub/config.json", "..\\escape.json",
                                    "C:/evil.json"])
def test_bundle_with_path_traversal_is_refused(member, run_dir, tmp_path):
    data = bundle_with(run_dir, tmp_path, extra={member: b"{}"})
    with pytest.raises(ExportError, match="refused"):
        load_bundle(data)
    assert not (tmp_path.parent / "escape.json").exists()


def test_bundle_with_a_symlink_member_is_refused(run_dir, tmp_path):
    good = zipfile.ZipFile(export_bundle(run_dir, tmp_path / "good.zip"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in good.namelist():
            if name != "metrics.json":
                zf.writestr(name, good.read(name))
        link = zipfile.ZipInfo("metrics.json")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(ExportError, match="symbolic link"):
        load_bundle(buffer.getvalue())


def test_zip_bomb_member_is_refused(run_dir, tmp_path):
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("vocab.json", b" " * 20_000_000)
    with pytest.raises(ExportError, match="zip bomb"):
        read_bundle_members(bomb.getvalue(), "bomb.zip")


def test_size_limits_are_enforced(run_dir, tmp_path):
    data = bundle_with(run_dir, tmp_path)
    with pytest.raises(ExportError, match="limit"):
        load_bundle(data, max_bytes=len(data) - 1)
    path = tmp_path / "m.zip"
    path.write_bytes(data)
    with pytest.raises(ExportError, match="limit"):
        load_bundle(path, max_bytes=1000)
    assert load_bundle(data).labels == [["neg", "pos"]]


def test_unexpected_or_missing_members_are_refused(run_dir, tmp_path):
    with pytest.raises(ExportError, match="unexpected member 'notes.txt'"):
        load_bundle(bundle_with(run_dir, tmp_path, extra={"notes.txt": b"hi"}))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("config.json", "{}")
    with pytest.raises(ExportError, match="lacks model.safetensors"):
        load_bundle(buffer.getvalue())


def test_weights_that_do_not_fit_the_config_give_a_clear_message(run_dir, tmp_path):
    from safetensors.torch import save

    wrong = save({"embedding.weight": torch.zeros(3, 3)})
    with pytest.raises(ExportError, match="weights do not match"):
        load_bundle(bundle_with(run_dir, tmp_path, replace={"model.safetensors": wrong}))
