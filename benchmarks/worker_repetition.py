"""Repetition of the default generator (llama.cpp, SmolLM2-135M) with and without a penalty.

For each prompt (escalation-like questions, some with passages as the edge sends them),
one generation at the worker's defaults (temperature 0.2, `--max-tokens`) per sampler
setting. Measured per answer:

* ``repeated_3grams``: share of word 3-grams that already occurred earlier in the answer
  (0 = no repetition; "a leaf, a leaf, a leaf" scores high);
* ``loop``: an answer whose most frequent 3-gram occurs 4 times or more;
* ``cut``: the answer used all `--max-tokens` tokens (cut mid-sentence).

    python benchmarks/worker_repetition.py [--max-tokens 128] [--only no_penalty|default]

(`--only` runs one setting and merges it into the results file: on a busy 2-core box one
setting takes several minutes.)

Writes benchmarks/results/worker_repetition.json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aivos.cloud.worker.llamacpp import (  # noqa: E402
    DEFAULT_SAMPLING,
    NO_PENALTY,
    LlamaCppBackend,
    Sampling,
)
from aivos.shared.messages import GenerateRequest, Passage  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "worker_repetition.json"
_BRANCH = Passage(
    text="The branch is open Monday to Friday from 9:00 to 17:00 and on Saturday from 9:00 "
    "to 13:00. It is closed on Sundays and public holidays.",
    source="kb/branch.md",
)
PROMPTS: list[tuple[str, tuple[Passage, ...]]] = [
    ("who painted the mona lisa", ()),
    ("write a short poem about autumn leaves", ()),
    ("explain how a mortgage works", ()),
    ("what should I do if my card is stolen abroad", ()),
    ("give me three tips to save money every month", ()),
    ("what is the difference between a debit card and a credit card", ()),
    ("tell me about the history of banking", ()),
    ("can I visit the branch on Sunday", (_BRANCH,)),
    ("describe a tree", ()),
    ("list the planets of the solar system", ()),
]
SETTINGS = {"no_penalty": NO_PENALTY, "default": DEFAULT_SAMPLING}


def repeated_3grams(text: str) -> tuple[float, int]:
    words = re.findall(r"\w+", text.lower())
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if not grams:
        return 0.0, 0
    counts = Counter(grams)
    return 1 - len(counts) / len(grams), max(counts.values())


def run(backend: LlamaCppBackend, max_tokens: int) -> dict[str, object]:
    answers = []
    for n, (prompt, passages) in enumerate(PROMPTS):
        request = GenerateRequest(
            request_id=f"rep-{n}", site="bench", prompt=prompt, passages=passages,
            max_tokens=max_tokens,
        )  # fmt: skip
        started = time.perf_counter()
        text = backend.generate_text(request)
        seconds = time.perf_counter() - started
        tokens = len(backend._llm.tokenize(text.encode(), add_bos=False))
        share, top = repeated_3grams(text)
        answers.append(
            {
                "prompt": prompt,
                "repeated_3grams": round(share, 3),
                "top_3gram_count": top,
                "loop": top >= 4,
                "cut": tokens >= max_tokens - 1,
                "tokens": tokens,
                "seconds": round(seconds, 2),
                "answer": text,
            }
        )
    return {
        "mean_repeated_3grams": round(statistics.mean(a["repeated_3grams"] for a in answers), 3),  # type: ignore[misc]
        "loops": sum(bool(a["loop"]) for a in answers),
        "cut": sum(bool(a["cut"]) for a in answers),
        "answers": answers,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--only", choices=sorted(SETTINGS), default=None)
    args = ap.parse_args()
    out: dict[str, object] = (
        json.loads(RESULTS.read_text()) if args.only and RESULTS.exists() else {}
    )
    out.update({"max_tokens": args.max_tokens, "prompts": len(PROMPTS)})
    for name, sampling in SETTINGS.items():
        if args.only and name != args.only:
            continue
        backend = LlamaCppBackend(sampling=sampling)
        result = run(backend, args.max_tokens)
        out[name] = {"sampling": asdict(sampling), **result}
        print(
            f"{name:>10}: mean repeated 3-grams {result['mean_repeated_3grams']}, "
            f"loops {result['loops']}/{len(PROMPTS)}, cut at max tokens "
            f"{result['cut']}/{len(PROMPTS)}",
            flush=True,
        )
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()


__all__ = ["Sampling", "repeated_3grams", "run", "main"]
