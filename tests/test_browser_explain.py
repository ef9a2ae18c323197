"""In a real browser: an XSS-like text on the Explain page is shown as text and runs nothing."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, keyword_csv

CHROMIUM = Path("/usr/bin/chromium")
PAYLOAD = "the movie was great <img src=x onerror=alert(1)> <script>alert(2)</script>"

PAGE = str(REPO / "pages" / "5_Explain.py")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="browser test needs Debian chromium at /usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"streamlit exited early:\n{process.stdout.read().decode(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"streamlit did not answer at {url} within {limit}s")


def train_tiny(root: Path, pooling: str, run_id: str, epochs: int = 3) -> None:
    from core.models import ModelConfig
    from core.pipeline import DataConfig, RunConfig, train_run
    from core.text import TextConfig
    from core.training import TrainConfig

    data_file = root / "keywords.csv"
    data_file.write_bytes(keyword_csv(300))
    cfg = RunConfig(data=DataConfig(train=str(data_file)), text=TextConfig(tokenizer="whitespace"),
                    model=ModelConfig(embedding_dim=16, hidden_dim=16, pooling=pooling, dropout=0.0),
                    train=TrainConfig(epochs=epochs, warmup_steps=0, lr=0.01, batch_size=32))
    assert train_run(cfg, runs_dir=root / "runs", run_id=run_id, log=lambda line: None).status == "completed"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-explain")
    train_tiny(root, "attention", "tiny")

    port = free_port()
    env = {**os.environ, "LSTM_STUDIO_RUNS_DIR": str(root / "runs"), "LSTM_STUDIO_DEMO_DIR": str(root / "no-demo"),
           "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "streamlit_app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{port}/_stcore/health", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@needs_chromium
def test_xss_text_is_shown_as_text_and_runs_nothing(app):
    from playwright.sync_api import sync_playwright

    dialogs = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync"])
        try:
            page = browser.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(f"{app}/Explain", timeout=120_000)
            box = page.get_by_label("Text to explain")
            box.wait_for(timeout=120_000)
            box.fill(PAYLOAD)
            box.press("Control+Enter")
            tokens = page.locator("span.xpl-token")
            tokens.first.wait_for(timeout=120_000)
            page.get_by_text("Completeness error").first.wait_for(timeout=120_000)
            time.sleep(1.5)  # give any injected handler the chance to fire
            shown = tokens.all_inner_texts()
            # attention and IG side by side, occlusion in the expander: the whitespace tokens each time
            expected = PAYLOAD.split()
            assert shown[:len(expected)] == expected
            assert shown.count("onerror=alert(1)>") >= 2 and shown.count("<script>alert(2)</script>") >= 2
            assert page.locator("img[src='x']").count() == 0
            assert page.locator("[onerror]").count() == 0
            assert page.locator("span.xpl-token script").count() == 0
            assert dialogs == []
        finally:
            browser.close()


# ---- the same page under Streamlit's AppTest (no browser needed)

@pytest.fixture(scope="module")
def page_runs(tmp_path_factory) -> dict[str, Path]:
    roots = {}
    for pooling in ("attention", "max"):
        root = tmp_path_factory.mktemp(f"explain-page-{pooling}")
        train_tiny(root, pooling, f"tiny-{pooling}", epochs=6)
        roots[pooling] = root / "runs"
    return roots


def explain_page(runs_dir: Path, monkeypatch, text: str = ""):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LSTM_STUDIO_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("LSTM_STUDIO_DEMO_DIR", str(runs_dir / "no-demo"))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, at.exception
    if text:
        at.text_area(key="explain.text").input(text).run()
        assert not at.exception, at.exception
    return at


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_page_shows_both_methods_their_agreement_and_exports(page_runs, monkeypatch):
    at = explain_page(page_runs["attention"], monkeypatch)
    assert "Type a text" in at.info[0].value
    at.text_area(key="explain.text").input("the movie was superb and the plot").run()
    shown = metrics(at)
    assert shown["Predicted"] == "pos" and shown["Tokens read"] == "7"
    assert re.fullmatch(r"[+-]\d\.\d\d", shown["Rank correlation, Attention vs IG (Spearman)"])
    html_blocks = [h.proto.body for h in at.get("html")]
    assert [len(re.findall(r'class="xpl-token[ "]', b)) for b in html_blocks] == [7, 7, 7]  # attention, IG, occlusion
    captions = " ".join(c.value for c in at.caption)
    assert "Completeness error" in captions and "Deletion test" in captions
    downloads = [d.proto.label for d in at.get("download_button")]
    assert downloads == ["HTML", "JSON", "PNG (Integrated Gradients)"]


def test_what_if_edit_updates_the_prediction(page_runs, monkeypatch):
    at = explain_page(page_runs["attention"], monkeypatch, "the movie was superb and the plot")
    edit = [t for t in at.text_area if t.label == "Edited text"][0]
    assert edit.value == "the movie was superb and the plot"
    edit.input("the movie was dreadful and the plot").run()
    shown = metrics(at)
    assert shown["Prediction before"] == "pos" and shown["Prediction after"] == "neg"
    assert len(at.get("html")) == 4  # the edited text's IG attributions joined the page


def test_model_without_attention_pooling_gets_ig_and_a_clear_note(page_runs, monkeypatch):
    at = explain_page(page_runs["max"], monkeypatch, "the movie was superb")
    notes = " ".join(i.value for i in at.info)
    assert "pools with 'max'" in notes and "attention" in notes
    assert "Rank correlation, IG vs occlusion (Spearman)" in metrics(at)
    assert len(at.get("html")) == 2  # IG and occlusion


def test_unknown_words_and_truncation_are_visible(page_runs, monkeypatch):
    long_text = " ".join(["zyzzyva"] + ["the movie was superb"] * 120)  # 481 tokens; max_length is 400
    at = explain_page(page_runs["attention"], monkeypatch, long_text)
    shown = metrics(at)
    assert shown["Tokens read"] == "400"
    assert "not in the model" in " ".join(c.value for c in at.caption)
    assert "81 more tokens cut off" in at.get("html")[1].proto.body
