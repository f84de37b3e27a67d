"""A tiny document model shared by the Markdown, HTML and console writers.

The report is composed once as a list of blocks; each writer renders the same blocks, so
report.md, report.html and the console never disagree. Text may hold `inline code`.
"""

from __future__ import annotations

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
