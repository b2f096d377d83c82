"""A secured hub cluster: every node with its own certificate of the aivos CA (client and
leaf listeners with TLS and certificate-mapped users, routes with mutual TLS and the route
identity, see `render`), all nodes sharing one users file, so an identity (site or
service) has the same permissions on whichever node it reaches."""

from __future__ import annotations

from pathlib import Path

import msgspec

from aivos.shared.atomicfile import write_atomic
from aivos.shared.filelock import exclusive
from aivos.shared.natsconf.permissions import ROLES, service_permissions, service_user
from aivos.shared.natsconf.pki import Pki
from aivos.shared.natsconf.render import WILDCARD_HOSTS, HubConfig, HubUser, render_users

__all__ = [
    "USERS_LOCK",
    "USERS_WRITERS",
    "node_hosts",
    "secure_nodes",
    "service_users",
    "write_users_if_missing",
]

# the lock file beside the users file, and who takes it (named in its "waiting for" line):
# `cloud.fleet.enroll` uses both, so every writer of the users file takes the same lock
USERS_LOCK = "identities.lock"
USERS_WRITERS = "users file writer (aivos fleet enroll/rotate/revoke, aivos nats config)"


def node_hosts(node: HubConfig, extra: tuple[str, ...] = ()) -> list[str]:
    """The names and IPs a node's certificate covers: its listen host, loopback, `extra`
    (public names a load balancer or the sites use). A wildcard listen address
    (``0.0.0.0``) is no name anybody dials, so it is left out."""
    hosts = {node.host, "127.0.0.1", "localhost", *extra} - WILDCARD_HOSTS
    return sorted(hosts)


def secure_nodes(
    pki: Pki,
    nodes: list[HubConfig],
    *,
    users_file: str,
    extra_hosts: tuple[str, ...] = (),
    reissue: bool = False,
) -> list[HubConfig]:
    """`nodes` (from `hub_cluster`) with TLS: each node's certificate (`Pki.issue_node`,
    issued when missing or when `reissue`) on its client, leaf and route listeners, and
    the ``authorization`` block included from `users_file` (relative to the directory
    the node's config is written to)."""
    secured = []
    for node in nodes:
        files = pki.node_files(node.server_name)
        if reissue or not Path(files.cert).exists():
            files = pki.issue_node(node.server_name, node_hosts(node, extra_hosts))
        secured.append(msgspec.structs.replace(node, tls=files, users=(), users_file=users_file))
    return secured


def service_users() -> list[HubUser]:
    """One hub user per cloud service role, with its permissions (`permissions`)."""
    users = []
    for role in ROLES:
        perms = service_permissions(role)
        users.append(HubUser(service_user(role), perms.publish, perms.subscribe))
    return users


def write_users_if_missing(path: Path, system_user: str) -> bool:
    """Write a users file with the service roles only (no site yet: `aivos fleet enroll`
    rewrites it) when `path` does not exist; True when written.

    Looked for and written holding ``identities.lock`` beside it, the lock `aivos fleet
    enroll/rotate/revoke` hold while they rewrite the file (`cloud.fleet.enroll`): else
    an enrolment landing between the look and the write would be overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path.parent / USERS_LOCK, USERS_WRITERS):
        if path.exists():
            return False
        users = render_users(service_users(), system_user).encode()
        write_atomic(path, users, mode=0o644, sync_dir=True)  # as `aivos fleet enroll` does
    return True
