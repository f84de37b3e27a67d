"""`abc-lab models`: the registered models and quantizers."""

from __future__ import annotations

from rich.console import Console

HELP = "list models and quantizers"


def main(argv: list[str]) -> int:
    """Print the model and quantizer names the configs can choose."""
    from ..models import list_models
    from ..quant import list_quantizers

    Console().print(
        f"models: {', '.join(list_models())}\nquantizers: {', '.join(list_quantizers())}"
    )
    return 0
