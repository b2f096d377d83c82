"""The built wheel exposes one import name, `aivos`, and coexists with other distributions
that install generic top-level packages such as `shared` or `cloud` (both exist on PyPI)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIERS = {"shared": "aivos/shared", "edge": "aivos/edge", "cloud": "aivos/cloud"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("aivos-*.whl")
    return built


def test_wheel_has_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert zf.read(top_level).decode().split() == ["aivos"]
    roots = {n.split("/", 1)[0] for n in names}
    assert {r for r in roots if not r.endswith(".dist-info")} == {"aivos"}


def test_wheel_carries_every_subpackage_and_its_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for folder, installed in TIERS.items():
        # every module, including any in a folder that forgot its __init__.py
        for module in (ROOT / folder).rglob("*.py"):
            relative = module.relative_to(ROOT / folder).as_posix()
            assert f"{installed}/{relative}" in names, relative
    assert "aivos/shared/data/clinc150/data_full.json" in names
    assert "aivos/__main__.py" in names
    assert any(n.startswith("aivos/cloud/console/templates/") for n in names)


def test_installs_next_to_generic_shared_and_cloud_packages(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        + [str(wheel)],
        check=True,
        capture_output=True,
    )
    # what another distribution (or a user's own folder in the working directory) installs
    for name in ("shared", "cloud", "edge"):
        (target / name).mkdir()
        (target / name / "__init__.py").write_text(f"OWNER = 'someone else: {name}'\n")
    probe = (
        "import shared, cloud, edge, aivos.shared, aivos.edge, aivos.cloud, aivos.cli\n"
        "assert shared.OWNER.endswith('shared') and cloud.OWNER.endswith('cloud')\n"
        "assert edge.OWNER.endswith('edge')\n"
        "for m in (aivos.shared, aivos.edge, aivos.cloud):\n"
        f"    assert m.__file__.startswith({str(target / 'aivos')!r}), m.__file__\n"
        "print('ok')\n"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=target, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    version = subprocess.run(
        [sys.executable, "-m", "aivos", "--version"],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
    )
    assert version.returncode == 0, version.stderr
    assert "0.1.0" in version.stdout
