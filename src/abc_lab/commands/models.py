"""`abc-lab models`: the registered models and quantizers."""

from __future__ import annotations

from ..console import make_console

HELP = "list models and quantizers"


def main(argv: list[str]) -> int:
    """Print the model and quantizer names the configs can choose."""
    from ..models import list_models
    from ..quant import list_quantizers

    make_console().print(
        f"models: {', '.join(list_models())}\nquantizers: {', '.join(list_quantizers())}"
    )
    return 0
