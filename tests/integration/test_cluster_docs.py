"""docs/scaling.md examples: the `aivos nats config --cluster 3` console example writes
what the page shows, and the documented options exist on the commands."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from aivos.cli import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"


def test_cluster_config_example_writes_what_the_doc_shows(tmp_path: Path) -> None:
    text = DOC.read_text()
    command = re.search(r"\$ aivos nats config (.*)", text)
    assert command is not None
    args = command.group(1).replace("/etc/aivos/nats", str(tmp_path)).split()
    result = CliRunner().invoke(cli, ["nats", "config", *args])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("*.conf")) == [
        "hub-1.conf",
        "hub-2.conf",
        "hub-3.conf",
        "leaf-branch-1.conf",
    ]
    shown = re.search(r"```\n(leafnodes \{.*?\n\})\n```", text, flags=re.S)
    assert shown is not None
    assert shown.group(1) in (tmp_path / "leaf-branch-1.conf").read_text()
    for port in (6222, 6223, 6224):
        assert f"nats-route://10.0.0.10:{port}" in (tmp_path / "hub-2.conf").read_text()


def test_documented_options_exist() -> None:
    runner = CliRunner()
    ingest = runner.invoke(cli, ["cloud", "ingest", "--help"]).output
    assert "--db" in ingest and "--js-replicas" in ingest and "AIVOS_CLOUD_DB" in ingest
    for command in ("stats", "audit"):
        assert "--db" in runner.invoke(cli, ["cloud", command, "--help"]).output
