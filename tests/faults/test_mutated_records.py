"""200 mutated run records (truncated, wrong types, NaN, missing keys, huge numbers) never
crash `abc-lab report`; each unusable one is named with its path."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
from rich.console import Console

from abc_lab.reports import build_report
from abc_lab.runs import load_runs

pytestmark = pytest.mark.faults

REAL = Path(__file__).resolve().parents[2] / "reports" / "fashion-mnist-resnet20" / "records"
ODD_VALUES = [None, "x", [], {}, True, -1, 0, 1e308, 10**400, float("nan"), float("inf"), [1, "a"]]


def paths_in(data, prefix=()):
    """Every (path) to a value inside nested dicts/lists."""
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from paths_in(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data[:3]):
            yield from paths_in(v, (*prefix, i))


def mutate(record: dict, rng: random.Random) -> str:
    """One mutation of ``record`` as text: truncation, a replaced or deleted value."""
    kind = rng.choice(["truncate", "replace", "delete", "replace", "delete"])
    text = json.dumps(record)
    if kind == "truncate":
        return text[: rng.randrange(1, len(text) - 1)]
    data = copy.deepcopy(record)
    path = rng.choice([p for p in paths_in(data) if p])
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    if kind == "delete":
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    else:
        parent[path[-1]] = rng.choice(ODD_VALUES)
    return json.dumps(data, allow_nan=True)  # NaN, Infinity as Python's json writes them


def test_two_hundred_mutated_records_never_crash_a_report(tmp_path: Path) -> None:
    rng = random.Random(1234)
    sources = [json.loads(p.read_text()) for p in sorted(REAL.glob("*/results.json"))]
    root = tmp_path / "runs"
    for i in range(200):
        (root / f"m{i:03d}").mkdir(parents=True)
        text = mutate(rng.choice(sources), rng)
        (root / f"m{i:03d}" / "results.json").write_text(text)
    loaded = load_runs([root])
    assert len(loaded.runs) + len(loaded.problems) == 200
    for problem in loaded.problems:
        assert problem.path.is_file() and problem.reason and "\n" not in problem.reason
    out = build_report(
        [root], "mutated", out_root=tmp_path, console=Console(file=open("/dev/null", "w"))
    )
    md = (out / "report.md").read_text()
    for problem in loaded.problems:  # each unusable file is named with its path
        assert str(problem.path) in md
    assert loaded.problems, "some mutations must make records unusable"
