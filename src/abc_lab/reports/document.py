"""A tiny document model shared by the Markdown, HTML and console writers.

The report is composed once as a list of blocks; each writer renders the same blocks, so
report.md, report.html and the console never disagree. Text may hold `inline code`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Code:
    """A preformatted block, e.g. a command to run."""

    text: str


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    align: list[str] = field(default_factory=list)  # "left" | "right" per column
    title: str = ""
    caption: str = ""

    def alignment(self, i: int) -> str:
        return self.align[i] if i < len(self.align) else "left"


@dataclass(frozen=True)
class Image:
    """A figure written as a PNG file; ``path`` is relative to the report directory."""

    path: str
    alt: str
    caption: str = ""


Block = Heading | Paragraph | Bullets | Code | Table | Image


def _starts_block(line: str) -> bool:
    """A line that ends the paragraph above it: a heading, a fence, a table row or a bullet
    (as in CommonMark, a list or table needs no blank line before it)."""
    return line.startswith(("#", "```", "|")) or line.lstrip().startswith("- ")


def _table_cells(line: str) -> list[str]:
    """The cells of a ``| a | b |`` row; ``\\|`` is a literal ``|`` inside a cell (as in GFM)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def parse_notes(text: str) -> list[Block]:
    """Blocks from a small Markdown subset: ``#`` headings, ``- `` bullets, fenced code,
    ``|`` tables and paragraphs separated by blank lines (inline `code` and **bold** kept)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            end = len(lines) if end is None else end
            blocks.append(Code("\n".join(lines[i + 1 : end])))
            i = end + 1
        elif line.startswith("|"):
            cells = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells.append(_table_cells(lines[i]))
                i += 1
            rule = (
                cells[1] if len(cells) > 1 and all(set(c) <= set(":-") for c in cells[1]) else None
            )
            align = ["right" if c.endswith(":") else "left" for c in rule] if rule else []
            blocks.append(Table(cells[0], cells[2:] if rule else cells[1:], align))
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            blocks.append(Heading(min(level, 6), line[level:].strip()))
            i += 1
        elif line.lstrip().startswith("- "):
            items: list[str] = []
            while i < len(lines) and lines[i].strip():
                item = lines[i].strip()
                if item.startswith("- "):
                    items.append(item[2:].strip())
                elif _starts_block(lines[i]):  # a table, heading or fence ends the list
                    break
                elif items:  # a continuation line of the item above
                    items[-1] += " " + item
                i += 1
            blocks.append(Bullets(items))
        else:
            para: list[str] = []
            while i < len(lines) and lines[i].strip() and not _starts_block(lines[i]):
                para.append(lines[i].strip())
                i += 1
            blocks.append(Paragraph(" ".join(para)))
    return blocks
