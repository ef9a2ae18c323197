"""The engine never depends on the browser app, and pages never compute with torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a file imports, at any depth (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            found.add(str(node.args[0].value).split(".")[0])
    return found


def test_the_scanner_sees_every_kind_of_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os.path\nfrom json import dumps\n\ndef f():\n    import streamlit as st\n"
                      "    return __import__('torch')\n")
    assert imported_modules(sample) == {"os", "json", "streamlit", "torch"}


def test_core_never_imports_streamlit():
    files = sorted((ROOT / "core").glob("*.py"))
    assert files, "core/ has no Python files"
    offenders = [f.name for f in files if "streamlit" in imported_modules(f)]
    assert not offenders, f"core modules importing streamlit: {offenders}"


def test_pages_never_import_torch():
    pages = sorted((ROOT / "pages").glob("*.py")) if (ROOT / "pages").is_dir() else []
    if not pages:
        pytest.skip("pages/ has no pages yet")
    entry = ROOT / "streamlit_app.py"
    files = pages + ([entry] if entry.is_file() else [])
    offenders = [f.name for f in files if "torch" in imported_modules(f)]
    assert not offenders, f"pages importing torch (move the computation to core/): {offenders}"
