"""Render report blocks as one self-contained HTML page.

Styles are inline and every figure is embedded as a base64 PNG data URI, so the page can be
mailed or archived alone; each image also links to its PNG file beside the page.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

from .document import Block, Bullets, Code, Heading, Image, Paragraph, Table

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1.5em; color: #1d2329; background: #fff; line-height: 1.45; }
h1 { border-bottom: 2px solid #2f6fad; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: .15em; }
h3 { margin-top: 1.6em; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
            font-size: .92em; background: #f3f5f7; border-radius: 4px; }
code { padding: .05em .3em; }
pre { padding: .7em 1em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
.table-wrap { overflow-x: auto; margin: .8em 0; }
table { border-collapse: collapse; font-size: .86em; }
th, td { border: 1px solid #d0d7de; padding: .3em .6em; }
th { background: #eef2f6; }
tbody tr:nth-child(even) { background: #f8fafb; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
td.r { white-space: nowrap; }
.table-title { font-weight: 600; margin-bottom: .3em; }
.caption, figcaption { color: #57606a; font-size: .88em; margin-top: .3em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #e1e4e8; }
nav { background: #f6f8fa; padding: .5em 1em; border-radius: 6px; font-size: .92em; }
nav a { margin-right: 1em; }
"""


def _inline(text: str) -> str:
    """Escape text; turn `code` spans into <code> and **bold** into <strong>."""
    parts = re.split(r"`([^`]*)`", text)
    out = []
    for i, part in enumerate(parts):
        escaped = html.escape(part, quote=False)
        if i % 2:
            out.append(f"<code>{escaped}</code>")
        else:
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped))
    return "".join(out)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _table(table: Table) -> str:
    cls = ["r" if table.alignment(i) == "right" else "l" for i in range(len(table.headers))]
    head = "".join(
        f'<th class="{c}">{_inline(h)}</th>' for c, h in zip(cls, table.headers, strict=False)
    )
    body = "\n".join(
        "<tr>"
        + "".join(f'<td class="{c}">{_inline(v)}</td>' for c, v in zip(cls, row, strict=False))
        + "</tr>"
        for row in table.rows
    )
    title = f'<div class="table-title">{_inline(table.title)}</div>' if table.title else ""
    caption = f'<div class="caption">{_inline(table.caption)}</div>' if table.caption else ""
    return (
        f'<div class="table-wrap">{title}<table><thead><tr>{head}</tr></thead>'
        f"<tbody>\n{body}\n</tbody></table>{caption}</div>"
    )


def _image(image: Image, base_dir: Path) -> str:
    src = image.path
    file = base_dir / image.path
    if file.is_file():
        src = "data:image/png;base64," + base64.b64encode(file.read_bytes()).decode("ascii")
    href = html.escape(image.path)
    caption = f"<figcaption>{_inline(image.caption)}</figcaption>" if image.caption else ""
    return (
        f'<figure><a href="{href}"><img src="{html.escape(src)}" '
        f'alt="{html.escape(image.alt)}"></a>{caption}</figure>'
    )


def render_block(block: Block, base_dir: Path, anchor: str = "") -> str:
    """HTML for one block; images are read from ``base_dir`` and embedded."""
    if isinstance(block, Heading):
        level = min(max(block.level, 1), 6)
        ident = f' id="{anchor}"' if anchor else ""
        return f"<h{level}{ident}>{_inline(block.text)}</h{level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Code):
        return f"<pre>{html.escape(block.text, quote=False)}</pre>"
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Image):
        return _image(block, base_dir)
    raise TypeError(f"unknown block {block!r}")


def render_html(blocks: Sequence[Block], title: str, base_dir: Path) -> str:
    """The whole report as one HTML page, with links to its level-2 sections under the title."""
    anchors: dict[int, str] = {}
    titles: list[tuple[str, str]] = []
    used: set[str] = set()
    for i, block in enumerate(blocks):
        if isinstance(block, Heading) and block.level == 2:
            slug, n = _slug(block.text), 2
            while slug in used:
                slug, n = f"{_slug(block.text)}-{n}", n + 1
            used.add(slug)
            anchors[i] = slug
            titles.append((slug, block.text))
    nav = ""
    if len(anchors) > 1:
        links = " ".join(f'<a href="#{slug}">{_inline(text)}</a>' for slug, text in titles)
        nav = f"<nav>{links}</nav>"
    parts = []
    for i, block in enumerate(blocks):
        parts.append(render_block(block, base_dir, anchors.get(i, "")))
        if i == 0 and nav:
            parts.append(nav)
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )
