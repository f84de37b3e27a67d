"""The report's tables: formatting of numbers, the per-group results table, the paper's table.

Accuracies are stored as fractions and shown as percentages; gaps are in percentage points.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table as RichTable
from rich.text import Text

from ..runs import Run
from . import paper
from .document import Table
from .grouping import Group, Row, Stat
from .intervals import describe

DASH = "—"


def fmt_pct(value: Stat | None, digits: int = 2) -> str:
    """``91.23 ± 0.15`` (mean ± sample std over seeds, in %); no ± for one seed."""
    if value is None:
        return DASH
    text = f"{100 * value.mean:.{digits}f}"
    return text if value.std is None else f"{text} ± {100 * value.std:.{digits}f}"


def fmt_gap(points: float | None, digits: int = 2) -> str:
    return DASH if points is None else f"{points:+.{digits}f}"


def fmt_bytes(n: float | None) -> str:
    if not n:
        return DASH
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_count(n: float | None) -> str:
    """MACs as ``1.23 G`` / ``45.6 M`` / ``789 k``; ``0`` stays ``0``."""
    if n is None:
        return DASH
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f}"


def fmt_ratio(x: float | None, digits: int = 2) -> str:
    return DASH if x is None else f"{x:.{digits}f}×"


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return DASH
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def fmt_int(value: object) -> str:
    return DASH if value is None else str(value)


CI_HEADER = "gap 95% CI"
MAIN_HEADERS = [
    "quantizer",
    "M",
    "N",
    "seeds",
    "top-1 %",
    "top-5 %",
    "gap (pts)",
    CI_HEADER,
    "packed weights",
    "compression",
    "binary MACs",
    "float MACs",
    "speed-up binary",
    "speed-up model",
    "train time",
    "throughput vs fp",
    "from ckpt",
]
MAIN_ALIGN = ["left", "right", "right", "left"] + ["right"] * 12 + ["left"]


def _main_row(row: Row, group: Group) -> list[str]:
    s = row.summary
    is_base = row is group.baseline
    gap = DASH if is_base else ("no baseline" if group.baseline is None else fmt_gap(row.gap))
    return [
        f"{row.label} (baseline)" if is_base else row.label,
        fmt_int(row.M),
        fmt_int(row.N),
        ", ".join(str(seed) for seed in row.seeds),
        fmt_pct(row.top1),
        fmt_pct(row.top5),
        gap,
        DASH if is_base else describe(row.gap_interval),
        fmt_bytes(s.get("memory_packed_bytes")),
        fmt_ratio(s.get("compression"), 1),
        fmt_count(s.get("binary_macs")),
        fmt_count(s.get("float_macs")),
        fmt_ratio(row.binary_speedup, 1),
        fmt_ratio(row.model_speedup),
        fmt_time(row.wall_time_s.mean if row.wall_time_s else None),
        fmt_ratio(row.rel_throughput),
        "yes" if row.initialised else "no",
    ]


def main_table(group: Group, title: str) -> Table:
    """The results table of one group: baseline first, then binary variants. The column of
    gap intervals is there only when some row has one (two or more seeds)."""
    split = "test" if group.metric == "test" else "validation (no test metrics in every record)"
    caption = (
        f"Accuracy on the {split} split, mean ± sample std over seeds. Gap: top-1 points "
        "against the fp mean. Speed-up binary: 64/(M·N) per binary MAC; model: all MACs over "
        "(float MACs + binary ops/64)."
    )
    rows = [_main_row(row, group) for row in group.all_rows]
    headers, align = MAIN_HEADERS, MAIN_ALIGN
    if all(row.gap_interval is None for row in group.rows):
        ci = MAIN_HEADERS.index(CI_HEADER)
        rows = [r[:ci] + r[ci + 1 :] for r in rows]
        headers, align = headers[:ci] + headers[ci + 1 :], align[:ci] + align[ci + 1 :]
    else:
        caption += (
            " Gap 95% CI: a paired t interval over seeds where the row and fp have the same "
            "seeds (binary seed k started from fp seed k), else Welch's t with two or more "
            "seeds on each side, else none."
        )
    return Table(headers, rows, align, title=title, caption=caption)


def median_epoch_s(run: Run) -> float | None:
    """Median wall time of one epoch (training + validation) from the run's history."""
    times = [h.get("time_s") for h in run.history]
    if len(times) < 2 or not all(isinstance(t, int | float) for t in times):
        return None
    return statistics.median(b - a for a, b in zip([0.0, *times[:-1]], times, strict=True))


def _epoch_s(row: Row) -> float | None:
    values = [v for v in (median_epoch_s(r) for r in row.runs) if v is not None]
    return statistics.fmean(values) if values else None


def cost_table(group: Group) -> Table | None:
    """Training speed of every row against fp: recorded samples/s and the median epoch."""
    base = group.baseline
    base_epoch = _epoch_s(base) if base else None
    body = []
    for row in group.all_rows:
        epoch = _epoch_s(row)
        body.append(
            [
                f"{row.label} (baseline)" if row is base else row.label,
                ", ".join(str(seed) for seed in row.seeds),
                f"{row.throughput.mean:.0f}" if row.throughput else DASH,
                fmt_ratio(row.rel_throughput),
                fmt_time(epoch),
                fmt_ratio(base_epoch / epoch if base_epoch and epoch else None),
            ]
        )
    if all(r[2] == DASH and r[4] == DASH for r in body):
        return None
    return Table(
        ["quantizer", "seeds", "train samples/s", "× fp", "median epoch", "× fp (epoch)"],
        body,
        ["left", "left", "right", "right", "right", "right"],
        caption="Measured in the runs themselves, as ratios to the fp baseline of the same "
        "setup. Samples/s: training steps over the whole run (mean over seeds). Median epoch: "
        "the median wall time of one epoch (training + validation) in each run's history, "
        "mean over seeds; a few epochs slowed by other work on the machine do not move it. "
        "× fp (epoch) = fp's median epoch / this row's.",
    )


def _fmt_range(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.3f}" if abs(hi - lo) < 5e-4 else f"{lo:.3f} – {hi:.3f}"


def activation_params_table(rows: list[Row]) -> Table | None:
    """How far the learned activation shifts v and scales β moved from their start (the
    record's ``quant_params_init``)."""
    body = []
    for row in rows:
        for run in row.runs:
            start = run.quant_params_init
            moved, betas, beta0 = [], [], []
            for name, layer in run.quant_params.items():
                init = start.get(name) or {}
                pairs = zip(layer.get("v") or [], init.get("v") or [], strict=False)
                moved += [abs(v - s) for v, s in pairs if v is not None and s is not None]
                betas += [b for b in layer.get("beta") or [] if b is not None]
                beta0 += [b for b in init.get("beta") or [] if b is not None]
            if not moved or not betas:
                continue
            body.append(
                [
                    row.label,
                    str(run.seed),
                    f"{statistics.median(moved):.3f}",
                    f"{max(moved):.3f}",
                    _fmt_range(beta0) if beta0 else "—",
                    f"{min(betas):.3f} – {max(betas):.3f}",
                ]
            )
    if not body:
        return None
    return Table(
        ["quantizer", "seed", "median |v − v₀|", "max |v − v₀|", "β₀", "learned β (min – max)"],
        body,
        ["left", "left", "right", "right", "right", "right"],
        caption="Final activation shifts v against their initial values v₀ (recorded when "
        "training started) over every base of every quantized layer, the initial scales β₀ "
        "and the range of the final scales β.",
    )


def _ours_by_label(group: Group) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for row in group.all_rows:
        out.setdefault(row.base_label, []).append(row)
    return out


def paper_comparison(group: Group) -> Table:
    """Our rows next to the paper's rows with the same quantizer label."""
    ours = _ours_by_label(group)
    results = paper.by_label()
    labels = [r.label for r in paper.RESULTS if r.label in ours]
    labels += [label for label in ours if label not in results]
    rows: list[list[str]] = []
    for label in labels:
        ref = results.get(label)
        for row in ours[label]:
            if row is group.baseline:
                gap = DASH
            else:
                gap = "no baseline" if group.baseline is None else fmt_gap(row.gap, 1)
            rows.append(
                [
                    row.label,
                    DASH if ref is None else f"{ref.top1:.1f}",
                    DASH if ref is None or ref.label == "fp" else f"{ref.gap:+.1f}",
                    fmt_pct(row.top1, 1),
                    gap,
                ]
            )
    return Table(
        ["quantizer", "paper top-1 %", "paper gap", "ours top-1 %", "ours gap"],
        rows,
        ["left", "right", "right", "right", "right"],
        caption="Paper: ResNet-18 on ImageNet. Different model and data: compare the pattern "
        "(ordering and size of the gaps), not the numbers.",
    )


def paper_grid_table() -> Table:
    """The paper's ABC (M, N) grid, top-1 / top-5 %, with the weight-only column."""
    grid = paper.grid()
    weight_only = {r.M: r for r in paper.RESULTS if r.quant == "abc" and r.N == 0}
    ms = sorted({m for m, _ in grid} | set(weight_only))
    ns = sorted({n for _, n in grid})
    rows = []
    for m in ms:
        cells = [f"M={m}"]
        wo = weight_only.get(m)
        cells.append(f"{wo.top1:.1f}" if wo else "")
        for n in ns:
            r = grid.get((m, n))
            cells.append(f"{r.top1:.1f} / {r.top5:.1f}" if r and r.top5 is not None else "")
        rows.append(cells)
    fp, others = paper.FULL_PRECISION, [r for r in paper.RESULTS if r.quant in ("bwn", "xnor")]
    caption = (
        f"Full precision {fp.top1} / {fp.top5}; "
        + "; ".join(f"{r.label} {r.top1} / {r.top5}" for r in others)
        + "; "
        + "; ".join(f"{name} (5,5) {abc} vs fp {fp_}" for name, abc, fp_ in paper.DEEPER)
        + "."
    )
    return Table(
        ["M \\ N", "float act. (top-1)"] + [f"N={n}" for n in ns],
        rows,
        ["left"] + ["right"] * (len(ns) + 1),
        title="ABC-Net, ResNet-18, ImageNet: top-1 / top-5 %",
        caption=caption,
    )


def failed_table(runs: list[Run], roots: Sequence[Path] = ()) -> Table:
    """Failed runs with their error and record, named from the input directory it was found
    under (``<input dir name>/<path below it>``), so a report reads the same wherever it is
    built; records outside every input keep their path."""

    def where(path: Path) -> str:
        for root in roots:
            if root.is_dir() and path.resolve().is_relative_to(root.resolve()):
                return str(Path(root.resolve().name) / path.resolve().relative_to(root.resolve()))
        return str(path)

    rows = [
        [
            r.label,
            r.model,
            r.data,
            str(r.seed),
            r.error or "(no error message in the record)",
            where(r.path),
        ]
        for r in runs
    ]
    return Table(["quantizer", "model", "data", "seed", "error", "record"], rows)


LABEL_WIDTH = 40


def to_rich(table: Table) -> RichTable:
    """A rich console table with the same cells (cells are plain text, never markup)."""
    out = RichTable(
        title=Text(table.title) if table.title else None,
        caption=Text(table.caption) if table.caption else None,
        caption_justify="left",
    )
    for i, header in enumerate(table.headers):
        justify = "right" if table.alignment(i) == "right" else "left"
        # the first column names the row: never cut it, but long names (a recipe search's
        # settings) wrap within LABEL_WIDTH so the numbers keep their columns
        first = header == table.headers[0]
        out.add_column(
            Text(header),
            justify=justify,
            min_width=len(header) if first else None,
            max_width=LABEL_WIDTH if first else None,
            overflow="fold",
        )
    for row in table.rows:
        out.add_row(*(Text(cell) for cell in row))
    return out
