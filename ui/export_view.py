"""What the Export page shows: the parity table, target checks and the files to download."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.export import DEFAULT_NAMES, ROW_TITLES, target_summary

FORMAT_TITLES = {"bundle": "Bundle (.zip: safetensors + JSON + model card)",
                 "int8": "int8 weights for PyTorch (.safetensors + .json)",
                 "onnx": "ONNX (.onnx + .json sidecar)",
                 "onnx-int8": "ONNX int8 for ONNX Runtime (.onnx + .json sidecar; smallest and fastest)"}
DOWNLOAD_NAMES = {"bundle": "bundle", "int8": "int8 (PyTorch)", "onnx": "ONNX", "onnx-int8": "ONNX int8"}
UPLOAD_TYPES = ["zip", "onnx", "json", "safetensors", "pt", "pth", "pkl", "bin", "ckpt"]


def export_dir(run_path: str | Path) -> Path:
    return Path(run_path) / "export"


@dataclass
class Download:
    label: str
    path: Path
    mime: str


def downloads(run_path: str | Path) -> list[Download]:
    """Exported files present for a run (sidecars included), newest model only."""
    folder, model = export_dir(run_path), Path(run_path) / "model.safetensors"
    found = []
    for fmt, name in DEFAULT_NAMES.items():
        path = folder / name
        if not path.is_file() or (model.is_file() and path.stat().st_mtime < model.stat().st_mtime):
            continue
        mime = "application/zip" if fmt == "bundle" else "application/octet-stream"
        title = DOWNLOAD_NAMES.get(fmt, fmt)
        found.append(Download(f"Download {title} ({path.name})", path, mime))
        sidecar = path.with_suffix(".json")
        if fmt != "bundle" and sidecar.is_file():
            found.append(Download(f"Download {title} sidecar ({sidecar.name})", sidecar, "application/json"))
    return found


def saved_parity(run_path: str | Path) -> dict | None:
    path = export_dir(run_path) / "parity.json"
    model = Path(run_path) / "model.safetensors"
    if not path.is_file() or (model.is_file() and path.stat().st_mtime < model.stat().st_mtime):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _size(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def parity_frame(report: dict) -> pd.DataFrame:
    rows = []
    for name, f in report["formats"].items():
        rows.append({"format": ROW_TITLES.get(name, name),
                     "accuracy": None if f["accuracy"] is None else round(f["accuracy"] * 100, 2),
                     "agreement with fp32 %": round(f["agreement"] * 100, 2),
                     "max |Δ probability|": f"{f['max_prob_diff']:.1e}",
                     "max |Δ logit|": f"{f['max_logit_diff']:.1e}",
                     "file size": _size(f.get("size_bytes")),
                     "p50 ms, batch 1": f.get("p50_ms_batch_1"),
                     "p50 ms, batch 32": f.get("p50_ms_batch_32"),
                     "targets": target_summary(report, name) or "–"})
    return pd.DataFrame(rows)


def target_checks(report: dict) -> list[tuple[bool, str]]:
    """(met, sentence) for each deployment target."""
    checks = []
    t = report.get("targets", {})
    for key in ("int8", "onnx-int8"):
        if key not in t:
            continue
        q, name = t[key], ROW_TITLES[key]
        checks.append((q["size_ok"], f"{name} is {q['size_ratio']}x smaller than fp32 (target ≥ 3.5x)"))
        checks.append((q["speed_ok"], f"{name} is {q['speedup_batch_1']}x as fast as fp32 PyTorch at batch 1 "
                                      f"(target ≥ 2x; {q['speedup_batch_32']}x at batch 32)"))
        checks.append((q["accuracy_ok"], f"{name} loses {q['accuracy_drop_points']} accuracy points "
                                         f"(target ≤ 0.5)"))
    if "onnx" in t:
        o = t["onnx"]
        checks.append((o["speed_ok"], f"ONNX Runtime is {o['speedup_batch_1']}x as fast at batch 1 (target ≥ 1.4x)"))
        checks.append((o["logit_ok"], f"ONNX logits differ by at most "
                                      f"{report['formats']['onnx']['max_logit_diff']:.1e} (target ≤ 1e-4)"))
    return checks
