"""Concurrent `aivos fleet enroll | rotate | revoke` on one cloud data dir and one kit
folder run one after the other (`D/nats/identities.lock`, and a lock on the `--out`
folder): none loses another's change to identities.json, and no kit write removes
another's stage folder. `aivos nats rotate-cert` of one node waits for another
(a lock on the certificate's folder), so the key and certificate stay one pair.

No timing: the test holds a lock itself (as a first command in progress would), reads
the second command's "waiting for ..." line as the sign that it is blocked, checks that
nothing moved, then releases the lock and checks the end state."""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from aivos.cloud.fleet.enroll import (
    enroll_site,
    load_identities,
    rotate_site,
    secure_hub_config,
)
from aivos.shared.natsconf.permissions import site_user
from aivos.shared.natsconf.render import render_hub
from tests.fixtures.locks import held, start_aivos
from tests.fixtures.wait import LogSaid

SITE = "branch-31"


@pytest.fixture
def cloud(tmp_path: Path) -> Path:
    secure_hub_config(tmp_path / "cloud")
    enroll_site(tmp_path / "cloud", SITE, tmp_path / "kit")
    return tmp_path / "cloud"


def start(cloud: Path, *args: str) -> subprocess.Popen[str]:
    return start_aivos("fleet", *args, "--data-dir", str(cloud))


def blocked_on(proc: subprocess.Popen[str], lock: Path) -> bool:
    """True once `proc` says it waits for `lock`; False if it ends without saying so."""
    assert proc.stderr is not None
    return any(f"waiting for {lock}" in line for line in proc.stderr)


def kit_generation(kit: Path) -> int:
    (crt,) = (kit / "credentials").glob(f"{site_user(SITE, 0)[:-1]}*.crt")
    return int(crt.stem.rsplit("-", 1)[1])


@pytest.mark.parametrize("command", ["rotate", "enroll", "revoke"])
def test_a_fleet_command_waits_while_another_holds_the_identities_lock(
    cloud: Path, tmp_path: Path, command: str
) -> None:
    lock = cloud / "nats" / "identities.lock"
    site = "branch-32" if command == "enroll" else SITE
    args = [command, site] + ([] if command == "revoke" else ["--out", str(tmp_path / "kit")])
    before = (cloud / "nats" / "identities.json").read_bytes()
    with held(lock):
        proc = start(cloud, *args)
        try:
            assert blocked_on(proc, lock), f"`fleet {command}` ran while the lock was held"
            # it is blocked: nothing of its change is written yet
            assert (cloud / "nats" / "identities.json").read_bytes() == before
            assert kit_generation(tmp_path / "kit") == 1
        except BaseException:
            proc.kill()
            raise
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    ident = load_identities(cloud).sites[site]
    assert (ident.generations, ident.revoked) == {
        "rotate": ([2], False),
        "enroll": ([1], False),
        "revoke": ([1], True),
    }[command]


def test_two_rotations_into_one_folder_run_one_after_the_other(cloud: Path, tmp_path: Path) -> None:
    """Rotation 1 (a thread here) is paused inside its kit write by the test's lock on the
    kit folder; rotation 2 (the CLI) then waits for rotation 1. Released, both finish: two
    new generations, the kit holds the newer, no stage folder is left, and the first
    generation retires with the second."""
    kit = tmp_path / "kit"
    progress = threading.Event()
    result: dict[str, object] = {}
    said = LogSaid(f"waiting for {kit}", progress)
    logging.getLogger("aivos.shared.filelock").addHandler(said)

    def first() -> None:
        try:
            result["kit"] = rotate_site(cloud, SITE, kit)
        except BaseException as exc:
            result["error"] = exc
        finally:
            result["done"] = True
            progress.set()  # before the fix nothing waits: this is the only signal

    with held(kit):
        thread = threading.Thread(target=first)
        thread.start()
        progress.wait()
        second = None
        try:
            assert "done" not in result, f"rotation 1 did not wait for the kit folder: {result}"
            second = start(cloud, "rotate", SITE, "--out", str(kit))
            assert blocked_on(second, cloud / "nats" / "identities.lock"), (
                "rotation 2 ran while rotation 1 was in progress"
            )
            ident = load_identities(cloud).sites[SITE]
            assert (ident.generations, ident.retiring) == ([1], [])
            assert kit_generation(kit) == 1
        except BaseException:
            if second is not None:
                second.kill()
            raise
    thread.join()
    logging.getLogger("aivos.shared.filelock").removeHandler(said)
    _, err = second.communicate()
    assert "error" not in result, result
    assert second.returncode == 0, err
    ident = load_identities(cloud).sites[SITE]
    assert (ident.generations, ident.retiring) == ([3], [1, 2])
    assert kit_generation(kit) == 3
    assert sorted(p.name for p in kit.iterdir()) == [
        "credentials",
        "edge.toml",
        "leaf.conf",
        "trusted_keys",
    ]
    users = (cloud / "nats" / "users.conf").read_text()
    assert all(site_user(SITE, g) in users for g in (1, 2, 3)), users


def test_a_second_cert_rotation_of_a_node_waits_for_the_first(tmp_path: Path) -> None:
    conf = tmp_path / "cloud" / "nats" / "hub.conf"
    conf.write_text(render_hub(secure_hub_config(tmp_path / "cloud")))
    cert, key = tmp_path / "cloud" / "pki" / "hub.crt", tmp_path / "cloud" / "pki" / "hub.key"
    before = cert.read_bytes(), key.read_bytes()
    with held(cert.parent):
        proc = start_aivos("nats", "rotate-cert", "--config", str(conf), "--no-reload")
        try:
            assert blocked_on(proc, cert.parent), "rotate-cert ran while the lock was held"
            assert (cert.read_bytes(), key.read_bytes()) == before
        except BaseException:
            proc.kill()
            raise
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    new = x509.load_pem_x509_certificate(cert.read_bytes())
    assert new.serial_number != x509.load_pem_x509_certificate(before[0]).serial_number
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    assert private.public_key().public_numbers() == new.public_key().public_numbers()  # type: ignore[union-attr]


def test_a_fleet_reload_waits_while_a_cert_rotation_holds_the_pki_folder(
    cloud: Path, tmp_path: Path
) -> None:
    """`rotate-cert` holds ``pki/`` from writing the hub's key to writing its certificate;
    an enrolment's hub reload sent in between would make nats-server read the new key
    beside the old certificate. The enrolment waits for the folder before it signals."""
    pki = cloud / "pki"
    with held(pki):
        proc = start(cloud, "enroll", "branch-32", "--out", str(tmp_path / "kit-32"))
        try:
            assert blocked_on(proc, pki), "the enrolment reloaded while the pki lock was held"
        except BaseException:
            proc.kill()
            raise
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert not load_identities(cloud).sites["branch-32"].revoked
