"""The private certificate authority aivos creates for NATS links that cross the WAN.

Layout under ``<data_dir>/pki/``: ``ca.crt`` + ``ca.key`` (the CA, EC P-256),
``hub.crt`` + ``hub.key`` (the hub's server certificate), and for a hub cluster
``nodes/<server name>.crt`` + ``.key`` (one per node, `issue_node`: its listeners and its
routes, subject ``CN=aivos-hub-route``). Client certificates (one per
site credential and per cloud service) are issued by `issue_client` and written into
the kit or service directory that uses them; the CA key never leaves ``pki/``.

Writers lock the folder they write a key and certificate into, so a pair is never half of
one writer's and half of another's: the CA and the hub certificate are made holding a lock
on ``pki/`` and a node's pair (re)issued holding one on ``pki/nodes/``, the folders
`rotate` locks (`aivos nats rotate-cert`). Two first runs at once thus make one CA: the
second waits, then finds the first's. Every file is replaced whole (`write_atomic`), the
CA key last, so a CA whose ``ca.key`` exists is complete.

Identity is the certificate: the hub maps a verified client certificate's subject
(``CN=<user>``) to a NATS user with its permissions (``verify_and_map``). Lifetimes are
long on purpose (no offline cliff, see docs/security.md): revocation is by removing
the user from the hub config and reloading, not by waiting for expiry.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aivos.shared.atomicfile import write_atomic
from aivos.shared.errors import ConfigError
from aivos.shared.filelock import exclusive
from aivos.shared.natsconf.render import ROUTE_USER, CertFiles

__all__ = [
    "CA_DAYS",
    "CERT_DAYS",
    "CERT_MODE",
    "CERT_WRITERS",
    "CertFiles",
    "Pki",
    "init_pki",
    "load_pki",
    "locked_folder",
    "write_private",
]

CA_DAYS = 20 * 365
CERT_DAYS = 10 * 365
CERT_MODE = 0o644  # a certificate holds no secret
CERT_WRITERS = "certificate writer (aivos nats config/rotate-cert, aivos pki init)"


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by the owner only (keys, secrets), replacing it
    whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode=0o600)


def locked_folder(folder: Path) -> contextlib.AbstractContextManager[None]:
    """The lock on a folder of key and certificate pairs (``pki/``, ``pki/nodes/``), made
    if missing: `exclusive` on a missing path would make a lock file in its place."""
    folder.mkdir(parents=True, exist_ok=True)
    return exclusive(folder, CERT_WRITERS)


def _write_pair(files: CertFiles, cert: bytes, key: bytes) -> None:
    """Replace a key and its certificate; the caller holds their folder's lock."""
    write_private(Path(files.key), key)
    write_atomic(Path(files.cert), cert, mode=CERT_MODE)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate small clock skew


class Pki:
    """A loaded CA that can issue server and client certificates."""

    def __init__(self, directory: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.directory = directory
        self._key = key
        self.cert = cert

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def hub_files(self) -> CertFiles:
        d = self.directory
        return CertFiles(cert=str(d / "hub.crt"), key=str(d / "hub.key"), ca=str(self.ca_path))

    def node_files(self, name: str) -> CertFiles:
        """Where hub node `name`'s certificate and key live (``pki/nodes/<name>.*``)."""
        d = self.directory / "nodes"
        return CertFiles(
            cert=str(d / f"{name}.crt"), key=str(d / f"{name}.key"), ca=str(self.ca_path)
        )

    def _issue(self, cn: str, *, server: bool, hosts: list[str], days: int) -> tuple[bytes, bytes]:
        key = _new_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now())
            .not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                    if server
                    else [ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            sans: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    sans.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return _cert_pem(cert), _key_pem(key)

    def issue_server(self, hosts: list[str], days: int = CERT_DAYS) -> CertFiles:
        """(Re)issue the hub certificate for `hosts` (names or IPs) into ``pki/``."""
        cert, key = self._issue("aivos-hub", server=True, hosts=hosts, days=days)
        with locked_folder(self.directory):
            _write_pair(self.hub_files, cert, key)
        return self.hub_files

    def issue_node(self, name: str, hosts: list[str], days: int = CERT_DAYS) -> CertFiles:
        """(Re)issue hub node `name`'s certificate for `hosts` (names or IPs clients, leaves
        and peer nodes reach it at) into ``pki/nodes/``: server and client use (the node
        accepts and dials routes), subject ``CN=aivos-hub-route`` (the route identity every
        node's cluster authorization expects). Reissuing is a node's certificate rotation:
        then reload that node (SIGHUP)."""
        cert, key = self._issue(ROUTE_USER, server=True, hosts=hosts, days=days)
        files = self.node_files(name)
        with locked_folder(Path(files.cert).parent):
            _write_pair(files, cert, key)
        return files

    def issue_server_pem(
        self, cn: str, hosts: list[str], days: int = CERT_DAYS
    ) -> tuple[bytes, bytes]:
        """A server (and client) certificate with subject ``CN=<cn>`` for `hosts` and its
        key, as PEM, written nowhere (`rotate` replaces a running node's files with them)."""
        return self._issue(cn, server=True, hosts=hosts, days=days)

    def issue_client(self, user: str, directory: Path, days: int = CERT_DAYS) -> CertFiles:
        """A client certificate with subject ``CN=<user>`` plus a copy of the CA, written
        as ``<user>.crt``/``<user>.key``/``ca.crt`` into `directory`."""
        cert, key = self._issue(user, server=False, hosts=[], days=days)
        directory.mkdir(parents=True, exist_ok=True)
        key_path, cert_path, ca_path = (
            directory / f"{user}.key",
            directory / f"{user}.crt",
            directory / "ca.crt",
        )
        files = CertFiles(cert=str(cert_path), key=str(key_path), ca=str(ca_path))
        _write_pair(files, cert, key)  # each file replaced whole, never half written
        write_atomic(ca_path, self.ca_path.read_bytes(), mode=CERT_MODE)
        return files


def _pki_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "pki"


def init_pki(
    data_dir: Path, *, hosts: list[str] | None = None, name: str = "aivos private CA"
) -> Pki:
    """Create the CA and the hub certificate under ``<data_dir>/pki`` (idempotent: an
    existing CA is kept, so certificates already issued stay valid)."""
    directory = _pki_dir(data_dir)
    with locked_folder(directory):  # a second first run waits, then loads this CA
        have_ca = (directory / "ca.key").exists()
        pki = load_pki(data_dir) if have_ca else _new_ca(directory, name)
    if hosts is not None or not Path(pki.hub_files.cert).exists():
        pki.issue_server(sorted(set(hosts or []) | {"localhost", "127.0.0.1"}))
    return pki


def _new_ca(directory: Path, name: str) -> Pki:
    """A new CA written into `directory`; the caller holds its lock."""
    key = _new_key()
    subject = _name(name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    # the key last: `init_pki` takes an existing ca.key for a complete CA
    write_atomic(directory / "ca.crt", _cert_pem(cert), mode=CERT_MODE)
    write_private(directory / "ca.key", _key_pem(key))
    return Pki(directory, key, cert)


def load_pki(data_dir: Path) -> Pki:
    """Load the CA created by `init_pki` (ConfigError if there is none)."""
    directory = _pki_dir(data_dir)
    try:
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
        cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    except FileNotFoundError as exc:
        raise ConfigError("pki", f"no CA in {directory}; run: aivos pki init") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("pki.ca_key", "the CA key is not an EC key")
    return Pki(directory, key, cert)
