"""The execution provider in use is proven by a real query at load, never read from the
settings: a provider that is missing, fails to start or is handed no node is reported as
what actually ran (CPU), and `aivos doctor` says so in words. Runs in the main environment
(plain onnxruntime: CPU and Azure providers); the OpenVINO side is tests/integration/
test_openvino.py."""

from __future__ import annotations

import json
from pathlib import Path

from aivos.edge.doctor import Box
from aivos.edge.doctor.checks import check_provider
from aivos.edge.intent.runtime import IntentModel, provider_name
from aivos.edge.settings import EdgeSettings
from aivos.shared.config import load_config

_CPU = "CPUExecutionProvider"


def test_cpu_provider_is_proven_by_the_probe(small_bundle: Path) -> None:
    model = IntentModel.load(small_bundle, providers=["cpu"], intra_op_threads=1)
    assert model.provider == _CPU
    assert model.proof.as_asked and model.proof.reason == ""
    # the profiler timed the probe's kernels, all of them on CPU
    assert set(model.proof.kernel_us) == {_CPU} and model.proof.kernel_us[_CPU] > 0
    assert model.proof.describe() == "running on CPU"


def test_missing_provider_is_reported_as_cpu_with_the_reason(small_bundle: Path) -> None:
    model = IntentModel.load(small_bundle, providers=["openvino"], intra_op_threads=1)
    assert model.provider == _CPU
    assert model.proof.wanted == "OpenVINOExecutionProvider"
    assert model.proof.describe().startswith("asked for OpenVINO, running on CPU: ")
    assert "OpenVINO is not installed" in model.proof.reason
    assert model.classify("set an alarm for 7am").intent == "alarm"  # it still serves


def test_registered_provider_that_runs_nothing_is_reported_as_cpu(small_bundle: Path) -> None:
    # The Azure provider ships with plain onnxruntime and registers fine, but it takes no
    # node of an ordinary graph: the session lists it first while every kernel runs on CPU.
    model = IntentModel.load(small_bundle, providers=["AzureExecutionProvider"])
    assert model._session.get_providers()[0] == "AzureExecutionProvider"
    assert model.provider == _CPU
    assert model.proof.reason == "Azure started but took no node of this model"
    assert model.proof.describe() == (
        "asked for Azure, running on CPU: Azure started but took no node of this model"
    )


def test_provider_settings_from_toml_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(
        '[model]\nproviders = ["openvino"]\n'
        '[model.provider_options.openvino]\ndevice_type = "CPU"\ncache_dir = "/var/cache/ov"\n'
    )
    env = {"AIVOS_MODEL__PROVIDER_OPTIONS__OPENVINO__NUM_OF_THREADS": "2"}
    settings = load_config(EdgeSettings, config, environ=env)
    assert [provider_name(p) for p in settings.model.providers] == ["OpenVINOExecutionProvider"]
    assert settings.model.provider_options["openvino"] == {
        "device_type": "CPU",
        "cache_dir": "/var/cache/ov",
        "num_of_threads": 2,
    }


def test_doctor_says_asked_for_openvino_running_on_cpu(tmp_path: Path, small_bundle: Path) -> None:
    data = tmp_path / "edge"
    data.mkdir()
    (data / "config.toml").write_text(
        f'[model]\nbundle = {json.dumps(str(small_bundle))}\nproviders = ["openvino"]\n'
    )
    [finding] = check_provider(Box.load(data))
    assert finding.status == "warn"
    assert finding.message.startswith("asked for OpenVINO, running on CPU: OpenVINO is not")
    assert f"a real inference ran on {_CPU}" in finding.message
    assert finding.detail["provider"] == _CPU
    assert finding.detail["kernel_us"][_CPU] > 0
