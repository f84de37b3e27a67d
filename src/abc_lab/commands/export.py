"""`abc-lab export`: a trained run as a packed binary model file (safetensors)."""

from __future__ import annotations

import argparse

from ..console import make_console

HELP = "write a trained run as a packed binary model file (abc-lab export <run dir>)"


def main(argv: list[str]) -> int:
    """Write a trained run (its best checkpoint) or a .ckpt as a packed binary model file."""
    from rich.markup import escape

    from ..engine.export import ExportError, export_run
    from ..engine.format import FormatError, load_packed

    p = argparse.ArgumentParser(prog="abc-lab export", description=main.__doc__)
    p.add_argument("source", help="run directory of abc-lab train, or a .ckpt inside one")
    p.add_argument(
        "--out", help="file to write (default <run dir>/export/<model>-<quant>.safetensors)"
    )
    args = p.parse_args(argv)
    console = make_console(emoji=False)
    try:
        path = export_run(args.source, args.out)
        _, meta = load_packed(path)
    except (ExportError, FormatError) as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        return 2
    layers = meta["layers"]
    binary = sum(1 for e in layers.values() if e["input"] is not None)
    console.print(
        f"wrote {escape(str(path))}: {meta['model']['name']} {meta['label']}, "
        f"{len(layers)} quantized layers ({binary} binary x binary), "
        f"{meta['payload_bytes']:,} bytes of tensors = summary packed weights "
        f"{meta['summary_packed_bytes']:,} + BatchNorm statistics {meta['buffer_bytes']:,}"
    )
    return 0
