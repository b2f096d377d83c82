"""`aivos residency mask [--policy FILE]`: show what would leave the site.

Reads JSON lines `{"text": ...}` on stdin, writes one JSON line per input:
`{"text": <masked>, "counts": {<entity>: n}}`. The policy file is a TOML file with a
`[residency]` table (custom rules, locales); without one the recommended policy is used.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import click
import msgspec

from aivos.shared.residency.gate import ExitGate
from aivos.shared.residency.policy import ResidencyPolicy, recommended_policy

__all__ = ["mask_cmd"]


class _Line(msgspec.Struct, frozen=True):
    text: str


class _Out(msgspec.Struct, frozen=True):
    text: str
    counts: dict[str, int]


@click.command("mask")
@click.option("--policy", "policy_file", type=click.Path(exists=True, path_type=Path))
def mask_cmd(policy_file: Path | None) -> None:
    """Mask JSON lines {"text": ...} from stdin; print {"text", "counts"} per line."""
    if policy_file is None:
        policy = recommended_policy()
    else:
        data = tomllib.loads(policy_file.read_text(encoding="utf-8"))
        policy = ResidencyPolicy.from_mapping(data.get("residency", data))
    masker = ExitGate(policy).masker
    decoder = msgspec.json.Decoder(_Line)
    encoder = msgspec.json.Encoder()
    for raw in sys.stdin.buffer:
        if not raw.strip():
            continue
        result = masker.mask(decoder.decode(raw).text)
        sys.stdout.buffer.write(encoder.encode(_Out(result.text, result.counts)) + b"\n")
    sys.stdout.flush()
