"""The measured-speed reader of reports: inference.json found through the run record."""

from __future__ import annotations

import json
from types import SimpleNamespace

from abc_lab.reports.inference import latency, read_inference


def test_reads_inference_json_from_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    data = {
        "schema": "abc-lab/inference",
        "latency": [
            {"batch": 1, "threads": 1, "engine_ms": 2.0, "fp32_ms": 4.0, "speedup_fp32": 2.0},
            {"batch": 32, "threads": 2, "engine_ms": 9.0, "fp32_ms": 9.0, "speedup_fp32": 1.0},
        ],
    }
    (run_dir / "inference.json").write_text(json.dumps(data))
    moved = SimpleNamespace(record={"run_dir": str(run_dir)}, path=tmp_path / "x/results.json")
    row = SimpleNamespace(runs=[moved])
    found = read_inference(row)
    assert latency(found)["speedup_fp32"] == 2.0
    assert latency(found, 32, 2)["engine_ms"] == 9.0 and latency(found, 32, 1) is None
    (run_dir / "inference.json").write_text(json.dumps({"schema": "other"}))
    assert read_inference(row) is None
