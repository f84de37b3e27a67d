"""The one way abc-lab makes a rich console: wide and unwrapped when output is not a terminal.

Rich wraps at 80 columns when stdout is a file or a pipe (``abc-lab train > log``), which
drops table columns and breaks paths and commands mid-token. Off a terminal the consoles
here are 200 columns wide (or ``COLUMNS`` when set) and never insert line breaks into
text; on a terminal rich's own width applies. ``mirror_to`` copies what a console prints,
as plain text, into a log file (``train.log``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO, Any

from rich.console import Console

WIDE = 200


class MirroredConsole(Console):
    """A Console that also appends what it prints, without styles, to a log file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, record=True, **kwargs)
        self.mirror: Path | None = None

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().print(*objects, **kwargs)
        text = self.export_text(clear=True, styles=False)
        if self.mirror is not None and text:
            try:
                with open(self.mirror, "a", encoding="utf-8") as fh:
                    fh.write(text)
            except OSError:  # the log is a copy; printing must not fail because of it
                pass


def make_console(stderr: bool = False, file: IO[str] | None = None, **kwargs: Any) -> Console:
    """A rich Console for abc-lab's output (stdout, or stderr with ``stderr=True``).

    Off a terminal: ``COLUMNS`` wide when set, else 200 columns, and soft wrapping (long
    lines are left whole for the reader's pager or editor to wrap).
    """
    stream = file or (sys.stderr if stderr else sys.stdout)
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    if not is_tty and "width" not in kwargs:
        columns = os.environ.get("COLUMNS", "")
        kwargs["width"] = int(columns) if columns.isdigit() and int(columns) > 0 else WIDE
        kwargs.setdefault("soft_wrap", True)
    return MirroredConsole(stderr=stderr, file=file, **kwargs)


def mirror_to(console: Console, path: Path | None) -> None:
    """Copy everything ``console`` prints from now on into ``path`` (None: stop)."""
    if isinstance(console, MirroredConsole):
        console.mirror = None if path is None else Path(path)
