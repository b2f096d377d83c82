"""The service account the units run as.

On the real root (prefix ``/``) the installer creates it with ``useradd --system`` when it
is missing. Under any other prefix it never touches the host's user database (that is the
point of a prefix: packagers and tests); the ``sysusers.d`` file the installer writes
declares the account for the target system instead, and files get the account's owner
only if an account of that name already exists here."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from aivos.install.errors import InstallError
from aivos.install.tree import Owner

__all__ = ["Account", "ensure_account", "sysusers_conf"]


@dataclass(frozen=True)
class Account:
    name: str
    group: str  # the account's primary group (Group= in the units)
    service: Owner  # the account itself (data, secrets)
    config: Owner  # root with the account's group (config readable, not writable)
    message: str  # what was done, for the operator


def sysusers_conf(name: str, home: str) -> str:
    return (
        "# The aivos service account (systemd-sysusers; written by `aivos install`).\n"
        f'u {name} - "aivos appliance" {home} /usr/sbin/nologin\n'
    )


def ensure_account(name: str, home: str, prefix: Path) -> Account:
    if Path(prefix).resolve() == Path("/"):
        message = _create(name, home)
    else:
        message = (
            f"system user {name}: not created (installing under {prefix}, not /; "
            "etc/sysusers.d/aivos.conf declares it for the target system)"
        )
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return Account(name, name, Owner(), Owner(), message + "; files keep the installing user")
    group = grp.getgrgid(entry.pw_gid).gr_name
    if os.geteuid() != 0:
        message += "; not root, so files keep the installing user"
        return Account(name, group, Owner(), Owner(), message)
    owners = Owner(entry.pw_uid, entry.pw_gid), Owner(0, entry.pw_gid)
    return Account(name, group, *owners, message)


def _create(name: str, home: str) -> str:
    try:
        pwd.getpwnam(name)
        return f"system user {name}: exists"
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise InstallError(f"cannot create system user {name}: useradd is not installed")
    argv = [useradd, "--system", "--home-dir", home, "--no-create-home"]
    argv += ["--shell", "/usr/sbin/nologin", "--user-group", name]
    try:
        grp.getgrnam(name)  # a group of that name already exists: join it
        argv = [a for a in argv if a != "--user-group"][:-1] + ["--gid", name, name]
    except KeyError:
        pass
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise InstallError(f"useradd {name} failed: {done.stderr.strip()}")
    return f"system user {name}: created"
