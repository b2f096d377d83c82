"""10-shot CLINC150 val experiment with the training of a real few-shot build: the harness of
the few-shot rounds 2-5 in docs/models.md (decide on val, paired per-row predictions).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/fewshot_val.py NAME SEED [steps=N] \
        [out=DIR] [cs_FIELD=V ...]

Rows: benchmarks/fewshot.sample_k_shot(10, SEED) written to a CSV and assembled by
source.training_data exactly as build_bundle does (generic negatives, noisy copies, the
build's seed); TrainConfig as build_bundle builds it for `aivos intents train --few-shot on`
(epochs 2, 6 layers, 2 frozen, seed SEED) with few_shot_config applied, then
contrastive_steps overridden. The head blend is applied post hoc (centroid_mix 0 during
training: _mix_centroids runs after training and draws no randomness, so blend 1 here is
the shipped head). Scored on CLINC150 val in-scope rows (3,000), torch fp32, top-1 over
all labels (oos included), threshold-free. Writes DIR/NAME-SEED.json (default DIR:
/tmp/fewshot_val) with per-row predictions for paired counts (rows won / lost, McNemar).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from aivos.cloud.modelbuild import contrastive, fewshot
from aivos.cloud.modelbuild.cli import DEFAULT_EPOCHS, DEFAULT_FROZEN_LAYERS, DEFAULT_LAYERS
from aivos.cloud.modelbuild.finetune import TrainConfig, _embed_all, train_intent_model
from aivos.cloud.modelbuild.source import offline, training_data
from aivos.shared.datasets import OOS_LABEL, clinc_split, load_examples
from aivos.shared.paths import clinc150_path
from benchmarks.fewshot import _write_csv, sample_k_shot

BLENDS = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if len(sys.argv) < 3 or not sys.argv[2].isdigit():
        sys.exit(__doc__)
    name, seed = sys.argv[1], int(sys.argv[2])
    steps = fewshot.CONTRASTIVE_STEPS
    cs: dict[str, float] = {}
    out_dir = Path("/tmp/fewshot_val")
    for arg in sys.argv[3:]:
        key, value = arg.split("=")
        if key == "steps":
            steps = int(value)
        elif key == "out":
            out_dir = Path(value)
        elif key.startswith("cs_"):
            cs[key[3:]] = float(value)
    if cs:
        base = contrastive.ContrastiveConfig

        def patched(**kw):  # train_intent_model imports ContrastiveConfig at call time
            return dataclasses.replace(base(**kw), **cs)

        contrastive.ContrastiveConfig = patched  # type: ignore[misc]

    offline()
    out_dir.mkdir(parents=True, exist_ok=True)
    train_csv = _write_csv(sample_k_shot(10, seed), out_dir / f"train-{name}-{seed}.csv")
    val_spec = clinc_split(clinc150_path(), "val")
    data = training_data(train_csv, val_spec, seed=seed)
    train, labels = data.train, data.labels
    index = {label: i for i, label in enumerate(labels)}
    config = TrainConfig(
        epochs=DEFAULT_EPOCHS,
        head_only_epochs=0,
        seed=seed,
        layers=DEFAULT_LAYERS,
        frozen_layers=DEFAULT_FROZEN_LAYERS,
    )
    config = fewshot.few_shot_config(config)
    shipped_mix = config.centroid_mix
    config = dataclasses.replace(config, contrastive_steps=steps, centroid_mix=0.0)
    print(f"{name} seed {seed}: n_train {len(train)}, config {config}, cs {cs}", flush=True)
    texts = [e.text for e in train]
    label_ids = [index[e.label] for e in train]
    started = time.monotonic()
    net, tok = train_intent_model(texts, label_ids, len(labels), config)
    train_s = time.monotonic() - started

    val = [e for e in load_examples(val_spec) if e.label != OOS_LABEL]
    gold = torch.tensor([index[e.label] for e in val])
    val_emb = _embed_all(net, tok, [e.text for e in val], config.max_length)
    train_emb = _embed_all(net, tok, texts, config.max_length)
    lab = torch.tensor(label_ids)
    with torch.no_grad():
        centroids = torch.zeros_like(net.weight).index_add_(0, lab, train_emb)
        head = F.normalize(net.weight, dim=-1)
        cen = F.normalize(centroids, dim=-1)
        mix = {}
        for b in BLENDS:
            w = (1 - b) * head + b * cen
            pred = net.scale * val_emb @ F.normalize(w, dim=-1).T + net.bias
            p = pred.argmax(1)
            mix[str(b)] = {
                "top1": round(float((p == gold).float().mean()), 4),
                "pred": p.tolist(),
            }
    result = {
        "name": name,
        "seed": seed,
        "steps": steps,
        "cs": cs,
        "shipped_mix": shipped_mix,
        "n_train": len(train),
        "train_s": round(train_s),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "gold": gold.tolist(),
        "mix": mix,
    }
    (out_dir / f"{name}-{seed}.json").write_text(json.dumps(result))
    print(name, seed, "train_s", round(train_s), {k: v["top1"] for k, v in mix.items()}, flush=True)


if __name__ == "__main__":
    main()
