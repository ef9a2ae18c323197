"""The app in a real browser: upload a CSV, map columns, train, watch the curves, pretrain an encoder, predict.

Starts ``streamlit run streamlit_app.py`` on a free port with its runs in a temporary folder and
drives Debian's Chromium with Playwright.
"""

from __future__ import annotations

import csv
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, keyword_rows

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"browser test needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(runs_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "LSTM_STUDIO_RUNS_DIR": str(runs_dir), "LSTM_STUDIO_DEMO_DIR": str(runs_dir / "no-demo"),
           "OMP_NUM_THREADS": "1"}  # a tiny model trains fastest on one thread
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.3)
    process.terminate()
    raise RuntimeError(f"streamlit did not start within 60 s: {log_path.read_text()[-2000:]}")


@pytest.fixture
def app_url(tmp_path):
    port = free_port()
    process = start_app(tmp_path / "runs", port, tmp_path / "streamlit.log")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def write_upload(path: Path) -> Path:
    """Columns a user might have: an id, the review text and its sentiment."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "review", "sentiment"])
        for i, row in enumerate(keyword_rows(1200, seed=3)):
            writer.writerow([i, row["text"], row["label"]])
    return path


def test_upload_train_watch_and_predict_in_a_browser(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    upload = write_upload(tmp_path / "my reviews.csv")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)  # the first script run imports torch and may take a while
        page.goto(app_url)
        expect(page.get_by_role("heading", name="LSTM Text Classification Studio")).to_be_visible()
        expect(page.get_by_test_id("stMetricValue")).to_have_text(re.compile(r"^(CPU|GPU: .+)$"))

        def go(name: str) -> None:
            page.get_by_test_id("stSidebarNavLink").filter(has_text=name).click()
            expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()

        # data: upload, map the columns, see the report
        go("Data")
        page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(upload))
        expect(page.get_by_text("Ready to train:")).to_be_visible()
        choose(page, page.get_by_test_id("stSelectbox").filter(has_text="Text column"), "review")
        labels = page.get_by_test_id("stMultiSelect").filter(has_text="Label column")
        expect(labels).to_contain_text("sentiment")
        expect(page.get_by_text("Ready to train: 960 training, 120 validation and 120 test rows")).to_be_visible()
        expect(page.get_by_test_id("stPlotlyChart")).to_have_count(2)

        # train: a tiny model in small batches, so the curve is seen growing while the run goes on
        go("Train")
        for label, value in (("Epochs", "6"), ("Batch size", "8"), ("Hidden dim", "8"), ("Embedding dim", "8")):
            field = page.get_by_label(label, exact=True).first  # the training form comes before the pretraining's
            field.fill(value)
            field.press("Enter")
            expect(field).to_have_value(value)
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_text("Status: running", exact=True).first).to_be_visible()
        progress = page.get_by_text(re.compile(r"\d+ batch points, \d+ epochs finished"))
        seen = set()
        deadline = time.time() + 60
        while time.time() < deadline and not page.get_by_text("Status: completed", exact=True).first.is_visible():
            if progress.count():
                seen.add(progress.first.inner_text())
            time.sleep(0.2)
        expect(page.get_by_text("Status: completed", exact=True).first).to_be_visible()
        expect(progress).to_have_text(re.compile(r"[1-6] epochs finished"))
        seen.add(progress.first.inner_text())
        assert len(seen) >= 2, f"the curve never updated while training: {seen}"
        expect(page.get_by_test_id("stPlotlyChart")).to_have_count(1)
        expect(page.get_by_text("Test accuracy")).to_be_visible()

        # pretrain an encoder on the same texts; it is then offered as the classifier's Init from
        section = page.get_by_test_id("stExpander").filter(has_text="Pretrain an encoder on unlabelled text")
        section.get_by_text("Pretrain an encoder on unlabelled text").click()
        expect(section.get_by_text(re.compile(r"The texts of the Data page: my reviews.csv, column review"))
               ).to_be_visible()
        for label, value in (("Epochs", "1"), ("Batch size", "32"), ("Hidden dim", "8")):
            field = section.get_by_label(label, exact=True)
            field.fill(value)
            field.press("Enter")
            expect(field).to_have_value(value)
        section.get_by_role("button", name="Start pretraining").click()
        expect(page.get_by_text("Pretraining: completed", exact=True).first).to_be_visible(timeout=90_000)
        expect(page.get_by_text(re.compile(r"^Encoder saved in .*encoders")).first).to_be_visible()
        expect(page.get_by_test_id("stSelectbox").filter(has_text="Init from a pretrained encoder").first).to_be_visible()

        # predict: the new run is the model on offer
        go("Predict")
        page.get_by_label("Text to classify").fill("a superb and lovely story")
        page.get_by_role("button", name="Classify").click()
        expect(page.get_by_text("Predicted label")).to_be_visible()
        expect(page.get_by_test_id("stMetricValue")).to_have_text(re.compile(r"^(pos|neg)$"))
        expect(page.get_by_test_id("stPlotlyChart")).to_have_count(1)
        browser.close()


def choose(page, selectbox, option: str, tries: int = 3) -> None:
    """Pick an option; a click that lands while the script reruns closes the list, so try again."""
    target = page.get_by_role("option", name=option, exact=True)
    for attempt in range(tries):
        selectbox.click()
        try:
            target.wait_for(state="visible", timeout=10_000)
        except Exception:
            if attempt == tries - 1:
                raise
            page.keyboard.press("Escape")
            continue
        target.click()
        return
