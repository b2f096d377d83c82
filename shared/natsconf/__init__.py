"""NATS topology helpers: render hub/leaf configs and run nats-server processes."""

from aivos.shared.natsconf.render import HubConfig, LeafConfig, render_hub, render_leaf
from aivos.shared.natsconf.server import NatsServer, free_port, nats_server_binary, start_local_hub

__all__ = [
    "HubConfig",
    "LeafConfig",
    "render_hub",
    "render_leaf",
    "NatsServer",
    "free_port",
    "nats_server_binary",
    "start_local_hub",
]
