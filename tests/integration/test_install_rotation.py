"""`aivos install edge` of a rotated kit: `credentials/` and `trusted_keys/` end up holding
exactly the new kit's files. The retired generation's key and certificate, and a signing key
the fleet no longer trusts, are removed and reported `removed`. Only after the new files and
the config that names them are in place, and nothing else in those folders is touched."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from aivos.cloud.fleet.enroll import secure_hub_config
from aivos.edge.fleet.installed import load_trusted_keys
from aivos.install.account import Account
from aivos.install.edge import install_edge
from aivos.install.layout import Runtime
from aivos.install.tree import Change, Owner, Tree
from aivos.shared.fleet import generate_signing_key

SITE = "branch-21"


def aivos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aivos", *args], capture_output=True, text=True, timeout=120
    )


def fleet(command: str, cloud: Path, out: Path) -> Path:
    done = aivos("fleet", command, SITE, "--data-dir", str(cloud), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.splitlines()[-1])


def install(kit: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    done = aivos("install", "edge", "--kit", str(kit), "--prefix", str(prefix))
    assert done.returncode == 0, done.stderr
    return done


def actions(output: str) -> dict[str, str]:
    """path -> action, from the installer's `  <action> <path>` lines."""
    lines = [line.split() for line in output.splitlines() if line.startswith("  ")]
    return {path: action for action, path in lines}


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_rotated_kit_replaces_the_retired_generation(tmp_path: Path) -> None:
    cloud, root = tmp_path / "cloud", tmp_path / "root"
    secure_hub_config(cloud)
    install(fleet("enroll", cloud, tmp_path / "kit-1"), root)
    creds = root / "etc/aivos/credentials"
    assert names(creds) == [f"aivos-site-{SITE}-1.crt", f"aivos-site-{SITE}-1.key", "ca.crt"]

    rotated = install(fleet("rotate", cloud, tmp_path / "kit-2"), root)
    assert names(creds) == [f"aivos-site-{SITE}-2.crt", f"aivos-site-{SITE}-2.key", "ca.crt"]
    done = actions(rotated.stdout)
    old = f"/etc/aivos/credentials/aivos-site-{SITE}-1"
    assert done[f"{old}.key"] == done[f"{old}.crt"] == "removed"
    assert done[f"/etc/aivos/credentials/aivos-site-{SITE}-2.key"] == "created"
    assert done["/etc/aivos/credentials/ca.crt"] == "unchanged"
    assert ", 2 removed" in rotated.stdout
    # the running leaf still holds the retired key it read at start; edge.toml is the same
    assert "&& systemctl restart aivos-leaf.service" in rotated.stdout
    assert done["/etc/aivos/edge.toml"] == "unchanged"
    assert "restart aivos-edge.service" not in rotated.stdout
    leaf = (root / "etc/aivos/leaf.conf").read_text()
    assert f'key_file: "/etc/aivos/credentials/aivos-site-{SITE}-2.key"' in leaf

    again = install(tmp_path / "kit-2", root)
    assert set(actions(again.stdout).values()) == {"unchanged"}
    assert ", 0 removed" in again.stdout
    assert "nothing to do: the installation is up to date" in again.stdout
    assert "restart" not in again.stdout
    assert names(creds) == [f"aivos-site-{SITE}-2.crt", f"aivos-site-{SITE}-2.key", "ca.crt"]


def test_a_signing_key_the_fleet_dropped_is_no_longer_trusted(tmp_path: Path) -> None:
    cloud, root = tmp_path / "cloud", tmp_path / "root"
    secure_hub_config(cloud)
    generate_signing_key(cloud / "keys", "old_bundle_signing")
    install(fleet("enroll", cloud, tmp_path / "kit-1"), root)
    trusted = root / "etc/aivos/trusted_keys"
    assert "old_bundle_signing.pub" in names(trusted)
    assert len(load_trusted_keys(trusted)) == 2  # what the agent checks bundles against

    (cloud / "keys/old_bundle_signing.pub").unlink()  # the fleet stops trusting it
    rotated = install(fleet("rotate", cloud, tmp_path / "kit-2"), root)
    assert names(trusted) == ["config_signing.pub"]
    assert len(load_trusted_keys(trusted)) == 1
    assert actions(rotated.stdout)["/etc/aivos/trusted_keys/old_bundle_signing.pub"] == "removed"


def test_only_the_kits_kinds_of_file_in_its_two_folders_are_removed(tmp_path: Path) -> None:
    cloud, root = tmp_path / "cloud", tmp_path / "root"
    secure_hub_config(cloud)
    install(fleet("enroll", cloud, tmp_path / "kit-1"), root)
    etc = root / "etc/aivos"
    kept = [
        etc / "credentials/README.txt",  # not a kind of file a kit has
        etc / "credentials/backup/aivos-site-old.key",  # below the folder, not in it
        etc / "trusted_keys/.notes",
        etc / "operator.key",  # next to the folders, not in them
    ]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the operator's")
    (etc / "trusted_keys/hand-placed.pub").write_text("not in the kit")
    elsewhere = tmp_path / "elsewhere.key"
    elsewhere.write_text("the operator's")
    (etc / "credentials/linked.key").symlink_to(elsewhere)  # the link goes, not its target

    rotated = install(fleet("rotate", cloud, tmp_path / "kit-2"), root)
    assert all(path.read_text() == "the operator's" for path in kept)
    assert not (etc / "trusted_keys/hand-placed.pub").exists()
    assert not (etc / "credentials/linked.key").is_symlink()
    assert elsewhere.read_text() == "the operator's"
    removed = sorted(
        path for path, action in actions(rotated.stdout).items() if action == "removed"
    )
    assert removed == [
        f"/etc/aivos/credentials/aivos-site-{SITE}-1.crt",
        f"/etc/aivos/credentials/aivos-site-{SITE}-1.key",
        "/etc/aivos/credentials/linked.key",
        "/etc/aivos/trusted_keys/hand-placed.pub",
    ]


def test_the_install_works_after_every_step_of_a_rotation(tmp_path: Path) -> None:
    """An install killed after any step leaves a box whose leaf.conf names files that exist
    and whose agent trusts some key: nothing is removed before its replacement is in use."""
    cloud, root = tmp_path / "cloud", tmp_path / "root"
    secure_hub_config(cloud)
    account = Account("aivos", "aivos", Owner(), Owner(), "")
    runtime = Runtime(str(tmp_path / "bin"), str(tmp_path / "bin/nats-server"))
    install_edge(Tree(root), account, fleet("enroll", cloud, tmp_path / "kit-1"), runtime)
    steps: list[Change] = []

    def still_working(change: Change) -> None:
        steps.append(change)
        leaf = (root / "etc/aivos/leaf.conf").read_text()
        for path in re.findall(r'(?:cert|key|ca)_file: "/(.*?)"', leaf):
            assert (root / path).is_file(), f"after {change}: leaf.conf names a missing {path}"
        assert load_trusted_keys(root / "etc/aivos/trusted_keys"), f"after {change}"

    rotated = fleet("rotate", cloud, tmp_path / "kit-2")
    install_edge(Tree(root, still_working), account, rotated, runtime)
    order = [change.path for change in steps]
    removals = [i for i, change in enumerate(steps) if change.action == "removed"]
    assert len(removals) == 2
    assert order.index("/etc/aivos/leaf.conf") < min(removals)
    assert order.index("/etc/aivos/edge.toml") < min(removals)


def test_a_changed_edge_toml_asks_for_an_agent_restart(tmp_path: Path) -> None:
    """The agent reads edge.toml once, at start: an install that changes it says so."""
    cloud, root = tmp_path / "cloud", tmp_path / "root"
    secure_hub_config(cloud)
    kit = fleet("enroll", cloud, tmp_path / "kit")
    first = install(kit, root)
    assert "restart" not in first.stdout  # a first install: `enable --now` starts the units

    toml = kit / "edge.toml"
    toml.write_text(toml.read_text() + "\n[limits]\nmax_text_chars = 2000\n")
    changed = install(kit, root)
    assert actions(changed.stdout)["/etc/aivos/edge.toml"] == "updated"
    assert "&& systemctl restart aivos-edge.service" in changed.stdout
    assert "restart aivos-leaf.service" not in changed.stdout
