"""Tunables of the edge fleet client; the fleet's remote config may override some of them."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["FleetOptions", "GuardOptions"]

_Pos = Annotated[float, Meta(gt=0)]
_Rate = Annotated[float, Meta(ge=0, le=1)]


class GuardOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Post-swap health guard: roll back when, within `window_s` after a swap and with at
    least `min_requests` seen, the error rate exceeds `max_error_rate` or the escalation
    rate exceeds ``max(baseline * max_escalation_ratio, baseline + min_escalation_delta)``,
    where the baseline is the previous bundle's rate over `baseline_window_s` before the swap."""

    enabled: bool = True
    window_s: _Pos = 120.0
    min_requests: Annotated[int, Meta(ge=1)] = 20
    max_error_rate: _Rate = 0.05
    max_escalation_rate: _Rate = 1.0  # absolute cap, with or without a baseline (1.0 = off)
    max_escalation_ratio: Annotated[float, Meta(ge=1)] = 2.0
    min_escalation_delta: _Rate = 0.1
    baseline_window_s: _Pos = 300.0
    check_interval_s: _Pos = 1.0


class FleetOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[fleet]` settings. Paths default under the agent's data dir (``fleet/...``)."""

    heartbeat_interval_s: Annotated[float, Meta(ge=0.05, le=3600)] = 10.0
    trusted_keys_dir: str | None = None  # default: DATA_DIR/fleet/trusted_keys
    guard: GuardOptions = GuardOptions()
    retry_s: Annotated[float, Meta(gt=0, le=300)] = 2.0  # KV bucket missing, watch lost
    download_timeout_s: Annotated[float, Meta(gt=0)] = 600.0
    stats_window_s: _Pos = 60.0  # request rate / decision mix / latency in heartbeats
    # Remote config must carry a valid operator signature. None: required as soon as the
    # site trusts a config key (``config_signing*.pub`` in the trusted keys dir).
    require_signed_config: bool | None = None
    # Remote residency may only be as strict as the site's own or stricter, unless this is
    # set here, in the site's local config (see `edge.fleet.tightening`).
    allow_remote_loosening: bool = False
