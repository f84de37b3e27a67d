"""Sweeps: Hydra multirun summaries and W&B sweep definitions run online or offline.

Submodules load lazily (the offline engine needs the optional ``sweeps`` package):
``spec`` (load and validate a sweep file), ``offline`` (W&B's open engine, no server),
``online`` (wandb.sweep + wandb.agent), ``multirun`` (the Hydra callback), ``cli``.
"""
