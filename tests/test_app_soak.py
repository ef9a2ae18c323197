"""Soak: rerunning each page many times (as a user clicking around would) does not grow memory.

Each page runs under Streamlit's AppTest with its main content on screen (a tiny trained run in
LSTM_STUDIO_RUNS_DIR, data in session state, a text typed in). After a warm-up that fills the
caches, Python's traced memory (tracemalloc) may grow by less than ``GROWTH_BOUND_MB`` over
``SOAK_RERUNS`` reruns (60 here; ``bench/bench_reliability.py`` runs 200).
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import REPO, keyword_csv, one_torch_thread, train_tiny_run

SOAK_RERUNS = int(os.environ.get("SOAK_RERUNS", "60"))
WARMUP_RERUNS = 20
GROWTH_BOUND_MB = 20.0
TEXT = "the movie was superb and the plot lovely"


@dataclass
class PageSoak:
    name: str
    script: str
    prepare: Callable[[object], None]  # fills session state before the first run
    act: Callable[[object], object]  # one user step: returns the AppTest to run
    shows: Callable[[object], bool]  # the page's main content is on screen


def _data_state(at) -> None:
    from ui.data import read_upload

    at.session_state["raw_data"] = read_upload(keyword_csv(200), "reviews.csv")


def _train_state(at) -> None:
    from ui.data import prepare, read_upload

    at.session_state["prepared_data"] = prepare(read_upload(keyword_csv(200), "reviews.csv"), "text", ["label"])


def _typed(key: str):
    def prepare(at) -> None:
        at.session_state[key] = TEXT
    return prepare


def _nothing(at) -> None:
    pass


def _rerun(at):
    return at


def _click(key: str):
    def act(at):
        return at.button(key=key).click()
    return act


def _values(at, kind: str) -> list[str]:
    return [str(e.value) for e in getattr(at, kind)]


PAGES = [
    PageSoak("Home", "streamlit_app.py", _nothing, _rerun,
             lambda at: "LSTM Text Classification Studio" in _values(at, "title")),
    PageSoak("Data", "pages/1_Data.py", _data_state, _rerun,
             lambda at: any("Ready to train" in v for v in _values(at, "success"))),
    PageSoak("Train", "pages/2_Train.py", _train_state, _rerun,
             lambda at: any(b.label == "Start training" for b in at.button)),
    PageSoak("Evaluate", "pages/3_Evaluate.py", _nothing, _rerun,
             lambda at: any("misclassified" in v for v in _values(at, "caption"))),
    PageSoak("Predict", "pages/4_Predict.py", _typed("predict.text"), _click("predict.go"),
             lambda at: [m.label for m in at.metric] == ["Predicted label"]),
    PageSoak("Explain", "pages/5_Explain.py", _typed("explain.text"), _rerun,
             lambda at: len(at.get("html")) >= 2),
    PageSoak("Export", "pages/6_Export.py", _nothing, _rerun,
             lambda at: any(s.label == "Model" for s in at.selectbox)),
]


@dataclass
class SoakResult:
    page: str
    reruns: int
    growth_mb: float  # traced Python memory still held after the reruns, beyond the warm-up
    peak_mb: float
    seconds: float
    rss_growth_mb: float  # resident memory (torch and allocator included) over the same reruns; for reference


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return float("nan")


def soak(page: PageSoak, reruns: int = SOAK_RERUNS, warmup: int = WARMUP_RERUNS) -> SoakResult:
    """Run ``page`` ``warmup`` times, then ``reruns`` times under tracemalloc; every run must show the page."""
    import time

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / page.script), default_timeout=120)
    page.prepare(at)
    at.run()  # draws the page's widgets, so that the first step can use them
    assert not at.exception, f"{page.name}: {at.exception}"

    def once(i: int) -> None:
        page.act(at).run()
        assert not at.exception, f"{page.name}, run {i}: {at.exception}"
        assert page.shows(at), f"{page.name}, run {i}: the main content is missing"

    for i in range(warmup):
        once(i)
    gc.collect()
    rss_before = rss_mb()
    was_tracing = tracemalloc.is_tracing()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for i in range(reruns):
            once(warmup + i)
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return SoakResult(page.name, reruns, (after - before) / 2**20, (peak - before) / 2**20,
                      time.perf_counter() - start, rss_mb() - rss_before)


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    """A runs folder with one tiny finished run, the app pointed at it, no demo model."""
    root = tmp_path_factory.mktemp("soak")
    data_file = root / "keywords.csv"
    data_file.write_bytes(keyword_csv(300))
    with one_torch_thread():
        train_tiny_run(root / "runs", data_file, "tiny", epochs=3)
    with pytest.MonkeyPatch.context() as mp, one_torch_thread():
        mp.setenv("LSTM_STUDIO_RUNS_DIR", str(root / "runs"))
        mp.setenv("LSTM_STUDIO_DEMO_DIR", str(root / "no-demo"))
        yield Path(root / "runs")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_reruns_do_not_grow_memory(page, app_env):
    result = soak(page)
    assert result.growth_mb < GROWTH_BOUND_MB, \
        f"{page.name}: traced memory grew {result.growth_mb:.1f} MB over {result.reruns} reruns"
