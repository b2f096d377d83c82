"""`AIVOS_*` variables of other tools do not stop the edge agent; settings keys still count."""

from __future__ import annotations

import pytest

from aivos.edge.settings import load_edge_settings
from aivos.shared.errors import ConfigError


def test_other_tools_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # set by `scripts/up` and the cloud tier; the agent started under them must still load
    monkeypatch.setenv("AIVOS_UP_GENERATOR_LOG", "/tmp/install.log")
    monkeypatch.setenv("AIVOS_CLOUD_DB", "postgresql://db/aivos")
    monkeypatch.setenv("AIVOS_SITE_ID", "branch-7")
    monkeypatch.setenv("AIVOS_SERVER__PORT", "8123")
    settings = load_edge_settings()
    assert settings.site_id == "branch-7" and settings.server.port == 8123


def test_a_misspelt_section_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIVOS_SERVER__PROT", "8123")
    with pytest.raises(ConfigError, match="prot"):
        load_edge_settings()
