"""The committed reports are rebuilt from the records they keep with the same numbers: every
table row of the rebuilt report.md equals the committed one (record format changes must keep
older records readable and matched the same way)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from abc_lab.reports import build_report

REPORTS = Path(__file__).resolve().parents[2] / "reports"
COMMITTED = sorted(
    p.parent for p in REPORTS.glob("*/records") if (p.parent / "report.md").is_file()
)


def table_rows(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("|")]


@pytest.mark.parametrize("folder", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_report_rebuilds_with_the_same_tables(folder: Path, tmp_path: Path) -> None:
    notes = folder / "findings.md"
    out = build_report(
        [folder / "records"],
        folder.name,
        out_root=tmp_path,
        console=Console(file=open("/dev/null", "w")),
        notes=notes if notes.is_file() else None,
    )
    committed = table_rows((folder / "report.md").read_text(encoding="utf-8"))
    rebuilt = table_rows((out / "report.md").read_text(encoding="utf-8"))
    assert committed and rebuilt == committed


def test_both_committed_reports_are_checked() -> None:
    assert {p.name for p in COMMITTED} >= {"fashion-mnist-resnet20", "fmnist-demo-resnet20"}
