"""Policy decoding (deny by default, key paths) and the exit gate's decisions and counters."""

from __future__ import annotations

import tomllib

import pytest

from aivos.shared.config import decode_config
from aivos.shared.errors import ConfigError, PolicyDenied, ResidencyDenied
from aivos.shared.metrics import Registry
from aivos.shared.residency import DataClass, ExitGate, MaskMapping, ResidencyPolicy

_TOML = """
[residency]
region = "eu-west"
allowed_regions = ["eu-west", "eu-central"]

[residency.classes]
escalation_prompt = "mask"
audit = "mask"
memory = "local-only"
telemetry = "allow"

[[residency.custom]]
name = "EMPLOYEE_ID"
pattern = "EMP-[0-9]{6}"
"""


def _policy(text: str = _TOML) -> ResidencyPolicy:
    return ResidencyPolicy.from_mapping(tomllib.loads(text)["residency"])


def test_decodes_toml_and_denies_by_default() -> None:
    policy = _policy()
    assert policy.rule(DataClass.ESCALATION_PROMPT) == "mask"
    assert policy.rule(DataClass.WORKFLOW_EVENT) == "local-only"  # no rule -> stays on site
    assert ResidencyPolicy().rule(DataClass.TELEMETRY) == "local-only"


@pytest.mark.parametrize(
    ("toml", "path"),
    [
        ('[residency.classes]\naudit = "maks"', "residency.classes.audit"),
        ('[residency.classes]\naudits = "mask"', "residency.classes.audits"),
        ('[residency]\nregoin = "eu"', "residency.regoin"),
        ('[[residency.custom]]\nname = "X"\npattern = "("', "residency.custom[0].pattern"),
        ('[[residency.custom]]\nname = "bad name"\npattern = "x"', "residency.custom[0].name"),
    ],
)
def test_invalid_config_names_the_key(toml: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        _policy(toml)
    assert info.value.path == path


def test_embeds_in_settings_via_decode_config() -> None:
    import msgspec

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        residency: ResidencyPolicy = ResidencyPolicy()

    s = decode_config(tomllib.loads(_TOML), Settings)
    assert s.residency.allowed_regions == ("eu-west", "eu-central")
    with pytest.raises(ConfigError, match="residency.classes.audit"):
        decode_config({"residency": {"classes": {"audit": "nope"}}}, Settings)


def test_local_only_and_unlisted_classes_are_denied_and_counted() -> None:
    gate = ExitGate(_policy())
    with pytest.raises(ResidencyDenied) as info:
        gate.apply(DataClass.MEMORY, "I live at 1 Main St", region="eu-west")
    assert isinstance(info.value, PolicyDenied) and info.value.reason == "class is local-only"
    with pytest.raises(ResidencyDenied):
        gate.apply(DataClass.WORKFLOW_EVENT, {"x": "y"})
    assert not gate.allows(DataClass.MEMORY)
    assert gate.counts()[DataClass.MEMORY].denied == 1


def test_region_not_allowed_is_denied() -> None:
    gate = ExitGate(_policy())
    assert gate.check(DataClass.AUDIT, "eu-central") == "mask"
    with pytest.raises(ResidencyDenied, match="region not allowed"):
        gate.apply(DataClass.TELEMETRY, "cpu=3", region="us-east")
    # no allowed_regions: only the policy's own region
    own = ExitGate(ResidencyPolicy(region="ap-south", classes={"telemetry": "allow"}))
    assert own.allows("telemetry") and not own.allows("telemetry", "eu-west")


def test_dict_payload_masked_recursively_with_exempt_keys() -> None:
    registry = Registry()
    gate = ExitGate(_policy(), registry=registry)
    mapping = MaskMapping()
    payload = {
        "id": "a@x.com",
        "prompt": "I am a@x.com, employee EMP-123456",
        "passages": ["call +1 555 123 4567", {"text": "a@x.com", "trace_id": "10.0.0.1"}],
        "n": 3,
    }
    d = gate.apply(DataClass.ESCALATION_PROMPT, payload, region="eu-west", mapping=mapping)
    assert d.payload == {
        "id": "a@x.com",
        "prompt": "I am <EMAIL_1>, employee <EMPLOYEE_ID_1>",
        "passages": ["call <PHONE_1>", {"text": "<EMAIL_1>", "trace_id": "10.0.0.1"}],
        "n": 3,
    }
    assert payload["prompt"] == "I am a@x.com, employee EMP-123456"  # input untouched
    assert d.counts == {"EMAIL": 2, "EMPLOYEE_ID": 1, "PHONE": 1}
    assert gate.restore("Hello <EMAIL_1>", mapping) == "Hello a@x.com"
    counts = gate.counts()[DataClass.ESCALATION_PROMPT]
    assert (counts.passed, counts.denied, counts.masked["EMAIL"]) == (1, 0, 2)
    assert "aivos_residency_masked_total" in registry.render()


def test_allow_passes_payload_unchanged() -> None:
    d = ExitGate(_policy()).apply(DataClass.TELEMETRY, {"host": "10.0.0.1"})
    assert d.payload == {"host": "10.0.0.1"} and d.counts == {} and d.rule == "allow"
