"""Report figures as PNG files, drawn with matplotlib's object API on the Agg canvas.

No pyplot: figures are built from ``matplotlib.figure.Figure`` and saved through
``FigureCanvasAgg``, so nothing global (backend, open figures) is touched.
Each function returns False and writes nothing when it has no data to draw.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import paper
from .grouping import Group, Row

DPI = 110
_LINESTYLES = ("-", "--", ":", "-.")


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    # tight: a legend outside the axes is part of the picture, not cut at the figure's edge
    fig.savefig(path, dpi=DPI, facecolor="white", bbox_inches="tight")


def _wrap(text: str, width: int = 40) -> str:
    """A long row label (a recipe search's settings) on several short lines."""
    return textwrap.fill(text, width, break_on_hyphens=False)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _at(values: Sequence[float | None], n: int) -> float:
    value = values[n] if n < len(values) else None
    return math.nan if value is None else float(value)


def _n_label(n: int) -> str:
    return "w" if n == 0 else str(n)


def _grid_panel(
    fig: Figure,
    ax,
    values: dict[tuple[int, int], float],
    notes: dict[tuple[int, int], str],
    title: str,
    cmap_name: str,
    diverging: bool,
) -> None:
    """One annotated (M rows × N columns) heat map; missing cells stay blank."""
    ms = sorted({m for m, _ in values})
    ns = sorted({n for _, n in values})
    data = np.full((len(ms), len(ns)), np.nan)
    for (m, n), value in values.items():
        data[ms.index(m), ns.index(n)] = value
    finite = data[np.isfinite(data)]
    lo, hi = float(finite.min()), float(finite.max())
    if diverging:
        bound = max(abs(lo), abs(hi), 1e-6)
        norm: Normalize = TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound)
    else:
        norm = Normalize(vmin=lo - 0.5 if lo == hi else lo, vmax=hi + 0.5 if lo == hi else hi)
    cmap = colormaps[cmap_name].with_extremes(bad="#eeeeee")
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, norm=norm, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(ns)), [_n_label(n) for n in ns])
    ax.set_yticks(range(len(ms)), [str(m) for m in ms])
    ax.set_xlabel("N (activation bases; w = float activations)")
    ax.set_ylabel("M (weight bases)")
    ax.set_title(title, fontsize=10)
    for (m, n), value in values.items():
        r, g, b, _ = cmap(norm(value))
        colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
        text = f"{value:.1f}" + (f"\n{notes[(m, n)]}" if notes.get((m, n)) else "")
        ax.text(ns.index(n), ms.index(m), text, ha="center", va="center", color=colour, fontsize=9)


def heatmap(rows: Sequence[Row], baseline: Row | None, title: str, path: Path) -> bool:
    """Top-1 and gap to fp over (M, N) for ABC rows, next to the paper's gaps."""
    cells = [r for r in rows if r.multi_base and r.M is not None and r.N is not None]
    cells = [r for r in cells if r.top1 is not None]
    if not cells:
        return False
    top1 = {(r.M, r.N): 100 * r.top1.mean for r in cells}  # type: ignore[union-attr]
    spread = {
        (r.M, r.N): f"±{100 * r.top1.std:.1f}"  # type: ignore[union-attr]
        for r in cells
        if r.top1 is not None and r.top1.std is not None
    }
    gaps = {(r.M, r.N): r.gap for r in cells if r.gap is not None}
    paper_gaps = {(p.M, p.N): p.gap for p in paper.RESULTS if p.quant == "abc" and p.M is not None}
    panels = 2 + bool(gaps)
    fig = Figure(figsize=(4.6 * panels, 3.8), layout="constrained")
    axes = fig.subplots(1, panels)
    _grid_panel(fig, axes[0], top1, spread, "ours: top-1 %", "viridis", diverging=False)
    if gaps:
        _grid_panel(fig, axes[1], gaps, {}, "ours: gap to fp (points)", "RdYlGn", True)
    _grid_panel(
        fig, axes[-1], paper_gaps, {}, "paper (ResNet-18, ImageNet): gap to fp", "RdYlGn", True
    )
    fig.suptitle(title, fontsize=11)
    _save(fig, path)
    return True


def ranking(group: Group, title: str, path: Path) -> bool:
    """Top-1 of every configuration as a bar, best first, seeds as dots; fp as a line."""
    rows = [r for r in group.rows if r.top1 is not None]
    if not rows:
        return False
    rows.sort(key=lambda r: r.top1.mean, reverse=True)  # type: ignore[union-attr]
    fig = Figure(figsize=(10.5, 1.2 + 0.36 * len(rows)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    means = [100 * r.top1.mean for r in rows]  # type: ignore[union-attr]
    ax.barh(y, means, color="#4c78a8", height=0.65)
    for yi, row in zip(y, rows, strict=True):
        values = [100 * v for v in row.top1.values]  # type: ignore[union-attr]
        ax.plot(values, [yi] * len(values), "k.", markersize=4)
    low = min(min(100 * v for v in r.top1.values) for r in rows)  # type: ignore[union-attr]
    high = max(means)
    if group.baseline is not None and group.baseline.top1 is not None:
        fp = 100 * group.baseline.top1.mean
        ax.axvline(fp, color="black", linestyle="--", linewidth=1.2, label=f"fp {fp:.2f}%")
        ax.legend(fontsize=8, loc="lower right")
        high = max(high, fp)
    ax.set_xlim(max(0.0, low - 0.15 * (high - low + 1)), high + 0.1 * (high - low + 1))
    ax.set_yticks(y, [r.label for r in rows], fontsize=8)
    ax.set_xlabel(f"{group.metric} top-1 %")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=11)
    _save(fig, path)
    return True


def val_curves(group: Group, title: str, path: Path) -> bool:
    """Validation top-1 per epoch for every run of the group (fp in black)."""
    rows = group.all_rows
    if not any(r.history for row in rows for r in row.runs):
        return False
    fig = Figure(figsize=(9.5, 4.6), layout="constrained")
    ax = fig.subplots()
    palette = colormaps["tab10" if len(rows) <= 10 else "tab20"]
    drawn = False
    for i, row in enumerate(rows):
        colour = "black" if row is group.baseline else palette(i % palette.N)
        for j, run in enumerate(row.runs):
            points = [
                (h.get("epoch"), h.get("val_acc1"))
                for h in run.history
                if _is_number(h.get("epoch")) and _is_number(h.get("val_acc1"))
            ]
            if not points:
                continue
            epochs, acc = zip(*points, strict=True)
            label = _wrap(row.label) if j == 0 else None
            if len(row.runs) > 1 and j == 0:
                label = _wrap(f"{row.label} ({len(row.runs)} seeds)")
            ax.plot(
                epochs,
                [100 * a for a in acc],
                color=colour,
                label=label,
                marker=".",
                linestyle=_LINESTYLES[j % len(_LINESTYLES)],
                linewidth=1.4,
                markersize=4,
            )
            drawn = True
    if not drawn:
        return False
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation top-1 %")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=11)
    # outside the axes: curves of every height (a run at chance included) stay visible
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncols=1 + len(rows) // 16)
    _save(fig, path)
    return True


def _abc_layers(row: Row) -> list[tuple[str, dict]]:
    return [
        (name, p)
        for name, p in row.runs[0].quant_params.items()
        if isinstance(p, dict) and (p.get("beta") or p.get("v"))
    ]


def abc_params(rows: Sequence[Row], title: str, path: Path) -> bool:
    """Learned activation coefficients β_n and shifts v_n per layer, one line of panels per
    ABC configuration (its first seed)."""
    entries = [(row, layers) for row in rows if (layers := _abc_layers(row))]
    if not entries:
        return False
    names = [[name for name, _ in layers] for _, layers in entries]
    same_layers = all(n == names[0] for n in names)
    longest = max(len(n) for n in names)
    width = max(10.0, min(20.0, 0.5 * longest + 5))
    height = 2.3 * len(entries) + (1.4 if same_layers else 1.4 * len(entries)) + 0.6
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(len(entries), 2, squeeze=False)
    palette = colormaps["viridis"]
    for i, (row, layers) in enumerate(entries):
        x = np.arange(len(layers))
        for ax, field, symbol in ((axes[i][0], "beta", "β"), (axes[i][1], "v", "v")):
            count = max(len(p.get(field) or []) for _, p in layers)
            for n in range(count):
                values = [_at(p.get(field) or [], n) for _, p in layers]
                shade = palette(n / max(count - 1, 1) * 0.85)
                ax.plot(
                    x, values, marker="o", markersize=3.5, color=shade, label=f"{symbol}{n + 1}"
                )
            ax.set_title(_wrap(f"{row.label} (seed {row.runs[0].seed}): {symbol}", 60), fontsize=9)
            ax.grid(alpha=0.3)
            if count:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
            if same_layers and i < len(entries) - 1:
                ax.set_xticks(x, [""] * len(x))
            else:
                ax.set_xticks(x, [n for n, _ in layers], rotation=60, ha="right", fontsize=7)
    fig.suptitle(f"{title}: learned β and v per layer", fontsize=11)
    _save(fig, path)
    return True
