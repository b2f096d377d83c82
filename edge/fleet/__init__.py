"""The edge side of fleet management: heartbeats, remote config, bundle rollouts.

    client = EdgeFleetClient(agent)          # after `await agent.start()`
    await client.start()
    ...
    await client.stop()                       # before `await agent.stop()`

The client needs a `FleetHost` (the agent satisfies it); `active_bundle_dir(data_path)`
tells the agent at start which bundle the fleet made active.
"""

from aivos.edge.fleet.bundles import BundleManager, InstallTimings
from aivos.edge.fleet.canary import CanaryResult, run_canary
from aivos.edge.fleet.client import EdgeFleetClient
from aivos.edge.fleet.guard import GuardVerdict, HealthGuard, judge
from aivos.edge.fleet.host import Backlog, FleetHost
from aivos.edge.fleet.installed import load_trusted_keys
from aivos.edge.fleet.layout import ActivePointer, FleetPaths, active_bundle_dir
from aivos.edge.fleet.options import FleetOptions, GuardOptions
from aivos.edge.fleet.status import FleetStatus

__all__ = [
    "EdgeFleetClient",
    "FleetHost",
    "Backlog",
    "FleetOptions",
    "GuardOptions",
    "FleetStatus",
    "FleetPaths",
    "ActivePointer",
    "active_bundle_dir",
    "BundleManager",
    "InstallTimings",
    "load_trusted_keys",
    "CanaryResult",
    "run_canary",
    "GuardVerdict",
    "HealthGuard",
    "judge",
]
