"""`aivos install edge|cloud --prefix P`: the tree it writes (modes, owners, re-homed
kit), idempotence (a second run leaves every byte and mtime as it was), units accepted by
`systemd-analyze verify`, a broken kit refused before anything is written, and a kit
rotated into the folder of the previous one (what every `aivos up` after the first does)
installed as one generation."""

from __future__ import annotations

import configparser
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aivos.cloud.fleet.enroll import enroll_site, rotate_site, secure_hub_config
from aivos.install.errors import KitInvalid
from aivos.install.kit import load_kit

OWNER = "daemon"  # exists on every Debian-like system, and is not systemd's special "nobody"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def aivos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aivos", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cloud")
    secure_hub_config(root / "cloud")
    return enroll_site(
        root / "cloud", "branch-17", root / "kit", hub_leaf_url="nats-leaf://hub.example.net:7422"
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    (root / "manifest.json").write_text('{"version": "test"}')
    (root / "model.onnx").write_bytes(b"\0model")
    return root


def snapshot(root: Path) -> dict[str, tuple[str, int, int, int, int]]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(root))] = (
            digest,
            st.st_mtime_ns,
            st.st_mode,
            st.st_uid,
            st.st_gid,
        )
    return out


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
def test_edge_install_modes_owners_and_rehomed_kit(kit: Path, bundle: Path, tmp_path: Path) -> None:
    done = aivos(
        "install",
        "edge",
        "--kit",
        str(kit),
        "--prefix",
        str(tmp_path),
        "--user",
        OWNER,
        "--bundle",
        str(bundle),
    )
    assert done.returncode == 0, done.stderr
    assert f"system user {OWNER}: not created (installing under {tmp_path}" in done.stdout
    uid = pwd.getpwnam(OWNER).pw_uid
    etc, data = tmp_path / "etc/aivos", tmp_path / "var/lib/aivos"
    (key,) = (etc / "credentials").glob("*.key")
    assert (mode(etc), etc.stat().st_uid) == (0o750, 0)
    assert (mode(etc / "edge.toml"), mode(etc / "leaf.conf")) == (0o640, 0o640)
    assert (mode(key), key.stat().st_uid) == (0o600, uid)  # the leaf (as OWNER) reads it
    assert mode(etc / "credentials" / "ca.crt") == 0o640
    for directory in (data, data / "edge", data / "bundles"):
        assert (mode(directory), directory.stat().st_uid) == (0o750, uid)
    assert (data / "bundles/default/model.onnx").read_bytes() == b"\0model"
    # the kit's own paths are replaced by the installed ones
    leaf = (etc / "leaf.conf").read_text()
    assert f'key_file: "/etc/aivos/credentials/{key.name}"' in leaf and str(kit) not in leaf
    toml = (etc / "edge.toml").read_text()
    assert 'trusted_keys_dir = "/etc/aivos/trusted_keys"' in toml
    assert 'data_dir = "/var/lib/aivos/edge"' in toml and str(kit) not in toml
    assert "LogNamespace=aivos" in (tmp_path / "etc/systemd/system/aivos-edge.service").read_text()
    assert "SystemMaxUse=512M" in (tmp_path / "etc/systemd/journald@aivos.conf").read_text()
    assert f"u {OWNER} -" in (tmp_path / "etc/sysusers.d/aivos.conf").read_text()


def test_second_edge_install_changes_nothing(kit: Path, bundle: Path, tmp_path: Path) -> None:
    args = [
        "install",
        "edge",
        "--kit",
        str(kit),
        "--prefix",
        str(tmp_path),
        "--bundle",
        str(bundle),
    ]
    first = aivos(*args)
    assert first.returncode == 0, first.stderr
    assert "  created   /etc/aivos/leaf.conf" in first.stdout
    before = snapshot(tmp_path)
    second = aivos(*args)
    assert second.returncode == 0, second.stderr
    assert snapshot(tmp_path) == before
    lines = [line.split() for line in second.stdout.splitlines() if line.startswith("  ")]
    assert lines and {action for action, _ in lines} == {"unchanged"}
    assert "nothing to do: the installation is up to date" in second.stdout


def test_edge_units_are_hardened_and_ordered(kit: Path, tmp_path: Path) -> None:
    assert aivos("install", "edge", "--kit", str(kit), "--prefix", str(tmp_path)).returncode == 0
    units = tmp_path / "etc/systemd/system"
    edge, leaf = unit(units / "aivos-edge.service"), unit(units / "aivos-leaf.service")
    assert "aivos-leaf.service" in edge["Unit"]["After"].split()
    assert "aivos-leaf.service" in edge["Unit"]["Wants"].split()
    for service in (edge["Service"], leaf["Service"]):
        assert service["User"] == "aivos"
        assert service["ProtectSystem"] == "strict"
        assert service["NoNewPrivileges"] == service["PrivateTmp"] == "yes"
        assert service["Restart"] == "on-failure"
    assert edge["Service"]["ReadWritePaths"] == "/var/lib/aivos"
    assert edge["Service"]["ExecStart"].endswith(
        "aivos edge serve --data-dir /var/lib/aivos/edge --config /etc/aivos/edge.toml"
    )
    assert leaf["Service"]["ExecStart"].endswith("nats-server -c /etc/aivos/leaf.conf")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify(kit: Path, tmp_path: Path) -> None:
    # works without systemd as PID 1: verify loads the files and checks every directive,
    # the ExecStart binaries and the units they name (journald@ namespaces included)
    assert (
        aivos("install", "edge", "--kit", str(kit), "--prefix", str(tmp_path / "e")).returncode == 0
    )
    cloud = aivos("install", "cloud", "--prefix", str(tmp_path / "c"), "--workers", "2")
    assert cloud.returncode == 0, cloud.stderr
    units = sorted((tmp_path / "e/etc/systemd/system").iterdir())
    units += sorted((tmp_path / "c/etc/systemd/system").iterdir())
    assert len(units) == 7
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == ""  # not even a warning


def test_broken_kit_is_refused_before_anything_is_written(kit: Path, tmp_path: Path) -> None:
    broken = tmp_path / "kit"
    shutil.copytree(kit, broken)
    (key,) = (broken / "credentials").glob("*.key")
    key.unlink()
    done = aivos("install", "edge", "--kit", str(broken), "--prefix", str(tmp_path / "root"))
    assert done.returncode == 1
    assert "credentials/ needs exactly one .key" in " ".join(done.stderr.split())
    assert not (tmp_path / "root").exists()


def test_a_kit_with_two_generations_keys_is_refused_with_their_names(
    kit: Path, tmp_path: Path
) -> None:
    mixed = tmp_path / "kit"
    shutil.copytree(kit, mixed)
    (key,) = (mixed / "credentials").glob("*.key")
    shutil.copyfile(key, mixed / "credentials" / "aivos-site-branch-17-0.key")
    with pytest.raises(KitInvalid) as refused:
        load_kit(mixed)
    assert f"it holds aivos-site-branch-17-0.key, {key.name}" in str(refused.value)


def test_a_kit_rotated_into_the_previous_ones_folder_holds_only_the_new_generation(
    tmp_path: Path,
) -> None:
    cloud, out = tmp_path / "cloud", tmp_path / "kit"
    secure_hub_config(cloud)
    enroll_site(cloud, "branch-18", out)
    (out / "edge-data").mkdir()  # an agent run from the kit's edge.toml keeps its state here
    (out / "edge-data" / "edge.db").write_bytes(b"state")
    rotate_site(cloud, "branch-18", out)
    kit = load_kit(out)
    assert sorted(kit.credentials) == [
        "aivos-site-branch-18-2.crt",
        "aivos-site-branch-18-2.key",
        "ca.crt",
    ]
    assert f'key_file: "{out}/credentials/aivos-site-branch-18-2.key"' in kit.leaf_conf
    assert "aivos-leaf-branch-18-g2" in kit.leaf_conf  # the server name the hub retires by
    assert (out / "edge-data" / "edge.db").read_bytes() == b"state"  # not the kit's: kept
    # nothing is left of the stage the new generation was written in
    assert sorted(p.name for p in out.iterdir()) == [
        "credentials",
        "edge-data",
        "edge.toml",
        "leaf.conf",
        "trusted_keys",
    ]
    done = aivos("install", "edge", "--kit", str(out), "--prefix", str(tmp_path / "root"))
    assert done.returncode == 0, done.stderr
    installed = tmp_path / "root/etc/aivos/credentials"
    assert [p.name for p in installed.glob("*.key")] == ["aivos-site-branch-18-2.key"]


def test_cloud_install_keeps_the_db_url_out_of_units_and_is_idempotent(tmp_path: Path) -> None:
    args = ["install", "cloud", "--prefix", str(tmp_path), "--workers", "3"]
    args += [
        "--db",
        "postgresql://aivos:s3cret@db.internal/aivos",
        "--public-host",
        "hub.example.net",
    ]
    first = aivos(*args)
    assert first.returncode == 0, first.stderr
    env = tmp_path / "etc/aivos/cloud.env"
    assert "AIVOS_CLOUD_DB=postgresql://aivos:s3cret@db.internal/aivos" in env.read_text()
    assert mode(env) == 0o640
    units = tmp_path / "etc/systemd/system"
    assert not any("s3cret" in p.read_text() for p in units.iterdir())
    target = unit(units / "aivos-cloud.target")
    wants = target["Unit"]["Wants"].split()
    assert [w for w in wants if w.startswith("aivos-worker@")] == [
        f"aivos-worker@{i}.service" for i in (1, 2, 3)
    ]
    ingest = unit(units / "aivos-ingest.service")["Service"]
    hub = unit(units / "aivos-hub.service")["Service"]
    # `systemctl reload` takes the fleet commands' locks, as `aivos nats reload` does
    assert hub["ExecReload"] == ingest["ExecStart"].split(" cloud ")[0] + (
        " nats reload --data-dir /var/lib/aivos/cloud"
    )
    env_lines = ingest.get("Environment", "")
    assert "/var/lib/aivos/cloud/nats/services/ingest/" in env_lines  # runtime paths
    assert str(tmp_path) not in (units / "aivos-ingest.service").read_text()
    hub_conf = (tmp_path / "var/lib/aivos/cloud/nats/hub.conf").read_text()
    assert 'http: "127.0.0.1:8222"' in hub_conf and 'listen: "0.0.0.0:7422"' in hub_conf
    assert (tmp_path / "var/lib/aivos/cloud/pki/ca.key").stat().st_mode & 0o077 == 0
    before = snapshot(tmp_path)
    second = aivos(*args)
    assert second.returncode == 0, second.stderr
    assert snapshot(tmp_path) == before
    assert "nothing to do: the installation is up to date" in second.stdout
