"""`aivos install edge`: a branch box from a site kit.

What goes where (under the prefix), and who may read it:

=====================================  ======  ===============  ==========================
path                                   mode    owner            what
=====================================  ======  ===============  ==========================
/etc/aivos/                            0750    root:aivos       config (read-only to aivos)
/etc/aivos/edge.toml, leaf.conf        0640    root:aivos       the kit's, re-homed
/etc/aivos/credentials/*.crt           0640    root:aivos       site certificate, CA
/etc/aivos/credentials/*.key           0600    aivos:aivos      the site's private key
/etc/aivos/trusted_keys/*.pub          0640    root:aivos       bundle/config signing keys
/var/lib/aivos/{,edge,bundles}         0750    aivos:aivos      agent state
/etc/systemd/system/aivos-*.service    0644    root             leaf and agent units
/etc/systemd/journald@aivos.conf       0644    root             log sizes (namespace aivos)
/etc/sysusers.d/aivos.conf             0644    root             declares the account
=====================================  ======  ===============  ==========================

``credentials/`` and ``trusted_keys/`` hold exactly the kit's files: after a rotation the
retired generation's key and certificate, and a signing key the fleet no longer ships, are
removed (the agent trusts every ``.pub`` there). They are removed last, once everything
else is written, so an install that stops midway leaves config naming files that exist.
Only the kinds of file a kit has (``.crt``/``.key``, ``.pub``) directly in those two
folders are ever removed.
"""

from __future__ import annotations

from pathlib import Path

from aivos.install.account import Account, sysusers_conf
from aivos.install.kit import CREDENTIAL_SUFFIXES, TRUSTED_KEY_SUFFIXES, SiteKit, load_kit
from aivos.install.layout import (
    CONFIG_DIR,
    JOURNALD_CONF,
    STATE_DIR,
    SYSUSERS_CONF,
    UNIT_DIR,
    Runtime,
)
from aivos.install.tree import Owner, Tree
from aivos.install.units import EDGE_UNITS, render

__all__ = ["install_edge", "install_common"]


def install_common(tree: Tree, account: Account, journal_max_use: str) -> None:
    """What both node kinds share: the account declaration, the config and state roots,
    and the journal namespace."""
    root = Owner(0, 0) if account.config.uid is not None else Owner()
    tree.file(SYSUSERS_CONF, sysusers_conf(account.name, STATE_DIR).encode(), 0o644, root)
    tree.directory(CONFIG_DIR, 0o750, account.config)
    tree.directory(STATE_DIR, 0o750, account.service)
    # a month of logs at most, and never more than `journal_max_use` of disk
    journald = render(
        "journald@aivos.conf", journal_max_use=journal_max_use, journal_retention="1month"
    )
    tree.file(JOURNALD_CONF, journald.encode(), 0o644, root)


def install_edge(
    tree: Tree,
    account: Account,
    kit_dir: Path,
    runtime: Runtime,
    *,
    bundle: Path | None = None,
    journal_max_use: str = "512M",
) -> str:
    """Install the box; returns the site id. Nothing is written when the kit is invalid."""
    kit = load_kit(kit_dir)  # raises before anything is written
    install_common(tree, account, journal_max_use)
    cfg, svc = account.config, account.service
    tree.directory(f"{CONFIG_DIR}/credentials", 0o750, cfg)
    for name, data in sorted(kit.credentials.items()):
        if name.endswith(".key"):  # nats-server, running as the account, reads it
            tree.file(f"{CONFIG_DIR}/credentials/{name}", data, 0o600, svc)
        else:
            tree.file(f"{CONFIG_DIR}/credentials/{name}", data, 0o640, cfg)
    tree.directory(f"{CONFIG_DIR}/trusted_keys", 0o750, cfg)
    for name, data in sorted(kit.trusted_keys.items()):
        tree.file(f"{CONFIG_DIR}/trusted_keys/{name}", data, 0o640, cfg)
    edge_toml = kit.edge_toml_for(CONFIG_DIR, f"{STATE_DIR}/edge")
    tree.file(f"{CONFIG_DIR}/edge.toml", edge_toml.encode(), 0o640, cfg)
    tree.file(f"{CONFIG_DIR}/leaf.conf", kit.leaf_conf_for(CONFIG_DIR).encode(), 0o640, cfg)
    tree.directory(f"{STATE_DIR}/edge", 0o750, svc)
    tree.directory(f"{STATE_DIR}/bundles", 0o750, svc)
    if bundle is not None:
        # the agent's default bundle is $AIVOS_HOME/bundles/default (AIVOS_HOME=STATE_DIR)
        tree.directory(f"{STATE_DIR}/bundles/default", 0o750, svc)
        for path in sorted(Path(bundle).iterdir()):
            if path.is_file():
                target = f"{STATE_DIR}/bundles/default/{path.name}"
                tree.file(target, path.read_bytes(), 0o640, svc)
    root = Owner(0, 0) if cfg.uid is not None else Owner()
    values = {
        "site": kit.site,
        "user": account.name,
        "group": account.group,
        "bin_dir": runtime.bin_dir,
        "nats_server": runtime.nats_server,
        "config_dir": CONFIG_DIR,
        "state_dir": STATE_DIR,
    }
    for unit in EDGE_UNITS:
        tree.file(f"{UNIT_DIR}/{unit}", render(unit, **values).encode(), 0o644, root)
    _remove_retired(tree, kit)
    return kit.site


def _remove_retired(tree: Tree, kit: SiteKit) -> None:
    """Remove what an earlier kit installed and this one lacks: the retired generation's key
    and certificate, signing keys the fleet dropped. Last, after leaf.conf and edge.toml
    name the new files, so a stop midway leaves a box that works. A running leaf keeps the
    key it read at start until `systemctl restart aivos-leaf`."""
    tree.prune(
        f"{CONFIG_DIR}/credentials",
        kit.credentials,
        lambda name: name.endswith(CREDENTIAL_SUFFIXES),
    )
    tree.prune(
        f"{CONFIG_DIR}/trusted_keys",
        kit.trusted_keys,
        lambda name: name.endswith(TRUSTED_KEY_SUFFIXES),
    )
