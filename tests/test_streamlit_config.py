"""The app's Streamlit settings: a deliberate upload limit that the Data page states, and the
cross-site protections left on."""

from __future__ import annotations

import tomllib

import pytest

from conftest import REPO

CONFIG = REPO / ".streamlit" / "config.toml"


@pytest.fixture(scope="module")
def config() -> dict:
    assert CONFIG.is_file(), f"{CONFIG} is missing: the app would run with Streamlit's defaults"
    with open(CONFIG, "rb") as handle:
        return tomllib.load(handle)


def test_upload_limit_is_set_deliberately(config):
    limit = config.get("server", {}).get("maxUploadSize")
    assert isinstance(limit, int) and not isinstance(limit, bool), \
        f"server.maxUploadSize must be a whole number of MB, got {limit!r}"
    assert 1 <= limit <= 1000, f"server.maxUploadSize = {limit} MB is outside 1..1000"


def test_xsrf_and_cors_protection_stay_on(config):
    server = config.get("server", {})
    # Streamlit turns both on by default; the file may leave them out but must not switch them off
    assert server.get("enableXsrfProtection", True) is True
    assert server.get("enableCORS", True) is True
    assert config.get("browser", {}).get("gatherUsageStats") is False  # the app sends nothing home


def test_data_page_states_the_configured_limit(config, runs_dir, monkeypatch):
    from streamlit import config as st_config
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(REPO)  # Streamlit reads .streamlit/config.toml from the working folder
    st_config.get_config_options(force_reparse=True)
    limit = config["server"]["maxUploadSize"]
    assert st_config.get_option("server.maxUploadSize") == limit

    at = AppTest.from_file(str(REPO / "pages" / "1_Data.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    uploader = at.get("file_uploader")[0]
    assert f"up to {limit} MB" in uploader.proto.label
    assert f"Upload limit: {limit} MB." in [c.value for c in at.caption]
