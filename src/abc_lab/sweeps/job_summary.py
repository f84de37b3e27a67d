"""The summary of many jobs (a multirun or a sweep): ``summary.json``, ``summary.md``, a rich
table on the console, then the comparison report when the report builder is installed.

Only run records (``results.json``) and Hydra's ``.hydra/overrides.yaml`` are read.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..console import make_console
from ..runs import RECORD_NAME, now_iso, write_json_atomic
from .metrics import metric_value, read_record

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
REPORT_NAME = "report"
# Folders of a sweep dir that hold no job of the summary.
SKIP_DIRS = frozenset({REPORT_NAME, "interrupted", ".submitit", "wandb", "checkpoints", "csv"})


@dataclass
class JobRow:
    """One job of a multirun or sweep, as the summary shows it."""

    job_dir: str
    overrides: list[str]
    status: str
    val_acc1: float | None = None
    test_acc1: float | None = None
    epochs: int | None = None
    wall_time_s: float | None = None
    error: str | None = None


def read_overrides(job_dir: Path) -> list[str]:
    """The task overrides Hydra recorded for a job (``.hydra/overrides.yaml``), or []."""
    path = Path(job_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    try:
        from omegaconf import OmegaConf

        return [str(o) for o in OmegaConf.load(path)]
    except Exception:
        return []


def job_row(
    job_dir: Path,
    overrides: Sequence[str] | None = None,
    status: str | None = None,
    error: str | None = None,
) -> JobRow:
    """A summary row from the record in ``job_dir``; ``status``/``error`` fill in for a job
    that left no record (or override what the record says, e.g. ``interrupted``)."""
    job_dir = Path(job_dir)
    record = read_record(job_dir)
    overrides = list(overrides) if overrides is not None else read_overrides(job_dir)
    if record is None:
        reason = error or (
            f"no {RECORD_NAME}: the job stopped before training started "
            f"(see {job_dir / 'train.log'})"
        )
        return JobRow(str(job_dir), overrides, status or "no record", error=reason)
    wall = record.get("wall_time_s")
    epochs = record.get("epochs_done")
    return JobRow(
        job_dir=str(job_dir),
        overrides=overrides,
        status=status or str(record.get("status")),
        val_acc1=metric_value(record, "val/acc1"),
        test_acc1=metric_value(record, "test/acc1"),
        epochs=epochs if isinstance(epochs, int) else None,
        wall_time_s=float(wall) if isinstance(wall, int | float) else None,
        error=error or record.get("error"),
    )


def find_job_dirs(root: Path) -> list[Path]:
    """Job directories under ``root``: those with a run record or Hydra's ``.hydra`` folder."""
    root = Path(root)
    found: set[Path] = set()
    for marker in (RECORD_NAME, ".hydra/overrides.yaml"):
        for path in root.rglob(marker):
            job = path.parent if marker == RECORD_NAME else path.parent.parent
            rel = job.relative_to(root).parts if job != root else ()
            if not any(part in SKIP_DIRS for part in rel):
                found.add(job)
    return sorted(found, key=_natural_key)


def _natural_key(path: Path) -> list[Any]:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def common_overrides(rows: Sequence[JobRow]) -> list[str]:
    """Overrides every job shares (shown once above the table, not in every row)."""
    if len(rows) < 2:
        return []
    shared = set(rows[0].overrides).intersection(*(r.overrides for r in rows[1:]))
    return [o for o in rows[0].overrides if o in shared]


def _cells(row: JobRow, root: Path, common: Sequence[str] = ()) -> list[str]:
    try:
        shown = str(Path(row.job_dir).relative_to(root))
    except ValueError:
        shown = row.job_dir
    return [
        shown,
        " ".join(o for o in row.overrides if o not in common),
        row.status,
        _pct(row.val_acc1),
        _pct(row.test_acc1),
        "" if row.epochs is None else str(row.epochs),
        _duration(row.wall_time_s),
        row.error or "",
    ]


COLUMNS = (
    "job dir",
    "overrides",
    "status",
    "val acc1 %",
    "test acc1 %",
    "epochs",
    "wall time",
    "error",
)


def render_markdown(rows: Sequence[JobRow], root: Path, title: str) -> str:
    """The summary as a Markdown document with one table."""

    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    counts = Counter(r.status for r in rows)
    common = common_overrides(rows)
    lines = [
        f"# {title}",
        "",
        f"Directory: `{root}`  ",
        "Jobs: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none") + "  ",
        "Overrides of every job: " + (f"`{' '.join(common)}`" if common else "none"),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---:" if c.endswith(("%", "epochs")) else "---" for c in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(esc(c) for c in _cells(r, root, common)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def rich_table(rows: Sequence[JobRow], root: Path, title: str) -> Table:
    """The summary as a rich table (failed and stopped jobs coloured)."""
    common = common_overrides(rows)
    caption = f"overrides of every job: {' '.join(common)}" if common else None
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for col in COLUMNS:
        numeric = col.endswith(("%", "epochs", "time"))
        table.add_column(col, justify="right" if numeric else "left", overflow="fold")
    styles = {
        "failed": "red",
        "no record": "red",
        "stopped": "yellow",
        "interrupted": "yellow",
        "running": "cyan",
    }
    for row in rows:
        table.add_row(*map(Text, _cells(row, root, common)), style=styles.get(row.status))
    return table


def write_summary(
    root: Path,
    rows: Sequence[JobRow],
    title: str,
    extra: Mapping[str, Any] | None = None,
    console: Console | None = None,
) -> Path:
    """Write ``summary.json`` and ``summary.md`` into ``root`` and print the table; returns
    the path of ``summary.md``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    counts = Counter(r.status for r in rows)
    data = {
        "schema": "abc-lab/sweep-summary",
        "version": 1,
        "title": title,
        "dir": str(root.resolve()),
        "generated_at": now_iso(),
        "counts": dict(sorted(counts.items())),
        **(dict(extra) if extra else {}),
        "jobs": [asdict(r) for r in rows],
    }
    write_json_atomic(root / SUMMARY_JSON, data)
    md = root / SUMMARY_MD
    md.write_text(render_markdown(rows, root, title), encoding="utf-8")
    (console or make_console()).print(rich_table(rows, root, title))
    return md


def build_sweep_report(
    root: Path, record_paths: Iterable[Path], console: Console | None = None
) -> Path | None:
    """Build the comparison report into ``<root>/report`` from ``record_paths`` with
    ``abc-lab report`` (its own process: sweeps and reports share only the run records);
    None when it could not be built (the summary table stands in for it)."""
    console = console or make_console()
    paths = [str(p) for p in record_paths]
    if not paths:
        console.print("[dim]no run records, so no comparison report[/]")
        return None
    cmd = [sys.executable, "-m", "abc_lab.cli", "report", *paths, "--name", REPORT_NAME,
           "--out", str(root)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    out = Path(root) / REPORT_NAME
    if done.returncode != 0 or not out.is_dir():
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        console.print(f"[yellow]report not built: {escape(last[0])}[/]")
        return None
    console.print(f"report: {out}")
    return out


def summarize(
    root: Path,
    rows: Sequence[JobRow],
    title: str,
    extra: Mapping[str, Any] | None = None,
    console: Console | None = None,
) -> Path:
    """Write and print the summary of ``rows``, then build the report; returns ``summary.md``."""
    console = console or make_console()
    md = write_summary(root, rows, title, extra, console)
    with_records = [Path(r.job_dir) for r in rows if (Path(r.job_dir) / RECORD_NAME).is_file()]
    build_sweep_report(root, with_records, console)
    return md
