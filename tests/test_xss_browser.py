"""In a real browser: hostile text in uploaded data, labels, column names and typed input runs nothing.

A tiny run is trained on data whose texts, one label value and one label column name carry XSS
payloads; its test file's payload texts are labelled wrongly so that they show up as mistakes.
The app (``streamlit run streamlit_app.py``) serves that run, and Debian's Chromium visits the
Data, Predict, Explain and Evaluate pages, uploading and typing more payloads. On every page:
no dialog opens, no payload sets ``window.__xss``, no element with an event handler, a
``javascript:`` link or a ``srcdoc`` appears, the browser asks for nothing outside the app, and
the payloads are shown as the literal text the user gave; class names and column names that hold
markdown links, images or bare URLs show as text and fetch nothing.
"""

from __future__ import annotations

import csv
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.predict import Predictor
from conftest import FILLER, NEGATIVE, POSITIVE, REPO, one_torch_thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"XSS browser test needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)")

# Each payload either opens a dialog, sets window.__xss, asks for a URL outside the app, or would
# turn into live markup; a number tells which one got through.
PAYLOADS = [
    "<script>alert('xss1')</script>",
    '<img src=x onerror="window.__xss=2">',
    '"><img src=x onerror=alert(3)>',
    "'><svg onload=alert(4)>",
    "<svg/onload=window.__xss=5>",
    '<iframe srcdoc="<script>parent.__xss=6</script>"></iframe>',
    "[click7](javascript:alert(7))",
    '<a href="javascript:window.__xss=8">link8</a>',
    "&lt;script&gt;alert(9)&lt;/script&gt;",
    "</div><script>window.__xss=10</script>",
    '<style>body{background:url("javascript:alert(11)")}</style>',
    '<div style="background-image:url(javascript:alert(12))">css12</div>',
    "\\u003cimg src=x onerror=alert(13)\\u003e",
    "\uff1cscript\uff1ealert(14)\uff1c/script\uff1e",
    "<details open ontoggle=window.__xss=15>",
    "<body onload=alert(16)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(17)>",
    "javascript:alert(18)",
    '<object data="javascript:alert(19)"></object>',
    "<input autofocus onfocus=window.__xss=20>",
    "{{constructor.constructor('alert(21)')()}}",
    '<img src="//xss.invalid/22.png">',
    "![pic23](//xss.invalid/23.png)",
    '<base href="//xss.invalid/">',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(25)">',
    "%3Cscript%3Ealert(26)%3C/script%3E",
    "$\\href{javascript:alert(27)}{tex27}$",
    "<b>bold28</b>",
    '<a href="jav&#x09;ascript:alert(29)">link29</a>',
    "<link rel=stylesheet href=//xss.invalid/30.css>",
]
SENTINEL = '<img src=x onerror="window.__xss=1">'
# A class name and a label-column name the model is trained with: shown on every page that names classes.
BAD_LABEL = f"neg {SENTINEL} [x31](javascript:alert(31)) ![i32](//xss.invalid/32.png)"
BAD_COLUMN = "<svg onload=alert(33)>topic"
CHART_SAFE_PART = "[x31](javascript:alert(31)) ![i32](//xss.invalid/32.png)"  # quote-free: see the xfail below
GOOD_LABEL = "good"  # sorts before BAD_LABEL, so BAD_LABEL is the binary tasks' positive class
# The Data page's upload: a payload label column name, class and dropped row
DATA_COLUMN = '"><img src=x onerror=window.__xss=40>lab'
DATA_LABEL = "<svg onload=alert(41)>bad"
DATA_DROPPED_TEXT = "a row whose label is missing <script>alert(42)</script>"
EXTRA_PAYLOADS = [SENTINEL, BAD_LABEL, BAD_COLUMN, DATA_COLUMN, DATA_LABEL, DATA_DROPPED_TEXT]
# Elements a payload would leave behind had it become markup.
INJECTED = ("img[src='x'], [onerror], [onload], [ontoggle], [onfocus], iframe[srcdoc], object[data], "
            "a[href^='javascript' i], base[href], meta[http-equiv], link[href*='xss.invalid'], input[autofocus]")


def record(**observed) -> None:
    """Append what a page showed to $XSS_REPORT (JSON lines), for bench/bench_reliability.py."""
    if os.environ.get("XSS_REPORT"):
        with open(os.environ["XSS_REPORT"], "a", encoding="utf-8") as handle:
            handle.write(json.dumps(observed) + "\n")


def payload_text(*extra: str) -> str:
    """Every payload in one text, each on its own line, after a keyword the model knows."""
    return "\n".join(["a superb story", *extra, *PAYLOADS])


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def keyword_rows(n: int, seed: int, wrong: bool = False) -> list[list[str]]:
    """[text, label, topic]: the label follows a keyword; every text carries one payload.
    With ``wrong`` the labels are swapped, so the model gets these rows wrong."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        words = rng.sample(FILLER, 5) + [rng.choice(POSITIVE if positive else NEGATIVE)]
        text = " ".join(words) + " " + PAYLOADS[i % len(PAYLOADS)]
        label = GOOD_LABEL if positive != wrong else BAD_LABEL
        rows.append([text, label, "x" if i % 3 else "y"])
    return rows


def train_payload_run(root: Path) -> Path:
    from core.models import ModelConfig
    from core.pipeline import DataConfig, RunConfig, train_run
    from core.text import TextConfig
    from core.training import TrainConfig

    header = ["text", "label", BAD_COLUMN]
    train = write_csv(root / "train.csv", header, keyword_rows(300, seed=1))
    test = write_csv(root / "test.csv", header, keyword_rows(2 * len(PAYLOADS), seed=2, wrong=True))
    cfg = RunConfig(data=DataConfig(train=str(train), test=str(test), label_col=f"label,{BAD_COLUMN}"),
                    text=TextConfig(tokenizer="whitespace"),
                    model=ModelConfig(embedding_dim=16, hidden_dim=16, pooling="attention", dropout=0.0),
                    train=TrainConfig(epochs=6, warmup_steps=0, lr=0.01, batch_size=32))
    with one_torch_thread():
        result = train_run(cfg, runs_dir=root / "runs", run_id="payloads", log=lambda line: None)
    assert result.status == "completed", result.message
    return result.run_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("xss")
    train_payload_run(root)
    port = free_port()
    env = {**os.environ, "LSTM_STUDIO_RUNS_DIR": str(root / "runs"), "LSTM_STUDIO_DEMO_DIR": str(root / "no-demo"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    log_path = root / "streamlit.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if process.poll() is not None:
                raise AssertionError(f"streamlit exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.time() > deadline:
                    raise AssertionError(f"streamlit did not start: {log_path.read_text(errors='replace')[-2000:]}")
                time.sleep(0.3)
        yield {"url": url, "root": root}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Watched:
    """A browser page that records dialogs, script errors, console errors and requests leaving the app."""

    def __init__(self, browser, base_url: str):
        from playwright.sync_api import expect

        expect.set_options(timeout=60_000)
        self.base_url = base_url
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.dialogs: list[str] = []
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.outside: list[str] = []
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on("console", lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None)
        self.context.on("request", self._request)

    def _request(self, request) -> None:
        if not request.url.startswith((self.base_url, "ws://127.0.0.1", "data:", "blob:", "about:")):
            self.outside.append(request.url)

    def open(self, path: str, heading: str):
        from playwright.sync_api import expect

        self.page.goto(f"{self.base_url}/{path}")
        expect(self.page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        return self.page

    def shows_text(self, fragment: str) -> None:
        from playwright.sync_api import expect

        expect(self.page.get_by_text(fragment, exact=False).first).to_be_visible()

    def assert_nothing_ran(self, allow: tuple[str, ...] = ()) -> None:
        """No payload ran or became markup; ``allow``: URLs of known, reported leaks (see below)."""
        time.sleep(1.5)  # give an injected handler or a late image load the chance to fire
        page = self.page
        sentinels = [frame.evaluate("typeof window.__xss === 'undefined' ? null : String(window.__xss)")
                     for frame in page.frames if not frame.is_detached()]
        injected = page.locator(INJECTED).evaluate_all("els => els.map(e => e.outerHTML.slice(0, 120))")
        record(page=page.url.split("?")[0].rsplit("/", 1)[-1], dialogs=self.dialogs, sentinels=sentinels,
               page_errors=self.page_errors, outside=self.outside, injected=injected)
        assert sentinels == [None] * len(sentinels), f"payload(s) ran: window.__xss = {sentinels}"
        assert self.dialogs == [], f"dialogs opened: {self.dialogs}"
        assert self.page_errors == [], f"script errors: {self.page_errors}"
        outside = [url for url in self.outside if not any(url.endswith(known) for known in allow)]
        assert outside == [], f"requests left the app: {outside}"
        script_trouble = [m for m in self.console_errors
                          if "uncaught" in m.lower() or "javascript:" in m.lower() or "xss" in m.lower()]
        assert script_trouble == [], script_trouble
        assert injected == [], f"payload markup reached the page: {injected}"
        assert page.locator("script:not([src])").evaluate_all(
            "els => els.filter(e => /__xss|alert\\(/.test(e.textContent)).length") == 0

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(app, browser):
    w = Watched(browser, app["url"])
    yield w
    w.close()


def test_data_page_upload_with_payload_texts_label_and_column_name(app, watched):
    # the label column is named by a payload, one class is a payload, texts are payloads, one row is dropped
    column, label = DATA_COLUMN, DATA_LABEL
    rows = [[f"{'great' if i % 2 else 'awful'} film {p}", "fine" if i % 2 else label]
            for i, p in enumerate(PAYLOADS * 2)]
    rows.append([DATA_DROPPED_TEXT, ""])
    upload = write_csv(app["root"] / "payload upload.csv", ["text", column], rows)

    page = watched.open("Data", "Data")
    page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(upload))
    watched.shows_text("Ready to train:")
    watched.shows_text(f"stratified on {column}")  # the column name, character for character
    watched.shows_text(f"columns text, {column}")
    labels = page.get_by_test_id("stMultiSelect").filter(has_text="Label column")
    assert column in labels.inner_text()
    expect_count(page.get_by_test_id("stDataFrame"), 2)  # preview and dropped rows
    charts = page.get_by_test_id("stPlotlyChart")
    expect_count(charts, 3)  # class balance (the classes are payloads), lengths, dropped rows
    expect_contains(charts.first, DATA_LABEL)
    watched.assert_nothing_ran()


def test_predict_page_typed_payloads_and_payload_labels(app, watched):
    page = watched.open("Predict", "Predict")
    watched.shows_text(f"Classes: {GOOD_LABEL}, {BAD_LABEL}")
    watched.shows_text(f"label columns: label, {BAD_COLUMN}")
    box = page.get_by_label("Text to classify")
    box.fill(payload_text("awful dreadful poor awful"))
    page.get_by_role("button", name="Classify").click()
    expect_metric_labels(page, ["Predicted label", f"Predicted {BAD_COLUMN}"])
    assert box.input_value() == payload_text("awful dreadful poor awful")
    charts = page.get_by_test_id("stPlotlyChart")
    expect_count(charts, 2)
    expect_contains(charts.first, CHART_SAFE_PART)  # the probability bars name the class

    # a file of payload texts classified in one go
    upload = write_csv(uploads(app) / "to classify.csv", ["text"], [[p] for p in PAYLOADS])
    page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(upload))
    page.get_by_role("button", name="Predict the file").click()
    watched.shows_text(f"{len(PAYLOADS)} predictions")
    watched.assert_nothing_ran()


def uploads(app) -> Path:
    folder = app["root"] / "uploads"
    folder.mkdir(exist_ok=True)
    return folder


def expect_metric_labels(page, labels: list[str]) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stMetricLabel")).to_have_text(labels)


def test_explain_page_colours_payload_tokens_as_text(app, watched):
    page = watched.open("Explain", "Explain")
    watched.shows_text(f"Classes: {GOOD_LABEL}, {BAD_LABEL}")
    page.get_by_text("Pick a text from the run's test split").click()  # the test-set picker holds payload texts
    expect_count(page.get_by_test_id("stDataFrame"), 1)
    box = page.get_by_label("Text to explain")
    text = payload_text()
    box.fill(text)
    box.press("Control+Enter")
    tokens = page.locator("span.xpl-token")
    tokens.first.wait_for()
    watched.shows_text("Completeness error")
    shown = tokens.all_inner_texts()
    # attention first: every token exactly as the model read it (entities such as &lt; are decoded, case folded)
    words = Predictor.load(app["root"] / "runs" / "payloads").encoder.encode(text).tokens
    assert len(words) > len(PAYLOADS) and shown[:len(words)] == words
    for word in ("<script>alert('xss1')</script>", "onerror=\"window.__xss=2\">", "[click7](javascript:alert(7))",
                 "<script>alert(9)</script>", "</div><script>window.__xss=10</script>", "srcdoc=\"<script>parent.__xss=6</script>\"></iframe>"):
        assert shown.count(word) >= 2, word  # attention and Integrated Gradients
    watched.assert_nothing_ran()


def test_evaluate_page_shows_payload_mistakes_and_classes_as_text(app, watched):
    page = watched.open("Evaluate", "Evaluate")
    mistakes = page.get_by_text("test texts are misclassified")
    mistakes.wait_for()
    wrong = int(mistakes.inner_text().split(" of ")[0])
    assert wrong >= len(PAYLOADS)  # the wrongly labelled payload texts are listed
    watched.shows_text(f"F1 of class {BAD_LABEL}")
    label_select = page.get_by_test_id("stSelectbox").filter(has_text="Label column")
    label_select.click()
    assert page.get_by_role("option", name=BAD_COLUMN, exact=True).is_visible()
    page.keyboard.press("Escape")
    expect_count(page.get_by_test_id("stDataFrame"), 3)  # metrics, per class, mistakes
    expect_contains(page.get_by_test_id("stPlotlyChart").first, CHART_SAFE_PART)  # confusion matrix axes
    watched.assert_nothing_ran()


def test_class_names_are_shown_literally_and_fetch_nothing(app, watched):
    page = watched.open("Evaluate", "Evaluate")
    page.get_by_text("test texts are misclassified").wait_for()
    expect_contains(page.get_by_test_id("stSlider"), BAD_LABEL)
    expect_contains(page.get_by_test_id("stPlotlyChart").first, BAD_LABEL)
    page = watched.open("Predict", "Predict")
    page.get_by_label("Text to classify").fill("awful dreadful poor awful")
    page.get_by_role("button", name="Classify").click()
    expect_metric_labels(page, ["Predicted label", f"Predicted {BAD_COLUMN}"])
    assert BAD_LABEL in page.get_by_test_id("stMetricValue").all_inner_texts()
    page = watched.open("Explain", "Explain")
    box = page.get_by_label("Text to explain")
    box.fill("awful dreadful poor awful")
    box.press("Control+Enter")
    page.locator("span.xpl-token").first.wait_for()
    assert page.get_by_test_id("stMetricValue").all_inner_texts()[:2] == [BAD_LABEL, BAD_LABEL]
    watched.assert_nothing_ran()


def expect_contains(locator, text: str) -> None:
    from playwright.sync_api import expect

    expect(locator).to_contain_text(text)


def expect_count(locator, n: int) -> None:
    from playwright.sync_api import expect

    expect(locator).to_have_count(n)


def test_a_url_in_a_column_name_is_shown_as_text_not_a_link(app, watched):
    column = "see https://xss.invalid/43 now"
    rows = [[f"{'great' if i % 2 else 'awful'} film {i}", "a" if i % 2 else "b"] for i in range(20)]
    upload = write_csv(uploads(app) / "url column.csv", ["text", column], rows)
    page = watched.open("Data", "Data")
    page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(upload))
    watched.shows_text("Ready to train:")
    assert page.locator("a[href*='xss.invalid']").count() == 0
    # the app breaks autolinking with an invisible zero-width space; the reader sees the name as typed
    visible = page.locator("body").inner_text().replace("\u200b", "")
    assert f"stratified on {column}" in visible
