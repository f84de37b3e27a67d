"""The engine's exactness on trained runs, as a Markdown table (``make engine-check``).

    python -m abc_lab.engine.exactness <run dir>...

Each run directory holds a finished run whose exported model was checked with
``abc-lab evaluate`` on the full test set (its ``inference.json`` entry ``evaluate``); the
table puts the record's test top-1 beside the engine's and the simulation's, with the images
on which they differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADER = (
    "| run | training | record top-1 % | engine top-1 % | simulation top-1 % | "
    "images, class differs | images, logits differ > 1e-4 | largest rel. logit diff | kernels |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---|"
)


def _training(record: dict) -> str:
    config = record.get("config") or {}
    epochs = (config.get("trainer") or {}).get("max_epochs")
    subset = (config.get("data") or {}).get("train_subset")
    images = f"{subset} images" if subset else "all images"
    return f"{epochs} ep., {images}"


def row(run_dir: Path) -> str:
    record = json.loads((run_dir / "results.json").read_text())
    result = json.loads((run_dir / "inference.json").read_text())["evaluate"]
    label = (record.get("quant") or {}).get("label", run_dir.name)
    pct = lambda v: "–" if v is None else f"{100 * v:.2f}"  # noqa: E731
    return (
        f"| {label} | {_training(record)} | {pct(result['record_test_acc1'])} | "
        f"{pct(result['top1_engine'])} | {pct(result['top1_simulated'])} | "
        f"{result['class_disagreements']} | {result['logit_disagreements']} | "
        f"{result['max_rel_diff']:.1e} | {result['backend']} |"
    )


def main(argv: list[str]) -> int:
    runs = [Path(a) for a in argv]
    missing = [str(r) for r in runs if not (r / "inference.json").is_file()]
    if not runs or missing:
        where = ", ".join(missing) or "the arguments"
        print(f"error: no evaluated run in {where}", file=sys.stderr)
        return 1
    print(HEADER)
    for r in runs:
        print(row(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
