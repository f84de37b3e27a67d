"""Build a comparison report from run records: ``reports/<name>/report.md``, ``report.html``,
``figures/*.png``, and the main tables printed on the console.

Only run records are read (no training internals, no W&B), so a report can be rebuilt at
any time, e.g. by the sweep runner at the end of a sweep. Bad inputs never raise: they are
listed in the report.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.text import Text

from ..console import make_console
from ..runs import RECORD_NAME, LoadResult, Problem, load_runs
from ..runs.key import QUANTIZER_FIELDS, SEED_FIELDS, override_value, without
from . import figures, inference, paper, patterns, tables
from .document import Block, Bullets, Code, Heading, Image, Paragraph, Table, parse_notes
from .grouping import POPCOUNT_WIDTH, Group, Row, build_groups, has_accuracy, init_text, stat
from .html import render_html
from .markdown import render_markdown

RECORDS_DIR = "records"
FIGURES_DIR = "figures"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_name(name: str) -> str:
    """A report name is one directory name: letters, digits, ``.``, ``_``, ``-``."""
    if not _NAME_RE.match(name or ""):
        raise ValueError(
            f"invalid report name {name!r}: use letters, digits, '.', '_' or '-' "
            "(it becomes the directory reports/<name>/)"
        )
    return name


def _slug(*parts: object) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", "-".join(str(p) for p in parts)).strip("-").lower()


def _setup_text(group: Group) -> str:
    """The group's setup: its key less model, data, the quantizer's fields and the seed."""
    first = group.first
    assert first is not None
    skip = (*QUANTIZER_FIELDS, *SEED_FIELDS, "model.name", "data.name")
    return " ".join(
        f"{name}={override_value(value)}" for name, value in without(first.key, skip).items()
    )


_BASES = ("quant.M", "quant.N", "quant.shifts")
_ACT = ("quant.act_shift_center", "quant.act_shift_spread", "quant.beta_init")


def _family(row: Row, with_act: bool = True) -> tuple:
    """ABC rows that differ only in (M, N) share a heat map."""
    skip = (*_BASES, *SEED_FIELDS, "init_from", *(() if with_act else _ACT))
    return (tuple(sorted((k, repr(v)) for k, v in without(row.key, skip).items())), init_text(row))


def _families(rows: Sequence[Row]) -> dict[tuple, list[Row]]:
    """Heat-map families; weight-only rows (N=0, no activation fields) join the family of
    the rows with activation bases that they match in the other fields."""
    families: dict[tuple, list[Row]] = {}
    for row in rows:
        if row.N:
            families.setdefault(_family(row), []).append(row)
    for row in rows:
        if not row.N:
            own = _family(row, with_act=False)
            same = [f for f, members in families.items() if _family(members[0], False) == own]
            families.setdefault(same[0] if same else _family(row), []).append(row)
    return families


def _family_title(row: Row, several: bool) -> str:
    if not several:
        return ""
    label = row.label
    return label[label.index("[") :] if "[" in label else ""


class _Composer:
    """Composes the report blocks and writes the figures they reference."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.blocks: list[Block] = []
        self.main_tables: list[Table] = []

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def figure(self, draw, name: str, alt: str, caption: str = "") -> None:
        """Call ``draw(path)``; when it drew something, reference the PNG."""
        rel = f"{FIGURES_DIR}/{name}.png"
        try:
            drawn = draw(self.out_dir / rel)
        except Exception as exc:  # a figure is never worth losing the whole report
            self.add(
                Paragraph(f"Figure `{rel}` could not be drawn: {exc.__class__.__name__}: {exc}")
            )
            return
        if drawn:
            self.add(Image(rel, alt, caption))

    def group(self, index: int, group: Group, title: str) -> None:
        stem = _slug(f"{index:02d}", group.model, group.data)
        self.add(Heading(2, title), Paragraph(f"Training setup: `{_setup_text(group)}`"))
        if group.baseline is None:
            self.add(
                Paragraph(
                    "**No full-precision baseline**: no finished `quant=fp` run has this model, "
                    "data and training setup, so gaps and relative throughput are left empty "
                    "(runs with another setup are never used instead). Produce the baseline with:"
                ),
                Code("\n".join(group.commands)),
            )
        if group.notes:
            self.add(Bullets(group.notes))
        table = tables.main_table(group, title)
        self.main_tables.append(table)  # titled for the console; the page has the heading
        self.add(replace(table, title=""))

        abc_rows = [r for r in group.rows if r.multi_base]
        families = _families(abc_rows)
        if families:
            main_family = max(families.values(), key=len)
            xnor = next((r for r in group.rows if r.quant == paper.XNOR), None)
            checked = patterns.pattern_table(group.all_rows, main_family, xnor)
            if checked is not None:
                self.add(Heading(3, "The paper's pattern, within seed noise"), checked)
        cost = tables.cost_table(group)
        if cost is not None:
            self.add(Heading(3, "Training speed against fp"), cost)
        measured = inference.measured_table(group)
        if measured is not None:
            self.add(Heading(3, "Measured inference speed (bitwise engine)"), measured)
            self.figure(
                lambda p: inference.latency_figure(group, title, p),
                f"{stem}-latency", f"top-1 against measured latency, {title}",
                "Test top-1 against the engine's latency (batch 1, one thread); dashed: fp32.",
            )  # fmt: skip
        # a heat map needs more than one (M, N) cell to say anything
        families = {f: rows for f, rows in families.items() if len({(r.M, r.N) for r in rows}) > 1}
        labels = [r.base_label for r in group.rows]
        if len(labels) != len(set(labels)):  # one quantizer under several recipes or settings
            self.add(Heading(3, "Top-1 of each configuration"))
            self.figure(
                lambda p: figures.ranking(group, title, p),
                f"{stem}-ranking", f"top-1 of each configuration, {title}",
                "Bars: mean over seeds, best first; dots: single seeds; dashed: the fp "
                "baseline.",
            )  # fmt: skip
        if families:
            self.add(Heading(3, "Top-1 over (M, N)"))
        for k, rows in enumerate(families.values()):
            suffix = _family_title(rows[0], len(families) > 1)
            self.figure(
                lambda p, rows=rows, suffix=suffix: figures.heatmap(
                    rows, group.baseline, f"{title} {suffix}".strip(), p
                ),
                f"{stem}-heatmap-{k}",
                f"heat map of top-1 and gap over (M, N), {title} {suffix}".strip(),
                "Left: our top-1 (± std over seeds); "
                + ("middle: our gap to fp; " if group.baseline else "")
                + "right: the paper's gaps for ResNet-18 on ImageNet (w: float activations).",
            )
        self.add(Heading(3, "Validation accuracy per epoch"))
        self.figure(
            lambda p: figures.val_curves(group, title, p),
            f"{stem}-val-curves",
            f"validation top-1 per epoch, {title}",
            "One line per run; seeds of one configuration share a colour (line styles differ).",
        )
        with_params = [r for r in abc_rows if r.N]
        if with_params:
            self.add(Heading(3, "Learned activation coefficients β and shifts v"))
            self.figure(
                lambda p: figures.abc_params(with_params, title, p),
                f"{stem}-abc-params",
                f"learned beta and v per layer, {title}",
                "Final β_n and v_n of each quantized layer, first seed of each configuration.",
            )
            moved = tables.activation_params_table(with_params)
            if moved is not None:
                self.add(moved)
        self.add(Heading(3, "Next to the paper"), tables.paper_comparison(group))


def _titles(groups: Sequence[Group]) -> list[str]:
    counts: dict[tuple[str, str], int] = {}
    for g in groups:
        counts[(g.model, g.data)] = counts.get((g.model, g.data), 0) + 1
    seen: dict[tuple[str, str], int] = {}
    titles = []
    for g in groups:
        base = f"{g.model} · {g.data}"
        if counts[(g.model, g.data)] > 1:
            seen[(g.model, g.data)] = seen.get((g.model, g.data), 0) + 1
            base += f" · setup {seen[(g.model, g.data)]}"
        titles.append(base)
    return titles


def _method_notes(name: str, paths: Sequence[Path], notes: Path | None) -> list[Block]:
    inputs = " ".join(shlex.quote(str(p)) for p in paths) or "<run or sweep dirs>"
    if notes is not None:
        inputs += f" --notes {shlex.quote(str(notes))}"
    return [
        Heading(2, "How to read this report"),
        Bullets(
            [
                "Baseline: each binary run is compared with the finished full-precision runs "
                "(`quant=fp`) of the same model, data and training setup (every config field that "
                "can change a result: docs/run-record.md); seeds, the quantizer's own fields "
                "and `init_from` may differ. A binary run started from an fp run (`init_from`, "
                "directly or through a stage-1 run) is compared with that fp configuration, "
                "all its seeds, even when its training recipe (epochs, optimizer, schedule, "
                "parameter groups, distillation) differs; a note lists the differences. "
                "Without a baseline the gap is left empty and the command that produces it "
                "is printed.",
                "Seeds: runs that differ only by seed form one row; accuracies are mean ± sample "
                "standard deviation (n−1) over seeds, a single seed shows no ±. Gap = mean top-1 "
                "minus the fp mean top-1, in percentage points.",
                "Packed weights: whole-model memory with binary weights packed to M bits each plus "
                "their float scales; compression = float32 size / packed size.",
                "Speed-up (theoretical, the XNOR-Net argument): a binary MAC of a layer with M "
                "weight and N activation bases costs M·N XNOR+popcount operations, and one "
                f"{POPCOUNT_WIDTH}-bit XNOR+popcount is assumed to cost what one float MAC costs, "
                f"so the binary part runs {POPCOUNT_WIDTH}/(M·N) times faster "
                f"({POPCOUNT_WIDTH}× for xnor/bnn). The model estimate adds the float MACs "
                "(first/last layers, float shortcuts). Memory traffic, the float scales and "
                "BatchNorm are ignored; this is not a measured speed.",
                "Train time: wall time of training and testing (mean over seeds); throughput vs "
                "fp: training samples/s over the baseline's, measured in the runs themselves. "
                "Training runs float kernels, so this is the training cost of binarization, "
                "not an inference speed.",
                "From ckpt: the run was initialised from a checkpoint (`init_from`).",
                f"Regenerate: `abc-lab report {inputs} --name {name}`.",
            ]
        ),
    ]


def compose_report(
    loaded: LoadResult,
    name: str,
    out_dir: Path,
    paths: Sequence[Path] = (),
    notes: Sequence[Block] = (),
    notes_path: Path | None = None,
) -> tuple[list[Block], list[Group], list[Table]]:
    """Blocks of the whole report (writing its figures under ``out_dir``), groups and tables."""
    finished = loaded.with_status("finished")
    usable = [r for r in finished if has_accuracy(r)]
    problems = list(loaded.problems) + [
        Problem(r.path, "finished run without an accuracy in metrics.val or metrics.test")
        for r in finished
        if not has_accuracy(r)
    ]
    failed = loaded.with_status("failed")
    running = loaded.with_status("running")
    stopped = loaded.with_status("stopped")
    groups = build_groups(usable, failed + running + stopped)

    c = _Composer(out_dir)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    c.add(
        Heading(1, f"abc-lab report: {name}"),
        Paragraph(
            f"Generated {stamp} from {loaded.files_seen} record file(s): {len(usable)} finished "
            f"run(s) used, {len(failed)} failed, {len(running)} still running (skipped), "
            f"{len(stopped)} stopped early (excluded), {len(problems)} file(s) or path(s) "
            "skipped."
        ),
    )
    c.add(*notes)
    if not groups:
        c.add(
            Paragraph(
                "**No usable runs**: no finished run record with an accuracy was found under "
                "the inputs, so there is nothing to compare. See the lists below for what was "
                "found instead."
            )
        )
    for i, (group, title) in enumerate(zip(groups, _titles(groups), strict=True)):
        c.group(i, group, title)
    if groups:
        c.add(
            Heading(2, "The paper's table"),
            Paragraph(f"Source: {paper.SOURCE}."),
            tables.paper_grid_table(),
        )
    if failed:
        c.add(Heading(2, "Failed runs"), tables.failed_table(failed, paths))
    if running:
        c.add(
            Heading(2, "Runs in progress (skipped)"),
            Paragraph("These runs have not finished; rebuild the report when they have."),
            Bullets(
                [
                    f"{r.label} seed {r.seed} ({r.model} · {r.data}), "
                    f"{r.record.get('epochs_done', 0)}/{r.epochs} epochs: {r.path}"
                    for r in running
                ]
            ),
        )
    if stopped:
        c.add(
            Heading(2, "Stopped runs (excluded)"),
            Paragraph("Early-terminated by a sweep; their accuracy is not comparable."),
            Bullets(
                [
                    f"{r.label} seed {r.seed} ({r.model} · {r.data}), "
                    f"{r.record.get('epochs_done', 0)}/{r.epochs} epochs, last val "
                    f"top-1 {tables.fmt_pct(stat([r.metric('val', 'acc1')]))} %: {r.path}"
                    for r in stopped
                ]
            ),
        )
    if problems:
        c.add(
            Heading(2, "Skipped files"),
            Table(["path", "reason"], [[str(p.path), p.reason] for p in problems]),
        )
    c.add(*_method_notes(name, paths, notes_path))
    return c.blocks, groups, c.main_tables


def print_summary(
    console: Console,
    main_tables: Sequence[Table],
    groups: Sequence[Group],
    loaded: LoadResult,
    out_dir: Path,
) -> None:
    """Print the main tables, missing baselines and skipped inputs on the console."""
    if not main_tables:
        console.print(Text("No usable runs: nothing to compare.", style="bold yellow"))
    for table, group in zip(main_tables, groups, strict=True):
        console.print(tables.to_rich(table))
        if group.baseline is None:
            console.print(Text("No fp baseline for this setup; produce it with:", style="yellow"))
            for command in group.commands:
                console.print(Text(f"  {command}"), soft_wrap=True)
    for problem in loaded.problems:
        console.print(Text(f"skipped {problem.path}: {problem.reason}", style="dim"))
    for run in loaded.with_status("failed"):
        console.print(Text(f"failed run {run.path}: {run.error}", style="red"))
    console.print(Text(f"report written to {out_dir / 'report.html'} and report.md"))


def copy_records(paths: Sequence[Path], dest: Path) -> Path:
    """Copy every valid record under ``paths`` to ``dest/<run dir name>/results.json``
    (replacing an earlier copy; names that repeat get a -2, -3 suffix); returns ``dest``."""
    copies: dict[str, bytes] = {}  # read all first: ``dest`` may be among ``paths``
    for run in sorted(load_runs(paths).runs, key=lambda r: str(r.path)):
        base = Path(run.run_dir).name if run.run_dir else run.path.parent.name
        name, n = base, 1
        while name in copies:
            n += 1
            name = f"{base}-{n}"
        copies[name] = run.path.read_bytes()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name, data in copies.items():
        (dest / name).mkdir()
        (dest / name / RECORD_NAME).write_bytes(data)
    return dest


def build_report(
    paths: list[Path],
    name: str,
    out_root: Path = Path("reports"),
    console: Console | None = None,
    notes: Path | None = None,
    keep_records: bool = False,
) -> Path:
    """Build ``<out_root>/<name>/`` from the run records under ``paths``; returns that dir.

    Writes ``report.md``, a self-contained ``report.html`` and ``figures/*.png``, and prints
    the main tables on ``console``. ``notes``: a Markdown file of the author's findings,
    placed after the header. ``keep_records``: copy the valid records into
    ``<out>/records/<run dir name>/results.json`` first and build from that copy, so the
    report folder holds everything it was made from. Raises ValueError for an invalid
    ``name`` or unreadable notes.
    """
    check_name(name)
    note_blocks: list[Block] = []
    if notes is not None:
        try:
            note_blocks = parse_notes(Path(notes).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"notes file {notes}: {err}") from err
    console = console or make_console()
    paths = [Path(p) for p in paths]
    out_dir = Path(out_root) / name
    fig_dir = out_dir / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):  # figures of an earlier build of this report
        old.unlink()
    if keep_records:
        paths = [copy_records(paths, out_dir / RECORDS_DIR)]
    loaded = load_runs(paths)
    blocks, groups, main_tables = compose_report(loaded, name, out_dir, paths, note_blocks, notes)
    (out_dir / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
    html = render_html(blocks, f"abc-lab report: {name}", out_dir)
    (out_dir / "report.html").write_text(html, encoding="utf-8")
    print_summary(console, main_tables, groups, loaded, out_dir)
    return out_dir
