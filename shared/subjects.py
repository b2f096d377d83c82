"""Every NATS subject, stream, KV bucket and object store name aivos uses, in one place.

Subjects are namespaced ``aivos.<kind>.<site>...`` so that per-site credentials can be
limited to ``aivos.*.<site>.>`` (a site can only publish its own subjects).

==========================  ====================================  ==========================
What                        Subject / name                        Who publishes / consumes
==========================  ====================================  ==========================
generation request          ``aivos.gen.<site>``                  edge requests; workers
                                                                  queue-subscribe
                                                                  ``aivos.gen.*`` in queue
                                                                  group ``aivos-gen``
generation replies          the request's reply inbox             worker -> edge (Accepted,
                                                                  Token..., Done / Error)
generation for a model      ``aivos.gen.<site>.<class>``          edge requests; the model
class                                                             router queue-subscribes
                                                                  ``aivos.gen.*.*`` in queue
                                                                  group ``aivos-route``
one catalogue model         ``aivos.model.<site>.<model>``        router -> workers of that
                                                                  model (queue group
                                                                  ``aivos-model-<model>``)
worker pool stats           ``aivos.poolstats``                   workers -> pool supervisor
heartbeat                   ``aivos.hb.<site>``                   edge -> fleet registry
outbox / audit sync         ``aivos.sync.<site>.<data_class>``    edge -> hub stream
                                                                  ``AIVOS_SYNC`` (JetStream,
                                                                  domain "hub")
events                      ``aivos.evt.<site>.<name>``           edge -> anyone
config KV bucket            ``aivos_config`` key ``<site>``       console -> edge (watch)
model object store          ``aivos_models``                      model build -> edge
==========================  ====================================  ==========================

Decision: generation requests are **per site** (``aivos.gen.<site>``), not a fleet-wide
subject with the site in a header. The site is then visible to NATS permissions and
to subject-based accounting, and a dedicated pool can serve one site by subscribing
to ``aivos.gen.<site>`` only. Workers serve all sites with the wildcard.

Model subjects keep the site as their third token (``aivos.model.<site>.<model>``), so a
site's own grant (``aivos.*.<site>.>``) reaches only its own requests, never another site's
prompts, whatever the models are named; pool stats carry no site and have two tokens, out
of every site's reach.
"""

from __future__ import annotations

import re

from aivos.shared.errors import ConfigError

__all__ = [
    "PREFIX",
    "GEN_QUEUE_GROUP",
    "GEN_ALL_SITES",
    "SYNC_STREAM",
    "SYNC_ALL",
    "CATALOGUE_BUCKET",
    "CONFIG_BUCKET",
    "MODELS_BUCKET",
    "HUB_DOMAIN",
    "GEN_ROUTE_QUEUE_GROUP",
    "GEN_ALL_CLASSES",
    "MODEL_ALL",
    "POOL_STATS",
    "gen_class_subject",
    "model_subject",
    "model_all_sites",
    "model_queue_group",
    "validate_site",
    "validate_token",
    "gen_subject",
    "heartbeat_subject",
    "heartbeat_all",
    "sync_subject",
    "sync_site_filter",
    "event_subject",
    "config_key",
]

PREFIX = "aivos"
GEN_QUEUE_GROUP = "aivos-gen"
GEN_ALL_SITES = f"{PREFIX}.gen.*"
GEN_ROUTE_QUEUE_GROUP = "aivos-route"
GEN_ALL_CLASSES = f"{PREFIX}.gen.*.*"
MODEL_ALL = f"{PREFIX}.model.*.*"
POOL_STATS = f"{PREFIX}.poolstats"
SYNC_STREAM = "AIVOS_SYNC"
SYNC_ALL = f"{PREFIX}.sync.>"
CATALOGUE_BUCKET = "aivos_catalogue"  # the pushed model catalogue (cloud.models)
CONFIG_BUCKET = "aivos_config"
MODELS_BUCKET = "aivos_models"
HUB_DOMAIN = "hub"

# A safe subject token: no dots, wildcards, whitespace; also valid as a KV key,
# a JetStream domain and a file name. Lowercase keeps site ids unambiguous.
_SITE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def validate_site(site: str) -> str:
    """Return `site` if it is a safe site id (``[a-z0-9][a-z0-9_-]{0,62}``), else raise ConfigError."""
    if not _SITE_RE.match(site):
        raise ConfigError(
            "site", f"invalid site id {site!r}: use lowercase letters, digits, '-' or '_'"
        )
    return site


def validate_token(value: str, what: str = "token") -> str:
    """Return `value` if usable as one subject token (``[A-Za-z0-9_-]{1,64}``)."""
    if not _TOKEN_RE.match(value):
        raise ConfigError(what, f"invalid subject token {value!r}")
    return value


def gen_subject(site: str) -> str:
    """Generation requests of one site: ``aivos.gen.<site>``."""
    return f"{PREFIX}.gen.{validate_site(site)}"


def gen_class_subject(site: str, model_class: str) -> str:
    """Generation requests of one site naming a model class: ``aivos.gen.<site>.<class>``."""
    return f"{PREFIX}.gen.{validate_site(site)}.{validate_token(model_class, 'model_class')}"


def model_subject(site: str, model: str) -> str:
    """Requests of one site for one catalogue model: ``aivos.model.<site>.<model>``."""
    return f"{PREFIX}.model.{validate_site(site)}.{validate_token(model, 'model')}"


def model_all_sites(model: str) -> str:
    """What the workers of one catalogue model subscribe: ``aivos.model.*.<model>``."""
    return f"{PREFIX}.model.*.{validate_token(model, 'model')}"


def model_queue_group(model: str) -> str:
    """The queue group of one catalogue model's workers: ``aivos-model-<model>``."""
    return f"aivos-model-{validate_token(model, 'model')}"


def heartbeat_subject(site: str) -> str:
    """Heartbeats of one site: ``aivos.hb.<site>``."""
    return f"{PREFIX}.hb.{validate_site(site)}"


def heartbeat_all() -> str:
    """Wildcard for every site's heartbeat: ``aivos.hb.*``."""
    return f"{PREFIX}.hb.*"


def sync_subject(site: str, data_class: str) -> str:
    """Outbox records of one data class leaving a site: ``aivos.sync.<site>.<data_class>``."""
    return f"{PREFIX}.sync.{validate_site(site)}.{validate_token(data_class, 'data_class')}"


def sync_site_filter(site: str) -> str:
    """All sync subjects of one site: ``aivos.sync.<site>.>``."""
    return f"{PREFIX}.sync.{validate_site(site)}.>"


def event_subject(site: str, name: str) -> str:
    """A named event of one site: ``aivos.evt.<site>.<name>``."""
    return f"{PREFIX}.evt.{validate_site(site)}.{validate_token(name, 'event')}"


def config_key(site: str) -> str:
    """Key of a site's desired config in the ``aivos_config`` KV bucket."""
    return validate_site(site)
