"""`aivos nats config --secure D` takes the locks the other writers of ``D`` take: the
users file is created holding ``D/nats/identities.lock`` (the `aivos fleet
enroll/rotate/revoke` lock), the CA and the hub certificate are made holding a lock on
``D/pki`` and a node's key and certificate are (re)issued holding a lock on
``D/pki/nodes`` (the folders `aivos nats rotate-cert` locks). So it neither loses an
enrolment nor leaves a key beside another key's certificate, and two first runs at once
make one CA.

The first tests hold a lock themselves (as a writer in progress would), read the
command's "waiting for ..." line as the sign that it is blocked, check that nothing moved,
then release the lock and check the end state: no timing. The next ones start the real
commands together for several rounds and check the same invariants. The last ones run a
writer in this process while the test holds its lock and writes meanwhile: the CA copy of
`aivos install cloud --ca DIR` (under the ``D/pki`` lock), and `aivos up`'s choice between
enrolling and rotating its site, made holding ``D/nats/identities.lock`` so it acts on what
the holder saved."""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import click
import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from aivos.cloud.fleet.enroll import (
    Identities,
    SiteIdentity,
    enroll_site,
    load_identities,
    secure_hub_config,
)
from aivos.install.errors import InstallError
from aivos.install.hub import adopt_ca
from aivos.shared.natsconf.permissions import SYSTEM_USER, site_user
from aivos.shared.natsconf.pki import init_pki
from aivos.up import Appliance
from tests.fixtures.locks import held, start_aivos
from tests.fixtures.wait import LogSaid

ROUNDS = 5


def config(data_dir: Path, out: Path, nodes: int = 1) -> subprocess.Popen[str]:
    return start_aivos(
        "nats", "config", "--out", str(out), "--secure", str(data_dir), "--cluster", str(nodes)
    )


def enroll(data_dir: Path, site: str, kit: Path) -> subprocess.Popen[str]:
    return start_aivos("fleet", "enroll", site, "--data-dir", str(data_dir), "--out", str(kit))


def finished(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, err


def blocked_on(proc: subprocess.Popen[str], lock: Path) -> bool:
    """True once `proc` says it waits for `lock`; False if it ends without saying so."""
    assert proc.stderr is not None
    return any(f"waiting for {lock}" in line for line in proc.stderr)


def ca_of(data_dir: Path) -> x509.Certificate:
    """The CA of `data_dir`, checked: its key is the key of its certificate."""
    pki = data_dir / "pki"
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    assert_pair(pki / "ca.crt", pki / "ca.key")
    return ca


def assert_pair(cert_path: Path, key_path: Path) -> None:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers(), (  # type: ignore[union-attr]
        f"{key_path} is not the key of {cert_path}"
    )


def assert_sound_pki(data_dir: Path) -> None:
    """One CA; the hub's and every node's key matches its certificate, issued by that CA."""
    ca = ca_of(data_dir)
    pki = data_dir / "pki"
    certs = [pki / "hub.crt", *sorted((pki / "nodes").glob("*.crt"))]
    for cert_path in certs:
        assert_pair(cert_path, cert_path.with_suffix(".key"))
        x509.load_pem_x509_certificate(cert_path.read_bytes()).verify_directly_issued_by(ca)


def with_ca(tmp_path: Path) -> Path:
    """A cloud data dir with its CA (`aivos pki init`) and no users file yet."""
    data_dir = tmp_path / "cloud"
    init_pki(data_dir)
    return data_dir


# --- each lock, held by the test: the command waits, nothing moves, then it finishes ---


def test_config_creates_the_users_file_under_the_identities_lock(tmp_path: Path) -> None:
    """While an enrolment holds the lock, the config neither writes the users file nor
    clobbers it later: it waits, like a second enrolment does, and both land."""
    data_dir = with_ca(tmp_path)
    lock, users = data_dir / "nats" / "identities.lock", data_dir / "nats" / "users.conf"
    lock.parent.mkdir(parents=True)
    procs: list[subprocess.Popen[str]] = []
    with held(lock):
        try:
            procs.append(config(data_dir, tmp_path / "out"))
            assert blocked_on(procs[-1], lock), "`nats config` ran while the lock was held"
            assert not users.exists()
            procs.append(enroll(data_dir, "branch-7", tmp_path / "kit"))
            assert blocked_on(procs[-1], lock)
        except BaseException:
            for proc in procs:
                proc.kill()
            raise
    finished(*procs)
    assert site_user("branch-7", 1) in users.read_text()
    assert SYSTEM_USER in users.read_text()


def test_config_issues_the_hub_certificate_under_the_pki_lock(tmp_path: Path) -> None:
    """The single hub's key and certificate live in ``pki/``, the folder `rotate-cert`
    of the hub locks: the config waits for it before (re)issuing them."""
    data_dir = with_ca(tmp_path)
    pki = data_dir / "pki"
    before = (pki / "hub.crt").read_bytes(), (pki / "hub.key").read_bytes()
    with held(pki):
        proc = config(data_dir, tmp_path / "out")
        try:
            assert blocked_on(proc, pki), "`nats config` reissued hub.crt while pki/ was locked"
            assert ((pki / "hub.crt").read_bytes(), (pki / "hub.key").read_bytes()) == before
        except BaseException:
            proc.kill()
            raise
    finished(proc)
    assert (pki / "hub.crt").read_bytes() != before[0]  # reissued for the given hosts
    assert_sound_pki(data_dir)


def test_config_reissues_node_certificates_under_the_nodes_lock(tmp_path: Path) -> None:
    """A cluster's node certificates live in ``pki/nodes/`` (the folder `rotate-cert` of a
    node locks): the config's reissue waits for it."""
    data_dir = tmp_path / "cloud"
    finished(config(data_dir, tmp_path / "out", nodes=3))
    nodes = data_dir / "pki" / "nodes"
    before = {p.name: p.read_bytes() for p in nodes.iterdir()}
    with held(nodes):
        proc = config(data_dir, tmp_path / "out", nodes=3)
        try:
            assert blocked_on(proc, nodes), "`nats config` reissued nodes/ while it was locked"
            assert {p.name: p.read_bytes() for p in nodes.iterdir()} == before
        except BaseException:
            proc.kill()
            raise
    finished(proc)
    after = {p.name: p.read_bytes() for p in nodes.iterdir()}
    assert after.keys() == before.keys() and all(after[n] != before[n] for n in after)
    assert_sound_pki(data_dir)


def test_a_first_config_waits_for_the_ca_being_made(tmp_path: Path) -> None:
    """A first run that finds ``pki/`` locked (another first run making the CA) waits,
    then uses the CA it finds instead of making a second one."""
    data_dir = tmp_path / "cloud"
    pki = data_dir / "pki"
    pki.mkdir(parents=True)
    with held(pki):
        proc = config(data_dir, tmp_path / "out")
        try:
            assert blocked_on(proc, pki), "`nats config` made a CA while pki/ was locked"
            assert not (pki / "ca.key").exists()
            first = init_pki(tmp_path / "other")  # the CA the lock holder writes meanwhile
            for name in ("ca.crt", "ca.key"):
                (pki / name).write_bytes((first.directory / name).read_bytes())
        except BaseException:
            proc.kill()
            raise
    finished(proc)
    assert (pki / "ca.crt").read_bytes() == (first.directory / "ca.crt").read_bytes()
    assert_sound_pki(data_dir)


# --- the real commands started together, several rounds: the invariants hold ---


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_first_runs_at_once_make_one_ca(tmp_path: Path, round_: int) -> None:
    """Three first `nats config --secure` runs and an `aivos pki init` on one empty data
    dir: one CA, and every certificate issued by it and matching its key."""
    data_dir = tmp_path / "cloud"
    procs = [config(data_dir, tmp_path / f"out-{i}", nodes=2) for i in range(3)]
    procs.append(start_aivos("pki", "init", "--data-dir", str(data_dir)))
    finished(*procs)
    assert_sound_pki(data_dir)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_config_enroll_and_rotate_cert_at_once_keep_enrolments_and_pairs(
    tmp_path: Path, round_: int
) -> None:
    """On a data dir with its CA and no users file yet: a config of a 2-node cluster, an
    enrolment, a second config and a `rotate-cert` of both nodes, all at once. The users
    file holds the enrolled site, every key matches its certificate, one CA."""
    data_dir = with_ca(tmp_path)
    out = tmp_path / "out"
    finished(config(data_dir, out, nodes=2))
    (data_dir / "nats" / "users.conf").unlink()  # as after `aivos pki init` alone
    confs = [str(out / "hub-1.conf"), str(out / "hub-2.conf")]
    procs = [
        config(data_dir, out, nodes=2),
        enroll(data_dir, "branch-7", tmp_path / "kit"),
        start_aivos(
            "nats", "rotate-cert", "--config", confs[0], "--config", confs[1], "--no-reload"
        ),
        config(data_dir, out, nodes=2),
    ]
    finished(*procs)
    assert site_user("branch-7", 1) in (data_dir / "nats" / "users.conf").read_text()
    assert load_identities(data_dir).sites["branch-7"].generations == [1]
    assert_sound_pki(data_dir)


# --- a call in this process waits for a lock the test holds, and the holder writes ---


def call_while_held(
    lock: Path, call: Callable[[], object], meanwhile: Callable[[], None]
) -> dict[str, object]:
    """Run `call` in a thread while the test holds `lock` (as a command in progress
    would); once `call` says it waits for the lock, run `meanwhile` (what that command
    writes), then release. Returns {"returned": value} or {"error": exception}."""
    waiting, result = threading.Event(), dict[str, object]()
    said = LogSaid(f"waiting for {lock}", waiting)
    logging.getLogger("aivos.shared.filelock").addHandler(said)

    def run() -> None:
        try:
            result["returned"] = call()
        except BaseException as exc:
            result["error"] = exc
        finally:
            waiting.set()  # also when it never waited

    try:
        with held(lock):
            thread = threading.Thread(target=run)
            thread.start()
            waiting.wait()
            assert not result, f"the call did not wait for {lock}: {result}"
            meanwhile()
        thread.join()
    finally:
        logging.getLogger("aivos.shared.filelock").removeHandler(said)
    return result


def test_adopting_a_ca_waits_for_the_ca_being_made(tmp_path: Path) -> None:
    """`aivos install cloud --ca DIR` copies the first machine's CA into ``pki/`` holding
    its lock: when a first `nats config`/`pki init` (the holder) makes a CA meanwhile,
    the install finds it and refuses instead of mixing the two CAs' files."""
    data_dir, given = tmp_path / "cloud", init_pki(tmp_path / "first").directory
    pki = data_dir / "pki"
    pki.mkdir(parents=True)
    made = init_pki(tmp_path / "other").directory  # the CA the lock holder writes

    def make_ca() -> None:
        assert not list(pki.iterdir()), "the CA was copied while pki/ was locked"
        for name in ("ca.crt", "ca.key"):
            (pki / name).write_bytes((made / name).read_bytes())

    result = call_while_held(pki, lambda: adopt_ca(data_dir, given), make_ca)
    assert isinstance(result.get("error"), InstallError), result
    for name in ("ca.crt", "ca.key"):
        assert (pki / name).read_bytes() == (made / name).read_bytes()


# --- `aivos up`: enroll or rotate, decided holding the identities lock ---


def up_enroll_meanwhile(app: Appliance, site: str, meanwhile: SiteIdentity) -> dict[str, object]:
    """`up`'s enroll-or-rotate (`Appliance._enroll`) while the test holds the identities
    lock, as an `aivos fleet` command in progress would; the holder saves `meanwhile` as
    the site's identity."""
    nats = app.cloud_dir / "nats"

    def save() -> None:
        ids = Identities(sites={site: meanwhile})
        (nats / "identities.json").write_bytes(msgspec.json.encode(ids))

    return call_while_held(nats / "identities.lock", lambda: app._enroll(leaf_port=4223), save)


def test_up_rotates_a_site_enrolled_while_it_waited(tmp_path: Path) -> None:
    """`aivos up` on a site not enrolled yet waits for the identities lock, whose holder
    (the test, as an `aivos fleet enroll` would) enrolls the site. Released, `up` finds the
    enrolment and rotates: generation 2, no error."""
    cloud, site = tmp_path / "cloud", "branch-9"
    secure_hub_config(cloud)
    app = Appliance(tmp_path / "edge", site, 0, False, cloud)
    result = up_enroll_meanwhile(app, site, SiteIdentity(generations=[1]))
    assert "error" not in result, result
    assert result["returned"] == (tmp_path / "edge" / "site-kit", True)  # rotated
    assert load_identities(cloud).sites[site].generations == [2]
    assert site_user(site, 2) in (cloud / "nats" / "users.conf").read_text()


def test_up_refuses_a_site_revoked_while_it_waited(tmp_path: Path) -> None:
    """`aivos up` on an enrolled site waits for the identities lock, whose holder (as an
    `aivos fleet revoke` would) revokes the site. Released, `up` sees the revocation (it
    decides holding the lock, not from a look before it): it refuses with the revoked
    message, and the site gets no new generation."""
    cloud, site = tmp_path / "cloud", "branch-9"
    secure_hub_config(cloud)
    enroll_site(cloud, site, tmp_path / "kit")
    app = Appliance(tmp_path / "edge", site, 0, False, cloud)
    result = up_enroll_meanwhile(app, site, SiteIdentity(generations=[1], revoked=True))
    error = result.get("error")
    assert isinstance(error, click.ClickException), result
    assert error.message == (
        f"site {site} is revoked; enroll it again with "
        f"`aivos fleet enroll {site} --data-dir {cloud} --out DIR`"
    )
    ident = load_identities(cloud).sites[site]
    assert ident.revoked and ident.generations == [1]
    assert not (tmp_path / "edge" / "site-kit").exists()
    assert site_user(site, 2) not in (cloud / "nats" / "users.conf").read_text()
