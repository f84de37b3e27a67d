"""Render report blocks as GitHub-flavoured Markdown (figures linked by relative path)."""

from __future__ import annotations

from collections.abc import Sequence

from .document import Block, Bullets, Code, Heading, Image, Paragraph, Table


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(table: Table) -> str:
    lines = []
    if table.title:
        lines += [f"**{table.title}**", ""]
    lines.append("| " + " | ".join(_cell(h) for h in table.headers) + " |")
    seps = ["---:" if table.alignment(i) == "right" else "---" for i in range(len(table.headers))]
    lines.append("|" + "|".join(seps) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    if table.caption:
        lines += ["", f"*{table.caption}*"]
    return "\n".join(lines)


def render_block(block: Block) -> str:
    """Markdown for one block."""
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Code):
        return f"```\n{block.text}\n```"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Image):
        text = f"![{block.alt}]({block.path})"
        return f"{text}\n\n*{block.caption}*" if block.caption else text
    raise TypeError(f"unknown block {block!r}")


def render_markdown(blocks: Sequence[Block]) -> str:
    """The whole report as Markdown text."""
    return "\n\n".join(render_block(b) for b in blocks) + "\n"
