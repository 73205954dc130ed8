"""The shipped serving settings: what a class on one server relies on (README "Running it for a
class")."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def config() -> dict:
    return tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_shipped_config_keeps_xsrf_on_and_bounds_uploads_and_messages():
    server = config()["server"]
    assert server["enableXsrfProtection"] is True
    assert server["enableCORS"] is True
    assert 0 < server["maxUploadSize"] <= 10
    assert 0 < server["maxMessageSize"] <= 200
    assert 0 < server["disconnectedSessionTTL"] <= 300
    assert server["fileWatcherType"] == "none" and server["runOnSave"] is False
    assert server["headless"] is True


def test_shipped_config_hides_tracebacks_and_skips_the_per_rerun_gc():
    settings = config()
    assert settings["client"]["showErrorDetails"] == "none"
    assert settings["runner"]["postScriptGC"] is False
    assert settings["browser"]["gatherUsageStats"] is False


def test_streamlit_is_pinned_to_a_version_without_published_advisories():
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.startswith("streamlit")]
    assert len(pins) == 1
    match = re.fullmatch(r"streamlit>=(\S+)", pins[0])
    assert match and version_tuple(match.group(1)) >= (1, 54)
    assert version_tuple(importlib.metadata.version("streamlit")) >= (1, 54)
