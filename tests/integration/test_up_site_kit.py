"""A second `aivos up` on the same data dir rotates the site into ``DATA_DIR/site-kit``: the
folder then holds one kit, of the new generation, that `aivos install edge --kit` accepts,
and the leaf `up` runs from it is the new generation, linked to the hub."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from aivos import up
from aivos.cloud.fleet.enroll import load_identities
from aivos.install.kit import load_kit

pytestmark = pytest.mark.slow


def _leaf_names(app: up.Appliance) -> set[str]:
    assert app.hub is not None
    monitor = f"http://{app.hub.conf.host}:{app.hub.conf.monitor_port}/leafz"
    with urllib.request.urlopen(monitor, timeout=10) as resp:
        return {str(leaf["name"]) for leaf in json.loads(resp.read()).get("leafs") or []}


def test_a_second_up_leaves_one_kit_of_the_new_generation(tmp_path: Path) -> None:
    data = tmp_path / "up"
    for _run in range(2):
        app = up.Appliance(data, "site-1", 0, False, data)
        try:
            app.start_nats()
            # `start_leaf` returns once the hub sees the leaf, and after a rotation once
            # the old generation is retired, so the names seen now are the running leaf's
            names = _leaf_names(app)
        finally:
            app.stop()
    ident = load_identities(data).sites["site-1"]
    assert (ident.generations, ident.retiring) == ([2], [])
    assert names == {"aivos-leaf-site-1-g2"}
    kit = load_kit(data / "site-kit")
    assert kit.key_names == ["aivos-site-site-1-2.key"]
    assert f"{data / 'site-kit'}/credentials/aivos-site-site-1-2.key" in kit.leaf_conf
