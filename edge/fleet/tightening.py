"""Is a remote residency policy as strict as the site's own, or stricter?

The site's local ``[residency]`` is its authority; remote config may only tighten it
unless the local ``[fleet] allow_remote_loosening = true``. "At least as strict" means:

* every data class: the remote rule ranks at least the local one, with
  ``local-only`` > ``mask`` > ``allow`` (a class without a rule is ``local-only``);
* regions: the remote destinations (``allowed_regions``, or ``region`` when that is empty)
  are a subset of the local ones, and the remote ``region`` is one of the local ones;
* masking: the remote policy keeps every local custom recognizer (same name, pattern and
  case rule), looks for at least the local locale pack, and exempts no key from masking
  that the local policy does not exempt.

Anything else is a loosening and the whole config is rejected (`ResidencyLoosened`).
"""

from __future__ import annotations

from aivos.shared.errors import ConfigError
from aivos.shared.residency import DataClass, ResidencyPolicy

__all__ = ["RANK", "ResidencyLoosened", "loosenings", "check_tighter"]

RANK = {"allow": 0, "mask": 1, "local-only": 2}


class ResidencyLoosened(ConfigError):
    """A remote residency policy that is looser than the site's local one."""

    code = "residency_loosened"


def _destinations(policy: ResidencyPolicy) -> set[str]:
    return set(policy.allowed_regions or (policy.region,))


def loosenings(remote: ResidencyPolicy, local: ResidencyPolicy) -> list[str]:
    """What `remote` allows that `local` does not (empty: `remote` is at least as strict)."""
    found: list[str] = []
    for dc in DataClass.ALL:
        r, lo = remote.rule(dc), local.rule(dc)
        if RANK[r] < RANK[lo]:
            found.append(f"classes.{dc}: {r} is looser than the local {lo}")
    extra = _destinations(remote) - _destinations(local)
    if extra:
        found.append(f"allowed_regions: {sorted(extra)} not allowed locally")
    if remote.region not in _destinations(local):
        found.append(f"region: {remote.region} not allowed locally")
    dropped = set(local.custom) - set(remote.custom)
    if dropped:
        found.append(f"custom: drops recognizers {sorted(c.name for c in dropped)}")
    fewer = set(local.locale_pack()) - set(remote.locale_pack())
    if fewer:
        found.append(f"locales: stops looking for {sorted(fewer)}")
    exempt = set(remote.exempt_keys) - set(local.exempt_keys)
    if exempt:
        found.append(f"exempt_keys: exempts {sorted(exempt)} from masking")
    return found


def check_tighter(remote: ResidencyPolicy, local: ResidencyPolicy) -> None:
    """Raise `ResidencyLoosened` naming every loosening of `remote` against `local`."""
    found = loosenings(remote, local)
    if found:
        raise ResidencyLoosened("residency", "remote config may only tighten: " + "; ".join(found))
