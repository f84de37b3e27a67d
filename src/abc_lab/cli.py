"""The `abc-lab` command: ``abc-lab <command> [args]``.

Argument parsing only: each command is a module of :mod:`abc_lab.commands` with ``HELP``
and ``main(argv) -> int``, imported when it runs (so `abc-lab --help` loads no framework).
"""

from __future__ import annotations

import importlib
import sys

from .commands import COMMANDS


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        f"  {name:<{width}}  {importlib.import_module(f'.commands.{mod}', __package__).HELP}"
        for name, mod in COMMANDS.items()
    ]
    return (
        "usage: abc-lab <command> [args]\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\n`abc-lab <command> --help` explains each."
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"abc-lab: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f".commands.{COMMANDS[command]}", __package__)
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
