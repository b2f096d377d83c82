"""Rotate a running hub node's certificate: new key and certificate from the same CA, then
a reload (SIGHUP), no restart.

The node's config (`render_hub`) names one certificate and key on all its listeners
(client, leaf, routes) and its pid file; the rotation reads those from the config, so it
works the same for the single hub (``pki/hub.crt``) and a cluster node
(``pki/nodes/<name>.crt``). The new certificate keeps the old one's subject (the route
identity of a cluster node) and host names, so peers, services and sites trust it through
the CA they already hold. nats-server reloads TLS on SIGHUP: connections already
established (leaf links, clients, routes) stay up; new handshakes get the new certificate.
An operator's own certificate (`replacement`) is checked first: it must be issued by the
node's CA and match its key, else nothing is touched (a certificate of another CA would
lock out every peer and site). Two rotations of one node at once could leave one's key
next to the other's certificate (the node then fails its next reload or start): a rotation
holds a lock on the certificate's folder, so a second one waits for the first."""

from __future__ import annotations

import json
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from aivos.shared.atomicfile import write_atomic
from aivos.shared.errors import ConfigError
from aivos.shared.filelock import exclusive
from aivos.shared.natsconf.pki import CERT_WRITERS, load_pki

__all__ = ["NodeCert", "Rotated", "node_cert", "rotate_node_cert"]

# the quoted values of the rendered config (`render._q` writes JSON strings)
_VALUE = r'\s*:\s*("(?:[^"\\]|\\.)*")'


@dataclass(frozen=True)
class NodeCert:
    """What a node's config says about its certificate and process."""

    cert: Path
    key: Path
    ca: Path
    pid_file: Path | None


@dataclass(frozen=True)
class Rotated:
    old_serial: int
    new_serial: int
    reloaded_pid: int | None  # None: no running node found (the files are rotated)


def _values(text: str, name: str) -> set[str]:
    return {json.loads(m) for m in re.findall(rf"^\s*{name}{_VALUE}", text, re.MULTILINE)}


def node_cert(config: Path) -> NodeCert:
    """The certificate, key, CA and pid file a rendered hub config names (paths relative
    to the config's directory, as nats-server reads them)."""
    text = config.read_text()
    found = {name: _values(text, name) for name in ("cert_file", "key_file", "ca_file")}
    for name, values in found.items():
        if len(values) != 1:
            raise ConfigError(
                "nats.rotate", f"{config} names {len(values)} {name} values, not one (a hub?)"
            )
    pid = _values(text, "pid_file")
    base = config.parent

    def at(value: str) -> Path:
        return base / value  # an absolute value stays itself

    return NodeCert(
        cert=at(found["cert_file"].pop()),
        key=at(found["key_file"].pop()),
        ca=at(found["ca_file"].pop()),
        pid_file=at(pid.pop()) if pid else None,
    )


def _checked_replacement(ca: x509.Certificate, cert_pem: bytes, key_pem: bytes) -> None:
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ConfigError(
            "nats.rotate.cert", f"the new certificate is not issued by the node's CA: {exc}"
        ) from exc
    key = serialization.load_pem_private_key(key_pem, None)
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ConfigError("nats.rotate.key", "the new key does not match the new certificate")


def rotate_node_cert(
    config: Path,
    *,
    replacement: tuple[Path, Path] | None = None,
    reload: bool = True,
) -> Rotated:
    """Give the node of `config` a new certificate (issued here by its CA, same subject and
    hosts, or `replacement` = (cert, key) after checking it), then SIGHUP the node named by
    its pid file when `reload` and it runs."""
    files = node_cert(config)
    with exclusive(files.cert.parent, CERT_WRITERS):  # key and cert as one pair
        old = x509.load_pem_x509_certificate(files.cert.read_bytes())
        if replacement is not None:
            cert_pem, key_pem = replacement[0].read_bytes(), replacement[1].read_bytes()
            _checked_replacement(
                x509.load_pem_x509_certificate(files.ca.read_bytes()), cert_pem, key_pem
            )
        else:
            cert_pem, key_pem = _reissue(files.ca, old)
        write_atomic(files.key, key_pem, mode=0o600)
        write_atomic(files.cert, cert_pem, mode=files.cert.stat().st_mode & 0o7777)
        pid = _reload(files.pid_file) if reload else None
    new = x509.load_pem_x509_certificate(cert_pem)
    return Rotated(old.serial_number, new.serial_number, pid)


def _reissue(ca_path: Path, old: x509.Certificate) -> tuple[bytes, bytes]:
    """A new key and certificate from the CA whose certificate is `ca_path`, with the
    subject and host names of `old`."""
    pki = load_pki(ca_path.parent.parent)  # <data_dir>/pki/ca.crt
    if pki.cert.subject != old.issuer:
        raise ConfigError("nats.rotate", f"{ca_path} is not the CA of the node's certificate")
    cn = old.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    try:
        san = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    hosts = [str(v) for v in san.get_values_for_type(x509.DNSName)]
    hosts += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    return pki.issue_server_pem(str(cn), sorted(hosts))


def _reload(pid_file: Path | None) -> int | None:
    if pid_file is None:
        return None
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid
