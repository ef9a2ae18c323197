"""Deployment formats for a trained run, and how far each one drifts from the original.

- **int8**: LSTM and Linear layers quantised dynamically (int8 weights, activations quantised on
  the fly) and the embedding stored as int8 rows with one scale per row. Saved as safetensors
  (int8 tensors + scales) beside a JSON sidecar; the loader rebuilds the quantised model.
- **ONNX**: one graph with dynamic batch and time axes. Each LSTM layer is the ONNX ``LSTM`` op
  with its ``sequence_lens`` input, so a short text in a padded batch is read exactly as if it were
  alone (the backward direction starts at its last real token, not at the padding). A JSON sidecar
  next to ``model.onnx`` (``model.json``) holds the vocabulary, tokenizer settings and labels.
- **onnx-int8**: the ONNX graph quantised for ONNX Runtime: each LSTM becomes ``DynamicQuantizeLSTM``
  and each MatMul/Gemm ``MatMulInteger`` (int8 weights with one scale per output row, activations
  quantised on the fly), and the embedding is stored as int8 rows with one scale per row, gathered
  and rescaled in the graph. Same sidecar contract as ONNX (``format`` says ``onnx-int8``). Where the
  PyTorch int8 model pays for re-quantising every LSTM step, ONNX Runtime's fused kernels make this
  the fast *and* small format.
- **bundle**: a zip of ``model.safetensors``, ``config.json``, ``vocab.json``, ``labels.json``,
  ``tokenizer.json``, ``metrics.json`` and ``MODEL_CARD.md``; ``load_bundle`` turns it back into a
  :class:`~core.predict.Predictor` without the training code path.

Nothing here ever unpickles. Files from elsewhere are read as safetensors or JSON only; a pickle
(or a ``torch.save`` zip) is refused before any of it is interpreted, ONNX files that point at
external data are refused, and zips are checked for size, compression ratio and member names.

``export_run(run_dir, formats, out_dir)`` writes the requested formats and ``parity.json``: the
fp32 model against int8, ONNX and ONNX int8 on the run's test set (accuracy, agreement, largest probability
and logit differences, file sizes, p50 latency at batch 1 and 32).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import struct
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from core.models import EnsembleClassifier, EnsembleConfig, LSTMClassifier, ModelConfig, build_model, model_config_from_dict
from core.predict import Prediction, Predictor
from core.runs import atomic_save, atomic_write_bytes, atomic_write_json
from core.text import PAD_ID, TextConfig, TextEncoder, Vocabulary

FORMATS = ("bundle", "int8", "onnx", "onnx-int8")
ONNX_FORMATS = ("onnx", "onnx-int8")  # sidecar ``format`` values an OnnxPredictor loads
DEFAULT_MAX_BYTES = 500 * 1024 * 1024  # largest file (and largest unpacked bundle) accepted
MAX_COMPRESSION_RATIO = 200  # a bundle member that unpacks to more than this many times its size is refused
ONNX_OPSET = 17
SIDECAR_VERSION = 1
BUNDLE_MEMBERS = ("model.safetensors", "config.json", "vocab.json", "labels.json", "tokenizer.json",
                  "metrics.json", "MODEL_CARD.md", "parity.json")
BUNDLE_REQUIRED = ("model.safetensors", "config.json", "vocab.json", "labels.json")
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib", ".npy", ".npz")


class ExportError(ValueError):
    """A model file that cannot be exported or loaded safely; str(e) says what and what to do."""


# ----------------------------------------------------------------------------------------------
# reading untrusted bytes: safetensors and JSON only


def _size_text(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def looks_like_safetensors(data: bytes) -> bool:
    """An 8-byte little-endian header length, then a JSON header (padded with spaces)."""
    if len(data) < 10:
        return False
    header_len = struct.unpack("<Q", data[:8])[0]
    return 2 <= header_len <= len(data) - 8 and data[8:9] == b"{" and data[7 + header_len:8 + header_len] in (b"}", b" ")


def describe_pickle(data: bytes) -> str | None:
    """Why ``data`` looks like a pickle or a torch.save archive, or None."""
    if looks_like_safetensors(data):
        return None  # its first byte may be 0x80 (a header length), but the layout says otherwise
    if data[:1] == b"\x80" and len(data) > 1 and data[1] <= 5:
        return "it is a Python pickle"
    if data[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            return None
        if any(n.endswith("data.pkl") for n in names):
            return "it is a torch.save archive (a zip holding data.pkl, a Python pickle)"
    return None


def _pickle_refusal(name: str, why: str) -> ExportError:
    return ExportError(f"{name}: refused because {why}; loading it could run arbitrary code. "
                       f"Only safetensors weights and JSON files are accepted: export the model as a "
                       f"bundle from this app or `python -m core export`.")


def read_safetensors(data: bytes, name: str = "weights") -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes; anything else (a pickle above all) is refused unread."""
    from safetensors.torch import load as load_safetensors

    why = describe_pickle(data)
    if why:
        raise _pickle_refusal(name, why)
    if not looks_like_safetensors(data):
        raise ExportError(f"{name} is not a safetensors file (its header is missing or damaged). "
                          f"Only safetensors weights are accepted.")
    try:
        return load_safetensors(data)
    except Exception as err:  # safetensors raises its own error types
        raise ExportError(f"{name} is not a readable safetensors file ({err}).") from None


def read_json(data: bytes, name: str) -> dict:
    why = describe_pickle(data)
    if why:
        raise _pickle_refusal(name, why)
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"{name} is not valid UTF-8 JSON ({err}).") from None
    if not isinstance(value, dict):
        raise ExportError(f"{name} must hold one JSON object.")
    return value


def _read_limited(path: Path, max_bytes: int) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: file not found.")
    size = path.stat().st_size
    if size > max_bytes:
        raise ExportError(f"{path} is {_size_text(size)}, above the {_size_text(max_bytes)} limit.")
    return path.read_bytes()


# ----------------------------------------------------------------------------------------------
# the parts every format carries: model config, vocabulary + tokenizer, labels


def _model_parts(predictor: Predictor) -> dict:
    tokenizer = vars(predictor.encoder.config).copy()
    return {"model": predictor.model.config.to_dict(),
            "vocab": {"tokenizer": tokenizer, **predictor.encoder.vocab.to_json()},
            "labels": {"columns": list(predictor.label_columns), "labels": [list(x) for x in predictor.labels]}}


def _encoder_from(vocab: dict) -> TextEncoder:
    try:
        text_cfg = TextConfig(**{k: v for k, v in (vocab.get("tokenizer") or {}).items()
                                 if k in TextConfig.__dataclass_fields__}).validate()
        return TextEncoder(text_cfg, Vocabulary.from_json(vocab))
    except (TypeError, ValueError) as err:
        raise ExportError(f"The vocabulary or tokenizer settings are malformed ({err}).") from None


def _check_labels(labels: dict, model_cfg: ModelConfig) -> tuple[list[str], list[list[str]]]:
    try:
        columns, sets = list(labels["columns"]), [list(map(str, s)) for s in labels["labels"]]
    except (KeyError, TypeError) as err:
        raise ExportError(f"The labels are malformed (missing {err}).") from None
    if len(columns) != len(sets) or [len(s) for s in sets] != list(model_cfg.num_classes):
        raise ExportError(f"The labels {sets} do not match the model's heads {model_cfg.num_classes}.")
    return columns, sets


def _model_config(raw: dict) -> ModelConfig | EnsembleConfig:
    try:
        return model_config_from_dict(raw).validate()
    except (TypeError, ValueError) as err:
        raise ExportError(f"The model configuration is malformed ({err}).") from None


# ----------------------------------------------------------------------------------------------
# int8


class Int8Embedding(nn.Module):
    """Weight-only int8 embedding: one int8 row and one float scale per token, dequantised on lookup."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.register_buffer("weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(num_embeddings))

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> "Int8Embedding":
        weight = embedding.weight.detach().float()  # (V, E)
        scale = weight.abs().amax(dim=1) / 127.0  # (V,)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero rows (<pad>)
        module = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx)
        module.weight_int8.copy_(torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        module.scale.copy_(scale)
        return module

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight_int8[ids].float() * self.scale[ids].unsqueeze(-1)  # (B, T, E)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows"


def _quantize_dynamic(model: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not installed; the eager
        # dynamic path still ships with torch and is what runs here
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.LSTM, nn.Linear}, dtype=torch.qint8)


def _classifiers(model: nn.Module) -> list[nn.Module]:
    """The classifiers that own an embedding table: the model itself, or an ensemble's members."""
    return list(model.members) if isinstance(model, EnsembleClassifier) else [model]


def quantize_model(model: LSTMClassifier) -> LSTMClassifier:
    """A copy of ``model`` with int8 embedding rows and dynamically quantised LSTM and Linear layers."""
    model = copy.deepcopy(model).cpu().eval()
    for classifier in _classifiers(model):
        classifier.embedding = Int8Embedding.from_float(classifier.embedding)
    return _quantize_dynamic(model)


def _is_qlinear(module) -> bool:
    return type(module).__name__ == "Linear" and module.__class__.__module__.startswith("torch.ao.nn.quantized.dynamic")


def _is_qlstm(module) -> bool:
    return type(module).__name__ == "LSTM" and module.__class__.__module__.startswith("torch.ao.nn.quantized.dynamic")


def _put_qtensor(out: dict, key: str, q: torch.Tensor) -> None:
    if q.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        raise ExportError(f"Unexpected quantisation scheme {q.qscheme()} for {key}.")
    out[f"{key}.int8"] = q.int_repr().contiguous()
    out[f"{key}.scale"] = torch.tensor([q.q_scale()], dtype=torch.float64)
    out[f"{key}.zero_point"] = torch.tensor([q.q_zero_point()], dtype=torch.int64)


def _get_qtensor(tensors: dict, key: str) -> torch.Tensor:
    try:
        values, scale, zero = tensors[f"{key}.int8"], tensors[f"{key}.scale"], tensors[f"{key}.zero_point"]
    except KeyError as err:
        raise ExportError(f"The int8 weights lack {err.args[0]}: the file is incomplete.") from None
    if values.dtype != torch.int8:
        raise ExportError(f"{key}.int8 must hold int8 values, not {values.dtype}.")
    return torch._make_per_tensor_quantized_tensor(values, float(scale.item()), int(zero.item()))


def _leaf_modules(model: nn.Module):
    """(name, module, prefix) for the int8 embedding, quantised layers and float leaves; the packed
    parameter holders inside quantised layers are not visited."""
    handled: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(h) for h in handled):
            continue
        prefix = f"{name}." if name else ""
        if isinstance(module, Int8Embedding) or _is_qlinear(module) or _is_qlstm(module):
            handled.append(prefix)
            yield name, module, prefix
        elif not any(True for _ in module.children()):
            yield name, module, prefix


def int8_tensors(qmodel: LSTMClassifier) -> dict[str, torch.Tensor]:
    """The quantised model as plain tensors (int8 values + scales) for safetensors."""
    out: dict[str, torch.Tensor] = {}
    for name, module, prefix in _leaf_modules(qmodel):
        if isinstance(module, Int8Embedding):
            out[prefix + "weight_int8"] = module.weight_int8.contiguous()
            out[prefix + "scale"] = module.scale.contiguous()
        elif _is_qlinear(module):
            weight, bias = module._weight_bias()
            _put_qtensor(out, prefix + "weight", weight)
            if bias is not None:
                out[prefix + "bias"] = bias.detach().contiguous()
        elif _is_qlstm(module):
            for key, q in module.get_weight().items():
                _put_qtensor(out, prefix + key, q)
            for key, b in module.get_bias().items():
                out[prefix + key] = b.detach().contiguous()
        elif not any(True for _ in module.children()):
            for key, value in module.state_dict().items():  # LayerNorm and other float leaves
                out[prefix + key] = value.detach().contiguous()
    return out


def int8_model_from_tensors(model_cfg: ModelConfig, tensors: dict[str, torch.Tensor]) -> LSTMClassifier:
    """Rebuild the quantised model from :func:`int8_tensors` output; the stored int8 values are used as is."""
    model = build_model(model_cfg).eval()
    for classifier in _classifiers(model):
        c = classifier.config
        classifier.embedding = Int8Embedding(c.vocab_size, c.embedding_dim, c.padding_idx)
    model = _quantize_dynamic(model)  # the structure; every weight is replaced below
    used: set[str] = set()
    try:
        for name, module, prefix in _leaf_modules(model):
            if isinstance(module, Int8Embedding):
                for key in ("weight_int8", "scale"):
                    value = tensors[prefix + key]
                    if value.shape != getattr(module, key).shape or value.dtype != getattr(module, key).dtype:
                        raise ExportError(f"{prefix + key} has shape {tuple(value.shape)} {value.dtype}; "
                                          f"the config expects {tuple(getattr(module, key).shape)}.")
                    getattr(module, key).copy_(value)
                    used.add(prefix + key)
            elif _is_qlinear(module):
                bias = tensors.get(prefix + "bias")
                weight = _get_qtensor(tensors, prefix + "weight")
                if tuple(weight.shape) != (module.out_features, module.in_features):
                    raise ExportError(f"{prefix}weight has shape {tuple(weight.shape)}; the config expects "
                                      f"{(module.out_features, module.in_features)}.")
                module.set_weight_bias(weight, bias)
                used.update(f"{prefix}weight.{s}" for s in ("int8", "scale", "zero_point"))
                used.add(prefix + "bias")
            elif _is_qlstm(module):
                weights = {}
                for key, q in module.get_weight().items():
                    weights[key] = _get_qtensor(tensors, prefix + key)
                    if weights[key].shape != q.shape:
                        raise ExportError(f"{prefix + key} has shape {tuple(weights[key].shape)}; the config "
                                          f"expects {tuple(q.shape)}.")
                    used.update(f"{prefix}{key}.{s}" for s in ("int8", "scale", "zero_point"))
                for key in module.get_bias():
                    weights[key] = tensors[prefix + key].float()
                    used.add(prefix + key)
                module.set_weight_bias(weights)
            elif not any(True for _ in module.children()) and module.state_dict():
                state = {key: tensors[prefix + key] for key in module.state_dict()}
                module.load_state_dict(state)
                used.update(prefix + key for key in state)
    except KeyError as err:
        raise ExportError(f"The int8 weights lack {err.args[0]}: the file is incomplete or from another model.") from None
    except RuntimeError as err:
        raise ExportError(f"The int8 weights do not fit the model configuration: {str(err).splitlines()[0]}") from None
    unknown = sorted(set(tensors) - used)
    if unknown:
        raise ExportError(f"The int8 weights hold tensors the model does not have: {', '.join(unknown[:5])}.")
    return model.eval()


def _sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def export_int8(predictor: Predictor, out_path: str | Path) -> Path:
    """Write ``<name>.safetensors`` (int8 values + scales) and ``<name>.json``; returns the weights path."""
    from safetensors.torch import save_file

    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        out_path = out_path.with_suffix(".safetensors")
    tensors = int8_tensors(quantize_model(predictor.model))
    atomic_save(out_path, lambda p: save_file(tensors, str(p), metadata={"format": "lstm-classifier-int8"}))
    atomic_write_json(_sidecar_path(out_path), {"format": "int8", "version": SIDECAR_VERSION,
                                                **_model_parts(predictor)})
    return out_path


def load_int8(path: str | Path, sidecar: str | Path | None = None, *,
              max_bytes: int = DEFAULT_MAX_BYTES) -> Predictor:
    path = Path(path)
    side_path = Path(sidecar) if sidecar else _sidecar_path(path)
    if not side_path.is_file():
        raise ExportError(f"{side_path} not found: the int8 weights need the JSON file written beside them.")
    return int8_from_bytes(_read_limited(path, max_bytes), _read_limited(side_path, max_bytes),
                           name=path.name, metadata={"source": str(path)})


def int8_from_bytes(weights: bytes, sidecar: bytes, name: str = "model-int8.safetensors",
                    metadata: dict | None = None) -> Predictor:
    side = read_json(sidecar, "the int8 JSON sidecar")
    if side.get("format") != "int8":
        raise ExportError(f"The JSON sidecar describes a {side.get('format')!r} model, not int8 weights.")
    model_cfg = _model_config(side.get("model") or {})
    encoder = _encoder_from(side.get("vocab") or {})
    columns, labels = _check_labels(side.get("labels") or {}, model_cfg)
    if len(encoder.vocab) != model_cfg.vocab_size:
        raise ExportError(f"The vocabulary has {len(encoder.vocab)} tokens but the model expects {model_cfg.vocab_size}.")
    model = int8_model_from_tensors(model_cfg, read_safetensors(weights, name))
    return Predictor(model, encoder, columns, labels, {"format": "int8", **(metadata or {})})


# ----------------------------------------------------------------------------------------------
# ONNX


class _LSTMWithLengths(torch.autograd.Function):
    """Eager: a packed PyTorch LSTM. Exported: the ONNX LSTM op fed ``sequence_lens``.

    Weights arrive in ONNX layout (W, R, B); the eager path rebuilds an ``nn.LSTM`` from them, which
    only happens while the exporter traces the graph.
    """

    @staticmethod
    def forward(ctx, x, lengths, w, r, b, hidden_size: int):
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        dirs, H, T = int(w.shape[0]), hidden_size, int(x.shape[1])
        lstm = nn.LSTM(int(w.shape[2]), H, batch_first=True, bidirectional=dirs == 2)
        with torch.no_grad():
            for d, suffix in enumerate(["", "_reverse"][:dirs]):
                getattr(lstm, f"weight_ih_l0{suffix}").copy_(_gates(w[d], H, _TORCH_GATES))
                getattr(lstm, f"weight_hh_l0{suffix}").copy_(_gates(r[d], H, _TORCH_GATES))
                getattr(lstm, f"bias_ih_l0{suffix}").copy_(_gates(b[d, :4 * H], H, _TORCH_GATES))
                getattr(lstm, f"bias_hh_l0{suffix}").copy_(_gates(b[d, 4 * H:], H, _TORCH_GATES))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, _) = lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        return out, h  # (B, T, dirs*H), (dirs, B, H)

    @staticmethod
    def symbolic(g, x, lengths, w, r, b, hidden_size: int):
        seq_lens = g.op("Cast", lengths, to_i=6)  # int32
        x_tbi = g.op("Transpose", x, perm_i=[1, 0, 2])  # (T, B, I)
        bidirectional = w.type().sizes()[0] == 2
        y, y_h, _ = g.op("LSTM", x_tbi, w, r, b, seq_lens, hidden_size_i=hidden_size,
                         direction_s="bidirectional" if bidirectional else "forward", outputs=3)
        # Y is (T, dirs, B, H) -> (B, T, dirs, H) -> (B, T, dirs*H)
        y = g.op("Transpose", y, perm_i=[2, 0, 1, 3])
        shape = g.op("Constant", value_t=torch.tensor([0, 0, -1], dtype=torch.int64))
        return g.op("Reshape", y, shape), y_h


_ONNX_GATES = [0, 3, 1, 2]  # PyTorch stores gates i, f, g, o; ONNX wants i, o, f, c
_TORCH_GATES = [0, 2, 3, 1]  # and back


def _gates(t: torch.Tensor, H: int, order: list[int]) -> torch.Tensor:
    return torch.cat([t[g * H:(g + 1) * H] for g in order], dim=0)


def _onnx_lstm_weights(lstm: nn.LSTM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W (dirs, 4H, I), R (dirs, 4H, H), B (dirs, 8H) in ONNX gate order."""
    H = lstm.hidden_size

    def reorder(t):
        return _gates(t, H, _ONNX_GATES)

    ws, rs, bs = [], [], []
    for suffix in ([""] + (["_reverse"] if lstm.bidirectional else [])):
        ws.append(reorder(getattr(lstm, f"weight_ih_l0{suffix}")))
        rs.append(reorder(getattr(lstm, f"weight_hh_l0{suffix}")))
        bs.append(torch.cat([reorder(getattr(lstm, f"bias_ih_l0{suffix}")),
                             reorder(getattr(lstm, f"bias_hh_l0{suffix}"))]))
    return torch.stack(ws).detach(), torch.stack(rs).detach(), torch.stack(bs).detach()


class OnnxExportModule(nn.Module):
    """The classifier's inference path with length-aware LSTMs; outputs one logits tensor per task."""

    def __init__(self, model: LSTMClassifier):
        super().__init__()
        self.model = model.eval()
        for i, lstm in enumerate(model.lstms):
            w, r, b = _onnx_lstm_weights(lstm)
            self.register_buffer(f"w{i}", w)
            self.register_buffer(f"r{i}", r)
            self.register_buffer(f"b{i}", b)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m, cfg = self.model, self.model.config
        T = ids.shape[1]
        mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
        keep = mask.unsqueeze(-1).to(torch.float32)  # (B, T, 1)
        embedded = m.embed(ids)  # (B, T, E [+ n-gram scores])
        x = embedded[..., :cfg.embedding_dim]
        h = None
        for i, lstm in enumerate(m.lstms):
            layer_in = x
            x, h = _LSTMWithLengths.apply(x, lengths, getattr(self, f"w{i}"), getattr(self, f"r{i}"),
                                          getattr(self, f"b{i}"), lstm.hidden_size)
            if m.norms is not None:
                x = m.norms[i](x) * keep  # the packed model never normalises padding
            if cfg.residual and i > 0:
                x = x + layer_in
        last = torch.cat([h[0], h[1]], dim=-1) if cfg.bidirectional else h[0]  # (B, dirs*H)
        pooled, _ = m.pool(x, last, mask)
        return tuple(m.add_ngram_logits([head(pooled) for head in m.heads], embedded, mask, lengths))


class OnnxEnsembleModule(nn.Module):
    """An ensemble's inference path: each member's length-aware graph, probabilities averaged."""

    def __init__(self, model: EnsembleClassifier):
        super().__init__()
        self.ensemble = model.eval()
        self.parts = nn.ModuleList(OnnxExportModule(member) for member in model.members)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        tasks, _ = self.ensemble.combine([(list(part(ids, lengths)), None) for part in self.parts])
        return tuple(tasks)


def onnx_exportable(model) -> bool:
    """Hierarchical and chunked models read text in ways the exported LSTM graph does not."""
    return not (getattr(model.config, "hierarchical", False) or getattr(model.config, "chunk_length", 0))


def onnx_model_bytes(predictor: Predictor, opset: int = ONNX_OPSET) -> bytes:
    """The fp32 classifier as a serialised ONNX graph: inputs ``ids`` (B, T) and ``lengths`` (B,),
    outputs ``logits_<k>`` (B, classes) per task."""
    model = predictor.model
    if not all(isinstance(c, LSTMClassifier) and all(isinstance(l, nn.LSTM) for l in c.lstms)
               for c in _classifiers(model)):
        raise ExportError("ONNX export needs the fp32 model (export the run, not its int8 version).")
    if not onnx_exportable(model):
        raise ExportError("ONNX export supports the plain LSTM only, not hierarchical or chunked models; "
                          "export this run as a bundle or int8 instead.")
    outputs = _onnx_outputs(predictor)
    wrapper = (OnnxEnsembleModule(model) if isinstance(model, EnsembleClassifier) else OnnxExportModule(model)).eval()
    ids = torch.tensor([[2, 3, 4, 5], [6, 7, 0, 0]])
    ids = ids.clamp(max=model.config.vocab_size - 1)
    lengths = torch.tensor([4, 2])
    dynamic = {"ids": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # the TorchScript exporter honours the custom LSTM symbolic; the dynamo exporter cannot
        # trace packed sequences
        torch.onnx.export(wrapper, (ids, lengths), buffer, input_names=["ids", "lengths"], output_names=outputs,
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False, do_constant_folding=True)
    return buffer.getvalue()


def _onnx_outputs(predictor: Predictor) -> list[str]:
    return [f"logits_{k}" for k in range(len(predictor.model.heads))]


def _write_onnx(predictor: Predictor, data: bytes, out_path: str | Path, fmt: str) -> Path:
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        out_path = out_path.with_suffix(".onnx")
    atomic_write_bytes(out_path, data)
    atomic_write_json(_sidecar_path(out_path), {"format": fmt, "version": SIDECAR_VERSION,
                                                "inputs": ["ids", "lengths"], "outputs": _onnx_outputs(predictor),
                                                **_model_parts(predictor)})
    return out_path


def export_onnx(predictor: Predictor, out_path: str | Path, opset: int = ONNX_OPSET) -> Path:
    """Write ``<name>.onnx`` and its sidecar ``<name>.json``; returns the ONNX path."""
    return _write_onnx(predictor, onnx_model_bytes(predictor, opset), out_path, "onnx")


EMBEDDING_INITIALIZER = "model.embedding.weight"  # the embedding table's name in the exported graph
# an ensemble's graph holds one table per member: ensemble.members.<i>.embedding.weight


def _quantize_embedding_rows(proto) -> None:
    """Replace each embedding ``Gather`` on a float table with int8 rows and one scale per row:
    ``Gather(int8 rows, ids) -> Cast -> Mul(Gather(row scales, ids))``, the same arithmetic as
    :class:`Int8Embedding`. Edits ``proto`` in place."""
    names = [t.name for t in proto.graph.initializer
             if t.name == EMBEDDING_INITIALIZER or t.name.endswith(".embedding.weight")]
    if not names:
        raise ExportError("The ONNX graph has no embedding lookup to quantise; export the fp32 run again.")
    for position, name in enumerate(names):
        _quantize_embedding_table(proto, name, "" if len(names) == 1 else f"_{position}")


def _quantize_embedding_table(proto, table_name: str, suffix: str) -> None:
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    table = next(t for t in graph.initializer if t.name == table_name)
    users = [n for n in graph.node if table_name in n.input]
    if len(users) != 1 or users[0].op_type != "Gather" or list(users[0].input)[0] != table.name:
        raise ExportError("The ONNX graph has no single embedding lookup to quantise; export the fp32 run again.")
    gather = users[0]
    weight = numpy_helper.to_array(table).astype(np.float32)  # (V, E)
    scale = np.abs(weight).max(axis=1) / 127.0  # (V,)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # all-zero rows (<pad>)
    rows = np.clip(np.round(weight / scale[:, None]), -127, 127).astype(np.int8)
    ids, out, name = gather.input[1], gather.output[0], table.name
    new_nodes = [
        helper.make_node("Gather", [f"{name}_int8", ids], [f"{out}_int8"], name=f"embedding_rows_int8{suffix}", axis=0),
        helper.make_node("Cast", [f"{out}_int8"], [f"{out}_rows"], name=f"embedding_rows_float{suffix}",
                         to=TensorProto.FLOAT),
        helper.make_node("Gather", [f"{name}_scale", ids], [f"{out}_scale"], name=f"embedding_row_scales{suffix}",
                         axis=0),
        helper.make_node("Mul", [f"{out}_rows", f"{out}_scale"], [out], name=f"embedding_dequantize{suffix}"),
    ]
    at = list(graph.node).index(gather)
    graph.node.remove(gather)
    for offset, node in enumerate(new_nodes):
        graph.node.insert(at + offset, node)
    graph.initializer.remove(table)
    graph.initializer.extend([numpy_helper.from_array(rows, f"{name}_int8"),
                              numpy_helper.from_array(scale[:, None], f"{name}_scale")])  # (V, E) int8, (V, 1)


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_onnx(data: bytes) -> bytes:
    """An exported fp32 ONNX classifier -> its int8 version for ONNX Runtime.

    ``onnxruntime.quantization.quantize_dynamic`` turns each LSTM into ``DynamicQuantizeLSTM`` and
    each MatMul/Gemm into ``MatMulInteger`` (int8 weights, one scale per output row; activations
    quantised per call), then the embedding table becomes int8 rows with a scale per row.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = check_onnx(data, "the fp32 ONNX graph")
    hint = _DropPreprocessHint()  # the optional shape pre-processing changes nothing for these graphs
    logging.getLogger().addFilter(hint)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "int8.onnx"
            quantize_dynamic(proto, out, op_types_to_quantize=["LSTM", "MatMul", "Gemm"], per_channel=True,
                             weight_type=QuantType.QInt8)
            quantized = onnx.load(str(out))
    except Exception as err:  # onnxruntime.quantization raises plain exceptions and asserts
        raise ExportError(f"ONNX Runtime could not quantise the graph: {str(err).splitlines()[0]}") from None
    finally:
        logging.getLogger().removeFilter(hint)
    _quantize_embedding_rows(quantized)
    return quantized.SerializeToString()


def export_onnx_int8(predictor: Predictor, out_path: str | Path, opset: int = ONNX_OPSET,
                     fp32_onnx: bytes | None = None) -> Path:
    """Write the int8 ONNX Runtime graph ``<name>.onnx`` and its sidecar ``<name>.json``; returns the
    ONNX path. ``fp32_onnx`` reuses an already exported fp32 graph of the same model."""
    data = quantize_onnx(fp32_onnx if fp32_onnx is not None else onnx_model_bytes(predictor, opset))
    return _write_onnx(predictor, data, out_path, "onnx-int8")


def check_onnx(data: bytes, name: str = "model.onnx"):
    """Parse ONNX bytes without touching other files; refuse pickles and external-data references."""
    import onnx
    from onnx import TensorProto

    why = describe_pickle(data)
    if why:
        raise _pickle_refusal(name, why)
    try:
        proto = onnx.load_from_string(data)
    except Exception as err:  # protobuf's DecodeError and friends
        raise ExportError(f"{name} is not an ONNX model ({type(err).__name__}).") from None
    if not proto.HasField("graph"):
        raise ExportError(f"{name} is not an ONNX model (it has no graph).")

    def graphs(graph):
        yield graph
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    yield from graphs(attr.g)
                for sub in attr.graphs:
                    yield from graphs(sub)

    for graph in graphs(proto.graph):
        tensors = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
        for node in graph.node:
            tensors += [a.t for a in node.attribute if a.HasField("t")] + [t for a in node.attribute for t in a.tensors]
        for tensor in tensors:
            if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
                location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
                raise ExportError(f"{name} refused: tensor {tensor.name!r} points at external data "
                                  f"({location!r}). Only self-contained ONNX files are accepted; export the "
                                  f"model again with its weights inside the .onnx file.")
    return proto


def _sorted_batches(sequences: Sequence[Sequence[int]], batch_size: int):
    order = np.argsort([len(s) for s in sequences], kind="stable")
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield index, pad_batch([sequences[i] for i in index])


def pad_batch(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(B, T) int64 ids padded with <pad>, and (B,) int64 lengths."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    ids = np.full((len(sequences), max(1, int(lengths.max(initial=1)))), PAD_ID, dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = seq
    return ids, lengths


def _np_probs(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    if logits.shape[-1] == 1:
        positive = 1.0 / (1.0 + np.exp(-logits))
        return np.concatenate([1 - positive, positive], axis=-1)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class OnnxPredictor:
    """An ONNX Runtime session plus the sidecar's text encoder and labels; same ``predict`` as Predictor."""

    def __init__(self, session, encoder: TextEncoder, label_columns: list[str], labels: list[list[str]],
                 metadata: dict | None = None):
        self.session = session
        self.encoder = encoder
        self.label_columns = label_columns
        self.labels = labels
        self.metadata = metadata or {}

    @property
    def classes_(self) -> list[str]:
        return self.labels[0]

    @classmethod
    def load(cls, path: str | Path, sidecar: str | Path | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES,
             threads: int | None = None) -> "OnnxPredictor":
        path = Path(path)
        side_path = Path(sidecar) if sidecar else _sidecar_path(path)
        if not side_path.is_file():
            raise ExportError(f"{side_path} not found: the ONNX model needs the JSON sidecar written beside it "
                              f"(vocabulary, tokenizer settings and labels).")
        return cls.from_bytes(_read_limited(path, max_bytes), _read_limited(side_path, max_bytes),
                              name=path.name, threads=threads, metadata={"source": str(path)})

    @classmethod
    def from_bytes(cls, model: bytes, sidecar: bytes, name: str = "model.onnx", threads: int | None = None,
                   metadata: dict | None = None) -> "OnnxPredictor":
        import onnxruntime as ort

        check_onnx(model, name)
        side = read_json(sidecar, "the ONNX JSON sidecar")
        fmt = side.get("format")
        if fmt not in ONNX_FORMATS:
            raise ExportError(f"The JSON sidecar describes a {fmt!r} model, not ONNX.")
        model_cfg = _model_config(side.get("model") or {})
        encoder = _encoder_from(side.get("vocab") or {})
        columns, labels = _check_labels(side.get("labels") or {}, model_cfg)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own error types
            raise ExportError(f"ONNX Runtime cannot load {name}: {str(err).splitlines()[0]}") from None
        inputs = [i.name for i in session.get_inputs()]
        if inputs != ["ids", "lengths"] or len(session.get_outputs()) != len(labels):
            raise ExportError(f"{name} does not look like an exported classifier (inputs {inputs}).")
        return cls(session, encoder, columns, labels, {"format": fmt, **(metadata or {})})

    def run(self, ids: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        """Raw logits per task for one padded batch."""
        return self.session.run(None, {"ids": ids, "lengths": lengths})

    def probabilities(self, texts: Sequence[str], batch_size: int = 256) -> list[np.ndarray]:
        sequences = self.encoder.encode_many(texts)
        if not sequences:
            return [np.zeros((0, len(labels))) for labels in self.labels]
        out = [np.zeros((len(sequences), len(labels))) for labels in self.labels]
        for index, (ids, lengths) in _sorted_batches(sequences, batch_size):
            for k, logits in enumerate(self.run(ids, lengths)):
                out[k][index] = _np_probs(logits)
        return out

    def predict(self, texts: Sequence[str], batch_size: int = 256) -> list[Prediction]:
        texts = [str(t) for t in texts]
        encoded = [self.encoder.encode(t) for t in texts]
        probs = self.probabilities(texts, batch_size)
        out = []
        for i, (text, enc) in enumerate(zip(texts, encoded)):
            tasks = {}
            for col, labels, p in zip(self.label_columns, self.labels, probs):
                tasks[col] = {"label": labels[int(np.argmax(p[i]))],
                              "probs": {label: round(float(v), 6) for label, v in zip(labels, p[i])}}
            primary = tasks[self.label_columns[0]]
            out.append(Prediction(text, primary["label"], primary["probs"], tasks, enc.truncated, enc.empty))
        return out


# ----------------------------------------------------------------------------------------------
# bundle


def _bundle_run_config(config: dict) -> dict:
    """The run config with local file paths reduced to file names (a bundle travels)."""
    config = copy.deepcopy(config)
    data = (config.get("run") or {}).get("data") or {}
    for key in ("train", "valid", "test"):
        if data.get(key):
            data[key] = Path(data[key]).name
    return config


def model_card(run_config: dict, metrics: dict, labels: dict, parity: dict | None = None) -> str:
    run = run_config.get("run") or {}
    model, text, data = run_config.get("model") or {}, run.get("text") or {}, run.get("data") or {}
    test = (metrics.get("test") or {}).get("primary") or {}
    valid = (metrics.get("valid") or {}).get("primary") or {}
    source = data.get("dataset") or data.get("train") or "a user-provided file"

    def fmt(value):
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        "# Model card: LSTM text classifier", "",
        "## Model",
        f"- Architecture: embedding ({model.get('vocab_size')} tokens x {model.get('embedding_dim')}), "
        f"{model.get('num_layers')} x {'bidirectional ' if model.get('bidirectional') else ''}LSTM "
        f"({model.get('hidden_dim')} units per direction), {model.get('pooling')} pooling, one head per task"
        + (f"; plus a linear bag of n-grams up to {model['ngrams']} words ({model.get('ngram_buckets')} hash "
           f"buckets) whose scores are added to the logits." if model.get("ngrams") else "."),
        f"- Pretrained vectors: {run.get('pretrained_vectors') or 'none (trained from scratch)'}.",
        f"- Tokenizer: {text.get('tokenizer')} (lowercase: {text.get('lowercase')}), at most "
        f"{text.get('max_length')} tokens per text; longer texts are truncated (kept: "
        f"{text.get('truncation', 'head')}).", "",
        "## Data",
        f"- Trained on {source} (text column '{data.get('text_col', 'text')}', label column(s) "
        f"{', '.join(labels.get('columns', []))}).",
        f"- Labels: {'; '.join(', '.join(s) for s in labels.get('labels', []))}.", "",
        "## Metrics",
        "| split | accuracy | macro F1 | AUC |", "| --- | --- | --- | --- |",
        f"| validation | {fmt(valid.get('accuracy'))} | {fmt(valid.get('macro_f1'))} | {fmt(valid.get('auc'))} |",
        f"| test | {fmt(test.get('accuracy'))} | {fmt(test.get('macro_f1'))} | {fmt(test.get('auc'))} |",
        "",
    ]
    if parity:
        lines += ["## Exported formats", "```", format_parity(parity), "```", ""]
    lines += [
        "## Intended use",
        "Classifying short texts like the training data into the labels above, for exploration, "
        "prototyping and teaching. Check the predictions on your own data before relying on them.", "",
        "## Limitations",
        "- Words unseen in training map to <unk>; the model knows nothing beyond its training data.",
        "- Accuracy drops on text from another domain, language or register than the training data.",
        "- Labels inherit the biases and errors of the training labels; probabilities are not calibrated.",
        "- Not suitable for decisions about people without human review.", "",
        "## Loading",
        "`python -m core predict --bundle THIS.zip \"some text\"`; the bundle holds safetensors weights and "
        "JSON only and never needs pickle. An exported ONNX model (fp32 or int8) loads with "
        "`python -m core predict --onnx FILE.onnx \"some text\"`, its .json sidecar beside it.", "",
    ]
    return "\n".join(lines)


def export_bundle(run_dir: str | Path, out_path: str | Path, parity: dict | None = None) -> Path:
    """Zip a finished run's fp32 weights, JSON files and a model card; returns the zip path."""
    run_dir, out_path = Path(run_dir), Path(out_path)
    if out_path.suffix != ".zip":
        out_path = out_path.with_suffix(".zip")
    missing = [n for n in ("model.safetensors", "config.json", "vocab.json", "labels.json")
               if not (run_dir / n).is_file()]
    if missing:
        raise ExportError(f"{run_dir} has no {', '.join(missing)}: only a finished run can be exported.")
    read = lambda name: json.loads((run_dir / name).read_text(encoding="utf-8"))  # noqa: E731
    config = _bundle_run_config(read("config.json"))
    vocab, labels = read("vocab.json"), read("labels.json")
    metrics = read("metrics.json") if (run_dir / "metrics.json").is_file() else {}
    members = {
        "model.safetensors": (run_dir / "model.safetensors").read_bytes(),
        "config.json": json.dumps(config, indent=2, ensure_ascii=False),
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "labels.json": json.dumps(labels, indent=2, ensure_ascii=False),
        "tokenizer.json": json.dumps(vocab.get("tokenizer", {}), indent=2),
        "metrics.json": json.dumps(metrics, indent=2),
        "MODEL_CARD.md": model_card(config, metrics, labels, parity),
    }
    if parity:
        members["parity.json"] = json.dumps(parity, indent=2)

    def write(path: Path) -> None:
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, content in members.items():
                zf.writestr(name, content)

    atomic_save(out_path, write)
    return out_path


def _check_member_name(name: str) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if (name.startswith(("/", "\\")) or ".." in pure.parts or (len(name) > 1 and name[1] == ":")
            or "\\" in name or name != pure.name):
        raise ExportError(f"Bundle refused: member {name!r} has a path outside the bundle or inside a folder. "
                          f"A bundle holds flat files only: {', '.join(BUNDLE_MEMBERS)}.")


def read_bundle_members(data: bytes, name: str = "bundle.zip", *,
                        max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, bytes]:
    """The members of a bundle zip after every safety check; nothing is extracted to disk."""
    if len(data) > max_bytes:
        raise ExportError(f"{name} is {_size_text(len(data))}, above the {_size_text(max_bytes)} limit.")
    if data[:1] == b"\x80":
        raise _pickle_refusal(name, "it is a Python pickle")
    if data[:4] != b"PK\x03\x04":
        raise ExportError(f"{name} is not a bundle (a .zip exported by this app or `python -m core export`).")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ExportError(f"{name} is not a readable zip file ({err}).") from None
    if len(infos) > 2 * len(BUNDLE_MEMBERS):
        raise ExportError(f"{name} has {len(infos)} members; a bundle has at most {len(BUNDLE_MEMBERS)}.")
    names = [info.filename for info in infos]
    if any(n.endswith("data.pkl") or n.lower().endswith(_PICKLE_SUFFIXES) for n in names):
        culprit = next(n for n in names if n.endswith("data.pkl") or n.lower().endswith(_PICKLE_SUFFIXES))
        raise _pickle_refusal(f"{name} ({culprit})", "it holds pickled PyTorch or Python objects")
    total = 0
    for info in infos:
        _check_member_name(info.filename)
        if info.filename not in BUNDLE_MEMBERS:
            raise ExportError(f"Bundle refused: unexpected member {info.filename!r}. A bundle holds only "
                              f"{', '.join(BUNDLE_MEMBERS)}.")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise ExportError(f"Bundle refused: member {info.filename!r} is a symbolic link.")
        total += info.file_size
        if total > max_bytes:
            raise ExportError(f"{name} unpacks to more than {_size_text(max_bytes)}; refused.")
        if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO and info.file_size > 1e6:
            raise ExportError(f"Bundle refused: member {info.filename!r} expands {info.file_size // info.compress_size}x "
                              f"(a zip bomb?).")
    if len(set(names)) != len(names):
        raise ExportError(f"Bundle refused: {name} lists a member twice.")
    members = {}
    for info in infos:
        with archive.open(info) as handle:
            content = handle.read(info.file_size + 1)  # never trust the header: read one byte past it
        if len(content) > info.file_size:
            raise ExportError(f"Bundle refused: member {info.filename!r} is larger than its header says.")
        members[info.filename] = content
    missing = [m for m in BUNDLE_REQUIRED if m not in members]
    if missing:
        raise ExportError(f"{name} is not a complete bundle: it lacks {', '.join(missing)}.")
    return members


def load_bundle(source: str | Path | bytes, *, name: str | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES) -> Predictor:
    """A bundle zip (path or bytes) -> Predictor, reading safetensors and JSON only."""
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), name or "bundle.zip"
    else:
        path = Path(source)
        data, name = _read_limited(path, max_bytes), name or path.name
    members = read_bundle_members(data, name, max_bytes=max_bytes)
    state = read_safetensors(members["model.safetensors"], f"{name}: model.safetensors")
    parts = {key: read_json(members[f"{key}.json"], f"{name}: {key}.json")
             for key in ("config", "vocab", "labels")}
    metrics = read_json(members["metrics.json"], f"{name}: metrics.json") if "metrics.json" in members else {}
    model_cfg = _model_config(parts["config"].get("model") or {})
    _check_labels(parts["labels"], model_cfg)
    _encoder_from(parts["vocab"])
    try:
        return Predictor.from_parts(parts["config"], parts["vocab"], parts["labels"], state,
                                    {"format": "bundle", "source": name, "metrics": metrics,
                                     "config": parts["config"],
                                     "model_card": members.get("MODEL_CARD.md", b"").decode("utf-8", "replace")})
    except ValueError as err:  # RunError from a mismatch between weights and config
        raise ExportError(f"{name}: {err}") from None


def load_upload(files: dict[str, bytes], *, max_bytes: int = DEFAULT_MAX_BYTES):
    """Uploaded files (name -> bytes) -> a predictor. Accepts a bundle .zip, an .onnx with its .json
    sidecar, or int8 .safetensors with its .json sidecar; everything else is refused."""
    for fname, data in files.items():
        if len(data) > max_bytes:
            raise ExportError(f"{fname} is {_size_text(len(data))}, above the {_size_text(max_bytes)} limit.")
        why = describe_pickle(data)
        if why:
            raise _pickle_refusal(fname, why)
    by_suffix: dict[str, tuple[str, bytes]] = {}
    for fname, data in files.items():
        by_suffix.setdefault(Path(fname).suffix.lower(), (fname, data))
    unknown = [f for f in files if Path(f).suffix.lower() not in (".zip", ".onnx", ".json", ".safetensors")]
    if unknown:
        raise ExportError(f"{unknown[0]}: unsupported file type. Upload a bundle (.zip), an ONNX model (.onnx) with "
                          f"its .json sidecar, or int8 weights (.safetensors) with their .json sidecar.")
    if ".zip" in by_suffix:
        fname, data = by_suffix[".zip"]
        return load_bundle(data, name=fname, max_bytes=max_bytes)
    sidecar = by_suffix.get(".json")
    if ".onnx" in by_suffix:
        if not sidecar:
            raise ExportError("An ONNX model needs its .json sidecar (vocabulary, tokenizer and labels): upload both.")
        fname, data = by_suffix[".onnx"]
        return OnnxPredictor.from_bytes(data, sidecar[1], name=fname, metadata={"source": fname})
    if ".safetensors" in by_suffix:
        if not sidecar:
            raise ExportError("int8 weights need their .json sidecar: upload both files.")
        fname, data = by_suffix[".safetensors"]
        return int8_from_bytes(data, sidecar[1], name=fname, metadata={"source": fname})
    raise ExportError("Nothing to import: upload a bundle (.zip), or an .onnx or int8 .safetensors file with its "
                      ".json sidecar.")


# ----------------------------------------------------------------------------------------------
# parity report


def _read_test_set(run_dir: Path, predictor: Predictor) -> tuple[list[str], list[str]]:
    import pandas as pd

    path = run_dir / "test.csv"
    if not path.is_file():
        raise ExportError(f"{run_dir} has no test.csv, so the exports cannot be compared on test data.")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    config = predictor.metadata.get("config") or {}
    text_col = config.get("text_col", "text")
    label_col = predictor.label_columns[0]
    if text_col not in frame.columns or label_col not in frame.columns:
        raise ExportError(f"{path} lacks the column {text_col!r} or {label_col!r}.")
    return frame[text_col].tolist(), frame[label_col].tolist()


def _torch_logits(model: nn.Module, sequences, batch_size: int = 64) -> list[np.ndarray]:
    out = None
    with torch.inference_mode():
        for index, (ids, lengths) in _sorted_batches(sequences, batch_size):
            logits, _ = model(torch.from_numpy(ids), torch.from_numpy(lengths))
            if out is None:
                out = [np.zeros((len(sequences), t.shape[-1]), dtype=np.float64) for t in logits]
            for k, t in enumerate(logits):
                out[k][index] = t.double().numpy()
    return out or []


def _onnx_logits(predictor: OnnxPredictor, sequences, batch_size: int = 64) -> list[np.ndarray]:
    out = None
    for index, (ids, lengths) in _sorted_batches(sequences, batch_size):
        logits = predictor.run(ids, lengths)
        if out is None:
            out = [np.zeros((len(sequences), t.shape[-1]), dtype=np.float64) for t in logits]
        for k, t in enumerate(logits):
            out[k][index] = t
    return out or []


def _latency_ms(runners: dict, batches: list[tuple[np.ndarray, np.ndarray]], repeats: int) -> dict[str, float]:
    """p50 milliseconds per call; the runners take turns on each batch so that they share conditions."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    tensors = [(torch.from_numpy(ids), torch.from_numpy(lengths)) for ids, lengths in batches]
    with torch.inference_mode():
        for name, run in runners.items():  # warm-up
            for (ids, lengths), (tids, tlengths) in list(zip(batches, tensors))[:5]:
                run(ids, lengths, tids, tlengths)
        for r in range(repeats):
            for (ids, lengths), (tids, tlengths) in zip(batches, tensors):
                for name, run in runners.items():
                    start = time.perf_counter()
                    run(ids, lengths, tids, tlengths)
                    times[name].append(time.perf_counter() - start)
    return {name: round(float(np.median(t)) * 1000, 4) for name, t in times.items()}


ROW_TITLES = {"fp32": "fp32 (PyTorch)", "int8": "int8 (PyTorch)", "onnx": "fp32 (ONNX Runtime)",
              "onnx-int8": "int8 (ONNX Runtime)"}  # parity.json keys -> table rows
INT8_TARGETS = {"size_ratio": 3.5, "speedup_batch_1": 2.0, "accuracy_drop_points": 0.5}  # vs fp32 PyTorch


def parity_report(fp32: Predictor, texts: Sequence[str], gold: Sequence[str], *, int8: Predictor | None = None,
                  onnx: OnnxPredictor | None = None, onnx_int8: OnnxPredictor | None = None,
                  files: dict[str, Path] | None = None, latency_examples: int = 200, repeats: int = 3,
                  seed: int = 0) -> dict:
    """fp32 against int8, ONNX and ONNX int8 on labelled texts: accuracy, agreement, largest
    differences, size, speed. ``formats`` is keyed fp32, int8, onnx, onnx-int8 (see ``ROW_TITLES``)."""
    sequences = fp32.encoder.encode_many(texts)
    labels = fp32.labels[0]
    gold_index = np.array([labels.index(g) if g in labels else -1 for g in gold])
    known = gold_index >= 0
    logits = {"fp32": _torch_logits(fp32.model, sequences)}
    if int8 is not None:
        logits["int8"] = _torch_logits(int8.model, sequences)
    if onnx is not None:
        logits["onnx"] = _onnx_logits(onnx, sequences)
    if onnx_int8 is not None:
        logits["onnx-int8"] = _onnx_logits(onnx_int8, sequences)
    probs = {name: [_np_probs(t) for t in per_task] for name, per_task in logits.items()}
    preds = {name: np.argmax(p[0], axis=1) for name, p in probs.items()}
    files = files or {}
    formats = {}
    for name in logits:
        row = {"accuracy": round(float((preds[name][known] == gold_index[known]).mean()), 6) if known.any() else None,
               "agreement": round(float((preds[name] == preds["fp32"]).mean()), 6),
               "max_prob_diff": float(max(np.abs(a - b).max() for a, b in zip(probs[name], probs["fp32"]))),
               "max_logit_diff": float(max(np.abs(a - b).max() for a, b in zip(logits[name], logits["fp32"]))),
               "file": str(files[name]) if name in files else None,
               "size_bytes": Path(files[name]).stat().st_size if name in files else None}
        formats[name] = row

    rng = np.random.default_rng(seed)
    n = min(latency_examples, len(sequences))
    pick = rng.choice(len(sequences), size=n, replace=False) if n else np.array([], dtype=int)
    runners = {"fp32": lambda ids, lengths, tids, tlengths: fp32.model(tids, tlengths)}
    if int8 is not None:
        runners["int8"] = lambda ids, lengths, tids, tlengths: int8.model(tids, tlengths)
    if onnx is not None:
        runners["onnx"] = lambda ids, lengths, tids, tlengths: onnx.run(ids, lengths)
    if onnx_int8 is not None:
        runners["onnx-int8"] = lambda ids, lengths, tids, tlengths: onnx_int8.run(ids, lengths)
    latency = {}
    if n:
        single = [pad_batch([sequences[i]]) for i in pick]
        batch_count = max(1, n // 32)
        grouped = [pad_batch([sequences[i] for i in pick[b * 32:(b + 1) * 32]]) for b in range(batch_count)]
        latency["batch_1"] = _latency_ms(runners, single, repeats)
        latency["batch_32"] = _latency_ms(runners, grouped, max(repeats, 60 // batch_count))
        for name in formats:
            formats[name]["p50_ms_batch_1"] = latency["batch_1"][name]
            formats[name]["p50_ms_batch_32"] = latency["batch_32"][name]

    c = fp32.model.config
    if isinstance(c, EnsembleConfig):
        description = c.describe()
    else:
        description = (f"embedding {c.vocab_size} x {c.embedding_dim}, {c.num_layers} x "
                       f"{'bidirectional ' if c.bidirectional else ''}LSTM {c.hidden_dim}, {c.pooling} pooling"
                       + (f", {c.ngrams}-gram linear part" if c.ngrams else ""))
    report = {"n_test": len(texts), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "latency_examples": n, "model": {"description": description}, "formats": formats}
    report["targets"] = _targets(formats)
    return report


def _ratio(a, b):
    return None if not a or not b else round(a / b, 3)


def _int8_targets(fp32: dict, q: dict) -> dict:
    size = _ratio(fp32.get("size_bytes"), q.get("size_bytes"))
    speed = _ratio(fp32.get("p50_ms_batch_1"), q.get("p50_ms_batch_1"))
    drop = None if fp32["accuracy"] is None else round((fp32["accuracy"] - q["accuracy"]) * 100, 3)
    return {"size_ratio": size, "size_ok": size is not None and size >= INT8_TARGETS["size_ratio"],
            "speedup_batch_1": speed, "speed_ok": speed is not None and speed >= INT8_TARGETS["speedup_batch_1"],
            "speedup_batch_32": _ratio(fp32.get("p50_ms_batch_32"), q.get("p50_ms_batch_32")),
            "accuracy_drop_points": drop,
            "accuracy_ok": drop is not None and drop <= INT8_TARGETS["accuracy_drop_points"]}


def _targets(formats: dict) -> dict:
    fp32, out = formats["fp32"], {}
    if "int8" in formats:
        out["int8"] = _int8_targets(fp32, formats["int8"])
    if "onnx" in formats:
        o = formats["onnx"]
        speed = _ratio(fp32.get("p50_ms_batch_1"), o.get("p50_ms_batch_1"))
        out["onnx"] = {"speedup_batch_1": speed, "speedup_batch_32": _ratio(fp32.get("p50_ms_batch_32"),
                                                                            o.get("p50_ms_batch_32")),
                       "speed_ok": speed is not None and speed >= 1.4,
                       "logit_ok": o["max_logit_diff"] <= 1e-4}
    if "onnx-int8" in formats:
        q = formats["onnx-int8"]
        out["onnx-int8"] = _int8_targets(fp32, q)
        if "onnx" in formats:
            out["onnx-int8"]["size_ratio_vs_onnx"] = _ratio(formats["onnx"].get("size_bytes"), q.get("size_bytes"))
    return out


def target_summary(report: dict, name: str) -> str:
    """Which deployment targets the format ``name`` meets, in a few words ("" for fp32)."""
    t = report.get("targets", {}).get(name)
    if not t:
        return ""
    checks = [("size", "size_ok"), ("speed", "speed_ok"), ("accuracy", "accuracy_ok"), ("logits", "logit_ok")]
    met = [word for word, key in checks if t.get(key) is True]
    missed = [word for word, key in checks if t.get(key) is False]
    if not missed:
        return "all met (" + ", ".join(met) + ")"
    return "missed " + ", ".join(missed) + ("; met " + ", ".join(met) if met else "")


def format_parity(report: dict) -> str:
    """A plain-text table of a parity report (the CLI prints it; the model card embeds it)."""
    header = ["format", "accuracy", "agreement", "max|dprob|", "max|dlogit|", "size", "p50 b1 ms", "p50 b32 ms",
              "targets"]
    rows = []
    for name, f in report["formats"].items():
        rows.append([ROW_TITLES.get(name, name), "n/a" if f["accuracy"] is None else f"{f['accuracy'] * 100:.2f}%",
                     f"{f['agreement'] * 100:.2f}%", f"{f['max_prob_diff']:.2e}", f"{f['max_logit_diff']:.2e}",
                     "n/a" if f.get("size_bytes") is None else _size_text(f["size_bytes"]),
                     f"{f.get('p50_ms_batch_1', float('nan')):.3f}", f"{f.get('p50_ms_batch_32', float('nan')):.3f}",
                     target_summary(report, name) or "-"])
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) if i < len(header) - 1 else str(c) for i, (c, w) in enumerate(zip(r, widths)))
             .rstrip() for r in [header] + rows]
    lines.append(f"test examples: {report['n_test']}; CPU threads: {report['threads']}; latency on "
                 f"{report.get('latency_examples', 0)} test texts (model call only, tokenisation excluded)")
    lines.append(f"int8 targets vs fp32 PyTorch: size >= {INT8_TARGETS['size_ratio']}x smaller, batch 1 >= "
                 f"{INT8_TARGETS['speedup_batch_1']}x faster, accuracy drop <= {INT8_TARGETS['accuracy_drop_points']} "
                 f"points; ONNX fp32: batch 1 >= 1.4x faster, logits within 1e-4")
    for name, t in report.get("targets", {}).items():
        bits = [f"{k}={v}" for k, v in t.items()]
        lines.append(f"{ROW_TITLES.get(name, name)} vs fp32: " + ", ".join(bits))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# one call for the CLI, the app and the benchmark


@dataclass
class ExportResult:
    paths: dict[str, Path] = field(default_factory=dict)  # format -> main file (sidecars sit beside it)
    parity: dict | None = None
    parity_path: Path | None = None


DEFAULT_NAMES = {"int8": "model-int8.safetensors", "onnx": "model.onnx", "onnx-int8": "model-onnx-int8.onnx",
                 "bundle": "model-bundle.zip"}


def export_run(run_dir: str | Path, formats: Sequence[str] = FORMATS, out_dir: str | Path | None = None, *,
               names: dict[str, str] | None = None, parity: bool = True, latency_examples: int = 200,
               repeats: int = 3, threads: int | None = None, log=print) -> ExportResult:
    """Export a finished run in ``formats`` to ``out_dir`` (default ``<run>/export``) and write parity.json.

    ``names`` overrides the file name per format (see ``DEFAULT_NAMES``); ``threads`` sets
    ``torch.set_num_threads`` (and ONNX Runtime's threads) for the latency figures.

    The parity report always compares every format (int8, ONNX and ONNX int8 are built in a temporary
    folder when not requested) so that the numbers shown next to any download are the same.
    """
    run_dir = Path(run_dir)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ExportError(f"Unknown export format {bad[0] if bad else ''!r}: choose from {', '.join(FORMATS)}.")
    out_dir = Path(out_dir) if out_dir else run_dir / "export"
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {**DEFAULT_NAMES, **(names or {})}
    if threads:
        torch.set_num_threads(threads)
    fp32 = Predictor.load(run_dir)
    result = ExportResult()
    if parity and not (run_dir / "test.csv").is_file():
        # e.g. the demo model, which ships without its dataset's text
        log(f"note: {run_dir} has no test split (test.csv), so the parity report is skipped")
        parity = False
    with tempfile.TemporaryDirectory() as scratch:
        models = ("int8", "onnx", "onnx-int8")
        where = {f: (out_dir if f in formats else Path(scratch)) for f in models}
        need = set(formats) | (set(models) if parity else set())
        if not onnx_exportable(fp32.model):
            need -= set(ONNX_FORMATS) - set(formats)  # parity then compares fp32 and int8 only
        int8_pred = onnx_pred = onnx_int8_pred = None
        files = {"fp32": run_dir / "model.safetensors"}
        if "int8" in need:
            files["int8"] = export_int8(fp32, where["int8"] / names["int8"])
            int8_pred = load_int8(files["int8"])
            log(f"int8: {files['int8']}")
        graph = onnx_model_bytes(fp32) if need & set(ONNX_FORMATS) else None
        if "onnx" in need:
            files["onnx"] = _write_onnx(fp32, graph, where["onnx"] / names["onnx"], "onnx")
            onnx_pred = OnnxPredictor.load(files["onnx"])
            log(f"onnx: {files['onnx']}")
        if "onnx-int8" in need:
            files["onnx-int8"] = export_onnx_int8(fp32, where["onnx-int8"] / names["onnx-int8"], fp32_onnx=graph)
            onnx_int8_pred = OnnxPredictor.load(files["onnx-int8"])
            log(f"onnx-int8: {files['onnx-int8']}")
        if parity:
            texts, gold = _read_test_set(run_dir, fp32)
            result.parity = parity_report(fp32, texts, gold, int8=int8_pred, onnx=onnx_pred, onnx_int8=onnx_int8_pred,
                                          files=files, latency_examples=latency_examples, repeats=repeats)
            for name in models:
                if name not in formats and name in result.parity["formats"]:
                    result.parity["formats"][name]["file"] = None  # measured, not kept
            result.parity_path = out_dir / "parity.json"
            atomic_write_json(result.parity_path, result.parity)
        for name in models:
            if name in formats:
                result.paths[name] = files[name]
    if "bundle" in formats:
        result.paths["bundle"] = export_bundle(run_dir, out_dir / names["bundle"], result.parity)
        log(f"bundle: {result.paths['bundle']}")
    return result
