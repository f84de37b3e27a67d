"""The subcommands of `abc-lab`: one module each, with ``HELP`` (one line) and
``main(argv) -> int`` (the exit code). Modules are imported only when their command runs."""

# command name -> module of abc_lab.commands, in the order `abc-lab --help` lists them
COMMANDS = {
    "train": "train",
    "sweep": "sweep",
    "report": "report",
    "bench": "bench",
    "init-check": "init_check",
    "export": "export",
    "evaluate": "evaluate",
    "models": "models",
    "bench-startup": "bench_startup",
}
