"""Typed configuration: a TOML file plus `AIVOS_*` environment overrides, decoded into Structs.

Environment keys map onto nested tables with `__`: `AIVOS_SERVER__PORT=9000` sets
`server.port`. Values are parsed as TOML literals when they look like one (numbers,
booleans, arrays), otherwise taken as strings. Unknown or invalid keys fail with
the key's path.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from aivos.shared.errors import ConfigError

__all__ = ["load_config", "env_overrides", "decode_config"]

T = TypeVar("T")


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: Mapping[str, str], prefix: str = "AIVOS_") -> dict[str, Any]:
    """Nested dict built from `PREFIX_A__B=value` variables."""
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(prefix) or key == prefix:
            continue
        parts = [p.lower() for p in key[len(prefix) :].split("__") if p]
        if not parts:
            continue
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(key, "conflicts with a scalar override")
        node[parts[-1]] = _parse_env_value(raw)
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def decode_config(data: Mapping[str, Any], type_: type[T], source: str = "config") -> T:
    """Decode a mapping into `type_`; errors name the key path, e.g. `config: $.server.port`."""
    try:
        return msgspec.convert(data, type_, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(source, str(exc)) from exc


def load_config(
    type_: type[T],
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    env_prefix: str = "AIVOS_",
    extra: Mapping[str, Any] | None = None,
    ignore_env_keys: tuple[str, ...] = (),
) -> T:
    """Build settings once at start-up: file < environment < `extra` (CLI flags)."""
    data: dict[str, Any] = {}
    source = "environment"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(str(path), "file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    env = dict(os.environ if environ is None else environ)
    for key in ignore_env_keys:
        env.pop(key, None)
    data = _merge(data, env_overrides(env, env_prefix))
    if extra:
        data = _merge(data, extra)
    return decode_config(data, type_, source)
