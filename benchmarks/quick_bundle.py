"""The first run's quick bundle, built three ways side by side in one run, on one dataset.

  - `torch`: the recipe as it was, `build_bundle(epochs=0, head_only_epochs=20,
    augment_ratio=0)` (transformers encoder, torch head, optimum export, int8)
  - `onnx-int8`: `frozen_build` (encoder graph from safetensors, no torch), training rows
    embedded by the int8 graph the bundle serves — what `aivos up` builds now
  - `onnx-fp32`: the same, training rows embedded by the fp32 graph

Each build runs in a fresh interpreter, so its wall time includes importing its stack (torch
for the first), as `aivos up` pays it. Each bundle is then scored on the data's test split at
its own calibrated threshold (in-scope accuracy, oos recall). Results:
benchmarks/results/quick_bundle.json.

    python benchmarks/quick_bundle.py [--data FILE] [--variants torch,onnx-int8,onnx-fp32]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from aivos.cloud.modelbuild.calibrate import predict_probs, scores_at
from aivos.shared.bundle import load_bundle_manifest
from aivos.shared.datasets import OOS_LABEL, load_examples
from aivos.shared.paths import clinc150_path

RESULTS = Path(__file__).resolve().parent / "results" / "quick_bundle.json"
VARIANTS = ("torch", "onnx-int8", "onnx-fp32")


def _build(variant: str, data: Path, out: Path) -> None:
    """Runs in the child interpreter: one build, nothing else imported first."""
    if variant == "torch":
        from aivos.cloud.modelbuild.build import build_bundle

        build_bundle(data, out, f"{data}#val", epochs=0, head_only_epochs=20, augment_ratio=0.0)
    else:
        from aivos.cloud.modelbuild.frozen_build import build_frozen_bundle

        precision = "int8" if variant == "onnx-int8" else "fp32"
        build_frozen_bundle(data, out, embed_precision=precision)


def _score(bundle: Path, data: Path) -> dict[str, float]:
    manifest = load_bundle_manifest(bundle)
    test = load_examples(f"{data}#test")
    texts, truth = [e.text for e in test], [e.label for e in test]
    probs, _ = predict_probs(bundle / "model.onnx", bundle / "tokenizer.json", texts)
    in_acc, oos_rec = scores_at(probs, truth, manifest.labels, manifest.threshold, OOS_LABEL)
    return {
        "test_in_scope_accuracy": round(in_acc, 4),
        "test_oos_recall": round(oos_rec, 4),
        "val_in_scope_accuracy": manifest.metrics["val_in_scope_accuracy"],
        "val_oos_recall": manifest.metrics["val_oos_recall"],
        "threshold": round(manifest.threshold, 4),
        "n_test": len(test),
    }


@click.command()
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CLINC150-layout data with train/val/test (default: the shipped CLINC150).",
)
@click.option("--variants", default=",".join(VARIANTS), show_default=True)
@click.option("--build-only", type=click.Choice(VARIANTS), hidden=True)
@click.option("--out", type=click.Path(path_type=Path), hidden=True)
def main(data: Path | None, variants: str, build_only: str | None, out: Path | None) -> None:
    data = (data or clinc150_path()).resolve()
    if build_only:
        assert out is not None
        _build(build_only, data, out)
        return
    results: dict[str, object] = {
        "what": "quick first-run bundle: torch recipe vs torch-free ONNX build",
        "data": str(data),
        "nproc": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="aivos-quick-bench-") as tmp:
        for variant in variants.split(","):
            bundle = Path(tmp) / variant
            # the script by its path, not `-m benchmarks.quick_bundle`: that needs the cwd to
            # be the repository root
            argv = [sys.executable, str(Path(__file__).resolve()), "--data", str(data)]
            started, cpu0 = time.monotonic(), os.times()
            run = subprocess.run(
                [*argv, "--build-only", variant, "--out", str(bundle)],
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
                capture_output=True,
                text=True,
            )
            wall, cpu1 = time.monotonic() - started, os.times()
            if run.returncode != 0:
                raise click.ClickException(f"{variant} build failed:\n{run.stderr[-3000:]}")
            row = {
                "build_wall_s": round(wall, 1),
                "build_cpu_s": round(
                    (cpu1.children_user + cpu1.children_system)
                    - (cpu0.children_user + cpu0.children_system),
                    1,
                ),
                **_score(bundle, data),
            }
            results[variant] = row
            print(f"{variant}: {json.dumps(row)}", flush=True)
    results["load_average_at_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
